/**
 * The settling trigger's "has this job a blocked child?" lookup
 * (workflow_has_blocked_child, migration 1764980000000) and the walk of the
 * cascade (workflow_cancelled_descendants, 1764990000000) keep one plan per
 * session: a plan made while the tables were small must not read a whole
 * table once they have grown.
 */
import { describe, expect, it } from 'vitest';
import { jobRowsRead, useTestSchema } from './support/harness.js';

const ctx = useTestSchema('settle_plan');

describe('workflow_has_blocked_child', () => {
  it('reads the children by their ids after the table grew, with a plan made when it was small (it read every job until the next ANALYZE)', async () => {
    await ctx.migrated();
    const s = `"${ctx.schema}"`;
    const session = await ctx.admin.connect();
    try {
      await session.query(`SET search_path = ${s}`);
      await session.query(`ANALYZE ${s}.jobs`);
      // The session's plan, made on an empty table.
      expect((await session.query(`SELECT workflow_has_blocked_child(1) AS b`)).rows[0].b).toBe(false);
      await ctx.admin.query(`INSERT INTO ${s}.jobs (task, queue, payload) SELECT 'filler', 'filler', '{}' FROM generate_series(1, 20000)`);
      await session.query('BEGIN');
      const before = await jobRowsRead(session, ctx.schema);
      expect((await session.query(`SELECT workflow_has_blocked_child(1) AS b`)).rows[0].b).toBe(false);
      expect(await jobRowsRead(session, ctx.schema) - before).toBeLessThan(100);
      await session.query('COMMIT');
    } finally {
      await session.query('ROLLBACK').catch(() => undefined);
      session.release();
    }
  });
});

describe('workflow_cancelled_descendants', () => {
  it('reads each level\'s edges by parent after the table grew, with a plan made when it was small (it read every edge at every level until the next ANALYZE)', async () => {
    await ctx.migrated();
    const s = `"${ctx.schema}"`;
    const n = 1_000;
    const session = await ctx.admin.connect();
    try {
      await session.query(`SET search_path = ${s}`);
      await session.query(`ANALYZE ${s}.jobs; ANALYZE ${s}.job_dependencies`);
      // The session's plans, made on tables without edges: one level, nothing found.
      expect((await session.query(`SELECT ids FROM workflow_cancelled_descendants(-1)`)).rows[0].ids).toBeNull();
      // A chain of n blocked steps under a failed one, written by hand (the function alone walks it).
      const { rows } = await ctx.admin.query<{ id: string }>(
        `INSERT INTO ${s}.jobs (task, queue, payload, on_parent_failure, state) SELECT 'walk', 'walk', '{}', 'cancel', CASE WHEN g = 0 THEN 'failed' ELSE 'blocked' END
           FROM generate_series(0, $1) g ORDER BY g RETURNING id`,
        [n],
      );
      const ids = rows.map((r) => r.id).sort((a, b) => Number(a) - Number(b));
      await ctx.admin.query(`INSERT INTO ${s}.job_dependencies (child_id, parent_id) SELECT c, p FROM unnest($1::bigint[], $2::bigint[]) AS t(c, p)`, [ids.slice(1), ids.slice(0, -1)]);
      await session.query('BEGIN');
      const fetched = async () =>
        Number((await session.query(`SELECT coalesce(idx_tup_fetch, 0) + seq_tup_read AS n FROM pg_stat_xact_user_tables WHERE schemaname = $1 AND relname = 'job_dependencies'`, [ctx.schema])).rows[0].n);
      const before = await fetched();
      const { rows: found } = await session.query(`SELECT ids, bys FROM workflow_cancelled_descendants($1)`, [ids[0]]);
      expect(found[0].ids).toEqual(ids.slice(1));
      expect(found[0].bys).toEqual(ids.slice(0, -1));
      // About two per level by id; the whole table at every level read about n² (1,002,000).
      expect(await fetched() - before).toBeLessThan(n * 10);
      await session.query('COMMIT');
    } finally {
      await session.query('ROLLBACK').catch(() => undefined);
      session.release();
    }
  });
});
