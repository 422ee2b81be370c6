/**
 * Enqueue variants side by side: `node --import tsx bench/insert-variants.ts [bulk|single]`.
 *
 * Times pgq's public enqueue/enqueueMany against an INSERT of per-job
 * arrays (the payloads as one JSON array, as pgq sends them) with one
 * thing taken away at a time (RETURNING of every column, ON CONFLICT, the
 * NOTIFY trigger, per-job arrays for per-call options), and single inserts
 * from 1 and 8 connections with and without a NOTIFY in the transaction.
 * Evidence for the enqueue-path design; it runs in a fresh database that it
 * drops at the end. (It disables pgq's trigger in that database only.)
 */
import pg from 'pg';
import { z } from 'zod';
import { Pgq, defineTask } from '../src/index.js';
import { jsonArrayText } from '../src/core/json.js';
const ADMIN = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const DB = `exp_insert_${process.pid}`;
const dbUrl = new URL(ADMIN);
dbUrl.pathname = `/${DB}`;
const URL_ = dbUrl.toString();
const admin = new pg.Client({ connectionString: ADMIN }); await admin.connect();
await admin.query(`CREATE DATABASE ${DB}`);
const task = defineTask({ name: 'bench-noop', schema: z.object({ i: z.number() }), handler: () => null });
const pgq = new Pgq({ connectionString: URL_, tasks: [task] });
await pgq.migrate();
const pool = new pg.Pool({ connectionString: URL_, max: 10 });
pool.on('error', () => undefined);
const COLS = 'id, task, queue, state, payload, priority, attempts, max_attempts, run_at, created_at, started_at, finished_at, result, errors, unique_key, worker_id, timeout_ms, backoff_base_ms, backoff_max_ms';
const base = (conflict: boolean, returning: string) => `
    INSERT INTO pgq.jobs (task, queue, payload, priority, max_attempts, run_at, state, unique_key, timeout_ms, backoff_base_ms, backoff_max_ms)
    SELECT t.task, t.queue, t.payload::jsonb, t.priority, t.max_attempts, t.at, CASE WHEN t.at <= now() THEN 'available' ELSE 'scheduled' END,
           t.unique_key, t.timeout_ms, t.backoff_base_ms, t.backoff_max_ms
      FROM (SELECT u.*, coalesce(u.run_at, now() + u.delay_ms * interval '1 millisecond') AS at
              FROM ROWS FROM (unnest($1::text[]), unnest($2::text[]), json_array_elements($3::json), unnest($4::int[]), unnest($5::int[]),
                              unnest($6::timestamptz[]), unnest($7::float8[]), unnest($8::text[]), unnest($9::int[]), unnest($10::int[]), unnest($11::int[]))
                AS u(task, queue, payload, priority, max_attempts, run_at, delay_ms, unique_key, timeout_ms, backoff_base_ms, backoff_max_ms)) AS t
    ${conflict ? `ON CONFLICT (task, unique_key) WHERE unique_key IS NOT NULL AND state IN ('scheduled', 'available', 'running', 'retryable', 'blocked') DO NOTHING` : ''}
    ${returning}`;
