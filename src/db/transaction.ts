/**
 * The transactions behind pgq's own operations on jobs (retry, cancel,
 * delete, their bulk forms, cancelWorkflow). They lock rows in id order, as
 * every statement on jobs does, but a few orders cannot be kept (a retry
 * holds its job before it reaches the other parents of what it revives, a
 * pruner pass takes a whole workflow in id order): PostgreSQL then ends
 * one transaction of the cycle with 40P01. Such a transaction wrote
 * nothing, so it is run again from the start, a few times.
 */
import type { Kysely, Transaction } from 'kysely';
import { isTransactionConflict } from './errors.js';
import type { PgqDatabase } from './tables.js';

/** Tries of one operation: the first, and two after a deadlock or a serialization failure. */
const TRIES = 3;

/** Runs `work` in a transaction, again when PostgreSQL ended the previous try as a deadlock's victim. */
export async function inTransaction<T>(kysely: Kysely<PgqDatabase>, work: (trx: Transaction<PgqDatabase>) => Promise<T>): Promise<T> {
  for (let tries = 1; ; tries += 1) {
    try {
      return await kysely.transaction().execute(work);
    } catch (err) {
      if (tries >= TRIES || !isTransactionConflict(err)) throw err;
    }
  }
}
