/**
 * The console's throughput series: finished jobs per bucket by state, and
 * the mean wait from due to start, bucketed on the database's clock.
 */
import { describe, expect, it } from 'vitest';
import { throughputSeries } from '../src/inspection/queue-stats.js';
import { useTestSchema } from './support/harness.js';

const ctx = useTestSchema('throughput_series');

describe('throughputSeries', () => {
  it('counts finished jobs into the bucket their finish falls in, with the mean wait from due to start, per queue or all', async () => {
    const pgq = await ctx.migrated();
    const s = `"${ctx.schema}"`;
    // The rows are placed around the database's current minute: not within 10 s of the next one, so it is still current when read.
    const { rows } = await ctx.admin.query<{ left: number }>(`SELECT 60 - date_part('second', now()) AS left`);
    if (rows[0]!.left < 10) await new Promise((resolve) => setTimeout(resolve, (rows[0]!.left + 0.5) * 1_000));
    // Three succeeded jobs in the bucket before the current one (waits 2, 4 and 6 s, one in another queue), one failed in
    // the current one, one finished exactly at the start of the current bucket, and one before the series' first bucket.
    await ctx.admin.query(`
      WITH b AS (SELECT to_timestamp(floor(date_part('epoch', now()) / 60) * 60) AS cur)
      INSERT INTO ${s}.jobs (task, queue, payload, state, attempts, run_at, started_at, finished_at)
      SELECT 't', v.queue, '{}', v.state, 1, b.cur + v.fin - v.wait - interval '1 s', b.cur + v.fin - interval '1 s', b.cur + v.fin
        FROM b, (VALUES ('a', 'succeeded', interval '-50 s', interval '2 s'),
                        ('a', 'succeeded', interval '-30 s', interval '4 s'),
                        ('b', 'succeeded', interval '-1 s', interval '6 s'),
                        ('a', 'failed', interval '0.5 s', interval '1 s'),
                        ('a', 'cancelled', interval '0 s', interval '1 s'),
                        ('a', 'succeeded', interval '-3600 s', interval '1 s')) AS v(queue, state, fin, wait)`);
    const all = await throughputSeries(pgq.kysely, ctx.schema, 'hour');
    expect(all.bucketSeconds).toBe(60);
    expect(all.points).toHaveLength(60);
    const [previous, current] = all.points.slice(-2);
    expect(current!.at.getTime() - previous!.at.getTime()).toBe(60_000);
    expect(current!.at.getTime() % 60_000).toBe(0);
    expect(previous).toMatchObject({ succeeded: 3, failed: 0, cancelled: 0 });
    expect(previous!.meanWaitSeconds).toBeCloseTo(4, 6);
    expect(current).toMatchObject({ succeeded: 0, failed: 1, cancelled: 1 });
    expect(current!.meanWaitSeconds).toBeCloseTo(1, 6);
    // The job finished an hour before the current bucket began is outside the 60 buckets.
    expect(all.points.reduce((n, p) => n + p.succeeded + p.failed + p.cancelled, 0)).toBe(5);
    expect(all.points.slice(0, -2).every((p) => p.meanWaitSeconds === null)).toBe(true);
    const onlyB = await throughputSeries(pgq.kysely, ctx.schema, 'hour', 'b');
    expect(onlyB.points.at(-2)).toMatchObject({ succeeded: 1, meanWaitSeconds: 6 });
    expect(onlyB.points.reduce((n, p) => n + p.succeeded + p.failed + p.cancelled, 0)).toBe(1);
    const day = await throughputSeries(pgq.kysely, ctx.schema, 'day');
    expect(day.bucketSeconds).toBe(1_800);
    expect(day.points).toHaveLength(48);
    expect(day.points.reduce((n, p) => n + p.succeeded + p.failed + p.cancelled, 0)).toBe(6);
  });
});
