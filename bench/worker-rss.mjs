/**
 * One worker process as an application runs it: plain Node.js, no
 * TypeScript loader, pgq from its build (`dist/`, what the package ships)
 * and graphile-worker from node_modules. The main benchmark's children run
 * under tsx, which holds every loaded module's source and adds tens of MiB
 * that grow with the module count; this file has no such loader, so the
 * peak RSS it reports is the worker's own.
 *
 *   node bench/worker-rss.mjs migrate|seed|drain SYSTEM DATABASE_URL [JOBS] [CONCURRENCY]
 *   node --expose-gc bench/worker-rss.mjs imports SYSTEM
 *
 * SYSTEM is pgq or graphile-worker-tuned (its Performance page's settings).
 * `drain` starts the worker, waits until JOBS no-op jobs are done and prints
 * one JSON line: { jobs, ms, jobsPerSec, peakRssMiB, rssAtStartMiB }; with
 * RSS_TRACE=1 it also prints rss/heapTotal/heapUsed/external/arrayBuffers
 * (MiB) every 50 ms to stderr. `imports` loads, in a fresh process (with `pg`
 * loaded, as this file imports it), zod (pgq's dependency; graphile-worker
 * has none), then the system's package, and prints the RSS each added:
 * { zodMiB, ownMiB, threadMiB } (threadMiB, pgq only: a bare Node.js worker
 * thread started after it, the floor of pgq's lease thread, which runs on
 * one). Run by bench/rss.ts (`npm run bench:rss`);
 * kept as JavaScript on purpose.
 */
import pg from 'pg';

const [mode, system, databaseUrl, jobsArg = '20000', concurrencyArg = '100'] = process.argv.slice(2);
const jobs = Number(jobsArg);
const concurrency = Number(concurrencyArg);
const mib = (bytes) => Math.round((bytes / 1024 / 1024) * 10) / 10;

if (mode === 'imports' && ['pgq', 'graphile-worker-tuned'].includes(system ?? '')) {
  // What loading each costs before any work: RSS after a full collection.
  const rss = () => {
    globalThis.gc?.();
    return process.memoryUsage().rss;
  };
  const afterPg = rss();
  if (system === 'pgq') await import('zod');
  const afterZod = rss();
  await import(system === 'pgq' ? '../dist/index.js' : 'graphile-worker');
  const afterOwn = rss();
  // pgq renews its lease on a thread of its own (so that a handler blocking
  // the event loop does not cost the lease): what a Node.js worker thread
  // costs by itself, before pgq's renewer loads pg into it and connects.
  let threadMiB = null;
  if (system === 'pgq') {
    const { Worker } = await import('node:worker_threads');
    const thread = new Worker("require('node:worker_threads').parentPort.postMessage('up'); setInterval(() => {}, 1000);", { eval: true, execArgv: [] });
    await new Promise((resolve) => thread.once('message', resolve));
    await new Promise((resolve) => setTimeout(resolve, 300));
    threadMiB = mib(rss() - afterOwn);
  }
  process.stdout.write(`${JSON.stringify({ zodMiB: mib(afterZod - afterPg), ownMiB: mib(afterOwn - afterZod), threadMiB })}\n`);
  process.exit(0);
}
if (!['migrate', 'seed', 'drain'].includes(mode ?? '') || !['pgq', 'graphile-worker-tuned'].includes(system ?? '') || !databaseUrl) {
  process.stderr.write('usage: node bench/worker-rss.mjs migrate|seed|drain pgq|graphile-worker-tuned DATABASE_URL [JOBS] [CONCURRENCY]\n       node --expose-gc bench/worker-rss.mjs imports pgq|graphile-worker-tuned\n');
  process.exit(2);
}

/** Peak resident set size of this process so far (the kernel's high-water mark). */
const peakRssMiB = () => mib(process.resourceUsage().maxRSS * 1024);

let done = 0;
let finished;
const allDone = new Promise((resolve) => (finished = resolve));
const onJob = () => {
  done += 1;
  if (done === jobs) finished();
};

async function runPgq() {
  const { Pgq, defineTask } = await import('../dist/index.js');
  const { z } = await import('zod');
  const task = defineTask({ name: 'bench-noop', schema: z.object({ i: z.number().int() }), handler: () => { onJob(); return null; } });
  const pgq = new Pgq({ connectionString: databaseUrl, tasks: [task] });
  try {
    if (mode === 'migrate') return await pgq.migrate();
    if (mode === 'seed') {
      for (let i = 0; i < jobs; i += 1_000) await pgq.enqueueMany(task, Array.from({ length: Math.min(1_000, jobs - i) }, (_, k) => ({ i: i + k })));
      return;
    }
    const worker = pgq.worker({ concurrency });
    return await timeDrain(() => worker.start(), () => worker.stop());
  } finally {
    await pgq.close();
  }
}

async function runGraphile() {
  const { Logger, makeWorkerUtils, run, runMigrations } = await import('graphile-worker');
  const logger = new Logger(() => (level, message) => {
    if (level === 'error') console.error(`graphile-worker: ${message}`);
  });
  if (mode === 'migrate') return runMigrations({ connectionString: databaseUrl, logger });
  if (mode === 'seed') {
    const utils = await makeWorkerUtils({ connectionString: databaseUrl, logger });
    try {
      for (let i = 0; i < jobs; i += 1_000) {
        await utils.addJobs(Array.from({ length: Math.min(1_000, jobs - i) }, (_, k) => ({ identifier: 'bench_noop', payload: { i: i + k } })));
      }
    } finally {
      await utils.release();
    }
    return;
  }
  let runner;
  return timeDrain(
    async () => {
      runner = await run({
        connectionString: databaseUrl,
        concurrency,
        noHandleSignals: true,
        logger,
        crontab: '',
        maxPoolSize: 25,
        preset: { worker: { localQueue: { size: 500 }, completeJobBatchDelay: 0, failJobBatchDelay: 0 } },
        taskList: { bench_noop: async () => onJob() },
      });
    },
    () => runner.stop(),
  );
}

/** Starts the worker, waits for every job to have run and for the table to say so, stops it, prints the figures. */
async function timeDrain(start, stop) {
  const probe = new pg.Client({ connectionString: databaseUrl });
  await probe.connect();
  const rssAtStartMiB = mib(process.memoryUsage().rss);
  const t0 = performance.now();
  const samples = [];
  const sampler = process.env.RSS_TRACE
    ? setInterval(() => {
        const u = process.memoryUsage();
        samples.push([u.rss, u.heapTotal, u.heapUsed, u.external, u.arrayBuffers].map(mib).join('/'));
      }, 50)
    : undefined;
  await start();
  await allDone;
  // Every handler ran; wait until the outcomes are written too.
  const left =
    system === 'pgq'
      ? "SELECT count(*)::int AS n FROM pgq.jobs WHERE state <> 'succeeded'"
      : 'SELECT count(*)::int AS n FROM graphile_worker._private_jobs';
  while ((await probe.query(left)).rows[0].n > 0) await new Promise((r) => setTimeout(r, 5));
  const ms = performance.now() - t0;
  clearInterval(sampler);
  if (samples.length) console.error(samples.join(' '));
  await stop();
  await probe.end();
  process.stdout.write(`${JSON.stringify({ jobs, ms: Math.round(ms), jobsPerSec: Math.round((jobs / ms) * 1000), peakRssMiB: peakRssMiB(), rssAtStartMiB })}\n`);
}

await (system === 'pgq' ? runPgq() : runGraphile());
