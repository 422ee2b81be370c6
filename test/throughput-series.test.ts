/**
 * The console's throughput series: finished jobs per bucket by state, and
 * the mean wait from due to start, bucketed on the database's clock.
 */
import { describe, expect, it } from 'vitest';
import { throughputReading, type SeriesRange } from '../src/inspection/queue-stats.js';
import { useTestSchema } from './support/harness.js';

const ctx = useTestSchema('throughput_series');

/** The series read whole (no previous reading to reuse). */
const throughputSeries = async (pgq: { kysely: Parameters<typeof throughputReading>[0] }, range: SeriesRange, queue?: string) =>
  (await throughputReading(pgq.kysely, ctx.schema, range, queue ?? null, null)).series;

describe('throughputReading', () => {
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
    const all = await throughputSeries(pgq, 'hour');
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
    const onlyB = await throughputSeries(pgq, 'hour', 'b');
    expect(onlyB.points.at(-2)).toMatchObject({ succeeded: 1, meanWaitSeconds: 6 });
    expect(onlyB.points.reduce((n, p) => n + p.succeeded + p.failed + p.cancelled, 0)).toBe(1);
    const day = await throughputSeries(pgq, 'day');
    expect(day.bucketSeconds).toBe(1_800);
    expect(day.points).toHaveLength(48);
    expect(day.points.reduce((n, p) => n + p.succeeded + p.failed + p.cancelled, 0)).toBe(6);
  });

  it('reads again only the buckets from the one closed last before the previous reading, and all of them after ten minutes', async () => {
    const pgq = await ctx.migrated();
    const s = `"${ctx.schema}"`;
    await ctx.admin.query(`DELETE FROM ${s}.jobs`);
    const { rows } = await ctx.admin.query<{ left: number }>(`SELECT 60 - date_part('second', now()) AS left`);
    if (rows[0]!.left < 10) await new Promise((resolve) => setTimeout(resolve, (rows[0]!.left + 0.5) * 1_000));
    const finish = (ago: string, queue = 'a') =>
      ctx.admin.query(
        `INSERT INTO ${s}.jobs (task, queue, payload, state, attempts, run_at, started_at, finished_at)
         SELECT 't', $1, '{}', 'succeeded', 1, t - interval '2 s', t - interval '1 s', t
           FROM (SELECT to_timestamp(floor(date_part('epoch', now()) / 60) * 60) + interval '1 s' - $2::interval AS t) AS at`,
        [queue, ago],
      );
    await finish('0 s');
    await finish('10 min');
    const first = await throughputReading(pgq.kysely, ctx.schema, 'hour', null, null, 0);
    const total = (r: { series: { points: { succeeded: number }[] } }) => r.series.points.reduce((n, p) => n + p.succeeded, 0);
    expect(total(first)).toBe(2);
    // A job finished now is read; one written into a bucket closed before (rows of another process's long transaction, say) is not, yet.
    await finish('0 s');
    await finish('1 min');
    await finish('20 min');
    const second = await throughputReading(pgq.kysely, ctx.schema, 'hour', null, first, 60_000);
    expect(second.series.points.at(-1)!.succeeded).toBe(2);
    expect(second.series.points.at(-2)!.succeeded).toBe(1);
    expect(total(second)).toBe(4);
    expect(second.fullAt).toBe(0);
    // Another queue's reading, or the other range, is read whole.
    expect(total(await throughputReading(pgq.kysely, ctx.schema, 'hour', 'a', first, 60_000))).toBe(5);
    expect(total(await throughputReading(pgq.kysely, ctx.schema, 'day', null, first, 60_000))).toBe(5);
    // Ten minutes after the last full reading, every bucket is read again.
    const third = await throughputReading(pgq.kysely, ctx.schema, 'hour', null, second, 600_001);
    expect(total(third)).toBe(5);
    expect(third.fullAt).toBe(600_001);
    expect(third.series).toEqual(await throughputSeries(pgq, 'hour'));
  });
});
