/**
 * Middleware: functions that wrap every enqueue and every attempt, registered
 * with `new Pgq({ middleware: [...] })` (or `pgq.use(...)`).
 *
 * - `enqueue(call, next)` sees the jobs about to be written (`enqueue`,
 *   `enqueueMany`, a workflow, a schedule's tick) and may amend their `meta`.
 *   `next()` writes them and resolves to their ids, in order. A middleware
 *   that throws, or never calls `next()`, refuses the enqueue: nothing is
 *   written and the caller gets the error.
 * - `attempt(ctx, next)` runs around the handler of each attempt, with the
 *   job and its context; `next()` runs the handler (and the middleware after
 *   this one) and resolves to its result. An error thrown here is a failure
 *   of that attempt, exactly like one thrown by the handler. It may record
 *   keys for the job's `meta` with `ctx.recordMeta(key, value)`: they are
 *   written by the statement that writes the attempt's outcome (`RecordedMeta`).
 *
 * The first middleware of the list is the outermost: it runs first and
 * finishes last.
 */
import { PgqError, ValidationError } from './core/errors.js';
import { hasLoneSurrogate, toJsonText } from './core/json.js';
import type { JobMeta, Json } from './core/types.js';
import type { JobContext } from './task.js';
import type { DbHandle } from './db/queryable.js';

/** Largest `meta` accepted, as JSON bytes, after middleware has run. */
export const MAX_META_BYTES = 64 * 1024;

/** A job about to be inserted, as enqueue middleware sees it. */
export interface PendingJob {
  readonly task: string;
  readonly queue: string;
  /** The payload as validated by the task's schema. */
  readonly payload: unknown;
  /** What will be stored in `jobs.meta`: change or add keys here. Must stay a JSON object. */
  meta: JobMeta;
  /** For a schedule's job: the schedule and the tick it stands for. */
  readonly schedule?: {
    readonly name: string;
    readonly tick: Date;
    /** Asked for by `runSchedule()`, inside the caller's request; false for a tick the leader fires. */
    readonly runNow: boolean;
  };
  /** For a workflow's job: the step's name. */
  readonly step?: string;
}

/** What one enqueue is about to write. */
export interface EnqueueCall {
  /** Which API wrote the jobs: one `enqueue`, an `enqueueMany`, a workflow, or a schedule firing (or run now). */
  readonly kind: 'enqueue' | 'enqueueMany' | 'workflow' | 'schedule';
  readonly jobs: readonly PendingJob[];
  /**
   * The caller's transaction the jobs are written in (the `db` option of
   * `enqueue`, `enqueueMany` or `enqueueWorkflow`), or undefined when they
   * are written on pgq's pool (and for a schedule's tick). Pass it on to
   * what the hook writes itself (`pgq.enqueue(audit, payload, { db: call.db })`)
   * so that it commits or rolls back with the jobs.
   */
  readonly db?: DbHandle | undefined;
}

/** Runs the rest of the enqueue chain and the insert; resolves to the jobs' ids, in the order of `call.jobs`. */
export type EnqueueNext = () => Promise<string[]>;

/** Runs the rest of the attempt chain and the handler; resolves to the handler's result. */
export type AttemptNext = () => Promise<unknown>;

/**
 * A middleware: either hook may be left out.
 *
 * @example
 * const requestIds: Middleware = {
 *   name: 'request-id',
 *   async enqueue(call, next) {
 *     for (const job of call.jobs) job.meta.requestId ??= currentRequestId();
 *     return next();
 *   },
 *   async attempt(ctx, next) {
 *     return withRequestId(String(ctx.job.meta.requestId ?? ''), next);
 *   },
 * };
 * const pgq = new Pgq({ connectionString, tasks, middleware: [requestIds] });
 */
export interface Middleware {
  /** Shown in errors. */
  readonly name?: string;
  /** Wraps an enqueue: amend `call.jobs[i].meta`, then return `next()`. */
  enqueue?(call: EnqueueCall, next: EnqueueNext): Promise<string[]>;
  /** Wraps one attempt's handler: return (or transform) `next()`. */
  attempt?(ctx: JobContext, next: AttemptNext): Promise<unknown>;
}

/** The registered middleware of one `Pgq`, composed. */
export class MiddlewareChain {
  readonly #enqueue: Middleware[] = [];
  readonly #attempt: Middleware[] = [];

  constructor(list: readonly Middleware[] = []) {
    for (const m of list) this.add(m);
  }

  /** Appends a middleware (innermost so far). */
  add(middleware: Middleware): void {
    checkMiddleware(middleware);
    if (middleware.enqueue) this.#enqueue.push(middleware);
    if (middleware.attempt) this.#attempt.push(middleware);
  }

  /** True when some middleware wraps enqueues. */
  get wrapsEnqueues(): boolean {
    return this.#enqueue.length > 0;
  }

