/**
 * The executor runs claimed jobs under the concurrency limit. Each job goes
 * through one pipeline: resolve task → validate payload → start timeout →
 * run handler (raced against its AbortSignal) → hand the outcome to the
 * completer. A slot frees when the handler settles or its signal aborts (a
 * handler that ignores its signal cannot pin a slot); the job stays "held"
 * until its outcome is written, which is what the producer's orphan check
 * relies on.
 */
import type { Logger } from '../core/logger.js';
import type { Clock } from '../core/clock.js';
import {
  JobCancelledError,
  JobTimeoutError,
  LeaseLostError,
  PermanentError,
  SnoozeError,
  WorkerShutdownError,
  errorMessage,
  isPermanentError,
  snoozeDelay, errorSummary } from '../core/errors.js';
import { backoffDelayMs } from '../core/backoff.js';
import { toJsonText } from '../core/json.js';
import type { EventEmitter } from 'node:events';
import type { JobErrorEntry, JobRecord } from '../core/types.js';
import type { ClaimedJob } from '../db/rows.js';
import type { AnyTask, JobContext, TaskRegistry } from '../task.js';
import type { Completer, Outcome } from './completer.js';

/** Events a worker emits about the jobs it runs. */
export interface WorkerEvents {
  /** A claimed job's handler is about to run. */
  'job:start': [job: JobRecord];
  /** The handler returned; its result is being recorded. */
  'job:success': [job: JobRecord, durationMs: number];
  /** The attempt failed; `retry` says whether another attempt will follow. */
  'job:failure': [job: JobRecord, error: unknown, durationMs: number, retry: boolean];
}

interface RunningJob {
  job: ClaimedJob;
  controller: AbortController;
  settled: Promise<void>;
}

export class Executor {
  readonly #running = new Map<string, RunningJob>();
  readonly #held = new Set<string>();
  readonly #slotListeners = new Set<() => void>();
  #idleWaiters: (() => void)[] = [];
  #avgMs: number | null = null;

  constructor(
    private readonly concurrency: number,
    private readonly tasks: TaskRegistry,
    private readonly completer: Completer,
    private readonly logger: Logger,
    private readonly clock: Clock,
    private readonly maxResultBytes: number,
    private readonly events: EventEmitter<WorkerEvents>,
  ) {}

  get freeSlots(): number {
    return this.concurrency - this.#running.size;
  }

  /** Moving average of recent handler times, or null before the first job. */
  get averageDurationMs(): number | null {
    return this.#avgMs;
  }

  get runningCount(): number {
    return this.#running.size;
  }

