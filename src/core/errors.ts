/**
 * Every error pgq throws on purpose is a `PgqError` with a stable `code`, so
 * callers can branch on `err.code` instead of parsing messages.
 */
import { inspect } from 'node:util';

/** Every code a `PgqError` can carry. */
export type PgqErrorCode =
  // Input refused; nothing was written.
  | 'PGQ_VALIDATION'
  | 'PGQ_BAD_DB'
  | 'PGQ_BAD_OPTION'
  | 'PGQ_USAGE'
  // Lookups and waits.
  | 'PGQ_JOB_NOT_FOUND'
  | 'PGQ_SCHEDULE_NOT_FOUND'
  | 'PGQ_WORKFLOW_NOT_FOUND'
  | 'PGQ_WAIT_TIMEOUT'
  // Actions refused for the state a job is in.
  | 'PGQ_NOT_RETRYABLE'
  | 'PGQ_JOB_RUNNING'
  | 'PGQ_WORKFLOW_STEP_LIVE'
  | 'PGQ_SCHEDULE_RUN'
  // Handlers and attempts (thrown by handlers, or the reason on ctx.signal).
  | 'PGQ_PERMANENT'
  | 'PGQ_SNOOZE'
  | 'PGQ_TIMEOUT'
  | 'PGQ_CANCELLED'
  | 'PGQ_SHUTDOWN'
  | 'PGQ_LEASE_LOST'
  | 'PGQ_SANDBOX_CRASHED'
  // Pgq, workers and middleware.
  | 'PGQ_CLOSED'
  | 'PGQ_SCHEMA_NOT_READY'
  | 'PGQ_WORKER_ID_TAKEN'
  | 'PGQ_WORKER_START'
  | 'PGQ_WORKER_STOPPED'
  | 'PGQ_MIDDLEWARE'
  | 'PGQ_DRAIN_TIMEOUT'
  // Optional packages, the CLI and the console.
  | 'PGQ_MISSING_PACKAGE'
  | 'PGQ_OTEL_MISSING'
  | 'PGQ_TASKS_MODULE'
  | 'PGQ_EMBEDDED'
  | 'PGQ_UNREACHABLE'
  | 'PGQ_LISTEN';

export class PgqError extends Error {
  readonly code: PgqErrorCode;

  constructor(code: PgqErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'PgqError';
    this.code = code;
  }
}

/** Input that pgq refuses: a payload that fails its schema, a bad option. Nothing was written. */
export class ValidationError extends PgqError {
  /** Where the bad value sits, e.g. `payload[3].to` or `options.priority`. */
  readonly field: string;

  constructor(field: string, message: string, options?: { cause?: unknown }) {
    super('PGQ_VALIDATION', `${field}: ${message}`, options);
    this.name = 'ValidationError';
    this.field = field;
  }
}

/** `value`, an options or filter object; a ValidationError naming `field` when it is null, not an object, or an array. */
export function objectArgument<T>(value: T, field: string, message = 'must be an object'): T {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new ValidationError(field, message);
  return value;
}

/**
 * `objectArgument`, refusing a key that is not one of `allowed` (given as
 * undefined it is left out, as a missing key): `{ timeout: 5000 }` for
 * `{ timeoutMs }` would otherwise be no limit at all, in silence.
 */
export function optionsArgument<T>(value: T, field: string, allowed: readonly string[]): T {
  objectArgument(value, field);
  for (const [key, given] of Object.entries(value as object)) {
    if (given !== undefined && !allowed.includes(key)) {
      throw new ValidationError(`${field}.${key}`, `is not an option here (options: ${allowed.join(', ')})`);
    }
  }
  return value;
}

/** A job id that names no job. */
export class JobNotFoundError extends PgqError {
  constructor(id: string, detail = 'it may have been pruned') {
    super('PGQ_JOB_NOT_FOUND', `job ${id} does not exist (${detail})`);
    this.name = 'JobNotFoundError';
  }
}

/** `waitForJob` (or `waitForWorkflow`) gave up before the job (workflow) reached a final state. */
export class WaitTimeoutError extends PgqError {
  constructor(id: string, timeoutMs: number, state: string, what: 'job' | 'workflow' = 'job') {
    super('PGQ_WAIT_TIMEOUT', `${what} ${id} is still ${state} after ${timeoutMs} ms`);
    this.name = 'WaitTimeoutError';
  }
}

