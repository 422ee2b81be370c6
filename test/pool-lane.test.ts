/**
 * A lane of a pool (db/pool.ts): the statements and clients on it hold at
 * most its size of the pool's connections at a time. A worker's leader runs
 * its maintenance on a lane of one. Checked on the server's clock: each
 * statement notes when it started and ended there, and no two on a lane of
 * one overlap.
 */
import net from 'node:net';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { Kysely, PostgresDialect, sql } from '../src/db/kysely.js';
import { ConnectTimeoutError, PoolLane, TimedPool } from '../src/db/pool.js';
import { isConnectionError } from '../src/db/errors.js';
import { until, useTestSchema } from './support/harness.js';

const ctx = useTestSchema('pool_lane');

interface Span {
  started: Date;
  ended: Date;
}

const SLOW = `SELECT clock_timestamp() AS started, pg_sleep(0.15)::text AS slept, clock_timestamp() AS ended`;

/** Pairs of spans that overlap in time. */
function overlapping(spans: Span[]): number {
  let n = 0;
  for (const a of spans) for (const b of spans) if (a !== b && a.started < b.started && b.started < a.ended) n += 1;
  return n;
}

describe('a lane of a pool', () => {
  it('admits at most its size at once: a client held on a lane of one holds a statement back, on a lane of two it does not', async () => {
    const one = new PoolLane(ctx.admin, 1);
    const held = await one.connect();
    let answered = false;
    const waiting = one.query({ text: 'SELECT 1 AS n' }).then((r) => {
      answered = true;
      return r;
    });
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(answered).toBe(false);
    held.release();
    expect((await waiting).rows).toEqual([{ n: 1 }]);
    const two = new PoolLane(ctx.admin, 2);
    const first = await two.connect();
    try {
      expect((await two.query({ text: 'SELECT 2 AS n' })).rows).toEqual([{ n: 2 }]);
    } finally {
      first.release();
    }
    // On the server's clock: statements sent at once on a lane of one never overlap.
    const spans = await Promise.all([1, 2, 3].map(async () => (await one.query({ text: SLOW })).rows[0] as Span));
    expect(overlapping(spans)).toBe(0);
  });

  it('gives its place back when a statement fails, and counts a client released twice once', async () => {
    const lane = new PoolLane(ctx.admin, 1);
    await expect(lane.query({ text: 'SELECT 1 / 0' })).rejects.toThrow(/division by zero/);
    expect((await lane.query({ text: 'SELECT 1 AS n' })).rows).toEqual([{ n: 1 }]);
    const client = await lane.connect();
    client.release();
    client.release();
    const spans = await Promise.all([1, 2].map(async () => (await lane.query({ text: SLOW })).rows[0] as Span));
    expect(overlapping(spans)).toBe(0);
  });

  it('serves its waiters in the order they came', async () => {
    const lane = new PoolLane(ctx.admin, 1);
    const order: number[] = [];
    await Promise.all(
      [1, 2, 3, 4].map(async (n) => {
        await lane.query({ text: 'SELECT pg_sleep(0.02)' });
        order.push(n);
      }),
    );
    expect(order).toEqual([1, 2, 3, 4]);
  });

  it('gives its place back when the pool cannot connect', async () => {
    const refused = new pg.Pool({ connectionString: 'postgres://nobody@127.0.0.1:1/none', connectionTimeoutMillis: 2_000 });
    try {
      const lane = new PoolLane(refused, 1);
      await expect(lane.connect()).rejects.toThrow();
      await expect(lane.query({ text: 'SELECT 1' })).rejects.toThrow();
      await expect(lane.connect()).rejects.toThrow();
    } finally {
      await refused.end();
    }
  });

  it('with a wait limit, fails a turn not given within it as a connect would, and serves the next waiter after', async () => {
    const lane = new PoolLane(ctx.admin, 1, 200);
    const held = await lane.connect();
    // A turn that could never come (its holder waits on the waiter's own transaction) waited for ever.
    await expect(lane.query({ text: 'SELECT 1' })).rejects.toBeInstanceOf(ConnectTimeoutError);
    const next = lane.query({ text: 'SELECT 2 AS n' });
    held.release();
    expect((await next).rows).toEqual([{ n: 2 }]);
    expect((await lane.query({ text: 'SELECT 3 AS n' })).rows).toEqual([{ n: 3 }]);
  });

  it('refuses a size below one', () => {
    expect(() => new PoolLane(ctx.admin, 0)).toThrow(/size: must be a whole number of at least 1/);
  });

  it('holds a Kysely transaction on it until it ends: a statement sent meanwhile waits', async () => {
    const lane = new PoolLane(ctx.admin, 1);
    const db = new Kysely<Record<string, never>>({ dialect: new PostgresDialect({ pool: lane }) });
    let inside!: () => void;
    const entered = new Promise<void>((resolve) => (inside = resolve));
    const transaction = db.transaction().execute(async (trx) => {
      const started = (await sql<{ at: Date }>`SELECT clock_timestamp() AS at`.execute(trx)).rows[0]!.at;
      inside();
      await sql`SELECT pg_sleep(0.15)`.execute(trx);
      const ended = (await sql<{ at: Date }>`SELECT clock_timestamp() AS at`.execute(trx)).rows[0]!.at;
      return { started, ended };
    });
    await entered;
    const [span, other] = await Promise.all([transaction, lane.query({ text: SLOW }).then((r) => r.rows[0] as Span)]);
    expect(overlapping([span, other])).toBe(0);
    expect(other.started.getTime()).toBeGreaterThanOrEqual(span.ended.getTime());
  });
});