const params = (n: number, from: number) => {
  const fill = <V>(v: V) => Array.from({ length: n }, () => v);
  return [fill('bench-noop'), fill('default'), jsonArrayText(Array.from({ length: n }, (_, k) => JSON.stringify({ i: from + k }))), fill(0), fill(25), fill(null), fill(0), fill(null), fill(null), fill(null), fill(null)];
};
let counter = 0;
async function timeIt(label: string, calls: number, conns: number, fn: () => Promise<unknown>, perCall: number): Promise<void> {
  for (let k = 0; k < 3; k++) await fn();
  const t0 = performance.now(); let done = 0;
  await Promise.all(Array.from({ length: conns }, async () => { while (done < calls) { done++; await fn(); } }));
  const ms = performance.now() - t0;
  console.log(`${label.padEnd(72)} ${Math.round((done * perCall) / ms * 1000).toString().padStart(7)} jobs/s  (${(ms / done).toFixed(2)} ms/call, ${conns} conn)`);
}
const variants: [string, string][] = [
  ['per-job arrays (ON CONFLICT, RETURNING 19 columns)', base(true, `RETURNING ${COLS}`)],
  ['ON CONFLICT, RETURNING id', base(true, 'RETURNING id')],
  ['no ON CONFLICT, RETURNING id', base(false, 'RETURNING id')],
  ['no ON CONFLICT, no RETURNING', base(false, '')],
];
const mode = process.argv[2] ?? 'all';
if (mode === 'all' || mode === 'bulk') {
  console.log('-- bulk, 1,000 per call');
  await timeIt('pgq.enqueueMany (public API)', 40, 1, () => pgq.enqueueMany(task, Array.from({ length: 1000 }, (_, k) => ({ i: k }))), 1000);
  for (const [label, sql] of variants) await timeIt(label, 40, 1, () => pool.query(sql, params(1000, counter += 1000)), 1000);
  await admin.query(`SELECT 1`);
  const scalar = `INSERT INTO pgq.jobs (task, queue, payload, priority, max_attempts) SELECT $1, $2, p::jsonb, $4, $5 FROM json_array_elements($3::json) AS p RETURNING id`;
  const sparams = () => ['bench-noop', 'default', jsonArrayText(Array.from({ length: 1000 }, (_, k) => JSON.stringify({ i: k }))), 0, 25];
  await timeIt('scalars for per-call options + one JSON array of payloads, RETURNING id', 40, 1, () => pool.query(scalar, sparams()), 1000);
  const c = new pg.Client({ connectionString: URL_ }); await c.connect(); await c.query('ALTER TABLE pgq.jobs DISABLE TRIGGER jobs_notify_inserted'); 
  await timeIt('no ON CONFLICT, no RETURNING, no trigger', 40, 1, () => pool.query(variants[3]![1], params(1000, counter += 1000)), 1000);
  await timeIt('scalars + one JSON array of payloads, RETURNING id, no trigger', 40, 1, () => pool.query(scalar, sparams()), 1000);
  await c.query('ALTER TABLE pgq.jobs ENABLE TRIGGER jobs_notify_inserted'); await c.end();
}
if (mode === 'all' || mode === 'single') {
  for (const conns of [1, 8]) {
    console.log(`-- single, ${conns} connection(s)`);
    await timeIt('pgq.enqueue (public API)', 600 * conns, conns, () => pgq.enqueue(task, { i: 1 }), 1);
    await timeIt('per-job arrays, 1 row (with NOTIFY trigger)', 600 * conns, conns, () => pool.query({ name: 'v1', text: variants[0]![1], values: params(1, counter++) }), 1);
    const c = new pg.Client({ connectionString: URL_ }); await c.connect(); await c.query('ALTER TABLE pgq.jobs DISABLE TRIGGER jobs_notify_inserted');
    await timeIt('per-job arrays, 1 row, trigger disabled (no NOTIFY)', 600 * conns, conns, () => pool.query({ name: 'v1', text: variants[0]![1], values: params(1, counter++) }), 1);
    await timeIt('plain INSERT (task, payload), no NOTIFY', 600 * conns, conns, () => pool.query({ name: 'v9', text: `INSERT INTO pgq.jobs (task, payload) VALUES ('bench-noop', $1)`, values: ['{"i":1}'] }), 1);
    await timeIt('plain INSERT + pg_notify in the same statement', 600 * conns, conns, () => pool.query({ name: 'v10', text: `WITH i AS (INSERT INTO pgq.jobs (task, payload) VALUES ('bench-noop', $1) RETURNING id) SELECT pg_notify('x', 'default') FROM i`, values: ['{"i":1}'] }), 1);
    await c.query('ALTER TABLE pgq.jobs ENABLE TRIGGER jobs_notify_inserted'); await c.end();
  }
}
await pgq.close();
await pool.end();
await admin.query(`DROP DATABASE ${DB} WITH (FORCE)`); await admin.end();
