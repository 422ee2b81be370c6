/**
 * What the console's overview reads, kept cheap enough to run every few
 * seconds on a large table:
 *
 * - `OverviewReader`: per queue, jobs by state for every state but
 *   `succeeded` and the oldest due waiting job (`overviewCountsQuery`:
 *   walks of the claim index and of the partial `jobs_state_queue_idx`,
 *   which leave succeeded rows out, and the rows of delayed jobs already
 *   due), the pause switch and limits (the small `queues` table), and the
 *   planner's estimate of the whole table. Failed and cancelled jobs, kept
 *   for days, are counted apart (`finishedCountsQuery`) and less often the
 *   longer counting them takes. Succeeded jobs are counted by time window
 *   in the throughput series instead of all-time.
 * - `throughputReading`: finished jobs per bucket (succeeded, failed, cancelled) and the
 *   mean wait from due (`run_at`) to start, over the last hour (1-minute
 *   buckets) or day (30-minute buckets), read through the `state,
 *   finished_at` index over finished rows (jobs_state_finished_idx).
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
  /** Jobs by state; `succeeded` is always 0 here (see `throughputReading`). */
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
  /** Database time of the failed and cancelled counts: `at` when counted for this snapshot, otherwise when the count reused was made (`OverviewReader`). */
  finishedCountedAt: Date;
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

/** The live states the overview counts from jobs_state_queue_idx: not succeeded (not in it), available (counted from the claim index), failed and cancelled (`finishedCountsQuery`). */
const LIVE_STATE_QUEUE_IDX_STATES = JOB_STATES.filter((s) => s !== 'succeeded' && s !== 'available' && s !== 'failed' && s !== 'cancelled');

const zeroCounts = (): Record<JobState, number> => Object.fromEntries(JOB_STATES.map((s) => [s, 0])) as Record<JobState, number>;

/**
 * The overview's live counts and oldest due jobs, one arm per index, none
 * reading finished rows: waiting jobs and the oldest of them from the claim
 * index; running, delayed and blocked ones from jobs_state_queue_idx; the
 * oldest delayed job already due (a worker serving the queue would have
 * made it available; with none, it is what waits longest, as in
 * pgq.stats() and the metrics) from the future index, reading only those.
 * The oldest found with one condition over both states was a parallel read
 * of the whole table every poll (250 ms of the snapshot's 440 on a million
 * rows). One fixed text per schema (EXPLAIN-tested).
 */
export function overviewCountsQuery(schema: string): string {
  const jobs = `${quoteIdent(schema)}.jobs`;
  return `
    SELECT queue, 'available' AS state, count(*)::int AS n, min(run_at) AS oldest FROM ${jobs} WHERE state = 'available' GROUP BY queue
    UNION ALL
    SELECT queue, state, count(*)::int, NULL FROM ${jobs} WHERE state IN (${LIVE_STATE_QUEUE_IDX_STATES.map((s) => `'${s}'`).join(', ')}) GROUP BY queue, state
    UNION ALL
    SELECT queue, NULL, 0, min(run_at) FROM ${jobs} WHERE state IN ('scheduled', 'retryable') AND run_at <= now() GROUP BY queue`;
}

/**
 * Failed and cancelled jobs by queue, from jobs_state_queue_idx (index-only
 * where the visibility map allows): a walk of every such entry, kept for
 * days (a million failed jobs: 250–310 ms). One row at least, with the
 * database's time (`queue` null when there are none). EXPLAIN-tested.
 */
export function finishedCountsQuery(schema: string): string {
  return `
    SELECT now() AS at, c.queue, c.state, c.n
      FROM (SELECT 1) AS one
      LEFT JOIN (SELECT queue, state, count(*)::int AS n FROM ${quoteIdent(schema)}.jobs
                  WHERE state IN ('failed', 'cancelled') GROUP BY queue, state) AS c ON true`;
}

/**
 * Failed and cancelled jobs are counted again once the time since their last
 * count was sent is this many times what its statement took: every snapshot
 * while it takes up to 20 ms (at the default 2 s interval), every 25–30 s
 * once it takes 250–300 ms (a million failed jobs). Counting them stays
 * under about 1% of a connection's time while a count takes up to 3 s;
 * longer ones come every five minutes all the same.
 */
