/**
 * pgq's options, validated with zod at construction (their defaults are
 * `DEFAULTS`, in core/defaults.ts). Validated options are frozen.
 */
import os from 'node:os';
import type { ResourceLimits } from 'node:worker_threads';
import { z } from 'zod';
import type pg from 'pg';
import type { Logger } from './core/logger.js';
import type { Clock } from './core/clock.js';
import type { AnyTask } from './task.js';
import { nameSchema, zodToValidationError } from './task.js';
import { ValidationError, objectArgument } from './core/errors.js';
import { DEFAULTS } from './core/defaults.js';
import { validateSchemaName } from './db/identifiers.js';
import type { ScheduleOptions } from './schedules.js';
import type { Middleware } from './middleware.js';

/** Options of `new Pgq(...)`. Give `connectionString` or `pool`. */
export interface PgqOptions {
  /** A PostgreSQL URL; pgq makes and owns its pool. */
  connectionString?: string | undefined;
  /** Your own pool; pgq uses it and leaves it open on `close()`. */
  pool?: pg.Pool | undefined;
  /** Schema of pgq's tables. Default `pgq`. */
  schema?: string | undefined;
  /** Tasks this instance enqueues and its workers run. */
  tasks?: readonly AnyTask[] | undefined;
  /** A pino (or compatible) logger. Default: JSON on stderr at `warn` (PGQ_LOG_LEVEL overrides). */
  logger?: Logger | undefined;
  /** Largest payload accepted, as JSON bytes. Default 1 MiB. */
  maxPayloadBytes?: number | undefined;
  /** Connections in the pool pgq makes from `connectionString`. Default 10. */
  poolSize?: number | undefined;
  /** Prepare hot-path statements (off for PgBouncer in transaction mode before 1.21). Default true. */
  preparedStatements?: boolean | undefined;
  /** Time source; tests may pass their own. */
  clock?: Clock | undefined;
  /**
   * Where the one LISTEN connection goes. Default: the same server as the
   * pool. Behind a transaction-pooling PgBouncer, point this at PostgreSQL
   * directly (LISTEN needs a session). It must reach the pool's database
   * (NOTIFY does not cross databases): pgq logs an error once if it does not.
   */
  listenConnectionString?: string | undefined;
  /** False: no LISTEN at all; workers and waitForJob poll. Default true. */
  listen?: boolean | undefined;
  /**
   * Functions wrapping every enqueue and every attempt (see `Middleware`);
   * the first is the outermost. Tracing: `middleware: [await tracing()]` from `pgq/otel`.
   */
  middleware?: readonly Middleware[] | undefined;
}

/** A value that has these methods (checked here; what they do is the caller's). */
const withMethods = (what: string, ...methods: string[]) =>
  z.custom<object>(
    (value) => value !== null && typeof value === 'object' && methods.every((m) => typeof (value as Record<string, unknown>)[m] === 'function'),
    { error: `must be ${what} (an object with ${methods.join(', ')})` },
  );

// Strict: a misspelt option (poolsize) is an error, not a default used in silence.
const pgqOptionsSchema = z.strictObject({
  pool: withMethods('a pg.Pool', 'connect', 'query', 'on').optional(),
  tasks: z.unknown().optional(),
  logger: withMethods('a logger', 'error', 'warn', 'info', 'debug', 'child').optional(),
  clock: withMethods('a clock', 'now', 'monotonicMs').optional(),
  middleware: z.unknown().optional(),
  connectionString: z.string().min(1).optional(),
  schema: z.string().default(DEFAULTS.schema),
  maxPayloadBytes: z.number().int().min(1).max(256 * 1024 * 1024).default(DEFAULTS.maxPayloadBytes),
  poolSize: z.number().int().min(1).max(1000).default(DEFAULTS.poolSize),
  preparedStatements: z.boolean().default(true),
  listenConnectionString: z.string().min(1).optional(),
  listen: z.boolean().default(true),
});

export interface ResolvedPgqOptions {
  readonly connectionString: string | undefined;
  readonly pool: pg.Pool | undefined;
  readonly schema: string;
  readonly tasks: readonly AnyTask[];
  readonly logger: Logger | undefined;
  readonly maxPayloadBytes: number;
  readonly poolSize: number;
  readonly preparedStatements: boolean;
  readonly clock: Clock | undefined;
  readonly listenConnectionString: string | undefined;
  readonly listen: boolean;
  readonly middleware: readonly Middleware[];
}

