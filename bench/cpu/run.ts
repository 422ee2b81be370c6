/**
 * CPU-bound jobs: one worker process drains N jobs of a fixed computation
 * (chained SHA-256) with the handler on its main thread, then sandboxed in a
 * pool of 2 threads; the machine's own ceiling for that ratio (the same
 * computation in 1 and then 2 bare worker threads, no pgq, no database);
 * and the per-job cost of a sandbox round trip for a no-op handler (thread
 * and process), measured through the worker's sandbox runner without the
 * database.
 *
 *   npm run bench:cpu [-- --jobs 300 --rounds 300]
 */
import { parseArgs } from 'node:util';
import { Worker } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';
import { z } from 'zod';
import pg from 'pg';
import { Pgq, defineTask, sandboxed, type AnyTask, type JobContext } from '../../src/index.js';
import { resolveWorkerOptions } from '../../src/config.js';
import { DEFAULTS } from '../../src/core/defaults.js';
import { SandboxRunner } from '../../src/sandbox/sandbox-runner.js';
import { TaskRegistry } from '../../src/task.js';
import { answers, startEmbedded, type EmbeddedServer } from '../lib/embedded.js';
import type hashHandler from './hash.job.js';
import type { noop } from './hash.job.js';
import { hashRounds } from './work.js';

const { values } = parseArgs({ options: { jobs: { type: 'string', default: '300' }, rounds: { type: 'string', default: '300' }, trips: { type: 'string', default: '300' } } });
const JOBS = Number(values.jobs);
const ROUNDS = Number(values.rounds);
const TRIPS = Number(values.trips);
const module = new URL('./hash.job.js', import.meta.url);
const schema = z.object({ rounds: z.number().int() });

const mainThreadHash = defineTask({ name: 'hash', schema, maxAttempts: 1, handler: ({ rounds }) => hashRounds(rounds) });
const sandboxedHash = defineTask({ name: 'hash', schema, maxAttempts: 1, sandbox: sandboxed<typeof hashHandler>({ module, kind: 'thread' }) });

async function drain(url: string, label: string, task: AnyTask, workerOptions: Parameters<Pgq['worker']>[0]): Promise<number> {
  const schemaName = `bench_cpu_${label}`;
  const admin = new pg.Pool({ connectionString: url, max: 1 });
  await admin.query(`DROP SCHEMA IF EXISTS ${schemaName} CASCADE`);
  const pgq = new Pgq({ connectionString: url, schema: schemaName, tasks: [task] });
  await pgq.migrate();
  const worker = pgq.worker(workerOptions);
  await worker.start();
  const succeeded = async (): Promise<number> =>
    Number((await admin.query<{ n: string }>(`SELECT count(*) AS n FROM ${schemaName}.jobs WHERE state = 'succeeded'`)).rows[0]!.n);
  const waitFor = async (n: number): Promise<void> => {
    while ((await succeeded()) < n) await new Promise((r) => setTimeout(r, 10));
  };
  // Warm-up with full jobs, so that both sandbox threads are started and their modules loaded.
  await pgq.enqueueMany(task, Array.from({ length: 4 }, () => ({ rounds: ROUNDS })));
  await waitFor(4);
  const started = performance.now();
  await pgq.enqueueMany(task, Array.from({ length: JOBS }, () => ({ rounds: ROUNDS })));
  await waitFor(4 + JOBS);
  const seconds = (performance.now() - started) / 1000;
  await worker.stop();
  await pgq.close();
  await admin.query(`DROP SCHEMA IF EXISTS ${schemaName} CASCADE`);
  await admin.end();
  return JOBS / seconds;
}

/** Seconds for `threads` bare worker threads to hash `jobs` jobs each, all at once. */
async function bareThreads(threads: number, jobs: number): Promise<number> {
  const code = `
    const { createHash } = require('node:crypto');
    const { parentPort, workerData } = require('node:worker_threads');
    const block = Buffer.alloc(64 * 1024, 7);
    for (let j = 0; j < workerData.jobs; j += 1) {
      let digest = Buffer.alloc(32);
      for (let i = 0; i < workerData.rounds; i += 1) digest = createHash('sha256').update(digest).update(block).digest();
    }
    parentPort.postMessage('done');`;
  const started = performance.now();
  await Promise.all(
    Array.from(
      { length: threads },
      () =>
        new Promise<void>((resolve, reject) => {
          const worker = new Worker(code, { eval: true, workerData: { jobs, rounds: ROUNDS } });
          worker.once('message', () => void worker.terminate().then(() => resolve()));
          worker.once('error', reject);
        }),
    ),
  );
  return (performance.now() - started) / 1000;
}

