/**
 * The migration runner: pgq's own advisory lock, migrations that were taken
 * back, and the shipped migration files themselves (never edited once
 * committed: a database records a migration by name and keeps the text it
 * ran).
 */
import { createHash } from 'node:crypto';
import { copyFileSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Pgq } from '../src/index.js';
import { MIGRATIONS_DIR } from '../src/db/migrate.js';
import { runner } from '../src/db/node-pg-migrate.js';
import { useTestSchema } from './support/harness.js';

const ctx = useTestSchema('migrate');

/**
 * sha256 of every migration as committed. A migration is never changed once
 * committed: a database that ran it keeps the text it ran, so a change goes
 * in a new migration. Add a new file's sum here when adding the file.
 */
const COMMITTED: Record<string, string> = {
  '1763780000000_jobs.sql': '18c242b096edda235ca4a452cc60c131878509886b973cb76b71019dfbe107b9',
  '1763790000000_schedules.sql': '3f0a63b56c7e433da260ec612a6396aae2509198bdd576b126d55613cb462b3b',
  '1763795000000_created_by.sql': '9b0ad99c7894b79e4c2e12bd9c0450f5b847c19213512c148ae5e90a55e72b36',
  '1763800000000_workflows.sql': '6f93d0f5099f8387220b5037b66a9b4a772eb2498e40957eac84a768014cdeb6',
  '1764650000000_worker_leases.sql': '02b8a49a53bd2b7e192bb55781664b041e7d5ce4b3f297cca14df2e20e238890',
  '1764660000000_queue_control.sql': 'e16e3dfedbe7e08df1b59db5032e50090a612e2a3002b678ecab70fc7a4f87df',
  '1764670000000_progress_and_console.sql': 'dc6302e4b9c81dae7a4cbe47ee3e16666cd365b3d11da0685d75060399e9d547',
  '1764680000000_observability.sql': '7e06e3c4aba7bb28b1e2b04ae861f3b042961e33472d951647c1a97eab690ec2',
  '1764690000000_worker_tasks.sql': 'a665ab4ab426d12b7d7cec17cbc7d23e209aebb91fb1c8846cede50e31e663a4',
  '1764700000000_workflow_lock_order.sql': '7508b5638d1b8a877ff69d897236cf90ac8683d2bdc666193b639bc5a8fed735',
  '1764710000000_workflow_enqueuer.sql': 'a02c9e2c5bf5a930f982ba9d754687cf9fce0d6489fe59409b7fe547bf62206a',
  '1764720000000_workflow_parent_traces.sql': '338daa5e27d89cd61cb53152da041592530c3467b61f07d672768f21a44b579b',
  '1764730000000_claim_plan.sql': '8281ca8030b5f86196969a74487c00cfeb87f4cf69db1e670e60889748a3a9b1',
  '1764740000000_claim_plan_many.sql': '3b3a4535e377870c9786c694dc984cab0c03c3fa7b4f578f7a9bc9eb8bb84308',
  '1764750000000_claim_plan_limited.sql': 'd73d55ce4a62a16a7de9a27d97fd6e557ae4ed02412913eb4f029bc9dc419457',
  '1764760000000_claim_limited.sql': 'a0c687beeb35614db8a1e1eaa041a626faa28e95ac52f01653bd4a5e34121a97',
  '1764770000000_running_indexes.sql': 'c99f0bf983ca52a44893ae64b4b766f31dc07887fb155eef9129f53910d1d0d3',
  '1764780000000_finished_index.sql': '62622e1836042b65a3b99eec403df203d56e7a403e8c8da7f8ee77f1a296db76',
  '1764790000000_claim_candidates_plpgsql.sql': 'a87274b55321f14e47b578a6350cf11e4c0dfe727df7566030be7fe4eb471ace',
  '1764800000000_claim_limited_waiting.sql': '3f650c8b2f3ef7b0f1eaf729af985b21cd6ec20c4284a1fd926447c579f004d7',
  '1764810000000_workflow_delete_statement.sql': '49af1a89760e525c23eed136ed8f518750c224c1eb06d9ce7aca42986aef76d6',
  '1764820000000_workflow_revive_lock_order.sql': '207d546e328b3858a2660c4e6d7ac3a3d3c5d4fce6bdb6240d3703aa7b66821d',
  '1764830000000_cancel_running.sql': '688c8bb9fae0cc6f78bec68808aad93e727589966202fea8aee1f68313666662',
  '1764840000000_claim_limited_fill.sql': 'b5e20728ae425f0fab8a6bea20412197e6bb74c28cbe80a33df83de8a3d2f916',
  '1764850000000_enqueuer_ids.sql': '29b090bf073e1e24647de93bf88b97f3333b865d6a4e501154e100520b2f7d3f',
  '1764860000000_converge_edited_functions.sql': '7995894c961be932f728474fbc47a1e61be907d0f21cca9d6c7ca98885b883c5',
  '1764870000000_notify_scheduled.sql': '7802a957ff399f65859cc7c883c0a9dc75aa08f16d5246e5da17881429930418',
  '1764880000000_claim_limited_isolation.sql': '495a6e9007ee0230502d04e1d3657641e6c2b6660d2296fd9b4b14714abdf05f',
  '1764890000000_expire_unique_holder.sql': '49df3ff3e388eefa18ae77a71f4a0f5f2a93461795f84f15de7d509bc5dd9372',
  '1764900000000_created_by_role_names.sql': '771d29c91a54051d536469051959309a49c77506c8e697fb7f0c5135160ef706',
  '1764910000000_workflow_cascade_levels.sql': '0dd0cdb8937dc117afad1b8aaae3f4f5de98c3e72ceba1982169def484f663fa',
  '1764920000000_workflow_resumed_jobs.sql': '6153e70d12109ab245cc961e0ec5487826151036c0b5c2e28c730a3678b794c1',
  '1764930000000_finished_unique_key_index.sql': '35f546b47957ae526ffb9f6d02eca4752e4c55d1a0700847b782c880143f98c3',
  '1764940000000_workflow_revive_names_newest.sql': 'b531f65e9c5021deda203aff126024162682cb82b80843fd363bae9b42e07c60',
  '1764960000000_workflow_revive_writes_parents.sql': 'f2493182672486036b90d3f252a05ee92a4b08b0d3e0ef48a985407e02ff10f7',
  '1764980000000_workflow_settle_without_blocked_children.sql': '12bb7019824b0c23910d57d12ea5e409d1adced23a40c95ca268a3f21ca376b7',
  '1764990000000_workflow_cancelled_descendants.sql': '8b477d8763e066ec1c4ccbc458f1ce3bff32cad0806ab15ae38453f664b901d3',
  '1765000000000_jobs_state_queue_statistics.sql': '50550b75cce3003ec4bb822c0ebad90d128465ab5d5df07845eff06d5f092223',
};

