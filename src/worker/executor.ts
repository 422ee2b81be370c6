/**
 * The executor runs claimed jobs under the concurrency limit: one attempt per
 * claimed job, owned by this worker from the claim until its outcome is
 * written.
 *
 * Ownership of an attempt, as this file keeps it:
 * - It starts when the producer hands over a claimed job (`run`): the job
 *   takes a slot and is "held".
 * - The pipeline (resolve task → start listeners → validate payload → start
 *   timeout → run handler → serialise result) turns whatever happens into
 *   exactly one `Outcome`: complete, fail or snooze (a give-back). Anything
 *   thrown anywhere, including by a schema's transform or a `job:start`
 *   listener, is a failure of that attempt. A validator that answers with a
 *   promise is awaited before the timeout starts, held like a handler.
 * - A signal (timeout, cancel, shutdown, lost lease) asks the handler to
 *   stop; it does not end the attempt. The slot and the job stay held until
 *   the handler's promise settles, so a handler that ignores its signal never
 *   runs beside its own retry. One that has not settled `abortGraceMs` after
 *   its signal is *stuck*: reported (log, `job:stuck`, `stuckCount`), still
 *   held; with `exitOnStuckMs`, the process exits once a handler has been
 *   stuck that long, so a supervisor restarts it and the job is rescued.
 * - The outcome goes to the completer, whose write is guarded by
 *   `state = 'running' AND attempts = n`. Events report what was written:
 *   `job:success` / `job:failure` only when the guarded write changed the
 *   row, `job:discarded` when it did not (the job was cancelled or rescued).
 */
import type { EventEmitter } from 'node:events';
import type { Logger } from '../core/logger.js';
import type { Clock } from '../core/clock.js';
import {
  JobCancelledError,
  JobTimeoutError,
  LeaseLostError,
  PermanentError,
  UnstorableResultError,
  SnoozeError,
  WorkerShutdownError,
  errorMessage,
  errorSummary,
  isPermanentError,
  readableError,
  snoozeDelay,
} from '../core/errors.js';
import { backoffDelayMs } from '../core/backoff.js';
import { clipText, toJsonText, wellFormed } from '../core/json.js';
import { isPromiseLike, issuesToValidationError, runSchema } from '../core/validate-payloads.js';
import type { JobErrorEntry, JobRecord, Json } from '../core/types.js';
import type { ClaimedJob } from '../db/rows.js';
import type { AnyTask, JobContext, TaskRegistry } from '../task.js';
import type { Completer, Outcome, RecordResult } from './completer.js';
import { MiddlewareChain, RecordedMeta } from '../middleware.js';
import type { SandboxRunner } from '../sandbox/sandbox-runner.js';
import type { ProgressReporter, ProgressWriter } from './progress.js';
import { settlesWithin } from '../core/sleep.js';

/** Events a worker emits about the jobs it runs: each reports what was written, not what was attempted. */
export interface WorkerEvents {
  /** A claimed job's handler is about to run. A listener that throws fails the attempt. */
  'job:start': [job: JobRecord];
  /** The attempt's success was written: the job is `succeeded`. */
  'job:success': [job: JobRecord, durationMs: number];
  /** The attempt's failure was written; `retry` says whether the job is `retryable` (true) or `failed`. */
  'job:failure': [job: JobRecord, error: unknown, durationMs: number, retry: boolean];
  /** The attempt's outcome did not stand: the job was cancelled while it ran (it ended `cancelled`), or rescued from this worker meanwhile. */
  'job:discarded': [job: JobRecord, outcome: Outcome['kind'], reason: string];
  /** A handler did not settle `abortGraceMs` after its signal; it keeps its slot and its job. */
  'job:stuck': [job: JobRecord, reason: string, sinceSignalMs: number];
  /** The event loop was blocked for `lagMs` (reported once it answers again), with the tasks that were running. */
  'loop:stall': [lagMs: number, tasks: Record<string, number>];
}

