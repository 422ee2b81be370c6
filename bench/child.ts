/**
 * One benchmark run in a process of its own: one system, one workload, one
 * fresh database. Started by bench/run.ts with the spec as JSON in argv[2];
 * answers with one `process.send(ChildResult)` and exits. It bounds its own
 * run time (BENCH_CHILD_TIMEOUT_MS) and closes every pool, worker and child
 * process it opened, so a clean exit is part of a passing run.
 *
 * Roles: migrate (into a template database), enqueue (one at a time from N
 * connections), enqueue-bulk, drain (seeds the jobs, then times 1..k worker
 * processes), latency (enqueues one job at a time, a worker process measures
 * enqueue-to-handler-start; with coldSamples, from the first job after
 * start), worker (a worker process driven over IPC).
 *
 * Seeding, probes and the idle transaction use env.setupDatabaseUrl when
 * given (direct to PostgreSQL): under --rtt-ms only the system under test
 * goes through the delay proxy.
 */
import { fork, type ChildProcess } from 'node:child_process';
import pg from 'pg';
import { fileURLToPath } from 'node:url';
import { loadSystem } from './systems/index.js';
import type { ChildResult, ChildSpec, ParentMessage, WorkerMessage } from './lib/spec.js';
import type { Payload, RunEnv, System } from './lib/types.js';
import { epochMs, percentile, sleep } from './lib/stats.js';
import { waitExit } from './lib/child-process.js';

const HERE = fileURLToPath(import.meta.url);
const MIN_LATENCY_SAMPLES = 5;
const timeoutMs = Number(process.env.BENCH_CHILD_TIMEOUT_MS ?? 300_000);
const children = new Set<ChildProcess>();

const deadline = setTimeout(() => {
  console.error(`bench child: over its ${timeoutMs} ms limit, exiting`);
  for (const c of children) c.kill('SIGKILL');
  process.exit(3);
}, timeoutMs);
deadline.unref();
process.on('exit', () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
});

/** The run's environment as the harness's own setup and checks use it: direct to PostgreSQL. */
function setupEnv(env: RunEnv): RunEnv {
  return env.setupDatabaseUrl ? { ...env, databaseUrl: env.setupDatabaseUrl } : env;
}

/** Once a process has done its work it should exit on its own; if it lingers, say what keeps it alive. */
function reportLingering(what: string): void {
  setTimeout(() => {
    console.error(`bench ${what} (pid ${process.pid}) still running 5 s after finishing; active resources: ${process.getActiveResourcesInfo().join(', ')}`);
  }, 5_000).unref();
}

function answer(result: ChildResult): Promise<void> {
  return new Promise((resolve) => {
    if (process.send) process.send(result, () => resolve());
    else {
      console.log(JSON.stringify(result));
      resolve();
    }
  });
}

async function main(): Promise<void> {
  const spec = JSON.parse(process.argv[2] ?? '{}') as ChildSpec;
  if (spec.role === 'baseline') {
    (globalThis as { gc?: () => void }).gc?.();
    await answer({ ok: true, metrics: { rssMiB: process.memoryUsage.rss() / 2 ** 20 }, checks: {} });
    process.disconnect?.();
    return;
  }
  const system = await loadSystem(spec.system);
  if (spec.role === 'worker') return workerRole(system, spec);
  let result: ChildResult;
  try {
    switch (spec.role) {
      case 'migrate':
        await system.migrate(spec.env);
        result = { ok: true, metrics: {}, checks: {} };
        break;
      case 'enqueue':
        result = await enqueueRole(system, spec);
        break;
      case 'enqueue-bulk':
        result = await enqueueBulkRole(system, spec);
        break;
      case 'drain':
        result = await drainRole(system, spec);
        break;
      case 'latency':
        result = await latencyRole(system, spec);
        break;
      case 'steady':
        result = await steadyRole(system, spec);
        break;
    }
  } catch (err) {
    result = { ok: false, metrics: {}, checks: {}, error: err instanceof Error ? (err.stack ?? err.message) : String(err) };
  }
  await answer(result);
  // Nothing left open keeps the process alive: it exits on its own here, which the orchestrator checks.
  process.disconnect?.();
  reportLingering(`${spec.role} ${spec.system}`);
}