/** node-pg-migrate's default advisory lock, which an application's own migrations hold while they run. */
const NODE_PG_MIGRATE_LOCK = '7241865325823964';

/** Migrates `schema` with the shipped migrations that `keep` keeps, and `extra` files, as a database of an earlier pgq was. */
async function migrateAsBefore(schema: string, keep: (file: string) => boolean, extra: Record<string, string> = {}): Promise<void> {
  const dir = mkdtempSync(path.join(tmpdir(), 'pgq-migrations-'));
  const client = await ctx.admin.connect();
  try {
    for (const file of readdirSync(MIGRATIONS_DIR).filter((f) => f.endsWith('.sql') && keep(f))) copyFileSync(path.join(MIGRATIONS_DIR, file), path.join(dir, file));
    for (const [file, text] of Object.entries(extra)) writeFileSync(path.join(dir, file), text);
    await runner({
      dbClient: client,
      dir,
      direction: 'up',
      count: Infinity,
      schema,
      createSchema: true,
      migrationsSchema: schema,
      createMigrationsSchema: true,
      migrationsTable: 'pgq_migrations',
      singleTransaction: true,
      log: () => undefined,
    });
  } finally {
    await client.query('RESET search_path').catch(() => undefined);
    client.release();
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('migrations', () => {
  it('are the committed files, unchanged (a change goes in a new migration)', () => {
    const files = readdirSync(MIGRATIONS_DIR).filter((f) => f.endsWith('.sql')).sort();
    const sums = Object.fromEntries(files.map((f) => [f, createHash('sha256').update(readFileSync(path.join(MIGRATIONS_DIR, f))).digest('hex')]));
    expect(sums).toEqual(COMMITTED);
  });

  it("run while another session holds node-pg-migrate's default lock (a pgq.migrate() called from an application's own migration waited on it for ever)", async () => {
    const holder = await ctx.admin.connect();
    try {
      await holder.query(`SELECT pg_advisory_lock(${NODE_PG_MIGRATE_LOCK})`);
      const pgq = ctx.pgq({ tasks: [] });
      const result = await Promise.race([pgq.migrate(), new Promise<'waiting'>((resolve) => setTimeout(() => resolve('waiting'), 30_000))]);
      expect(result).not.toBe('waiting');
      expect(result === 'waiting' ? [] : result.applied).toContain('1763780000000_jobs');
    } finally {
      await holder.query(`SELECT pg_advisory_unlock(${NODE_PG_MIGRATE_LOCK})`).catch(() => undefined);
      holder.release();
    }
  });

  it('undo a withdrawn migration a database ran, and go on (it stopped every later migration: "Not run migration … is preceding already run migration")', async () => {
    // A database migrated at the commit that shipped 1764830000000_state_index_without_waiting (taken back since, its
    // timestamp reused by 1764830000000_cancel_running): the migrations before it, then it.
    const schema = `${ctx.schema}_w`;
    await migrateAsBefore(schema, (file) => file < '1764830000000', {
      '1764830000000_state_index_without_waiting.sql': `-- Up Migration
CREATE INDEX jobs_state_queue_idx_new ON jobs (state, queue, id) WHERE state NOT IN ('succeeded', 'available');
DROP INDEX jobs_state_queue_idx;
ALTER INDEX jobs_state_queue_idx_new RENAME TO jobs_state_queue_idx;
-- Down Migration
`,
    });
    const pgq = new Pgq({ connectionString: ctx.url, schema, tasks: [] });
    try {
      const { applied } = await pgq.migrate();
      expect(applied[0]).toBe('1764830000000_cancel_running');
      const s = `"${schema}"`;
      const names = (await ctx.admin.query<{ name: string }>(`SELECT name FROM ${s}.pgq_migrations ORDER BY name`)).rows.map((r) => r.name);
      expect(names).toEqual(Object.keys(COMMITTED).map((f) => f.replace(/\.sql$/, '')));
      const { rows } = await ctx.admin.query<{ def: string }>(`SELECT pg_get_indexdef($1::regclass) AS def`, [`${s}.jobs_state_queue_idx`]);
      expect(rows[0]!.def).toMatch(/WHERE \(state <> 'succeeded'::text\)$/);
      expect((await pgq.migrate()).applied).toEqual([]);
    } finally {
      await pgq.close();
      await ctx.admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    }
  });

  it('bring a function whose migration was changed after it was committed to its final text', async () => {
    const schema = `${ctx.schema}_c`;
    await migrateAsBefore(schema, (file) => file < '1764860000000');
    const s = `"${schema}"`;
    // As a database that ran the first texts had them: the retry trigger without its lock pass, the keyed candidates in SQL.
    await ctx.admin.query(`CREATE OR REPLACE FUNCTION ${s}.workflow_job_state_changed() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$`);
    await ctx.admin.query(`DROP FUNCTION ${s}.claim_candidates_keyed(text, text[], integer, text[])`);
    await ctx.admin.query(`CREATE FUNCTION ${s}.claim_candidates_keyed(p_queue text, p_tasks text[], p_limit integer, p_full_keys text[])
      RETURNS TABLE (id bigint, concurrency_key text, priority integer, run_at timestamptz) LANGUAGE sql STABLE AS $$ SELECT NULL::bigint, NULL::text, 0, now() $$`);
    const pgq = new Pgq({ connectionString: ctx.url, schema, tasks: [] });
    try {
      expect((await pgq.migrate()).applied).toEqual(['1764860000000_converge_edited_functions', '1764870000000_notify_scheduled', '1764880000000_claim_limited_isolation', '1764890000000_expire_unique_holder', '1764900000000_created_by_role_names', '1764910000000_workflow_cascade_levels', '1764920000000_workflow_resumed_jobs', '1764930000000_finished_unique_key_index', '1764940000000_workflow_revive_names_newest', '1764960000000_workflow_revive_writes_parents', '1764980000000_workflow_settle_without_blocked_children', '1764990000000_workflow_cancelled_descendants', '1765000000000_jobs_state_queue_statistics']);
      const source = (name: string) =>
        ctx.admin
          .query<{ src: string; lang: string }>(`SELECT p.prosrc AS src, l.lanname AS lang FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang WHERE p.oid = $1::regproc`, [`${s}.${name}`])
          .then((r) => r.rows[0]!);
      // Its current text: the one 1764990000000 gave it (the converging text, with the cascade found level by level,
      // a dependent re-pointed to its failed parent with the largest id, a revived dependent's live parents written,
      // a settling without blocked children returning at once, and the cascade's walk in a function of its own).
      const final = readFileSync(path.join(MIGRATIONS_DIR, '1764990000000_workflow_cancelled_descendants.sql'), 'utf8');
      const body = /workflow_job_state_changed\(\) RETURNS trigger LANGUAGE plpgsql AS \$\$([\s\S]*?)\$\$;/.exec(final)![1]!;
      expect((await source('workflow_job_state_changed')).src).toBe(body);
      expect(await source('claim_candidates_keyed')).toMatchObject({ lang: 'plpgsql', src: expect.stringContaining('RETURN QUERY') });
    } finally {
      await pgq.close();
      await ctx.admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    }
  });
});