describe('a timed pool', () => {
  const running = async (tag: string): Promise<number> =>
    Number((await ctx.admin.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1 AND pid <> pg_backend_pid()`, [`%${tag}%`])).rows[0].n);

  it('fails every checkout at once with what pg threw for settings it refuses (a port out of range), past the pool size too', async () => {
    const pool = new pg.Pool({ host: '127.0.0.1', port: 70_000, max: 2 });
    try {
      const timed = new TimedPool(pool, 1_500);
      for (let i = 0; i < 4; i += 1) {
        const started = performance.now();
        const err = await timed.query({ text: 'SELECT 1' }).then(() => null, (e: unknown) => e);
        expect(err, `checkout ${i + 1}`).toBeInstanceOf(RangeError);
        expect(performance.now() - started, `checkout ${i + 1}`).toBeLessThan(1_000);
      }
      await expect(timed.connect()).rejects.toBeInstanceOf(RangeError);
    } finally {
      // Not awaited: pg-pool waits for the clients it failed to connect, which never end.
      void pool.end().catch(() => undefined);
    }
  });

  it('cancels a statement that is only slow: it fails with 57014 and stops on the server; its connection, which a late cancel could still reach, is not reused', async () => {
    const pool = new pg.Pool({ connectionString: ctx.url, max: 1 });
    try {
      const timed = new TimedPool(pool, 300);
      const started = Date.now();
      await expect(timed.query({ text: `SELECT pg_sleep(5) /* slow-${ctx.schema} */` })).rejects.toMatchObject({ code: '57014' });
      expect(Date.now() - started).toBeLessThan(4_000);
      // The error reaches the client just before the server marks the backend idle: looked at for up to two
      // seconds (left running, the statement would show for five).
      await until(async () => (await running(`slow-${ctx.schema}`)) === 0, { what: 'the statement to stop on the server', timeoutMs: 2_000, everyMs: 20 });
      expect(pool.totalCount).toBe(0);
      expect((await timed.query({ text: 'SELECT 7 AS n' })).rows).toEqual([{ n: 7 }]);
      // Through Kysely too.
      const db = new Kysely<Record<string, never>>({ dialect: new PostgresDialect({ pool: timed }) });
      await expect(sql`SELECT pg_sleep(5)`.execute(db)).rejects.toMatchObject({ code: '57014' });
      expect((await sql<{ n: number }>`SELECT 8 AS n`.execute(db)).rows).toEqual([{ n: 8 }]);
    } finally {
      await pool.end();
    }
  });

  it('reads an answer that arrived while the event loop was blocked past the limit: nothing is cancelled, the connection is kept', async () => {
    const pool = new pg.Pool({ connectionString: ctx.url, max: 1 });
    try {
      const timed = new TimedPool(pool, 150);
      const before = (await timed.query({ text: 'SELECT pg_backend_pid() AS pid' })).rows[0].pid as number;
      // Answered after 100 ms, while the loop is blocked from 20 ms to 420 ms: the 150 ms timer is overdue when it runs.
      const answer = timed.query({ text: `SELECT 42 AS n, pg_sleep(0.1)::text AS slept` });
      // (Blocked outside the timers phase, so the next turn runs the overdue timer before it reads the socket.)
      setTimeout(() => {
        setImmediate(() => {
          const blockedUntil = Date.now() + 400;
          while (Date.now() < blockedUntil) {
            // blocked
          }
        });
      }, 20);
      expect((await answer).rows[0]).toMatchObject({ n: 42 });
      // Not cancelled: a connection a cancel was sent on is not reused, and this one is.
      expect((await timed.query({ text: 'SELECT pg_backend_pid() AS pid' })).rows[0].pid).toBe(before);
    } finally {
      await pool.end();
    }
  });

  it('keeps the connection of a deadlock victim or a serialization failure (the transaction ended, the connection is fine) and closes one the server shut', async () => {
    const pool = new pg.Pool({ connectionString: ctx.url, max: 1 });
    const raise = (code: string): string => `DO $$ BEGIN RAISE EXCEPTION 'pgq test' USING ERRCODE = '${code}'; END $$`;
    try {
      const timed = new TimedPool(pool, 10_000);
      const pid = async (): Promise<number> => (await timed.query({ text: 'SELECT pg_backend_pid() AS pid' })).rows[0].pid as number;
      const before = await pid();
      await expect(timed.query({ text: raise('40P01') })).rejects.toMatchObject({ code: '40P01' });
      expect(await pid()).toBe(before);
      const client = await timed.connect();
      await client.query('BEGIN', []);
      await expect(client.query(raise('40001'), [])).rejects.toMatchObject({ code: '40001' });
      await client.query('ROLLBACK', []);
      client.release();
      expect(await pid()).toBe(before);
      // An admin shutdown of that backend (57P01) is a connection lost: not reused.
      await expect(timed.query({ text: 'SELECT pg_terminate_backend(pg_backend_pid())' })).rejects.toThrow();
      expect(await pid()).not.toBe(before);
    } finally {
      await pool.end();
    }
  });

  it('gives up on a new connection that does not answer within the limit (a connection error, tried again by callers), and takes a client that comes later back into the pool', async () => {
    // A server that accepts connections and says nothing (a hung server, a silent proxy).
    const held: net.Socket[] = [];
    const silent = net.createServer((socket) => void held.push(socket.on('error', () => undefined)));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const port = (silent.address() as net.AddressInfo).port;
    const pool = new pg.Pool({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres', max: 2 });
    pool.on('error', () => undefined);
    try {
      const timed = new TimedPool(pool, 300);
      const started = Date.now();
      const err = await timed.query({ text: 'SELECT 1' }).then(() => null, (e: unknown) => e);
      expect(err).toBeInstanceOf(ConnectTimeoutError);
      expect(isConnectionError(err)).toBe(true);
      expect(Date.now() - started).toBeLessThan(3_000);
      await expect(timed.connect()).rejects.toBeInstanceOf(ConnectTimeoutError);
      expect(held.length).toBe(2);
    } finally {
      for (const socket of held) socket.destroy();
      await new Promise<void>((resolve) => silent.close(() => resolve()));
      await pool.end();
    }
    // One idle client and two checkouts in the same tick: the second opens a
    // connection that is never answered, and is given up like any other.
    const forwarded: net.Socket[] = [];
    let quiet = false;
    const halfSilent = net.createServer((socket) => {
      socket.on('error', () => undefined);
      if (quiet) return void held.push(socket);
      const upstream = net.connect(Number(new URL(ctx.url).port || 5432), new URL(ctx.url).hostname);
      upstream.on('error', () => undefined);
      socket.pipe(upstream).pipe(socket);
      forwarded.push(socket, upstream);
    });
    await new Promise<void>((resolve) => halfSilent.listen(0, '127.0.0.1', resolve));
    const through = new URL(ctx.url);
    through.hostname = '127.0.0.1';
    through.port = String((halfSilent.address() as net.AddressInfo).port);
    const half = new pg.Pool({ connectionString: through.toString(), max: 2 });
    half.on('error', () => undefined);
    try {
      const timed = new TimedPool(half, 300);
      expect((await timed.query({ text: 'SELECT 1 AS n' })).rows).toEqual([{ n: 1 }]);
      expect(half.idleCount).toBe(1);
      quiet = true;
      const started = Date.now();
      const both = await Promise.allSettled([timed.query({ text: 'SELECT 2 AS n' }), timed.query({ text: 'SELECT 3 AS n' })]);
      expect(Date.now() - started).toBeLessThan(3_000);
      expect(both.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
      expect(both.filter((r) => r.status === 'rejected').map((r) => (r as PromiseRejectedResult).reason)).toEqual([expect.any(ConnectTimeoutError)]);
    } finally {
      for (const socket of [...held, ...forwarded]) socket.destroy();
      await new Promise<void>((resolve) => halfSilent.close(() => resolve()));
      await half.end();
    }
    // Slow, not silent: a checkout that waits on a busy pool past the limit fails; the client freed later is not lost.
    const busy = new pg.Pool({ connectionString: ctx.url, max: 1 });
    try {
      const timed = new TimedPool(busy, 200);
      const holder = await busy.connect();
      await expect(timed.query({ text: 'SELECT 1' })).rejects.toBeInstanceOf(ConnectTimeoutError);
      holder.release();
      // The abandoned checkout got the client and gave it back: the pool's one client serves again.
      expect((await timed.query({ text: 'SELECT 2 AS n' })).rows).toEqual([{ n: 2 }]);
      expect(busy.totalCount - busy.idleCount).toBe(0);
    } finally {
      await busy.end();
    }
  });

  it('a parameter pg cannot send fails that statement alone: the client goes back once (pg calls back twice), nothing is left checked out', async () => {
    const pool = new pg.Pool({ connectionString: ctx.url, max: 1 });
    try {
      const timed = new TimedPool(pool, 10_000);
      // pg fails the bind at once and calls back again at ReadyForQuery: a second release would crash the process.
      await expect(timed.query({ text: 'SELECT $1::jsonb AS v', values: [{ n: 1n }] })).rejects.toThrow(/BigInt/);
      expect(pool.totalCount - pool.idleCount).toBe(0);
      expect((await timed.query({ text: 'SELECT 1 AS n' })).rows).toEqual([{ n: 1 }]);
    } finally {
      await pool.end();
    }
  });
});
