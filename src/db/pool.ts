/**
 * What pgq does with a `pg.Pool` beyond running statements on it: watch its
 * connections for errors, open them ahead of the first work, and give one
 * kind of work a lane of its own on it (at most so many of its connections
 * at a time).
 */
import net from 'node:net';
import type pg from 'pg';
import type { PostgresPool, PostgresPoolClient } from 'kysely';
import { ValidationError } from '../core/errors.js';
import { destroyConnection } from './connection.js';
import { isConnectionError, isTransactionConflict, markConnectFailure } from './errors.js';

/** Settings of a `pg.Pool` that are the pool's, not its connections'. */
const POOL_ONLY = ['Client', 'onConnect', 'verify', 'log', 'Promise', 'max', 'min', 'poolSize', 'idleTimeoutMillis', 'maxUses', 'allowExitOnIdle', 'maxLifetimeSeconds'] as const;

/**
 * The connection settings of an application's `pg.Pool`, for the
 * connections pgq opens beside it (LISTEN, the lease thread). pg makes the
 * pool's `password` and its `ssl.key` non-enumerable (kept out of logs), so
 * a spread of `pool.options` leaves them out: those connections then went
 * out without them, and could not log in where the server asks for them.
 */
export function poolClientConfig(pool: pg.Pool): pg.ClientConfig {
  const options = pool.options as pg.ClientConfig;
  const config: pg.ClientConfig = { ...options };
  // The pool's own settings and hooks: no connection's. Functions among them (a pool's
  // onConnect, log or Client) cannot go to a thread, and moved the lease's renewal onto the main thread.
  for (const key of POOL_ONLY) delete (config as Record<string, unknown>)[key];
  if (options.password !== undefined) config.password = options.password;
  if (options.ssl !== null && typeof options.ssl === 'object') {
    const ssl = options.ssl as Record<string, unknown>;
    config.ssl = { ...ssl, ...(ssl.key !== undefined ? { key: ssl.key } : {}) } as pg.ClientConfig['ssl'];
  }
  return config;
}

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
    if (clients.has(client)) return;
    clients.add(client);
    client.on('error', onError);
  };
  // A removed client has ended: it keeps its listener, and is no longer ours to clean up.
  const onRemove = (client: pg.PoolClient): void => void clients.delete(client);
  pool.on('connect', onConnect);
  // And on checkout: a pool the application gave pgq may hold clients opened before (or watched by a Pgq
  // closed since), which no 'connect' reaches; a backend terminated under one crashed the process.
  pool.on('acquire', onConnect);
  pool.on('remove', onRemove);
  if (options.idle) pool.on('error', onError);
  return () => {
    pool.off('connect', onConnect);
    pool.off('acquire', onConnect);
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
 * Statements on `pool` that a connection which died without a word (a
 * dropped NAT or firewall entry, a host gone: no FIN, no RST) cannot hold
 * for longer than `answerWithinMs` plus a grace. Without it a statement
 * sent on such a connection waits until TCP gives up (minutes to hours),
 * and a checked-out client holds `pool.end()` as long. A statement that has
 * not answered in time (checked every quarter of the limit, at most every
 * second, by one timer for all statements in flight):
 *
 * 1. gets one more turn of the event loop's poll phase first: after a
 *    blocked loop its answer may be waiting unread, and timers run before
 *    sockets are read;
 * 2. is cancelled on the server (PostgreSQL's CancelRequest, on a
 *    connection of its own), so a statement that is only slow stops, and
 *    rolls back, instead of committing after it was given up: its
 *    connection then answers with 57014, which the caller handles as a
 *    statement_timeout (and is closed when released: a cancel still on its
 *    way must not hit the next statement sent on it);
 * 3. if the connection still says nothing `graceMs` later, it is dead: its
 *    socket is destroyed and the statement fails with a
 *    `SilentConnectionError` (a connection error: sent again on another).
 *
 * A statement's own `query_timeout` (see `Statement.timeoutMs`) replaces
 * `answerWithinMs` for it. A worker's claims, outcomes and maintenance run
 * on one. Usable as Kysely's PostgresDialect pool and, through `fromPg`,
 * as a Queryable.
 */
export class TimedPool implements PostgresPool, LanePool {
  /** Statements in flight. One sweep timer watches them all: a timer and promises per statement cost the hot path memory (about 6 MiB of peak RSS in a 20,000-job drain). */
  readonly #watches = new Set<Watch>();
  /** Checkouts waiting for a client (see #checkout). */
  readonly #checkouts = new Set<Checkout>();
  #sweeper: NodeJS.Timeout | undefined;
  /** What the pool's `connect` threw at once, if it ever did (see #checkout). */
  #refused: unknown;
  #sweepingEvery = Infinity;

  constructor(
    private readonly pool: pg.Pool,
    readonly answerWithinMs: number,
  ) {}

  /** One statement on one of the pool's connections. */
  query(config: pg.QueryConfig): Promise<pg.QueryResult> {
    const { query_timeout: own, ...rest } = config as pg.QueryConfig & { query_timeout?: number };
    const withinMs = own ?? this.answerWithinMs;
    return new Promise((resolve, reject) => {
      // Callbacks from the checkout to the answer: an idle worker woken for
      // one job waits on this path, and every promise between the pool and
      // the statement is a turn of the microtask queue on it.
      this.#checkout(withinMs, (failed, client) => {
        if (!client) return reject(failed);
        client.on('error', ignore);
        const watch = this.#watch(client, withinMs);
        // The callback form, so the client is back in the pool before anything
        // awaiting this runs (as under pool.query): released a turn later, the
        // next statement would find no idle client and open another connection.
        let settled = false;
        const settle = (caught: Error | undefined, result?: pg.QueryResult, release: unknown = caught): void => {
          // pg may call back twice (a parameter it cannot serialise: once with
          // the error, again at ReadyForQuery); the client was released already.
          if (settled) return;
          settled = true;
          this.#watches.delete(watch);
          const err = caught && watch.silent ? new SilentConnectionError(watch.withinMs, watch.graceMs) : caught;
          try {
            this.#release(client, err === caught ? release : err);
          } catch {
            // never thrown back into pg's socket handlers
          }
          if (err) reject(err);
          else resolve(result!);
        };
        try {
          client.query(rest as pg.QueryConfig, (caught: Error | undefined, result: pg.QueryResult) => settle(caught ?? undefined, result));
        } catch (err) {
          // Thrown before or while it was sent: the connection may hold half a statement, so it is closed.
          settle(err instanceof Error ? err : new Error(String(err)), undefined, true);
        }
      });
    });
  }

  /** A client of the pool whose statements are watched the same way; one whose connection failed is closed when released. */
  async connect(): Promise<PostgresPoolClient> {
    const client = await new Promise<pg.PoolClient>((resolve, reject) => this.#checkout(this.answerWithinMs, (err, got) => (got ? resolve(got) : reject(err))));
    client.on('error', ignore);
    let failed: unknown;
    let released = false;
    const query = async (text: string, values?: readonly unknown[]): Promise<pg.QueryResult> => {
      // A connection that broke fails what comes after with what broke it:
      // the ROLLBACK a transaction sends then would otherwise report only
      // that the connection is closed, in place of why.
      if (failed !== undefined) throw failed;
      const watch = this.#watch(client, this.answerWithinMs);
      try {
        return await client.query(text, values as unknown[] | undefined);
      } catch (caught) {
        const err = watch.silent ? new SilentConnectionError(watch.withinMs, watch.graceMs) : caught;
        if (brokeConnection(err)) failed = err;
        throw err;
      } finally {
        this.#watches.delete(watch);
      }
    };
    return {
      query: query as unknown as PostgresPoolClient['query'],
      release: (err?: Error | boolean) => {
        if (released) return;
        released = true;
        this.#release(client, err instanceof Error ? err : failed);
      },
    };
  }

  /**
   * A client of the pool within `withinMs`: a new connection to a server
   * that accepts it and then says nothing (a hung server, a silent proxy)
   * would otherwise be waited for without end, and so would everything
   * behind it (a worker's stop). Fails with a ConnectTimeoutError (a
   * connection error: the caller tries again), or with the error the
   * connection failed with, which counts as a connection error whatever its
   * code (see markConnectFailure); a client that comes later
   * goes back to the pool. Watched by the statements' sweep, not a timer of
   * its own (an idle client is handed over a tick later, and may by then
   * have gone to another checkout: every checkout is watched).
   */
  #checkout(withinMs: number, done: (err: unknown, client?: pg.PoolClient) => void): void {
    if (this.#refused !== undefined) return done(this.#refused);
    const checkout: Checkout = {
      deadline: performance.now() + withinMs,
      late: false,
      fail: () => {
        checkout.late = true;
        this.#checkouts.delete(checkout);
        done(new ConnectTimeoutError(withinMs));
      },
    };
    this.#checkouts.add(checkout);
    this.#sweepAtLeastEvery(sweepFor(withinMs));
    try {
      this.pool.connect((err: Error | undefined, client: pg.PoolClient | undefined) => {
        this.#checkouts.delete(checkout);
        if (err || !client) {
          if (!checkout.late) done(markConnectFailure(err ?? new Error('the pool gave no client')));
        } else if (checkout.late) client.release();
        else done(undefined, client);
      });
    } catch (err) {
      // Thrown before any connection was tried (settings pg refuses, such as
      // a port out of range): said as it is, and at once to every later
      // checkout, as the settings do not change. pg-pool counts the client
      // it failed to connect as one of its own: after `max` of them it
      // would hold every later checkout until its deadline and fail it
      // with a ConnectTimeoutError, the cause lost.
      this.#checkouts.delete(checkout);
      this.#refused = err;
      done(err);
    }
  }

  /** The pool is not this wrapper's to end. */
  async end(): Promise<void> {}

  #watch(client: pg.PoolClient, withinMs: number): Watch {
    const watch: Watch = { client, withinMs, graceMs: graceFor(withinMs), deadline: performance.now() + withinMs, cancelled: false, silent: false };
    this.#watches.add(watch);
    this.#sweepAtLeastEvery(sweepFor(withinMs));
    return watch;
  }

  /** A statement or checkout with a shorter limit of its own is swept at its own pace. */
  #sweepAtLeastEvery(every: number): void {
    if (!this.#sweeper || every < this.#sweepingEvery) {
      clearInterval(this.#sweeper);
      this.#sweeper = setInterval(() => this.#sweep(), every);
      this.#sweeper.unref();
      this.#sweepingEvery = every;
    }
  }

  #sweep(): void {
    const now = performance.now();
    for (const checkout of this.#checkouts) if (now >= checkout.deadline) checkout.fail();
    if (this.#watches.size === 0 && this.#checkouts.size === 0) {
      clearInterval(this.#sweeper);
      this.#sweeper = undefined;
      this.#sweepingEvery = Infinity;
      return;
    }
    for (const watch of this.#watches) {
      // Overdue by the clock. After a blocked event loop the answer may be
      // waiting unread (timers run before sockets are read): the poll phase
      // gets its turn first.
      if (!watch.cancelled && now >= watch.deadline) setImmediate(() => this.#overdue(watch));
    }
  }

  #overdue(watch: Watch): void {
    if (!this.#watches.has(watch) || watch.cancelled) return;
    watch.cancelled = true;
    sendCancel(watch.client, watch.graceMs);
    // A cancel may still be on its way when the statement ends: the connection
    // must not carry another statement it could hit, so it is closed on release.
    cancelled.add(watch.client);
    const timer = setTimeout(() => {
      setImmediate(() => {
        if (!this.#watches.has(watch)) return;
        watch.silent = true;
        destroyConnection(watch.client); // pg then fails the statement; it is reported as SilentConnectionError
      });
    }, watch.graceMs);
    timer.unref();
  }

  /** Back to the pool, unless its connection failed, a cancel was sent on it, or `err` is true: then closed. */
  #release(client: pg.PoolClient, err: unknown): void {
    client.off('error', ignore);
    if (err === true || brokeConnection(err)) client.release(err instanceof Error ? err : true);
    else if (cancelled.delete(client)) client.release(true);
    else client.release();
  }
}

/**
 * Whether a statement's error leaves its connection unfit to reuse. A
 * deadlock victim or a serialization failure (worth running again, so a
 * connection error to the callers that retry) ended its transaction on a
 * connection that is fine: it goes back to the pool.
 */
function brokeConnection(err: unknown): boolean {
  return isConnectionError(err) && !isTransactionConflict(err);
}

/** How long a connection has to answer a cancel before it counts as dead. */
function graceFor(withinMs: number): number {
  return Math.min(5_000, Math.max(1_000, withinMs));
}

/** How often statements with this limit are looked at: a quarter of it, between 50 ms and 1 s. */
function sweepFor(withinMs: number): number {
  return Math.max(50, Math.min(1_000, Math.floor(withinMs / 4)));
}

/** A TimedPool's wait for a client of its pool. */
interface Checkout {
  /** performance.now() past which it fails. */
  deadline: number;
  /** It failed: a client that comes after goes back to the pool. */
  late: boolean;
  fail(): void;
}

/** A statement in flight on a TimedPool. */
interface Watch {
  client: pg.PoolClient;
  withinMs: number;
  graceMs: number;
  /** performance.now() past which it is overdue. */
  deadline: number;
  cancelled: boolean;
  /** Its connection answered neither it nor its cancel, and was destroyed. */
  silent: boolean;
}

/** Connections on which a cancel was sent: closed when released. */
const cancelled = new WeakSet<pg.PoolClient>();

/**
 * PostgreSQL's CancelRequest for the statement `client` runs, on a socket of
 * its own (16 bytes: length, the cancel code, the backend's pid and secret
 * key). The server reads it, signals the backend and closes the socket; one
 * that does not within `graceMs` is closed here. Sent in the clear, as pg and
 * libpq do by default.
 */
function sendCancel(client: pg.PoolClient, graceMs: number): void {
  const c = client as unknown as { processID?: number | null; secretKey?: number | null; host?: string; port?: number };
  if (typeof c.processID !== 'number' || typeof c.secretKey !== 'number' || !c.host || !c.port) return;
  const packet = Buffer.alloc(16);
  packet.writeInt32BE(16, 0);
  packet.writeInt32BE(80877102, 4);
  packet.writeInt32BE(c.processID, 8);
  packet.writeInt32BE(c.secretKey, 12);
  const socket = c.host.startsWith('/') ? net.connect(`${c.host}/.s.PGSQL.${c.port}`) : net.connect(c.port, c.host);
  socket.on('error', ignore);
  socket.setTimeout(graceMs, () => socket.destroy());
  socket.once('connect', () => socket.end(packet));
  socket.unref();
}

/** A statement whose connection answered neither it nor its cancel in time: the connection was closed. */
export class SilentConnectionError extends Error {
  constructor(answerWithinMs: number, graceMs: number) {
    super(`the database connection did not answer within ${answerWithinMs} ms, nor a cancel of the statement ${graceMs} ms after; it was closed (connection lost without a word?)`);
    this.name = 'SilentConnectionError';
  }
}

/** No connection of the pool could be had in time: none was free, and a new one did not answer. */
export class ConnectTimeoutError extends Error {
  constructor(withinMs: number) {
    super(`no database connection within ${withinMs} ms: none of the pool's was free and a new one did not answer (connection timed out)`);
    this.name = 'ConnectTimeoutError';
  }
}

function ignore(): void {}

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

  /**
   * `waitMs`: how long a statement or checkout waits for a turn before it
   * fails with a ConnectTimeoutError, as a pool's checkout would (default:
   * as long as it takes). A lane whose work waits on other transactions
   * needs one: its turns held by statements waiting for a transaction that
   * itself waits for a turn never come back.
   */
  constructor(
    private readonly pool: LanePool,
    size: number,
    private readonly waitMs = Infinity,
  ) {
    if (!Number.isInteger(size) || size < 1) throw new ValidationError('size', 'must be a whole number of at least 1');
    this.#free = size;
  }

  async #acquire(): Promise<void> {
    if (this.#free > 0) {
      this.#free -= 1;
      return;
    }
    if (!Number.isFinite(this.waitMs)) return new Promise<void>((resolve) => this.#waiting.push(resolve));
    await new Promise<void>((resolve, reject) => {
      const turn = (): void => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        this.#waiting.splice(this.#waiting.indexOf(turn), 1);
        reject(new ConnectTimeoutError(this.waitMs));
      }, this.waitMs);
      this.#waiting.push(turn);
    });
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