/** Single enqueues from `connections` concurrent sequential loops, for `durationMs`. */
async function enqueueRole(system: System, spec: Extract<ChildSpec, { role: 'enqueue' }>): Promise<ChildResult> {
  const producer = await system.producer(spec.env, { poolSize: Math.max(spec.connections, 2) });
  let next = 0;
  try {
    for (let k = 0; k < spec.warmup; k += 1) await producer.add({ i: next++ });
    let ops = 0;
    const t0 = performance.now();
    const end = t0 + spec.durationMs;
    await Promise.all(
      Array.from({ length: spec.connections }, async () => {
        while (performance.now() < end) {
          await producer.add({ i: next++ });
          ops += 1;
        }
      }),
    );
    const elapsed = performance.now() - t0;
    const probe = await system.probe(setupEnv(spec.env));
    const total = await probe.total();
    await probe.close();
    return {
      ok: total === next,
      metrics: { opsPerSec: (ops / elapsed) * 1000, ops, elapsedMs: elapsed },
      checks: { rowsWritten: total, callsMade: next, allWritten: total === next },
    };
  } finally {
    await producer.close();
  }
}

/** Bulk enqueue, `batch` jobs per call, sequential calls, for `durationMs` or `maxCalls`. */
async function enqueueBulkRole(system: System, spec: Extract<ChildSpec, { role: 'enqueue-bulk' }>): Promise<ChildResult> {
  const producer = await system.producer(spec.env, { poolSize: 2 });
  let next = 0;
  const batch = (): Payload[] => Array.from({ length: spec.batch }, () => ({ i: next++ }));
  try {
    for (let k = 0; k < spec.warmupCalls; k += 1) await producer.addMany(batch());
    let calls = 0;
    const t0 = performance.now();
    const end = t0 + spec.durationMs;
    while (calls < spec.maxCalls && (calls === 0 || performance.now() < end)) {
      const payloads = batch();
      await producer.addMany(payloads);
      calls += 1;
    }
    const elapsed = performance.now() - t0;
    const probe = await system.probe(setupEnv(spec.env));
    const total = await probe.total();
    await probe.close();
    return {
      ok: total === next,
      metrics: { jobsPerSec: ((calls * spec.batch) / elapsed) * 1000, calls, elapsedMs: elapsed },
      checks: { rowsWritten: total, jobsSent: next, allWritten: total === next },
    };
  } finally {
    await producer.close();
  }
}

function spawnWorker(spec: Exclude<ChildSpec, { role: 'baseline' }>, concurrency: number, report: 'count' | 'latency', handlerDelayMs?: number): ChildProcess {
  const workerSpec: ChildSpec = { role: 'worker', system: spec.system, env: spec.env, concurrency, report, ...(handlerDelayMs ? { handlerDelayMs } : {}) };
  const extra = process.env.BENCH_WORKER_EXEC_ARGV?.split(' ').filter(Boolean) ?? [];
  const child = fork(HERE, [JSON.stringify(workerSpec)], {
    execArgv: [...process.execArgv, ...extra],
    env: { ...process.env, BENCH_CHILD_TIMEOUT_MS: String(timeoutMs) },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  children.add(child);
  child.on('exit', () => children.delete(child));
  return child;
}

function nextMessage<T extends WorkerMessage['type']>(child: ChildProcess, type: T, ms: number): Promise<Extract<WorkerMessage, { type: T }>> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => done(new Error(`worker sent no ${type} within ${ms} ms`)), ms);
    const onMessage = (msg: WorkerMessage): void => {
      if (msg.type === type) done(null, msg as Extract<WorkerMessage, { type: T }>);
    };
    // A message sent just before exiting can arrive after 'exit': give it a moment.
    const onExit = (code: number | null): void => {
      setTimeout(() => done(new Error(`worker exited (${code}) before sending ${type}`)), 200);
    };
    let settled = false;
    function done(err: Error | null, msg?: Extract<WorkerMessage, { type: T }>): void {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      child.off('message', onMessage);
      child.off('exit', onExit);
      if (err) reject(err);
      else resolve(msg!);
    }
    child.on('message', onMessage);
    child.on('exit', onExit);
  });
}