export function resolvePgqOptions(options: PgqOptions): ResolvedPgqOptions {
  if (options === null || typeof options !== 'object') {
    throw new ValidationError('options', 'new Pgq() expects an options object with connectionString or pool');
  }
  const parsed = pgqOptionsSchema.safeParse(options);
  if (!parsed.success) throw zodToValidationError(parsed.error, 'options');
  if (!options.connectionString && !options.pool) {
    // Most often connectionString: process.env.DATABASE_URL with the variable unset.
    const given = 'connectionString' in options ? ' (connectionString is undefined: is DATABASE_URL set?)' : '';
    throw new ValidationError(
      'options',
      `give connectionString or pool${given}; the embedded PostgreSQL is the pgq command's (npx pgq db start prints its URL)`,
    );
  }
  if (options.tasks !== undefined && !Array.isArray(options.tasks)) {
    throw new ValidationError('options.tasks', 'must be an array of tasks made by defineTask');
  }
  if (options.middleware !== undefined && !Array.isArray(options.middleware)) {
    throw new ValidationError('options.middleware', 'must be an array of middleware objects');
  }
  return Object.freeze({
    connectionString: parsed.data.connectionString,
    pool: options.pool,
    schema: validateSchemaName(parsed.data.schema),
    tasks: Object.freeze([...(options.tasks ?? [])]),
    logger: options.logger,
    maxPayloadBytes: parsed.data.maxPayloadBytes,
    poolSize: parsed.data.poolSize,
    preparedStatements: parsed.data.preparedStatements,
    clock: options.clock,
    listenConnectionString: parsed.data.listenConnectionString,
    listen: parsed.data.listen,
    middleware: Object.freeze([...(options.middleware ?? [])]),
  });
}

/** Options of `pgq.worker(...)`. */
export interface WorkerOptions {
  /** Jobs run at once. Default 10. */
  concurrency?: number | undefined;
  /** Queues served. Default: the queues of this instance's tasks. */
  queues?: readonly string[] | undefined;
  /** Heartbeat period. Default 5 s. */
  heartbeatMs?: number | undefined;
  /** A worker silent this long is dead: its jobs are rescued and it loses leadership. Default 30 s. */
  rescueAfterMs?: number | undefined;
  /** Poll period when no NOTIFY arrives. Default 1 s. */
  pollIntervalMs?: number | undefined;
  /**
   * How long `stop()` waits for running handlers before signalling them.
   * Handlers keep their jobs until they settle, however long that takes.
   * Default 10 s.
   */
  shutdownGraceMs?: number | undefined;
  /**
   * How long a handler may take to settle after its signal fired (timeout,
   * cancel, shutdown) before it is reported stuck. A stuck handler keeps its
   * slot and its job. Default 5 s.
   */
  abortGraceMs?: number | undefined;
  /**
   * End the process (exit code 70) once a handler has been stuck this long,
   * so a supervisor restarts it and the job is rescued when the lease
   * expires. Default: never.
   */
  exitOnStuckMs?: number | null | undefined;
  /** Warn when the event loop has not answered for this long (a handler computing on the main thread). Default 5 s. */
  stallWarnMs?: number | undefined;
  /** Take part in leader election and run maintenance when elected. Default true. */
  leader?: boolean | undefined;
  /**
   * Most jobs claimed in one statement, and most kept claimed ahead of the
   * free slots while jobs are quick (the producer sizes claims by measured
   * throughput up to this). Default 500.
   */
  maxClaimBatch?: number | undefined;
  /** While leading, how often to log jobs that wait for a task no live worker runs (see `orphanedTasks()`). Default 60 s. */
  orphanCheckMs?: number | undefined;
  /**
   * A job claimed ahead that has not started within this long goes back to
   * the queue (its attempt not counted), and the worker claims nothing ahead
   * until one of its jobs starts. Default 1,000 ms.
   */
  prefetchTtlMs?: number | undefined;
  /** Worker id (unique among live workers). Default: host, pid and a random suffix. */
  id?: string | undefined;
  /**
   * Schedules declared in code, upserted when the worker starts. A schedule
   * declared by an earlier start and missing from this list is disabled (not
   * deleted). Omit to leave declared schedules alone. Checked by
   * `pgq.worker()`, which throws on a bad one; a payload whose task's
   * validator answers with a promise is checked by `start()` instead.
   */
  schedules?: readonly ScheduleOptions[] | undefined;
  /** Retention of finished jobs, pruned by the leader; `false` keeps them forever. */
  retention?: RetentionOptions | false | undefined;
  /**
   * Pools for sandboxed tasks (`defineTask({ sandbox })`), apart from
   * `concurrency`: a sandboxed job takes one of the `concurrency` slots and
   * then waits for a thread or process of its pool, keeping its slot while
   * it waits.
   */
  sandbox?: SandboxWorkerOptions | undefined;
}