/**
 * Thrown by a handler to fail its job at once, without further attempts:
 * the job goes to `failed` (the dead-letter set) with this message.
 *
 * @example
 * if (!user) throw new PermanentError(`user ${payload.userId} was deleted`);
 */
export class PermanentError extends PgqError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('PGQ_PERMANENT', message, options);
    this.name = 'PermanentError';
  }
}

/**
 * A handler's result that cannot be stored (not JSON, too large): the job
 * fails for good, since another attempt would do the work again and return
 * the same. Made by the worker, not by handlers.
 */
export class UnstorableResultError extends PermanentError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'UnstorableResultError';
  }
}

/**
 * Thrown by a handler (or by `ctx.snooze(ms)`) to run the job again later
 * without counting the attempt as a failure.
 */
export class SnoozeError extends PgqError {
  readonly delayMs: number;

  constructor(delayMs: number) {
    // At most 1e13 ms (about 317 years), as enqueue's delayMs: PostgreSQL refuses larger intervals, and the attempt would fail instead.
    if (!Number.isFinite(delayMs) || delayMs < 0 || delayMs > 1e13) {
      throw new ValidationError('snooze.delayMs', `must be a finite number from 0 to 1e13, got ${String(delayMs)}`);
    }
    super('PGQ_SNOOZE', `snoozed for ${delayMs} ms`);
    this.name = 'SnoozeError';
    this.delayMs = delayMs;
  }
}

/**
 * The reason on `ctx.signal` when a job ran past its `timeoutMs`; also the
 * error of a sandboxed attempt whose thread or process was terminated after
 * it (then `detail` says so).
 */
export class JobTimeoutError extends PgqError {
  readonly timeoutMs: number;

  constructor(timeoutMs: number, detail?: string) {
    super('PGQ_TIMEOUT', `job timed out after ${timeoutMs} ms${detail ? `; ${detail}` : ''}`);
    this.name = 'JobTimeoutError';
    this.timeoutMs = timeoutMs;
  }
}

/**
 * A sandboxed attempt whose thread or process died under it (out of memory,
 * `process.exit()`, a signal, an uncaught error): the message says how. Only
 * that attempt fails; the job is retried as usual and the pool replaces the
 * sandbox.
 */
export class SandboxCrashedError extends PgqError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('PGQ_SANDBOX_CRASHED', message, options);
    this.name = 'SandboxCrashedError';
  }
}

/** The reason on `ctx.signal` when the job was cancelled with `cancelJob`. */
export class JobCancelledError extends PgqError {
  constructor(id: string) {
    super('PGQ_CANCELLED', `job ${id} was cancelled`);
    this.name = 'JobCancelledError';
  }
}

/** The reason on `ctx.signal` when the worker stops before the handler finished. */
export class WorkerShutdownError extends PgqError {
  constructor() {
    super('PGQ_SHUTDOWN', 'the worker shut down before the handler finished; the job will run again');
    this.name = 'WorkerShutdownError';
  }
}

/** The reason on `ctx.signal` when this worker's lease on the job was lost (it was rescued elsewhere). */
export class LeaseLostError extends PgqError {
  constructor() {
    super('PGQ_LEASE_LOST', 'this worker\'s lease expired and the job was rescued from it; this attempt\'s outcome will be discarded');
    this.name = 'LeaseLostError';
  }
}

/**
 * `worker.start()` failed for a reason other than a `PgqError` of its own
 * (which it rejects with as it is): the database could not be reached, a
 * start-up step threw. The cause is kept; nothing was left running.
 */
export class WorkerStartError extends PgqError {
  constructor(cause: unknown) {
    super('PGQ_WORKER_START', `the worker could not start: ${errorMessage(cause)}`, { cause });
    this.name = 'WorkerStartError';
  }
}

/** Most characters `describeValue` gives for one value. */
const DESCRIBED_CHARS = 10_000;

/**
 * A value as text for a message, whatever it is: JSON where it can be, else
 * (a cycle, a BigInt inside, a getter that throws) what `util.inspect`
 * shows, else its constructor's name and keys. Never throws, never
 * `[object Object]`, at most DESCRIBED_CHARS characters.
 */
