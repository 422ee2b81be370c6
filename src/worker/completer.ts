/**
 * The completer writes the outcome of attempts: succeeded, failed/retryable,
 * snoozed. Outcomes queue up while a write is in flight and go out together,
 * one statement per kind (rows in id order, so batches that touch the same
 * workflow parents lock them in the same order), so at high throughput a
 * statement carries hundreds of jobs. The statements of a batch go out side
 * by side and each settles its own outcomes (and is retried on its own); the
 * next batch goes out once all of them have.
 * Each outcome's promise resolves with
 * what happened to it: written (and the state it left), discarded (the guard
 * found the job no longer running in that attempt) or not recorded.
 *
 * A statement PostgreSQL ended for a serialization failure (40001, under
 * repeatable read) is sent again after a few milliseconds, a few times,
 * quietly. Connection errors keep the batch and retry with a capped backoff
 * until the database takes it. A statement cancelled by `statement_timeout` or
 * `lock_timeout` (another transaction held a row), or for not answering
 * within the worker's limit (TimedPool, db/pool.ts), is sent again in halves,
 * down to one outcome, which is retried like a connection error. Any other
 * error is the statement's: the batch is split so one bad row cannot hold
 * the others back, a success whose result cannot
 * be stored is recorded as a failure saying why, and what still cannot be
 * written is logged once and left to the rescuer — never retried in a loop.
 * Every statement is guarded (still running, same attempt), so a retry after
 * a lost reply changes nothing twice.
 *
 * Backlog: while writes fail or `maxBacklog` or more outcomes wait, the
 * completer is `backlogged` and the producer stops claiming.
 */
import type { Logger } from '../core/logger.js';
import { errorMessage, errorSummary } from '../core/errors.js';
import { sleep } from '../core/sleep.js';
import type { Queryable } from '../db/queryable.js';
import type { HotStatements, WrittenOutcome } from '../db/statements.js';
import { isCancelledByTimeout, isDataException, isSerializationFailure, isTransientError } from '../db/errors.js';

/**
 * What one attempt ended with. `meta`, when present, is JSON text of the keys
 * the attempt recorded (`ctx.recordMeta`), merged into `jobs.meta` by the
 * same statement that writes the outcome.
 */
export type Outcome = (
  | { kind: 'complete'; id: string; attempt: number; result: string }
  | { kind: 'fail'; id: string; attempt: number; error: string; delayMs: number; permanent: boolean }
  | { kind: 'snooze'; id: string; attempt: number; delayMs: number; note: string | null }
) & { meta?: string };

/** What became of one outcome. */
export type RecordResult =
  | { status: 'written'; state: string; outcome: Outcome }
  | { status: 'discarded' }
  | { status: 'not-recorded' };

interface Pending {
  outcome: Outcome;
  /** Resolved: what became of it is known (written, discarded, or not recorded). */
  settled: boolean;
  resolve: (result: RecordResult) => void;
}

const MAX_BATCH = 1_000;
/** Tries of a failing write before a stop's deadline may give it up. */
const MIN_TRIES = 3;
/** Serialization failures (40001) a write is sent again after without a warning, before they count as failures. */
const MAX_QUIET_CONFLICTS = 3;
const NOT_RECORDED: RecordResult = Object.freeze({ status: 'not-recorded' });
const DISCARDED: RecordResult = Object.freeze({ status: 'discarded' });

export class Completer {
  #pending: Pending[] = [];
  /** The batch being written now (taken off #pending). */
  #writing: readonly Pending[] = [];
  #flushing: Promise<void> | undefined;
  #scheduled = false;
  #giveUpAt = Infinity;
  #abandoned = false;
  #failing = false;
  readonly #drainedListeners = new Set<() => void>();
  readonly #writtenListeners = new Set<() => void>();

