/**
 * A lane of a pool (db/pool.ts): the statements and clients on it hold at
 * most its size of the pool's connections at a time. A worker's leader runs
 * its maintenance on a lane of one. Checked on the server's clock: each
 * statement notes when it started and ended there, and no two on a lane of
 * one overlap.
 */
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { Kysely, PostgresDialect, sql } from '../src/db/kysely.js';
import { PoolLane } from '../src/db/pool.js';
import { useTestSchema } from './support/harness.js';

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
