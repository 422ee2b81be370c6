/**
 * `npm run bench:start`: how soon a freshly started worker runs its first
 * job, pgq beside graphile-worker tuned (or any PostgreSQL-backed
 * `--systems`), on loopback and over a `--rtt-ms` round trip (the delay
 * proxy of `npm run bench -- --rtt-ms`). An autoscaled or redeployed worker
 * pays this at every start; the harness's one-second drains pay it once per
 * worker process.
 *
 * Each round, each system in turn (the order rotating) gets a fresh
 * database holding `--jobs` (1) waiting jobs, and a new worker process
 * (this file, `worker` role, concurrency 10, the adapters of `npm run
 * bench`: pgq from `dist/`) that loads the system and makes its consumer,
 * then, told to go, calls its `start()` (graphile-worker: `run()`) and
 * stamps, from that call: when the first handler started, when the last of
 * the jobs did, and when `start()` resolved. Medians over `--rounds` (5),
 * and pgq's ratios.
 *
 * BENCH_DATABASE_URL or DATABASE_URL, else an embedded PostgreSQL.
 * Options: --systems a,b (pgq,graphile-worker-tuned), --rounds N (5),
 * --jobs N (1), --rtt-ms N (0).
 */
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { benchServer, rotatingRounds, writeMediansAndRatios } from './lib/rounds.js';
import { spawnDelayProxy, type DelayProxyProcess } from './lib/delay-proxy.js';
import type { RunEnv } from './lib/types.js';
import { loadSystem } from './systems/index.js';
import { stopChild } from './lib/child-process.js';

const HERE = fileURLToPath(import.meta.url);
const CONCURRENCY = 10;

type ToWorker = { type: 'go' } | { type: 'stop' };
type FromWorker = { type: 'ready' } | ({ type: 'started' } & Timing);

/** Milliseconds from the call of `start()`. */
interface Timing {
  firstJob: number;
  lastJob: number;
  resolved: number;
}

async function workerRole(systemName: string, databaseUrl: string, jobs: number): Promise<void> {
  const send = (msg: FromWorker): void => {
    if (process.connected) process.send!(msg);
  };
  const system = await loadSystem(systemName);
  let t0 = 0;
  let ran = 0;
  let firstJob = Number.NaN;
  let resolved = Number.NaN;
  let allRan!: (at: number) => void;
  const lastJob = new Promise<number>((resolve) => (allRan = resolve));
  const consumer = await system.consumer({ databaseUrl, redisUrl: '', runId: 'start' }, {
    concurrency: CONCURRENCY,
    onJob() {
      const at = performance.now() - t0;
      if (ran === 0) firstJob = at;
      ran += 1;
      if (ran === jobs) allRan(at);
    },
  });
  const stop = new Promise<void>((resolve) => {
    process.on('message', (msg: ToWorker) => {
      if (msg.type === 'stop') resolve();
      if (msg.type !== 'go') return;
      t0 = performance.now();
      void consumer.start().then(() => void (resolved = performance.now() - t0));
      void lastJob.then(async (last) => {
        // Both stamps are sent: start() may resolve after the jobs ran (pgq's waits for its lease thread).
        while (Number.isNaN(resolved)) await new Promise((r) => setTimeout(r, 1));
        send({ type: 'started', firstJob, lastJob: last, resolved });
      });
    });
    process.on('disconnect', () => resolve());
  });
  send({ type: 'ready' });
  await stop;
  await consumer.stop();
  process.disconnect();
}