  constructor(
    private readonly db: Queryable,
    private readonly statements: HotStatements,
    private readonly logger: Logger,
    private readonly monotonicMs: () => number,
    private readonly maxBacklog = 10_000,
    /** Delete jobs that succeed outside workflows instead of keeping them (retention.succeededMs: 0). */
    private readonly deleteSucceeded = false,
  ) {}

  /** Queues an outcome; resolves with what became of it. */
  record(outcome: Outcome): Promise<RecordResult> {
    return new Promise((resolve) => {
      const pending: Pending = {
        outcome,
        settled: false,
        resolve: (result) => {
          pending.settled = true;
          resolve(result);
        },
      };
      this.#pending.push(pending);
      this.#schedule();
    });
  }

  /** True while writes fail or too many outcomes wait: claim nothing more until it clears. */
  get backlogged(): boolean {
    return this.#failing || this.#pending.length >= this.maxBacklog;
  }

  /** Called when a backlog clears. */
  onDrained(listener: () => void): () => void {
    this.#drainedListeners.add(listener);
    return () => this.#drainedListeners.delete(listener);
  }

  /** Called after each batch of outcomes is done: committed (the jobs no longer count as running in the database), or given up. */
  onWritten(listener: () => void): () => void {
    this.#writtenListeners.add(listener);
    return () => this.#writtenListeners.delete(listener);
  }

  /**
   * From now on, a write still failing `giveUpAfterMs` from now is given up
   * (its jobs are left to the rescuer) instead of retried until the database
   * answers: for a stop, whose handlers may still be settling.
   */
  giveUpAfter(giveUpAfterMs: number): void {
    this.#giveUpAt = Math.min(this.#giveUpAt, this.monotonicMs() + giveUpAfterMs);
  }

  /**
   * For a stop out of time: every write that fails from now on is given up
   * at once, without the tries a stop otherwise grants (the rescuer retries
   * those jobs). A write the database answers is still made.
   */
  abandon(): void {
    this.#abandoned = true;
  }

