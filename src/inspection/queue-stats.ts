/**
 * What the console's overview reads, kept cheap enough to run every few
 * seconds on a large table:
 *
 * - `queueSnapshot`: per queue, jobs by state for every state but
 *   `succeeded` (index-only walks of the claim index and of the partial
 *   `jobs_state_queue_idx`, which leaves succeeded rows out), the oldest due
 *   waiting job, the pause
 *   switch and limits (the small `queues` table), and the planner's estimate
 *   of the whole table. Succeeded jobs are counted by
 *   time window in `throughputSeries` instead of all-time.
 * - `throughputSeries`: finished jobs per bucket (succeeded, failed,
 *   cancelled) and the mean wait from due (`run_at`) to start, over the last
 *   hour (1-minute buckets) or day (30-minute buckets), read through the
 *   `state, finished_at` index over finished rows (jobs_state_finished_idx).
 */
import type { Kysely } from 'kysely';
import { sql } from '../db/kysely.js';
import { JOB_STATES, type JobState } from '../core/types.js';
import type { PgqDatabase } from '../db/tables.js';
import type { RateLimit } from '../queues.js';
import { quoteIdent } from '../db/identifiers.js';

/** One queue's live picture. */
export interface QueueSnapshot {
  queue: string;
  /** Jobs by state; `succeeded` is always 0 here (see `throughputSeries`). */
  counts: Record<JobState, number>;
  /** `run_at` of the oldest due job not yet claimed. */
  oldestWaitingRunAt: Date | null;
  /** Queue control (`pgq.queues`): the pause switch and limits; a queue without a row is unlimited and not paused. */
  paused: boolean;
  concurrency: number | null;
  rateLimit: RateLimit | null;
  keyConcurrency: number | null;
}

/** The overview: every queue, and an estimate of the table's size. */
export interface OverviewSnapshot {
  queues: QueueSnapshot[];
  /** Planner estimate of rows in `jobs` (from the last ANALYZE or VACUUM), not an exact count; null before the table's first. */
  estimatedJobs: number | null;
  /** Database time of the snapshot. */
  at: Date;
}

/** Range of a throughput series. */
export type SeriesRange = 'hour' | 'day';

/** One time bucket. */
export interface SeriesPoint {
  at: Date;
  succeeded: number;
  failed: number;
  cancelled: number;
  /** Mean seconds from due to start of the jobs finished in the bucket; null when none finished. */
  meanWaitSeconds: number | null;
}

export interface ThroughputSeries {
  range: SeriesRange;
  bucketSeconds: number;
  points: SeriesPoint[];
}

/** The states counted from jobs_state_queue_idx: all but succeeded (not in it) and available (counted from the claim index). */
const COUNTED_ELSEWHERE = JOB_STATES.filter((s) => s !== 'succeeded' && s !== 'available');

const zeroCounts = (): Record<JobState, number> => Object.fromEntries(JOB_STATES.map((s) => [s, 0])) as Record<JobState, number>;

/**
 * The overview's counts and oldest due jobs, one arm per index, none reading
 * finished rows: waiting jobs and the oldest of them from the claim index;
 * every other state but succeeded from jobs_state_queue_idx; the oldest
 * delayed job already due (a worker serving the queue would have made it
 * available; with none, it is what waits longest, as in pgq.stats() and the
 * metrics) from the future index, reading only those. The oldest found with
 * one condition over both states was a read of the whole table, every poll
 * (250 ms of a million rows). One fixed text per schema (EXPLAIN-tested).
 */
export function overviewCountsQuery(schema: string): string {
  const jobs = `${quoteIdent(schema)}.jobs`;
  return `
    SELECT queue, 'available' AS state, count(*)::int AS n, min(run_at) AS oldest FROM ${jobs} WHERE state = 'available' GROUP BY queue
    UNION ALL
    SELECT queue, state, count(*)::int, NULL FROM ${jobs} WHERE state IN (${COUNTED_ELSEWHERE.map((s) => `'${s}'`).join(', ')}) GROUP BY queue, state
    UNION ALL
    SELECT queue, NULL, 0, min(run_at) FROM ${jobs} WHERE state IN ('scheduled', 'retryable') AND run_at <= now() GROUP BY queue`;
}

