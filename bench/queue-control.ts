/**
 * The cost of queue control, one quick run: drain throughput of no-op jobs
 *   1. an unlimited queue alone;
 *   2. the same queue with a limited queue (concurrency 5, busy) served by the same worker;
 *   3. a queue limited to concurrency 50, vs 1 (unlimited) at worker concurrency 50.
 * Usage: node --import tsx bench/queue-control.ts [--jobs 5000] [--rtt-ms 2]
 * (DATABASE_URL, or an embedded PostgreSQL started for the run; with
 * --rtt-ms the worker talks to it through bench/lib/delay-proxy.ts, adding
 * that round-trip time to every statement.)
 */
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { Pgq, defineTask } from '../src/index.js';
import { answers, startEmbedded, type EmbeddedServer } from './lib/embedded.js';
import { spawnDelayProxy, type DelayProxyProcess } from './lib/delay-proxy.js';

const { values: args } = parseArgs({ options: { jobs: { type: 'string', default: '5000' }, 'rtt-ms': { type: 'string', default: '0' } } });
const JOBS = Number(args.jobs);
const RTT_MS = Number(args['rtt-ms']);

const noop = defineTask({ name: 'noop', schema: z.object({}), handler: () => undefined });

async function drain(url: string, schema: string, setup: (pgq: Pgq) => Promise<void>, queues: string[]): Promise<number> {
  const pgq = new Pgq({ connectionString: url, schema, tasks: [noop], poolSize: 20 });
  await pgq.migrate();
  await setup(pgq);
  for (let i = 0; i < JOBS; i += 1_000) await pgq.enqueueMany(noop, Array.from({ length: Math.min(1_000, JOBS - i) }, () => ({})), { queue: 'main' });
  const worker = pgq.worker({ concurrency: 50, queues, heartbeatMs: 1_000, pollIntervalMs: 200 });
  const t0 = performance.now();
  await worker.start();
  for (;;) {
    const q = await pgq.getQueue('main');
    if (q.counts.available + q.counts.running === 0) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  const rate = JOBS / ((performance.now() - t0) / 1_000);
  await worker.stop();
  await pgq.close();
  return rate;
}

let server: EmbeddedServer | undefined;
let url = process.env.DATABASE_URL ?? '';
if (!url || !(await answers(url))) {
  server = await startEmbedded();
  url = server.url;
}
let proxy: DelayProxyProcess | undefined;
if (RTT_MS > 0) {
  const direct = new URL(url);
  proxy = await spawnDelayProxy(`${direct.hostname}:${direct.port || '5432'}`, RTT_MS / 2);
  direct.hostname = '127.0.0.1';
  direct.port = String(proxy.port);
  url = direct.toString();
}
try {
  const rows: [string, number][] = [];
  let n = 0;
  const schema = (): string => `bench_qc_${process.pid}_${n++}`;
  rows.push(['unlimited queue alone', await drain(url, schema(), async () => undefined, ['main'])]);
  rows.push(['unlimited queue beside a limited one', await drain(url, schema(), async (pgq) => {
    await pgq.setQueue('side', { concurrency: 5 });
    await pgq.enqueueMany(noop, Array.from({ length: JOBS }, () => ({})), { queue: 'side' });
  }, ['main', 'side'])]);
  rows.push(['queue limited to concurrency 50', await drain(url, schema(), (pgq) => pgq.setQueue('main', { concurrency: 50 }).then(() => undefined), ['main'])]);
  rows.push(['unlimited queue alone (again)', await drain(url, schema(), async () => undefined, ['main'])]);
  const rtt = RTT_MS > 0 ? `, ${RTT_MS} ms round trip` : '';
  process.stdout.write(`| drain of ${JOBS} no-op jobs, worker concurrency 50${rtt} | jobs/s |\n|---|---:|\n`);
  for (const [label, rate] of rows) process.stdout.write(`| ${label} | ${Math.round(rate).toLocaleString('en')} |\n`);
} finally {
  await proxy?.stop();
  await server?.stop();
}