/** The sandbox pools of a worker. */
export interface SandboxWorkerOptions {
  /** Most sandbox threads at once. Default: the number of cores (`os.availableParallelism()`). */
  threads?: number | undefined;
  /** Most sandbox child processes at once. Default: the number of cores. */
  processes?: number | undefined;
  /**
   * After a sandboxed handler's signal aborts (timeout, cancel, shutdown),
   * how long it may take to settle before its thread or process is
   * terminated. Keep it below `abortGraceMs`, after which a handler counts as
   * stuck. Default 2 s.
   */
  terminateGraceMs?: number | undefined;
  /**
   * Memory limits of each sandbox thread (worker_threads `resourceLimits`);
   * a child process gets `maxOldGenerationSizeMb` as `--max-old-space-size`.
   * Default: Node's.
   */
  resourceLimits?: Pick<ResourceLimits, 'maxOldGenerationSizeMb' | 'maxYoungGenerationSizeMb' | 'stackSizeMb'> | undefined;
}

/** A worker's sandbox options, validated. */
export interface ResolvedSandboxOptions {
  readonly threads: number;
  readonly processes: number;
  readonly terminateGraceMs: number;
  readonly resourceLimits: ResourceLimits | undefined;
}

/** How long finished jobs are kept. Each age is in ms after `finished_at`; `null` keeps that state forever. */
export interface RetentionOptions {
  /**
   * Default 1 day. `0` keeps none: a job outside any workflow that succeeds
   * is deleted by the statement that records its success (its result is not
   * kept), as this worker completes it; workflow steps are pruned with their
   * workflow as ever.
   */
  succeededMs?: number | null | undefined;
  /** Default 7 days. */
  failedMs?: number | null | undefined;
  /** Default 7 days. */
  cancelledMs?: number | null | undefined;
  /** Most rows one DELETE removes (a workflow whose jobs have all expired goes whole, however many). Default 1,000. */
  batchSize?: number | undefined;
  /** Pause between pruning passes. Default 1 minute. */
  intervalMs?: number | undefined;
}

export interface ResolvedRetention {
  readonly succeededMs: number | null;
  readonly failedMs: number | null;
  readonly cancelledMs: number | null;
  readonly batchSize: number;
  readonly intervalMs: number;
  readonly maxBatchesPerPass: number;
}

const retentionAge = z.number().int().min(0).max(100 * 365 * 86_400_000).nullable();
const retentionSchema = z.union([
  z.literal(false),
  z.strictObject({
    succeededMs: retentionAge.default(DEFAULTS.retention.succeededMs),
    failedMs: retentionAge.default(DEFAULTS.retention.failedMs),
    cancelledMs: retentionAge.default(DEFAULTS.retention.cancelledMs),
    batchSize: z.number().int().min(1).max(100_000).default(DEFAULTS.retention.batchSize),
    intervalMs: z.number().int().min(10).max(86_400_000).default(DEFAULTS.retention.intervalMs),
  }),
]);

