/**
 * The completer writes the outcome of attempts: succeeded, failed/retryable,
 * snoozed. Outcomes queue up while a write is in flight and go out together,
 * one statement per kind, so at high throughput a statement carries hundreds
 * of jobs. Each outcome's promise resolves once it is written (or dropped).
 *
 * Connection errors keep the batch and retry with a capped backoff until the
 * database answers; a statement error splits the batch so one bad row cannot
 * hold the others back. Every statement is guarded (still running, same
 * attempt), so a retry after a lost reply changes nothing twice.
 */
import type { Logger } from '../core/logger.js';
import { errorMessage, errorSummary } from '../core/errors.js';
import { sleep } from '../core/sleep.js';
import type { SqlExecutor } from '../db/executor.js';
import type { HotStatements } from '../db/statements.js';
import { isConnectionError } from '../db/errors.js';

export type Outcome =
  | { kind: 'complete'; id: string; attempt: number; result: string }
  | { kind: 'fail'; id: string; attempt: number; error: string; delayMs: number; permanent: boolean }
  | { kind: 'snooze'; id: string; attempt: number; delayMs: number; note: string | null };

interface Pending {
  outcome: Outcome;
  resolve: () => void;
}

const MAX_BATCH = 1_000;

export class Completer {
  #pending: Pending[] = [];
  #flushing: Promise<void> | undefined;
  #scheduled = false;
  #giveUpAt = Infinity;

  constructor(
    private readonly db: SqlExecutor,
    private readonly statements: HotStatements,
    private readonly logger: Logger,
    private readonly monotonicMs: () => number,
  ) {}

  /** Queues an outcome; resolves when it is written. */
  record(outcome: Outcome): Promise<void> {
    return new Promise((resolve) => {
      this.#pending.push({ outcome, resolve });
      this.#schedule();
    });
  }

  /** Writes everything queued. After `giveUpAfterMs` of failing writes, drops what is left (the rescuer will retry those jobs). */
  async flush(giveUpAfterMs = Infinity): Promise<void> {
    this.#giveUpAt = this.monotonicMs() + giveUpAfterMs;
    while (this.#pending.length > 0 || this.#flushing) {
      if (!this.#flushing) this.#startDrain();
      await this.#flushing;
    }
  }

  get size(): number {
    return this.#pending.length;
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
      const batch = this.#pending.splice(0, MAX_BATCH);
      await this.#write(batch);
    }
  }

  async #write(batch: Pending[]): Promise<void> {
    let failures = 0;
    for (;;) {
      try {
        await this.#writeOnce(batch.map((p) => p.outcome));
        batch.forEach((p) => p.resolve());
        return;
      } catch (err) {
        failures += 1;
        if (!isConnectionError(err)) {
          if (batch.length > 1) {
            for (const one of batch) await this.#write([one]);
            return;
          }
          this.logger.error({ err: errorSummary(err), jobId: batch[0]?.outcome.id }, `pgq could not record a job outcome: ${errorMessage(err)}`);
          batch.forEach((p) => p.resolve());
          return;
        }
        if (this.monotonicMs() >= this.#giveUpAt) {
          this.logger.error({ err: errorSummary(err), jobs: batch.length }, 'pgq gave up recording job outcomes; the rescuer will retry those jobs');
          batch.forEach((p) => p.resolve());
          return;
        }
        if (failures === 1 || failures % 20 === 0) {
          this.logger.warn({ err: errorSummary(err), jobs: batch.length }, `pgq will retry recording job outcomes: ${errorMessage(err)}`);
        }
        await sleep(Math.min(2_000, 50 * 2 ** Math.min(failures, 6)));
      }
    }
  }

  async #writeOnce(outcomes: Outcome[]): Promise<void> {
    const complete = outcomes.filter((o): o is Extract<Outcome, { kind: 'complete' }> => o.kind === 'complete');
    const fail = outcomes.filter((o): o is Extract<Outcome, { kind: 'fail' }> => o.kind === 'fail');
    const snooze = outcomes.filter((o): o is Extract<Outcome, { kind: 'snooze' }> => o.kind === 'snooze');
    const writes: Promise<void>[] = [];
    if (complete.length > 0) {
      writes.push(
        this.statements.completeJobs(this.db, {
          ids: complete.map((o) => o.id),
          attempts: complete.map((o) => o.attempt),
          results: complete.map((o) => o.result),
        }),
      );
    }
    if (fail.length > 0) {
      writes.push(
        this.statements.failJobs(this.db, {
          ids: fail.map((o) => o.id),
          attempts: fail.map((o) => o.attempt),
          errors: fail.map((o) => o.error),
          delaysMs: fail.map((o) => o.delayMs),
          permanent: fail.map((o) => o.permanent),
        }),
      );
    }
    if (snooze.length > 0) {
      writes.push(
        this.statements.snoozeJobs(this.db, {
          ids: snooze.map((o) => o.id),
          attempts: snooze.map((o) => o.attempt),
          delaysMs: snooze.map((o) => o.delayMs),
          notes: snooze.map((o) => o.note),
        }),
      );
    }
    const results = await Promise.allSettled(writes);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  }
}
