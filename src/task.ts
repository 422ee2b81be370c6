import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { z } from 'zod';
import type { BackoffOptions } from './core/backoff.js';
import { ValidationError } from './core/errors.js';
import { hasLoneSurrogate, LONE_SURROGATE_MESSAGE, type Jsonified } from './core/json.js';
import type { StandardSchemaV1 } from './core/standard-schema.js';
import { issuesToValidationError, isStandardSchema } from './core/validate-payloads.js';
import { int32 } from './core/int32.js';
import type { JobProgress, JobRecord, Json } from './core/types.js';
import type { Logger } from './core/logger.js';
import type { ResolvedSandbox, SandboxKind, SandboxOptions } from './sandbox/handler.js';
import { loadSandboxHandler } from './sandbox/sandbox-entry.js';

/** What a handler gets besides its payload. */
export interface JobContext<Payload = unknown> {
  /** The job as claimed (state `running`, attempts already counted). */
  job: JobRecord<Payload>;
  /** 1 for the first attempt. */
  attempt: number;
  /** Aborts on timeout, cancelJob, worker shutdown or a lost lease; `signal.reason` says which. */
  signal: AbortSignal;
  /** Logger bound to this job (job id, task, attempt). */
  logger: Logger;
  /** Ends this attempt and runs the job again after `delayMs`, without counting a failure. */
  snooze(delayMs: number): never;
  /**
   * Reports how far the job got: a number from 0 to 100, or a small JSON
   * object (at most 4 KiB). Stored in `jobs.progress` (a few writes a second
   * at most; the last value is always written) and shown by `getJob`, the
   * console and `pgq jobs show`. Await it to know the value is saved.
   *
   * @example
   * for (const [i, file] of files.entries()) { await resize(file); void ctx.progress({ done: i + 1, of: files.length }); }
   */
  progress(value: JobProgress): Promise<void>;
  /**
   * Records `key` for the job's `meta`: merged into `jobs.meta` by the same
   * statement that writes this attempt's outcome (success, failure or
   * snooze), so it costs no write of its own, and never written when the
   * outcome is not (the job was cancelled or rescued meanwhile). A later call
   * for the same key replaces the value. `ctx.job.meta` does not change.
   * Calls after the handler and the attempt middleware have settled are too
   * late and change nothing. Throws a `ValidationError` for a value that is
   * not JSON, or when this attempt's keys pass 64 KiB of JSON. Keys starting
   * with `pgq.` are pgq's own (tracing writes `pgq.process`).
   *
   * @example
   * const lastHost: Middleware = {
   *   async attempt(ctx, next) {
   *     ctx.recordMeta('lastHost', os.hostname());
   *     return next();
   *   },
   * };
   */
  recordMeta(key: string, value: Json): void;
}

/**
 * The payload a task's handler gets: its schema's output (`z.output<Schema>`
 * for a zod schema, after defaults and transforms).
 */
// A conditional type, as zod's own z.output is: TypeScript then compares two
// tasks by their schemas alone, so every task stays assignable to AnyTask
// (with a plain InferOutput the payload of `concurrencyKey` makes Task
// invariant in its schema, and a task for { id: number } is no AnyTask).
export type PayloadOf<Schema> = Schema extends StandardSchemaV1 ? StandardSchemaV1.InferOutput<Schema> : never;

/** The options of `defineTask` that every task has. */
export interface TaskBaseOptions<Schema extends StandardSchemaV1> {
  /** Unique per application; stored in `jobs.task`. */
  name: string;
  /**
   * Validates payloads at enqueue and again before the handler runs: a zod
   * schema, or any other Standard Schema (valibot, arktype, …). The handler
   * gets its output.
   */
  schema: Schema;
  /** Queue for this task's jobs unless the enqueue says otherwise. Default `default`. */
  queue?: string | undefined;
  /** Higher runs first. Default 0. */
  priority?: number | undefined;
  /** Attempts before the job fails for good. Default 25. */
  maxAttempts?: number | undefined;
  /** Exponential, jittered backoff between attempts. Default 1 s doubling up to 1 h. */
  backoff?: Partial<BackoffOptions> | undefined;
  /**
   * Time the handler may take before its signal aborts and the attempt fails.
   * A sandboxed handler that does not stop then is terminated after the
   * worker's `sandbox.terminateGraceMs`. Default: no limit.
   */
  timeoutMs?: number | undefined;
  /** Jobs not started this many ms after enqueue never run (they end `cancelled`, expired). Default: no expiry. */
  expiresInMs?: number | undefined;
  /**
   * The per-key fairness key of each job, from its (validated) payload: at
   * most the queue's `keyConcurrency` jobs with one key run at once. The
   * enqueue option `concurrencyKey` overrides it.
   */
  concurrencyKey?: (payload: PayloadOf<Schema>) => string;
}

