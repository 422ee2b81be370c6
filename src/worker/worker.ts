/**
 * A worker: heartbeat → producer → executor → completer, plus leader
 * election with the maintenance services it runs while elected.
 *
 * start(): register the worker row, subscribe to NOTIFY (jobs, cancel), start
 * the heartbeat, the producer and the election.
 * stop(): stop claiming; wait up to `shutdownGraceMs` for running handlers;
 * abort the rest (their jobs go back to the queue at once, the attempt not
 * counted against them); flush the completer; resign leadership; remove the
 * worker row. A second stop() while one is under way joins it.
 */
import os from 'node:os';
import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { Logger } from '../core/logger.js';
import type { Clock } from '../core/clock.js';
import type { Service } from '../core/service.js';
import { JobCancelledError, LeaseLostError, WorkerShutdownError, errorMessage, errorSummary } from '../core/errors.js';
import type { ResolvedWorkerOptions } from '../config.js';
import type { SqlExecutor } from '../db/executor.js';
import type { HotStatements } from '../db/statements.js';
import type { PgqDatabase } from '../db/tables.js';
import type { Listener } from '../notify/listener.js';
import type { ChannelNames } from '../notify/channels.js';
import type { TaskRegistry } from '../task.js';
import { Completer } from './completer.js';
import { Executor, type WorkerEvents } from './executor.js';
import { Producer } from './producer.js';
import { Heartbeat } from './heartbeat.js';
import { LeaderElector } from '../maintenance/leader.js';
import { Rescuer } from '../maintenance/rescuer.js';

export interface WorkerDeps {
  db: SqlExecutor;
  kysely: Kysely<PgqDatabase>;
  statements: HotStatements;
  listener: Listener;
  channels: ChannelNames;
  tasks: TaskRegistry;
  logger: Logger;
  clock: Clock;
  maxResultBytes: number;
  /** Extra leader-only services (scheduler, pruner) started while this worker leads. */
  leaderServices?: readonly Service[];
  /** Saves the schedules declared in code; runs first in `start()`, which rejects if it fails. */
  syncSchedules?: () => Promise<void>;
}

type WorkerState = 'idle' | 'starting' | 'running' | 'stopping' | 'stopped';

export class Worker extends EventEmitter<WorkerEvents> {
  /** This worker's id, as written in `jobs.worker_id` and `workers.id`. */
  readonly id: string;
  readonly options: ResolvedWorkerOptions;
  readonly #deps: WorkerDeps;
  readonly #logger: Logger;
  readonly #completer: Completer;
  readonly #executor: Executor;
  readonly #producer: Producer;
  readonly #heartbeat: Heartbeat;
  readonly #leader: LeaderElector | undefined;
  readonly #rescuer: Rescuer;
  #state: WorkerState = 'idle';
  #starting: Promise<void> | undefined;
  #stopping: Promise<void> | undefined;
  #unsubscribe: (() => Promise<void>)[] = [];

