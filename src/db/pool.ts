/**
 * What pgq does with a `pg.Pool` beyond running statements on it: watch its
 * connections for errors, open them ahead of the first work, and give one
 * kind of work a lane of its own on it (at most so many of its connections
 * at a time).
 */
import type pg from 'pg';
import type { PostgresPool, PostgresPoolClient } from 'kysely';
import { ValidationError } from '../core/errors.js';
import { destroyConnection } from './connection.js';
import { isConnectionError, isReadTimeout } from './errors.js';

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

/** What a `PoolLane` runs on: a `pg.Pool`, or a `TimedPool` over one. */
export interface LanePool {
  query(config: pg.QueryConfig): Promise<pg.QueryResult>;
  connect(): Promise<{ query: PostgresPoolClient['query']; release(err?: Error | boolean): void }>;
}

/**
 * Statements on `pool` that stop waiting for an answer after `readTimeoutMs`
 * (or a statement's own `query_timeout`): the statement fails with pg's
 * "Query read timeout" and the connection it was sent on is closed, socket
 * and all, rather than reused. A connection that died without a word (a
 * dropped NAT entry, a host gone: no FIN, no RST) would otherwise hold its
 * statement, and a checked-out client would hold `pool.end()`, until TCP
 * gives up, which takes minutes to hours. A worker's claims, outcomes and
 * maintenance run on one. Usable as Kysely's PostgresDialect pool and,
 * through `fromPg`, as a Queryable.
 */
export class TimedPool implements PostgresPool, LanePool {
  constructor(
    private readonly pool: pg.Pool,
    readonly readTimeoutMs: number,
  ) {}

  /** One statement on one of the pool's connections. */
  async query(config: pg.QueryConfig): Promise<pg.QueryResult> {
    const client = await this.pool.connect();
    try {
      const result = await client.query(this.#timed(config));
      client.release();
      return result;
    } catch (err) {
      this.#releaseAfter(client, err);
      throw err;
    }
  }

  /** A client of the pool whose statements are timed the same way; one that timed out is closed when released. */
  async connect(): Promise<PostgresPoolClient> {
    const client = await this.pool.connect();
    let failed: unknown;
    let released = false;
    const query = async (text: string, values?: readonly unknown[]): Promise<pg.QueryResult> => {
      try {
        return await client.query(this.#timed({ text, values: values as unknown[] | undefined }));
      } catch (err) {
        if (isConnectionError(err)) failed = err;
        throw err;
      }
    };
    return {
      query: query as unknown as PostgresPoolClient['query'],
      release: (err?: Error | boolean) => {
        if (released) return;
        released = true;
        this.#releaseAfter(client, err instanceof Error ? err : failed);
      },
    };
  }

  /** The pool is not this wrapper's to end. */
  async end(): Promise<void> {}

  #timed(config: pg.QueryConfig): pg.QueryConfig {
    // pg reads query_timeout from a query's config; its types omit it.
    const timed = config as pg.QueryConfig & { query_timeout?: number };
    return { ...timed, query_timeout: timed.query_timeout ?? this.readTimeoutMs } as pg.QueryConfig;
  }

  /** Back to the pool, unless the connection failed: then closed (and one that stopped answering, at once). */
  #releaseAfter(client: pg.PoolClient, err: unknown): void {
    if (!isConnectionError(err)) {
      client.release();
      return;
    }
    client.release(err instanceof Error ? err : true);
    if (isReadTimeout(err)) destroyConnection(client);
  }
}

/**
 * A lane on `pool`: statements and checked-out clients that together hold
 * at most `size` of its connections at a time; the rest wait their turn, in
 * order. A worker's maintenance (the leader's rescuer, expirer, orphan
 * report and pruner) runs on one, so its passes queue behind each other
 * instead of opening a connection each, all at once at the worker's start,
 * beside the claims.
 * Usable as Kysely's PostgresDialect pool and, through `fromPg`, as a
 * Queryable. Work on a lane must not wait on more of the same lane: a
 * transaction's statements run on its client.
 */
export class PoolLane implements PostgresPool {
  #free: number;
  readonly #waiting: (() => void)[] = [];

  constructor(
    private readonly pool: LanePool,
    size: number,
  ) {
    if (!Number.isInteger(size) || size < 1) throw new ValidationError('size', 'must be a whole number of at least 1');
    this.#free = size;
  }

  async #acquire(): Promise<void> {
    if (this.#free > 0) {
      this.#free -= 1;
      return;
    }
    await new Promise<void>((resolve) => this.#waiting.push(resolve));
  }

  #release(): void {
    const next = this.#waiting.shift();
    if (next) next();
    else this.#free += 1;
  }

  /** One statement on one of the lane's connections. */
  async query(config: pg.QueryConfig): Promise<pg.QueryResult> {
    await this.#acquire();
    try {
      return await this.pool.query(config);
    } finally {
      this.#release();
    }
  }

  /** A client of the pool, counted against the lane until it is released. */
  async connect(): Promise<PostgresPoolClient> {
    await this.#acquire();
    let client: Awaited<ReturnType<LanePool['connect']>>;
    try {
      client = await this.pool.connect();
    } catch (err) {
      this.#release();
      throw err;
    }
    let released = false;
    return {
      query: client.query.bind(client),
      release: (err?: Error | boolean) => {
        if (released) return;
        released = true;
        try {
          client.release(err);
        } finally {
          this.#release();
        }
      },
    } as PostgresPoolClient;
  }

  /** The pool is not the lane's to end. */
  async end(): Promise<void> {}
}
