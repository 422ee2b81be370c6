/**
 * The workloads and the rows of the report. A workload is one kind
 * of child run; a row is one metric of one workload (the latency run gives
 * four rows, the concurrency-100 drain two, the I/O-bound drain three).
 *
 * Under --rtt-ms every workload reaches PostgreSQL through the delay proxy,
 * except the reference drains (`route`): the same drains direct (loopback)
 * and through a second proxy that adds nothing (its own overhead).
 */
import type { ChildSpec } from './spec.js';
import type { RunEnv } from './types.js';

export interface BenchConfig {
  quick: boolean;
  rounds: number;
  enqueueMs: number;
  enqueueWarmup: number;
  bulkMs: number;
  bulkMaxCalls: number;
  drainJobs: number;
  /** The I/O-bound drain (drain-io): waiting jobs, each awaiting IO_DELAY_MS, run IO_CONCURRENCY at a time. */
  ioJobs: number;
  drainCapMs: number;
  /** Per-system drain caps, for systems that poll so slowly a full drain would take many minutes. */
  drainCapOverrides: Record<string, number>;
  /** Growth workloads: waiting jobs at the start of the large-backlog drain. */
  backlogJobs: number;
  steadyMs: number;
  latencySamples: number;
  latencyBudgetMs: number;
  latencyGapMs: number;
  processes: number;
  /** First enqueues after start: this many first samples against the steady state. */
  coldSamples: number;
  /** --rtt-ms: the round-trip time the delay proxy adds; null: direct to PostgreSQL. */
  rttMs: number | null;
}

/** How a run reaches PostgreSQL under --rtt-ms: through the delay proxy, direct, or through a proxy adding 0 ms. */
export type Route = 'proxy' | 'loopback' | 'proxy0';

export interface Workload {
  key: string;
  title: string;
  /** Runs only when asked for: --steady, --growth, --io, --rtt-ms, or by name in --workloads. */
  optIn?: 'steady' | 'growth' | 'io' | 'rtt';
  /** Under --rtt-ms: a reference run that does not take the delay proxy (default: it does). */
  route?: Exclude<Route, 'proxy'>;
  /** Systems this workload does not apply to, and why. */
  skip?: (system: string) => string | null;
  spec(system: string, env: RunEnv, config: BenchConfig): ChildSpec;
  /** How long the child may run. */
  timeoutMs(config: BenchConfig, system: string): number;
}

export interface Row {
  key: string;
  workload: string;
  metric: string;
  title: string;
  unit: string;
  better: 'higher' | 'lower';
}

const drain = (concurrency: number, processes: number): Workload['spec'] => (system, env, c) => ({
  role: 'drain',
  system,
  env,
  jobs: c.drainJobs,
  concurrency,
  processes,
  capMs: c.drainCapOverrides[system] ?? c.drainCapMs,
});

const drainTimeout = (c: BenchConfig, system: string): number => (c.drainCapOverrides[system] ?? c.drainCapMs) + 180_000;

/**
 * The I/O-bound drain (Arq's case): one worker process, IO_CONCURRENCY
 * handlers at once, each awaiting an IO_DELAY_MS timer. With every slot
 * always busy it would run IO_CONCURRENCY ÷ IO_DELAY_MS jobs/s (20,000/s):
 * what it falls short of that is the system's own work per job (claiming,
 * completing, its event loop) and the database's.
 */
export const IO_CONCURRENCY = 1_000;
export const IO_DELAY_MS = 50;
export const IO_IDEAL_JOBS_PER_SEC = (IO_CONCURRENCY / IO_DELAY_MS) * 1_000;

/** Systems the --rtt-ms reference drains (loopback, 0 ms proxy) run for. */
export const RTT_REFERENCE_SYSTEMS: readonly string[] = ['pgq', 'graphile-worker-tuned'];
const rttReference = (system: string): string | null =>
  RTT_REFERENCE_SYSTEMS.includes(system) ? null : `reference drains run for ${RTT_REFERENCE_SYSTEMS.join(' and ')} only`;

/** The drains that get loopback and 0 ms-proxy references under --rtt-ms. */
export const RTT_DRAINS: readonly string[] = ['drain-c10', 'drain-c100'];

const latencySpec =
  (cold: boolean): Workload['spec'] =>
  (system, env, c) => ({
    role: 'latency',
    system,
    env,
    // Cold: enough after the first coldSamples for a steady second half.
    samples: cold ? Math.max(c.latencySamples, 4 * c.coldSamples) : c.latencySamples,
    warmup: cold ? 0 : c.quick ? 2 : 10,
    budgetMs: c.latencyBudgetMs,
    gapMs: c.latencyGapMs,
    sampleTimeoutMs: 10_000,
    ...(cold ? { coldSamples: c.coldSamples } : {}),
  });