const FINISHED_COUNT_SPACING = 100;
/** However long the last count took, the next comes within five minutes. */
const FINISHED_COUNT_MAX_AGE_MS = 5 * 60_000;

interface FinishedCount {
  rows: { queue: string; state: JobState; n: number }[];
  /** Database time of the count. */
  at: Date;
}

/** When the last count was sent (this process's clock, ms) and how long its statement took, answered or failed. */
interface CountTry {
  sentAt: number;
  tookMs: number;
}

/** A count that was waiting its turn when forgetFinished() was called: not sent (its readers ask again). */
class SupersededCount extends Error {}

/**
 * The console's overview snapshots (one reader per console process): live
 * states every call, failed and cancelled jobs as often as their cost allows
 * (`FINISHED_COUNT_SPACING`), one count statement at a time. A snapshot
 * that finds the count due waits for it; one that finds a count out uses
 * the last (with none yet, it waits for the one out). `forgetFinished()`
 * makes the next snapshot count them again, once any count still out has
 * ended: the console calls it after every change it makes (a retry or
 * delete of failed jobs shows on that process's next snapshot); one made
 * elsewhere shows when they are counted next. A count that fails (a
 * statement timeout on millions of rows, say) leaves the last count in the
 * snapshot, or with none fails it, and is tried again no sooner than a
 * count that took as long. A count out longer than five minutes is
 * abandoned: the next goes out without waiting for it.
 */
export class OverviewReader {
  #finished: FinishedCount | null = null;
  #lastTry: CountTry | null = null;
  #lastError: unknown = null;
  /** The count out or waiting its turn, the generation it is for, and when it was asked for (this process's clock). */
  #out: { promise: Promise<FinishedCount>; generation: number; askedAt: number } | null = null;
  /** Counts in the order they were asked for, and the newest one kept: an abandoned count that answers late does not replace a newer one. */
  #asked = 0;
  #kept = 0;
  /** Counts up on every forgetFinished(): a count sent before one is not kept. */
  #generation = 0;

  constructor(
    private readonly kysely: Kysely<PgqDatabase>,
    private readonly schema: string,
    private readonly onCountError: (err: unknown) => void = () => undefined,
    private readonly clock: () => number = () => performance.now(),
  ) {}

  forgetFinished(): void {
    this.#finished = null;
    this.#lastTry = null;
    this.#lastError = null;
    this.#generation += 1;
  }

  async read(): Promise<OverviewSnapshot> {
    const [counted, finishedCount, settings, meta] = await Promise.all([
      sql<{ queue: string; state: JobState | null; n: number; oldest: Date | null }>`${sql.raw(overviewCountsQuery(this.schema))}`.execute(this.kysely),
      this.#finishedCount(),
      this.kysely.selectFrom('queues').select(['name', 'paused', 'concurrency', 'rate_limit', 'rate_period_ms', 'key_concurrency']).execute(),
      sql<{ estimate: number | null; at: Date }>`
        SELECT CASE WHEN reltuples >= 0 THEN reltuples::float8 END AS estimate, now() AS at FROM pg_class
         WHERE oid = to_regclass(${`${quoteIdent(this.schema)}.jobs`})`.execute(this.kysely),
    ]);
    const first = meta.rows[0];
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
    for (const row of finishedCount.rows) get(row.queue).counts[row.state] = row.n;
    for (const row of settings) {
      const q = get(row.name);
      q.paused = row.paused;
      q.concurrency = row.concurrency;
      q.rateLimit = row.rate_limit !== null && row.rate_period_ms !== null ? { limit: row.rate_limit, periodMs: row.rate_period_ms } : null;
      q.keyConcurrency = row.key_concurrency;
    }
    return {
      queues: [...byQueue.values()].sort((a, b) => a.queue.localeCompare(b.queue)),
      estimatedJobs: first?.estimate == null ? null : Math.round(Number(first.estimate)),
      at: first?.at ?? new Date(),
      finishedCountedAt: finishedCount.at,
    };
  }