  constructor(options: ResolvedWorkerOptions, deps: WorkerDeps) {
    super();
    this.options = options;
    this.#deps = deps;
    this.id = options.id ?? `${os.hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
    this.#logger = deps.logger.child({ workerId: this.id });
    this.#completer = new Completer(deps.db, deps.statements, this.#logger, () => deps.clock.monotonicMs());
    this.#executor = new Executor(options.concurrency, deps.tasks, this.#completer, this.#logger, deps.clock, deps.maxResultBytes, this);
    this.#producer = new Producer(
      {
        workerId: this.id,
        concurrency: options.concurrency,
        queues: options.queues,
        tasks: deps.tasks.names(),
        maxClaimBatch: options.maxClaimBatch,
        pollIntervalMs: options.pollIntervalMs,
      },
      deps.db,
      deps.statements,
      this.#executor,
      deps.clock,
      this.#logger,
    );
    this.#heartbeat = new Heartbeat(
      { workerId: this.id, queues: options.queues, concurrency: options.concurrency, heartbeatMs: options.heartbeatMs },
      deps.db,
      deps.statements,
      () => {
        this.#producer.dropAllBuffered();
        this.#executor.abortAll(new LeaseLostError());
      },
      this.#logger,
    );
    this.#rescuer = new Rescuer(
      { rescueAfterMs: options.rescueAfterMs, intervalMs: Math.max(10, Math.min(options.heartbeatMs, options.rescueAfterMs / 4)) },
      deps.db,
      deps.statements,
      this.#logger,
    );
    if (options.leader) {
      this.#leader = new LeaderElector(
        { workerId: this.id, heartbeatMs: options.heartbeatMs, rescueAfterMs: options.rescueAfterMs },
        deps.kysely,
        [this.#rescuer, ...(deps.leaderServices ?? [])],
        deps.clock,
        this.#logger,
      );
    }
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
   * Registers the worker and starts claiming. Resolves once the worker is
   * registered and listening; rejects (and leaves nothing running) if the
   * database cannot be reached.
   */
  start(): Promise<void> {
    if (this.#state === 'stopping' || this.#state === 'stopped') {
      return Promise.reject(new Error('this worker was stopped; create a new one with pgq.worker()'));
    }
    this.#starting ??= this.#start().catch(async (err: unknown) => {
      this.#starting = undefined;
      await this.#teardownSubscriptions();
      this.#state = 'idle';
      throw err;
    });
    return this.#starting;
  }

  async #start(): Promise<void> {
    this.#state = 'starting';
    const { listener, channels, tasks } = this.#deps;
    const queues = new Set(this.options.queues);
    await this.#deps.syncSchedules?.();
    await this.#heartbeat.register();
    this.#unsubscribe.push(
      await listener.subscribe(channels.jobs, (queue) => {
        if (queues.has(queue)) this.#producer.wake();
      }),
      await listener.subscribe(channels.cancel, (id) => {
        if (!this.#producer.dropBuffered(id)) this.#executor.abort(id, new JobCancelledError(id));
      }),
    );
    const offConnect = listener.onConnect(() => this.#producer.reconnected());
    this.#unsubscribe.push(async () => void offConnect());
    await listener.ready();
    await this.#heartbeat.start();
    await this.#producer.start();
    await this.#leader?.start();
    this.#state = 'running';
    this.#logger.info(
      { queues: this.options.queues, concurrency: this.options.concurrency, tasks: tasks.names() },
      'pgq worker started',
    );
  }

  /**
   * Graceful stop: stop claiming, let running handlers finish for up to
   * `shutdownGraceMs` (or `graceMs`), abort the rest and requeue their jobs,
   * write every outcome, resign leadership and deregister.
   */
  stop(options: { graceMs?: number } = {}): Promise<void> {
    this.#stopping ??= this.#stop(options.graceMs ?? this.options.shutdownGraceMs);
    return this.#stopping;
  }

  async #stop(graceMs: number): Promise<void> {
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
      this.#logger.warn({ running: this.#executor.runningCount }, 'pgq shutdown grace period over; aborting running jobs');
      this.#executor.abortAll(new WorkerShutdownError());
    }
    await this.#executor.settled();
    await this.#completer.flush(Math.max(5_000, this.options.rescueAfterMs));
    await this.#leader?.stop();
    await this.#heartbeat.stop();
    await this.#teardownSubscriptions();
    await this.#deps.kysely
      .deleteFrom('workers')
      .where('id', '=', this.id)
      .execute()
      .catch((err: unknown) => this.#logger.warn({ err: errorSummary(err) }, `pgq could not deregister the worker: ${errorMessage(err)}`));
    this.#state = 'stopped';
    this.#logger.info({}, 'pgq worker stopped');
  }

  /**
   * Stops at once: aborts running handlers (their jobs are requeued), no
   * grace period. Also cuts short a graceful stop already under way.
   */
  hardStop(): Promise<void> {
    const stopping = this.stop({ graceMs: 0 });
    this.#executor.abortAll(new WorkerShutdownError());
    return stopping;
  }

  async #teardownSubscriptions(): Promise<void> {
    const fns = this.#unsubscribe.splice(0);
    for (const fn of fns) await fn();
  }
}
