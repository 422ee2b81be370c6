/**
 * `ctx.progress(value)`: a handler reports how far it got. The value goes to
 * `jobs.progress`, written like every write of an attempt: only while the job
 * is still `running` for this attempt (`state = 'running' AND attempts = n`),
 * so a late report never touches a rescued, cancelled or finished job.
 *
 * Writes are throttled per attempt: the first report is written at once,
 * later ones at most every `minIntervalMs`; a report inside the interval
 * replaces the pending one, and the last pending value is always written
 * when the interval ends, or before the attempt's outcome, whichever comes
 * first. Reporting never throws for database trouble (it is
 * logged): a handler's work does not fail because a progress bar could not be
 * saved. A bad value (not 0–100, not JSON, too large) throws a ValidationError.
 */
import { ValidationError, errorMessage, errorSummary } from '../core/errors.js';
import { toJsonText } from '../core/json.js';
import type { Logger } from '../core/logger.js';
import type { JobProgress } from '../core/types.js';
import type { Queryable } from '../db/queryable.js';
import { quoteIdent, statementName } from '../db/identifiers.js';
import { retryConflicts } from '../db/transaction.js';

/** Largest progress object, in bytes of JSON. */
export const MAX_PROGRESS_BYTES = 4_096;
/** Default least time between two progress writes of one attempt. */
export const PROGRESS_MIN_INTERVAL_MS = 250;

/** The progress of one attempt. */
export interface ProgressReporter {
  /** `ctx.progress`: resolves once this value (or a later one) was written or given up. */
  report: (value: JobProgress) => Promise<void>;
  /**
   * Writes a value still waiting for its interval now, and resolves once
   * every write is done (never rejects). The attempt's outcome waits for it:
   * written later, the value found the job no longer running and was lost
   * (a handler that returned within 250 ms of its last report kept an
   * earlier one).
   */
  flush: () => Promise<void>;
}

/** Makes the `ctx.progress` of each attempt a worker runs. */
export class ProgressWriter {
  readonly #text: string;
  readonly #name: string;

  constructor(
    private readonly db: Queryable,
    schema: string,
    private readonly logger: Logger,
    private readonly minIntervalMs = PROGRESS_MIN_INTERVAL_MS,
  ) {
    this.#text = `UPDATE ${quoteIdent(schema)}.jobs SET progress = $1::jsonb, progress_at = now()
                  WHERE id = $2 AND state = 'running' AND attempts = $3`;
    this.#name = statementName(schema, 'job_progress', this.#text);
  }

  /** The reporter for one attempt of one job. */
  reporter(jobId: string, attempt: number): ProgressReporter {
    let lastWriteAt = -Infinity;
    let pending: { text: string; waiters: (() => void)[] } | null = null;
    let timer: NodeJS.Timeout | null = null;
    let writing: Promise<void> = Promise.resolve();

    const write = (text: string, waiters: (() => void)[]): void => {
      lastWriteAt = performance.now();
      // Sent again when PostgreSQL ended it with 40001 (or 40P01): under a
      // default isolation of repeatable read, a write that waited for another
      // transaction writing the row (a retry that revives a dependent of this
      // job writes it, a cancel asks for its end) meets a version newer than
      // its snapshot, and it wrote nothing. It sets one value: sent again, it
      // sets the same.
      writing = writing
        .then(() => retryConflicts(() => this.db.query({ name: this.#name, text: this.#text, values: [text, jobId, attempt] })))
        .then(
          () => undefined,
          (err: unknown) =>
            this.logger.warn({ err: errorSummary(err), jobId }, `pgq could not save the progress of job ${jobId}: ${errorMessage(err)}`),
        )
        .finally(() => waiters.forEach((w) => w()));
    };
    const flush = (): void => {
      if (timer) clearTimeout(timer);
      timer = null;
      if (!pending) return;
      const { text, waiters } = pending;
      pending = null;
      write(text, waiters);
    };

    return {
      report: (value: JobProgress) => {
        const text = progressText(value);
        return new Promise<void>((resolve) => {
          const wait = performance.now() - lastWriteAt;
          if (!pending && wait >= this.minIntervalMs) return write(text, [resolve]);
          pending = { text, waiters: [...(pending?.waiters ?? []), resolve] };
          timer ??= setTimeout(flush, Math.max(0, this.minIntervalMs - wait)).unref();
        });
      },
      flush: () => {
        flush();
        return writing;
      },
    };
  }
}

/** The JSON text of a progress value, or a ValidationError saying what is wrong. */
export function progressText(value: unknown): string {
  if (typeof value === 'number') {
    if (!Number.isFinite(value) || value < 0 || value > 100) {
      throw new ValidationError('progress', `a number must be from 0 to 100, got ${String(value)}`);
    }
    return JSON.stringify(value);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new ValidationError('progress', 'must be a number from 0 to 100 or a JSON object such as { done: 3, of: 10 }');
  }
  return toJsonText(value, 'progress', MAX_PROGRESS_BYTES);
}
