/**
 * Prometheus metrics for workers, with prom-client:
 *
 * - `pgq_jobs_finished_total{task,queue,outcome}`: attempts ended, by outcome
 *   (`succeeded`, `failed` — no attempt left, `retried`).
 * - `pgq_job_duration_seconds{task,queue}`: handler time of each attempt.
 * - `pgq_jobs_running{worker}`: handlers running now.
 * - `pgq_queue_jobs{queue,state}` and `pgq_queue_oldest_waiting_seconds{queue}`:
 *   read from the database when scraped (one grouped query), so any process
 *   can export them.
 *
 * @example
 * import { Registry } from 'prom-client';
 * const registry = new Registry();
 * const metrics = new PgqMetrics(pgq, { registry });
 * metrics.observe(worker);
 * // serve `await registry.metrics()` at /metrics
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Pgq } from './client.js';
import type { Worker } from './worker/worker.js';

export interface MetricsOptions {
  /** Where to register. Default: a new Registry (see `registry`). */
  registry?: Registry;
  /** Prefix of every metric name. Default `pgq_`. */
  prefix?: string;
  /** Export queue depth gauges read from the database at scrape time. Default true. */
  queueGauges?: boolean;
}

export class PgqMetrics {
  readonly registry: Registry;
  readonly #finished: Counter<'task' | 'queue' | 'outcome'>;
  readonly #duration: Histogram<'task' | 'queue'>;
  readonly #workers = new Set<Worker>();

  constructor(pgq: Pgq, options: MetricsOptions = {}) {
    this.registry = options.registry ?? new Registry();
    const prefix = options.prefix ?? 'pgq_';
    const registers = [this.registry];
    this.#finished = new Counter({
      name: `${prefix}jobs_finished_total`,
      help: 'Job attempts that ended, by outcome (succeeded, retried, failed).',
      labelNames: ['task', 'queue', 'outcome'] as const,
      registers,
    });
    this.#duration = new Histogram({
      name: `${prefix}job_duration_seconds`,
      help: 'Handler time of each job attempt.',
      labelNames: ['task', 'queue'] as const,
      buckets: [0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300],
      registers,
    });
    const workers = this.#workers;
    new Gauge({
      name: `${prefix}jobs_running`,
      help: 'Handlers running now, per worker.',
      labelNames: ['worker'] as const,
      registers,
      collect() {
        this.reset();
        for (const w of workers) this.set({ worker: w.id }, w.runningJobs);
      },
    });
    if (options.queueGauges !== false) {
      let stats: ReturnType<Pgq['stats']> | undefined;
      // One query serves both gauges of a scrape.
      const read = (): ReturnType<Pgq['stats']> => (stats ??= pgq.stats().finally(() => setImmediate(() => (stats = undefined))));
      new Gauge({
        name: `${prefix}queue_jobs`,
        help: 'Jobs per queue and state.',
        labelNames: ['queue', 'state'] as const,
        registers,
        async collect() {
          this.reset();
          for (const q of await read()) for (const [state, n] of Object.entries(q.counts)) this.set({ queue: q.queue, state }, n);
        },
      });
      new Gauge({
        name: `${prefix}queue_oldest_waiting_seconds`,
        help: 'Age of the oldest due job not yet claimed, per queue.',
        labelNames: ['queue'] as const,
        registers,
        async collect() {
          this.reset();
          const now = Date.now();
          for (const q of await read()) {
            this.set({ queue: q.queue }, q.oldestWaitingRunAt ? Math.max(0, (now - q.oldestWaitingRunAt.getTime()) / 1000) : 0);
          }
        },
      });
    }
  }

  /** Counts this worker's jobs from now on. */
  observe(worker: Worker): void {
    this.#workers.add(worker);
    worker.on('job:success', (job, ms) => {
      this.#finished.inc({ task: job.task, queue: job.queue, outcome: 'succeeded' });
      this.#duration.observe({ task: job.task, queue: job.queue }, ms / 1000);
    });
    worker.on('job:failure', (job, _error, ms, retry) => {
      this.#finished.inc({ task: job.task, queue: job.queue, outcome: retry ? 'retried' : 'failed' });
      this.#duration.observe({ task: job.task, queue: job.queue }, ms / 1000);
    });
  }
}