  /** The failed and cancelled counts for a snapshot: the last, or a new one when due (see the class). */
  async #finishedCount(): Promise<FinishedCount> {
    for (;;) {
      const generation = this.#generation;
      const now = this.clock();
      const last = this.#finished;
      const tried = this.#lastTry;
      const due = tried === null || now - tried.sentAt >= Math.min(tried.tookMs * FINISHED_COUNT_SPACING, FINISHED_COUNT_MAX_AGE_MS);
      const out = this.#out !== null && now - this.#out.askedAt < FINISHED_COUNT_MAX_AGE_MS ? this.#out : null;
      let counting: Promise<FinishedCount> | null = null;
      if (out !== null && out.generation === generation) counting = last === null ? out.promise : null;
      else if (due || (last === null && this.#lastError === null)) counting = this.#count(now, out?.promise ?? null);
      if (counting === null) {
        if (last !== null) return last;
        // Not due, and the last try of this generation failed.
        throw this.#lastError;
      }
      try {
        return await counting;
      } catch (err) {
        if (err instanceof SupersededCount) continue;
        if (last === null) throw err;
        this.onCountError(err);
        return last;
      }
    }
  }

  /** Sends a count once `prior` (a count still out) has ended; its statement alone is timed (not the wait for a connection). */
  #count(now: number, prior: Promise<unknown> | null): Promise<FinishedCount> {
    const generation = this.#generation;
    const order = ++this.#asked;
    let tryOf: CountTry | null = null;
    const send = (): Promise<FinishedCount> => {
      if (generation !== this.#generation) throw new SupersededCount('forgotten while it waited for the count before it');
      return this.kysely.connection().execute(async (db) => {
        const sentAt = this.clock();
        try {
          const { rows } = await sql<{ at: Date; queue: string | null; state: JobState | null; n: number | null }>`${sql.raw(finishedCountsQuery(this.schema))}`.execute(db);
          return {
            rows: rows.flatMap((r) => (r.queue !== null && r.state !== null && r.n !== null ? [{ queue: r.queue, state: r.state, n: r.n }] : [])),
            at: rows[0]!.at,
          };
        } finally {
          tryOf = { sentAt, tookMs: this.clock() - sentAt };
        }
      });
    };
    const promise = prior === null ? send() : prior.then(send, send);
    const entry = { promise, generation, askedAt: now };
    this.#out = entry;
    const settle = (count: FinishedCount | null, err: unknown): void => {
      if (this.#out === entry) this.#out = null;
      if (generation !== this.#generation || order < this.#kept) return;
      this.#kept = order;
      if (tryOf !== null) this.#lastTry = tryOf;
      if (count !== null) {
        this.#finished = count;
        this.#lastError = null;
      } else this.#lastError = err;
    };
    promise.then(
      (count) => settle(count, null),
      (err: unknown) => settle(null, err),
    );
    return promise;
  }
}

/** Finished jobs of one bucket and state, and their mean wait: a row of the series query. */
interface SeriesRow {
  /** The bucket's start, epoch ms. */
  bucket: number;
  state: 'succeeded' | 'failed' | 'cancelled';
  n: number;
  wait: number | null;
}

/** A series and what it was built from, for the next reading to reuse (`throughputReading`). */
export interface ThroughputReading {
  series: ThroughputSeries;
  queue: string | null;
  rows: SeriesRow[];
  /** The bucket that was open when it was read, epoch ms. */
  nowBucket: number;
  /** When its oldest reused rows were read from the table (ms, this process's clock). */
  fullAt: number;
}

/** How long a reading's closed buckets are reused before all are read again (jobs retried or deleted since, late commits). */
const SERIES_REUSE_MS = 10 * 60_000;

/**
 * The series, reading only what may have changed since `previous` (same
 * range and queue): the buckets from the one closed last before it was read,
 * the older ones taken from it. A day of a busy table is hundreds of
 * thousands of finished rows (730,000: 580 ms); the console asks again every
 * few seconds while the chart is shown. A closed bucket changes only when
 * finished jobs are retried (no longer finished) or deleted, or an
 * outcome's transaction outlives a bucket: every `SERIES_REUSE_MS` all are
 * read again, and the console reads all after each change made through it
 * (`LiveFeed.forgetSeries`).
 */
export async function throughputReading(
  kysely: Kysely<PgqDatabase>,
  schema: string,
  range: SeriesRange,
  queue: string | null,
  previous: ThroughputReading | null,
  nowMs: number = performance.now(),
): Promise<ThroughputReading> {
  const bucketSeconds = range === 'hour' ? 60 : 1_800;
  const bucketMs = bucketSeconds * 1_000;
  const buckets = range === 'hour' ? 60 : 48;
  const span = bucketSeconds * buckets;
  const reuse = previous !== null && previous.series.range === range && previous.queue === queue && nowMs - previous.fullAt < SERIES_REUSE_MS;
  // Read again from the bucket closed last before the previous reading (an
  // outcome written as it was read may have committed after it).
  const since = reuse ? new Date(previous.nowBucket - bucketMs) : null;
  // Buckets by epoch arithmetic rather than date_bin(), which PostgreSQL 13
  // lacks; in float8 (date_part), not numeric (extract, since PostgreSQL 14):
  // a day of 730,000 finished jobs took 1.3 s in numeric, 0.58 s in float8.
  const seconds = sql.lit(bucketSeconds);
  // One row at least: the open bucket on the database's clock, with or without finished jobs.
  const result = await sql<{ bucket: Date | null; state: JobState | null; n: string | null; wait: number | null; now_bucket: Date }>`
    WITH bounds AS (
      SELECT to_timestamp(floor(date_part('epoch', now()) / ${seconds}) * ${seconds}) AS now_bucket
    )
    SELECT b.now_bucket, f.bucket, f.state, f.n, f.wait
      FROM bounds b
      LEFT JOIN LATERAL (
        SELECT to_timestamp(floor(date_part('epoch', j.finished_at) / ${seconds}) * ${seconds}) AS bucket,
               j.state, count(*) AS n, avg(date_part('epoch', j.started_at - j.run_at)) AS wait
          FROM ${sql.id(schema, 'jobs')} j
         WHERE j.finished_at >= greatest(b.now_bucket - make_interval(secs => ${span - bucketSeconds}), ${since}::timestamptz)
           AND j.state IN ('succeeded', 'failed', 'cancelled')
           AND (${queue}::text IS NULL OR j.queue = ${queue})
         GROUP BY 1, 2
      ) AS f ON true`.execute(kysely);
  const read: SeriesRow[] = [];
  for (const row of result.rows) {
    if (row.bucket !== null && (row.state === 'succeeded' || row.state === 'failed' || row.state === 'cancelled')) {
      read.push({ bucket: row.bucket.getTime(), state: row.state, n: Number(row.n), wait: row.wait === null ? null : Number(row.wait) });
    }
  }
  const nowBucket = result.rows[0]!.now_bucket.getTime();
  const start = nowBucket - (buckets - 1) * bucketMs;
  const rows = since === null ? read : [...previous!.rows.filter((r) => r.bucket >= start && r.bucket < since.getTime()), ...read];
  const points: (SeriesPoint & { waitSum: number; waitN: number })[] = Array.from({ length: buckets }, (_, i) => ({
    at: new Date(start + i * bucketMs),
    succeeded: 0,
    failed: 0,
    cancelled: 0,
    meanWaitSeconds: null,
    waitSum: 0,
    waitN: 0,
  }));
  for (const row of rows) {
    const point = points[Math.round((row.bucket - start) / bucketMs)];
    if (!point) continue;
    point[row.state] += row.n;
    if (row.wait !== null && row.state !== 'cancelled') {
      point.waitSum += row.wait * row.n;
      point.waitN += row.n;
    }
  }
  return {
    series: {
      range,
      bucketSeconds,
      points: points.map(({ waitSum, waitN, ...p }) => ({ ...p, meanWaitSeconds: waitN ? Math.max(0, waitSum / waitN) : null })),
    },
    queue,
    rows,
    nowBucket,
    fullAt: reuse ? previous.fullAt : nowMs,
  };
}