function describeValue(value: unknown): string {
  try {
    const json = JSON.stringify(value);
    if (json !== undefined) return clip(json);
  } catch {
    // A cycle, a BigInt, a getter or toJSON that throws: described below.
  }
  if (value === null || (typeof value !== 'object' && typeof value !== 'function')) {
    try {
      return clip(String(value)); // undefined, a Symbol, a BigInt
    } catch {
      return `a ${typeof value}`;
    }
  }
  try {
    // Getters are not called (`[Getter]`); a Proxy's traps may still throw.
    return clip(inspect(value, { depth: 2, breakLength: Infinity, maxArrayLength: 20, maxStringLength: 200 }));
  } catch {
    return shapeOf(value);
  }
}

/** `Name { a, b }` for an object `util.inspect` could not show, or a fixed text where even that throws (a revoked Proxy). */
function shapeOf(value: object): string {
  try {
    const name = constructorName(value);
    const keys = Object.keys(value);
    const shown = keys.slice(0, 20).join(', ') + (keys.length > 20 ? ', …' : '');
    return clip(`${name} { ${shown} }`);
  } catch {
    return 'a value pgq could not describe';
  }
}

/** The name of `value`'s constructor, `Object` where it has none (throws where reading the prototype does). */
function constructorName(value: object): string {
  const name = (Object.getPrototypeOf(value) as { constructor?: { name?: unknown } } | null)?.constructor?.name;
  return typeof name === 'string' && name ? name : 'Object';
}

function clip(text: string): string {
  if (text.length <= DESCRIBED_CHARS) return text;
  const end = /[\uD800-\uDBFF]/.test(text[DESCRIBED_CHARS - 1]!) ? DESCRIBED_CHARS - 1 : DESCRIBED_CHARS;
  return `${text.slice(0, end)}…`;
}

/** An Error's name for a message: its `name` if that is text, else described. */
function errorName(err: Error): string {
  return typeof err.name === 'string' ? err.name : describeValue(err.name);
}

/** A message for any thrown value, never `[object Object]` and never empty. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) {
    // A message that is not a string (an object assigned to it) is described, not trusted to be text.
    if (typeof err.message !== 'string') return `${errorName(err)}: ${describeValue(err.message as unknown)}`;
    if (err.message) return err.message;
    const name = errorName(err);
    if (name) return name;
    let kind = 'Error';
    try {
      kind = constructorName(err);
    } catch {
      // A Proxy whose prototype cannot be read: "Error".
    }
    return `${kind} with no message and no name`;
  }
  if (typeof err === 'string') return err || 'an empty string';
  return describeValue(err);
}

/**
 * `err` itself, or, where reading it throws (a `message`, `stack` or `code`
 * getter that throws, a revoked Proxy), an Error that says so: what a
 * worker records for an attempt must not depend on a thrown value's getters.
 */
export function readableError(err: unknown): unknown {
  try {
    errorMessage(err);
    if (err !== null && (typeof err === 'object' || typeof err === 'function')) {
      const e = err as { stack?: unknown; code?: unknown; delayMs?: unknown };
      void e.stack;
      void e.code;
      void e.delayMs;
    }
    return err;
  } catch {
    return new Error('the handler threw a value pgq could not read (reading its message, stack or code threw)');
  }
}

/**
 * Brand checks by `code` rather than `instanceof`, so errors thrown by a
 * second copy of pgq (a tasks module importing its own) are still understood.
 */
export function hasCode(err: unknown, code: PgqErrorCode): err is PgqError {
  return err instanceof Error && (err as { code?: unknown }).code === code;
}

export function isPermanentError(err: unknown): boolean {
  return hasCode(err, 'PGQ_PERMANENT');
}

export function snoozeDelay(err: unknown): number | null {
  if (!hasCode(err, 'PGQ_SNOOZE')) return null;
  const delay = (err as { delayMs?: unknown }).delayMs;
  return typeof delay === 'number' && Number.isFinite(delay) && delay >= 0 ? delay : null;
}

/** A small loggable view of an error: never the pg client or socket some errors carry. */
export function errorSummary(err: unknown): { message: string; code?: string; name?: string; stack?: string } {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return { name: err.name, message: err.message, ...(typeof code === 'string' ? { code } : {}), ...(err.stack ? { stack: err.stack } : {}) };
  }
  return { message: errorMessage(err) };
}
