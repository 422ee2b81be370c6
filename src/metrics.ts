/**
 * Prometheus metrics for pgq, with prom-client (`pgq/metrics`; `import 'pgq'`
 * does not load prom-client). Every metric, its labels and its meaning are
 * listed in docs/operations.md, "Metrics".
 *
 * - Counted in this process: jobs enqueued (through the middleware this class
 *   adds to the Pgq), attempts finished, handler time, time waited, schedule
 *   lag (in the leader), running and stuck handlers, event-loop delay.
 * - Read from the database: live jobs per queue and state and the oldest due
 *   job waiting — computed at most once per `statsMaxAgeMs` for the whole
 *   schema (see db/live-stats.ts), so scraping every worker stays cheap.
 *
 * @example
 * import { PgqMetrics } from 'pgq/metrics';
 * const metrics = new PgqMetrics(pgq);
 * metrics.observe(worker);
 * // serve `await metrics.registry.metrics()` at /metrics
 */
import os from 'node:os';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Pgq } from './client.js';
import type { Worker } from './worker/worker.js';
import { EventLoopMonitor } from './core/event-loop.js';
import { LiveStatsReader, type LiveStats } from './db/live-stats.js';
import type { Middleware } from './middleware.js';
import { LIVE_STATES } from './core/types.js';
import { ValidationError } from './core/errors.js';
import { z } from 'zod';
import { zodToValidationError } from './task.js';

export interface MetricsOptions {
  /** Where to register. Default: a new Registry (see `registry`). */
  registry?: Registry | undefined;
  /** Prefix of every metric name. Default `pgq_`. */
  prefix?: string | undefined;
  /** Export the gauges read from the database. Default true (needs read and write access to `stats_cache`: the owner or the worker role). */
  queueGauges?: boolean | undefined;
  /** How old the shared database reading may be before a scrape refreshes it. Default 10 s. */
  statsMaxAgeMs?: number | undefined;
  /** Value of the `host` label of per-process metrics: stable across restarts. Default: the host name. */
  host?: string | undefined;
}

/** MetricsOptions as checked at construction: a bad value is refused by name, not found at every scrape. */
const optionsSchema = z
  .object({
    registry: z.custom<Registry>((v) => typeof (v as Registry | null)?.getSingleMetric === 'function', 'must be a prom-client Registry').optional(),
    prefix: z.string().optional(),
    queueGauges: z.boolean().optional(),
    statsMaxAgeMs: z.number().int().min(0).max(86_400_000).optional(),
    host: z.string().min(1).max(200).optional(),
  })
  .strict();

const SECONDS = [0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300];
const WAIT_SECONDS = [0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 1_800, 3_600, 21_600];

/** The names of the metrics, less the prefix: counted in this process, and read from the database (the queue gauges). */
const PROCESS_METRICS = [
  'jobs_enqueued_total',
  'schedule_lag_seconds',
  'jobs_finished_total',
  'job_duration_seconds',
  'job_wait_seconds',
  'jobs_running',
  'jobs_stuck',
  'event_loop_lag_seconds',
] as const;
const DATABASE_METRICS = ['stats_read_errors_total', 'queue_jobs', 'queue_oldest_waiting_seconds', 'stats_age_seconds'] as const;
type MetricName = (typeof PROCESS_METRICS)[number] | (typeof DATABASE_METRICS)[number];

/** How long a scrape waits for the database's reading behind the queue gauges before it serves the last one. */
const STATS_READ_DEADLINE_MS = 2_000;

/** `promise`, or a rejection once `ms` have passed first. */
function withDeadline<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`no reading within ${ms} ms`)), ms);
  });
  promise.catch(() => undefined); // a read that fails after the deadline is counted by the next scrape's wait, not unhandled
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

export class PgqMetrics {
  readonly registry: Registry;
  readonly #finished: Counter<'task' | 'queue' | 'outcome'>;
  readonly #duration: Histogram<'task' | 'queue'>;
  readonly #wait: Histogram<'task' | 'queue'>;
  readonly #workers = new Set<Worker>();
  readonly #loop: EventLoopMonitor;

