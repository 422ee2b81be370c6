/**
 * The completion statement alone: `node --import tsx bench/outcome-cost.ts`.
 *
 * Times pgq's JobCompleteMany (the statement the completer sends for a
 * batch of successes) with one connection, for results of several shapes:
 * 1,000 `null` results, 1,000 small objects, one result of 1 MB of quotes,
 * 20 results of 100 KB of JSON. Before each execution the jobs are set
 * running again; the statistics are taken while none ran (as the planner
 * would find them after an idle spell). Prints the median wall time of the
 * call and the median CPU time of this process during it (the worker's
 * event loop, held while pg writes the parameters). Runs in a schema of its
 * own (`bench_outcome_cost`) of BENCH_DATABASE_URL or DATABASE_URL (default
 * postgres://postgres@127.0.0.1:5432/postgres), dropped at the end.
 */
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { z } from 'zod';
import { Pgq, defineTask } from '../src/index.js';
import { fromPg } from '../src/db/queryable.js';
import { createStatements } from '../src/db/statements.js';
import { median } from './lib/stats.js';

const url = process.env.BENCH_DATABASE_URL ?? process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const schema = 'bench_outcome_cost';
const task = defineTask({ name: 'noop', schema: z.unknown(), handler: () => null });
const pgq = new Pgq({ connectionString: url, schema, tasks: [task] });
await pgq.migrate();
const pool = new pg.Pool({ connectionString: url, max: 1 });
const db = fromPg(pool);
const statements = createStatements(schema);

async function run(label: string, n: number, result: string, rounds: number): Promise<void> {
  await pool.query(`TRUNCATE "${schema}".jobs CASCADE`);
  await pgq.enqueueMany(task, Array.from({ length: n }, () => ({})));
  await pool.query(`ANALYZE "${schema}".jobs`);
  const { rows } = await pool.query<{ id: string }>(`SELECT id::text FROM "${schema}".jobs ORDER BY id`);
  const ids = rows.map((r) => r.id);
  const wall: number[] = [];
  const cpu: number[] = [];
  for (let round = 0; round < rounds; round += 1) {
    await pool.query(`UPDATE "${schema}".jobs SET state = 'running', attempts = 1, started_at = now(), finished_at = NULL, result = NULL`);
    const cpuFrom = process.cpuUsage();
    const from = performance.now();
    const { skipped } = await statements.completeJobs(db, { ids, attempts: ids.map(() => 1), results: ids.map(() => result), metas: ids.map(() => null) });
    wall.push(performance.now() - from);
    const used = process.cpuUsage(cpuFrom);
    cpu.push((used.user + used.system) / 1000);
    if (skipped.length > 0) throw new Error(`${label}: ${skipped.length} outcomes not written`);
  }
  const ms = (values: number[]): string => (median(values) ?? Number.NaN).toFixed(1).padStart(7);
  console.log(`${label.padEnd(24)} wall ${ms(wall)} ms, this process's CPU ${ms(cpu)} ms (medians of ${rounds})`);
}

try {
  await run('1,000 × null', 1_000, 'null', 15);
  await run('1,000 × small object', 1_000, JSON.stringify({ ok: true, n: 12345, name: 'a "quoted" name' }), 15);
  await run('1 × 1 MB of quotes', 1, JSON.stringify('"'.repeat(500_000)), 5);
  await run('20 × 100 KB of JSON', 20, JSON.stringify(Array.from({ length: 2_000 }, (_, i) => ({ key: `k${i}`, v: 'x"y' }))), 5);
} finally {
  await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  await pool.end();
  await pgq.close();
}