  /** The jobs whose outcomes wait to be written or are being written. */
  unwrittenJobIds(): string[] {
    // Of the batch being written, those not settled yet: its statements settle their own outcomes one by one.
    return [...this.#writing.filter((p) => !p.settled), ...this.#pending].map((p) => p.outcome.id);
  }

  /** Writes everything queued. After `giveUpAfterMs` of failing writes, drops what is left (the rescuer will retry those jobs). */
  async flush(giveUpAfterMs = Infinity): Promise<void> {
    this.#giveUpAt = this.monotonicMs() + giveUpAfterMs;
    while (this.#pending.length > 0 || this.#flushing) {
      if (!this.#flushing) this.#startDrain();
      await this.#flushing;
    }
  }

  #schedule(): void {
    if (this.#flushing || this.#scheduled) return;
    this.#scheduled = true;
    // setImmediate lets the outcomes of one tick share a statement.
    setImmediate(() => {
      this.#scheduled = false;
      if (!this.#flushing && this.#pending.length > 0) this.#startDrain();
    });
  }

  #startDrain(): void {
    this.#flushing = this.#drain().finally(() => {
      this.#flushing = undefined;
      if (this.#pending.length > 0) this.#schedule();
    });
  }

  async #drain(): Promise<void> {
    while (this.#pending.length > 0) {
      const wasBacklogged = this.backlogged;
      const batch = this.#pending.splice(0, MAX_BATCH);
      this.#writing = batch;
      try {
        // One statement per kind of outcome, written side by side as before, each settling its own outcomes:
        // a failure waited for a completion in the same batch held up by another transaction's row lock,
        // its job (promoted meanwhile) claimed again while the worker still held its attempt.
        const kinds = ['complete', 'fail', 'snooze'].map((kind) => batch.filter((p) => p.outcome.kind === kind)).filter((part) => part.length > 0);
        await Promise.all(kinds.map((part) => this.#write(part)));
      } finally {
        this.#writing = [];
      }
      // Written (or split and written one by one, or left to the rescuer): either way this batch is done.
      this.#writtenListeners.forEach((listener) => listener());
      if (wasBacklogged && !this.backlogged) this.#drainedListeners.forEach((listener) => listener());
    }
  }

  async #write(batch: Pending[]): Promise<void> {
    let failures = 0;
    let conflicts = 0;
    for (;;) {
      try {
        const written = await this.#writeOnce(batch.map((p) => p.outcome));
        for (const p of batch) {
          const state = written.get(p.outcome.id);
          p.resolve(state === undefined ? DISCARDED : { status: 'written', state, outcome: p.outcome });
        }
        if (this.#failing) this.logger.info({}, 'pgq is recording job outcomes again');
        this.#failing = false;
        return;
      } catch (err) {
        if (isSerializationFailure(err) && !this.#abandoned && conflicts < MAX_QUIET_CONFLICTS && this.monotonicMs() < this.#giveUpAt) {
          // Under repeatable read PostgreSQL ended the statement for a row
          // another transaction changed since its snapshot (40001; a retry
          // reviving a step writes its parents): it wrote nothing, and is
          // sent again after a moment, without a warning and without
          // holding the producer back. One that keeps coming is handled as
          // any transient error. A deadlock (40P01) still warns: pgq locks
          // in one order, and one is worth seeing.
          conflicts += 1;
          this.logger.debug({ err: errorSummary(err), jobs: batch.length }, `pgq records job outcomes again: ${errorMessage(err)}`);
          await sleep(5 * conflicts);
          continue;
        }
        failures += 1;
        if (batch.length > 1 && !this.#abandoned && isCancelledByTimeout(err)) {
          // Cancelled by statement_timeout or lock_timeout, or for not
          // answering within the worker's limit (TimedPool): smaller
          // statements, not the same one again (a batch too slow for the
          // limit would never pass); one outcome alone is retried.
          const half = Math.ceil(batch.length / 2);
          await this.#write(batch.slice(0, half));
          await this.#write(batch.slice(half));
          return;
        }
        if (!isTransientError(err)) {
          this.#failing = false;
          // Each outcome alone (as it was, first), so one bad row cannot hold the others back.
          if (batch.length > 1) {
            for (const one of batch) await this.#write([one]);
            return;
          }
          await this.#writeInstead(batch[0]!, err);
          return;
        }
        this.#failing = true;
        // A few tries first, even past the deadline: an outcome that settled late in a stop still gets them.
        if (this.#abandoned || (this.monotonicMs() >= this.#giveUpAt && failures >= MIN_TRIES)) {
          const ids = batch.map((p) => p.outcome.id);
          // After a stop gave up on them (abandon), its own line named these jobs already.
          this.logger[this.#abandoned ? 'debug' : 'error'](
            { err: errorSummary(err), jobs: ids },
            `pgq gave up recording the outcomes of jobs ${ids.join(', ')}; the rescuer will retry those jobs`,
          );
          batch.forEach((p) => p.resolve(NOT_RECORDED));
          return;
        }
        if (failures === 1 || failures % 20 === 0) {
          this.logger.warn({ err: errorSummary(err), jobs: batch.length }, `pgq will retry recording job outcomes: ${errorMessage(err)}`);
        }
        await sleep(Math.min(2_000, 50 * 2 ** Math.min(failures, 6)));
      }
    }
  }

  /**
   * One outcome the database refused (not a connection error): logged once.
   * A success or snooze becomes a failure that says why (for good when the
   * database refused a success's result as data); a failure is
   * retried once as a bare message. The fallback leaves out recorded meta
   * keys (they may be what was refused). What still fails is left to the
   * rescuer.
   */
  async #writeInstead(pending: Pending, err: unknown): Promise<void> {
    const { outcome } = pending;
    this.logger.error({ err: errorSummary(err), jobId: outcome.id }, `pgq could not record the ${outcome.kind} of job ${outcome.id}: ${errorMessage(err)}`);
    const message = `pgq could not record this attempt's ${outcome.kind}: ${errorMessage(err)}`.slice(0, 2_000);
    const fallback: Outcome = {
      kind: 'fail',
      id: outcome.id,
      attempt: outcome.attempt,
      error: JSON.stringify({ attempt: outcome.attempt, message, at: new Date().toISOString() }),
      delayMs: outcome.kind === 'fail' ? outcome.delayMs : 1_000,
      // A success whose result the database refused as data (class 22: a value jsonb will not hold) would be
      // refused again: the handler did its work, and another attempt would do it again. Failed for good.
      permanent: outcome.kind === 'fail' ? outcome.permanent : outcome.kind === 'complete' && isDataException(err),
    };
    try {
      const written = await this.#writeOnce([fallback]);
      const state = written.get(outcome.id);
      pending.resolve(state === undefined ? DISCARDED : { status: 'written', state, outcome: fallback });
    } catch (again) {
      this.logger.error({ err: errorSummary(again), jobId: outcome.id }, `pgq could not record any outcome for job ${outcome.id}; the rescuer will retry it once this worker stops: ${errorMessage(again)}`);
      pending.resolve(NOT_RECORDED);
    }
  }

  /**
   * Writes the outcomes, all of one kind (`#drain` splits a batch by kind, so
   * that one statement's failure or wait settles no other's outcomes); returns
   * id → state for each row the guarded statement changed.
   */
  async #writeOnce(unsorted: Outcome[]): Promise<Map<string, string>> {
    const outcomes = [...unsorted].sort((a, b) => compareIds(a.id, b.id));
    const complete = outcomes.filter((o): o is Extract<Outcome, { kind: 'complete' }> => o.kind === 'complete');
    const fail = outcomes.filter((o): o is Extract<Outcome, { kind: 'fail' }> => o.kind === 'fail');
    const snooze = outcomes.filter((o): o is Extract<Outcome, { kind: 'snooze' }> => o.kind === 'snooze');
    // id → state for each row written; filled as each statement answers.
    const written = new Map<string, string>();
    const took = (rows: WrittenOutcome[]): void => {
      for (const row of rows) written.set(String(row.id), row.state);
    };
    const writes: Promise<void>[] = [];
    if (complete.length > 0) {
      const ids = complete.map((o) => o.id);
      const completed = this.statements.completeJobs(this.db, {
        ids,
        attempts: complete.map((o) => o.attempt),
        results: complete.map((o) => o.result),
        metas: complete.map((o) => o.meta ?? null),
        deleteSucceeded: this.deleteSucceeded,
      });
      const done = completed.then(({ skipped, cancelled }) => {
        const notWritten = new Set(skipped);
        const cancelledNow = new Set(cancelled);
        ids.forEach((id, i) => {
          if (!notWritten.has(i + 1)) written.set(id, cancelledNow.has(i + 1) ? 'cancelled' : 'succeeded');
        });
      });
      writes.push(done);
    }
    if (fail.length > 0) {
      const failing = this.statements.failJobs(this.db, {
        ids: fail.map((o) => o.id),
        attempts: fail.map((o) => o.attempt),
        errors: fail.map((o) => o.error),
        delaysMs: fail.map((o) => o.delayMs),
        permanent: fail.map((o) => o.permanent),
        metas: fail.map((o) => o.meta ?? null),
      });
      writes.push(failing.then(took));
    }
    if (snooze.length > 0) {
      const snoozed = this.statements.snoozeJobs(this.db, {
        ids: snooze.map((o) => o.id),
        attempts: snooze.map((o) => o.attempt),
        delaysMs: snooze.map((o) => o.delayMs),
        notes: snooze.map((o) => o.note),
        metas: snooze.map((o) => o.meta ?? null),
      });
      writes.push(snoozed.then(took));
    }
    await Promise.all(writes);
    return written;
  }
}

/** Numeric order of job ids (strings of digits). */
function compareIds(a: string, b: string): number {
  return a.length - b.length || (a < b ? -1 : a > b ? 1 : 0);
}