  /**
   * Registers pgq's metrics. Throws a `ValidationError`, registering
   * nothing, when the prefix makes names Prometheus does not allow, or when
   * the registry already holds one of these names (a second `PgqMetrics` on
   * it, say for a second schema: give it another `prefix` or `registry`).
   */
  constructor(pgq: Pgq, options: MetricsOptions = {}) {
    const parsed = optionsSchema.safeParse(options);
    if (!parsed.success) throw zodToValidationError(parsed.error, 'options');
    this.registry = options.registry ?? new Registry();
    const prefix = options.prefix ?? 'pgq_';
    if (typeof prefix !== 'string' || !/^([a-zA-Z_:][a-zA-Z0-9_:]*)?$/.test(prefix)) {
      throw new ValidationError('options.prefix', `must start a Prometheus metric name (letters, digits, _ and :, not starting with a digit), got ${JSON.stringify(prefix)}`);
    }
    // Every registration names its metric through this, so the names checked here are the ones registered.
    const metric = (name: MetricName): string => prefix + name;
    const names = [...PROCESS_METRICS, ...(options.queueGauges === false ? [] : DATABASE_METRICS)].map(metric);
    const taken = names.filter((name) => this.registry.getSingleMetric(name) !== undefined);
    if (taken.length > 0) {
      throw new ValidationError(
        'options.registry',
        `already holds ${taken.join(', ')} (another PgqMetrics registered there?): give this one another prefix or its own registry (prom-client's Registry.merge serves several at one endpoint)`,
      );
    }
    // Added first: on a closed Pgq it throws, and nothing is registered yet. (The constructor runs to its end
    // before any enqueue can call it, so the counters it names below exist by then.)
    const counting: Middleware = {
      name: 'metrics',
      async enqueue(call, next) {
        const ids = await next();
        const now = Date.now();
        for (const job of call.jobs) {
          enqueued.inc({ task: job.task, queue: job.queue });
          if (job.schedule) scheduleLag.observe({ schedule: job.schedule.name }, Math.max(0, now - job.schedule.tick.getTime()) / 1000);
        }
        return ids;
      },
    };
    pgq.use(counting);
    this.#loop = new EventLoopMonitor();
    const host = options.host ?? os.hostname();
    const registers = [this.registry];
    const enqueued = new Counter({
      name: metric('jobs_enqueued_total'),
      help: 'Jobs written by enqueues of this process (enqueue, enqueueMany, workflows, schedule ticks), by task and queue.',
      labelNames: ['task', 'queue'] as const,
      registers,
    });
    const scheduleLag = new Histogram({
      name: metric('schedule_lag_seconds'),
      help: 'How late each schedule tick was enqueued after its due time (observed by the leader).',
      labelNames: ['schedule'] as const,
      buckets: SECONDS,
      registers,
    });
    this.#finished = new Counter({
      name: metric('jobs_finished_total'),
      help: 'Job attempts that ended, by outcome (succeeded, retried, failed; discarded: cancelled while it ran, or rescued from this worker, so what it ended with did not stand).',
      labelNames: ['task', 'queue', 'outcome'] as const,
      registers,
    });
    this.#duration = new Histogram({
      name: metric('job_duration_seconds'),
      help: 'Handler time of each job attempt.',
      labelNames: ['task', 'queue'] as const,
      buckets: SECONDS,
      registers,
    });
    this.#wait = new Histogram({
      name: metric('job_wait_seconds'),
      help: 'Time each attempt waited in its queue: from run_at (due) to started_at (claimed).',
      labelNames: ['task', 'queue'] as const,
      buckets: WAIT_SECONDS,
      registers,
    });
    const workers = this.#workers;
    new Gauge({
      name: metric('jobs_running'),
      help: 'Handlers running now in the observed workers of this process.',
      labelNames: ['host'] as const,
      registers,
      collect() {
        let running = 0;
        for (const w of workers) running += w.runningJobs;
        this.set({ host }, running);
      },
    });
    new Gauge({
      name: metric('jobs_stuck'),
      help: 'Handlers of the observed workers of this process that did not settle within their grace after their signal (timeout, cancel, shutdown).',
      labelNames: ['host'] as const,
      registers,
      collect() {
        let stuck = 0;
        for (const w of workers) stuck += w.stuckJobs;
        this.set({ host }, stuck);
      },
    });
    const loop = this.#loop;
    new Gauge({
      name: metric('event_loop_lag_seconds'),
      help: 'Event-loop delay of this process since the previous scrape (p50, p99, max).',
      labelNames: ['host', 'stat'] as const,
      registers,
      collect() {
        const d = loop.take();
        this.set({ host, stat: 'p50' }, d.p50Ms / 1000);
        this.set({ host, stat: 'p99' }, d.p99Ms / 1000);
        this.set({ host, stat: 'max' }, d.maxMs / 1000);
      },
    });
    if (options.queueGauges !== false) this.#queueGauges(pgq, metric, options.statsMaxAgeMs ?? 10_000);
  }

  /** Counts this worker's attempts and running handlers from now on. */
  observe(worker: Worker): void {
    // Once per worker: a second call would count every attempt twice.
    if (this.#workers.has(worker)) return;
    // Stopped workers run nothing more: forgotten, so a process that replaces workers does not keep them all.
    for (const w of this.#workers) if (w.state === 'stopped') this.#workers.delete(w);
    this.#workers.add(worker);
    worker.on('job:start', (job) => {
      if (job.startedAt) this.#wait.observe({ task: job.task, queue: job.queue }, Math.max(0, job.startedAt.getTime() - job.runAt.getTime()) / 1000);
    });
    worker.on('job:success', (job, ms) => {
      this.#finished.inc({ task: job.task, queue: job.queue, outcome: 'succeeded' });
      this.#duration.observe({ task: job.task, queue: job.queue }, ms / 1000);
    });
    worker.on('job:failure', (job, _error, ms, retry) => {
      this.#finished.inc({ task: job.task, queue: job.queue, outcome: retry ? 'retried' : 'failed' });
      this.#duration.observe({ task: job.task, queue: job.queue }, ms / 1000);
    });
    worker.on('job:discarded', (job) => {
      this.#finished.inc({ task: job.task, queue: job.queue, outcome: 'discarded' });
    });
  }

  /** Stops the event-loop sampler. */
  close(): void {
    this.#loop.stop();
  }

  #queueGauges(pgq: Pgq, metric: (name: MetricName) => string, maxAgeMs: number): void {
    const reader = new LiveStatsReader(pgq.kysely, pgq.schema, maxAgeMs);
    const registers = [this.registry];
    const readErrors = new Counter({
      name: metric('stats_read_errors_total'),
      help: 'Database readings behind the queue gauges that failed (the gauges then keep the last reading, and stats_age_seconds grows).',
      registers,
      // A scrape collects every metric at once: this one waits for the gauges' reading it counts.
      async collect() {
        await read();
      },
    });
    let reading: Promise<LiveStats | undefined> | undefined;
    let last: LiveStats | undefined;
    // Every queue a reading has named: one that empties reads 0 from then
    // on, rather than its series vanishing (a graph with gaps, an alert on
    // a series that is not there).
    const seen = new Set<string>();
    // One read serves every gauge of a scrape. One that fails (the database
    // down, a role that cannot read) keeps the last reading: the scrape
    // still serves every per-process metric rather than failing whole.
    // The database read itself, one at a time: a scrape waits for it at most
    // STATS_READ_DEADLINE_MS (a database that hangs held every scrape for as
    // long, and Prometheus dropped the whole scrape at its own timeout), and
    // the next scrape waits on the same read rather than starting another.
    let inFlight: Promise<LiveStats> | undefined;
    const readOnce = (): Promise<LiveStats> => (inFlight ??= reader.read().finally(() => (inFlight = undefined)));
    const read = (): Promise<LiveStats | undefined> =>
      (reading ??= withDeadline(readOnce(), STATS_READ_DEADLINE_MS)
        .then(
          (stats) => {
            for (const q of stats.queues) seen.add(q.queue);
            return (last = stats);
          },
          () => {
            readErrors.inc();
            return last;
          },
        )
        .finally(() => setImmediate(() => (reading = undefined))));
    new Gauge({
      name: metric('queue_jobs'),
      help: 'Live jobs per queue and state (scheduled, available, running, retryable, blocked), read from the database.',
      labelNames: ['queue', 'state'] as const,
      registers,
      async collect() {
        const stats = await read();
        this.reset();
        if (!stats) return;
        const counts = new Map(stats.queues.map((q) => [q.queue, q.counts]));
        for (const queue of seen) for (const state of LIVE_STATES) this.set({ queue, state }, counts.get(queue)?.[state] ?? 0);
      },
    });
    new Gauge({
      name: metric('queue_oldest_waiting_seconds'),
      help: 'Age of the oldest job that is due and not yet claimed, per queue (0 when none), read from the database.',
      labelNames: ['queue'] as const,
      registers,
      async collect() {
        const stats = await read();
        this.reset();
        if (!stats) return;
        const at = stats.computedAt.getTime();
        const oldest = new Map(stats.queues.map((q) => [q.queue, q.oldestWaitingRunAt]));
        for (const queue of seen) {
          const runAt = oldest.get(queue);
          this.set({ queue }, runAt ? Math.max(0, (at - Date.parse(runAt)) / 1000) : 0);
        }
      },
    });
    new Gauge({
      name: metric('stats_age_seconds'),
      help: 'Age of the shared database reading behind the queue gauges (at most about statsMaxAgeMs).',
      registers,
      async collect() {
        const stats = await read();
        // No reading yet: not a fresh one (0), none.
        this.set(stats ? Math.max(0, (Date.now() - stats.computedAt.getTime()) / 1000) : Number.NaN);
      },
    });
  }
}