export const WORKLOADS: readonly Workload[] = [
  {
    key: 'enqueue-1',
    title: 'single enqueue, 1 connection',
    spec: (system, env, c) => ({ role: 'enqueue', system, env, connections: 1, durationMs: c.enqueueMs, warmup: c.enqueueWarmup }),
    timeoutMs: (c) => c.enqueueMs + 120_000,
  },
  {
    key: 'enqueue-8',
    title: 'single enqueue, 8 concurrent connections',
    spec: (system, env, c) => ({ role: 'enqueue', system, env, connections: 8, durationMs: c.enqueueMs, warmup: c.enqueueWarmup }),
    timeoutMs: (c) => c.enqueueMs + 120_000,
  },
  {
    key: 'enqueue-bulk',
    title: 'bulk enqueue, 1,000 per call',
    spec: (system, env, c) => ({
      role: 'enqueue-bulk',
      system,
      env,
      batch: 1_000,
      durationMs: c.bulkMs,
      maxCalls: c.bulkMaxCalls,
      warmupCalls: c.quick ? 1 : 2,
    }),
    timeoutMs: (c) => c.bulkMs + 180_000,
  },
  { key: 'drain-c10', title: 'drain, 1 worker process, concurrency 10', spec: drain(10, 1), timeoutMs: drainTimeout },
  ...rttReferences('drain-c10', 'concurrency 10', drain(10, 1)),
  { key: 'drain-c100', title: 'drain, 1 worker process, concurrency 100', spec: drain(100, 1), timeoutMs: drainTimeout },
  ...rttReferences('drain-c100', 'concurrency 100', drain(100, 1)),
  {
    key: 'drain-io',
    title: `drain of I/O-bound jobs (each handler awaits a ${IO_DELAY_MS} ms timer), 1 worker process, concurrency ${IO_CONCURRENCY.toLocaleString('en-US')}`,
    optIn: 'io',
    spec: (system, env, c) => ({
      ...(drain(IO_CONCURRENCY, 1)(system, env, c) as Extract<ChildSpec, { role: 'drain' }>),
      jobs: c.ioJobs,
      handlerDelayMs: IO_DELAY_MS,
    }),
    timeoutMs: drainTimeout,
  },
  {
    key: 'drain-4p',
    title: 'drain, 4 worker processes × concurrency 25',
    spec: (system, env, c) => drain(100, c.processes)(system, env, c),
    timeoutMs: drainTimeout,
  },
  {
    key: 'latency',
    title: 'enqueue → handler start, idle worker in another process, sequential samples',
    skip: (system) => (system === 'floor' ? 'the floor has no wake-up path (no NOTIFY); it is a throughput reference' : null),
    spec: latencySpec(false),
    timeoutMs: (c) => c.latencyBudgetMs + 150_000,
  },
  {
    key: 'latency-cold',
    title: 'first enqueues after start: enqueue → handler start from the first job of a fresh producer and a just-started worker',
    optIn: 'rtt',
    skip: (system) =>
      system === 'floor'
        ? 'the floor has no wake-up path (no NOTIFY); it is a throughput reference'
        : system.startsWith('pg-boss')
          ? 'it only polls (every 0.5–2 s): dozens of samples take minutes, and its warm latency row already shows the polling'
          : null,
    spec: latencySpec(true),
    timeoutMs: (c) => c.latencyBudgetMs + 150_000,
  },
  {
    key: 'steady',
    title: 'steady state: 4 producers (enqueueMany of 50, backlog held under 2,000) and 1 worker process (concurrency 100) together',
    optIn: 'steady',
    spec: (system, env, c) => ({
      role: 'steady',
      system,
      env,
      durationMs: c.steadyMs,
      warmupMs: c.quick ? 1_000 : 5_000,
      producers: 4,
      batch: 50,
      maxBacklog: 2_000,
      concurrency: 100,
    }),
    timeoutMs: (c) => c.steadyMs + 240_000,
  },
  {
    key: 'drain-backlog',
    title: 'drain with a large backlog waiting: time the first N of backlogJobs, concurrency 100',
    optIn: 'growth',
    spec: (system, env, c) => ({ ...(drain(100, 1)(system, env, c) as Extract<ChildSpec, { role: 'drain' }>), seedJobs: c.backlogJobs }),
    timeoutMs: (c, system) => drainTimeout(c, system) + c.backlogJobs * 0.2,
  },
  {
    key: 'drain-backlog-settled',
    title: 'the same, the database settled after seeding (VACUUM ANALYZE, CHECKPOINT): what the waiting jobs cost the claims, apart from PostgreSQL catching up on the million rows just written',
    optIn: 'growth',
    spec: (system, env, c) => ({ ...(drain(100, 1)(system, env, c) as Extract<ChildSpec, { role: 'drain' }>), seedJobs: c.backlogJobs, settle: true }),
    timeoutMs: (c, system) => drainTimeout(c, system) + c.backlogJobs * 0.25,
  },
  {
    key: 'drain-finished',
    title: 'drain, concurrency 100, with backlogJobs finished jobs kept in the table (systems that keep them there)',
    optIn: 'growth',
    skip: (system) => (system.startsWith('pgq') ? null : 'keeps no finished jobs in the table it claims from, or none seeded'),
    spec: (system, env, c) => ({ ...(drain(100, 1)(system, env, c) as Extract<ChildSpec, { role: 'drain' }>), finishedJobs: c.backlogJobs }),
    timeoutMs: (c, system) => drainTimeout(c, system) + c.backlogJobs * 0.05,
  },
  {
    key: 'drain-idle-txn',
    title: 'drain, concurrency 100, while another session idles in a transaction',
    optIn: 'growth',
    skip: (system) => (system === 'bullmq' ? 'Redis: no transactions' : null),
    spec: (system, env, c) => ({ ...(drain(100, 1)(system, env, c) as Extract<ChildSpec, { role: 'drain' }>), idleTransaction: true }),
    timeoutMs: drainTimeout,
  },
];