const FIELDS = ['firstJob', 'lastJob', 'resolved'] as const;
const FIELD_NAMES: Record<(typeof FIELDS)[number], string> = {
  firstJob: 'first job started',
  lastJob: 'last job started',
  resolved: 'start() resolved',
};

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: {
      systems: { type: 'string', default: 'pgq,graphile-worker-tuned' },
      rounds: { type: 'string', default: '5' },
      jobs: { type: 'string', default: '1' },
      'rtt-ms': { type: 'string', default: '0' },
    },
  });
  const systemNames = values.systems.split(',').map((n) => n.trim()).filter(Boolean);
  const rounds = Number(values.rounds);
  const jobs = Number(values.jobs);
  const rttMs = Number(values['rtt-ms']);
  if (![rounds, jobs].every((n) => Number.isInteger(n) && n > 0)) throw new Error('--rounds and --jobs must be positive whole numbers');
  if (!(rttMs >= 0)) throw new Error('--rtt-ms must be a number of milliseconds, 0 or more');
  const systems = await Promise.all(systemNames.map((name) => loadSystem(name)));
  for (const system of systems) if (system.backend !== 'postgres') throw new Error(`${system.name} does not run on PostgreSQL`);

  const server = await benchServer();
  const { admin, dbUrl, dropDatabase } = server;
  let proxy: DelayProxyProcess | null = null;
  if (rttMs > 0) {
    const u = new URL(server.url);
    proxy = await spawnDelayProxy(`${u.hostname}:${u.port || 5432}`, rttMs / 2);
  }
  /** The run's database as the worker reaches it: through the proxy under --rtt-ms. */
  const workerUrl = (name: string): string => {
    const u = new URL(dbUrl(name));
    if (proxy) {
      u.hostname = '127.0.0.1';
      u.port = String(proxy.port);
    }
    return u.toString();
  };

  const once = async (index: number): Promise<Timing> => {
    const system = systems[index]!;
    const dbName = `bench_start_${index}`;
    await dropDatabase(dbName);
    await admin.query(`CREATE DATABASE "${dbName}"`);
    const env: RunEnv = { databaseUrl: dbUrl(dbName), redisUrl: '', runId: `start-${index}` };
    try {
      await system.migrate(env);
      const producer = await system.producer(env, { poolSize: 1 });
      try {
        await producer.addMany(Array.from({ length: jobs }, (_, i) => ({ i })));
      } finally {
        await producer.close();
      }
      const worker = fork(HERE, ['worker', system.name, workerUrl(dbName), String(jobs)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
      try {
        const timing = await new Promise<Timing>((resolve, reject) => {
          worker.on('message', (msg: FromWorker) => {
            if (msg.type === 'ready') worker.send({ type: 'go' } satisfies ToWorker);
            if (msg.type === 'started') resolve(msg);
          });
          worker.on('exit', (code) => reject(new Error(`the ${system.name} worker exited (${code}) before its jobs ran`)));
          setTimeout(() => reject(new Error(`${system.name}: the jobs did not run within 60 s`)), 60_000).unref();
        });
        return timing;
      } finally {
        await stopChild(worker, { type: 'stop' } satisfies ToWorker, 15_000);
      }
    } finally {
      await dropDatabase(dbName);
    }
  };

  const ms = (v: number): string => (Number.isFinite(v) ? v.toFixed(1) : 'n/a');
  const head = `| system | ${FIELDS.map((f) => FIELD_NAMES[f]).join(' | ')} |\n|---|${FIELDS.map(() => '---:').join('|')}|\n`;
  const row = (name: string, t: Timing): string => `| ${name} | ${FIELDS.map((f) => ms(t[f])).join(' | ')} |\n`;
  const where = proxy ? `a ${rttMs} ms round trip to PostgreSQL (delay proxy, ${proxy.scheduling})` : 'loopback';
  process.stdout.write(`A new worker process (concurrency ${CONCURRENCY}) started on ${jobs} waiting job(s), over ${where}, ${rounds} rounds, systems rotating; ms from the call of start()\n\n${head}`);
  try {
    const results = await rotatingRounds(systemNames, rounds, once, (label, t) => process.stdout.write(row(label, t)));
    writeMediansAndRatios(results, rounds, head, FIELDS, row, FIELDS, FIELD_NAMES);
  } finally {
    await proxy?.stop();
    await server.close();
  }
}

if (process.argv[2] === 'worker') await workerRole(process.argv[3]!, process.argv[4]!, Number(process.argv[5]));
else await main();
