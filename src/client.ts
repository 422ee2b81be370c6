/**
 * The `Pgq` class: the composition root. It owns (or borrows) the pool, the
 * one LISTEN connection, the typed Kysely handle and the hot-path statements,
 * and hands them to the enqueuer, the stores (jobs, queues, schedules,
 * workflows) and the workers. Each public method checks the instance is open
 * and delegates; the work itself lives in those pieces.
 */
import pg from 'pg';
import { Kysely, PostgresDialect } from './db/kysely.js';
import {
  resolvePgqOptions,
  resolveWorkerOptions,
  type PgqOptions,
  type ResolvedPgqOptions,
  type ResolvedWorkerOptions,
  type WorkerOptions,
} from './config.js';
import { defaultLogger, type Logger } from './core/logger.js';
import { systemClock, type Clock } from './core/clock.js';
import { PgqError, ValidationError, errorMessage, errorSummary, optionsArgument } from './core/errors.js';
import { JobStore, type BulkAction, type QueueStats } from './jobs/job-store.js';
import type { JobFilter, ListJobsFilter } from './jobs/job-filter.js';
import { ProgressWriter } from './worker/progress.js';
import { listWorkers, type WorkerInfo } from './inspection/workers.js';
import type { JobRecord } from './core/types.js';
import { heartbeatLimitMs } from './core/defaults.js';
import { onAbort, settlesWithin } from './core/sleep.js';
import { fromDbHandle, fromPg, type DbHandle, type Queryable } from './db/queryable.js';
import { createStatements, type HotStatements } from './db/statements.js';
import { createQueueStatements, type QueueStatements } from './db/queue-statements.js';
import { QueueStore, type QueueRecord, type QueueSettings } from './queues.js';
import type { PgqDatabase } from './db/tables.js';
import { migrate, type MigrateResult } from './db/migrate.js';
import { checkSchemaVersion, explainNotMigrated } from './db/schema-version.js';
import { PoolLane, TimedPool, poolClientConfig, warmUpPool, watchConnectionErrors } from './db/pool.js';
import { createBulkInsert } from './db/bulk-insert.js';
import { setupRoles, type RolesOptions } from './roles.js';
import { Listener } from './notify/listener.js';
import { channelNames, type ChannelNames } from './notify/channels.js';
import { Enqueuer, type EnqueueManyOptions, type EnqueueOptions } from './enqueue.js';
import { MiddlewareChain, type Middleware } from './middleware.js';
import { TaskRegistry, type AnyTask, type TaskInput, type TaskResult } from './task.js';
import { Worker } from './worker/worker.js';
import { findOrphanedTasks, type OrphanedTask } from './db/worker-tasks.js';
import { setUpSession, trackedClients } from './db/connection.js';
import {
  ScheduleStore,
  resolveDeclaredSchedules,
  resolveSchedule,
  type ScheduleOptions,
  type ScheduleRecord,
} from './schedules.js';
import type { Flow } from './workflow/flow.js';
import { WorkflowStore, type EnqueueWorkflowOptions, type ListWorkflowsFilter, type WorkflowRecord, type WorkflowSummary } from './workflow/store.js';

/** What a worker's claims and outcomes use at once, opened by its start(). */
const WORKER_WARM_CONNECTIONS = 2;
/** How long the pool pgq makes waits for a connection: a new one to answer, or one of its own to be free. */
const POOL_CONNECT_TIMEOUT_MS = 30_000;
/** A progress write not answered within this is cancelled and given up (logged). */
const PROGRESS_WRITE_LIMIT_MS = 10_000;
/** How long close() lets the pool pgq made end by itself before it closes the connections left. */
const CLOSE_POOL_WAIT_MS = 1_000;

/**
 * The leader's rescuer, expirer, orphan report and pruner take turns on one
 * of the pool's connections (the scheduler, which fires on time, does not
 * wait behind them).
 */
const MAINTENANCE_CONNECTIONS = 1;

/** The keys of `WaitForJobOptions` (and waitForWorkflow's), checked: a misspelt one is refused. */
const WAIT_OPTIONS = ['timeoutMs', 'signal'];

/** Options of `waitForJob`. */
export interface WaitForJobOptions {
  /** Give up after this long with a `WaitTimeoutError`. Default: no limit. */
  timeoutMs?: number | undefined;
  /** Give up when this signal aborts (with its reason). */
  signal?: AbortSignal | undefined;
}

