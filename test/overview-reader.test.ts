/**
 * The console's overview snapshots: live states on every read; failed and
 * cancelled jobs (kept for days, so possibly millions) counted again only
 * once the time since their last count is a hundred times what it took (at
 * most five minutes), or after forgetFinished().
 */
import { describe, expect, it } from 'vitest';
import { OverviewReader } from '../src/inspection/queue-stats.js';
import { useTestSchema } from './support/harness.js';

const ctx = useTestSchema('overview_reader');

/** A clock that answers the given times in turn (ms): the reader asks once when it reads, and once more when a count of finished jobs comes back. */
function scriptedClock(times: number[]): () => number {
  return () => {
    const t = times.shift();
    if (t === undefined) throw new Error('the reader asked the clock more often than scripted');
    return t;
  };
}

describe('OverviewReader', () => {
  it('counts failed and cancelled jobs again once a hundred times their last count has passed, or after forgetFinished(); live states every read', async () => {
    const pgq = await ctx.migrated();
    const s = `"${ctx.schema}"`;
    const add = (state: string, n: number): Promise<unknown> =>
      ctx.admin.query(
        `INSERT INTO ${s}.jobs (task, queue, state, attempts, started_at, finished_at)
         SELECT 't', 'q', $1, 1, CASE WHEN $1 <> 'available' THEN now() END, CASE WHEN $1 IN ('failed', 'cancelled') THEN now() END
           FROM generate_series(1, $2::int)`,
        [state, n],
      );
    await add('failed', 2);
    await add('available', 1);
    // First read: counts (nothing counted yet); the count "took" 300 ms, so the next is due at 30,000.
    const reader = new OverviewReader(pgq.kysely, ctx.schema, scriptedClock([0, 300, 10_000, 29_999, 30_000, 30_001, 30_002, 40_000, 40_001]));
    const first = await reader.read();
    expect(first.queues.find((q) => q.queue === 'q')?.counts).toMatchObject({ failed: 2, cancelled: 0, available: 1 });
    expect(first.finishedCountedAt).toEqual(first.at);

    await add('failed', 3);
    await add('cancelled', 1);
    await add('available', 4);
    // At 10,000 and 29,999: the live states are read again, the finished counts are the first read's.
    for (let i = 0; i < 2; i += 1) {
      const reused = await reader.read();
      expect(reused.queues.find((q) => q.queue === 'q')?.counts).toMatchObject({ failed: 2, cancelled: 0, available: 5 });
      expect(reused.finishedCountedAt).toEqual(first.at);
      expect(reused.at.getTime()).toBeGreaterThanOrEqual(first.at.getTime());
    }
    // At 30,000: due; this count "took" 1 ms, so the next is due 100 ms after it was sent.
    const counted = await reader.read();
    expect(counted.queues.find((q) => q.queue === 'q')?.counts).toMatchObject({ failed: 5, cancelled: 1, available: 5 });
    expect(counted.finishedCountedAt).toEqual(counted.at);

    await add('failed', 1);
    // At 30,002: not due (30,100), but forgotten (the console changed something): counted.
    const notDue = await reader.read();
    expect(notDue.queues.find((q) => q.queue === 'q')?.counts.failed).toBe(5);
    reader.forgetFinished();
    const forgotten = await reader.read();
    expect(forgotten.queues.find((q) => q.queue === 'q')?.counts.failed).toBe(6);
  });

  it('counts them again within five minutes however long the last count took', async () => {
    const pgq = await ctx.migrated();
    const s = `"${ctx.schema}"`;
    await ctx.admin.query(`DELETE FROM ${s}.jobs`);
    // The first count "took" 10 s (a hundred times that would be 1,000 s): not counted at 299,999, counted at 300,000.
    const reader = new OverviewReader(pgq.kysely, ctx.schema, scriptedClock([0, 10_000, 299_999, 300_000, 300_001]));
    await reader.read();
    await ctx.admin.query(`INSERT INTO ${s}.jobs (task, queue, state, attempts, finished_at) VALUES ('t', 'q', 'cancelled', 1, now())`);
    expect((await reader.read()).queues.find((q) => q.queue === 'q')?.counts.cancelled ?? 0).toBe(0);
    expect((await reader.read()).queues.find((q) => q.queue === 'q')?.counts.cancelled).toBe(1);
  });

  it('does not keep a count that was out when forgetFinished() was called: the next read counts again', async () => {
    const pgq = await ctx.migrated();
    const s = `"${ctx.schema}"`;
    await ctx.admin.query(`DELETE FROM ${s}.jobs`);
    await ctx.admin.query(`INSERT INTO ${s}.jobs (task, queue, state, attempts, finished_at) VALUES ('t', 'q', 'failed', 1, now())`);
    // Every count "takes" 1,000 ms: without the forget, the second read (at 1,001) would not count.
    const reader = new OverviewReader(pgq.kysely, ctx.schema, scriptedClock([0, 1_000, 1_001, 2_001]));
    const out = reader.read();
    reader.forgetFinished();
    // The count that was out saw the failed job; the console's change (here, a delete) came after.
    expect((await out).queues.find((q) => q.queue === 'q')?.counts.failed).toBe(1);
    await ctx.admin.query(`DELETE FROM ${s}.jobs`);
    const next = await reader.read();
    expect(next.queues.find((q) => q.queue === 'q')?.counts.failed ?? 0).toBe(0);
  });
});
