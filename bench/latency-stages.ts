/**
 * `npm run bench:latency-stages`: where an idle worker's latency goes, pgq
 * beside graphile-worker tuned (or any PostgreSQL-backed `--systems` whose
 * claim statement `isClaim` knows). The harness's latency row gives only
 * the total (enqueue call to handler start); this splits it.
 *
 * Each round, each system in turn (the order rotating) gets a fresh
 * database and a worker process (this file, `worker` role, concurrency 10,
 * through the same adapters as `npm run bench`: pgq from `dist/`). The
 * worker process wraps pg's `Client.prototype.query` and `emit` before the
 * system loads pg, and stamps, on the epoch clock in microseconds
 * (`performance.timeOrigin + performance.now()`): a NOTIFY's arrival, the
 * system's claim statement sent and answered, and the handler's start.
 * This process enqueues `--samples` jobs one at a time (after 20 not
 * counted), 5–15 ms apart, each with its own clock in the payload, and
 * splits each sample into: the enqueue call to the NOTIFY heard, the
 * NOTIFY to the claim sent, the claim's round trip, the claim answered to
 * the handler's start. A sample whose stamps are out of that order (a
 * claim sent before its NOTIFY came, by a poll or a claim ahead) counts in
 * the total only. Medians per round, then over the rounds, and pgq's
 * ratios. Each round also prints, for the slowest 5% of its split samples,
 * each stage's median there (where the tail goes), and the WAL the server
 * wrote and flushed per job over the samples (flushes from `pg_stat_wal`,
 * PostgreSQL 14–17; the whole server's, so other work on it counts too).
 *
 * BENCH_DATABASE_URL or DATABASE_URL, else an embedded PostgreSQL.
 * Options: --systems a,b (pgq,graphile-worker-tuned), --rounds N (3),
 * --samples N (300).
 */
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { benchServer, CLAIM_STATEMENT, rotatingRounds, writeMediansAndRatios } from './lib/rounds.js';
import { median } from './lib/stats.js';
import type { Payload, RunEnv } from './lib/types.js';
import { loadSystem } from './systems/index.js';
import { stopChild } from './lib/child-process.js';

const HERE = fileURLToPath(import.meta.url);
const WARMUP = 20;
const CONCURRENCY = 10;

/** Stamps of one job, epoch ms with microseconds, from the worker process. */
interface Stamps {
  i: number;
  t: number;
  notify: number;
  sent: number;
  reply: number;
  start: number;
}

type ToWorker = { type: 'stop' };
type FromWorker = { type: 'ready' } | ({ type: 'job' } & Stamps);

const now = (): number => performance.timeOrigin + performance.now();

async function workerRole(systemName: string, databaseUrl: string): Promise<void> {
  const send = (msg: FromWorker): void => {
    if (process.connected) process.send!(msg);
  };
  const last = { notify: Number.NaN, sent: Number.NaN, reply: Number.NaN };
  const proto = pg.Client.prototype as unknown as {
    query: (...args: unknown[]) => unknown;
    emit: (event: string | symbol, ...args: unknown[]) => boolean;
  };
  const query = proto.query;
  proto.query = function (this: unknown, ...args: unknown[]) {
    const config = args[0];
    const text = typeof config === 'string' ? config : typeof config === 'object' && config !== null ? String((config as { text?: unknown }).text ?? '') : '';
    if (!CLAIM_STATEMENT.test(text)) return query.apply(this, args);
    last.sent = now();
    const answered = (): void => void (last.reply = now());
    // pgq queries with a callback; graphile-worker awaits the promise.
    const callbackAt = args.findIndex((a, k) => k > 0 && typeof a === 'function');
    if (callbackAt > 0) {
      const callback = args[callbackAt] as (...a: unknown[]) => unknown;
      args[callbackAt] = function (this: unknown, ...a: unknown[]) {
        answered();
        return callback.apply(this, a);
      };
      return query.apply(this, args);
    }
    const result = query.apply(this, args) as Promise<unknown> | undefined;
    result?.then(answered, () => undefined);
    return result;
  };
  const emit = proto.emit;
  proto.emit = function (this: unknown, event: string | symbol, ...rest: unknown[]) {
    if (event === 'notification') last.notify = now();
    return emit.call(this, event, ...rest);
  };
  const system = await loadSystem(systemName);
  const consumer = await system.consumer({ databaseUrl, redisUrl: '', runId: 'latency-stages' }, {
    concurrency: CONCURRENCY,
    onJob(payload: Payload) {
      const start = now();
      if (payload.t !== undefined) send({ type: 'job', i: payload.i, t: payload.t, ...last, start });
    },
  });
  await consumer.start();
  send({ type: 'ready' });
  await new Promise<void>((resolve) => {
    process.on('message', (msg: ToWorker) => msg.type === 'stop' && resolve());
    process.on('disconnect', () => resolve());
  });
  await consumer.stop();
  process.disconnect();
}