export class Pgq {
  /** Typed Kysely handle on pgq's schema, for your own inspection queries. */
  readonly kysely: Kysely<PgqDatabase>;
  readonly schema: string;
  readonly tasks: TaskRegistry;
  readonly logger: Logger;
  readonly #options: ResolvedPgqOptions;
  readonly #pool: pg.Pool;
  readonly #ownsPool: boolean;
  /** The clients of the pool pgq makes (close() ends those a silent server holds). */
  readonly #clients = trackedClients();
  readonly #unwatchPool: () => void;
  readonly #db: Queryable;
  /**
   * pgq's pool for enqueues with a `uniqueKey`, on a lane of at most half
   * its connections (of a pool of two or more): such an insert waits (in PostgreSQL) for any open
   * transaction that enqueued the same key, and a few of them waiting on an
   * application's long transaction held every connection, so the worker in
   * the same process could claim nothing and every other call waited too.
   */
  readonly #uniqueDb: Queryable;
  readonly #statements: HotStatements;
  readonly #queueStatements: QueueStatements;
  readonly #queues: QueueStore;
  readonly #channels: ChannelNames;
  readonly #listener: Listener;
  readonly #enqueuer: Enqueuer;
  readonly #clock: Clock;
  readonly #schedules: ScheduleStore;
  readonly #workflows: WorkflowStore;
  readonly #jobs: JobStore;
  readonly #progress: ProgressWriter;
  readonly #workers = new Set<Worker>();
  readonly #middleware: MiddlewareChain;
  #closed = false;
  /** The LISTEN connection was found on another database than the pool's, and said so. */
  #listenDatabaseTold = false;
  /** Public calls under way (see #call). */
  readonly #calls = new Set<Promise<unknown>>();
  #closing: Promise<void> | undefined;
  /** Waits for jobs and workflows under way: ended by `close()` once the workers have stopped. */
  readonly #waits = new Set<AbortController>();

