/**
 * The transactions behind pgq's own operations on jobs (retry, cancel,
 * delete, their bulk forms, cancelWorkflow). They lock rows in id order, as
 * every statement on jobs does, but a few orders cannot be kept (a retry
 * holds its job before it reaches the other parents of what it revives, a
 * pruner pass takes a whole workflow in id order): PostgreSQL then ends
 * one transaction of the cycle with 40P01. Such a transaction wrote
 * nothing, so it is run again from the start, up to ten times.
 */
import type { Kysely, Transaction } from 'kysely';
import { isTransactionConflict } from './errors.js';
import type { PgqDatabase } from './tables.js';

/** Tries of one operation after deadlocks or serialization failures: under contention (a queue's row that claims update while setQueue saves it) a few are not enough. */
const TRIES = 10;

/** Runs `work` in a transaction, again when PostgreSQL ended the previous try as a deadlock's victim (or a serialization failure's). */
export async function inTransaction<T>(kysely: Kysely<PgqDatabase>, work: (trx: Transaction<PgqDatabase>) => Promise<T>): Promise<T> {
  return retryConflicts(() => kysely.transaction().execute(work));
}

/**
 * Runs `work` (statements each in a transaction of its own, or one
 * transaction), again when PostgreSQL ended it with 40P01 or 40001: a
 * database whose default isolation is repeatable read or serializable ends
 * an upsert that meets a row committed after its snapshot so (two enqueues
 * of one unique key, two setQueue calls), and such a statement wrote
 * nothing. `work` must be safe to run again after any of its statements
 * committed (an enqueue with a unique key finds its own job the second time).
 */
export async function retryConflicts<T>(work: () => Promise<T>): Promise<T> {
  for (let tries = 1; ; tries += 1) {
    try {
      return await work();
    } catch (err) {
      if (tries >= TRIES || !isTransactionConflict(err)) throw err;
      // A short random wait, longer each time, so the tries that conflicted do not meet again in step.
      await new Promise((resolve) => setTimeout(resolve, Math.random() * Math.min(50, 2 ** tries)));
    }
  }
}