  /** True when some middleware wraps attempts. */
  get wrapsAttempts(): boolean {
    return this.#attempt.length > 0;
  }

  /**
   * Runs the enqueue middleware around `write`, which inserts the jobs (reading
   * their `meta` then) and returns their ids. Rejects if a middleware throws or
   * returns without the jobs having been written.
   */
  async enqueue(call: EnqueueCall, write: EnqueueNext): Promise<string[]> {
    if (this.#enqueue.length === 0) return write();
    let writing: Promise<string[]> | undefined;
    let ended = false;
    const step = (i: number): Promise<string[]> => {
      const m = this.#enqueue[i];
      if (!m) {
        if (writing) return Promise.reject(new PgqError('PGQ_MIDDLEWARE', 'an enqueue middleware called next() twice'));
        // After the call answered, a write would contradict what it said (nothing enqueued, or an error).
        if (ended) return Promise.reject(new PgqError('PGQ_MIDDLEWARE', 'an enqueue middleware called next() after the enqueue had ended: nothing was written'));
        writing = handledLater(write());
        return writing;
      }
      return handledLater(Promise.resolve().then(() => m.enqueue!(call, () => step(i + 1))));
    };
    try {
      await step(0);
    } catch (err) {
      ended = true;
      // A hook that threw after next(): the caller hears of it only once the write has settled.
      await writing?.catch(() => undefined);
      throw err;
    }
    ended = true;
    if (!writing) {
      throw new PgqError('PGQ_MIDDLEWARE', `enqueue middleware ${label(this.#enqueue)} returned without calling next(): nothing was enqueued`);
    }
    // The write's own ids, whatever a hook returned (one that did not await next() returns before the write ends).
    return writing;
  }

  /**
   * Runs the attempt middleware around `handler`. The handler runs at most
   * once (a second next() rejects), and the attempt lasts until it has
   * settled: a middleware that returns without awaiting next() does not end
   * the attempt (nor free its slot) early, and the handler's error, if it
   * throws later, is the attempt's. A hook that awaits next() (or catches
   * it) and returns a value of its own recovers from the handler's error:
   * its value is the result. One that let the error go by without taking
   * it (next() not awaited) does not.
   */
  async attempt(ctx: JobContext, handler: AttemptNext): Promise<unknown> {
    if (this.#attempt.length === 0) return handler();
    let running: Promise<unknown> | undefined;
    let handlerSettled = false;
    let ended = false;
    /** What each hook's next() returned, to see whether one let a rejection go by. */
    const given: NextPromise<unknown>[] = [];
    const step = (i: number): Promise<unknown> => {
      const m = this.#attempt[i];
      if (!m) {
        if (running) return Promise.reject(new PgqError('PGQ_MIDDLEWARE', 'an attempt middleware called next() twice: the handler runs once per attempt'));
        // After the attempt ended its job is no longer held here (its
        // outcome written, its slot free, perhaps claimed elsewhere): the
        // handler must not run.
        if (ended) return Promise.reject(new PgqError('PGQ_MIDDLEWARE', 'an attempt middleware called next() after the attempt had ended: the handler did not run'));
        running = handledLater(handler());
        running.then(
          () => (handlerSettled = true),
          () => (handlerSettled = true),
        );
        return running;
      }
      return handledLater(Promise.resolve().then(() => m.attempt!(ctx, () => NextPromise.of(step(i + 1), given))));
    };
    let value: unknown;
    try {
      value = await step(0);
    } catch (err) {
      ended = true;
      await running?.catch(() => undefined);
      throw err;
    }
    ended = true;
    if (!running) return value;
    // The chain answered before the handler settled: no hook can have seen its outcome.
    const early = !handlerSettled;
    try {
      await running;
    } catch (err) {
      if (early) throw err;
      // The hooks' own chains settle first (a finally() rethrowing a moment later).
      await new Promise((resolve) => setImmediate(resolve));
      if (given.some((p) => p.rejected && !p.chained)) throw err;
    }
    return value;
  }
}

/**
 * What an attempt hook's next() returns, and every promise a hook chains
 * from it (then, catch, finally, await): each notes whether it rejected and
 * whether anything was chained from it. A rejected one with nothing chained
 * is an error a hook let go by without looking (next() not awaited, a
 * finally() that rethrew to nobody): the handler's error stays the
 * attempt's. Otherwise a hook caught it, and what the chain returned is the
 * result. Each is marked handled: such an error is the attempt's, never an
 * unhandled rejection of the process.
 */
class NextPromise<T> extends Promise<T> {
  #tracked: NextPromise<unknown>[] | null = null;
  chained = false;
  rejected = false;

  /** `p` as a hook's next() returns it, its chains recorded in `tracked`. */
  static of<T>(p: Promise<T>, tracked: NextPromise<unknown>[]): NextPromise<T> {
    const next = new NextPromise<T>((resolve, reject) => void p.then(resolve, reject));
    next.#track(tracked);
    return next;
  }

  #track(tracked: NextPromise<unknown>[]): void {
    this.#tracked = tracked;
    tracked.push(this as NextPromise<unknown>);
    // Promise.prototype.then itself, not this class's: noting the rejection chains nothing.
    void Promise.prototype.then.call(this, undefined, () => {
      this.rejected = true;
    });
  }

  override then<R1 = T, R2 = never>(
    onFulfilled?: ((value: T) => R1 | PromiseLike<R1>) | null,
    onRejected?: ((reason: unknown) => R2 | PromiseLike<R2>) | null,
  ): Promise<R1 | R2> {
    this.chained = true;
    // A NextPromise too (Promise's species), tracked with this one.
    const derived = super.then(onFulfilled, onRejected) as NextPromise<R1 | R2>;
    if (this.#tracked) derived.#track(this.#tracked);
    return derived;
  }
}

/**
 * `p`, marked as handled: a middleware that calls next() without awaiting it
 * leaves the promise of the layers inside it to nobody, and its rejection
 * (the handler's error, a failed write) would end the process as unhandled.
 * The error still reaches the caller: the chain waits for the handler or the
 * write itself.
 */
function handledLater<T>(p: Promise<T>): Promise<T> {
  p.catch(() => undefined);
  return p;
}

/** `meta` as JSON text for the insert, or a ValidationError naming `field`: a plain JSON object within MAX_META_BYTES. */
export function metaText(meta: unknown, field: string): string {
  if (meta === null || typeof meta !== 'object' || Array.isArray(meta) || (Object.getPrototypeOf(meta) !== Object.prototype && Object.getPrototypeOf(meta) !== null)) {
    throw new ValidationError(field, 'must be a plain JSON object, e.g. { requestId: "r-1" }');
  }
  const text = toJsonText(meta, field, MAX_META_BYTES);
  // A toJSON() of its own may make it anything else (null, a list, a string).
  if (!text.startsWith('{')) throw new ValidationError(field, `must be a plain JSON object, e.g. { requestId: "r-1" }; its toJSON() made ${text.slice(0, 40)}`);
  return text;
}

/** Longest key `ctx.recordMeta` accepts. */
const RECORDED_KEY_LIMIT = 200;

/**
 * The keys one attempt records for `jobs.meta` (`ctx.recordMeta`), kept as
 * JSON text until the completer writes them with the attempt's outcome, in
 * the same statement (no write of their own). Made on the first call: an
 * attempt that records nothing allocates nothing.
 */
export class RecordedMeta {
  readonly #entries = new Map<string, string>();
  #bytes = 0;

  /** Validates `value` and keeps it under `key` (a later call for the same key replaces it). */
  record(key: string, value: Json): void {
    // eslint-disable-next-line no-control-regex
    if (typeof key !== 'string' || key.length === 0 || key.length > RECORDED_KEY_LIMIT || /[\u0000-\u001f]/.test(key) || hasLoneSurrogate(key)) {
      throw new ValidationError('ctx.recordMeta(key)', `must be a string of 1 to ${RECORDED_KEY_LIMIT} characters without control characters or lone surrogates, got ${JSON.stringify(key)}`);
    }
    const field = `ctx.recordMeta(${JSON.stringify(key)})`;
    const entry = `${JSON.stringify(key)}:${toJsonText(value, field, MAX_META_BYTES)}`;
    const bytes = this.#bytes - byteLength(this.#entries.get(key)) + Buffer.byteLength(entry, 'utf8');
    if (bytes > MAX_META_BYTES) {
      throw new ValidationError(field, `would make this attempt's recorded keys ${bytes} bytes of JSON, over the limit of ${MAX_META_BYTES} bytes`);
    }
    this.#entries.set(key, entry);
    this.#bytes = bytes;
  }

  /** JSON text of an object holding the recorded keys. */
  text(): string {
    return `{${[...this.#entries.values()].join(',')}}`;
  }
}

function byteLength(text: string | undefined): number {
  return text === undefined ? 0 : Buffer.byteLength(text, 'utf8');
}

function checkMiddleware(m: unknown): asserts m is Middleware {
  if (m === null || typeof m !== 'object') throw new ValidationError('middleware', 'each middleware must be an object with enqueue and/or attempt functions');
  const { enqueue, attempt } = m as Middleware;
  if (enqueue !== undefined && typeof enqueue !== 'function') throw new ValidationError('middleware.enqueue', 'must be a function');
  if (attempt !== undefined && typeof attempt !== 'function') throw new ValidationError('middleware.attempt', 'must be a function');
  if (!enqueue && !attempt) throw new ValidationError('middleware', 'a middleware needs an enqueue or an attempt function');
}

function label(list: Middleware[]): string {
  return list.map((m, i) => m.name ?? `#${i}`).join(' → ');
}
