/**
 * Where the time and the writes go: `node --import tsx bench/diagnose.ts`.
 *
 * For each system (default: pgq, floor, graphile-worker-tuned), in a fresh
 * database: seeds N jobs, drains them in this process at concurrency 100,
 * and reports the WAL bytes per job (pg_current_wal_lsn()). For pgq it
 * also records every statement pgq sends (through a pool passed with the
 * public `pool` option): statements per job, their mean client-observed
 * time, and with --explain `EXPLAIN (ANALYZE, BUFFERS, WAL)` of each
 * hot statement with the parameters pgq really used, inside a transaction
 * that is rolled back. Results go to stdout (and --out FILE as JSON).
 *
 * Options: --jobs N (default 20000), --systems a,b (also `pgq-synccommit-off`:
 * pgq's worker given a pool whose connections set synchronous_commit=off),
 * --explain (EXPLAIN the hot statements after pgq's drain), --out FILE.
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { z } from 'zod';
import { Pgq, defineTask } from './lib/pgq.js';
import { loadSystem } from './systems/index.js';
import type { Payload, RunEnv } from './lib/types.js';
import { sleep } from './lib/stats.js';

const { values: args } = parseArgs({
  options: { explain: { type: 'boolean', default: false }, jobs: { type: 'string', default: '20000' }, systems: { type: 'string', default: 'pgq,floor,graphile-worker-tuned' }, out: { type: 'string' } },
});
const JOBS = Number(args.jobs);
const PG_URL = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const admin = new pg.Client({ connectionString: PG_URL });

function dbUrl(name: string): string {
  const url = new URL(PG_URL);
  url.pathname = `/${name}`;
  return url.toString();
}

interface Recorded {
  name: string;
  text: string;
  values: unknown[];
  ms?: number;
}

/**
 * A pg.Pool that remembers every statement its clients run (pgq's hot path
 * names all of its statements). Recorded on each client as it connects, not
 * on the pool's query(): pgq's worker checks its clients out and sends on
 * them, so a pool-level record saw none of its statements.
 */
class RecordingPool extends pg.Pool {
  readonly recorded: Recorded[] = [];
  recording = false;

  constructor(config: pg.PoolConfig) {
    super(config);
    this.on('connect', (client) => {
      const send = client.query.bind(client) as (...a: unknown[]) => unknown;
      (client as unknown as { query: (...a: unknown[]) => unknown }).query = (...args: unknown[]) => this.#record(args, () => send(...args));
    });
  }

  #record(args: unknown[], send: () => unknown): unknown {
    if (!this.recording) return send();
    const [config, values] = args as [pg.QueryConfig | string, unknown[] | undefined];
    const entry: Recorded =
      typeof config === 'string'
        ? { name: '(unnamed)', text: config, values: Array.isArray(values) ? values : [] }
        : // pgq's names end with a hash of their text: recorded without it.
          { name: config.name?.replace(/_[0-9a-f]{8}$/, '') ?? '(unnamed)', text: config.text, values: config.values ?? [] };
    this.recorded.push(entry);
    // Client-observed time of the statement: the round trip and the commit,
    // whether its answer comes by callback (pgq's worker, pool.query) or promise.
    const t0 = performance.now();
    // The callback is swapped in `args` itself: `send` passes that same array on.
    const last = args.length - 1;
    const callback = args[last];
    if (typeof callback === 'function') {
      args[last] = (...answer: unknown[]) => {
        entry.ms = performance.now() - t0;
        return (callback as (...a: unknown[]) => unknown)(...answer);
      };
    }
    const result = send();
    if (result && typeof (result as Promise<unknown>).then === 'function') {
      (result as Promise<unknown>).then(
        () => (entry.ms = performance.now() - t0),
        () => undefined,
      );
    }
    return result;
  }
}

