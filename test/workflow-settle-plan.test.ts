/**
 * The settling trigger's "has this job a blocked child?" lookup
 * (workflow_has_blocked_child, migration 1764980000000) keeps one plan per
 * session: made while the table was small, it must not read the whole
 * table once the table has grown.
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