/** The options of `defineTask` for a handler that runs on the worker's main thread. */
export interface TaskOptions<Schema extends StandardSchemaV1, Result> extends TaskBaseOptions<Schema> {
  /** Runs the job. Its return value (JSON) is stored as the job's result. */
  handler(payload: PayloadOf<Schema>, ctx: JobContext<PayloadOf<Schema>>): Promise<Result> | Result;
  sandbox?: never | undefined;
}

/** The options of `defineTask` for a handler that runs in a worker thread or a child process. */
export interface SandboxTaskOptions<Schema extends StandardSchemaV1, Result> extends TaskBaseOptions<Schema> {
  /** The module holding the handler, and where it runs. See `sandboxed()` to carry the handler's types. */
  sandbox: SandboxOptions<PayloadOf<Schema>, Result>;
  handler?: never | undefined;
}

/** A task as returned by `defineTask`, frozen. */
export interface Task<Schema extends StandardSchemaV1 = StandardSchemaV1, Result = unknown> {
  readonly name: string;
  readonly schema: Schema;
  readonly queue: string;
  readonly priority: number;
  readonly maxAttempts: number;
  readonly backoff: Readonly<BackoffOptions>;
  readonly timeoutMs: number | null;
  /** Where the handler runs when it is sandboxed; null: on the worker's main thread. */
  readonly sandbox: ResolvedSandbox | null;
  readonly expiresInMs: number | null;
  readonly concurrencyKey: ((payload: PayloadOf<Schema>) => string) | null;
  // Method syntax on purpose: it keeps every Task assignable to AnyTask.
  handler(payload: PayloadOf<Schema>, ctx: JobContext<PayloadOf<Schema>>): Promise<Result> | Result;
}

/** Any task, whatever its payload and result types. */
export type AnyTask = Task<StandardSchemaV1, unknown>;

/** The payload type a task accepts at enqueue (its schema's input). */
export type TaskInput<T> = T extends Task<infer S, unknown> ? StandardSchemaV1.InferInput<S> : never;

/**
 * The result of a task's job as stored and read back: what its handler
 * resolves to, through JSON (`Jsonified`: a `Date` is its ISO text,
 * `undefined` is null). It is what `waitForJob` and `performJob` give, and
 * what a workflow step passes on to the steps after it.
 */
export type TaskResult<T> = T extends Task<StandardSchemaV1, infer R> ? Jsonified<Awaited<R>> : never;

export const NAME_LIMIT = 200;

/** A name for a task or queue: 1–200 characters, no control characters. */
export const nameSchema = z
  .string()
  .min(1, 'must not be empty')
  .max(NAME_LIMIT, `must be at most ${NAME_LIMIT} characters`)
  // eslint-disable-next-line no-control-regex
  .refine((s) => !/[\u0000-\u001f\u007f]/.test(s), 'must not contain control characters')
  .refine((s) => !hasLoneSurrogate(s), LONE_SURROGATE_MESSAGE)
  // The console puts queue and schedule names in URL paths, where these two are no names ("a/../b" is "b").
  .refine((s) => s !== '.' && s !== '..', 'must not be "." or ".."');

/** The most attempts a job may be given. */
export const MAX_ATTEMPTS = 1_000_000;
/** Attempts of a job: from 1 to `MAX_ATTEMPTS`. */
export const maxAttemptsSchema = z.number().int().min(1).max(MAX_ATTEMPTS);

