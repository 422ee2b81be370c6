/**
 * The statements that write outcomes (succeeded, deleted on success, failed,
 * snoozed) or move attempts (the give-back of held jobs, the adoption after
 * a lost lease) find their jobs by primary key, one probe per outcome, or
 * hash them against the table once, whatever the statistics say. Taken while no
 * job ran, statistics make `state = 'running'` look like one row; a plan
 * built on that reads the table once and, for each of its rows, every
 * outcome: a batch of 1,000 outcomes on a table of 1,000 jobs compared a
 * million pairs (500 ms). Each statement's plan is read back from
 * auto_explain, as run.
 */
import { describe, expect, it } from 'vitest';
import { fromPg } from '../src/db/queryable.js';
import { createStatements } from '../src/db/statements.js';
import { useTestSchema } from './support/harness.js';

const ctx = useTestSchema('outcome_plan');
const WAITING = 1_000;
const OUTCOMES = 500;

/** Every value of `key` anywhere in a plan tree, summed. */
function sum(plan: unknown, key: string): number {
  if (Array.isArray(plan)) return plan.reduce((total: number, item) => total + sum(item, key), 0);
  if (plan === null || typeof plan !== 'object') return 0;
  return Object.entries(plan).reduce((total, [k, v]) => total + (k === key && typeof v === 'number' ? v : sum(v, key)), 0);
}

describe('outcome statements', () => {
  it('compare each outcome with its own job only, on a table analysed while none ran: custom plans and the generic one', async (context) => {
    await ctx.migrated();
    const s = `"${ctx.schema}"`;
    await ctx.admin.query(`INSERT INTO ${s}.jobs (task, queue, payload) SELECT 'filler', 'filler', '{}' FROM generate_series(1, ${WAITING})`);
    await ctx.admin.query(`ANALYZE ${s}.jobs`);
    const statements = createStatements(ctx.schema);
    const session = await ctx.admin.connect();
    const plans: unknown[] = [];
    const onNotice = (notice: { message?: string }): void => {
      if (notice.message?.startsWith('duration:')) plans.push(JSON.parse(notice.message.slice(notice.message.indexOf('{'))));
    };
    session.on('notice', onNotice);
    const db = fromPg(session);
    const kinds = ['complete', 'complete deleting', 'fail', 'snooze', 'release', 'adopt'] as const;
    try {
      try {
        await session.query(`LOAD 'auto_explain'`);
      } catch (err) {
        // Loading a library takes a superuser (42501), and auto_explain ships with PostgreSQL's contrib modules (58P01).
        const code = (err as { code?: string }).code;
        if (code === '42501' || code === '58P01') return context.skip(`auto_explain cannot be loaded here (${code}): ${String(err)}`);
        throw err;
      }
      await session.query(`SET auto_explain.log_min_duration = 0; SET auto_explain.log_analyze = on; SET auto_explain.log_format = json; SET auto_explain.log_level = notice`);
      for (let round = 0; round < 8; round += 1) {
        // Custom plans first (the first five executions of a prepared statement plan with its values), then the generic plan.
        if (round === 6) await session.query('SET plan_cache_mode = force_generic_plan');
        for (const kind of kinds) {
          // Each statement on the table as analysed while none ran: the rows of the last one gone, dead ones vacuumed.
          await ctx.admin.query(`DELETE FROM ${s}.jobs WHERE task = 'outcome'`);
          await ctx.admin.query(`VACUUM ANALYZE ${s}.jobs`);
          const { rows } = await ctx.admin.query<{ id: string }>(
            `INSERT INTO ${s}.jobs (task, queue, payload, state, attempts, started_at, worker_id)
             SELECT 'outcome', 'outcome', '{}', 'running', 1, now(), 'w1' FROM generate_series(1, ${OUTCOMES}) RETURNING id`,
          );
          const ids = rows.map((r) => r.id);
          const attempts = ids.map(() => 1);
          const metas = ids.map((_, i) => (i % 2 === 0 ? '{"k": "v"}' : null));
          plans.length = 0;
          const written =
            kind === 'complete' || kind === 'complete deleting'
              ? ids.length - (await statements.completeJobs(db, { ids, attempts, results: ids.map(() => '{"ok": true}'), metas, deleteSucceeded: kind === 'complete deleting' })).skipped.length
              : kind === 'fail'
                ? (await statements.failJobs(db, { ids, attempts, errors: ids.map(() => '{"message": "no"}'), delaysMs: ids.map(() => 1_000), permanent: ids.map(() => false), metas })).length
                : kind === 'snooze'
                  ? (await statements.snoozeJobs(db, { ids, attempts, delaysMs: ids.map(() => 1_000), notes: ids.map((_, i) => (i % 3 === 0 ? '{"note": 1}' : null)), metas })).length
                  : kind === 'release'
                    ? await statements.releaseUnstarted(db, { workerIds: ['w1'], attempts: ids.map((id) => [id, 1] as const) })
                    : (await statements.adoptJobs(db, { workerId: 'w2', formerWorkerIds: ['w1'], ids, attempts })).length;
          const label = `${kind}, round ${round}`;
          expect(written, label).toBe(OUTCOMES);
          expect(plans, label).toHaveLength(1);
          // Pairs compared and thrown away: none when each outcome meets its own job (by primary key or by hash); about
          // 250,000 when each job was compared with every outcome.
          expect(sum(plans, 'Rows Removed by Join Filter'), label).toBeLessThan(OUTCOMES);
        }
      }
    } finally {
      session.off('notice', onNotice);
      await session.query('RESET ALL').catch(() => undefined);
      session.release();
    }
  });
});
