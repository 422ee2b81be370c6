/**
 * A worker's health, for liveness and readiness probes.
 *
 * - live: the event loop is not stalled (its longest delay since the
 *   previous check stays under the given limit).
 * - ready: the worker is running, the database answers, the worker's lease
 *   (`workers.lease_expires_at`) has not expired, and the LISTEN
 *   connection is up (or the worker polls only).
 *
 * `liveness()` is the first check alone, on a window of its own, answered
 * without a round trip: a liveness probe must not fail because the database
 * is slow (a restart loop would not mend the database), and a readiness
 * probe's check must not use up the window in which the liveness probe
 * would have seen a stall.
 *
 * Each check carries a message saying what is wrong. The database probe is
 * one indexed read of the worker's own row, bounded by a timeout, so a probe
 * never hangs on a database that does not answer.
 */
import type { Kysely } from 'kysely';
import { sql } from '../db/kysely.js';
import { errorMessage } from '../core/errors.js';
import { EventLoopMonitor } from '../core/event-loop.js';
import type { PgqDatabase } from '../db/tables.js';
import type { Listener } from '../notify/listener.js';

/** One check: ok, or a message naming what is wrong. */
export interface HealthCheck {
  ok: boolean;
  message?: string;
}

/** What `worker.liveness()` returns: `health()`'s `live`, without asking the database. */
export interface WorkerLiveness {
  /** The process is alive and its event loop not stalled. */
  live: boolean;
  checks: { eventLoop: HealthCheck };
}

/** What `worker.health()` resolves to. */
export interface WorkerHealth {
  /** For a liveness probe: the process is alive and its event loop not stalled. */
  live: boolean;
  /** For a readiness probe: every check below is ok. */
  ready: boolean;
  checks: {
    eventLoop: HealthCheck;
    worker: HealthCheck;
    database: HealthCheck;
    lease: HealthCheck;
    listener: HealthCheck;
  };
}

/** The options of `worker.health()`. */
export interface HealthOptions {
  /** The longest event-loop delay since the previous check still counted as live; default 5,000 ms. */
  maxEventLoopDelayMs?: number | undefined;
  /**
   * How long the database gets to answer the probe's read before it counts
   * as unreachable; default 900 ms, within Kubernetes' default one-second
   * probe timeout (raise both together).
   */
  databaseTimeoutMs?: number | undefined;
}

export interface HealthProbeConfig {
  /** The worker's id now (it changes when the worker registers again after a lost lease). */
  workerId: () => string;
  /** That id's registration (`workers.started_at` as text); empty while not registered. */
  registeredAt: () => string;
  rescueAfterMs: number;
}

export class HealthProbe {
  readonly #loop = new EventLoopMonitor();
  /** liveness()'s own window: a readiness probe's check must not hide a stall from the liveness probe, nor the other way round. */
  #liveLoop: EventLoopMonitor | undefined;
  /** The database probe's read while it has not answered: later probes join it. */
  #probing: Promise<{ left_ms: number; mine: boolean }[]> | undefined;

  constructor(
    private readonly config: HealthProbeConfig,
    private readonly kysely: Kysely<PgqDatabase>,
    private readonly listener: Listener,
    private readonly state: () => string,
  ) {}

  /** The event-loop check alone, on its own window (since the previous `liveness` call). */
  liveness(maxEventLoopDelayMs: number): WorkerLiveness {
    this.#liveLoop ??= new EventLoopMonitor();
    const eventLoop = eventLoopCheck(this.#liveLoop, maxEventLoopDelayMs);
    return { live: eventLoop.ok, checks: { eventLoop } };
  }

  /** Runs every check; `maxEventLoopDelayMs` is the longest event-loop delay since the previous check still counted as live. */
  async check(maxEventLoopDelayMs: number, databaseTimeoutMs: number): Promise<WorkerHealth> {
    const eventLoop = eventLoopCheck(this.#loop, maxEventLoopDelayMs);
    const state = this.state();
    const worker: HealthCheck = state === 'running' ? { ok: true } : { ok: false, message: `worker is ${state}` };
    const listener: HealthCheck = !this.listener.enabled
      ? { ok: true, message: 'poll-only mode (listen: false)' }
      : this.listener.connected ? { ok: true } : { ok: false, message: 'LISTEN connection is down (reconnecting; workers poll meanwhile)' };
    const { database, lease } = await this.#probeDatabase(databaseTimeoutMs);
    const checks = { eventLoop, worker, database, lease, listener };
    return { live: eventLoop.ok, ready: worker.ok && database.ok && lease.ok && listener.ok, checks };
  }

  /** Stops the event-loop samplers. */
  stop(): void {
    this.#loop.stop();
    this.#liveLoop?.stop();
  }

  async #probeDatabase(timeoutMs: number): Promise<{ database: HealthCheck; lease: HealthCheck }> {
    const registeredAt = this.config.registeredAt();
    let timer: NodeJS.Timeout | undefined;
    try {
      // A probe whose read has not answered yet (a database that hangs, a lock on the table) is joined,
      // not repeated: each probe sent anew would hold one more of the pool's connections until it answered.
      this.#probing ??= this.kysely
        .selectFrom('workers')
        .select([
          sql<number>`(extract(epoch FROM coalesce(lease_expires_at, last_heartbeat_at + ${this.config.rescueAfterMs} * interval '1 millisecond') - now()) * 1000)::float8`.as('left_ms'),
          // The row is this process's only while it holds its registration: a worker with a fixed id that froze
          // past its lease may find the row of another process that registered that id since.
          sql<boolean>`started_at = ${registeredAt || null}::timestamptz`.as('mine'),
        ])
        .where('id', '=', this.config.workerId())
        .execute()
        .finally(() => (this.#probing = undefined));
      const query = this.#probing;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
      });
      const rows = await Promise.race([query, timeout]);
      const left = rows[0]?.left_ms;
      const lease: HealthCheck = left === undefined
        ? { ok: false, message: 'this worker has no workers row: its lease expired and its jobs were rescued' }
        : !registeredAt
          ? { ok: false, message: 'this worker is not registered now (registering again after a lost lease, or stopped)' }
        : rows[0]!.mine !== true
          ? { ok: false, message: `the workers row of id ${this.config.workerId()} is not this process's registration: another process registered the id since (this worker lost its lease)` }
        : left > 0
          ? { ok: true }
          : { ok: false, message: `lease expired ${Math.round(-left)} ms ago (not renewed within rescueAfterMs ${this.config.rescueAfterMs} ms)` };
      return { database: { ok: true }, lease };
    } catch (err) {
      return {
        database: { ok: false, message: `database unreachable: ${errorMessage(err)}` },
        lease: { ok: false, message: 'unknown: the database is unreachable' },
      };
    } finally {
      clearTimeout(timer);
    }
  }
}

function eventLoopCheck(loop: EventLoopMonitor, maxEventLoopDelayMs: number): HealthCheck {
  const { maxMs } = loop.take();
  return maxMs <= maxEventLoopDelayMs
    ? { ok: true }
    : { ok: false, message: `event loop stalled for ${Math.round(maxMs)} ms (limit ${maxEventLoopDelayMs} ms)` };
}