export async function queueSnapshot(kysely: Kysely<PgqDatabase>, schema: string): Promise<OverviewSnapshot> {
  const [counted, settings, meta] = await Promise.all([
    sql<{ queue: string; state: JobState | null; n: number; oldest: Date | null }>`${sql.raw(overviewCountsQuery(schema))}`.execute(kysely),
    kysely.selectFrom('queues').select(['name', 'paused', 'concurrency', 'rate_limit', 'rate_period_ms', 'key_concurrency']).execute(),
    sql<{ estimate: number | null; at: Date }>`
      SELECT CASE WHEN reltuples >= 0 THEN reltuples::float8 END AS estimate, now() AS at FROM pg_class
       WHERE oid = to_regclass(${`${quoteIdent(schema)}.jobs`})`.execute(kysely),
  ]);
  const byQueue = new Map<string, QueueSnapshot>();
  const get = (queue: string): QueueSnapshot => {
    let q = byQueue.get(queue);
    if (!q) byQueue.set(queue, (q = { queue, counts: zeroCounts(), oldestWaitingRunAt: null, paused: false, concurrency: null, rateLimit: null, keyConcurrency: null }));
    return q;
  };
  for (const row of counted.rows) {
    const q = get(row.queue);
    if (row.state !== null) q.counts[row.state] = row.n;
    if (row.oldest !== null && (q.oldestWaitingRunAt === null || row.oldest < q.oldestWaitingRunAt)) q.oldestWaitingRunAt = row.oldest;
  }
  for (const row of settings) {
    const q = get(row.name);
    q.paused = row.paused;
    q.concurrency = row.concurrency;
    q.rateLimit = row.rate_limit !== null && row.rate_period_ms !== null ? { limit: row.rate_limit, periodMs: row.rate_period_ms } : null;
    q.keyConcurrency = row.key_concurrency;
  }
  const first = meta.rows[0];
  return {
    queues: [...byQueue.values()].sort((a, b) => a.queue.localeCompare(b.queue)),
    estimatedJobs: first?.estimate == null ? null : Math.round(Number(first.estimate)),
    at: first?.at ?? new Date(),
  };
}

export async function throughputSeries(kysely: Kysely<PgqDatabase>, schema: string, range: SeriesRange, queue?: string): Promise<ThroughputSeries> {
  const bucketSeconds = range === 'hour' ? 60 : 1_800;
  const buckets = range === 'hour' ? 60 : 48;
  const span = bucketSeconds * buckets;
  // Buckets by epoch arithmetic rather than date_bin(), which PostgreSQL 13
  // lacks; in float8 (date_part), not numeric (extract, since PostgreSQL 14):
  // a day of 730,000 finished jobs took 1.3 s in numeric, 0.58 s in float8.
  const seconds = sql.lit(bucketSeconds);
  const result = await sql<{ bucket: Date; state: JobState; n: string; wait: number | null; now_bucket: Date }>`
    WITH bounds AS (
      SELECT to_timestamp(floor(date_part('epoch', now()) / ${seconds}) * ${seconds}) AS now_bucket
    )
    SELECT to_timestamp(floor(date_part('epoch', j.finished_at) / ${seconds}) * ${seconds}) AS bucket,
           j.state, count(*) AS n,
           avg(date_part('epoch', j.started_at - j.run_at)) AS wait,
           b.now_bucket
      FROM bounds b
      JOIN ${sql.id(schema, 'jobs')} j
        ON j.finished_at >= b.now_bucket - make_interval(secs => ${span - bucketSeconds})
       AND j.state IN ('succeeded', 'failed', 'cancelled')
       AND (${queue ?? null}::text IS NULL OR j.queue = ${queue ?? null})
     GROUP BY 1, 2, b.now_bucket`.execute(kysely);
  const nowBucket = result.rows[0]?.now_bucket ?? floorTo(new Date(), bucketSeconds);
  const start = nowBucket.getTime() - (buckets - 1) * bucketSeconds * 1_000;
  const points: (SeriesPoint & { waitSum: number; waitN: number })[] = Array.from({ length: buckets }, (_, i) => ({
    at: new Date(start + i * bucketSeconds * 1_000),
    succeeded: 0,
    failed: 0,
    cancelled: 0,
    meanWaitSeconds: null,
    waitSum: 0,
    waitN: 0,
  }));
  for (const row of result.rows) {
    const point = points[Math.round((row.bucket.getTime() - start) / (bucketSeconds * 1_000))];
    if (!point || !(row.state === 'succeeded' || row.state === 'failed' || row.state === 'cancelled')) continue;
    const n = Number(row.n);
    point[row.state] += n;
    if (row.wait !== null && row.state !== 'cancelled') {
      point.waitSum += Number(row.wait) * n;
      point.waitN += n;
    }
  }
  return {
    range,
    bucketSeconds,
    points: points.map(({ waitSum, waitN, ...p }) => ({ ...p, meanWaitSeconds: waitN ? Math.max(0, waitSum / waitN) : null })),
  };
}

function floorTo(date: Date, seconds: number): Date {
  return new Date(Math.floor(date.getTime() / (seconds * 1_000)) * seconds * 1_000);
}