const STAGES = ['total', 'toNotify', 'toClaim', 'claim', 'toStart'] as const;
type Stage = (typeof STAGES)[number];
const STAGE_NAMES: Record<Stage, string> = {
  total: 'enqueue call to handler start',
  toNotify: 'enqueue call to NOTIFY heard',
  toClaim: 'NOTIFY to claim sent',
  claim: 'claim round trip',
  toStart: 'claim answered to handler start',
};
type Medians = Record<Stage, number> & { attributed: number };

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: {
      systems: { type: 'string', default: 'pgq,graphile-worker-tuned' },
      rounds: { type: 'string', default: '3' },
      samples: { type: 'string', default: '300' },
    },
  });
  const systemNames = values.systems.split(',').map((n) => n.trim()).filter(Boolean);
  const rounds = Number(values.rounds);
  const samples = Number(values.samples);
  if (![rounds, samples].every((n) => Number.isInteger(n) && n > 0)) throw new Error('--rounds and --samples must be positive whole numbers');
  const systems = await Promise.all(systemNames.map((name) => loadSystem(name)));
  for (const system of systems) if (system.backend !== 'postgres') throw new Error(`${system.name} does not run on PostgreSQL`);

  const server = await benchServer();
  const { admin, dbUrl, dropDatabase } = server;

  const once = async (index: number): Promise<Medians> => {
    const system = systems[index]!;
    const dbName = `bench_latency_stages_${index}`;
    await dropDatabase(dbName);
    await admin.query(`CREATE DATABASE "${dbName}"`);
    const env: RunEnv = { databaseUrl: dbUrl(dbName), redisUrl: '', runId: `latency-stages-${index}` };
    try {
      await system.migrate(env);
      const worker = fork(HERE, ['worker', system.name, env.databaseUrl], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
      const waiting = new Map<number, (s: Stamps) => void>();
      const ready = new Promise<void>((resolve, reject) => {
        worker.on('message', (msg: FromWorker) => {
          if (msg.type === 'ready') resolve();
          if (msg.type === 'job') waiting.get(msg.i)?.(msg);
        });
        worker.on('exit', (code) => reject(new Error(`the ${system.name} worker exited (${code}) before it was ready`)));
      });
      await ready;
      const producer = await system.producer(env, { poolSize: 1 });
      const rows: Record<Stage, number[]> = { total: [], toNotify: [], toClaim: [], claim: [], toStart: [] };
      // The server's WAL written and flushed over the samples (the whole
      // server's: other work on it counts too). Flushes from pg_stat_wal,
      // PostgreSQL 14–17 (18 moved them to pg_stat_io, whose counts read
      // here came out near zero: left out).
      const walNow = async (): Promise<{ bytes: number; syncs: number }> => {
        const { rows: [w] } = await admin.query<{ bytes: string }>(`SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::text AS bytes`);
        const flushed = await admin
          .query<{ n: string }>(`SELECT wal_sync::text AS n FROM pg_stat_wal`)
          .then(({ rows }) => Number(rows[0]!.n), () => Number.NaN);
        return { bytes: Number(w!.bytes), syncs: flushed };
      };
      let walFrom: { bytes: number; syncs: number } | undefined;
      let walTo: { bytes: number; syncs: number } | undefined;
      try {
        for (let i = 0; i < WARMUP + samples; i++) {
          const stamped = new Promise<Stamps>((resolve, reject) => {
            waiting.set(i, resolve);
            setTimeout(() => reject(new Error(`${system.name}: job ${i} did not start within 10 s`)), 10_000).unref();
          });
          if (i === WARMUP) walFrom = await walNow().catch(() => undefined);
          const t = now();
          await producer.add({ i, t });
          const s = await stamped;
          waiting.delete(i);
          if (i >= WARMUP) {
            rows.total.push(s.start - s.t);
            if (s.t <= s.notify && s.notify <= s.sent && s.sent <= s.reply && s.reply <= s.start) {
              rows.toNotify.push(s.notify - s.t);
              rows.toClaim.push(s.sent - s.notify);
              rows.claim.push(s.reply - s.sent);
              rows.toStart.push(s.start - s.reply);
            }
          }
          await new Promise((resolve) => setTimeout(resolve, 5 + Math.random() * 10));
        }
        walTo = await walNow().catch(() => undefined);
      } finally {
        await producer.close();
        await stopChild(worker, { type: 'stop' } satisfies ToWorker, 15_000);
      }
      const m = Object.fromEntries(STAGES.map((stage) => [stage, median(rows[stage]) ?? Number.NaN])) as Record<Stage, number>;
      // Where the tail goes: of the split samples, the slowest 5% by total, each stage's median there.
      const split = rows.claim.map((_, k) => k);
      const totalOf = (k: number): number => rows.toNotify[k]! + rows.toClaim[k]! + rows.claim[k]! + rows.toStart[k]!;
      const slow = split.sort((a, b) => totalOf(b) - totalOf(a)).slice(0, Math.max(1, Math.ceil(split.length / 20)));
      const tail = STAGES.filter((stage) => stage !== 'total').map((stage) => `${STAGE_NAMES[stage]} ${(median(slow.map((k) => rows[stage][k]!)) ?? Number.NaN).toFixed(3)}`);
      if (walFrom && walTo) {
        const flushes = (walTo.syncs - walFrom.syncs) / samples;
        process.stdout.write(`  ${system.name}: per job, ${((walTo.bytes - walFrom.bytes) / samples).toFixed(0)} bytes of WAL and ${Number.isFinite(flushes) ? flushes.toFixed(2) : 'n/a'} WAL flushes, the whole server's\n`);
      }
      process.stdout.write(`  ${system.name}, the slowest ${slow.length} split samples (from ${median(slow.map(totalOf))?.toFixed(3)} ms at their median), medians: ${tail.join(', ')}\n`);
      return { ...m, attributed: rows.claim.length / rows.total.length };
    } finally {
      await dropDatabase(dbName);
    }
  };

  const ms = (v: number): string => (Number.isFinite(v) ? v.toFixed(3) : 'n/a');
  const head = `| system | ${STAGES.map((s) => STAGE_NAMES[s]).join(' | ')} | samples split |\n|---|${STAGES.map(() => '---:').join('|')}|---:|\n`;
  const row = (name: string, m: Medians): string => `| ${name} | ${STAGES.map((s) => ms(m[s])).join(' | ')} | ${(100 * m.attributed).toFixed(0)}% |\n`;
  process.stdout.write(`${samples} sequential jobs per run, an idle worker (concurrency ${CONCURRENCY}) in its own process, ${rounds} rounds, systems rotating; medians in ms\n\n${head}`);
  try {
    const results = await rotatingRounds(systemNames, rounds, once, (label, m) => process.stdout.write(row(label, m)));
    writeMediansAndRatios<Stage | 'attributed'>(results, rounds, head, [...STAGES, 'attributed'], row, STAGES, STAGE_NAMES);
  } finally {
    await server.close();
  }
}

if (process.argv[2] === 'worker') await workerRole(process.argv[3]!, process.argv[4]!);
else await main();