const workerOptionsSchema = z
  .strictObject({
    // Checked by resolveDeclaredSchedules.
    schedules: z.unknown().optional(),
    concurrency: z.number().int().min(1).max(10_000).default(DEFAULTS.concurrency),
    queues: z.array(nameSchema).min(1, 'must name at least one queue').optional(),
    heartbeatMs: z.number().int().min(10).max(3_600_000).default(DEFAULTS.heartbeatMs),
    rescueAfterMs: z.number().int().min(30).max(86_400_000).default(DEFAULTS.rescueAfterMs),
    pollIntervalMs: z.number().int().min(10).max(3_600_000).default(DEFAULTS.pollIntervalMs),
    shutdownGraceMs: z.number().int().min(0).max(86_400_000).default(DEFAULTS.shutdownGraceMs),
    abortGraceMs: z.number().int().min(0).max(86_400_000).default(DEFAULTS.abortGraceMs),
    exitOnStuckMs: z.number().int().min(0).max(86_400_000).nullable().default(null),
    stallWarnMs: z.number().int().min(100).max(86_400_000).default(DEFAULTS.stallWarnMs),
    leader: z.boolean().default(true),
    maxClaimBatch: z.number().int().min(1).max(10_000).optional(),
    orphanCheckMs: z.number().int().min(10).max(86_400_000).default(DEFAULTS.orphanCheckMs),
    prefetchTtlMs: z.number().int().min(10).max(3_600_000).default(DEFAULTS.prefetchTtlMs),
    id: nameSchema.optional(),
    retention: retentionSchema.prefault({}),
    sandbox: z
      .object({
        threads: z.number().int().min(1).max(1_024).optional(),
        processes: z.number().int().min(1).max(1_024).optional(),
        terminateGraceMs: z.number().int().min(0).max(3_600_000).default(DEFAULTS.sandboxTerminateGraceMs),
        resourceLimits: z
          .object({
            // Smaller, a thread cannot even start, and on Node.js 24 V8 then ends the whole process.
            maxOldGenerationSizeMb: z.number().int().min(4, 'must be at least 4 (a smaller heap cannot start a thread, and on Node.js 24 ends the whole process)').optional(),
            maxYoungGenerationSizeMb: z.number().int().min(1).optional(),
            // A thread's stack is reserved when it starts: far past what any handler needs, the thread cannot start at all.
            stackSizeMb: z.number().int().min(1).max(1_024).optional(),
          })
          .strict()
          .optional(),
      })
      .strict()
      .prefault({}),
  })
  .refine((o) => o.rescueAfterMs >= 2 * o.heartbeatMs, {
    message: 'must be at least twice heartbeatMs, or live workers would be rescued',
    path: ['rescueAfterMs'],
  });

export interface ResolvedWorkerOptions {
  readonly concurrency: number;
  readonly queues: readonly string[];
  readonly heartbeatMs: number;
  readonly rescueAfterMs: number;
  readonly pollIntervalMs: number;
  readonly shutdownGraceMs: number;
  readonly abortGraceMs: number;
  readonly exitOnStuckMs: number | null;
  readonly stallWarnMs: number;
  readonly leader: boolean;
  readonly maxClaimBatch: number;
  readonly orphanCheckMs: number;
  readonly prefetchTtlMs: number;
  readonly id: string | undefined;
  /** Null when retention is off. */
  readonly retention: ResolvedRetention | null;
  readonly sandbox: ResolvedSandboxOptions;
}

export function resolveWorkerOptions(options: WorkerOptions, tasks: readonly AnyTask[]): ResolvedWorkerOptions {
  const parsed = workerOptionsSchema.safeParse(objectArgument(options, 'worker', 'options must be an object'));
  if (!parsed.success) throw zodToValidationError(parsed.error, 'worker');
  const o = parsed.data;
  const queues = o.queues ?? [...new Set(tasks.map((t) => t.queue).concat(tasks.length ? [] : ['default']))];
  return Object.freeze({
    concurrency: o.concurrency,
    queues: Object.freeze([...new Set(queues)]),
    heartbeatMs: o.heartbeatMs,
    rescueAfterMs: o.rescueAfterMs,
    pollIntervalMs: o.pollIntervalMs,
    shutdownGraceMs: o.shutdownGraceMs,
    abortGraceMs: o.abortGraceMs,
    exitOnStuckMs: o.exitOnStuckMs,
    stallWarnMs: o.stallWarnMs,
    leader: o.leader,
    orphanCheckMs: o.orphanCheckMs,
    maxClaimBatch: o.maxClaimBatch ?? DEFAULTS.maxClaimBatch,
    prefetchTtlMs: o.prefetchTtlMs,
    id: o.id,
    retention: o.retention === false ? null : Object.freeze({ ...o.retention, maxBatchesPerPass: DEFAULTS.retention.maxBatchesPerPass }),
    sandbox: Object.freeze({
      threads: o.sandbox.threads ?? os.availableParallelism(),
      processes: o.sandbox.processes ?? os.availableParallelism(),
      terminateGraceMs: o.sandbox.terminateGraceMs,
      resourceLimits: o.sandbox.resourceLimits ? Object.freeze({ ...o.sandbox.resourceLimits }) : undefined,
    }),
  });
}