  /**
   * @example
   * const pgq = new Pgq({ connectionString: process.env.DATABASE_URL, tasks: [sendEmail] });
   * await pgq.migrate();
   */
  constructor(options: PgqOptions) {
    this.#options = resolvePgqOptions(options);
    const o = this.#options;
    this.schema = o.schema;
    this.logger = o.logger ?? defaultLogger();
    this.#clock = o.clock ?? systemClock;
    this.tasks = new TaskRegistry(o.tasks);
    this.#ownsPool = !o.pool;
    // connectionTimeoutMillis: a connection a server accepts and never answers
    // (a hung server, a silent proxy) is given up, not kept in the pool's
    // slot for ever; and a call waits at most that long for a free connection.
    this.#pool = o.pool ?? new pg.Pool({
      connectionString: o.connectionString,
      max: o.poolSize,
      keepAlive: true,
      connectionTimeoutMillis: POOL_CONNECT_TIMEOUT_MS,
      Client: this.#clients.Client as unknown as new () => pg.ClientBase,
      // DateStyle ISO, before the connection's first statement (a setting PgBouncer carries per client).
      // A pool of yours is yours to set up.
      onConnect: (client) => setUpSession(client, POOL_CONNECT_TIMEOUT_MS),
    });
    // The pool's own 'error' (idle clients) is the owner's to handle: watched only on a pool pgq made.
    this.#unwatchPool = watchConnectionErrors(
      this.#pool,
      (err) => {
        // Once closing, a connection's error is the end it was asked for.
        if (!this.#closed) this.logger.warn({ err: errorSummary(err) }, `pgq pool connection error: ${err.message}`);
      },
      { idle: this.#ownsPool },
    );
    this.kysely = new Kysely<PgqDatabase>({ dialect: new PostgresDialect({ pool: this.#pool }) }).withSchema(o.schema);
    this.#db = fromPg(this.#pool, o.preparedStatements);
    const poolOptions = (this.#pool as { options?: { max?: unknown; connectionTimeoutMillis?: unknown } }).options;
    const connections = typeof poolOptions?.max === 'number' && poolOptions.max >= 1 ? poolOptions.max : o.poolSize;
    // A turn is waited for as long as a connection of the pool would be: an enqueue of the transaction the
    // lane's statements wait for, made through the pool, would otherwise wait for a turn for ever.
    const connectWaitMs = typeof poolOptions?.connectionTimeoutMillis === 'number' && poolOptions.connectionTimeoutMillis > 0 ? poolOptions.connectionTimeoutMillis : POOL_CONNECT_TIMEOUT_MS;
    this.#uniqueDb = connections >= 2 ? fromPg(new PoolLane(this.#pool, Math.floor(connections / 2), connectWaitMs), o.preparedStatements) : this.#db;
    this.#statements = createStatements(o.schema);
    this.#queueStatements = createQueueStatements(o.schema);
    this.#queues = new QueueStore(this.kysely, o.schema);
    this.#channels = channelNames(o.schema);
    const listenConfig: pg.ClientConfig = o.listenConnectionString
      ? { connectionString: o.listenConnectionString }
      : o.pool
        ? poolClientConfig(o.pool)
        : { connectionString: o.connectionString };
    this.#listener = new Listener(o.listen ? { ...listenConfig, keepAlive: true } : null, this.logger);
    if (o.listen && o.listenConnectionString) this.#listener.checkDatabase((name) => void this.#checkListenDatabase(name));
    this.#middleware = new MiddlewareChain(o.middleware);
    this.#enqueuer = new Enqueuer(this.#statements, (db, uniqueKey) => this.#queryableFor(db, uniqueKey), o.maxPayloadBytes, this.#middleware, (err) =>
      this.logger.warn({ err: errorSummary(err) }, `pgq could not notify workers (they will poll): ${errorMessage(err)}`),
      createBulkInsert(o.schema),
    );
    this.#schedules = new ScheduleStore({
      kysely: this.kysely,
      statements: this.#statements,
      clock: this.#clock,
      schema: o.schema,
      middleware: this.#middleware,
      tasks: this.tasks,
    });
    this.#workflows = new WorkflowStore({
      kysely: this.kysely,
      schema: o.schema,
      listener: this.#listener,
      channels: this.#channels,
      clock: this.#clock,
      maxPayloadBytes: o.maxPayloadBytes,
      middleware: this.#middleware,
      queryableFor: (db) => this.#queryableFor(db),
    });
    this.#jobs = new JobStore({
      kysely: this.kysely,
      channels: this.#channels,
      listener: this.#listener,
      clock: this.#clock,
      workflows: this.#workflows,
    });
    // Progress writes are given up after a limit like an outcome's least
    // (a connection gone silent held `await ctx.progress()`, and the slot, until TCP gave up).
    this.#progress = new ProgressWriter(fromPg(new TimedPool(this.#pool, PROGRESS_WRITE_LIMIT_MS), o.preparedStatements), o.schema, this.logger);
  }

  /**
   * Adds a middleware after those given to `new Pgq()` (innermost so far). It
   * wraps the enqueues and attempts that start from now on.
   *
   * @example
   * pgq.use({ async enqueue(call, next) { for (const j of call.jobs) j.meta.tenant = tenantId(); return next(); } });
   */
  use(middleware: Middleware): this {
    this.#assertOpen();
    this.#middleware.add(middleware);
    return this;
  }

  /** Creates or upgrades pgq's tables in its schema. Safe to run from several processes at once. */
  async migrate(): Promise<MigrateResult> {
    return this.#call(() => migrate(this.#pool, this.schema, this.logger), false);
  }

  /**
   * Checks, read-only, that pgq's schema has every migration this version
   * needs. Rejects with a `PgqError` (code `PGQ_SCHEMA_NOT_READY`) that says
   * to run `pgq migrate` when the schema is missing or behind. Workers run
   * this at start; only `migrate()` changes the schema.
   *
   * @example
   * await pgq.checkSchema(); // throws: schema pgq is at version …, this pgq needs …: run pgq migrate
   */
  async checkSchema(): Promise<void> {
    return this.#call(() => checkSchemaVersion(this.#db, this.schema));
  }

  /**
   * Opens the pool's connections now (all `poolSize` of them, or `connections`),
   * so the first enqueues and claims do not wait while the pool connects one
   * connection at a time. Workers do this in `start()`; an enqueuing process
   * can call it once after `new Pgq()`. Rejects if the database cannot be
   * reached. The pool closes connections idle for its idle timeout (pg's
   * default: 10 s) as usual.
   *
   * @example
   * const pgq = new Pgq({ connectionString, poolSize: 8 });
   * await pgq.warmUp(); // 8 connections open before the first request
   */
  async warmUp(connections?: number): Promise<void> {
    return this.#call(() => warmUpPool(this.#pool, connections, this.#options.poolSize));
  }

  /**
   * Creates (if missing) and grants least-privilege roles: an enqueuer that
   * can only add jobs and read its own, and a worker that can run workers but
   * not change the schema. Run as the owner of pgq's tables; re-run after
   * migrations that add tables. Grant the roles to your login roles.
   *
   * @example
   * await pgq.setupRoles({ enqueuer: 'app_enqueue', worker: 'app_worker' });
   * // then, as an admin: GRANT app_enqueue TO web; GRANT app_worker TO jobs;
   */
  async setupRoles(options: RolesOptions): Promise<void> {
    return this.#call(() => setupRoles(this.#pool, this.schema, options));
  }

  /**
   * Validates the payload with the task's schema and inserts one job. With
   * `db`, the insert joins your transaction. Resolves to the new job (or, for a
   * `uniqueKey` that matches a live job, to that job).
   *
   * @example
   * await client.query('BEGIN');
   * const job = await pgq.enqueue(sendEmail, { to: 'a@b.c' }, { db: client, delayMs: 60_000 });
   * await client.query('COMMIT'); // the job exists from here on
   */
  async enqueue<T extends AnyTask>(task: T, payload: TaskInput<T>, options?: EnqueueOptions): Promise<JobRecord<TaskInput<T>, TaskResult<T>>> {
    return this.#call(async () => (await this.#enqueuer.enqueue(task, payload, options)) as JobRecord<TaskInput<T>, TaskResult<T>>);
  }

  /**
   * Validates every payload, then inserts all jobs in one statement; one bad
   * payload writes nothing and the error names its index. Resolves to one job
   * per payload, in order.
   */
  async enqueueMany<T extends AnyTask>(
    task: T,
    payloads: readonly TaskInput<T>[],
    options?: EnqueueManyOptions,
  ): Promise<JobRecord<TaskInput<T>, TaskResult<T>>[]> {
    return this.#call(async () => (await this.#enqueuer.enqueueMany(task, payloads, options)) as JobRecord<TaskInput<T>, TaskResult<T>>[]);
  }

  /**
   * A worker for this instance's tasks. Call `start()` on it.
   *
   * @example
   * const worker = pgq.worker({ concurrency: 10, queues: ['default', 'emails'] });
   * await worker.start();
   */
  worker(options: WorkerOptions = {}): Worker {
    this.#assertOpen();
    if (this.tasks.size === 0) {
      throw new ValidationError('tasks', 'this Pgq has no tasks to run; pass tasks: [...] to new Pgq()');
    }
    const resolved = resolveWorkerOptions(options, this.tasks.names().map((n) => this.tasks.get(n)!));
    const declared = options.schedules === undefined
      ? undefined
      : resolveDeclaredSchedules(options.schedules, this.tasks, this.#options.maxPayloadBytes);
    // A payload checked by an asynchronous validator is settled by start(), which reports its error.
    if (declared instanceof Promise) declared.catch(() => undefined);
    // A connection that died without a word holds none of the worker's
    // statements for long (TimedPool: after the limit, cancelled; then
    // closed if it does not answer that either): claims, outcomes and
    // registration max(10 s, rescueAfterMs) (by then the lease would have
    // lapsed had the database been unreachable), the leader's maintenance
    // max(60 s, rescueAfterMs), the election one heartbeat (at least 1 s).
    const timed = new TimedPool(this.#pool, Math.max(10_000, resolved.rescueAfterMs));
    const kyselyOn = (pool: TimedPool | PoolLane): Kysely<PgqDatabase> =>
      new Kysely<PgqDatabase>({ dialect: new PostgresDialect({ pool }) }).withSchema(this.schema);
    // The leader's maintenance queues on a lane of the pool, so its first
    // passes do not each open a connection at the worker's start, beside
    // the first claims.
    const lane = new PoolLane(new TimedPool(this.#pool, Math.max(60_000, resolved.rescueAfterMs)), MAINTENANCE_CONNECTIONS);
    const timedDb = fromPg(timed, this.#options.preparedStatements);
    const timedKysely = kyselyOn(timed);
    const worker = new Worker(resolved, {
      db: timedDb,
      kysely: timedKysely,
      election: kyselyOn(new TimedPool(this.#pool, heartbeatLimitMs(resolved.heartbeatMs))),
      maintenance: {
        db: fromPg(lane, this.#options.preparedStatements),
        kysely: kyselyOn(lane),
      },
      statements: this.#statements,
      listener: this.#listener,
      channels: this.#channels,
      tasks: this.tasks,
      logger: this.logger,
      clock: this.#clock,
      maxResultBytes: this.#options.maxPayloadBytes,
      middleware: this.#middleware,
      progress: this.#progress,
      schema: this.schema,
      // The start's statements are timed too: a connection that goes silent
      // while it checks the schema or saves the schedules fails the start.
      syncSchedules: declared && (async () => this.#schedules.on(timedKysely).syncDeclared(await declared)),
      checkSchema: () => this.#call(() => checkSchemaVersion(timedDb, this.schema)),
      // Best effort: a server short of connections does not stop the
      // worker from starting, it opens them on demand. Not a call close()
      // waits for: after a start that failed against a server that does not
      // answer, close() waited out the pool's connect limit for it.
      warmUp: (quiet) => warmUpPool(this.#pool, WORKER_WARM_CONNECTIONS, this.#options.poolSize).catch((err: unknown) => {
        if (!this.#closed && !quiet()) this.logger.warn({ err: errorSummary(err) }, `pgq could not open connections ahead: ${errorMessage(err)}`);
      }),
      leaseConnection: this.#leaseConnection(resolved),
      queueStatements: this.#queueStatements,
      onStopped: () => this.#workers.delete(worker),
    });
    this.#workers.add(worker);
    return worker;
  }

  /**
   * Tasks whose waiting jobs no live worker will run (it knows no such task,
   * or serves other queues), by task and queue. Empty when no worker is
   * registered. The leader logs the same once per `orphanCheckMs`.
   *
   * @example
   * for (const o of await pgq.orphanedTasks()) console.warn(`${o.jobs} jobs of ${o.task} wait in ${o.queue}`);
   */
  async orphanedTasks(): Promise<OrphanedTask[]> {
    return this.#call(() => findOrphanedTasks(this.kysely));
  }

  /** The job (with its progress and workflow), or null if there is none with this id. */
  async getJob<Payload = unknown, Result = unknown>(id: string): Promise<JobRecord<Payload, Result> | null> {
    return this.#call(() => this.#jobs.get<Payload, Result>(id));
  }

  /**
   * Resolves when the job reaches `succeeded`, `failed` or `cancelled`, woken
   * by NOTIFY. Rejects with `WaitTimeoutError` after `timeoutMs` (default: no
   * limit) and with `JobNotFoundError` if the job does not exist. Given the
   * record `enqueue` returned, the result is typed as the task's.
   *
   * @example
   * const job = await pgq.enqueue(sendEmail, payload);
   * const done = await pgq.waitForJob(job, { timeoutMs: 10_000 }); // done.result: { sent: boolean } | null
   */
  async waitForJob<Payload, Result>(job: JobRecord<Payload, Result>, options?: WaitForJobOptions): Promise<JobRecord<Payload, Result>>;
  async waitForJob<Payload = unknown, Result = unknown>(id: string, options?: WaitForJobOptions): Promise<JobRecord<Payload, Result>>;
  async waitForJob<Payload, Result>(job: string | JobRecord<Payload, Result>, options: WaitForJobOptions = {}): Promise<JobRecord<Payload, Result>> {
    const id = job !== null && typeof job === 'object' ? job.id : job;
    return this.#call(async () =>
      this.#waitUntilClosed(optionsArgument(options, 'options', WAIT_OPTIONS).signal, (signal) => this.#jobs.wait<Payload, Result>(id, { ...options, signal })),
    );
  }

  /**
   * Cancels a job. A queued job never runs; a running job's `ctx.signal`
   * aborts and the job ends `cancelled`. A finished job is left as it is.
   * Resolves to the job after the change.
   */
  async cancelJob(id: string): Promise<JobRecord> {
    return this.#call(() => this.#jobs.cancel(id));
  }

  /**
   * Runs a `failed`, `cancelled`, `retryable` or `scheduled` job again now,
   * with at least one more attempt allowed. Resolves to the job after the change.
   * Retrying a failed workflow step resumes the workflow: the steps cancelled
   * because of it wait on it again. A step cancelled because another failed
   * cannot be retried itself (the error names the step to retry).
   */
  async retryJob(id: string): Promise<JobRecord> {
    return this.#call(() => this.#jobs.retry(id));
  }

  /**
   * Deletes a job that is not running (cancel a running one first); resolves
   * to false when there is none. A workflow step must have finished first
   * (succeeded, failed or cancelled: cancel it), since its dependents wait for it.
   *
   * @example
   * await pgq.deleteJob(job.id);
   */
  async deleteJob(id: string): Promise<boolean> {
    return this.#call(() => this.#jobs.delete(id));
  }

  /**
   * Retries every job the filter matches that `retryJob` would retry
   * (failed, cancelled, retryable, scheduled), in batches; resolves to how
   * many were retried.
   *
   * @example
   * const n = await pgq.retryJobs({ state: 'failed', queue: 'emails', since: new Date(Date.now() - 3_600_000) });
   */
  async retryJobs(filter: JobFilter): Promise<number> {
    return this.#call(() => this.#jobs.retryMany(filter));
  }

  /**
   * Cancels every job the filter matches that is not final (running handlers
   * see `ctx.signal` abort); resolves to how many were cancelled.
   *
   * @example
   * await pgq.cancelJobs({ queue: 'emails', payload: { contains: { campaign: 'spring' } } });
   */
  async cancelJobs(filter: JobFilter): Promise<number> {
    return this.#call(() => this.#jobs.cancelMany(filter));
  }

  /**
   * Deletes every job the filter matches that is not running (workflow steps only once finished); resolves to how many were deleted.
   *
   * @example
   * await pgq.deleteJobs({ state: 'cancelled', until: new Date('2026-01-01') });
   */
  async deleteJobs(filter: JobFilter): Promise<number> {
    return this.#call(() => this.#jobs.deleteMany(filter));
  }

  /**
   * How many jobs the filter matches; with `max`, counting stops there; with
   * `action`, how many of them `retryJobs` / `cancelJobs` / `deleteJobs`
   * would change now (the jobs in states it acts on, less those it would
   * skip), as a confirmation before the action.
   *
   * @example
   * const failed = await pgq.countJobs({ state: 'failed', queue: 'emails' });
   * const toRetry = await pgq.countJobs({ queue: 'emails' }, { action: 'retry' });
   */
  async countJobs(filter: JobFilter = {}, options: { max?: number | undefined; action?: BulkAction | undefined } = {}): Promise<number> {
    return this.#call(async () => {
      return this.#jobs.count(filter, optionsArgument(options, 'options', ['max', 'action']).max, options.action);
    });
  }

  /**
   * Live workers: queues, concurrency, jobs running now, heartbeat age, and which one leads.
   *
   * @example
   * for (const w of await pgq.listWorkers()) console.log(w.id, w.runningJobs, w.isLeader);
   */
  async listWorkers(): Promise<WorkerInfo[]> {
    return this.#call(() => listWorkers(this.kysely));
  }

  /**
   * Workflows, newest first, with their jobs counted by state (no steps; `getWorkflow` has them).
   *
   * @example
   * const page = await pgq.listWorkflows({ limit: 20 });
   * const next = await pgq.listWorkflows({ limit: 20, before: page.at(-1)?.id });
   */
  async listWorkflows(filter: ListWorkflowsFilter = {}): Promise<WorkflowSummary[]> {
    return this.#call(() => this.#workflows.list(filter));
  }

  /**
   * Validates a whole workflow (chain, group, chord, after) and inserts it in
   * one statement: every job, tagged with the workflow's id, and every
   * dependency. With `db`, it joins your transaction: all of it commits or
   * none of it. Jobs that wait on others start `blocked`. Resolves to the
   * workflow, typed by its result.
   *
   * @example
   * const wf = await pgq.enqueueWorkflow(
   *   chord(group(ids.map((id) => step(resize, { id }))), step(zipAll)),
   *   { name: 'thumbnails', db: trx },
   * );
   */
  async enqueueWorkflow<Out>(flow: Flow<unknown, Out, boolean>, options?: EnqueueWorkflowOptions): Promise<WorkflowRecord<Out>> {
    return this.#call(() => this.#workflows.enqueue(flow, options));
  }

  /**
   * The workflow with every job, its overall state and (once its last steps
   * succeeded) its result; null if there is none with this id.
   *
   * @example
   * const wf = await pgq.getWorkflow(id);
   * console.log(wf?.state, wf?.steps.map((s) => `${s.step}: ${s.state}`));
   */
  async getWorkflow<Out = unknown>(workflow: string | WorkflowRecord<Out>): Promise<WorkflowRecord<Out> | null> {
    return this.#call(() => this.#workflows.get<Out>(workflow));
  }

  /**
   * Resolves when no job of the workflow is left to run (`succeeded`,
   * `failed` or `cancelled`), woken by NOTIFY. Rejects with
   * `WaitTimeoutError` after `timeoutMs` and `WorkflowNotFoundError` for an
   * unknown id. Pass the record `enqueueWorkflow` returned to keep its type.
   *
   * @example
   * const done = await pgq.waitForWorkflow(wf, { timeoutMs: 60_000 });
   * if (done.state === 'succeeded') use(done.result);
   */
  async waitForWorkflow<Out = unknown>(
    workflow: string | WorkflowRecord<Out>,
    options: { timeoutMs?: number; signal?: AbortSignal } = {},
  ): Promise<WorkflowRecord<Out>> {
    return this.#call(async () =>
      this.#waitUntilClosed(optionsArgument(options, 'options', WAIT_OPTIONS).signal, (signal) => this.#workflows.wait<Out>(workflow, { ...options, signal })),
    );
  }

  /**
   * Cancels every job of the workflow not yet finished: queued and blocked
   * ones never run, running ones see `ctx.signal` abort. Resolves to the
   * workflow after the change.
   *
   * @example
   * await pgq.cancelWorkflow(wf.id);
   */
  async cancelWorkflow(workflow: string | WorkflowRecord): Promise<WorkflowRecord> {
    return this.#call(() => this.#workflows.cancel(workflow));
  }

  /**
   * Jobs, newest first, filtered by state, queue, task, enqueue time, and
   * payload, result or error (JSON containment or text). Page with `before`:
   * the last id of the previous page.
   *
   * @example
   * const page = await pgq.listJobs({ state: 'failed', payload: { contains: { to: 'a@b.co' } }, limit: 50 });
   * const next = await pgq.listJobs({ state: 'failed', before: page.at(-1)?.id });
   */
  async listJobs(filter: ListJobsFilter = {}): Promise<JobRecord[]> {
    return this.#call(() => this.#jobs.list(filter));
  }

  /**
   * Per queue: counts by state and the oldest waiting due job. It counts
   * finished jobs too, so it reads every row: on a table of millions, the
   * metrics' queue gauges (live states, through partial indexes) are cheap.
   */
  async stats(): Promise<QueueStats[]> {
    return this.#call(() => this.#jobs.stats());
  }

  /**
   * Pauses a queue: no worker claims its jobs (every worker sees it within
   * about a second, at once while LISTEN is up); jobs already running
   * finish. A queue without a row gets one, paused, so a queue can be paused
   * before any worker or job uses it. Resolves to the queue after the change.
   *
   * @example
   * await pgq.pauseQueue('emails');
   */
  async pauseQueue(name: string): Promise<QueueRecord> {
    return this.#call(() => this.#queues.pause(name));
  }

  /**
   * Resumes a paused queue; its workers are woken at once (NOTIFY), not at
   * their next poll. Resuming a queue that is not paused changes nothing but
   * `updatedAt` (and gives it a row if it had none).
   *
   * @example
   * await pgq.resumeQueue('emails');
   */
  async resumeQueue(name: string): Promise<QueueRecord> {
    return this.#call(() => this.#queues.resume(name));
  }

  /**
   * Sets a queue's limits, enforced across every worker: `concurrency` (most
   * jobs running at once), `rateLimit` (token bucket: `limit` starts per
   * `periodMs`, bursts up to `limit`) and `keyConcurrency` (most running
   * jobs per `concurrencyKey`). A field left out stays as it is; `null`
   * removes that limit. Bad values throw a ValidationError and change
   * nothing. Workers apply the change within about a second, without restart.
   *
   * @example
   * await pgq.setQueue('emails', { concurrency: 3, rateLimit: { limit: 100, periodMs: 60_000 }, keyConcurrency: 2 });
   * await pgq.setQueue('emails', { rateLimit: null }); // no rate limit any more
   */
  async setQueue(name: string, settings: QueueSettings): Promise<QueueRecord> {
    return this.#call(() => this.#queues.set(name, settings));
  }

  /**
   * A queue's settings and its live jobs by state (`running`: running now on
   * every worker). A queue without a row reads as unlimited and not paused.
   *
   * @example
   * const q = await pgq.getQueue('emails');
   * console.log(q.paused, q.concurrency, q.running, q.counts.available);
   */
  async getQueue(name: string): Promise<QueueRecord> {
    return this.#call(() => this.#queues.get(name));
  }

  /**
   * Every queue that has a row or live jobs, by name, with its settings and counts.
   *
   * @example
   * for (const q of await pgq.listQueues()) console.log(q.name, q.paused ? 'paused' : 'active', q.running);
   */
  async listQueues(): Promise<QueueRecord[]> {
    return this.#call(() => this.#queues.list());
  }

  /**
   * Saves a periodic job, by name: creates it, or updates the schedule of
   * that name. The cron expression, time zone, interval and payload are
   * validated first; a bad one throws a ValidationError and writes nothing.
   * Saving with an unchanged timing keeps the next tick where it was.
   *
   * @example
   * await pgq.schedule({ name: 'nightly', cron: '0 2 * * *', timezone: 'Europe/Rome',
   *                      task: sendEmail, payload: { to: 'ops@x.y' } });
   * await pgq.schedule({ name: 'refresh', every: '5m', task: 'refresh-cache' });
   */
  async schedule<T extends AnyTask>(options: ScheduleOptions<T>): Promise<ScheduleRecord> {
    return this.#call(async () => this.#schedules.upsert(await resolveSchedule(options as ScheduleOptions, this.tasks, this.#options.maxPayloadBytes)));
  }

  /**
   * Deletes a schedule; resolves to false when there was none. Jobs it
   * already made are left alone.
   *
   * @example
   * await pgq.unschedule('nightly');
   */
  async unschedule(name: string): Promise<boolean> {
    return this.#call(() => this.#schedules.remove(name));
  }

  /** The schedule of this name, or null. */
  async getSchedule(name: string): Promise<ScheduleRecord | null> {
    return this.#call(() => this.#schedules.get(name));
  }

  /** Every schedule, by name. */
  async listSchedules(): Promise<ScheduleRecord[]> {
    return this.#call(() => this.#schedules.list());
  }

  /**
   * Stops a schedule from firing until `resumeSchedule`. Rejects with
   * ScheduleNotFoundError for an unknown name.
   *
   * @example
   * await pgq.pauseSchedule('nightly');
   */
  async pauseSchedule(name: string): Promise<ScheduleRecord> {
    return this.#call(() => this.#schedules.pause(name));
  }

  /** Lets a paused schedule fire again, from its first tick after now (ticks inside the pause are not caught up). */
  async resumeSchedule(name: string): Promise<ScheduleRecord> {
    return this.#call(() => this.#schedules.resume(name));
  }

  /**
   * Enqueues one job of the schedule now ("run now"), paused or not,
   * without moving its next tick. Resolves to the job.
   *
   * @example
   * const job = await pgq.runSchedule('nightly');
   * await pgq.waitForJob(job.id);
   */
  async runSchedule(name: string): Promise<JobRecord> {
    return this.#call(() => this.#schedules.runNow(name));
  }

  /**
   * Stops every worker made by this instance (gracefully), lets the calls
   * under way finish (an enqueue waiting for a connection is still written;
   * `waitForJob` and `waitForWorkflow` reject with PGQ_CLOSED), closes the
   * listener, and ends the pool if pgq created it; a pool you passed is left
   * open, without the listeners pgq added to it. Calls made after it began
   * reject with PGQ_CLOSED.
   */
  close(): Promise<void> {
    // A second call waits for the first (a signal handler and a `finally`
    // may both close): it used to resolve at once, before workers stopped.
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    this.#closed = true;
    await Promise.all([...this.#workers].map((w) => w.stop()));
    // Then the waits end (not before: a handler waiting on a job during the
    // workers' graceful stop would fail), and the calls under way finish.
    const closed = new PgqError('PGQ_CLOSED', 'this Pgq instance was closed while waiting');
    for (const wait of this.#waits) wait.abort(closed);
    await Promise.allSettled([...this.#calls]);
    await this.#enqueuer.flush();
    await this.#listener.close();
    if (this.#ownsPool) {
      // Kysely ends the pool only if it ever used it; end it here otherwise.
      const ending = (async () => {
        await this.kysely.destroy();
        if (!this.#pool.ended) await this.#pool.end();
      })();
      // pool.end() waits for every connection: those that statements a
      // stopped worker gave up on still hold (a server that does not
      // answer), and those still connecting to it. After a second, ended here.
      if (!(await settlesWithin(ending, CLOSE_POOL_WAIT_MS))) this.#clients.destroyAll();
      await ending;
      // It resolves once every client was told to end, not once its socket
      // closed: a server that does not answer never closes its side, and the
      // socket would keep the process up until TCP gives up. A server
      // shutting down meanwhile still sends each an error, which must find a
      // listener: an ended pool is nobody else's, so the listeners stay.
      if (!(await settlesWithin(this.#clients.allEnded(), CLOSE_POOL_WAIT_MS))) this.#clients.destroyAll();
    } else {
      this.#unwatchPool();
    }
  }

  /** Connection settings for a worker's lease thread: the pool's, with time limits a heartbeat can afford. */
  #leaseConnection(worker: ResolvedWorkerOptions): pg.ClientConfig {
    const o = this.#options;
    const base: pg.ClientConfig = o.pool ? poolClientConfig(o.pool) : { connectionString: o.connectionString };
    // The renewal reads a row count and numbers: the pool's type parsers (functions, which cannot go to a thread) are not needed.
    delete base.types;
    const limitMs = heartbeatLimitMs(worker.heartbeatMs);
    return {
      ...base,
      keepAlive: true,
      connectionTimeoutMillis: limitMs,
      query_timeout: limitMs,
    };
  }

  /** The caller's handle, else pgq's pool (for an enqueue with a uniqueKey, its lane: see #uniqueDb). */
  #queryableFor(db: DbHandle | undefined, uniqueKey = false): Queryable {
    if (db !== undefined) return fromDbHandle(db);
    return uniqueKey ? this.#uniqueDb : this.#db;
  }

  #assertOpen(): void {
    if (this.#closed) throw new PgqError('PGQ_CLOSED', 'this Pgq instance was closed');
  }

  /**
   * A public call, refused once `close()` has begun and otherwise counted
   * until it settles: `close()` lets the calls under way finish before it
   * ends the pool (an ended pool never serves, nor fails, a call still
   * waiting for a connection).
   */
  #call<T>(work: () => Promise<T>, explainMissingSchema = true): Promise<T> {
    this.#assertOpen();
    // A statement on a schema that was never migrated says so, not "relation does not exist".
    const call = explainMissingSchema ? work().catch(async (err: unknown) => Promise.reject(await explainNotMigrated(err, this.#db, this.schema))) : work();
    this.#calls.add(call);
    const settled = (): void => void this.#calls.delete(call);
    call.then(settled, settled);
    return call;
  }

  /**
   * NOTIFY does not cross databases: a LISTEN connection to another database
   * than the pool's hears nothing, and workers and waits fall back to polling
   * without a word. Said once, as an error (a configuration to correct).
   */
  async #checkListenDatabase(listening: string): Promise<void> {
    try {
      const [row] = await this.#db.query<{ name: string }>({ text: 'SELECT current_database() AS name', values: [] });
      if (!row || row.name === listening || this.#listenDatabaseTold) return;
      this.#listenDatabaseTold = true;
      this.logger.error(
        { listenDatabase: listening, database: row.name },
        `pgq's LISTEN connection (listenConnectionString) is to database ${listening}, its pool to ${row.name}: notifications sent in ${row.name} never reach it, so workers wait for their poll (pollIntervalMs) and waits poll too; point listenConnectionString at ${row.name}`,
      );
    } catch {
      // The pool cannot answer now: its own errors say so.
    }
  }

  /**
   * A wait on a signal of its own, aborted by the caller's `signal` or by
   * `close()`. (One per wait, dropped when it settles: a listener on a
   * signal that lives as long as this instance would pile up; the callers'
   * signals are followed through `onAbort`, one listener per signal.)
   */
  #waitUntilClosed<T>(signal: AbortSignal | undefined, wait: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const own = new AbortController();
    const follow = (): void => own.abort(signal?.reason);
    let unfollow: (() => void) | undefined;
    if (signal?.aborted) follow();
    else if (signal) unfollow = onAbort(signal, follow);
    this.#waits.add(own);
    return wait(own.signal).finally(() => {
      this.#waits.delete(own);
      unfollow?.();
    });
  }
}