/**
 * Seeds `jobs` waiting jobs with the bulk API, then starts `processes` worker
 * processes together and times until the system reports every job finished
 * (or `capMs` passes: then the rate is over what finished by then). With
 * `handlerDelayMs` the jobs are I/O-bound (each handler awaits a timer) and
 * the result also gives the ideal rate, every slot always busy
 * (concurrency ÷ delay), and the share of it reached.
 */
async function drainRole(system: System, spec: Extract<ChildSpec, { role: 'drain' }>): Promise<ChildResult> {
  const seedJobs = Math.max(spec.jobs, spec.seedJobs ?? spec.jobs);
  let idle: pg.Client | undefined;
  if (spec.idleTransaction) {
    if (system.backend !== 'postgres') throw new Error('idleTransaction needs a PostgreSQL system');
    idle = new pg.Client({ connectionString: setupEnv(spec.env).databaseUrl });
    await idle.connect();
    await idle.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
    await idle.query('SELECT txid_current()');
  }
  if (spec.finishedJobs) {
    if (!system.seedFinished) throw new Error(`${system.name} keeps no finished jobs to seed`);
    await system.seedFinished(setupEnv(spec.env), spec.finishedJobs);
  }
  const producer = await system.producer(setupEnv(spec.env), { poolSize: 2 });
  try {
    for (let from = 0; from < seedJobs; from += 5_000) {
      const n = Math.min(5_000, seedJobs - from);
      await producer.addMany(Array.from({ length: n }, (_, k) => ({ i: from + k })));
    }
  } finally {
    await producer.close();
  }
  if (spec.settle) {
    // What a million rows just written leave PostgreSQL to do (autovacuum and
    // autoanalyze of the table, a checkpoint and the full-page writes after it)
    // done before the clock starts instead of during the drain.
    const settling = new pg.Client({ connectionString: setupEnv(spec.env).databaseUrl });
    await settling.connect();
    try {
      await settling.query('VACUUM ANALYZE');
      await settling.query('CHECKPOINT');
    } finally {
      await settling.end();
    }
  }
  try {
    return await timedDrain(system, spec, seedJobs);
  } finally {
    await idle?.query('ROLLBACK').catch(() => undefined);
    await idle?.end();
  }
}

