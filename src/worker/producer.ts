/**
 * The producer claims due jobs and hands them to the executor.
 *
 * It claims only when slots are free, at most `maxClaimBatch` at a time, with
 * one SKIP LOCKED statement. It claims again at once while claims come back
 * full (there is more), and otherwise sleeps until woken by: a NOTIFY for one
 * of its queues, a freed slot while work is known to be waiting, the listener
 * reconnecting, the next scheduled `run_at`, or the poll interval.
 *
 * Claims read only `available` jobs. Scheduled and retryable jobs are made
 * available ("promoted") by the producer itself when the next one is due and
 * at least every poll interval, in one statement.
 *
 * Prefetch: while recent jobs are quick (an average under 50 ms), the
 * producer claims up to `concurrency` jobs ahead into a local buffer, so the
 * next claim's round trip overlaps the running jobs. The buffer starts jobs as
 * slots free; slow jobs turn prefetch off so no job waits behind them while
 * another worker is idle. Buffered jobs count as held; a stop, a cancel or a
 * lost lease gives them back or drops them.
 *
 * A claim whose reply is lost (connection dropped after commit) would leave
 * rows marked running for this worker that it never received; after any
 * failed claim the producer gives such orphans back before claiming again.
 *
 * It claims nothing while the worker's lease is not trusted (lost, or not
 * renewed for most of rescueAfterMs) or while the completer is backlogged
 * (outcomes cannot be written): work it could not own or finish stays in
 * the queue for other workers.
 */
import type { Logger } from '../core/logger.js';
import type { Clock } from '../core/clock.js';
import { LoopService } from '../core/service.js';
import { Waker, sleep } from '../core/sleep.js';
import { errorMessage, errorSummary } from '../core/errors.js';
import type { SqlExecutor } from '../db/executor.js';
import type { HotStatements } from '../db/statements.js';
import { toClaimedJob, type ClaimedJob } from '../db/rows.js';
import type { Executor } from './executor.js';
import type { Completer } from './completer.js';
import type { Lease } from './lease.js';

const PROMOTE_BATCH = 1_000;
/** Prefetch only while jobs average less than this. */
const PREFETCH_BELOW_MS = 50;

export interface ProducerConfig {
  concurrency: number;
  queues: readonly string[];
  tasks: readonly string[];
  maxClaimBatch: number;
  pollIntervalMs: number;
}

export class Producer extends LoopService {
  readonly #waker = new Waker();
  /** True while claims suggest more due jobs are waiting. */
  #moreWaiting = true;
  #needsReconcile = false;
  /** Monotonic time of the next promotion of due scheduled/retryable jobs. */
  #promoteAt = 0;
  /** Claimed jobs not yet started (prefetch). */
  #buffer: ClaimedJob[] = [];
  #draining = false;
  #offSlotFree: (() => void) | undefined;

  constructor(
    private readonly config: ProducerConfig,
    private readonly lease: Lease,
    private readonly db: SqlExecutor,
    private readonly statements: HotStatements,
    private readonly executor: Executor,
    private readonly completer: Completer,
    private readonly clock: Clock,
    logger: Logger,
  ) {
    super('producer', logger);
    completer.onDrained(() => this.wake());
  }

  /** Something may be due now (a NOTIFY, a reconnect, a test). */
  wake(): void {
    this.#moreWaiting = true;
    this.#waker.wake();
  }

  /**
   * The database connection was re-established (possibly after a PostgreSQL
   * restart, which can undo outcomes that were committed without a flush):
   * give back any job still marked running for this worker that it no longer
   * holds, then claim.
   */
  reconnected(): void {
    this.#needsReconcile = true;
    this.wake();
  }