  /** Ids of jobs claimed by this worker whose outcome is not yet written. */
  heldIds(): string[] {
    return [...this.#held];
  }

  /** Called whenever a slot frees. */
  onSlotFree(listener: () => void): () => void {
    this.#slotListeners.add(listener);
    return () => this.#slotListeners.delete(listener);
  }

  /** Starts a claimed job. The caller has checked there is a free slot. */
  run(job: ClaimedJob): void {
    const controller = new AbortController();
    this.#held.add(job.id);
    const entry: RunningJob = { job, controller, settled: Promise.resolve() };
    this.#running.set(job.id, entry);
    entry.settled = this.#pipeline(job, controller).catch((err: unknown) => {
      this.logger.error({ err: errorSummary(err), jobId: job.id }, `pgq executor failed on job ${job.id}: ${errorMessage(err)}`);
    });
  }

  /** Aborts one running job's signal (cancelJob). */
  abort(id: string, reason: Error): boolean {
    const entry = this.#running.get(id);
    if (!entry) return false;
    entry.controller.abort(reason);
    return true;
  }

  /** Aborts every running job's signal. */
  abortAll(reason: Error): void {
    for (const entry of this.#running.values()) entry.controller.abort(reason);
  }

  /** Resolves when no handler is running, or after `ms`. Returns whether it became idle. */
  async waitIdle(ms: number): Promise<boolean> {
    if (this.#running.size === 0) return true;
    let timer: NodeJS.Timeout | undefined;
    const idle = new Promise<boolean>((resolve) => this.#idleWaiters.push(() => resolve(true)));
    const timeout = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
    const result = await Promise.race([idle, timeout]);
    clearTimeout(timer);
    return result;
  }

  /** Resolves when every handler has settled and every outcome is handed to the completer. */
  async settled(): Promise<void> {
    await Promise.all([...this.#running.values()].map((e) => e.settled));
  }

  async #pipeline(job: ClaimedJob, controller: AbortController): Promise<void> {
    let outcome: Outcome | null = null;
    const startedAt = this.clock.monotonicMs();
    try {
      this.#emit('job:start', job);
      outcome = await this.#attempt(job, controller);
      const ms = this.clock.monotonicMs() - startedAt;
      this.#avgMs = this.#avgMs === null ? ms : this.#avgMs * 0.9 + ms * 0.1;
      if (outcome?.kind === 'complete') this.#emit('job:success', job, ms);
      if (outcome?.kind === 'fail') {
        const retry = !outcome.permanent && job.attempts < job.maxAttempts;
        this.#emit('job:failure', job, JSON.parse(outcome.error) as JobErrorEntry, ms, retry);
      }
    } finally {
      this.#running.delete(job.id);
      if (this.#running.size === 0) this.#idleWaiters.splice(0).forEach((w) => w());
      for (const listener of this.#slotListeners) listener();
    }
    try {
      if (outcome) await this.completer.record(outcome);
    } finally {
      this.#held.delete(job.id);
    }
  }

  #emit<K extends keyof WorkerEvents>(event: K, ...args: WorkerEvents[K]): void {
    try {
      (this.events.emit as (e: K, ...a: WorkerEvents[K]) => boolean)(event, ...args);
    } catch (err) {
      this.logger.error({ err: errorSummary(err), event }, `a pgq ${event} listener threw: ${errorMessage(err)}`);
    }
  }

  /** Runs one attempt and says what to record, or null when nothing is to be written. */
  async #attempt(job: ClaimedJob, controller: AbortController): Promise<Outcome | null> {
    const task = this.tasks.get(job.task);
    if (!task) {
      return this.#failure(job, null, new PermanentError(`no task named ${JSON.stringify(job.task)} is registered in this worker`));
    }
    const parsed = task.schema.safeParse(job.payload);
    if (!parsed.success) {
      const first = parsed.error.issues[0];
      const where = first?.path.length ? `payload.${first.path.join('.')}` : 'payload';
      return this.#failure(
        job,
        task,
        new PermanentError(`stored payload no longer matches the schema of task ${job.task}: ${where}: ${first?.message ?? 'invalid'}`),
      );
    }
    const timeoutMs = job.timeoutMs ?? task.timeoutMs;
    const timer = timeoutMs ? setTimeout(() => controller.abort(new JobTimeoutError(timeoutMs)), timeoutMs) : undefined;
    const parent = this.logger;
    let logger: Logger | undefined;
    const ctx: JobContext = {
      job: { ...job, payload: parsed.data },
      attempt: job.attempts,
      signal: controller.signal,
      // Made on first use: most handlers never log, and this runs per job.
      get logger(): Logger {
        return (logger ??= parent.child({ jobId: job.id, task: job.task, attempt: job.attempts }));
      },
      snooze(delayMs: number): never {
        throw new SnoozeError(delayMs);
      },
    };
    try {
      const result = await raceAbort(Promise.resolve().then(() => task.handler(parsed.data, ctx)), controller.signal);
      let resultJson: string;
      try {
        resultJson = toJsonText(result, 'result', this.maxResultBytes);
      } catch (err) {
        return this.#failure(job, task, err);
      }
      return { kind: 'complete', id: job.id, attempt: job.attempts, result: resultJson };
    } catch (err) {
      const reason: unknown = controller.signal.aborted ? controller.signal.reason : err;
      if (reason instanceof JobCancelledError || reason instanceof LeaseLostError) return null;
      if (reason instanceof WorkerShutdownError) {
        return { kind: 'snooze', id: job.id, attempt: job.attempts, delayMs: 0, note: this.#errorEntry(job, reason) };
      }
      const snoozeMs = snoozeDelay(reason);
      if (snoozeMs !== null) {
        return { kind: 'snooze', id: job.id, attempt: job.attempts, delayMs: snoozeMs, note: null };
      }
      return this.#failure(job, task, reason);
    } finally {
      clearTimeout(timer);
    }
  }

  #failure(job: ClaimedJob, task: AnyTask | null, err: unknown): Outcome {
    const permanent = isPermanentError(err);
    const backoff = {
      baseMs: job.backoffBaseMs ?? task?.backoff.baseMs ?? 1_000,
      maxMs: job.backoffMaxMs ?? task?.backoff.maxMs ?? 3_600_000,
    };
    return {
      kind: 'fail',
      id: job.id,
      attempt: job.attempts,
      error: this.#errorEntry(job, err),
      delayMs: backoffDelayMs(job.attempts, backoff),
      permanent,
    };
  }

  #errorEntry(job: ClaimedJob, err: unknown): string {
    const entry: JobErrorEntry = {
      attempt: job.attempts,
      message: errorMessage(err).replaceAll('\u0000', '\\0').slice(0, 10_000),
      at: this.clock.now().toISOString(),
    };
    if (err instanceof Error && err.stack) entry.stack = err.stack.replaceAll('\u0000', '\\0').slice(0, 10_000);
    return JSON.stringify(entry);
  }
}

/** The handler's promise, or a rejection with the signal's reason as soon as it aborts. */
function raceAbort<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err);
      },
    );
  });
}