async function timedDrain(system: System, spec: Extract<ChildSpec, { role: 'drain' }>, seedJobs: number): Promise<ChildResult> {
  const probe = await system.probe(setupEnv(spec.env));
  const seeded = await probe.total();
  const perProcess = Math.max(1, Math.round(spec.concurrency / spec.processes));
  const workers = Array.from({ length: spec.processes }, () => spawnWorker(spec, perProcess, 'count', spec.handlerDelayMs));
  const counts = new Map<ChildProcess, number>();
  for (const w of workers) {
    w.on('message', (msg: WorkerMessage) => {
      if (msg.type === 'progress') counts.set(w, msg.count);
    });
  }
  await Promise.all(workers.map((w) => nextMessage(w, 'ready', 60_000)));
  const t0 = performance.now();
  for (const w of workers) w.send({ type: 'go' } satisfies ParentMessage);
  let finished = 0;
  let capped = false;
  // Workers count handler starts. A no-op job finishes as it starts, so the
  // store is asked from 98% on; an I/O-bound one finishes handlerDelayMs
  // after its start (longer than the 20 ms between progress reports), so
  // the store is asked only once every job has started: the probe's count
  // queries do not load the database while a thousand jobs are still running.
  const probeFrom = spec.handlerDelayMs ? spec.jobs : spec.jobs * 0.98;
  for (;;) {
    const reported = [...counts.values()].reduce((a, b) => a + b, 0);
    if (reported >= probeFrom) {
      finished = await probe.finished(seedJobs);
      if (finished >= spec.jobs) break;
    }
    if (performance.now() - t0 > spec.capMs) {
      finished = await probe.finished(seedJobs);
      capped = finished < spec.jobs;
      break;
    }
    await sleep(reported >= probeFrom ? 2 : 10);
  }
  const elapsed = capped ? spec.capMs : performance.now() - t0;
  const dones = workers.map((w) => nextMessage(w, 'done', 60_000));
  for (const w of workers) w.send({ type: 'stop' } satisfies ParentMessage);
  const results = await Promise.all(dones);
  const exited = await Promise.all(workers.map((w) => waitExit(w, 15_000)));
  const finalFinished = await probe.finished(seedJobs);
  await probe.close();
  const seen = new Uint8Array(seedJobs);
  let calls = 0;
  let distinct = 0;
  for (const r of results) {
    calls += r.count;
    for (const i of r.seen) {
      if (i >= 0 && i < seedJobs && seen[i] === 0) {
        seen[i] = 1;
        distinct += 1;
      }
    }
  }
  // With a larger backlog, the workers go on past `jobs` until stopped; what they ran must be distinct and finished.
  const allProcessed = !capped && distinct >= spec.jobs && finalFinished >= spec.jobs && (seedJobs > spec.jobs || distinct === seedJobs);
  const jobsPerSec = (finished / elapsed) * 1000;
  const idealJobsPerSec = spec.handlerDelayMs ? ((perProcess * spec.processes) / spec.handlerDelayMs) * 1000 : null;
  return {
    ok: seeded === seedJobs && (capped || allProcessed) && exited.every(Boolean),
    metrics: {
      jobsPerSec,
      ...(idealJobsPerSec ? { idealJobsPerSec, idealPercent: (100 * jobsPerSec) / idealJobsPerSec } : {}),
      elapsedMs: elapsed,
      finished,
      rssPeakMiB: Math.max(...results.map((r) => r.rssPeak)) / 2 ** 20,
      rssStartMiB: Math.max(...results.map((r) => r.rssStart)) / 2 ** 20,
    },
    checks: {
      seeded,
      capped,
      distinctJobsRun: distinct,
      duplicateRuns: calls - distinct,
      handlerCalls: calls,
      finishedInStore: finalFinished,
      allProcessed,
      workersExitedCleanly: exited.every(Boolean),
    },
  };
}

/**
 * Sequential samples: enqueue one job, a worker process (idle until then)
 * reports handler start minus enqueue time. Warm (default): the worker
 * settles for 300 ms and the first `warmup` samples are dropped. Cold
 * (`coldSamples`): the producer is created once the worker's start() has
 * resolved and its first call is sample 0; the first coldSamples are
 * reported against the steady state, the second half of the run.
 */