  override async start(): Promise<void> {
    // Slots freed in one turn of the event loop (a batch of quick jobs ends
    // together) make one claim, not one claim each.
    let pending = false;
    this.#offSlotFree ??= this.executor.onSlotFree(() => {
      this.#dispatch();
      if (!this.#moreWaiting || pending) return;
      pending = true;
      setImmediate(() => {
        pending = false;
        this.#waker.wake();
      });
    });
    await super.start();
  }

  override async stop(): Promise<void> {
    this.#draining = true;
    await super.stop();
    this.#offSlotFree?.();
    this.#offSlotFree = undefined;
    await this.#releaseBuffered();
  }

  /** Ids of claimed jobs waiting in the local buffer. */
  bufferedIds(): string[] {
    return this.#buffer.map((j) => j.id);
  }

  /** Drops a buffered job (it was cancelled); true when it was buffered. */
  dropBuffered(id: string): boolean {
    const i = this.#buffer.findIndex((j) => j.id === id);
    if (i < 0) return false;
    this.#buffer.splice(i, 1);
    return true;
  }

  /** Buffered jobs: id → attempt number. */
  bufferedAttempts(): Map<string, number> {
    return new Map(this.#buffer.map((j) => [j.id, j.attempts]));
  }

  /** Starts buffered jobs while slots are free. */
  #dispatch(): void {
    if (this.#draining) return;
    while (this.#buffer.length > 0 && this.executor.freeSlots > 0) this.executor.run(this.#buffer.shift()!);
  }

  /** How many jobs to keep claimed ahead of the free slots. */
  #prefetch(): number {
    const avg = this.executor.averageDurationMs;
    return avg !== null && avg < PREFETCH_BELOW_MS ? this.config.concurrency : 0;
  }

  /** Gives buffered (never started) jobs back: available again, attempt not counted. */
  async #releaseBuffered(): Promise<void> {
    const ids = this.bufferedIds();
    this.#buffer = [];
    if (ids.length === 0) return;
    try {
      await this.statements.releaseUnstarted(this.db, { workerId: this.lease.workerId, ids });
    } catch (err) {
      this.logger.warn({ err: errorSummary(err), jobs: ids.length }, `pgq could not give back prefetched jobs; they will be rescued: ${errorMessage(err)}`);
    }
  }

  protected async run(signal: AbortSignal): Promise<void> {
    let failures = 0;
    while (!signal.aborted) {
      this.#dispatch();
      const free = this.executor.freeSlots + this.#prefetch() - this.#buffer.length;
      if (!this.lease.trusted || this.completer.backlogged) {
        await this.#waker.wait(Math.min(this.config.pollIntervalMs, 250), signal);
        continue;
      }
      if (free <= 0 || !this.#moreWaiting) {
        await this.#waker.wait(free <= 0 ? this.config.pollIntervalMs : await this.#idleWaitMs(), signal);
        if (free > 0) this.#moreWaiting = true; // a poll, a timer or a wake: look again
        continue;
      }
      try {
        if (this.#needsReconcile) await this.#releaseOrphans();
        if (this.clock.monotonicMs() >= this.#promoteAt) await this.#promote();
        const limit = Math.min(free, this.config.maxClaimBatch);
        const rows = await this.statements.claimJobs(this.db, {
          queues: [...this.config.queues],
          tasks: [...this.config.tasks],
          limit,
          workerId: this.lease.workerId,
        });
        failures = 0;
        for (const row of rows) this.#buffer.push(toClaimedJob(row));
        this.#dispatch();
        if (rows.length < limit) this.#moreWaiting = false;
      } catch (err) {
        failures += 1;
        this.#needsReconcile = true;
        if (failures === 1 || failures % 20 === 0) {
          this.logger.warn({ err: errorSummary(err) }, `pgq could not claim jobs, retrying: ${errorMessage(err)}`);
        }
        await sleep(Math.min(this.config.pollIntervalMs, 50 * 2 ** Math.min(failures, 6)), signal);
      }
    }
  }

  /** How long to sleep when idle: until the next scheduled job is due, at most the poll interval. */
  async #idleWaitMs(): Promise<number> {
    try {
      const next = await this.statements.nextRunAt(this.db, { queues: [...this.config.queues], tasks: [...this.config.tasks] });
      if (!next) return this.config.pollIntervalMs;
      const inMs = Math.max(0, next.getTime() - this.clock.now().getTime() + 1);
      this.#promoteAt = Math.min(this.#promoteAt, this.clock.monotonicMs() + inMs);
      return Math.min(this.config.pollIntervalMs, inMs);
    } catch {
      return this.config.pollIntervalMs;
    }
  }

  async #promote(): Promise<void> {
    const promoted = await this.statements.promoteDue(this.db, { queues: [...this.config.queues], limit: PROMOTE_BATCH });
    // A full batch means more are due: promote again before the next claim.
    this.#promoteAt = promoted >= PROMOTE_BATCH ? 0 : this.clock.monotonicMs() + this.config.pollIntervalMs;
    if (promoted > 0) this.#moreWaiting = true;
  }

  async #releaseOrphans(): Promise<void> {
    const released = await this.statements.releaseOrphans(this.db, {
      workerId: this.lease.workerId,
      heldIds: [...this.executor.heldIds(), ...this.bufferedIds()],
    });
    this.#needsReconcile = false;
    if (released.length > 0) {
      this.logger.warn({ jobs: released.map((r) => r.id) }, `pgq gave back ${released.length} job(s) whose claim reply was lost`);
    }
  }
}