const taskOptionsSchema = z.object({
  name: nameSchema,
  queue: nameSchema.default('default'),
  priority: int32().default(0),
  maxAttempts: maxAttemptsSchema.default(25),
  backoff: z
    .strictObject({
      baseMs: int32(0).default(1_000),
      maxMs: int32(0).default(3_600_000),
    })
    .default({ baseMs: 1_000, maxMs: 3_600_000 }),
  timeoutMs: int32(1).nullable().default(null),
  expiresInMs: z.number().int().min(1).max(1e13).nullable().default(null),
});

/** Every option `defineTask` takes. */
const TASK_OPTION_KEYS: ReadonlySet<string> = new Set([
  'name',
  'schema',
  'handler',
  'sandbox',
  'queue',
  'priority',
  'maxAttempts',
  'backoff',
  'timeoutMs',
  'expiresInMs',
  'concurrencyKey',
]);

const sandboxSchema = z
  .object({
    module: z.union([z.instanceof(URL), z.string().min(1)]),
    kind: z.enum(['thread', 'process']).default('thread'),
    export: z.string().min(1).optional(),
  })
  .strict();

/**
 * Defines a task: a name, a schema for its payload (zod, or any Standard
 * Schema), and a handler.
 *
 * @example
 * export const sendEmail = defineTask({
 *   name: 'send-email',
 *   schema: z.object({ to: z.string().email() }),
 *   queue: 'emails',
 *   maxAttempts: 5,
 *   async handler(payload, ctx) {
 *     await mailer.send(payload.to, { signal: ctx.signal });
 *     return { sent: true };
 *   },
 * });
 *
 * A CPU-bound handler can run in a worker thread or a child process instead:
 * give `sandbox` (the module holding the handler) in place of `handler`.
 *
 * @example
 * import type resizeHandler from './resize.job.js';
 * export const resize = defineTask({
 *   name: 'resize',
 *   schema: resizeSchema,
 *   sandbox: sandboxed<typeof resizeHandler>({ module: new URL('./resize.job.js', import.meta.url) }),
 * });
 */
export function defineTask<Schema extends StandardSchemaV1, Result>(options: TaskOptions<Schema, Result>): Task<Schema, Result>;
export function defineTask<Schema extends StandardSchemaV1, Result>(options: SandboxTaskOptions<Schema, Result>): Task<Schema, Result>;
export function defineTask<Schema extends StandardSchemaV1, Result>(
  options: TaskOptions<Schema, Result> | SandboxTaskOptions<Schema, Result>,
): Task<Schema, Result> {
  if (options === null || typeof options !== 'object') {
    throw new ValidationError('defineTask', 'expects an options object');
  }
  // A misspelt option (timeout for timeoutMs) would leave the default in force without a word.
  const unknown = Object.keys(options).find((key) => !TASK_OPTION_KEYS.has(key));
  if (unknown !== undefined) {
    throw new ValidationError(`task ${String(options.name)}`, `unknown option ${JSON.stringify(unknown)} (options: ${[...TASK_OPTION_KEYS].join(', ')})`);
  }
  const parsed = taskOptionsSchema.safeParse({
    name: options.name,
    queue: options.queue,
    priority: options.priority,
    maxAttempts: options.maxAttempts,
    backoff: options.backoff,
    timeoutMs: options.timeoutMs,
    expiresInMs: options.expiresInMs,
  });
  if (!parsed.success) throw zodToValidationError(parsed.error, 'task');
  if (!isStandardSchema(options.schema)) {
    throw new ValidationError(
      `task ${options.name}.schema`,
      'must be a zod schema or another Standard Schema (valibot, arktype, …): an object with a ~standard property holding validate()',
    );
  }
  if (options.concurrencyKey !== undefined && typeof options.concurrencyKey !== 'function') {
    throw new ValidationError(`task ${options.name}.concurrencyKey`, 'must be a function (payload) => string');
  }
  const sandbox = options.sandbox === undefined ? null : resolveSandbox(options.name, options.sandbox);
  if (sandbox && options.handler !== undefined) {
    throw new ValidationError(`task ${options.name}.handler`, 'give handler or sandbox, not both (a sandboxed handler lives in its module)');
  }
  if (!sandbox && typeof options.handler !== 'function') {
    throw new ValidationError(`task ${options.name}.handler`, 'must be a function (or give sandbox: { module } for a handler in a worker thread or process)');
  }
  return Object.freeze({
    name: parsed.data.name,
    schema: options.schema,
    queue: parsed.data.queue,
    priority: parsed.data.priority,
    maxAttempts: parsed.data.maxAttempts,
    backoff: Object.freeze({ ...parsed.data.backoff }),
    timeoutMs: parsed.data.timeoutMs,
    expiresInMs: parsed.data.expiresInMs,
    concurrencyKey: options.concurrencyKey ?? null,
    sandbox,
    handler: sandbox ? inProcess<Schema, Result>(sandbox) : options.handler!,
  });
}