function rttReferences(key: string, what: string, spec: Workload['spec']): Workload[] {
  return [
    {
      key: `${key}-proxy0`,
      title: `drain, ${what}, through a delay proxy adding 0 ms (the proxy's own cost; --rtt-ms above 0)`,
      optIn: 'rtt',
      route: 'proxy0',
      skip: rttReference,
      spec,
      timeoutMs: drainTimeout,
    },
    {
      key: `${key}-loopback`,
      title: `drain, ${what}, direct to PostgreSQL on loopback (reference for --rtt-ms)`,
      optIn: 'rtt',
      route: 'loopback',
      skip: rttReference,
      spec,
      timeoutMs: drainTimeout,
    },
  ];
}

export const ROWS: readonly Row[] = [
  { key: 'enqueue-1', workload: 'enqueue-1', metric: 'opsPerSec', title: 'Single enqueue, 1 connection', unit: 'jobs/s', better: 'higher' },
  { key: 'enqueue-8', workload: 'enqueue-8', metric: 'opsPerSec', title: 'Single enqueue, 8 connections', unit: 'jobs/s', better: 'higher' },
  { key: 'enqueue-bulk', workload: 'enqueue-bulk', metric: 'jobsPerSec', title: 'Bulk enqueue, 1,000/call', unit: 'jobs/s', better: 'higher' },
  { key: 'drain-c10', workload: 'drain-c10', metric: 'jobsPerSec', title: 'Drain, concurrency 10', unit: 'jobs/s', better: 'higher' },
  { key: 'drain-c100', workload: 'drain-c100', metric: 'jobsPerSec', title: 'Drain, concurrency 100', unit: 'jobs/s', better: 'higher' },
  { key: 'drain-c10-proxy0', workload: 'drain-c10-proxy0', metric: 'jobsPerSec', title: 'Drain, concurrency 10, 0 ms proxy', unit: 'jobs/s', better: 'higher' },
  { key: 'drain-c10-loopback', workload: 'drain-c10-loopback', metric: 'jobsPerSec', title: 'Drain, concurrency 10, loopback', unit: 'jobs/s', better: 'higher' },
  { key: 'drain-c100-proxy0', workload: 'drain-c100-proxy0', metric: 'jobsPerSec', title: 'Drain, concurrency 100, 0 ms proxy', unit: 'jobs/s', better: 'higher' },
  { key: 'drain-c100-loopback', workload: 'drain-c100-loopback', metric: 'jobsPerSec', title: 'Drain, concurrency 100, loopback', unit: 'jobs/s', better: 'higher' },
  { key: 'drain-4p', workload: 'drain-4p', metric: 'jobsPerSec', title: 'Drain, 4 processes × 25', unit: 'jobs/s', better: 'higher' },
  { key: 'drain-io', workload: 'drain-io', metric: 'jobsPerSec', title: `Drain, I/O-bound (${IO_DELAY_MS} ms), concurrency ${IO_CONCURRENCY.toLocaleString('en-US')}`, unit: 'jobs/s', better: 'higher' },
  {
    key: 'drain-io-ideal',
    workload: 'drain-io',
    metric: 'idealPercent',
    title: `Drain, I/O-bound: share of the ideal ${IO_IDEAL_JOBS_PER_SEC.toLocaleString('en-US')} jobs/s (concurrency ÷ ${IO_DELAY_MS} ms)`,
    unit: '%',
    better: 'higher',
  },
  { key: 'latency-p50', workload: 'latency', metric: 'p50Ms', title: 'Latency p50', unit: 'ms', better: 'lower' },
  { key: 'latency-p95', workload: 'latency', metric: 'p95Ms', title: 'Latency p95', unit: 'ms', better: 'lower' },
  { key: 'latency-p99', workload: 'latency', metric: 'p99Ms', title: 'Latency p99', unit: 'ms', better: 'lower' },
  { key: 'latency-enqueue', workload: 'latency', metric: 'enqueueCallP50Ms', title: 'Latency: enqueue call alone, p50', unit: 'ms', better: 'lower' },
  { key: 'latency-cold-first', workload: 'latency-cold', metric: 'firstMs', title: 'First enqueues after start: the first job', unit: 'ms', better: 'lower' },
  { key: 'latency-cold-p95', workload: 'latency-cold', metric: 'coldP95Ms', title: 'First enqueues after start: p95 of the first 20', unit: 'ms', better: 'lower' },
  { key: 'latency-cold-steady-p95', workload: 'latency-cold', metric: 'steadyP95Ms', title: 'First enqueues after start: steady-state p95 (second half)', unit: 'ms', better: 'lower' },
  { key: 'latency-cold-ratio', workload: 'latency-cold', metric: 'coldToSteadyP95', title: 'First enqueues after start: p95 first 20 ÷ steady p95', unit: '×', better: 'lower' },
  { key: 'latency-cold-producer', workload: 'latency-cold', metric: 'producerSetupMs', title: 'First enqueues after start: creating the producer', unit: 'ms', better: 'lower' },
  { key: 'rss-c100', workload: 'drain-c100', metric: 'rssPeakMiB', title: 'Worker peak RSS, concurrency 100', unit: 'MiB', better: 'lower' },
  { key: 'rss-io', workload: 'drain-io', metric: 'rssPeakMiB', title: `Worker peak RSS, I/O-bound drain, concurrency ${IO_CONCURRENCY.toLocaleString('en-US')}`, unit: 'MiB', better: 'lower' },
  { key: 'steady', workload: 'steady', metric: 'processedPerSec', title: 'Steady state (backlog ≤ 2,000), processed', unit: 'jobs/s', better: 'higher' },
  { key: 'steady-backlog', workload: 'steady', metric: 'backlogGrowthPerSec', title: 'Steady state, backlog growth', unit: 'jobs/s', better: 'lower' },
  { key: 'drain-backlog', workload: 'drain-backlog', metric: 'jobsPerSec', title: 'Drain c=100 with a large backlog waiting', unit: 'jobs/s', better: 'higher' },
  { key: 'drain-backlog-settled', workload: 'drain-backlog-settled', metric: 'jobsPerSec', title: 'Drain c=100 with a large backlog waiting, database settled', unit: 'jobs/s', better: 'higher' },
  { key: 'drain-finished', workload: 'drain-finished', metric: 'jobsPerSec', title: 'Drain c=100 with a large number of finished jobs kept', unit: 'jobs/s', better: 'higher' },
  { key: 'drain-idle-txn', workload: 'drain-idle-txn', metric: 'jobsPerSec', title: 'Drain c=100, a session idle in transaction', unit: 'jobs/s', better: 'higher' },
];

