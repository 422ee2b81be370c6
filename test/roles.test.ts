/**
 * Least privilege: the enqueuer role can add jobs and read back its own, and
 * nothing more; the worker role can run a worker end to end but not change
 * the schema.
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import pg from 'pg';
import { Pgq, chord, defineTask, group, step, type Middleware } from '../src/index.js';
import { PgqMetrics } from '../src/metrics.js';
import { until, useTestSchema } from './support/harness.js';

const ctx = useTestSchema('roles');
const root = path.resolve(import.meta.dirname, '..');
const bin = path.join(root, 'dist/cli/bin.js');
const examples = path.join(root, 'examples/tasks.ts');

/** The built `pgq` command (npm test builds first). */
function cli(url: string, args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [bin, '--database-url', url, '--schema', ctx.schema, ...args], {
    encoding: 'utf8',
    timeout: 120_000,
    env: { ...process.env, PGQ_LOG_LEVEL: 'warn' },
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}
const suffix = randomBytes(3).toString('hex');
const enqueuer = `pgq_test_enq_${suffix}`;
const worker = `pgq_test_wrk_${suffix}`;
const login = { enq: `${enqueuer}_login`, wrk: `${worker}_login` };
// Roles of the workflow test: its own, so it runs alone too.
const wfRoles = { enqueuer: `pgq_test_wfe_${suffix}`, other: `pgq_test_wfo_${suffix}`, worker: `pgq_test_wfw_${suffix}` };
const wfLogins = { enqueuer: `${wfRoles.enqueuer}_login`, other: `${wfRoles.other}_login`, worker: `${wfRoles.worker}_login` };

const echo = defineTask({ name: 'echo', schema: z.object({ secret: z.string() }), handler: (p) => ({ seen: p.secret.length }) });
const joinSeen = defineTask({
  name: 'join-seen',
  schema: z.array(z.object({ seen: z.number() })),
  handler: (parts) => parts.map((p) => p.seen).join(','),
});

function urlAs(user: string): string {
  const u = new URL(ctx.url);
  u.username = user;
  u.password = 'pw';
  return u.toString();
}

afterAll(async () => {
  for (const role of [login.enq, login.wrk, enqueuer, worker, ...Object.values(wfLogins), ...Object.values(wfRoles)]) {
    await ctx.admin.query(`DROP OWNED BY "${role}" CASCADE`).catch(() => undefined);
    await ctx.admin.query(`DROP ROLE IF EXISTS "${role}"`).catch(() => undefined);
  }
});

describe('least-privilege roles', () => {
  it('an enqueuer adds jobs and reads only its own; a worker runs them; neither can do more', async () => {
    const owner = await ctx.migrated({ tasks: [echo] });
    await owner.setupRoles({ enqueuer, worker });
    await owner.setupRoles({ enqueuer, worker }); // idempotent
    await ctx.admin.query(`CREATE ROLE "${login.enq}" LOGIN PASSWORD 'pw' IN ROLE "${enqueuer}"`);
    await ctx.admin.query(`CREATE ROLE "${login.wrk}" LOGIN PASSWORD 'pw' IN ROLE "${worker}"`);

    const ownersJob = await owner.enqueue(echo, { secret: 'owner-only' });

    const app = new Pgq({ connectionString: urlAs(login.enq), schema: ctx.schema, tasks: [echo] });
    const jobs = new Pgq({ connectionString: urlAs(login.wrk), schema: ctx.schema, tasks: [echo] });
    try {
      const mine = await app.enqueue(echo, { secret: 'abc' }, { meta: { requestId: 'r-1' } });
      expect(mine.payload).toEqual({ secret: 'abc' });
      expect(mine.meta).toEqual({ requestId: 'r-1' });
      expect((await app.getJob(mine.id))?.state).toBe('available');
      expect(await app.getJob(ownersJob.id)).toBeNull(); // cannot read others' payloads
      expect(await app.listJobs()).toHaveLength(1);
      // A uniqueKey held by a job of another role, which this one cannot see: said so (it was "it keeps finishing; try again").
      const keyHolder = await owner.enqueue(echo, { secret: 'key' }, { uniqueKey: 'shared-key', delayMs: 3_600_000 });
      await expect(app.enqueue(echo, { secret: 'key' }, { uniqueKey: 'shared-key' })).rejects.toThrow(/a live job holds the key but this connection cannot read it \(a job enqueued by another role/);
      await owner.deleteJob(keyHolder.id);
      // Its own key held by its own job past its expiry (no leader ran the expirer): that job ends and the
      // enqueue inserts, as for any role (it was "permission denied for table jobs").
      const expiring = await app.enqueue(echo, { secret: 'exp' }, { uniqueKey: 'own-key', expiresInMs: 50, queue: 'nobody-serves' });
      await new Promise((resolve) => setTimeout(resolve, 100));
      const again = await app.enqueue(echo, { secret: 'exp' }, { uniqueKey: 'own-key', queue: 'nobody-serves' });
      expect(again.id).not.toBe(expiring.id);
      expect(await app.getJob(expiring.id)).toMatchObject({ state: 'cancelled', errors: [{ message: expect.stringMatching(/^expired: not started by its expiry time/) }] });
      await owner.deleteJob(again.id);
      await owner.deleteJob(expiring.id);
      await expect(app.cancelJob(mine.id)).rejects.toThrow(/permission denied/);
      await expect(app.pauseQueue('default')).rejects.toThrow(/permission denied/);
      await expect(app.setQueue('default', { concurrency: 1 })).rejects.toThrow(/permission denied/);
      const raw = new pg.Client({ connectionString: urlAs(login.enq) });
      await raw.connect();
      try {
        await expect(raw.query(`UPDATE "${ctx.schema}".jobs SET state = 'succeeded'`)).rejects.toThrow(/permission denied/);
        await expect(raw.query(`DELETE FROM "${ctx.schema}".jobs`)).rejects.toThrow(/permission denied/);
        await expect(raw.query(`SELECT * FROM "${ctx.schema}".workers`)).rejects.toThrow(/permission denied/);
        await expect(raw.query(`SELECT * FROM "${ctx.schema}".stats_cache`)).rejects.toThrow(/permission denied/);
        // Queue control is not the enqueuer's: no pausing, no limits, not even reading them.
        await expect(raw.query(`UPDATE "${ctx.schema}".queues SET paused = true`)).rejects.toThrow(/permission denied/);
        await expect(raw.query(`INSERT INTO "${ctx.schema}".queues (name, paused) VALUES ('x', true)`)).rejects.toThrow(/permission denied/);
        await expect(raw.query(`SELECT * FROM "${ctx.schema}".queues`)).rejects.toThrow(/permission denied/);
        await expect(raw.query(`INSERT INTO "${ctx.schema}".jobs (task, state) VALUES ('echo', 'succeeded')`)).rejects.toThrow(
          /row-level security/,
        );
        await expect(raw.query(`DELETE FROM "${ctx.schema}".pgq_migrations`)).rejects.toThrow(/permission denied/);
      } finally {
        await raw.end();
      }
      // The CLI as an enqueuer login: it checks the schema version, enqueues, and lists its own jobs only.
      const viaCli = cli(urlAs(login.enq), ['--json', 'enqueue', 'echo', '--payload', '{"secret":"from-cli"}']);
      expect(viaCli, viaCli.stderr).toMatchObject({ code: 0 });
      const cliJob = JSON.parse(viaCli.stdout) as { id: string; state: string };
      expect(cliJob.state).toBe('available');
      const listed = cli(urlAs(login.enq), ['jobs', 'list']);
      expect(listed, listed.stderr).toMatchObject({ code: 0 });
      const listedIds = listed.stdout.split('\n').slice(1).map((line) => line.trim().split(/\s+/)[0]);
      expect(listedIds).toContain(cliJob.id);
      expect(listedIds).not.toContain(ownersJob.id);
      expect(cli(urlAs(login.enq), ['jobs', 'show', cliJob.id])).toMatchObject({ code: 0, stdout: expect.stringContaining('from-cli') });
      // Stats as an enqueuer: its own jobs' counts; the tasks no worker runs are read from workers, which it may not read.
      const stats = cli(urlAs(login.enq), ['--json', 'stats']);
      expect(stats, stats.stderr).toMatchObject({ code: 0 });
      expect(JSON.parse(stats.stdout)).toEqual([expect.objectContaining({ queue: 'default', orphanedTasks: null })]);
      expect(cli(urlAs(login.enq), ['stats'])).toMatchObject({ code: 0, stdout: expect.stringMatching(/^default\s/m) });

      // The worker role claims a limited queue (it locks and reads the queue's row, and spends its rate
      // bucket), and adds the row of a queue it is the first to serve.
      await owner.setQueue('default', { concurrency: 2, rateLimit: { limit: 1_000, periodMs: 1_000 } });
      const fresh = `fresh-${suffix}`;
      expect(await owner.getQueue(fresh)).toMatchObject({ paused: false, concurrency: null, createdAt: null });
      const w = jobs.worker({ heartbeatMs: 50, rescueAfterMs: 500, pollIntervalMs: 20, queues: ['default', fresh] });
      await w.start();
      expect((await ctx.admin.query(`SELECT name FROM "${ctx.schema}".queues WHERE name = $1`, [fresh])).rowCount).toBe(1);
      expect(await jobs.waitForJob(mine.id, { timeoutMs: 10_000 })).toMatchObject({ state: 'succeeded', result: { seen: 3 } });
      expect(await jobs.waitForJob(ownersJob.id, { timeoutMs: 10_000 })).toMatchObject({ state: 'succeeded' });
      expect(await app.getJob(mine.id)).toMatchObject({ state: 'succeeded', result: { seen: 3 } });
      // The worker role reads and refreshes the shared gauges' reading.
      const metrics = new PgqMetrics(jobs, { statsMaxAgeMs: 0 });
      expect(await metrics.registry.metrics()).toMatch(/pgq_stats_age_seconds/);
      metrics.close();
      expect(await jobs.getQueue('default')).toMatchObject({ concurrency: 2, paused: false });
      expect((await ctx.admin.query(`SELECT rate_tokens FROM "${ctx.schema}".queues WHERE name = 'default'`)).rows[0].rate_tokens).not.toBeNull();
      await w.stop();
      // Queue control is the operator's: the worker role can neither pause a queue nor change its limits
      // (it could, through its grant on every table, while the docs said it could not).
      await expect(jobs.pauseQueue('default')).rejects.toThrow(/permission denied/);
      await expect(jobs.setQueue('default', { concurrency: 50 })).rejects.toThrow(/permission denied/);
      await expect(jobs.setQueue(`other-${suffix}`, { concurrency: 1 })).rejects.toThrow(/permission denied/);
      // An application that calls migrate() at every start, as the worker role, on a schema up to date: nothing to do
      // (it failed: "must be owner of table pgq_migrations").
      expect(await jobs.migrate()).toEqual({ applied: [] });

      // The CLI as a worker-role login: it checks the schema read-only, never migrates.
      expect(cli(urlAs(login.wrk), ['stats'])).toMatchObject({ code: 0 });
      expect(cli(urlAs(login.wrk), ['jobs', 'list'])).toMatchObject({ code: 0, stdout: expect.stringContaining(mine.id) });
      const cliWorker = spawn(process.execPath, [bin, '--database-url', urlAs(login.wrk), '--schema', ctx.schema, 'worker', '--tasks', examples], {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, PGQ_LOG_LEVEL: 'info' },
      });
      let cliOut = '';
      cliWorker.stderr!.on('data', (d: Buffer) => (cliOut += d.toString()));
      cliWorker.stdout!.on('data', (d: Buffer) => (cliOut += d.toString()));
      await until(() => /worker started/.test(cliOut), { timeoutMs: 90_000, what: `pgq worker as the worker role to start; it printed:\n${cliOut}` });
      const exited = new Promise<number | null>((resolve) => cliWorker.once('exit', resolve));
      cliWorker.kill('SIGTERM');
      expect(await exited).toBe(0);
      expect(cliOut).not.toMatch(/permission denied/);

      const rawWorker = new pg.Client({ connectionString: urlAs(login.wrk) });
      await rawWorker.connect();
      try {
        await expect(rawWorker.query(`DROP TABLE "${ctx.schema}".jobs`)).rejects.toThrow(/must be owner/);
        await expect(rawWorker.query(`ALTER TABLE "${ctx.schema}".jobs ADD COLUMN x int`)).rejects.toThrow(/must be owner/);
        await expect(rawWorker.query(`CREATE TABLE "${ctx.schema}".evil (x int)`)).rejects.toThrow(/permission denied/);
        await expect(rawWorker.query(`DELETE FROM "${ctx.schema}".pgq_migrations`)).rejects.toThrow(/permission denied/);
        await expect(rawWorker.query(`UPDATE "${ctx.schema}".queues SET paused = true`)).rejects.toThrow(/permission denied/);
        await expect(rawWorker.query(`UPDATE "${ctx.schema}".queues SET concurrency = NULL, rate_limit = NULL, rate_period_ms = NULL`)).rejects.toThrow(/permission denied/);
        await expect(rawWorker.query(`DELETE FROM "${ctx.schema}".queues`)).rejects.toThrow(/permission denied/);
        await expect(rawWorker.query(`INSERT INTO "${ctx.schema}".queues (name, paused) VALUES ('x', true)`)).rejects.toThrow(/permission denied/);
        await expect(rawWorker.query(`INSERT INTO "${ctx.schema}".queues (name, concurrency) VALUES ('y', 1)`)).rejects.toThrow(/permission denied/);
      } finally {
        await rawWorker.end();
      }
      expect(await owner.getQueue('default')).toMatchObject({ paused: false, concurrency: 2, rateLimit: { limit: 1_000, periodMs: 1_000 } });
      expect(await owner.listQueues()).not.toContainEqual(expect.objectContaining({ name: 'x' }));
    } finally {
      await app.close();
      await jobs.close();
    }
  });

  it('an enqueuer enqueues workflows and reads back only its own; it cannot tie its jobs to anyone else\'s; a worker role runs them', async () => {
    const owner = await ctx.migrated({ tasks: [echo, joinSeen] });
    await owner.setupRoles({ enqueuer: wfRoles.enqueuer, worker: wfRoles.worker });
    await owner.setupRoles({ enqueuer: wfRoles.other });
    for (const [key, name] of Object.entries(wfLogins)) {
      await ctx.admin.query(`CREATE ROLE "${name}" LOGIN PASSWORD 'pw' IN ROLE "${wfRoles[key as keyof typeof wfRoles]}"`);
    }
    const s = `"${ctx.schema}"`;
    const flow = (a: string, b: string) => chord(group([step(echo, { secret: a }), step(echo, { secret: b })]), step(joinSeen));
    const ownersWf = await owner.enqueueWorkflow(flow('owner', 'only'), { name: 'owners' });

    const app = new Pgq({ connectionString: urlAs(wfLogins.enqueuer), schema: ctx.schema, tasks: [echo, joinSeen] });
    const other = new Pgq({ connectionString: urlAs(wfLogins.other), schema: ctx.schema, tasks: [echo, joinSeen] });
    // The worker role records a key with each outcome (as pgq/otel records its span context on workflow jobs).
    const recordSpan: Middleware = {
      attempt(c, next) {
        c.recordMeta('pgq.process', { traceparent: `00-${'a'.repeat(32)}-${c.job.id.padStart(16, '0')}-01`, attempt: c.attempt });
        return next();
      },
    };
    const runner = new Pgq({ connectionString: urlAs(wfLogins.worker), schema: ctx.schema, tasks: [echo, joinSeen], middleware: [recordSpan] });
    const raw = new pg.Client({ connectionString: urlAs(wfLogins.enqueuer) });
    await raw.connect();
    try {
      const wf = await app.enqueueWorkflow(flow('ab', 'cde'), { name: 'apps' });
      expect(wf.steps.map((s) => [s.step, s.state, s.dependsOn.length])).toEqual([
        ['echo#1', 'available', 0],
        ['echo#2', 'available', 0],
        ['join-seen', 'blocked', 2],
      ]);
      // In the caller's transaction too.
      await raw.query('BEGIN');
      const inTx = await app.enqueueWorkflow(flow('x', 'y'), { db: raw });
      await raw.query('ROLLBACK');
      expect(await app.getWorkflow(inTx.id)).toBeNull();

      // Each enqueuer reads its own workflows, jobs and edges, and nobody else's.
      expect((await app.getWorkflow(wf.id))!.steps).toHaveLength(3);
      expect(await app.getWorkflow(ownersWf.id)).toBeNull();
      expect((await app.listWorkflows()).map((w) => w.id)).toEqual([wf.id]);
      expect(await other.getWorkflow(wf.id)).toBeNull();
      expect(await other.listWorkflows()).toEqual([]);
      const { rows: created } = await ctx.admin.query(
        `SELECT DISTINCT created_by::text AS role FROM (SELECT created_by FROM ${s}.workflows WHERE id = $1
           UNION ALL SELECT created_by FROM ${s}.jobs WHERE workflow_id = $1
           UNION ALL SELECT d.created_by FROM ${s}.job_dependencies d JOIN ${s}.jobs j ON j.id = d.child_id WHERE j.workflow_id = $1) x`,
        [wf.id],
      );
      expect(created).toEqual([{ role: wfLogins.enqueuer }]);
      expect((await raw.query(`SELECT count(*)::int AS n FROM ${s}.job_dependencies`)).rows[0].n).toBe(2);
      await expect(app.cancelWorkflow(wf.id)).rejects.toThrow(/permission denied/);

      // Nothing it can write ties its jobs to another role's.
      const ownersJob = ownersWf.steps[0]!.id;
      const attempts: [string, unknown[], RegExp][] = [
        // A blocked job of its own, waiting on the owner's job, would get that job's result as input.
        [
          `WITH w AS (INSERT INTO ${s}.workflows (name, output_job_ids, output_is_list) VALUES ('evil', '{}', false) RETURNING id),
                j AS (INSERT INTO ${s}.jobs (task, state, workflow_id, workflow_step, pending_parents, pass_results, on_parent_failure)
                      SELECT 'echo', 'blocked', w.id, 'evil', 1, 'one', 'cancel' FROM w RETURNING id)
           INSERT INTO ${s}.job_dependencies (child_id, parent_id, position) SELECT j.id, $1, 0 FROM j`,
          [ownersJob],
          /cannot wait on job .*both enqueued by this role/,
        ],
        [`INSERT INTO ${s}.jobs (task, state, workflow_id, pending_parents) VALUES ('echo', 'available', $1, 0)`, [ownersWf.id], /cannot join workflow/],
        [`INSERT INTO ${s}.jobs (task, state) VALUES ('echo', 'blocked')`, [], /row-level security/],
        [`INSERT INTO ${s}.workflows (name, output_job_ids, output_is_list, created_by) VALUES ('x', '{}', false, $1::regrole)`, [wfLogins.other], /row-level security/],
        [`INSERT INTO ${s}.job_dependencies (child_id, parent_id) VALUES ($1, $2)`, [wf.steps[2]!.id, ownersJob], /cannot wait on job/],
        // Ids ahead of the sequences would make everyone's next enqueues fail on the primary key.
        [`INSERT INTO ${s}.jobs (id, task) VALUES ((SELECT max(id) FROM ${s}.jobs) + 1000, 'echo')`, [], /job id \d+ was not drawn by this session from the jobs id sequence/],
        [`INSERT INTO ${s}.jobs (id, task) SELECT nextval(pg_get_serial_sequence('${s}.jobs', 'id')) + 5, 'echo'`, [], /was not drawn by this session/],
        [`INSERT INTO ${s}.workflows (id, name, output_job_ids, output_is_list) VALUES (1000000, 'x', '{}', false)`, [], /workflow id 1000000 was not drawn by this session/],
        [`UPDATE ${s}.workflows SET name = 'x'`, [], /permission denied/],
        [`DELETE FROM ${s}.job_dependencies`, [], /permission denied/],
      ];
      for (const [text, values, message] of attempts) {
        await expect(raw.query(text, values), text).rejects.toThrow(message);
      }
      const { rows: counts } = await ctx.admin.query(
        `SELECT (SELECT count(*) FROM ${s}.workflows)::int AS workflows, (SELECT count(*) FROM ${s}.job_dependencies)::int AS edges`,
      );
      expect(counts[0]).toEqual({ workflows: 2, edges: 4 });

      // The worker role runs both workflows to the end through the new policies.
      const w = runner.worker({ heartbeatMs: 50, rescueAfterMs: 500, pollIntervalMs: 20 });
      await w.start();
      const done = await app.waitForWorkflow(wf, { timeoutMs: 20_000 });
      expect(done).toMatchObject({ state: 'succeeded', result: '2,3' });
      // Its outcome statements wrote the recorded keys, and the trigger (run by the worker role) handed the
      // members' to the callback; the enqueuer reads them back on its own jobs.
      const [first, second, callback] = done.steps;
      expect(first!.meta['pgq.process']).toEqual({ traceparent: `00-${'a'.repeat(32)}-${first!.id.padStart(16, '0')}-01`, attempt: 1 });
      expect((callback!.meta['pgq.parents'] as { jobId: string }[]).map((p) => p.jobId)).toEqual([first!.id, second!.id]);
      expect(await owner.waitForWorkflow(ownersWf, { timeoutMs: 20_000 })).toMatchObject({ state: 'succeeded', result: '5,4' });
      await w.stop();
    } finally {
      await raw.end();
      await app.close();
      await other.close();
      await runner.close();
    }
  });

  it('a role that owns a schema made for it, without CREATE on the database, migrates it', async () => {
    const owner = `pgq_test_own_${suffix}`;
    const schema = `${ctx.schema}_owned`;
    await ctx.admin.query(`CREATE ROLE "${owner}" LOGIN PASSWORD 'pw'`);
    try {
      await ctx.admin.query(`CREATE SCHEMA "${schema}" AUTHORIZATION "${owner}"`);
      const { rows } = await ctx.admin.query<{ can: boolean }>(`SELECT has_database_privilege($1, current_database(), 'CREATE') AS can`, [owner]);
      expect(rows[0]!.can).toBe(false);
      const migrate = () =>
        spawnSync(process.execPath, [bin, '--database-url', urlAs(owner), '--schema', schema, 'migrate'], { encoding: 'utf8', timeout: 120_000, env: { ...process.env, PGQ_LOG_LEVEL: 'warn' } });
      const first = migrate();
      expect(first.stderr).toBe('');
      expect(first.stdout).toMatch(/^applied .*_jobs/);
      expect(migrate().stdout).toMatch(/up to date/);
      const tables = await ctx.admin.query(`SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = 'jobs' AND tableowner = $2`, [schema, owner]);
      expect(tables.rowCount).toBe(1);

      // The owner named as the worker role: refused, changing nothing (its REVOKE took the owner's own rights on
      // pgq_migrations, and every later migrate failed "permission denied").
      const acl = async () => (await ctx.admin.query(`SELECT relacl::text AS acl, relrowsecurity FROM pg_class WHERE oid IN ($1::regclass, $2::regclass) ORDER BY oid`, [`"${schema}".pgq_migrations`, `"${schema}".jobs`])).rows;
      const before = await acl();
      const roles = spawnSync(process.execPath, [bin, '--database-url', ctx.url, '--schema', schema, 'roles', '--worker', owner], { encoding: 'utf8', timeout: 120_000 });
      expect(roles.status).toBe(1);
      expect(roles.stderr).toMatch(new RegExp(`roles\\.worker: role ${owner} owns pgq's tables in schema ${schema}: it needs no grants`));
      expect(await acl()).toEqual(before);
      // An owner whose rights an earlier pgq took so: migrate says how to give them back.
      await ctx.admin.query(`REVOKE ALL ON "${schema}".pgq_migrations FROM "${owner}"; GRANT SELECT ON "${schema}".pgq_migrations TO "${owner}"`);
      // Behind by its newest migration's row (as after an upgrade of pgq): put back once the owner may write again.
      const { rows: newest } = await ctx.admin.query(`DELETE FROM "${schema}".pgq_migrations WHERE name = (SELECT max(name) FROM "${schema}".pgq_migrations) RETURNING *`);
      const refused = migrate();
      expect(refused.status).toBe(1);
      expect(refused.stderr).toMatch(new RegExp(`role ${owner} may not write ${schema}\\.pgq_migrations.*GRANT ALL ON "${schema}"\\.pgq_migrations TO ${owner}, then migrate`));
      await ctx.admin.query(`GRANT ALL ON "${schema}".pgq_migrations TO "${owner}"`);
      await ctx.admin.query(`INSERT INTO "${schema}".pgq_migrations SELECT * FROM json_populate_record(NULL::"${schema}".pgq_migrations, $1)`, [JSON.stringify(newest[0])]);
      const again = migrate();
      expect([again.status, again.stderr, again.stdout]).toEqual([0, '', expect.stringMatching(/up to date/)]);
    } finally {
      await ctx.admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await ctx.admin.query(`DROP OWNED BY "${owner}" CASCADE`).catch(() => undefined);
      await ctx.admin.query(`DROP ROLE IF EXISTS "${owner}"`);
    }
  });

  it("pgq migrate by a role that does not own pgq's tables, on a schema behind, says who can migrate (it failed adding a primary key to pgq_migrations, with a stack trace)", async () => {
    const other = `pgq_test_oth_${suffix}`;
    const schema = `${ctx.schema}_behind`;
    const owner = new Pgq({ connectionString: ctx.url, schema, tasks: [] });
    await ctx.admin.query(`CREATE ROLE "${other}" LOGIN PASSWORD 'pw'`);
    try {
      await owner.migrate();
      await ctx.admin.query(`GRANT USAGE ON SCHEMA "${schema}" TO "${other}"; GRANT SELECT ON "${schema}".pgq_migrations TO "${other}"`);
      // Behind by its newest migration (as after an upgrade of pgq).
      await ctx.admin.query(`DELETE FROM "${schema}".pgq_migrations WHERE name = (SELECT max(name) FROM "${schema}".pgq_migrations)`);
      const r = spawnSync(process.execPath, [bin, '--database-url', urlAs(other), '--schema', schema, 'migrate'], { encoding: 'utf8', timeout: 120_000 });
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(/is at version \d+, this pgq needs \d+.*only the owner of pgq's tables, role \S+ can: run pgq migrate as that role \(this connection is role pgq_test_oth_/);
      expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
      // A schema that does not exist, for a role that may not create one.
      const none = spawnSync(process.execPath, [bin, '--database-url', urlAs(other), '--schema', `${schema}_none`, 'migrate'], { encoding: 'utf8', timeout: 120_000 });
      expect(none.status).toBe(1);
      expect(none.stderr).toMatch(/does not exist and role pgq_test_oth_\S+ may not create schemas in database \S+: create it for this role \(CREATE SCHEMA/);
    } finally {
      await owner.close();
      await ctx.admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await ctx.admin.query(`DROP OWNED BY "${other}" CASCADE`).catch(() => undefined);
      await ctx.admin.query(`DROP ROLE IF EXISTS "${other}"`);
    }
  });

  it('a role whose name has capitals enqueues, as an enqueuer role and as a plain login ("role … does not exist" before); migrating a fresh schema as one says what to do', async () => {
    const mixed = `PgqMixed_${suffix}`;
    const app = `PgqApp_${suffix}`;
    const owner = await ctx.migrated({ tasks: [echo] });
    await ctx.admin.query(`CREATE ROLE "${mixed}" LOGIN PASSWORD 'pw'; CREATE ROLE "${app}" LOGIN PASSWORD 'pw'`);
    const pgqs: Pgq[] = [];
    try {
      await owner.setupRoles({ enqueuer: mixed });
      await ctx.admin.query(`GRANT USAGE ON SCHEMA "${ctx.schema}" TO "${app}"; GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA "${ctx.schema}" TO "${app}"; GRANT USAGE ON ALL SEQUENCES IN SCHEMA "${ctx.schema}" TO "${app}"`);
      await ctx.admin.query(`CREATE POLICY app_all ON "${ctx.schema}".jobs FOR ALL TO "${app}" USING (true) WITH CHECK (true)`);
      for (const role of [mixed, app]) {
        const as = new Pgq({ connectionString: urlAs(role), schema: ctx.schema, tasks: [echo] });
        pgqs.push(as);
        const job = await as.enqueue(echo, { secret: role });
        expect(await as.getJob(job.id)).toMatchObject({ payload: { secret: role } });
        const { rows } = await ctx.admin.query<{ by: string }>(`SELECT created_by::text AS by FROM "${ctx.schema}".jobs WHERE id = $1`, [job.id]);
        expect(rows[0]!.by).toBe(`"${role}"`);
      }
      // A fresh schema: pgq's first migrations read the role's name unquoted.
      const fresh = `${ctx.schema}_mixed`;
      await ctx.admin.query(`CREATE SCHEMA "${fresh}" AUTHORIZATION "${mixed}"`);
      const migrating = new Pgq({ connectionString: urlAs(mixed), schema: fresh, tasks: [] });
      pgqs.push(migrating);
      await expect(migrating.migrate()).rejects.toThrow(new RegExp(`role "${mixed}" cannot make pgq's first migrations: its name needs quotes.*migrate as a role whose name has no capitals, dots or spaces`));
      const { rowCount } = await ctx.admin.query(`SELECT 1 FROM pg_tables WHERE schemaname = $1`, [fresh]);
      expect(rowCount).toBe(0);
      // A name the unquoted reading takes as it is (a hyphen) migrates a fresh schema (the check refused it).
      const hyphen = `pgq-app_${suffix}`;
      await ctx.admin.query(`CREATE ROLE "${hyphen}" LOGIN SUPERUSER PASSWORD 'pw'`);
      try {
        const plain = new Pgq({ connectionString: urlAs(hyphen), schema: `${fresh}_h`, tasks: [] });
        pgqs.push(plain);
        expect((await plain.migrate()).applied.length).toBeGreaterThan(20);
      } finally {
        await ctx.admin.query(`DROP SCHEMA IF EXISTS "${fresh}_h" CASCADE`);
        await ctx.admin.query(`DROP ROLE IF EXISTS "${hyphen}"`);
      }
      // A role with a dot in its name, on a schema behind only by later migrations, migrates it (the check raised
      // "invalid name syntax" before PostgreSQL 16).
      const dotted = `pgq.deploy_${suffix}`;
      await ctx.admin.query(`CREATE ROLE "${dotted}" LOGIN SUPERUSER PASSWORD 'pw'`);
      try {
        const { rows: newest } = await ctx.admin.query(`DELETE FROM "${ctx.schema}".pgq_migrations WHERE name = (SELECT max(name) FROM "${ctx.schema}".pgq_migrations) RETURNING name`);
        const deployer = new Pgq({ connectionString: urlAs(dotted), schema: ctx.schema, tasks: [] });
        pgqs.push(deployer);
        expect((await deployer.migrate()).applied).toEqual([newest[0]!.name]);
      } finally {
        await ctx.admin.query(`DROP ROLE IF EXISTS "${dotted}"`);
      }
    } finally {
      await Promise.all(pgqs.map((p) => p.close()));
      await ctx.admin.query(`DROP SCHEMA IF EXISTS "${ctx.schema}_mixed" CASCADE`);
      await ctx.admin.query(`DROP POLICY IF EXISTS app_all ON "${ctx.schema}".jobs`);
      for (const role of [mixed, app]) {
        await ctx.admin.query(`DROP OWNED BY "${role}" CASCADE`).catch(() => undefined);
        await ctx.admin.query(`DROP ROLE IF EXISTS "${role}"`);
      }
    }
  });

  it('pgq stats on a database with no pgq schema says so and creates nothing', async () => {
    const empty = `${ctx.schema}_empty`;
    const r = spawnSync(process.execPath, [bin, '--database-url', ctx.url, '--schema', empty, 'stats'], { encoding: 'utf8', timeout: 120_000 });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/schema .*_empty is not migrated .*run pgq migrate/);
    const { rowCount } = await ctx.admin.query(`SELECT 1 FROM pg_namespace WHERE nspname = $1`, [empty]);
    expect(rowCount).toBe(0);
  });

  it('refuses role names that are not plain identifiers', async () => {
    const owner = await ctx.migrated({ tasks: [echo] });
    await expect(owner.setupRoles({ enqueuer: 'x"; DROP ROLE postgres; --' })).rejects.toThrow(/roles\.enqueuer: .* is not a plain identifier/);
    await expect(owner.setupRoles({})).rejects.toThrow(/name an enqueuer role/);
    // Two long names that differ only past PostgreSQL's 63-character cut of their policies' names: each keeps its own.
    const long = (end: string): string => `pgq_${ctx.schema}_${'x'.repeat(60)}`.slice(0, 61) + end;
    await owner.setupRoles({ enqueuer: long('_a') });
    await owner.setupRoles({ enqueuer: long('_b') });
    const { rows } = await ctx.admin.query<{ roles: string }>(
      `SELECT DISTINCT roles::text FROM pg_policies WHERE schemaname = $1 AND policyname LIKE 'pgq_enqueuer_%'`,
      [ctx.schema],
    );
    expect(rows.map((r) => r.roles).filter((r) => r.includes('xxxx')).sort()).toEqual([`{${long('_a')}}`, `{${long('_b')}}`]);
  });
});