function resolveSandbox(name: string, options: SandboxOptions<never, unknown>): ResolvedSandbox {
  const parsed = sandboxSchema.safeParse(options);
  if (!parsed.success) throw zodToValidationError(parsed.error, `task ${name}.sandbox`);
  const { module, kind, export: exportName } = parsed.data;
  let url: URL;
  if (module instanceof URL) url = module;
  else if (path.isAbsolute(module)) url = pathToFileURL(module);
  else if (module.startsWith('file:')) url = new URL(module);
  else throw new ValidationError(`task ${name}.sandbox.module`, `must be a file URL or an absolute path, got ${JSON.stringify(module)}; write new URL('./handler.js', import.meta.url)`);
  if (url.protocol !== 'file:') throw new ValidationError(`task ${name}.sandbox.module`, `must be a file: URL, got ${url.protocol}`);
  try {
    fileURLToPath(url);
  } catch (err) {
    // A host (file://server/share/x.js) or an encoded slash: no file this process can load.
    throw new ValidationError(`task ${name}.sandbox.module`, `${JSON.stringify(url.href)} names no local file: ${err instanceof Error ? err.message : String(err)}`);
  }
  return Object.freeze({ module: url.href, kind: kind satisfies SandboxKind, export: exportName ?? null });
}

/**
 * A sandboxed task's `handler` outside a worker (a test calling it, say):
 * loads the module in this process and calls its handler directly, without
 * isolation. Workers run it in the sandbox instead.
 */
function inProcess<Schema extends StandardSchemaV1, Result>(sandbox: ResolvedSandbox): Task<Schema, Result>['handler'] {
  return async (payload, ctx) => {
    const handler = await loadSandboxHandler(sandbox.module, sandbox.export);
    return (await handler(payload, ctx as JobContext)) as Result;
  };
}

export function isTask(value: unknown): value is AnyTask {
  if (value === null || typeof value !== 'object') return false;
  const v = value as Partial<Task>;
  return typeof v.name === 'string' && typeof v.handler === 'function' && isStandardSchema(v.schema);
}

/** Tasks by name; a second task with the same name is an error. */
export class TaskRegistry {
  readonly #tasks = new Map<string, AnyTask>();

  constructor(tasks: readonly AnyTask[] = []) {
    for (const task of tasks) this.add(task);
  }

  add(task: AnyTask): void {
    if (!isTask(task)) throw new ValidationError('tasks', 'every entry must be a task made by defineTask');
    const existing = this.#tasks.get(task.name);
    if (existing && existing !== task) {
      throw new ValidationError('tasks', `two different tasks are named ${JSON.stringify(task.name)}`);
    }
    this.#tasks.set(task.name, task);
  }

  get(name: string): AnyTask | undefined {
    return this.#tasks.get(name);
  }

  names(): string[] {
    return [...this.#tasks.keys()];
  }

  get size(): number {
    return this.#tasks.size;
  }
}

/** Turns a zod error (pgq's own options) into a ValidationError naming the first bad field under `prefix`. */
export function zodToValidationError(error: z.ZodError, prefix: string): ValidationError {
  return issuesToValidationError(error.issues, prefix, error);
}