async function latencyRole(system: System, spec: Extract<ChildSpec, { role: 'latency' }>): Promise<ChildResult> {
  const cold = spec.coldSamples !== undefined;
  const worker = spawnWorker(spec, 10, 'latency');
  const waiting = new Map<number, (ms: number) => void>();
  worker.on('message', (msg: WorkerMessage) => {
    if (msg.type === 'job') waiting.get(msg.i)?.(msg.latencyMs);
  });
  const samples: number[] = [];
  const enqueueCalls: number[] = [];
  let timeouts = 0;
  let producer: Awaited<ReturnType<System['producer']>> | undefined;
  let producerSetupMs: number | null = null;
  try {
    if (!cold) producer = await system.producer(spec.env, { poolSize: 2 });
    await nextMessage(worker, 'ready', 60_000);
    const started = nextMessage(worker, 'started', 60_000);
    worker.send({ type: 'go' } satisfies ParentMessage);
    if (cold) {
      await started;
      const t = performance.now();
      producer = await system.producer(spec.env, { poolSize: 2 });
      producerSetupMs = performance.now() - t;
    } else {
      started.catch(() => undefined);
      await sleep(300); // let the worker settle into idle
    }
    // Pollers take a poll interval per sample: one warm-up sample for them, and the time budget
    // (counted after warm-up) may end the run once a few samples are in (a cold run: once the
    // first coldSamples and as many again are in).
    const warmup = cold ? 0 : system.latencyJitterMs ? 1 : spec.warmup;
    const minSamples = cold ? 2 * spec.coldSamples! : MIN_LATENCY_SAMPLES;
    let t0 = performance.now();
    for (let i = 0; i < warmup + spec.samples; i += 1) {
      if (i === warmup) t0 = performance.now();
      if (i >= warmup && performance.now() - t0 > spec.budgetMs && samples.length >= minSamples) break;
      const seen = new Promise<number | null>((resolve) => {
        const timer = setTimeout(() => resolve(null), spec.sampleTimeoutMs);
        waiting.set(i, (ms) => {
          clearTimeout(timer);
          resolve(ms);
        });
      });
      const sent = epochMs();
      await producer!.add({ i, t: sent });
      if (i >= warmup) enqueueCalls.push(epochMs() - sent);
      const ms = await seen;
      waiting.delete(i);
      if (ms === null) timeouts += 1;
      else if (i >= warmup) samples.push(ms);
      // An uneven gap, so samples do not phase-lock with a poller.
      await sleep(spec.gapMs * (0.5 + Math.random()) + Math.random() * (system.latencyJitterMs ?? 0));
    }
  } finally {
    await producer?.close();
    const done = nextMessage(worker, 'done', 30_000).catch(() => null);
    if (worker.connected) worker.send({ type: 'stop' } satisfies ParentMessage);
    await done;
    await waitExit(worker, 15_000);
  }
  const mean = samples.length ? samples.reduce((a, b) => a + b, 0) / samples.length : null;
  const coldMetrics: Record<string, number | null> = {};
  if (cold) {
    const first = samples.slice(0, spec.coldSamples);
    const steady = samples.slice(Math.max(spec.coldSamples!, Math.floor(samples.length / 2)));
    const coldP95 = percentile(first, 95);
    const steadyP95 = percentile(steady, 95);
    Object.assign(coldMetrics, {
      firstMs: samples[0] ?? null,
      coldP95Ms: coldP95,
      coldMaxMs: first.length ? Math.max(...first) : null,
      steadyP95Ms: steadyP95,
      steadySamples: steady.length,
      coldToSteadyP95: coldP95 !== null && steadyP95 ? coldP95 / steadyP95 : null,
      producerSetupMs,
      // The first enqueue calls themselves: connecting, preparing, first statements.
      firstEnqueueCallMs: enqueueCalls[0] ?? null,
      coldEnqueueCallP95Ms: percentile(enqueueCalls.slice(0, spec.coldSamples), 95),
    });
  }
  return {
    ok: samples.length > 0 && timeouts === 0 && (!cold || samples.length >= 2 * spec.coldSamples!),
    metrics: {
      p50Ms: percentile(samples, 50),
      p95Ms: percentile(samples, 95),
      p99Ms: percentile(samples, 99),
      meanMs: mean,
      maxMs: samples.length ? Math.max(...samples) : null,
      samples: samples.length,
      // How much of the latency is the enqueue call itself (validate, insert, commit).
      enqueueCallP50Ms: percentile(enqueueCalls, 50),
      ...coldMetrics,
    },
    checks: { timeouts, samples: samples.length },
  };
}

/**
 * Producers and a worker process together, closed loop: `producers` loops
 * enqueue batches of `batch` as fast as they can while the backlog
 * (enqueued − processed, as the worker reports it every 20 ms) is under
 * `maxBacklog`, and wait while it is not. The processing rate after the
 * warm-up is the throughput the system sustains with producers competing for
 * the same machine and no growing backlog; the backlog growth is reported to
 * show it stayed bounded.
 */
