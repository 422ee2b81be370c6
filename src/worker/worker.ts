/**
 * A worker: lease → producer → executor → completer, plus leader election
 * with the maintenance services it runs while elected.
 *
 * start(): spawn the lease thread, and meanwhile check the schema version
 * (read-only) and then register the worker's lease (the thread renews it
 * from then on, off the main thread); open two of the pool's connections;
 * subscribe to NOTIFY (jobs, cancel) and then read the queues' settings;
 * then start the producer and the election.
 * stop(): stop claiming; wait up to `shutdownGraceMs` for running handlers;
 * signal the rest; wait until every handler has settled (the lease is
 * renewed meanwhile: a handler that ignores its signal keeps its job, and is
 * reported stuck); write every outcome (a handler stopped by the shutdown
 * gives its job back, the attempt not counted); resign leadership; remove
 * the worker row. A second stop() while one is under way joins it.
 *
 * A lost lease (the rescuer removed the row): stop claiming, register under a
 * new id, adopt the attempts still this worker's (same job, same attempt,
 * still running under the old id), signal only the handlers whose attempts
 * were rescued, claim again.
 */
import os from 'node:os';
import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { Logger } from '../core/logger.js';
import type { Clock } from '../core/clock.js';
import { HeldJobs } from './held-jobs.js';
import {
  JobCancelledError,
  LeaseLostError,
  PgqError,
  ValidationError,
  WorkerShutdownError,
  WorkerStartError,
  errorMessage,
  errorSummary,
  optionsArgument,
} from '../core/errors.js';
import { settlesWithin, sleep, Waker } from '../core/sleep.js';
import { isConnectionError } from '../db/errors.js';
import { heartbeatLimitMs } from '../core/defaults.js';
import type { ResolvedWorkerOptions } from '../config.js';
import type { Queryable } from '../db/queryable.js';
import type { HotStatements } from '../db/statements.js';
import type { PgqDatabase } from '../db/tables.js';
import type { Listener } from '../notify/listener.js';
import { readScheduledPayload, type ChannelNames } from '../notify/channels.js';
import type { TaskRegistry } from '../task.js';
import { Completer } from './completer.js';
import { HealthProbe, type HealthOptions, type WorkerHealth, type WorkerLiveness } from './health.js';
import type { MiddlewareChain } from '../middleware.js';
import { Executor, type WorkerEvents } from './executor.js';
import { Producer, type HeldJob } from './producer.js';
import type { ProgressWriter } from './progress.js';
import { Lease } from './lease.js';
import { QueueGate } from './queue-gate.js';
import type { QueueStatements } from '../db/queue-statements.js';
import type pg from 'pg';
import { LeaderElector } from '../maintenance/leader.js';
import { leaderServices } from '../maintenance/leader-services.js';
import { SandboxRunner } from '../sandbox/sandbox-runner.js';

export interface WorkerDeps {
  db: Queryable;
  kysely: Kysely<PgqDatabase>;
  /** The leader election's statements (answered within a heartbeat, or given up). */
  election: Kysely<PgqDatabase>;
  /** The same database on a lane of the pool, for the leader's maintenance (maintenance/leader-services.ts). */
  maintenance: { db: Queryable; kysely: Kysely<PgqDatabase> };
  statements: HotStatements;
  listener: Listener;
  channels: ChannelNames;
  tasks: TaskRegistry;
  logger: Logger;
  clock: Clock;
  maxResultBytes: number;
  /** Middleware wrapping each attempt's handler. */
  middleware?: MiddlewareChain;
  /** Writes `ctx.progress` reports. */
  progress: ProgressWriter;
  /** The schema of pgq's tables (the scheduler's NOTIFY channel). */
  schema: string;
  /** Saves the schedules declared in code; runs first in `start()`, which rejects if it fails. */
  syncSchedules?: () => Promise<void>;
  /** Checks (read-only) that the schema is migrated to this pgq's version; rejects when it is not. */
  checkSchema: () => Promise<void>;
  /** Opens the pool's connections (best effort, at start); `quiet()` says when its failure is no longer worth a warning. */
  warmUp?: (quiet: () => boolean) => Promise<void>;
  /** Called once the worker has stopped (its Pgq forgets it then: a process that replaced workers kept every stopped one). */
  onStopped?: () => void;
  /** Connection settings for the lease thread; null renews on the main thread. */
  leaseConnection: pg.ClientConfig | null;
  /** Queue control: the limited claims. */
  queueStatements: QueueStatements;
  /** Ends the process (exitOnStuckMs). */
  exit?: (code: number) => void;
}