export function fullConfig(): BenchConfig {
  return {
    quick: false,
    rounds: 3,
    enqueueMs: 2_000,
    enqueueWarmup: 50,
    bulkMs: 2_000,
    bulkMaxCalls: 100,
    // Issue 3 asks for 50,000; 20,000 keeps a full run near 20 minutes on 2 cores (--jobs 50000 for the full size).
    drainJobs: 20_000,
    // 1 s at the ideal rate; a system at a tenth of it still finishes within drainCapMs.
    ioJobs: 20_000,
    drainCapMs: 20_000,
    drainCapOverrides: { 'pg-boss': 10_000 },
    backlogJobs: 1_000_000,
    steadyMs: 60_000,
    latencySamples: 150,
    latencyBudgetMs: 6_000,
    latencyGapMs: 10,
    processes: 4,
    coldSamples: 20,
    rttMs: null,
  };
}

export function quickConfig(): BenchConfig {
  return {
    quick: true,
    rounds: 1,
    enqueueMs: 500,
    enqueueWarmup: 5,
    bulkMs: 500,
    bulkMaxCalls: 5,
    drainJobs: 1_000,
    // Five rounds of the 1,000 slots: a few hundred ms at the ideal rate.
    ioJobs: 5_000,
    drainCapMs: 30_000,
    drainCapOverrides: {},
    backlogJobs: 10_000,
    steadyMs: 3_000,
    latencySamples: 10,
    latencyBudgetMs: 3_000,
    latencyGapMs: 10,
    processes: 4,
    coldSamples: 20,
    rttMs: null,
  };
}
