/**
 * The claim's plan when the table's statistics are stale:
 * `node --import tsx bench/claim-plan.ts [--jobs 1000000] [--analyze] [--many | --limited | --keyed]`.
 *
 * In a scratch schema of the benchmark database (a new installation: its
 * jobs table never analysed) it inserts `--jobs` waiting jobs without
 * analysing (as a first burst does before autovacuum's first analyse; on a
 * server with autovacuum off, for good) and times 40 claims of 500 with
 * pgq's claim statement, each followed by the completion of what it took,
 * then prints the plan the claim's SELECT gets when planned as a plain
 * statement (what `claim_candidates()`, planned with bitmap scans and sorts
 * off, avoids). With `--analyze` the table is analysed
 * after the insert, for comparison; with `--many` the claims are a
 * worker's of two queues (the several-queue claim, whose candidates
 * `claim_candidates_many()` reads the same way); with `--limited` the
 * claims are of a queue with a concurrency limit (`claim_limited()`, which
 * locks the queue's row and claims through `claim_candidates()`),
 * with `--keyed` of a queue with a per-key limit, its jobs spread over 1,000
 * keys (candidates read by `claim_candidates_keyed_fill()`). The schema is dropped at the end.
 */
import { parseArgs } from 'node:util';
import pg from 'pg';
import { Pgq } from '../src/index.js';
import { createStatements } from '../src/db/statements.js';
import { createQueueStatements } from '../src/db/queue-statements.js';
import { fromPg } from '../src/db/queryable.js';

const { values: args } = parseArgs({
  options: {
    jobs: { type: 'string', default: '1000000' },
    analyze: { type: 'boolean', default: false },
    many: { type: 'boolean', default: false },
    limited: { type: 'boolean', default: false },
    keyed: { type: 'boolean', default: false },
  },
});
const queues = args.many ? ['default', 'other'] : ['default'];
const url = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const schema = 'pgq_claim_plan';
const jobs = Number(args.jobs);

const pgq = new Pgq({ connectionString: url, schema });
await pgq.migrate();
await pgq.close();
const client = new pg.Client({ connectionString: url });
await client.connect();
try {
  const s = `"${schema}"`;
  await client.query(`INSERT INTO ${s}.jobs (task, queue, payload) SELECT 'noop', 'default', jsonb_build_object('i', g) FROM generate_series(1, $1::int) g`, [jobs]);
  if (args.analyze) await client.query(`ANALYZE ${s}.jobs`);
  await client.query(
    `INSERT INTO ${s}.workers (id, hostname, pid, queues, concurrency, lease_expires_at) VALUES ('probe', 'probe', 1, ARRAY['default'], 500, now() + interval '1 hour')`,
  );
  const statements = createStatements(schema);
  const queueStatements = createQueueStatements(schema);
  const db = fromPg(client, true);
  const limited = args.limited || args.keyed;
  if (limited) {
    await client.query(`INSERT INTO ${s}.queues (name, concurrency, key_concurrency) VALUES ('default', 100000, $1)`, [args.keyed ? 1000 : null]);
    if (args.keyed) await client.query(`UPDATE ${s}.jobs SET concurrency_key = 'k' || (id % 1000)`);
  }
  const claim = async (): Promise<{ id: string }[]> => {
    if (!limited) return statements.claimJobs(db, { queues, tasks: ['noop'], limit: 500, workerId: 'probe' });
    const p = { queue: 'default', tasks: ['noop'], limit: 500, workerId: 'probe' };
    return (await queueStatements.claimLimited(db, p)).claimed;
  };
  const ms: number[] = [];
  for (let i = 0; i < 40; i += 1) {
    const t = performance.now();
    const rows = await claim();
    if (rows.length !== 500) throw new Error(`a claim took ${rows.length} jobs, not 500`);
    ms.push(performance.now() - t);
    await client.query(`UPDATE ${s}.jobs SET state = 'succeeded', finished_at = now() WHERE id = ANY($1::bigint[])`, [rows.map((r) => r.id)]);
  }
  const sorted = [...ms].sort((a, b) => a - b);
  process.stdout.write(
    `${jobs.toLocaleString('en-US')} waiting, statistics ${args.analyze ? 'fresh' : 'never gathered'}: a ${args.keyed ? 'per-key limited ' : limited ? 'limited ' : ''}claim of 500 over ${queues.length} queue(s) took median ${sorted[20]!.toFixed(1)} ms, max ${sorted[39]!.toFixed(1)} ms\n`,
  );
  const plan = await client.query<{ 'QUERY PLAN': string }>(
    `EXPLAIN (ANALYZE, BUFFERS) SELECT id FROM ${s}.jobs WHERE state = 'available' AND queue = 'default' AND task = ANY(ARRAY['noop'])
      ORDER BY priority DESC, run_at, id LIMIT 500 FOR UPDATE SKIP LOCKED`,
  );
  process.stdout.write(`the claim's SELECT planned as a plain statement:\n${plan.rows.map((r) => r['QUERY PLAN']).join('\n')}\n`);
} finally {
  await client.query(`DROP SCHEMA "${schema}" CASCADE`);
  await client.end();
}