async function walLsn(): Promise<string> {
  return (await admin.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn')).rows[0]!.lsn;
}

async function walBytes(from: string, to: string): Promise<number> {
  return Number((await admin.query<{ d: string }>('SELECT pg_wal_lsn_diff($2::pg_lsn, $1::pg_lsn)::text AS d', [from, to])).rows[0]!.d);
}

interface DrainCost {
  system: string;
  jobs: number;
  seconds: number;
  jobsPerSec: number;
  walBytesPerJob: number;
  statementsPerJob?: Record<string, number>;
  meanStatementMs?: Record<string, number>;
}

async function drainCost(systemName: string): Promise<{ cost: DrainCost; explain?: Record<string, string> }> {
  const db = `bench_diag_${process.pid}_${systemName.replaceAll('-', '_')}`;
  await admin.query(`CREATE DATABASE "${db}"`);
  try {
    const env: RunEnv = { databaseUrl: dbUrl(db), redisUrl: 'redis://127.0.0.1:6379', runId: `diag-${process.pid}` };
    const system = await loadSystem(systemName === 'pgq-synccommit-off' ? 'pgq' : systemName);
    await system.migrate(env);
    const producer = await system.producer(env, { poolSize: 2 });
    for (let from = 0; from < JOBS; from += 5_000) {
      await producer.addMany(Array.from({ length: Math.min(5_000, JOBS - from) }, (_, k) => ({ i: from + k })));
    }
    await producer.close();
    await admin.query('CHECKPOINT'); // so full-page images of the seed do not land in the drain's WAL
    let count = 0;
    let pool: RecordingPool | undefined;
    let stop: () => Promise<void>;
    let start: () => Promise<void>;
    if (systemName === 'pgq' || systemName === 'pgq-synccommit-off') {
      // pgq-synccommit-off: pgq's worker on connections with synchronous_commit=off (what a dedicated worker pool could do).
      const options = systemName === 'pgq-synccommit-off' ? { options: '-c synchronous_commit=off' } : {};
      pool = new RecordingPool({ connectionString: env.databaseUrl, max: 10, ...options });
      pool.on('error', (err) => console.error(`diagnose pool: ${err.message}`));
      const ownPool = pool;
      const task = defineTask({
        name: 'bench-noop',
        schema: z.object({ i: z.number().int(), t: z.number().optional() }),
        handler() {
          count += 1;
          return null;
        },
      });
      const pgq = new Pgq({ pool, tasks: [task] });
      const worker = pgq.worker({ concurrency: 100 });
      start = () => worker.start();
      stop = async () => {
        await worker.stop();
        await pgq.close();
        await ownPool.end();
      };
    } else {
      const consumer = await system.consumer(env, { concurrency: 100, onJob: (_p: Payload) => void (count += 1) });
      start = () => consumer.start();
      stop = () => consumer.stop();
    }
    const probe = await system.probe(env);
    const lsn0 = await walLsn();
    if (pool) pool.recording = true;
    const t0 = performance.now();
    await start();
    while ((await probe.finished(JOBS)) < JOBS) await sleep(count >= JOBS ? 2 : 20);
    const seconds = (performance.now() - t0) / 1000;
    if (pool) pool.recording = false;
    const lsn1 = await walLsn();
    await stop();
    await probe.close();
    const statements: Record<string, number> = {};
    const timing: Record<string, { n: number; ms: number }> = {};
    for (const r of pool?.recorded ?? []) {
      statements[r.name] = (statements[r.name] ?? 0) + 1;
      const t = (timing[r.name] ??= { n: 0, ms: 0 });
      t.n += 1;
      t.ms += r.ms ?? 0;
    }
    const cost: DrainCost = {
      system: systemName,
      jobs: JOBS,
      seconds,
      jobsPerSec: JOBS / seconds,
      walBytesPerJob: (await walBytes(lsn0, lsn1)) / JOBS,
      ...(pool
        ? {
            statementsPerJob: Object.fromEntries(Object.entries(statements).map(([k, v]) => [k, v / JOBS])),
            meanStatementMs: Object.fromEntries(Object.entries(timing).map(([k, v]) => [k, Number((v.ms / v.n).toFixed(2))])),
          }
        : {}),
    };
    let explain: Record<string, string> | undefined;
    if (pool && args.explain) explain = await explainHot(env, pool.recorded);
    return { cost, ...(explain ? { explain } : {}) };
  } catch (err) {
    console.error(`diagnose ${systemName} failed:`, err);
    throw err;
  } finally {
    await admin.query(`DROP DATABASE IF EXISTS "${db}" WITH (FORCE)`);
  }
}

/** EXPLAIN (ANALYZE, BUFFERS, WAL) of pgq's hot statements, on fresh data like the drain's, rolled back. */
async function explainHot(env: RunEnv, log: Recorded[]): Promise<Record<string, string>> {
  const client = new pg.Client({ connectionString: env.databaseUrl });
  client.on('error', (err) => console.error(`diagnose client: ${err.message}`));
  await client.connect();
  const out: Record<string, string> = {};
  try {
    // Fresh waiting jobs, so the claim has work and the completion has running rows.
    const task = defineTask({ name: 'bench-noop', schema: z.object({ i: z.number().int() }), handler: () => null });
    const seedPool = new RecordingPool({ connectionString: env.databaseUrl, max: 2 });
    seedPool.on('error', (err) => console.error(`diagnose pool: ${err.message}`));
    const pgq = new Pgq({ pool: seedPool, tasks: [task] });
    seedPool.recording = true;
    await pgq.enqueueMany(task, Array.from({ length: 1_000 }, (_, i) => ({ i })));
    await pgq.enqueue(task, { i: -1 });
    seedPool.recording = false;
    await pgq.close();
    await seedPool.end();
    const seeded = seedPool.recorded;
    const pick = (suffix: string, from: Recorded[]): Recorded | undefined => from.filter((r) => r.name.endsWith(suffix)).at(-1);
    const claim = pick('_claim', log);
    const complete = log.filter((r) => r.name.endsWith('_complete')).sort((a, b) => (b.values[0] as unknown[]).length - (a.values[0] as unknown[]).length)[0];
    const bulkInsert = seeded.find((r) => r.name.endsWith('_insert_jobs') && (r.values[0] as unknown[]).length === 1_000);
    const oneInsert = seeded.filter((r) => r.name.endsWith('_insert_jobs')).at(-1);
    const run = async (label: string, stmt: Recorded | undefined, before?: string): Promise<void> => {
      if (!stmt) return;
      await client.query('BEGIN');
      try {
        if (before) await client.query(before);
        const res = await client.query<{ 'QUERY PLAN': string }>(`EXPLAIN (ANALYZE, BUFFERS, WAL, VERBOSE false) ${stmt.text}`, stmt.values);
        out[label] = `${stmt.text.trim()}\n-- params: ${JSON.stringify(stmt.values).slice(0, 300)}\n${res.rows.map((r) => r['QUERY PLAN']).join('\n')}`;
      } finally {
        await client.query('ROLLBACK');
      }
    };
    await run('insert 1,000 (enqueueMany)', bulkInsert);
    await run('insert 1 (enqueue)', oneInsert);
    await run('claim', claim);
    if (complete) {
      // Mark the completion's jobs running in that attempt first, as a worker would have.
      const ids = complete.values[0] as string[];
      const attempts = complete.values[1] as number[];
      await run(
        `complete ${ids.length}`,
        complete,
        `UPDATE ${quoteSchema()}.jobs SET state = 'running', attempts = v.a FROM unnest('{${ids.join(',')}}'::bigint[], '{${attempts.join(',')}}'::int[]) AS v(id, a) WHERE jobs.id = v.id`,
      );
    }
  } finally {
    await client.end();
  }
  return out;
}

function quoteSchema(): string {
  return '"pgq"';
}

async function main(): Promise<void> {
  await admin.connect();
  const results: unknown[] = [];
  for (const name of args.systems!.split(',')) {
    const { cost, explain } = await drainCost(name.trim());
    console.log(`\n== ${cost.system}: ${cost.jobs} jobs at concurrency 100 in ${cost.seconds.toFixed(2)} s = ${Math.round(cost.jobsPerSec)} jobs/s`);
    console.log(`   WAL ${Math.round(cost.walBytesPerJob)} bytes/job`);
    if (cost.statementsPerJob) console.log(`   statements/job: ${JSON.stringify(cost.statementsPerJob)}`);
    if (cost.meanStatementMs) console.log(`   mean client-observed ms/statement: ${JSON.stringify(cost.meanStatementMs)}`);
    for (const [label, plan] of Object.entries(explain ?? {})) console.log(`\n-- ${label}\n${plan}`);
    results.push({ cost, explain });
  }
  if (args.out) writeFileSync(args.out, `${JSON.stringify(results, null, 2)}\n`);
  await admin.end();
}

main().catch(async (err: unknown) => {
  console.error(err);
  await admin.end().catch(() => undefined);
  process.exitCode = 1;
});
