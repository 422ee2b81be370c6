import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { PermanentError, defineTask } from '../src/index.js';
import { PgqMetrics } from '../src/metrics.js';
import { liveStatsQuery } from '../src/db/live-stats.js';
import { finishedCountsQuery, overviewCountsQuery } from '../src/inspection/queue-stats.js';
import { deferred, useTestSchema } from './support/harness.js';

const ctx = useTestSchema('metrics');

const work = defineTask({
  name: 'work',
  schema: z.object({ fail: z.boolean() }),
  queue: 'm',
  maxAttempts: 1,
  handler: ({ fail }) => {
    if (fail) throw new PermanentError('no');
    return 1;
  },
});

function value(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  if (!line) throw new Error(`no series ${series} in:\n${text}`);
  return Number(line.slice(series.length + 1));
}

describe('Prometheus metrics', () => {
  it('counts enqueues, outcomes, durations and waits per task, and reads live queue depth', async () => {
    const pgq = await ctx.migrated({ tasks: [work] });
    const metrics = new PgqMetrics(pgq, { host: 'box-1' });
    await pgq.enqueue(work, { fail: false }, { queue: 'later', delayMs: 60_000 });
    // Due a minute before the worker starts: each waits at least 60 s. Delayed ones wait from their run_at only.
    const late = await pgq.enqueueMany(work, [{ fail: false }, { fail: false }], { runAt: new Date(Date.now() - 120_000) });
    const delayed = await pgq.enqueueMany(work, [{ fail: false }, { fail: true }], { delayMs: 300 });
    const worker = pgq.worker({ queues: ['m'], pollIntervalMs: 50 });
    metrics.observe(worker);
    metrics.observe(worker); // once is enough: a second call counted every attempt twice
    await worker.start();
    for (const j of [...late, ...delayed]) await pgq.waitForJob(j.id, { timeoutMs: 10_000 });
    await worker.stop();
    const text = await metrics.registry.metrics();
    expect(value(text, 'pgq_jobs_enqueued_total{task="work",queue="m"}')).toBe(4);
    expect(value(text, 'pgq_jobs_enqueued_total{task="work",queue="later"}')).toBe(1);
    expect(value(text, 'pgq_jobs_finished_total{task="work",queue="m",outcome="succeeded"}')).toBe(3);
    expect(value(text, 'pgq_jobs_finished_total{task="work",queue="m",outcome="failed"}')).toBe(1);
    expect(value(text, 'pgq_job_duration_seconds_count{task="work",queue="m"}')).toBe(4);
    expect(value(text, 'pgq_job_wait_seconds_count{task="work",queue="m"}')).toBe(4);
    expect(value(text, 'pgq_job_wait_seconds_bucket{le="60",task="work",queue="m"}')).toBe(2);
    expect(value(text, 'pgq_job_wait_seconds_bucket{le="300",task="work",queue="m"}')).toBe(4);
    expect(value(text, 'pgq_queue_jobs{queue="later",state="scheduled"}')).toBe(1);
    expect(text).not.toMatch(/pgq_queue_jobs\{[^}]*state="(succeeded|failed)"/);
    expect(value(text, 'pgq_jobs_running{host="box-1"}')).toBe(0);
    expect(value(text, 'pgq_jobs_stuck{host="box-1"}')).toBe(0);
    expect(text).toMatch(/pgq_event_loop_lag_seconds\{host="box-1",stat="max"\} [0-9.e-]+/);
    metrics.close();
  });

  it('counts an attempt cancelled while it ran as discarded', async () => {
    const started = deferred();
    const slow = defineTask({
      name: 'slow',
      schema: z.object({}),
      queue: 'mc',
      handler: async (_p, c) => {
        started.resolve();
        await new Promise((resolve) => c.signal.addEventListener('abort', resolve, { once: true }));
      },
    });
    const pgq = await ctx.migrated({ tasks: [slow] });
    const metrics = new PgqMetrics(pgq, { queueGauges: false });
    const worker = pgq.worker({ queues: ['mc'], pollIntervalMs: 50 });
    metrics.observe(worker);
    await worker.start();
    try {
      const job = await pgq.enqueue(slow, {});
      await started.promise;
      await pgq.cancelJob(job.id);
      expect((await pgq.waitForJob(job.id, { timeoutMs: 10_000 })).state).toBe('cancelled');
      await expect.poll(async () => value(await metrics.registry.metrics(), 'pgq_jobs_finished_total{task="slow",queue="mc",outcome="discarded"}')).toBe(1);
      expect(await metrics.registry.metrics()).not.toMatch(/pgq_jobs_finished_total\{task="slow",queue="mc",outcome="(succeeded|failed|retried)"\}/);
    } finally {
      await worker.stop();
      metrics.close();
    }
  });

  it('still answers a scrape when the database cannot be read: per-process metrics, the last reading, a count of failed reads', async () => {
    const pgq = await ctx.migrated({ tasks: [work] });
    const metrics = new PgqMetrics(pgq, { host: 'box-2', statsMaxAgeMs: 0 });
    await pgq.enqueue(work, { fail: false }, { queue: 'scrape-down' });
    const before = await metrics.registry.metrics();
    expect(value(before, 'pgq_queue_jobs{queue="scrape-down",state="available"}')).toBe(1);
    // The gauges' reading fails from now on, as with the database down (the whole scrape was rejected).
    await ctx.admin.query(`ALTER TABLE "${ctx.schema}".stats_cache RENAME TO stats_cache_away`);
    try {
      const text = await metrics.registry.metrics();
      expect(value(text, 'pgq_stats_read_errors_total')).toBe(1);
      expect(value(text, 'pgq_queue_jobs{queue="scrape-down",state="available"}')).toBe(1);
      expect(value(text, 'pgq_stats_age_seconds')).toBeGreaterThanOrEqual(0);
      expect(value(text, 'pgq_jobs_enqueued_total{task="work",queue="scrape-down"}')).toBe(1);
      expect(text).toMatch(/pgq_event_loop_lag_seconds\{host="box-2",stat="max"\}/);
      // A process whose first reading fails: no queue series, an age of NaN, still an answer.
      const fresh = new PgqMetrics(pgq, { statsMaxAgeMs: 0, registry: new (await import('prom-client')).Registry() });
      const first = await fresh.registry.metrics();
      expect(first).not.toMatch(/^pgq_queue_jobs\{/m);
      expect(first).toMatch(/^pgq_stats_age_seconds nan$/im); // prom-client writes Nan, which Prometheus reads as NaN
      fresh.close();
    } finally {
      await ctx.admin.query(`ALTER TABLE "${ctx.schema}".stats_cache_away RENAME TO stats_cache`);
      metrics.close();
    }
  });

  it('refuses a second PgqMetrics on one registry, a prefix Prometheus does not allow, or a closed Pgq, registering nothing; another prefix works', async () => {
    const { Registry } = await import('prom-client');
    const pgq = await ctx.migrated({ tasks: [work] });
    const registry = new Registry();
    const first = new PgqMetrics(pgq, { registry, host: 'box-4' });
    const before = registry.getMetricsAsArray().map((m) => m.name);
    try {
      expect(() => new PgqMetrics(pgq, { registry })).toThrow(/options\.registry: already holds pgq_jobs_enqueued_total, .*another prefix or its own registry/);
      expect(() => new PgqMetrics(pgq, { registry: new Registry(), prefix: 'pgq-' })).toThrow(/options\.prefix: must start a Prometheus metric name.*"pgq-"/);
      // Refused by name at construction (a NaN age made every scrape's database reading fail, counted and never shown).
      for (const [options, field] of [
        [{ statsMaxAgeMs: Number.NaN }, 'statsMaxAgeMs'],
        [{ statsMaxAgeMs: 'abc' }, 'statsMaxAgeMs'],
        [{ statsMaxAgeMs: 1e300 }, 'statsMaxAgeMs'],
        [{ queueGauges: 'no' }, 'queueGauges'],
        [{ host: 42 }, 'host'],
        [{ registry: {} }, 'registry'],
        [{ statsMaxAge: 5_000 }, ''],
      ] as const) {
        expect(() => new PgqMetrics(pgq, { registry: new Registry(), ...options } as never)).toThrow(new RegExp(`^options${field ? `\\.${field}` : ''}: `));
      }
      expect(registry.getMetricsAsArray().map((m) => m.name)).toEqual(before);
      // The refused ones counted nothing: one enqueue is one, not two or three.
      await pgq.enqueue(work, { fail: false }, { queue: 'reg' });
      expect(value(await registry.metrics(), 'pgq_jobs_enqueued_total{task="work",queue="reg"}')).toBe(1);
      const second = new PgqMetrics(pgq, { registry, prefix: 'other_', queueGauges: false });
      expect(registry.getSingleMetric('other_jobs_enqueued_total')).toBeDefined();
      second.close();
      // No prefix at all makes valid names too.
      const bare = new PgqMetrics(pgq, { registry: new Registry(), prefix: '' });
      expect(bare.registry.getSingleMetric('jobs_enqueued_total')).toBeDefined();
      bare.close();
      // On a closed Pgq: refused before anything is registered, so the registry stays usable.
      const closed = ctx.pgq({ tasks: [work] });
      await closed.close();
      const spare = new Registry();
      expect(() => new PgqMetrics(closed, { registry: spare })).toThrow(/closed/);
      expect(spare.getMetricsAsArray()).toEqual([]);
    } finally {
      first.close();
    }
  });

  it('answers a scrape while the database holds its reading, with the last reading (a hung database held every scrape for as long)', async () => {
    const pgq = await ctx.migrated({ tasks: [work] });
    const metrics = new PgqMetrics(pgq, { host: 'box-3', statsMaxAgeMs: 0, registry: new (await import('prom-client')).Registry() });
    await pgq.enqueue(work, { fail: false }, { queue: 'scrape-hung' });
    expect(value(await metrics.registry.metrics(), 'pgq_queue_jobs{queue="scrape-hung",state="available"}')).toBe(1);
    // The reading's table locked by another transaction: the read waits as on a database that does not answer.
    const holder = await ctx.admin.connect();
    try {
      await holder.query('BEGIN');
      await holder.query(`LOCK TABLE "${ctx.schema}".stats_cache IN ACCESS EXCLUSIVE MODE`);
      const text = await metrics.registry.metrics(); // answered while the lock is still held
      expect(value(text, 'pgq_stats_read_errors_total')).toBe(1);
      expect(value(text, 'pgq_queue_jobs{queue="scrape-hung",state="available"}')).toBe(1);
      // A second scrape (once the first's reading is let go) waits on the same read, not on another one.
      await new Promise((resolve) => setImmediate(resolve));
      expect(value(await metrics.registry.metrics(), 'pgq_stats_read_errors_total')).toBe(2);
      const { rows } = await ctx.admin.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%stats_cache%' AND pid <> pg_backend_pid()`,
      );
      expect(rows[0]!.n).toBe(1);
    } finally {
      await holder.query('ROLLBACK').catch(() => undefined);
      holder.release();
      metrics.close();
    }
  });

  it('a queue that empties reads 0 in every live state, its series kept', async () => {
    const pgq = await ctx.migrated({ tasks: [work] });
    const metrics = new PgqMetrics(pgq, { statsMaxAgeMs: 0, registry: new (await import('prom-client')).Registry() });
    const job = await pgq.enqueue(work, { fail: false }, { queue: 'empties', runAt: new Date(Date.now() - 30_000) });
    const before = await metrics.registry.metrics();
    expect(value(before, 'pgq_queue_jobs{queue="empties",state="available"}')).toBe(1);
    expect(value(before, 'pgq_queue_jobs{queue="empties",state="running"}')).toBe(0);
    expect(value(before, 'pgq_queue_oldest_waiting_seconds{queue="empties"}')).toBeGreaterThanOrEqual(30);
    const worker = pgq.worker({ queues: ['empties'], pollIntervalMs: 50 });
    await worker.start();
    await pgq.waitForJob(job.id, { timeoutMs: 10_000 });
    await worker.stop();
    const after = await metrics.registry.metrics();
    for (const state of ['scheduled', 'available', 'running', 'retryable', 'blocked']) {
      expect(value(after, `pgq_queue_jobs{queue="empties",state="${state}"}`)).toBe(0);
    }
    expect(value(after, 'pgq_queue_oldest_waiting_seconds{queue="empties"}')).toBe(0);
    metrics.close();
  });

  it('a queue with no live jobs that the queues table knows (configured, or served by a worker) has its series from the first scrape', async () => {
    const pgq = await ctx.migrated({ tasks: [work] });
    await pgq.setQueue('configured-idle', { concurrency: 2 });
    // A process started now, as after a restart: no reading has named the queue before.
    const metrics = new PgqMetrics(pgq, { statsMaxAgeMs: 0, registry: new (await import('prom-client')).Registry() });
    const text = await metrics.registry.metrics();
    for (const state of ['scheduled', 'available', 'running', 'retryable', 'blocked']) {
      expect(value(text, `pgq_queue_jobs{queue="configured-idle",state="${state}"}`)).toBe(0);
    }
    expect(value(text, 'pgq_queue_oldest_waiting_seconds{queue="configured-idle"}')).toBe(0);
    metrics.close();
  });

  it('observes how late schedule ticks fire', async () => {
    const pgq = await ctx.migrated({ tasks: [work] });
    const metrics = new PgqMetrics(pgq, { queueGauges: false });
    await pgq.schedule({ name: 'often', every: '1h', task: work, payload: { fail: false } });
    await pgq.runSchedule('often');
    const text = await metrics.registry.metrics();
    expect(value(text, 'pgq_schedule_lag_seconds_count{schedule="often"}')).toBe(1);
    metrics.close();
  });

  it('reads an idle event loop as no lag, not as the 20 ms between two samples; a blocked loop still shows', async () => {
    const pgq = await ctx.migrated({ tasks: [work] });
    const metrics = new PgqMetrics(pgq, { host: 'idle', queueGauges: false });
    try {
      const lag = async (stat: string): Promise<number> =>
        value(await metrics.registry.getSingleMetricAsString('pgq_event_loop_lag_seconds'), `pgq_event_loop_lag_seconds{host="idle",stat="${stat}"}`);
      await lag('p50'); // a window of its own, from here
      // The sampler fires every 20 ms: this window holds about 15 samples of a loop that waits on nothing but a timer.
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(await lag('p50')).toBeLessThan(0.01); // it read 0.020 and more: the sampler's interval counted as lag
      await new Promise((resolve) => setTimeout(resolve, 50));
      const until = Date.now() + 150;
      while (Date.now() < until) {
        // blocked
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(await lag('max')).toBeGreaterThanOrEqual(0.1);
    } finally {
      metrics.close();
    }
  });

  it('computes the database gauges once per interval for every worker of the schema', async () => {
    const first = await ctx.migrated({ tasks: [work] });
    const second = ctx.pgq({ tasks: [work] });
    const a = new PgqMetrics(first, { statsMaxAgeMs: 3_600_000 });
    const b = new PgqMetrics(second, { statsMaxAgeMs: 3_600_000 });
    const computedAt = async (): Promise<string> =>
      (await ctx.admin.query<{ t: string }>(`SELECT computed_at::text AS t FROM "${ctx.schema}".stats_cache WHERE name = 'queues'`)).rows[0]!.t;
    await a.registry.metrics();
    const at = await computedAt();
    await first.enqueue(work, { fail: false }, { delayMs: 60_000 });
    await b.registry.metrics();
    await a.registry.metrics();
    expect(await computedAt()).toBe(at);
    const fresh = new PgqMetrics(second, { statsMaxAgeMs: 0 });
    await fresh.registry.metrics();
    expect(await computedAt()).not.toBe(at);
    for (const m of [a, b, fresh]) m.close();
  });

  it("reads live states through indexes (the metrics' and the console's overview), never scanning 960,000 finished jobs or reading delayed jobs' rows; the console's failed jobs index-only", async (context) => {
    const pgq = await ctx.migrated({ tasks: [work] });
    // Every 50th row a job delayed by a year, and as many waiting (no worker
    // runs here) and failed, spread through the succeeded ones.
    await ctx.admin.query(
      `INSERT INTO "${ctx.schema}".jobs (task, queue, state, run_at, finished_at)
       SELECT 'work', 'q' || (g % 10), s.state, CASE WHEN s.state = 'scheduled' THEN now() + interval '1 year' ELSE now() END,
              CASE WHEN s.state IN ('succeeded', 'failed') THEN now() END
         FROM generate_series(1, 1000000) AS g,
              LATERAL (SELECT CASE g % 50 WHEN 0 THEN 'scheduled' WHEN 25 THEN 'available' WHEN 10 THEN 'failed' ELSE 'succeeded' END AS state) AS s`,
    );
    await pgq.enqueueMany(work, [{ fail: false }, { fail: false }], { delayMs: 60_000 });
    // As autovacuum keeps a table: pages whose rows every transaction sees
    // are marked so (the visibility map). A transaction open elsewhere on the
    // server (another test file's) keeps VACUUM from marking them: tried again
    // a few times.
    let mapped = false;
    for (let attempt = 0; attempt < 5 && !mapped; attempt += 1) {
      if (attempt > 0) await new Promise((resolve) => setTimeout(resolve, 1_000));
      await ctx.admin.query(`VACUUM ANALYZE "${ctx.schema}".jobs`);
      const { rows: sizes } = await ctx.admin.query<{ visible: number }>(
        `SELECT relallvisible::float8 / greatest(relpages, 1) AS visible FROM pg_class WHERE oid = '"${ctx.schema}".jobs'::regclass`,
      );
      mapped = sizes[0]!.visible > 0.9;
    }
    for (const [what, query] of [['metrics', liveStatsQuery(ctx.schema)], ['overview', overviewCountsQuery(ctx.schema)], ['overview, failed and cancelled', finishedCountsQuery(ctx.schema)]]) {
      const { rows } = await ctx.admin.query<{ 'QUERY PLAN': string }>(`EXPLAIN ${query}`);
      const plan = rows.map((r) => r['QUERY PLAN']).join('\n');
      // (The queues table, one row per queue, may be read whole.)
      expect(plan, what).not.toMatch(/Seq Scan on jobs/);
      expect(plan, what).toMatch(/Index/);
      // Every read of jobs is an index-only one, but for the delayed jobs
      // already due (their rows give their queue): the 20,000 waiting, the
      // 20,000 delayed and the 20,000 failed are counted without reading their rows.
      // Without the map, reads of rows are as cheap as index-only ones to the planner: nothing to check.
      if (!mapped) continue;
      const reads = [...plan.matchAll(/(?:Seq Scan|Index Scan|Index Only Scan|Bitmap Heap Scan)[^\n]* on jobs\b[^\n]*(?:\n +(?! |->)[^\n]*)*/g)].map((m) => m[0]);
      expect(reads.length, what).toBeGreaterThan(0);
      for (const node of reads) {
        if (!node.startsWith('Index Only Scan')) expect(node, what).toMatch(/(Index|Recheck) Cond: \(+run_at <= now\(\)\)/);
      }
    }
    if (!mapped) context.skip('VACUUM could not mark the pages visible (a transaction open elsewhere on the server): the index-only reads were not checked');
  }, 120_000);

  it("import 'pgq' loads neither prom-client nor @opentelemetry/api, and of other packages only pg and zod", () => {
    const dist = path.resolve(import.meta.dirname, '../dist');
    const seen = new Set<string>();
    const external = new Set<string>();
    const visit = (file: string): void => {
      if (seen.has(file)) return;
      seen.add(file);
      const source = fs.readFileSync(file, 'utf8');
      // Static imports only: a dynamic import() loads nothing until called.
      for (const m of source.matchAll(/^(?:import|export)\s[^;]*?from\s+'([^']+)'|^import\s+'([^']+)'/gm)) {
        const spec = (m[1] ?? m[2])!;
        if (spec.startsWith('.')) visit(path.resolve(path.dirname(file), spec));
        else external.add(spec);
      }
    };
    visit(path.join(dist, 'index.js'));
    expect(seen.size).toBeGreaterThan(10);
    expect([...external].filter((s) => s.startsWith('prom-client') || s.startsWith('@opentelemetry'))).toEqual([]);
    // Nothing else either: pino, cron-parser and node-pg-migrate load on first use, kysely is bundled.
    expect([...external].filter((s) => !s.startsWith('node:')).sort()).toEqual(['pg', 'zod']);
  });
});