async function steadyRole(system: System, spec: Extract<ChildSpec, { role: 'steady' }>): Promise<ChildResult> {
  const worker = spawnWorker(spec, spec.concurrency, 'count');
  let processed = 0;
  worker.on('message', (msg: WorkerMessage) => {
    if (msg.type === 'progress') processed = msg.count;
  });
  const producer = await system.producer(spec.env, { poolSize: spec.producers + 1 });
  let enqueued = 0;
  let next = 0;
  let stopping = false;
  await nextMessage(worker, 'ready', 60_000);
  worker.send({ type: 'go' } satisfies ParentMessage);
  const start = performance.now();
  const loops = Array.from({ length: spec.producers }, async () => {
    while (!stopping) {
      if (enqueued - processed >= spec.maxBacklog) {
        await sleep(1);
        continue;
      }
      const payloads = Array.from({ length: spec.batch }, () => ({ i: next++ }));
      await producer.addMany(payloads);
      enqueued += payloads.length;
    }
  });
  await sleep(spec.warmupMs);
  const at0 = { t: performance.now(), enqueued, processed };
  await sleep(spec.durationMs);
  const at1 = { t: performance.now(), enqueued, processed };
  stopping = true;
  await Promise.all(loops);
  await producer.close();
  // Let the worker catch up (bounded), so every enqueued job is checked.
  const probe = await system.probe(setupEnv(spec.env));
  const catchUpUntil = performance.now() + 60_000;
  let finished = await probe.finished(next);
  while (finished < next && performance.now() < catchUpUntil) {
    await sleep(50);
    finished = await probe.finished(next);
  }
  await probe.close();
  const done = nextMessage(worker, 'done', 60_000);
  worker.send({ type: 'stop' } satisfies ParentMessage);
  const result = await done;
  const exited = await waitExit(worker, 15_000);
  const seconds = (at1.t - at0.t) / 1000;
  const distinct = new Set(result.seen).size;
  return {
    ok: finished === next && distinct === next && exited,
    metrics: {
      processedPerSec: (at1.processed - at0.processed) / seconds,
      enqueuedPerSec: (at1.enqueued - at0.enqueued) / seconds,
      backlogGrowthPerSec: (at1.enqueued - at1.processed - (at0.enqueued - at0.processed)) / seconds,
      backlogAtEnd: at1.enqueued - at1.processed,
      maxBacklog: spec.maxBacklog,
      totalSeconds: (performance.now() - start) / 1000,
    },
    checks: { enqueued: next, finishedInStore: finished, distinctJobsRun: distinct, workerExitedCleanly: exited },
  };
}

/** A worker process: builds the consumer, says ready, starts on `go`, reports, stops on `stop`. */
async function workerRole(system: System, spec: Extract<ChildSpec, { role: 'worker' }>): Promise<void> {
  const send = (msg: WorkerMessage): void => {
    if (process.connected) process.send!(msg);
  };
  let count = 0;
  const seen: number[] = [];
  const consumer = await system.consumer(spec.env, {
    concurrency: spec.concurrency,
    ...(spec.handlerDelayMs ? { handlerDelayMs: spec.handlerDelayMs } : {}),
    onJob(payload) {
      count += 1;
      seen.push(payload.i);
      if (spec.report === 'latency' && payload.t !== undefined) send({ type: 'job', i: payload.i, latencyMs: epochMs() - payload.t });
    },
  });
  (globalThis as { gc?: () => void }).gc?.();
  const rssStart = process.memoryUsage.rss();
  let rssPeak = rssStart;
  const sampler = setInterval(() => {
    rssPeak = Math.max(rssPeak, process.memoryUsage.rss());
    if (spec.report === 'count') send({ type: 'progress', count });
  }, 20);
  send({ type: 'ready', rss: rssStart });
  const stop = new Promise<void>((resolve) => {
    process.on('message', (msg: ParentMessage) => {
      if (msg.type === 'go') {
        consumer
          .start()
          .then(() => send({ type: 'started' }))
          .catch((err: unknown) => console.error('bench worker: start failed', err));
      }
      if (msg.type === 'stop') resolve();
    });
    process.on('disconnect', () => resolve());
  });
  await stop;
  rssPeak = Math.max(rssPeak, process.memoryUsage.rss());
  clearInterval(sampler);
  await consumer.stop();
  // Disconnect only once the message is handed over, or it may be lost with the channel.
  if (process.connected) await new Promise<void>((resolve) => process.send!({ type: 'done', count, seen, rssPeak, rssStart } satisfies WorkerMessage, () => resolve()));
  process.disconnect?.();
  reportLingering(`worker ${spec.system}`);
}

main().catch((err: unknown) => {
  console.error('bench child failed', err);
  process.exitCode = 1;
  process.disconnect?.();
});
