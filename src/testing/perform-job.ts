/**
 * `performJob`: run a task's handler the way a worker would — payload
 * validated by the task's schema, a real context (signal with the task's
 * timeout, logger, snooze, progress, recordMeta), the result checked to be storable JSON — with no
 * database. For unit tests of a handler.
 */
import { pino } from 'pino';
import { JobTimeoutError, PermanentError, errorMessage, optionsArgument } from '../core/errors.js';
import { progressText } from '../worker/progress.js';
import { toJsonText } from '../core/json.js';
import type { JobMeta, JobProgress, JobRecord, Json } from '../core/types.js';
import { MiddlewareChain, RecordedMeta, type Middleware } from '../middleware.js';
import type { Logger } from '../core/logger.js';
import { SnoozeError } from '../core/errors.js';
import { DEFAULTS } from '../core/defaults.js';
import { validatePayload } from '../core/validate-payloads.js';
import type { AnyTask, JobContext, TaskInput, TaskResult } from '../task.js';

/** Options of `performJob`. */
export interface PerformJobOptions {
  /** The attempt number the handler sees (`ctx.attempt`, `ctx.job.attempts`). Default 1. */
  attempt?: number | undefined;
  /** Aborts the handler's `ctx.signal` (besides the task's own timeout). */
  signal?: AbortSignal | undefined;
  /** The handler's `ctx.logger`. Default: a silent logger. */
  logger?: Logger | undefined;
  /** Fields of the job record the handler sees (`ctx.job`), e.g. `{ id: '42', workflowId: '7' }`; one given as undefined keeps its default. */
  job?: { [K in keyof Omit<JobRecord, 'payload'>]?: JobRecord[K] | undefined } | undefined;
  /** The `maxPayloadBytes` of your `new Pgq()`: the largest result (JSON) stored. Default 1 MiB, pgq's. */
  maxPayloadBytes?: number | undefined;
  /**
   * The `middleware` of your `new Pgq()`: their `attempt` hooks run around
   * the handler, first one outermost, as under a worker. Default: none.
   */
  middleware?: readonly Middleware[] | undefined;
}

/**
 * Runs `task`'s handler on `payload` (validated by the task's schema, a
 * ValidationError when it does not match) and resolves with the result as a
 * worker would store it (through JSON). A handler that throws rejects with
 * its error; `ctx.snooze()` rejects with a SnoozeError; the task's
 * `timeoutMs` aborts `ctx.signal` with a JobTimeoutError.
 *
 * @example
 * const result = await performJob(sendEmail, { to: 'a@b.c' });
 * expect(result).toEqual({ sent: true });
 */
export async function performJob<T extends AnyTask>(task: T, payload: TaskInput<T>, options: PerformJobOptions = {}): Promise<TaskResult<T>> {
  optionsArgument(options, 'options', ['attempt', 'signal', 'logger', 'job', 'maxPayloadBytes', 'middleware']);
  const validated = await validatePayload({ schema: task.schema, value: payload, field: 'payload' });
  // As a worker has it: stored as JSON, read back through the schema again
  // (a schema whose output it does not take again, a Date for a string say,
  // fails there: here too).
  // (No size limit here: a worker reads back whatever was stored.)
  const stored = JSON.parse(toJsonText(validated, 'payload', Number.MAX_SAFE_INTEGER)) as unknown;
  let input: unknown;
  try {
    input = await validatePayload({ schema: task.schema, value: stored, field: 'payload' });
  } catch (err) {
    throw new PermanentError(`stored payload no longer matches the schema of task ${task.name} (a worker reads it back from its JSON): ${errorMessage(err)}`, { cause: err });
  }
  // One number, as a worker has it: ctx.attempt and ctx.job.attempts (given either way) are the same.
  const attempt = options.attempt ?? options.job?.attempts ?? 1;
  const now = new Date();
  const defaults: JobRecord = {
    id: '1',
    task: task.name,
    queue: task.queue,
    state: 'running',
    priority: task.priority,
    maxAttempts: task.maxAttempts,
    runAt: now,
    createdAt: now,
    startedAt: now,
    finishedAt: null,
    result: null,
    errors: [],
    uniqueKey: null,
    workerId: null,
    timeoutMs: task.timeoutMs,
    workflowId: null,
    workflowStep: null,
    progress: null,
    progressAt: null,
    cancelRequestedAt: null,
    concurrencyKey: null,
    expiresAt: null,
    meta: {},
    attempts: attempt,
    payload: input,
  };
  // Fields given as undefined keep their defaults. The payload is the one the handler gets, validated by the
  // schema, as a worker gives it (its coercions and defaults applied): it was the stored JSON.
  const given = Object.fromEntries(Object.entries(options.job ?? {}).filter(([, v]) => v !== undefined));
  const job: JobRecord = { ...defaults, ...given, attempts: attempt, payload: input };
  const recorded = new RecordedMeta();
  const controller = new AbortController();
  const onAbort = (): void => controller.abort(options.signal?.reason);
  options.signal?.addEventListener('abort', onAbort, { once: true });
  if (options.signal?.aborted) onAbort();
  // The job's own time limit first, as a worker takes it.
  const timeoutMs = job.timeoutMs ?? task.timeoutMs;
  const timer = timeoutMs ? setTimeout(() => controller.abort(new JobTimeoutError(timeoutMs)), timeoutMs) : undefined;
  const ctx: JobContext = {
    job,
    attempt,
    signal: controller.signal,
    logger: options.logger ?? pino({ level: 'silent' }),
    snooze(delayMs: number): never {
      throw new SnoozeError(delayMs);
    },
    // No database: progress is kept on ctx.job, where a test can read it;
    // a value a worker refuses (a ValidationError, thrown) is refused here too.
    progress(value: JobProgress): Promise<void> {
      progressText(value);
      job.progress = value;
      job.progressAt = new Date();
      return Promise.resolve();
    },
    // Validated as a worker does (one attempt's keys together within the limit),
    // then merged into ctx.job.meta at once (a worker writes them with the outcome).
    recordMeta(key: string, value: Json): void {
      recorded.record(key, value);
      job.meta = { ...job.meta, ...(JSON.parse(recorded.text()) as JobMeta) };
    },
  };
  try {
    // Like a worker: an aborted signal ends the attempt even if the handler ignores it.
    const aborted = new Promise<never>((_resolve, reject) => {
      if (controller.signal.aborted) reject(controller.signal.reason);
      controller.signal.addEventListener('abort', () => reject(controller.signal.reason), { once: true });
    });
    aborted.catch(() => undefined);
    const chain = new MiddlewareChain(options.middleware);
    const result = await Promise.race([chain.attempt(ctx, () => Promise.resolve().then(() => task.handler(input, ctx))), aborted]);
    return JSON.parse(toJsonText(result, 'result', options.maxPayloadBytes ?? DEFAULTS.maxPayloadBytes)) as TaskResult<T>;
  } finally {
    clearTimeout(timer);
    options.signal?.removeEventListener('abort', onAbort);
  }
}
