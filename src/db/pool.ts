/**
 * What pgq does with a `pg.Pool` beyond running statements on it: watch its
 * connections for errors, open them ahead of the first work, and run a
 * function in one transaction on one of them.
 */
import type pg from 'pg';
import { ValidationError } from '../core/errors.js';
import { fromPg, type Queryable } from './queryable.js';

/**
 * Sends the connection errors of the pool's clients to `onError`: those of a
 * checked-out client with no query running (a backend terminated between two
 * statements of a transaction: pg emits 'error' on the client, and without a
 * listener the process would crash; the query itself still fails), and with
 * `idle`, those of idle clients (the pool's 'error'). Returns the function
 * that removes every listener this added, from the pool and its clients: a
 * pool pgq was given outlives the `Pgq`.
 */
export function watchConnectionErrors(pool: pg.Pool, onError: (err: Error) => void, options: { idle: boolean }): () => void {
  const clients = new Set<pg.PoolClient>();
  const onConnect = (client: pg.PoolClient): void => {
    clients.add(client);
    client.on('error', onError);
  };
  // A removed client has ended: it keeps its listener, and is no longer ours to clean up.
  const onRemove = (client: pg.PoolClient): void => void clients.delete(client);
  pool.on('connect', onConnect);
  pool.on('remove', onRemove);
  if (options.idle) pool.on('error', onError);
  return () => {
    pool.off('connect', onConnect);
    pool.off('remove', onRemove);
    if (options.idle) pool.off('error', onError);
    for (const client of clients) client.off('error', onError);
    clients.clear();
  };
}

/**
 * Opens `connections` of the pool's connections at once (at most the pool's
 * `max`, which `defaultMax` stands for when the pool has none) and returns
 * them to the pool; rejects with the first connection error.
 */
export async function warmUpPool(pool: pg.Pool, connections: number | undefined, defaultMax: number): Promise<void> {
  if (connections !== undefined && (!Number.isInteger(connections) || connections < 1)) {
    throw new ValidationError('connections', 'must be a whole number of at least 1');
  }
  const max = pool.options.max ?? defaultMax;
  const n = Math.min(connections ?? max, max);
  const opened = await Promise.allSettled(Array.from({ length: n }, () => pool.connect()));
  for (const r of opened) if (r.status === 'fulfilled') r.value.release();
  const failed = opened.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}