async function roundTripUs(kind: 'thread' | 'process'): Promise<{ medianUs: number; meanUs: number }> {
  const task = defineTask({ name: `noop-${kind}`, schema: z.unknown(), sandbox: sandboxed<typeof noop>({ module, kind, export: 'noop' }) });
  const runner = new SandboxRunner(resolveWorkerOptions({ sandbox: { threads: 1, processes: 1 } }, [task]).sandbox, new TaskRegistry([task]), DEFAULTS.maxPayloadBytes);
  const silent = { error() {}, warn() {}, info() {}, debug() {}, child: () => silent };
  const ctx = (i: number): JobContext => ({
    job: { id: String(i), task: task.name, queue: 'default', state: 'running', payload: null, priority: 0, attempts: 1, maxAttempts: 1, runAt: new Date(), createdAt: new Date(), startedAt: new Date(), finishedAt: null, result: null, errors: [], uniqueKey: null, workerId: null, timeoutMs: null, meta: {}, progress: null, progressAt: null, cancelRequestedAt: null, workflowId: null, workflowStep: null, concurrencyKey: null, expiresAt: null },
    attempt: 1,
    progress: async () => undefined,
    recordMeta: () => undefined,
    signal: new AbortController().signal,
    logger: silent,
    snooze: () => {
      throw new Error('no snooze');
    },
  });
  for (let i = 0; i < 20; i += 1) await runner.run(task.sandbox!, null, ctx(i));
  const samples: number[] = [];
  for (let i = 0; i < TRIPS; i += 1) {
    const t = performance.now();
    await runner.run(task.sandbox!, null, ctx(i));
    samples.push((performance.now() - t) * 1000);
  }
  await runner.close();
  samples.sort((a, b) => a - b);
  return { medianUs: samples[Math.floor(samples.length / 2)]!, meanUs: samples.reduce((a, b) => a + b, 0) / samples.length };
}

let server: EmbeddedServer | undefined;
const configured = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const url = (await answers(configured)) ? configured : (server = await startEmbedded()).url;
try {
  const t = performance.now();
  hashRounds(ROUNDS);
  const jobMs = performance.now() - t;
  const main = await drain(url, 'main', mainThreadHash, { concurrency: 4 });
  const sandbox = await drain(url, 'sandbox', sandboxedHash, { concurrency: 4, sandbox: { threads: 2 } });
  const bareJobs = Math.max(1, Math.floor(JOBS / 2));
  const ceiling = (2 * (await bareThreads(1, bareJobs))) / (await bareThreads(2, bareJobs));
  const thread = await roundTripUs('thread');
  const child = await roundTripUs('process');
  const f = (n: number): string => n.toFixed(1);
  console.log(`CPU-bound drain: ${JOBS} jobs of ${ROUNDS} SHA-256 rounds over 64 KiB (~${jobMs.toFixed(1)} ms each), one worker process`);
  console.log('| run | jobs/s |');
  console.log('|---|---|');
  console.log(`| handler on the main thread | ${f(main)} |`);
  console.log(`| sandboxed, pool of 2 threads | ${f(sandbox)} |`);
  console.log(`| ratio sandboxed ÷ main thread | ${(sandbox / main).toFixed(2)} |`);
  console.log(`| the machine's ceiling for that ratio: 2 bare threads ÷ 1 (no pgq, no database) | ${ceiling.toFixed(2)} |`);
  console.log(`Sandbox round trip, no-op handler, ${TRIPS} sequential attempts: thread median ${f(thread.medianUs)} µs (mean ${f(thread.meanUs)}), process median ${f(child.medianUs)} µs (mean ${f(child.meanUs)})`);
} finally {
  await server?.stop();
}