export interface ExecutorConfig {
  concurrency: number;
  maxResultBytes: number;
  /** How long a handler may take to settle after its signal before it counts as stuck. */
  abortGraceMs: number;
  /** Exit the process once a handler has been stuck this long; null never. */
  exitOnStuckMs: number | null;
  /** Runs sandboxed tasks' handlers in their threads or processes (terminated `sandbox.terminateGraceMs` after a signal). */
  sandbox?: SandboxRunner;
  /** Writes `ctx.progress` reports. */
  progress: ProgressWriter;
}

/**
 * An attempt's abort signal, made on first use: most handlers never read
 * `ctx.signal`, and an AbortController with its listener was a noticeable
 * part of a worker's work per job. `abort` works before and after the
 * signal exists; a signal made after it is already aborted with the reason.
 */
class AttemptAbort {
  #controller: AbortController | undefined;
  #aborted = false;
  #reason: unknown;

  constructor(private readonly onAbort: () => void) {}

  get signal(): AbortSignal {
    if (!this.#controller) {
      this.#controller = new AbortController();
      if (this.#aborted) this.#controller.abort(this.#reason);
    }
    return this.#controller.signal;
  }

  get aborted(): boolean {
    return this.#aborted;
  }

  /** Why it was aborted; undefined until then. */
  get reason(): unknown {
    return this.#reason;
  }

  /** The first call wins, as with an AbortController. */
  abort(reason: Error): void {
    if (this.#aborted) return;
    this.#aborted = true;
    this.#reason = reason;
    this.onAbort();
    this.#controller?.abort(reason);
  }
}

/** Where a handler's `ctx` keeps what its shared accessors read and make on first use. */
const CONTEXT_STATE = Symbol('pgq.ctx');

interface ContextState {
  readonly entry: RunningAttempt;
  readonly payload: unknown;
  readonly parent: Logger;
  readonly progressWriter: ProgressWriter;
  view?: JobRecord;
  signal?: AbortSignal;
  logger?: Logger;
  progress?: JobContext['progress'];
}

interface ContextHolder {
  [CONTEXT_STATE]: ContextState;
}

/** `ctx.snooze`: the same function on every context; it needs no `this`. */
function snooze(delayMs: number): never {
  throw new SnoozeError(delayMs);
}

/**
 * The state behind a context's accessors. They are shared by every context,
 * so they find it through `this`: a getter or setter taken off its property
 * descriptor must be called with the context (`get.call(ctx)`).
 */
function contextState(holder: ContextHolder | null | undefined, member: string): ContextState {
  const state = holder?.[CONTEXT_STATE];
  if (state === undefined) {
    throw new TypeError(`ctx.${member} was used with a \`this\` that is not a handler's ctx: call a getter or setter taken off its property descriptor with .call(ctx)`);
  }
  return state;
}

/** One accessor pair for every context: own, enumerable properties, as an object literal's would be. */
function contextAccessor<T>(member: string, read: (state: ContextState) => T, write: (state: ContextState, value: T) => void): PropertyDescriptor {
  return {
    get(this: ContextHolder | undefined): T {
      return read(contextState(this, member));
    },
    set(this: ContextHolder | undefined, value: T) {
      write(contextState(this, member), value);
    },
    enumerable: true,
    configurable: true,
  };
}

const CONTEXT_ACCESSORS: PropertyDescriptorMap = {
  job: contextAccessor<JobRecord>(
    'job',
    (s) => (s.view ??= { ...s.entry.job, payload: s.payload }),
    (s, value) => (s.view = value),
  ),
  signal: contextAccessor<AbortSignal>(
    'signal',
    (s) => (s.signal ??= s.entry.controller.signal),
    (s, value) => (s.signal = value),
  ),
  logger: contextAccessor<Logger>(
    'logger',
    (s) => {
      const { job } = s.entry;
      return (s.logger ??= s.parent.child({ jobId: job.id, task: job.task, attempt: job.attempts }));
    },
    (s, value) => (s.logger = value),
  ),
  progress: contextAccessor<JobContext['progress']>(
    'progress',
    (s) => (s.progress ??= (s.entry.progress ??= s.progressWriter.reporter(s.entry.job.id, s.entry.job.attempts)).report),
    (s, value) => (s.progress = value),
  ),
};

/** Longest an outcome waits for its attempt's last progress report to be written. */
const PROGRESS_FLUSH_WAIT_MS = 1_000;

/** How a handler and its middleware settled. */
type Settled = { ok: true; value: unknown } | { ok: false; error: unknown };

/** A handler's result and its JSON text, or why it cannot be stored. */
type StoredResult = { value: unknown; text: string } | { value: unknown; refused: unknown };

interface RunningAttempt {
  job: ClaimedJob;
  controller: AttemptAbort;
  settled: Promise<void>;
  stuck: boolean;
  timers: NodeJS.Timeout[];
  /** Keys the attempt recorded for `jobs.meta` (`ctx.recordMeta`); made on the first one. */
  recorded?: RecordedMeta;
  /** Its `ctx.progress` writes; made on the first read of `ctx.progress`. */
  progress?: ProgressReporter;
}

export class Executor {
  readonly #running = new Map<string, RunningAttempt>();
  readonly #held = new Map<string, number>();
  /** Every attempt's pipeline until it ends: the handler, then the write of its outcome. */
  readonly #pipelines = new Set<Promise<void>>();
  /**
   * Attempts claimed while an earlier attempt of the same job is still here
   * (this worker lost its lease, the job was rescued and claimed again): each
   * takes a slot and starts once the earlier one's outcome is settled, so
   * one process never runs two attempts of a job at once.
   */
  readonly #waiting = new Map<string, { job: ClaimedJob; reason?: Error }>();
  /**
   * Jobs whose outcome this worker gave up writing: their rows stay running
   * under its id for the rescuer once it stops, which counts the attempt.
   * Not given back meanwhile (a give-back does not count it: the job would
   * run again and again, past its maxAttempts).
   */
  readonly #unrecorded = new Set<string>();
  readonly #slotListeners = new Set<() => void>();
  #idleWaiters: (() => void)[] = [];
  #avgMs: number | null = null;
  /** Attempts whose handler has settled here (what the average is over). */
  #finished = 0;
  #stuck = 0;

  constructor(
    private readonly config: ExecutorConfig,
    private readonly tasks: TaskRegistry,
    private readonly completer: Completer,
    private readonly logger: Logger,
    private readonly clock: Clock,
    private readonly events: EventEmitter<WorkerEvents>,
    private readonly exit: (code: number) => void = (code) => process.exit(code),
    private readonly middleware: MiddlewareChain = new MiddlewareChain(),
  ) {}

  get freeSlots(): number {
    return this.config.concurrency - this.#running.size - this.#waiting.size;
  }

  /** Moving average of recent handler times, or null before the first job. */
  get averageDurationMs(): number | null {
    return this.#avgMs;
  }

  /** How many handlers have settled here so far. */
  get finishedCount(): number {
    return this.#finished;
  }

  /** Handlers running now, stuck ones included. */
  get runningCount(): number {
    return this.#running.size;
  }

  /** Handlers that have not settled within `abortGraceMs` of their signal. */
  get stuckCount(): number {
    return this.#stuck;
  }

  /** Tasks of the running handlers, with how many of each: for stall reports. */
  runningTasks(): Record<string, number> {
    const counts: Record<string, number> = {};
    for (const { job } of this.#running.values()) counts[job.task] = (counts[job.task] ?? 0) + 1;
    return counts;
  }

  /** Attempts this worker owns whose outcome is not yet written: [id, attempt number] (one job may have two). */
  heldAttempts(): [string, number][] {
    return [...this.#held, ...[...this.#waiting.values()].map(({ job }): [string, number] => [job.id, job.attempts])];
  }

  /** Ids of attempts this worker owns whose outcome is not yet written. */
  heldIds(): string[] {
    return [...this.#held.keys(), ...this.#waiting.keys()];
  }

  /** Called whenever a slot frees. */
  onSlotFree(listener: () => void): () => void {
    this.#slotListeners.add(listener);
    return () => this.#slotListeners.delete(listener);
  }

  /** Ids of jobs whose outcome this worker gave up writing (see #unrecorded). */
  unrecordedIds(): string[] {
    return [...this.#unrecorded];
  }

  /** Starts a claimed job. The caller has checked there is a free slot. */
  run(job: ClaimedJob): void {
    // Claimed again (someone made it available): its row is this attempt's now.
    this.#unrecorded.delete(job.id);
    if (this.#held.has(job.id)) {
      this.#waiting.set(job.id, { job });
      this.logger.warn(
        { jobId: job.id, task: job.task, attempt: job.attempts, earlierAttempt: this.#held.get(job.id) },
        `pgq job ${job.id} (${job.task}) was claimed again while its attempt ${this.#held.get(job.id)}, rescued from this worker, has not settled here; attempt ${job.attempts} starts once it has`,
      );
      return;
    }
    this.#start(job);
  }

  #start(job: ClaimedJob, reason?: Error): void {
    this.#held.set(job.id, job.attempts);
    const entry: RunningAttempt = {
      job,
      controller: new AttemptAbort(() => this.#watchAfterSignal(entry)),
      settled: Promise.resolve(),
      stuck: false,
      timers: [],
    };
    this.#running.set(job.id, entry);
    if (reason) entry.controller.abort(reason);
    const pipeline = this.#pipeline(entry);
    entry.settled = pipeline;
    this.#pipelines.add(pipeline);
    const done = (): void => void this.#pipelines.delete(pipeline);
    pipeline.then(done, done);
  }

  /**
   * Signals a job's running attempt (`attempt`, or any): cancelJob, or a
   * rescue. The attempt stays held until its handler settles. An attempt
   * still waiting for an earlier one of its job is dropped: the job is no
   * longer this worker's to start.
   */
  abort(id: string, reason: Error, attempt?: number): boolean {
    const waiting = this.#waiting.get(id);
    let found = false;
    if (waiting && (attempt === undefined || waiting.job.attempts === attempt)) {
      this.#waiting.delete(id);
      this.#checkIdle();
      for (const listener of this.#slotListeners) listener();
      found = true;
    }
    const entry = this.#running.get(id);
    if (!entry || (attempt !== undefined && entry.job.attempts !== attempt)) return found;
    entry.controller.abort(reason);
    return true;
  }

  /** Signals every running job; one waiting for an earlier attempt of its job starts signalled. */
  abortAll(reason: Error): void {
    for (const entry of this.#running.values()) entry.controller.abort(reason);
    for (const waiting of this.#waiting.values()) waiting.reason ??= reason;
  }

  /** The attempt of job `id` waiting for an earlier attempt of its job, taken out (cancelled: it is given back). */
  takeWaitingOf(id: string): ClaimedJob | undefined {
    const waiting = this.#waiting.get(id);
    if (!waiting) return undefined;
    this.#waiting.delete(id);
    this.#checkIdle();
    for (const listener of this.#slotListeners) listener();
    return waiting.job;
  }

  /**
   * The attempts waiting for an earlier attempt of their job, taken out (a
   * stopping worker gives them back: they never started).
   */
  takeWaiting(): ClaimedJob[] {
    const jobs = [...this.#waiting.values()].map((w) => w.job);
    this.#waiting.clear();
    this.#checkIdle();
    return jobs;
  }

  /** Resolves when no handler is running or waiting to, or after `ms`. Returns whether it became idle. */
  async waitIdle(ms: number): Promise<boolean> {
    if (this.#running.size === 0 && this.#waiting.size === 0) return true;
    let timer: NodeJS.Timeout | undefined;
    const idle = new Promise<boolean>((resolve) => this.#idleWaiters.push(() => resolve(true)));
    // Infinity waits for the handlers however long they take (a timer that long would fire at once, as 1 ms).
    if (ms === Infinity) return idle;
    const timeout = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
    const result = await Promise.race([idle, timeout]);
    clearTimeout(timer);
    return result;
  }

  /** Resolves when no handler is running or waiting to (their outcomes may still be being written). */
  idle(): Promise<void> {
    if (this.#running.size === 0 && this.#waiting.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(() => resolve()));
  }

  /** Resolves when every handler has settled and every outcome is written (or given up on). */
  async settled(): Promise<void> {
    // A pipeline that ends may start the attempt that waited for it: look again until none is left.
    while (this.#pipelines.size > 0) await Promise.allSettled([...this.#pipelines]);
  }

  async #pipeline(entry: RunningAttempt): Promise<void> {
    const { job } = entry;
    const startedAt = this.clock.monotonicMs();
    let outcome: Outcome;
    try {
      outcome = await this.#attempt(entry);
    } catch (err) {
      // #attempt turns every error into an outcome; this is the last guard.
      outcome = this.#failure(job, this.tasks.get(job.task) ?? null, err);
    }
    const ms = this.clock.monotonicMs() - startedAt;
    this.#avgMs = this.#avgMs === null ? ms : this.#avgMs * 0.9 + ms * 0.1;
    this.#finished += 1;
    this.#release(entry);
    let written: RecordResult;
    try {
      // A progress report still waiting for its interval is written first (after the outcome it would find the
      // job finished), but a database that does not answer it holds the outcome back a second at most.
      if (entry.progress) await settlesWithin(entry.progress.flush(), PROGRESS_FLUSH_WAIT_MS);
      written = await this.completer.record(outcome);
      if (written.status === 'not-recorded') this.#unrecorded.add(job.id);
    } finally {
      this.#held.delete(job.id);
      const next = this.#waiting.get(job.id);
      if (next) {
        this.#waiting.delete(job.id);
        this.#start(next.job, next.reason);
      }
    }
    this.#report(job, outcome, written, ms);
  }

  /** Frees the slot: the handler has settled. */
  #release(entry: RunningAttempt): void {
    for (const timer of entry.timers) clearTimeout(timer);
    if (entry.stuck) {
      this.#stuck -= 1;
      this.logger.warn({ jobId: entry.job.id, task: entry.job.task }, `pgq job ${entry.job.id} (${entry.job.task}) settled after being stuck`);
    }
    this.#running.delete(entry.job.id);
    this.#checkIdle();
    for (const listener of this.#slotListeners) listener();
  }

  #checkIdle(): void {
    if (this.#running.size === 0 && this.#waiting.size === 0) this.#idleWaiters.splice(0).forEach((w) => w());
  }

  #report(job: ClaimedJob, outcome: Outcome, written: RecordResult, ms: number): void {
    if (written.status === 'discarded') {
      const reason = 'the job was cancelled or rescued from this worker before its outcome was written';
      this.logger.info({ jobId: job.id, task: job.task, attempt: job.attempts, outcome: outcome.kind }, `pgq discarded the ${outcome.kind} of job ${job.id}: ${reason}`);
      this.#emit('job:discarded', job, outcome.kind, reason);
      return;
    }
    if (written.status !== 'written') return; // not recorded: the completer logged it; the rescuer will retry the job
    if (written.state === 'cancelled') {
      // cancelJob asked while it ran: whatever the attempt ended with, the job ended cancelled.
      const reason = 'the job was cancelled while this attempt ran (cancelJob); it ended cancelled';
      this.logger.info({ jobId: job.id, task: job.task, attempt: job.attempts, outcome: outcome.kind }, `pgq job ${job.id} ended cancelled (its ${outcome.kind} did not stand): ${reason}`);
      this.#emit('job:discarded', job, outcome.kind, reason);
      return;
    }
    const recorded = written.outcome; // a refused success is recorded as a failure instead
    if (recorded.kind === 'snooze' && recorded.note !== null) {
      // Given back by a stop: the handler did not finish within the grace period. Said, with the id, so the log shows what will run again.
      this.logger.info({ jobId: job.id, task: job.task, attempt: job.attempts }, `pgq gave back job ${job.id} (${job.task}), interrupted by the worker's stop: it runs again, this attempt not used up`);
    }
    if (recorded.kind === 'complete') this.#emit('job:success', job, ms);
    if (recorded.kind === 'fail') this.#emit('job:failure', job, JSON.parse(recorded.error) as JobErrorEntry, ms, written.state === 'retryable');
  }

  #emit<K extends keyof WorkerEvents>(event: K, ...args: WorkerEvents[K]): void {
    try {
      (this.events.emit as (e: K, ...a: WorkerEvents[K]) => boolean)(event, ...args);
    } catch (err) {
      this.logger.error({ err: errorSummary(err), event }, `a pgq ${event} listener threw: ${errorMessage(err)}`);
    }
  }

  /** Runs one attempt and says what to record; never throws. */
  async #attempt(entry: RunningAttempt): Promise<Outcome> {
    const { job, controller } = entry;
    const task = this.tasks.get(job.task);
    if (!task) {
      return this.#failure(job, null, new PermanentError(`no task named ${JSON.stringify(job.task)} is registered in this worker`));
    }
    try {
      (this.events.emit as (e: 'job:start', job: JobRecord) => boolean)('job:start', job);
    } catch (err) {
      return this.#failure(job, task, new Error(`a job:start listener threw: ${errorMessage(err)}`, { cause: err }));
    }
    let payload: unknown;
    try {
      const pending = runSchema(task.schema, job.payload);
      const checked = isPromiseLike(pending) ? await pending : pending;
      if (checked.issues) {
        const { message } = issuesToValidationError(checked.issues, 'payload');
        // A workflow step's input is most often its parents' results, as stored: through JSON, so a Date there is
        // text and undefined is null. Nothing stored changed then; the step's schema does not take what they give.
        // (Whether this step's input was built from them, the row does not say: the hint is for when it was.)
        const why =
          job.workflowId === null
            ? `stored payload no longer matches the schema of task ${job.task}`
            : `stored payload no longer matches the schema of task ${job.task} ` +
              "(a workflow step given its parents' results gets them as stored, through JSON: a Date is its ISO text, undefined is null; " +
              'z.coerce.date() takes the text)';
        return this.#failure(job, task, new PermanentError(`${why}: ${message}`));
      }
      payload = checked.value;
    } catch (err) {
      return this.#failure(job, task, new PermanentError(`the schema of task ${job.task} threw on the stored payload: ${errorMessage(err)}`, { cause: err }));
    }
    const timeoutMs = job.timeoutMs ?? task.timeoutMs;
    const startTimeout = (): void => {
      if (timeoutMs) entry.timers.push(setTimeout(() => controller.abort(new JobTimeoutError(timeoutMs)), timeoutMs));
    };
    const { sandbox } = this.config;
    const sandboxed = task.sandbox && sandbox ? { options: task.sandbox, runner: sandbox } : null;
    // A sandboxed handler's time limit starts when it leaves its pool's queue, not while it waits for a thread.
    if (!sandboxed) startTimeout();
    let settled: Settled;
    // The handler's result as stored, made as it returns: inside the middleware, so a result that cannot be
    // stored is a failure they see (a tracing span said "succeeded" for a job then failed for good).
    let stored: StoredResult | undefined;
    try {
      const ctx = this.#context(entry, payload);
      const handle = (): Promise<unknown> =>
        Promise.resolve()
          .then(() => (sandboxed ? sandboxed.runner.run(sandboxed.options, payload, ctx, startTimeout) : task.handler(payload, ctx)))
          .then((value) => {
            try {
              stored = { value, text: this.#resultText(value) };
            } catch (err) {
              stored = { value, refused: err };
              throw err;
            }
            return value;
          });
      settled = { ok: true, value: await this.middleware.attempt(ctx, handle) };
    } catch (err) {
      settled = { ok: false, error: err };
    }
    const outcome = this.#decide(job, task, controller, settled, stored);
    // Read once the handler and middleware have settled: later calls change nothing.
    return entry.recorded ? { ...outcome, meta: entry.recorded.text() } : outcome;
  }

  /** The outcome of a settled handler, given why (if at all) its signal fired. */
  #decide(job: ClaimedJob, task: AnyTask, abort: AttemptAbort, settled: Settled, stored: StoredResult | undefined): Outcome {
    const reason: unknown = abort.aborted ? abort.reason : undefined;
    // Cancelled or rescued: the guarded write will be discarded, but the
    // attempt still ends with one outcome like every other.
    if (reason instanceof JobCancelledError || reason instanceof LeaseLostError) return this.#failure(job, task, reason);
    // Past its time limit the attempt fails, however the handler ended.
    // A JobTimeoutError of the handler's own (a terminated sandbox) says more than the signal's.
    if (reason instanceof JobTimeoutError) return this.#failure(job, task, !settled.ok && settled.error instanceof JobTimeoutError ? settled.error : reason);
    if (!settled.ok) {
      // The handler returned: its work is done, whatever a stop asked meanwhile.
      if (stored && 'refused' in stored && settled.error === stored.refused) return this.#failure(job, task, settled.error);
      // A sandbox's handler that returned what cannot be stored: the sandbox refused it as the lines above do.
      if (isPermanentError(settled.error) && (settled.error as Error).name === 'UnstorableResultError') return this.#failure(job, task, settled.error);
      if (reason instanceof WorkerShutdownError) {
        return { kind: 'snooze', id: job.id, attempt: job.attempts, delayMs: 0, note: this.#errorEntry(job, reason, true) };
      }
      const snoozeMs = snoozeDelay(settled.error);
      if (snoozeMs !== null) return { kind: 'snooze', id: job.id, attempt: job.attempts, delayMs: snoozeMs, note: null };
      return this.#failure(job, task, settled.error);
    }
    try {
      // Attempt middleware may return another value than the handler's, or change it in place: what it returns is
      // stored, made into JSON again. Without any, the text made as the handler returned is the one.
      const result = stored && 'text' in stored && !this.middleware.wrapsAttempts ? stored.text : this.#resultText(settled.value);
      return { kind: 'complete', id: job.id, attempt: job.attempts, result };
    } catch (err) {
      return this.#failure(job, task, err);
    }
  }

  /**
   * A result's JSON text, or an UnstorableResultError (a PermanentError): the handler did its work, and
   * another attempt would do it again and return the same.
   */
  #resultText(value: unknown): string {
    try {
      return toJsonText(value, 'result', this.config.maxResultBytes);
    } catch (err) {
      throw new UnstorableResultError(`the handler succeeded, but its result cannot be stored: ${errorMessage(err)}`, { cause: err });
    }
  }

  /**
   * A handler's `ctx`: a plain object, whose job view (with the validated
   * payload), signal, logger and progress reporter are made on first use —
   * most handlers use few of them, and one context is made per attempt.
   * They are own properties with setters, so `ctx` spreads, copies, proxies
   * and can be amended like any object; `snooze` and `recordMeta` work taken
   * off it. The accessors are shared by every context (CONTEXT_ACCESSORS):
   * a literal with its own was a dictionary-mode object per attempt. One
   * difference: a getter or setter taken off its property descriptor needs
   * the context as `this` (`get.call(ctx)`).
   */
  #context(entry: RunningAttempt, payload: unknown): JobContext {
    const ctx = {
      attempt: entry.job.attempts,
      snooze,
      recordMeta(key: string, value: Json): void {
        (entry.recorded ??= new RecordedMeta()).record(key, value);
      },
    };
    // Not enumerable: spreads, Object.assign and console.log(ctx) leave the internals out.
    Object.defineProperty(ctx, CONTEXT_STATE, { value: { entry, payload, parent: this.logger, progressWriter: this.config.progress } satisfies ContextState });
    return Object.defineProperties(ctx, CONTEXT_ACCESSORS) as unknown as JobContext;
  }

  /** After a signal: a handler not settled within the grace is stuck; optionally the process exits later. */
  #watchAfterSignal(entry: RunningAttempt): void {
    if (!this.#running.has(entry.job.id)) return;
    const signalledAt = this.clock.monotonicMs();
    const reason = errorMessage(entry.controller.reason);
    entry.timers.push(
      setTimeout(() => {
        if (this.#running.get(entry.job.id) !== entry) return;
        entry.stuck = true;
        this.#stuck += 1;
        const since = Math.round(this.clock.monotonicMs() - signalledAt);
        this.logger.warn(
          { jobId: entry.job.id, task: entry.job.task, attempt: entry.job.attempts, sinceSignalMs: since },
          `pgq job ${entry.job.id} (${entry.job.task}) is stuck: its handler has not settled ${since} ms after its signal (${reason}); it keeps its slot and its job`,
        );
        this.#emit('job:stuck', entry.job, reason, since);
      }, this.config.abortGraceMs).unref(),
    );
    const exitAfter = this.config.exitOnStuckMs;
    if (exitAfter !== null) {
      entry.timers.push(
        setTimeout(() => {
          if (this.#running.get(entry.job.id) !== entry) return;
          this.logger.error(
            { jobId: entry.job.id, task: entry.job.task },
            `pgq is exiting: job ${entry.job.id} (${entry.job.task}) has been stuck for ${exitAfter} ms (exitOnStuckMs); it will be rescued once this worker's lease expires`,
          );
          this.exit(70);
        }, this.config.abortGraceMs + exitAfter).unref(),
      );
    }
  }

  #failure(job: ClaimedJob, task: AnyTask | null, thrown: unknown): Outcome {
    const err = readableError(thrown);
    const backoff = {
      baseMs: job.backoffBaseMs ?? task?.backoff.baseMs ?? 1_000,
      maxMs: job.backoffMaxMs ?? task?.backoff.maxMs ?? 3_600_000,
    };
    return {
      kind: 'fail',
      id: job.id,
      attempt: job.attempts,
      error: this.#errorEntry(job, err),
      delayMs: backoffDelayMs(failedAttempts(job), backoff),
      permanent: isPermanentError(err),
    };
  }

  #errorEntry(job: ClaimedJob, err: unknown, requeued = false): string {
    const entry: JobErrorEntry = {
      attempt: job.attempts,
      message: storableText(errorMessage(err)),
      at: this.clock.now().toISOString(),
    };
    if (err instanceof Error && typeof err.stack === 'string' && err.stack) entry.stack = storableText(err.stack);
    if (requeued) entry.requeued = true;
    return JSON.stringify(entry);
  }
}

/**
 * How many attempts of the job have failed, the one failing now included:
 * the exponent of its retry backoff. Not `attempts`: a snooze and a
 * give-back at a stop take an attempt number too (they raise max_attempts),
 * and a job that snoozed twelve times waited half an hour after its first
 * failure. The failed attempts are the attempt numbers in `errors`, less its
 * notes: a give-back's (`requeued`; a note of a pgq before that field is
 * known by its message), a workflow step's cancel (`failedStep`, one each
 * time a parent failed), an expiry's (the number of an attempt already
 * there). A snooze leaves none.
 */
function failedAttempts(job: ClaimedJob): number {
  const failed = new Set<number>();
  for (const entry of job.errors) {
    if (entry.requeued === true || entry.failedStep !== undefined || entry.message === SHUTDOWN_NOTE) continue;
    if (typeof entry.attempt === 'number' && entry.attempt >= 1 && entry.attempt < job.attempts) failed.add(entry.attempt);
  }
  return failed.size + 1;
}

const SHUTDOWN_NOTE = new WorkerShutdownError().message;

/** An error's text as jsonb stores it: NULs spelled out, lone surrogates replaced, at most 10,000 characters (never half of one). */
function storableText(text: string): string {
  return wellFormed(clipText(text.replaceAll('\u0000', '\\0'), 10_000));
}