type WorkerState = 'idle' | 'starting' | 'running' | 'stopping' | 'stopped';

/** The longest delay a Node.js timer keeps; a longer one fires at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export class Worker extends EventEmitter<WorkerEvents> {
  readonly options: ResolvedWorkerOptions;
  readonly #deps: WorkerDeps;
  readonly #logger: Logger;
  readonly #completer: Completer;
  readonly #executor: Executor;
  readonly #producer: Producer;
  readonly #lease: Lease;
  readonly #gate: QueueGate;
  readonly #leader: LeaderElector | undefined;
  readonly #sandbox: SandboxRunner;
  #state: WorkerState = 'idle';
  #starting: Promise<void> | undefined;
  readonly #startAbort = new AbortController();
  #stopping: Promise<void> | undefined;
  #unsubscribe: (() => Promise<void>)[] = [];
  #reconciling: Promise<void> | undefined;
  #loopLagMs = 0;
  /** A cancel may have been sent while this worker did not listen (its LISTEN connection was down): look in the database. */
  #missedCancels = false;
  /** Wakes the watch for cancels when one names a job this worker holds. */
  readonly #cancelWaker = new Waker();
  #stallTasks: Record<string, number> = {};
  #health: HealthProbe | undefined;

  constructor(options: ResolvedWorkerOptions, deps: WorkerDeps) {
    super();
    this.options = options;
    this.#deps = deps;
    const baseId = options.id ?? `${os.hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
    this.#logger = deps.logger.child({ workerId: baseId });
    this.#completer = new Completer(
      deps.db,
      deps.statements,
      this.#logger,
      () => deps.clock.monotonicMs(),
      Math.max(1_000, options.concurrency * 10),
      options.retention?.succeededMs === 0,
    );
    // Claimed, not yet started: the producer's buffer, which the lease thread
    // gives back when a handler blocks the event loop (held-jobs.ts).
    const held = new HeldJobs<HeldJob>(options.concurrency + options.maxClaimBatch, (incomplete) => this.#producer.heldTaken(incomplete));
    this.#lease = new Lease(
      {
        workerId: baseId,
        queues: options.queues,
        tasks: deps.tasks.names(),
        concurrency: options.concurrency,
        heartbeatMs: options.heartbeatMs,
        rescueAfterMs: options.rescueAfterMs,
        stallWarnMs: options.stallWarnMs,
        connection: deps.leaseConnection,
        // At least a second: a pause that short (a collection, a large claim's parsing) is not a blocked loop.
        held: { layout: held.layout, releaseAfterMs: Math.max(options.prefetchTtlMs, 1_000) },
      },
      deps.db,
      deps.statements,
      this.#logger,
      {
        lost: (formerId) => this.#onLeaseLost(formerId),
        stall: (lagMs, tasks, ended, idle) => this.#onStall(lagMs, tasks, ended, idle),
      },
    );
    this.#sandbox = new SandboxRunner(options.sandbox, deps.tasks, deps.maxResultBytes);
    this.#executor = new Executor(
      {
        concurrency: options.concurrency,
        maxResultBytes: deps.maxResultBytes,
        abortGraceMs: options.abortGraceMs,
        exitOnStuckMs: options.exitOnStuckMs,
        sandbox: this.#sandbox,
        progress: deps.progress,
      },
      deps.tasks,
      this.#completer,
      this.#logger,
      deps.clock,
      this,
      deps.exit,
      deps.middleware,
    );
    // Paused and limited queues: the producer claims through the gate.
    this.#gate = new QueueGate(options.queues, {
      ...deps,
      logger: this.#logger,
      wake: () => this.#producer.wake(),
      paused: (queue) => this.#producer.releasePaused(queue),
    });
    this.#producer = new Producer(
      {
        concurrency: options.concurrency,
        queues: options.queues,
        tasks: deps.tasks.names(),
        maxClaimBatch: options.maxClaimBatch,
        pollIntervalMs: options.pollIntervalMs,
        prefetchTtlMs: options.prefetchTtlMs,
        fixedId: options.id !== undefined,
      },
      this.#lease,
      deps.db,
      this.#gate.statements(),
      this.#executor,
      this.#completer,
      deps.clock,
      this.#logger,
      held,
    );
    // Keep the lease row and the stall report up to date as handlers start, settle and get stuck.
    const runningTasks = (): Record<string, number> => this.#executor.runningTasks();
    const report = (started?: string): void => {
      this.#lease.setStuck(this.#executor.stuckCount);
      this.#lease.reportRunning(runningTasks, started);
    };
    this.on('job:start', (job) => report(job.task));
    this.on('job:stuck', () => report());
    this.#executor.onSlotFree(() => report());
    // A limited queue's room opens when an outcome is committed, not when the handler ends.
    this.#completer.onWritten(() => this.#gate.outcomesCommitted());
    if (options.leader) {
      this.#leader = new LeaderElector(
        {
          identity: () => ({ workerId: this.#lease.workerId, registeredAt: this.#lease.registeredAt }),
          heartbeatMs: options.heartbeatMs,
          rescueAfterMs: options.rescueAfterMs,
          // At most a heartbeat later whatever the claims do (a lease not trusted yet, a claim the database holds).
          firstAfter: () => {
            let timer: NodeJS.Timeout | undefined;
            const late = new Promise((resolve) => (timer = setTimeout(resolve, options.heartbeatMs).unref()));
            return Promise.race([this.#producer.firstClaim, late]).finally(() => clearTimeout(timer));
          },
        },
        deps.election,
        (held, timeoutMs) => deps.statements.releaseLeadership(deps.db, { ...held, timeoutMs }),
        leaderServices(options, { ...deps, logger: this.#logger }),
        deps.clock,
        this.#logger,
      );
    }
  }

  /**
   * This worker's id, as written in `jobs.worker_id` and `workers.id`. After
   * a lost lease the worker registers again as `<id>~2`, `<id>~3`, …
   */
  get id(): string {
    return this.#lease.workerId;
  }

  /** Handlers that did not settle within `abortGraceMs` after their signal; they keep their slots. */
  get stuckJobs(): number {
    return this.#executor.stuckCount;
  }

  /** How long the event loop was blocked in the last stall reported (0 when none). */
  get eventLoopLagMs(): number {
    return this.#loopLagMs;
  }

  /** `idle`, `starting`, `running`, `stopping` or `stopped`. */
  get state(): WorkerState {
    return this.#state;
  }

  /** Whether this worker currently holds the maintenance lease. */
  get isLeader(): boolean {
    return this.#leader?.isLeader ?? false;
  }

  /** Jobs whose handlers are running now. */
  get runningJobs(): number {
    return this.#executor.runningCount;
  }

  /**
   * Liveness and readiness, with a message for each failed check: `live`
   * (event loop not stalled for more than `maxEventLoopDelayMs`, default 5 s,
   * since the previous call) and `ready` (running, database reachable, lease
   * not expired, LISTEN connected). The database gets `databaseTimeoutMs`
   * (default 900 ms) to answer, so the result comes within Kubernetes'
   * default one-second probe timeout. Serve it from your own
   * /healthz and /readyz, or use `pgq worker --metrics-port`.
   *
   * @example
   * const h = await worker.health();
   * res.writeHead(h.ready ? 200 : 503).end(JSON.stringify(h));
   */
  async health(options: HealthOptions = {}): Promise<WorkerHealth> {
    const { maxEventLoopDelayMs, databaseTimeoutMs } = healthOptions(options, ['maxEventLoopDelayMs', 'databaseTimeoutMs']);
    return this.#healthProbe().check(maxEventLoopDelayMs, databaseTimeoutMs);
  }

  /**
   * Liveness alone, for a liveness probe: whether the event loop stalled for
   * more than `maxEventLoopDelayMs` (default 5 s) since the previous
   * `liveness()` call. It does not ask the database (a slow database must
   * not get a healthy worker restarted) and keeps its own window, apart
   * from `health()`'s.
   *
   * @example
   * const l = worker.liveness();
   * res.writeHead(l.live ? 200 : 503).end(JSON.stringify(l));
   */
  liveness(options: { maxEventLoopDelayMs?: number | undefined } = {}): WorkerLiveness {
    return this.#healthProbe().liveness(healthOptions(options, ['maxEventLoopDelayMs']).maxEventLoopDelayMs);
  }

  #healthProbe(): HealthProbe {
    this.#health ??= new HealthProbe(
      { workerId: () => this.id, registeredAt: () => this.#lease.registeredAt, rescueAfterMs: this.options.rescueAfterMs },
      this.#deps.kysely,
      this.#deps.listener,
      () => this.#state,
    );
    return this.#health;
  }

  /**
   * Registers the worker and starts claiming. Resolves once the worker is
   * registered and listening; rejects with a `PgqError` (and leaves nothing
   * running) if it cannot: `PGQ_SCHEMA_NOT_READY`, `PGQ_WORKER_ID_TAKEN`,
   * `PGQ_WORKER_STOPPED` for a worker already stopped, else a
   * `WorkerStartError` whose `cause` says why (the database could not be
   * reached, …).
   */
  start(): Promise<void> {
    // #stopping too: a stop() called in the same tick has not changed the state yet (the worker then started, and no stop ever ended it).
    if (this.#stopping || this.#state === 'stopping' || this.#state === 'stopped') {
      return Promise.reject(new PgqError('PGQ_WORKER_STOPPED', 'this worker was stopped; create a new one with pgq.worker()'));
    }
    this.#starting ??= this.#start().catch(async (err: unknown) => {
      await this.#lease.stop();
      await this.#teardownSubscriptions();
      // A step that failed after the registration: the row goes too, so the
      // worker is not listed as live and a start with the same id works.
      await this.#deregister(heartbeatLimitMs(this.options.heartbeatMs));
      // Only now may start() be called again: a new start must not overlap this cleanup.
      this.#starting = undefined;
      this.#state = 'idle';
      throw err instanceof PgqError ? err : new WorkerStartError(err);
    });
    // Resolves once the lease thread runs too; a stop() meanwhile does not wait for it.
    return this.#starting.then(() => this.#lease.running);
  }

  async #start(): Promise<void> {
    this.#state = 'starting';
    const { listener, channels, tasks } = this.#deps;
    const queues = new Set(this.options.queues);
    // The lease thread starts beside the other steps and may still be
    // booting (20–40 ms of CPU) when the lease is registered and the first
    // claim goes out: the thread is spawned first and takes its `renew-as`
    // once it is up, off the main loop, so a handler that blocks the loop
    // from the first job on does not cost the lease; until the thread's
    // first renewal, half a heartbeat after the registration, the
    // registration's own expiry covers the claims (the trust window,
    // lease.ts).
    const subscribe = async (): Promise<void> => {
      this.#unsubscribe.push(
        await listener.subscribe(channels.jobs, (payload) => {
          if (queues.has(payload)) return this.#producer.wake();
          const delayed = readScheduledPayload(payload);
          if (delayed && queues.has(delayed.queue)) this.#producer.dueAt(delayed.dueAt);
        }),
        await listener.subscribe(channels.cancel, (id) => this.#cancelHeard(id)),
      );
      const offConnect = listener.onConnect(() => {
        this.#producer.reconnected();
        this.#missedCancels = true; // a cancel sent while it was down was not heard
      });
      this.#unsubscribe.push(async () => void offConnect());
      // The gate subscribes too before the listener is up (one LISTEN
      // statement for every channel) and reads the queues' settings once it
      // is, so that a change made after its reading is heard. Listening is a
      // latency hint: start without it rather than wait for it.
      this.#unsubscribe.push(() => this.#gate.stop());
      await this.#gate.start(() => listener.ready(this.options.pollIntervalMs));
    };
    const leaseStarted = this.#lease.start();
    // Open the pool's connections now, not one by one under the first jobs;
    // waited for only once the other steps have worked: against a server
    // that accepts and never answers, the start failed when they gave up
    // (10 s) but waited out the pool's own connect limit (30 s) for this.
    // Its failure is not worth a warning once the start has failed (it said why) or a stop has begun.
    let failedStart = false;
    const warming = this.#deps.warmUp?.(() => failedStart || this.#state === 'stopping' || this.#state === 'stopped');
    warming?.catch(() => undefined);
    const steps = await Promise.allSettled([
      (async () => {
        await this.#deps.checkSchema();
        // Registered once the schema is known to be pgq's, beside the other steps.
        await leaseStarted;
        await this.#lease.register(this.#startAbort.signal);
        await this.#deps.syncSchedules?.();
      })(),
      this.#sandbox.ready(),
      leaseStarted,
      subscribe(),
    ]);
    const failed = steps.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) {
      failedStart = true;
      throw failed.reason;
    }
    await warming;
    await this.#producer.start();
    const watching = new AbortController();
    const watch = this.#watchCancels(watching.signal);
    this.#unsubscribe.push(async () => {
      watching.abort();
      await watch;
    });
    await this.#leader?.start();
    this.#state = 'running';
    this.#logger.info(
      { queues: this.options.queues, concurrency: this.options.concurrency, tasks: tasks.names() },
      'pgq worker started',
    );
  }

  /**
   * A notification on the cancel channel. It is a hint, not an order: any
   * role that can connect may send one (`pg_notify` needs no privilege),
   * and one that arrives late may name a job this worker has claimed again
   * since. So the database says which of this worker's jobs were asked to
   * stop (`cancel_requested_at`, which a claim clears): looked up at once
   * when the id names a job held here, on the watch's next turn otherwise
   * (a claim whose reply is on its way may hold it).
   */
  #cancelHeard(id: string): void {
    this.#missedCancels = true;
    if (this.#executor.heldIds().includes(id) || this.#producer.bufferedIds().includes(id)) this.#cancelWaker.wake();
  }

  /**
   * The database says job `id`, held by this worker, was asked to stop: a
   * job not started yet is given back (it ends cancelled); a running
   * attempt's signal aborts.
   */
  #cancelled(id: string): void {
    // Its outcome was given up: its row waits for the rescuer, nothing runs here.
    if (this.#executor.unrecordedIds().includes(id)) return;
    // An attempt this worker holds without having started it goes back (it
    // ends cancelled); one waiting behind an earlier attempt of the job goes
    // back too, and that earlier attempt (rescued from here, its outcome
    // will be discarded) is signalled with the running ones.
    const held = this.#producer.cancelUnstarted(id);
    // Not here (yet?): a claim whose reply is still on its way may hold it.
    // The database says, on the watch's next turn.
    if (!this.#executor.abort(id, new JobCancelledError(id)) && !held) this.#missedCancels = true;
  }

  /**
   * The jobs this worker holds whose cancel was asked for, read from the
   * database: at once after a cancel notification for a job held here, on
   * the next turn after one for another (turns are pollIntervalMs apart, a
   * second at least: a claim whose reply is on its way may bring that job),
   * every turn while not listening (`listen: false`, or the LISTEN
   * connection down: the notification never arrives), and once after each
   * reconnect. A buffered job is given back (and ends cancelled), a running
   * one's signal aborts. The same loop gives back, while not listening, the
   * jobs running under this worker that it does not hold (below).
   */
  async #watchCancels(signal: AbortSignal): Promise<void> {
    const { listener, statements, db } = this.#deps;
    // Not listening (listen: false, or a LISTEN connection that cannot
    // connect), no reconnect is seen: outcomes lost to a crash of PostgreSQL
    // (written without waiting for the disk) would leave their jobs running
    // here, unheld, for as long as this worker lives. So what is running
    // under this worker's id and not held here is given back every
    // rescueAfterMs, as after a reconnect.
    const reconcileEveryMs = Math.max(1_000, this.options.rescueAfterMs);
    const { clock } = this.#deps;
    let reconcileAt = clock.monotonicMs() + reconcileEveryMs;
    while (!signal.aborted) {
      await this.#cancelWaker.wait(Math.max(this.options.pollIntervalMs, 1_000), signal);
      if (signal.aborted) return;
      if (!listener.connected && clock.monotonicMs() >= reconcileAt) {
        reconcileAt = clock.monotonicMs() + reconcileEveryMs;
        this.#producer.reconnected();
      }
      if (listener.connected && !this.#missedCancels) continue;
      // Holding nothing yet: a claim whose reply is on its way may bring the
      // job, so the look-up waits for a turn where this worker holds jobs.
      if (this.#executor.runningCount === 0 && this.#producer.bufferedIds().length === 0) continue;
      this.#missedCancels = false;
      try {
        for (const id of await statements.cancelRequested(db, { workerId: this.#lease.workerId })) this.#cancelled(id);
      } catch (err) {
        this.#missedCancels = true;
        this.#logger.debug({ err: errorSummary(err) }, `pgq could not look up cancelled jobs: ${errorMessage(err)}`);
      }
    }
  }

  /**
   * Graceful stop: stop claiming, let running handlers finish for up to
   * `shutdownGraceMs` (or `graceMs`), abort the rest and requeue their jobs,
   * write every outcome, resign leadership and deregister.
   */
  stop(options: { graceMs?: number } = {}): Promise<void> {
    let graceMs: unknown;
    try {
      graceMs = optionsArgument(options, 'options', ['graceMs']).graceMs ?? this.options.shutdownGraceMs;
    } catch (err) {
      return Promise.reject(err as Error);
    }
    // NaN, text or more than a timer holds (2^31 - 1 ms) would be a timer of 1 ms: every running job signalled at once.
    if (typeof graceMs !== 'number' || !(graceMs === Infinity || (graceMs >= 0 && graceMs <= MAX_TIMER_MS))) {
      return Promise.reject(
        new ValidationError('options.graceMs', `must be a number of milliseconds from 0 to ${MAX_TIMER_MS}, or Infinity to wait for the handlers however long, got ${String(graceMs)}`),
      );
    }
    this.#stopping ??= this.#stop(graceMs).finally(() => this.#deps.onStopped?.());
    return this.#stopping;
  }

  async #stop(graceMs: number): Promise<void> {
    // A start waiting out the lease of its id's last holder gives up.
    this.#startAbort.abort(new PgqError('PGQ_SHUTDOWN', 'the worker was stopped while its start waited for the lease of its id to run out'));
    await this.#starting?.catch(() => undefined);
    if (this.#state === 'idle') {
      this.#state = 'stopped';
      return;
    }
    this.#state = 'stopping';
    this.#logger.info({ running: this.#executor.runningCount, graceMs }, 'pgq worker stopping');
    await this.#producer.stop();
    const idle = await this.#executor.waitIdle(graceMs);
    if (!idle) {
      this.#logger.warn({ running: this.#executor.runningCount }, 'pgq shutdown grace period over; signalling running jobs');
      this.#executor.abortAll(new WorkerShutdownError());
    }
    // Held until every handler settles: the lease is renewed meanwhile. The
    // outcomes are written as they come. What the stop then writes (the last
    // outcomes, the maintenance's end, the row's removal) shares one limit of
    // a lease's length (at least 5 s): a database that does not answer holds
    // the stop no longer, and the rescuer retries what was not written.
    const writeLimitMs = Math.max(5_000, this.options.rescueAfterMs);
    this.#completer.giveUpAfter(writeLimitMs);
    await this.#executor.idle();
    await this.#sandbox.close();
    const endBy = performance.now() + writeLimitMs;
    const left = (): number => Math.max(0, endBy - performance.now());
    const written = (async () => {
      await this.#executor.settled();
      await this.#completer.flush(writeLimitMs);
    })();
    if (!(await settlesWithin(written, left()))) {
      this.#completer.abandon();
      const jobs = this.#completer.unwrittenJobIds();
      this.#logger.warn(
        { limitMs: writeLimitMs, jobs },
        `pgq could not record the last outcomes within ${writeLimitMs} ms${jobs.length ? ` (jobs ${jobs.join(', ')})` : ''}; the rescuer will retry those jobs`,
      );
    }
    // A reconcile that cannot reach the database does not hold the stop either.
    if (this.#reconciling) await settlesWithin(this.#reconciling, left());
    // The leader's maintenance and the release of its row take at most half
    // of what is left: the removal of the worker's row keeps the rest.
    await this.#stopLeader(Math.max(250, left() / 2));
    await this.#lease.stop();
    await this.#teardownSubscriptions(Math.max(250, left()));
    await this.#deregister(left());
    // A registration again after a lost lease that the stop gave up waiting
    // for may still land (its statement was sent): that row goes too, once
    // it has, rather than stay listed as live until its lease runs out.
    const reconciling = this.#reconciling;
    if (reconciling) void reconciling.then(() => this.#deregister(heartbeatLimitMs(this.options.heartbeatMs)));
    this.#state = 'stopped';
    this.#health?.stop();
    this.#logger.info({}, 'pgq worker stopped');
  }

  /**
   * Removes the worker row, within what is `left` of the stop's limit (at
   * least 250 ms): a database that does not answer lets the lease expire
   * instead. (Bounded by a heartbeat as well, a removal held up by load was
   * given up, and the row stayed listed as live until its lease ran out.)
   */
  async #deregister(leftMs: number): Promise<void> {
    // Not registered under its current id (never, or a registration after a lost lease that failed): no row of its own to remove.
    const registeredAt = this.#lease.registeredAt;
    if (!registeredAt) return;
    const endBy = performance.now() + leftMs;
    const remove = (): Promise<unknown> =>
      this.#deps.statements.deregisterWorker(this.#deps.db, { workerId: this.#lease.workerId, registeredAt, timeoutMs: Math.max(250, endBy - performance.now()) });
    await remove()
      // A connection that broke (a backend terminated, a pooled connection the server had closed) is not a
      // database that does not answer: once more on another, while the limit lasts. Else the row stayed,
      // listed as live, and a fixed id started again waited out its lease.
      .catch((err: unknown) => (isConnectionError(err) && endBy - performance.now() > 250 ? remove() : Promise.reject(err)))
      .catch((err: unknown) => this.#logger.warn({ err: errorSummary(err) }, `pgq could not deregister the worker: ${errorMessage(err)}`));
  }

  /**
   * Stops the maintenance, for at most `limitMs`: a pass whose statement
   * waits on a database that does not answer (limited to max(60 s,
   * rescueAfterMs), and the passes queued behind it) does not hold the stop
   * longer. It then ends on its own; the leadership lapses with its lease.
   */
  async #stopLeader(limitMs: number): Promise<void> {
    if (!this.#leader) return;
    const endBy = performance.now() + limitMs;
    if (!(await settlesWithin(this.#leader.stop(() => Math.max(250, endBy - performance.now())), limitMs))) this.#logger.warn({ limitMs }, `pgq maintenance did not stop within ${limitMs} ms (a statement the database has not answered); it ends on its own, and the leadership lapses with its lease`);
  }

  /**
   * Stops without a grace period: signals running handlers at once (their
   * jobs are given back when they settle). Also cuts short a graceful stop
   * already under way. Like `stop()`, it resolves only once every handler
   * has settled: a job is never given to another worker while its handler
   * still runs here.
   */
  hardStop(): Promise<void> {
    const stopping = this.stop({ graceMs: 0 });
    this.#executor.abortAll(new WorkerShutdownError());
    return stopping;
  }

  #onLeaseLost(formerId: string): void {
    this.#logger.warn({ formerId }, `pgq worker ${formerId} lost its lease (it was silent for its rescueAfterMs); registering again`);
    // One reconcile at a time: a lease lost again meanwhile is reconciled after.
    const reconciling: Promise<void> = (this.#reconciling ?? Promise.resolve()).then(() => this.#reconcile(formerId)).finally(() => {
      if (this.#reconciling === reconciling) this.#reconciling = undefined;
      this.#producer.wake();
    });
    this.#reconciling = reconciling;
  }

  /** Registers again and keeps exactly the attempts that were not rescued. */
  async #reconcile(formerId: string): Promise<void> {
    // Every id this worker may hold attempts under: a retry after an adoption
    // whose reply was lost finds them under the id registered before.
    const formerIds = [formerId];
    for (let failures = 0; this.#state !== 'stopped'; failures += 1) {
      try {
        const registering = this.#lease.reregister();
        formerIds.push(this.#lease.workerId);
        const workerId = await registering;
        // [id, attempt]: one job may be here twice (an attempt rescued earlier, still settling, and its next).
        const held = [...this.#executor.heldAttempts(), ...this.#producer.bufferedAttempts()];
        const adopted = held.length === 0
          ? new Set<string>()
          : new Set((await this.#deps.statements.adoptJobs(this.#deps.db, {
              workerId,
              formerWorkerIds: formerIds.filter((id) => id !== workerId),
              ids: held.map(([id]) => id),
              attempts: held.map(([, attempt]) => attempt),
            })).map((r) => `${r.id}:${r.attempts}`));
        const rescued = held.filter(([id, attempt]) => !adopted.has(`${id}:${attempt}`));
        // Rescued buffered jobs leave the buffer; rescued running attempts get their signal.
        const running = rescued.filter(([id, attempt]) => !this.#producer.dropBuffered(id, attempt));
        for (const [id, attempt] of running) this.#executor.abort(id, new LeaseLostError(), attempt);
        const strays = await this.#giveBackStrays(held.filter(([id, attempt]) => adopted.has(`${id}:${attempt}`)));
        this.#lease.adopted();
        this.#logger.warn(
          { workerId, kept: adopted.size, rescued: rescued.map(([id]) => id) },
          `pgq worker registered again as ${workerId}: kept ${adopted.size - strays} attempt(s), ${rescued.length} had been rescued${strays > 0 ? `, ${strays} claimed ahead went back` : ''}`,
        );
        return;
      } catch (err) {
        if (failures === 0 || failures % 20 === 0) {
          this.#logger.warn({ err: errorSummary(err) }, `pgq could not register the worker again, retrying: ${errorMessage(err)}`);
        }
        await sleep(Math.min(this.options.heartbeatMs, 100 * 2 ** Math.min(failures, 6)));
      }
    }
  }

  /**
   * Adopted attempts this worker no longer holds: taken out of the buffer
   * while the adoption ran (aged out, or given back by the lease thread
   * while the loop was blocked) by a give-back that matched nothing yet, the
   * rows being under the lost id. Given back now, attempt not counted; an
   * outcome given up (#unrecorded) stays for the rescuer.
   */
  async #giveBackStrays(adopted: [string, number][]): Promise<number> {
    const stillHeld = new Set([...this.#executor.heldAttempts(), ...this.#producer.bufferedAttempts()].map(([id, attempt]) => `${id}:${attempt}`));
    const unrecorded = new Set(this.#executor.unrecordedIds());
    const strays = adopted.filter(([id, attempt]) => !stillHeld.has(`${id}:${attempt}`) && !unrecorded.has(id));
    if (strays.length === 0) return 0;
    return this.#deps.statements
      .releaseUnstarted(this.#deps.db, { workerIds: this.#lease.ids, attempts: strays })
      .catch((err: unknown) => {
        this.#logger.warn({ err: errorSummary(err), jobs: strays.map(([id]) => id) }, `pgq could not give back jobs claimed ahead; the rescuer will: ${errorMessage(err)}`);
        return 0;
      });
  }

  #onStall(lagMs: number, tasks: Record<string, number>, ended: boolean, idle: boolean): void {
    this.#loopLagMs = lagMs;
    if (!ended) {
      this.#stallTasks = tasks; // the lease thread logged it while the loop was blocked
      return;
    }
    this.#logger.warn(
      { lagMs, tasks: this.#stallTasks },
      idle
        ? `pgq worker's event loop did not run for ${lagMs} ms while the process used little CPU: a handler waiting synchronously (execSync, Atomics.wait, a slow synchronous read) or a paused process (SIGSTOP, a suspended VM)`
        : `pgq worker's event loop was blocked for ${lagMs} ms; CPU-bound handlers belong in a sandbox`,
    );
    // As every worker event: a listener that throws is logged, and the worker goes on (it ended the process).
    try {
      this.emit('loop:stall', lagMs, this.#stallTasks);
    } catch (err) {
      this.#logger.error({ err: errorSummary(err), event: 'loop:stall' }, `a pgq loop:stall listener threw: ${errorMessage(err)}`);
    }
  }

  /**
   * Ends the subscriptions all at once: each stops its callbacks as it is
   * called, then waits for its own end (an UNLISTEN, a statement under way),
   * for at most `limitMs`: a database that does not answer holds a stop no
   * longer (the listener's connection goes at close()).
   */
  async #teardownSubscriptions(limitMs = Infinity): Promise<void> {
    const ending = Promise.allSettled(this.#unsubscribe.splice(0).map((fn) => fn()));
    if (Number.isFinite(limitMs)) await settlesWithin(ending, limitMs);
    else await ending;
  }
}

/** The health checks' `maxEventLoopDelayMs` (default 5 s): a bad one would make a worker never live, a restart loop for a liveness probe. */
/** The options of `health()` and `liveness()`, checked: unknown keys and bad values are refused by name. */
function healthOptions(options: HealthOptions, allowed: readonly (keyof HealthOptions)[]): Required<HealthOptions> {
  const given = optionsArgument(options, 'options', allowed) as Record<string, unknown>;
  const number = (key: keyof HealthOptions, fallback: number, min: number): number => {
    const ms = given[key] ?? fallback;
    if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < min) throw new ValidationError(key, `must be a finite number of milliseconds, ${min} or more, got ${String(ms)}`);
    return ms;
  };
  return { maxEventLoopDelayMs: number('maxEventLoopDelayMs', 5_000, 0), databaseTimeoutMs: number('databaseTimeoutMs', 900, 1) };
}
