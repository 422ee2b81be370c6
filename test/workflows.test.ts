/**
 * Workflows on one in-process worker: each primitive, compositions, results
 * passed in order, failure and cancellation propagation, resuming by retry,
 * atomic enqueue in the caller's transaction, validation, two parents
 * settling at once, and retention.
 */
import { setTimeout as wait } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import {
  chain,
  chord,
  defineTask,
  group,
  map,
  PermanentError,
  step,
  stepOutcome,
  ValidationError,
  type Flow,
  type JobState,
  type Pgq,
  type Worker,
} from '../src/index.js';
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import type { PgqDatabase } from '../src/db/tables.js';
import { Pruner } from '../src/maintenance/pruner.js';
import { lostInputs } from '../src/workflow/lost-inputs.js';
import { cancelLockedJobs } from '../src/jobs/cancel-jobs.js';
import { channelNames } from '../src/notify/channels.js';
import { deferred, jobRowsRead, until, useTestSchema } from './support/harness.js';

const ctx = useTestSchema('workflows');

const add = defineTask({ name: 'add', schema: z.object({ a: z.number(), b: z.number() }), handler: ({ a, b }) => a + b });
const double = defineTask({
  name: 'double',
  schema: z.number(),
  handler: (n) => n * 2,
});
const toText = defineTask({ name: 'to-text', schema: z.number(), handler: (n) => `n=${n}` });
const sum = defineTask({ name: 'sum', schema: z.array(z.number()), handler: (ns) => ns.reduce((a, b) => a + b, 0) });
const collect = defineTask({ name: 'collect', schema: z.array(z.unknown()), handler: (xs) => xs });
const label = defineTask({ name: 'label', schema: z.object({ text: z.string() }), handler: ({ text }) => text });
/** Fails for good on its first attempt, succeeds (n + 1) after a retry. */
const flaky = defineTask({
  name: 'flaky',
  schema: z.number(),
  maxAttempts: 1,
  handler: (n, c) => {
    if (c.attempt === 1) throw new PermanentError(`flaky refuses ${n}`);
    return n + 1;
  },
});
const report = defineTask({
  name: 'report',
  schema: z.array(stepOutcome(z.unknown())),
  handler: (outcomes) => outcomes.map((o) => (o.ok ? `ok:${o.value}` : `failed:${o.error.step}:${o.error.message}`)),
});
const started = new Map<string, () => void>();
const hang = defineTask({
  name: 'hang',
  schema: z.object({ tag: z.string() }),
  handler: async ({ tag }, c) => {
    started.get(tag)?.();
    await wait(600_000, undefined, { signal: c.signal });
  },
});
// Tasks no worker here runs: the tests settle their jobs by hand.
const manual = defineTask({ name: 'manual', schema: z.object({ n: z.number() }), handler: ({ n }) => n });
const manualSum = defineTask({ name: 'manual-sum', schema: z.array(z.number()), handler: () => 0 });
const manualInc = defineTask({ name: 'manual-inc', schema: z.number(), handler: (n) => n + 1 });
const manualReport = defineTask({ name: 'manual-report', schema: z.array(stepOutcome(z.number())), handler: () => 0 });

const tasks = [add, double, toText, sum, collect, label, flaky, report, hang];
let pgq: Pgq;
let worker: Worker;

beforeAll(async () => {
  pgq = await ctx.migrated({ tasks: [...tasks, manual, manualSum, manualInc, manualReport] });
  // The worker runs on a Pgq without the manual tasks, so it leaves their jobs alone.
  worker = ctx.pgq({ tasks }).worker({ concurrency: 20, pollIntervalMs: 100 });
  await worker.start();
});

afterAll(async () => {
  await worker.stop();
});

const jobsOf = async (workflowId: string) =>
  (
    await ctx.admin.query<{ id: string; state: string; workflow_step: string; workflow_id: string }>(
      `SELECT id::text, state, workflow_step, workflow_id::text FROM "${ctx.schema}".jobs WHERE workflow_id = $1 ORDER BY id`,
      [workflowId],
    )
  ).rows;

/** A pruner with the default retention (succeeded 1 day, failed and cancelled 7 days). */
const defaultRetention = (batchSize: number, maxBatchesPerPass: number): Pruner =>
  new Pruner(
    { succeededMs: 86_400_000, failedMs: 7 * 86_400_000, cancelledMs: 7 * 86_400_000, batchSize, intervalMs: 60_000, maxBatchesPerPass },
    pgq.kysely,
    pgq.logger,
  );

describe('primitives', () => {
  it('chain: each step gets the previous result; the workflow result is the last one', async () => {
    // Inside a transaction, so the record shows the workflow as inserted, before any worker sees it.
    const client = await ctx.admin.connect();
    await client.query('BEGIN');
    const wf = await pgq.enqueueWorkflow(chain(step(add, { a: 2, b: 3 }), step(double), step(toText)), { name: 'arith', db: client });
    await client.query('COMMIT');
    client.release();
    expect(wf).toMatchObject({ name: 'arith', state: 'running', result: null });
    expect(wf.steps.map((s) => [s.step, s.state, s.dependsOn.length])).toEqual([
      ['add', 'available', 0],
      ['double', 'blocked', 1],
      ['to-text', 'blocked', 1],
    ]);
    expect(wf.steps[1]!.payload).toBeNull();
    const done = await pgq.waitForWorkflow(wf, { timeoutMs: 20_000 });
    const text: string | null = done.result;
    expect(text).toBe('n=10');
    expect(done.state).toBe('succeeded');
    expect(done.finishedAt).toBeInstanceOf(Date);
    expect(done.steps.map((s) => s.payload)).toEqual([{ a: 2, b: 3 }, 5, 10]);
    expect(done.steps.map((s) => s.dependsOn)).toEqual([[], [done.steps[0]!.id], [done.steps[1]!.id]]);
    // The workflow id is on every job.
    expect((await jobsOf(wf.id)).every((j) => j.workflow_id === wf.id)).toBe(true);
  });

  it('waitForWorkflow with a timeout longer than a timer holds (30 days) resolves once the workflow has ended', async () => {
    const wf = await pgq.enqueueWorkflow(chain(step(add, { a: 1, b: 2 }), step(double)));
    await pgq.waitForWorkflow(wf, { timeoutMs: 20_000 });
    // Each look was raced against a timer of the time left, which Node fires
    // after 1 ms when it is over 2^31 - 1 ms: every look was dropped, and the
    // wait never ended. The signal only keeps this test from hanging.
    const done = await pgq.waitForWorkflow(wf, { timeoutMs: 30 * 86_400_000, signal: AbortSignal.timeout(15_000) });
    expect(done.state).toBe('succeeded');
    expect(done.result).toBe(6);
  });

  it('group: members run in parallel; the result lists theirs in member order', async () => {
    const wf = await pgq.enqueueWorkflow(group([step(add, { a: 1, b: 1 }), step(label, { text: 'x' }), step(add, { a: 5, b: 5 })]));
    expect(wf.steps.every((s) => s.dependsOn.length === 0 && s.state !== 'blocked')).toBe(true);
    expect(wf.steps.map((s) => s.step)).toEqual(['add#1', 'label', 'add#2']);
    const done = await pgq.waitForWorkflow(wf, { timeoutMs: 20_000 });
    const result: [number, string, number] | null = done.result;
    expect(result).toEqual([2, 'x', 10]);
  });

  it('chord: the callback runs once, after every member, with their results in member order', async () => {
    const members = Array.from({ length: 25 }, (_, i) => chain(step(add, { a: i, b: 0 }), step(double)));
    const wf = await pgq.enqueueWorkflow(chord(group(members), step(collect)));
    const done = await pgq.waitForWorkflow(wf, { timeoutMs: 20_000 });
    expect(done.state).toBe('succeeded');
    expect(done.result).toEqual(Array.from({ length: 25 }, (_, i) => i * 2));
    const callback = done.steps.at(-1)!;
    expect(callback).toMatchObject({ step: 'collect', attempts: 1, pendingParents: 0 });
    expect(callback.dependsOn).toEqual(done.steps.filter((s) => s.task === 'double').map((s) => s.id));
  });

  it('chord: members finishing in reverse order still give their results in member order', async () => {
    const wf = await pgq.enqueueWorkflow(chord(group([1, 2, 3, 4, 5].map((n) => step(manual, { n }))), step(manualSum)));
    const members = wf.steps.slice(0, 5).reverse();
    for (const [i, member] of members.entries()) {
      await ctx.admin.query(`UPDATE "${ctx.schema}".jobs SET state = 'succeeded', result = $2::jsonb, finished_at = now() WHERE id = $1`, [
        member.id,
        String(member.payload && (member.payload as { n: number }).n * 100),
      ]);
      expect((await pgq.getJob(wf.steps[5]!.id))!.state).toBe(i < 4 ? 'blocked' : 'available');
    }
    expect((await pgq.getJob(wf.steps[5]!.id))!.payload).toEqual([100, 200, 300, 400, 500]);
    await pgq.cancelWorkflow(wf.id);
  });

  it('after (dependsOn): a graph that is no chain of groups; payload steps are only ordered', async () => {
    const a = step(add, { a: 1, b: 2 }).named('a');
    const b = step(add, { a: 10, b: 20 }).named('b');
    const onlyA = step(double).named('double-a');
    const both = step(sum).named('both').after(a, b);
    // `late` has its own payload: it waits for `both` but does not take its result.
    const late = step(label, { text: 'after both' }).named('late');
    const wf = await pgq.enqueueWorkflow(group([chain(a, onlyA), chain(both, late)]));
    expect(wf.steps.map((s) => s.step)).toEqual(['a', 'b', 'double-a', 'both', 'late']);
    const done = await pgq.waitForWorkflow(wf, { timeoutMs: 20_000 });
    const get = (name: string) => done.steps.find((s) => s.step === name)!;
    expect(get('double-a').result).toBe(6);
    expect(get('both')).toMatchObject({ payload: [3, 30], result: 33 });
    expect(get('late')).toMatchObject({ payload: { text: 'after both' }, result: 'after both' });
    expect(get('late').startedAt!.getTime()).toBeGreaterThanOrEqual(get('both').finishedAt!.getTime());
    expect(done.result).toEqual([6, 'after both']);
  });
});

describe('compositions', () => {
  it('a chain containing a group hands the group results to the next step', async () => {
    const wf = await pgq.enqueueWorkflow(chain(step(add, { a: 1, b: 2 }), group([step(double), step(toText)]), step(collect)));
    const done = await pgq.waitForWorkflow(wf, { timeoutMs: 20_000 });
    expect(done.result).toEqual([6, 'n=3']);
  });

  it('a chord inside a chain, and a chain ending in a group', async () => {
    const inner = chord(group([step(double), step(double).with({ priority: 5 })]), step(sum));
    const wf = await pgq.enqueueWorkflow(chain(step(add, { a: 2, b: 2 }), inner, step(double), group([step(toText), step(double)])));
    const done = await pgq.waitForWorkflow(wf, { timeoutMs: 20_000 });
    // 4 → [8, 8] → 16 → 32 → ['n=32', 64]
    const result: [string, number] | null = done.result;
    expect(result).toEqual(['n=32', 64]);
    expect(done.steps.find((s) => s.priority === 5)).toBeDefined();
  });
});

describe('long chains', () => {
  it('a chain nested as deep as it is long (10,000 steps built with reduce) is enqueued in order, each step after the one before', async () => {
    // chain() types 8 links per call, so a long chain is built by nesting; placed by recursion, this one overflowed the stack.
    const long = Array.from({ length: 9_999 }, () => step(manualInc)).reduce<Flow<unknown, number, false>>((c, s) => chain(c, s), step(manualInc, 0));
    const wf = await pgq.enqueueWorkflow(long);
    expect(wf.steps).toHaveLength(10_000);
    expect(wf.steps.slice(0, 2).map((s) => s.state)).toEqual(['available', 'blocked']);
    expect(wf.steps.every((s, i) => (i === 0 ? s.dependsOn.length === 0 : s.dependsOn.length === 1 && s.dependsOn[0] === wf.steps[i - 1]!.id))).toBe(true);
    await pgq.cancelWorkflow(wf.id);
  });

  it('a cancel of the first step cascades down a chain, and its retry revives it, reading each job and edge by id: rows read grow with its length, not its square', async () => {
    const n = 400;
    const long = Array.from({ length: n - 1 }, () => step(manualInc)).reduce<Flow<unknown, number, false>>((c, s) => chain(c, s), step(manualInc, 0));
    const wf = await pgq.enqueueWorkflow(long);
    const client = await ctx.admin.connect();
    try {
      await client.query('BEGIN');
      // This transaction's reads through indexes: a recursive CTE planned to read every blocked job once per level,
      // and each step's trigger reading every blocked job, fetched about n² rows (jobs 320,000, job_dependencies
      // 160,000 here); reached by id, a few per step. A whole-table scan or two (the table holds this file's other
      // jobs too) is no harm: counted apart. Read before too: PostgreSQL 15 adds the counts of this connection's
      // earlier transactions that it has not reported yet (it reports at most once a second), 12 scans of jobs
      // here when the tests before it ran fast.
      const reads = async (): Promise<Record<string, { fetched: number; scans: number }>> => {
        const { rows } = await client.query<{ relname: string; fetched: string; scans: string }>(
          `SELECT relname, coalesce(idx_tup_fetch, 0) AS fetched, seq_scan AS scans FROM pg_stat_xact_user_tables
            WHERE schemaname = $1 AND relname IN ('jobs', 'job_dependencies')`,
          [ctx.schema],
        );
        return Object.fromEntries(rows.map((r) => [r.relname, { fetched: Number(r.fetched), scans: Number(r.scans) }]));
      };
      const start = await reads();
      // By hand (plain SQL): the state trigger does the cascade.
      await client.query(`UPDATE "${ctx.schema}".jobs SET state = 'cancelled', finished_at = now() WHERE id = $1`, [wf.steps[0]!.id]);
      const { rows: cancelled } = await client.query<{ n: string }>(`SELECT count(*) AS n FROM "${ctx.schema}".jobs WHERE workflow_id = $1 AND state = 'cancelled'`, [wf.id]);
      expect(Number(cancelled[0]!.n)).toBe(n);
      const cascade = await reads();
      expect(cascade.jobs!.fetched - start.jobs!.fetched).toBeLessThan(n * 30);
      expect(cascade.job_dependencies!.fetched - start.job_dependencies!.fetched).toBeLessThan(n * 30);
      expect(cascade.jobs!.scans - start.jobs!.scans + cascade.job_dependencies!.scans - start.job_dependencies!.scans).toBeLessThan(10);
      // Its retry revives them (a recursive CTE read every cancelled job once per level, about n²/2 rows).
      await client.query(`UPDATE "${ctx.schema}".jobs SET state = 'available', finished_at = NULL WHERE id = $1`, [wf.steps[0]!.id]);
      const { rows: blocked } = await client.query<{ n: string }>(`SELECT count(*) AS n FROM "${ctx.schema}".jobs WHERE workflow_id = $1 AND state = 'blocked'`, [wf.id]);
      expect(Number(blocked[0]!.n)).toBe(n - 1);
      const revive = await reads();
      expect(revive.jobs!.fetched - cascade.jobs!.fetched).toBeLessThan(n * 30);
      expect(revive.job_dependencies!.fetched - cascade.job_dependencies!.fetched).toBeLessThan(n * 30);
      // (Whole-table scans are not bounded here: on a table this small the planner reads a parent's row by scanning.)
    } finally {
      await client.query('ROLLBACK');
      client.release();
    }
    await pgq.cancelWorkflow(wf.id);
  });
});

describe('bulk retry', () => {
  it('what a retry of each of many failed steps would resume is found by id: rows read grow with the steps, not with the cancelled jobs in the table', async () => {
    const n = 100;
    const firsts: string[] = [];
    const workflows: string[] = [];
    for (let i = 0; i < n; i++) {
      const wf = await pgq.enqueueWorkflow(chain(step(manualInc, 0), step(manualInc), step(manualInc), step(manualInc)));
      firsts.push(wf.steps[0]!.id);
      workflows.push(wf.id);
    }
    // By hand: each first step fails, and the state trigger cancels the three after it (cancelled_by).
    await ctx.admin.query(`UPDATE "${ctx.schema}".jobs SET state = 'failed', finished_at = now() WHERE id = ANY ($1::bigint[])`, [firsts]);
    // Cancelled jobs of the table besides these, so that it does not depend on what the tests before it left
    // there: alone (vitest -t) on a table of these 400 jobs, PostgreSQL rightly read it whole for each lookup
    // (200,000 rows) and the bound below failed.
    await ctx.admin.query(`INSERT INTO "${ctx.schema}".jobs (task, queue, state, payload, finished_at)
       SELECT 'manual-inc', 'bulk-retry-other', 'cancelled', '0', now() FROM generate_series(1, 5000)`);
    const kysely = new Kysely<PgqDatabase>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: ctx.url, max: 1 }) }) });
    try {
      await kysely.transaction().execute(async (trx) => {
        // The check a bulk retry's filter makes for each job it matches (countJobs(filter, { action: 'retry' }), retryJobs).
        const { rows } = await sql<{ n: string }>`SELECT count(*) AS n FROM unnest(${firsts}::bigint[]) AS j(id)
           WHERE NOT EXISTS (${lostInputs(ctx.schema, sql.ref('j.id'))})`.execute(trx);
        expect(Number(rows[0]!.n)).toBe(n);
        // A recursive CTE joining jobs on cancelled_by (no index) read every cancelled job of the table once per
        // level for each step: about n × 4 × (3n + 5,000) rows here (20 s to count 2,000 such steps).
        expect(await jobRowsRead(trx, ctx.schema)).toBeLessThan(n * 40);
      });
    } finally {
      await kysely.destroy();
      await ctx.admin.query(`DELETE FROM "${ctx.schema}".jobs WHERE workflow_id = ANY ($1::bigint[]) OR queue = 'bulk-retry-other'`, [workflows]);
    }
  });
});

describe('retrying the failed branches of a wide chord', () => {
  it('revisits the chord\'s last step once, not once per retried branch: rows read grow with the width, not its square', async () => {
    const n = 200;
    const wf = await pgq.enqueueWorkflow(chord(group(Array.from({ length: n }, (_, i) => chain(step(manual, { n: i }), step(manualInc)))), step(manualSum)));
    const s = `"${ctx.schema}"`;
    // Each branch's first step (no parents), in id order; the last step is the chord's.
    const { rows: firsts } = await ctx.admin.query<{ id: string }>(
      `SELECT j.id::text FROM ${s}.jobs j WHERE j.workflow_id = $1 AND NOT EXISTS (SELECT 1 FROM ${s}.job_dependencies d WHERE d.child_id = j.id) ORDER BY j.id`,
      [wf.id],
    );
    expect(firsts).toHaveLength(n);
    const last = wf.steps.at(-1)!.id;
    const failed = firsts.map((r) => r.id).filter((_, i) => i % 2 === 0);
    // Other finished jobs, so that reading a job by id is worth an index to PostgreSQL.
    const { rows: others } = await ctx.admin.query<{ id: string }>(
      `INSERT INTO ${s}.jobs (task, state, payload, finished_at) SELECT 'manual', 'succeeded', '{}', now() FROM generate_series(1, 5000) RETURNING id::text`,
    );
    try {
      // Half the branches' first steps fail: their second steps are cancelled, and the last step by the
      // second step with the smallest id.
      await ctx.admin.query(`UPDATE ${s}.jobs SET state = 'failed', finished_at = now() WHERE id = ANY ($1::bigint[])`, [failed]);
      expect(await pgq.getJob(last)).toMatchObject({ state: 'cancelled' });
      const client = await ctx.admin.connect();
      try {
        await client.query('BEGIN');
        // They are retried in ascending id order, as a bulk retry's UPDATE fires their triggers; each revives its
        // branch's second step. Named the smallest of the failed parents left, the last step moved to the next one
        // on each retry, and each visit read and locked all n of its parents: about n²/2 rows.
        const before = await jobRowsRead(client, ctx.schema);
        await client.query(`UPDATE ${s}.jobs SET state = 'available', finished_at = NULL WHERE id = ANY ($1::bigint[])`, [failed]);
        const read = (await jobRowsRead(client, ctx.schema)) - before;
        const { rows: revived } = await client.query<{ state: string; pending_parents: number }>(`SELECT state, pending_parents FROM ${s}.jobs WHERE id = $1`, [last]);
        expect(revived[0]).toEqual({ state: 'blocked', pending_parents: n });
        // (About 70 rows per retried branch since; 97,055 rows in all before.)
        expect(read).toBeLessThan(n * 100);
      } finally {
        await client.query('ROLLBACK');
        client.release();
      }
      // One retry alone: the last step stays cancelled, now naming the failed parent with the largest id.
      await pgq.retryJob(failed[0]!);
      const { rows: named } = await ctx.admin.query<{ state: string; cancelled_by: string; parent_of: string }>(
        `SELECT c.state, c.cancelled_by::text, (SELECT d.parent_id::text FROM ${s}.job_dependencies d WHERE d.child_id = c.cancelled_by) AS parent_of
           FROM ${s}.jobs c WHERE c.id = $1`,
        [last],
      );
      expect(named[0]).toEqual({ state: 'cancelled', cancelled_by: expect.any(String), parent_of: failed.at(-1) });
    } finally {
      await pgq.cancelWorkflow(wf.id);
      await ctx.admin.query(`DELETE FROM ${s}.jobs WHERE id = ANY ($1::bigint[])`, [others.map((r) => r.id)]);
    }
  });
});

describe('failure', () => {
  it('cancels what depends on a failed step, naming it; a run-anyway step gets the failure', async () => {
    const wf = await pgq.enqueueWorkflow(
      chord(
        group([
          chain(step(add, { a: 1, b: 1 }), step(flaky).named('flaky-step'), step(double), step(toText)),
          step(add, { a: 4, b: 4 }),
        ]),
        step(report).onParentFailure('run'),
      ),
    );
    const done = await pgq.waitForWorkflow(wf, { timeoutMs: 20_000 });
    expect(done.state).toBe('failed');
    const get = (name: string) => done.steps.find((s) => s.step === name)!;
    expect(get('flaky-step')).toMatchObject({ state: 'failed' });
    for (const name of ['double', 'to-text']) {
      const s = get(name);
      expect(s.state).toBe('cancelled');
      expect(s.errors.at(-1)!.message).toBe(
        `cancelled: step "flaky-step" (job ${get('flaky-step').id}, task flaky) failed: flaky refuses 2`,
      );
      expect(s.errors.at(-1)!.failedStep).toMatchObject({ step: 'flaky-step', jobId: get('flaky-step').id, state: 'failed' });
    }
    expect(get('double').cancelledBy).toBe(get('flaky-step').id);
    expect(get('to-text').cancelledBy).toBe(get('double').id);
    expect(get('report')).toMatchObject({ state: 'succeeded', attempts: 1 });
    expect(get('report').result).toEqual([
      'failed:to-text:' + get('to-text').errors.at(-1)!.message,
      'ok:8',
    ]);
  });

  it('retrying the failed step resumes the workflow; its cancelled dependents cannot be retried on their own', async () => {
    const wf = await pgq.enqueueWorkflow(chain(step(add, { a: 1, b: 1 }), step(flaky), step(double), group([step(toText), step(double)])));
    const failed = await pgq.waitForWorkflow(wf, { timeoutMs: 20_000 });
    expect(failed.steps.map((s) => s.state)).toEqual(['succeeded', 'failed', 'cancelled', 'cancelled', 'cancelled']);
    const flakyJob = failed.steps[1]!;
    await expect(pgq.retryJob(failed.steps[3]!.id)).rejects.toThrow(
      new RegExp(`step "flaky" \\(job ${flakyJob.id}\\) failed; retry job ${flakyJob.id}`),
    );
    await pgq.retryJob(flakyJob.id);
    // The worker may already be running the resumed steps: nothing is cancelled or failed any more.
    const resumed = await pgq.getWorkflow(wf);
    expect(resumed!.steps.filter((s) => s.state === 'cancelled' || s.state === 'failed')).toEqual([]);
    const done = await pgq.waitForWorkflow(wf, { timeoutMs: 20_000 });
    expect(done.state).toBe('succeeded');
    expect(done.result).toEqual(['n=6', 12]);
    expect(done.steps.every((s) => s.cancelledBy === null)).toBe(true);
  });

  it('a retried step whose dependent still has another failed parent leaves it cancelled, now naming that parent', async () => {
    const g = await pgq.enqueueWorkflow(chord(group([step(manual, { n: 1 }), step(manual, { n: 2 })]), step(manualSum)));
    const [p1, p2, child] = g.steps;
    const fail = (id: string) =>
      ctx.admin.query(
        `UPDATE "${ctx.schema}".jobs SET state = 'failed', finished_at = now(),
                errors = jsonb_build_array(jsonb_build_object('attempt', 1, 'message', 'broke ' || id, 'at', now())) WHERE id = $1`,
        [id],
      );
    await fail(p1!.id);
    await fail(p2!.id);
    const state = async (id: string) => (await pgq.getJob(id))!;
    expect(await state(child!.id)).toMatchObject({ state: 'cancelled' });
    await pgq.retryJob(p1!.id);
    let c = (await pgq.getWorkflow(g))!.steps[2]!;
    expect(c).toMatchObject({ state: 'cancelled', cancelledBy: p2!.id });
    expect(c.errors.at(-1)!.message).toMatch(/step "manual#2" .* failed: broke/);
    await pgq.retryJob(p2!.id);
    c = (await pgq.getWorkflow(g))!.steps[2]!;
    expect(c).toMatchObject({ state: 'blocked', cancelledBy: null, pendingParents: 2 });
    await ctx.admin.query(`UPDATE "${ctx.schema}".jobs SET state = 'succeeded', result = to_jsonb(id), finished_at = now() WHERE id = ANY($1)`, [
      [p1!.id, p2!.id],
    ]);
    c = (await pgq.getWorkflow(g))!.steps[2]!;
    expect(c).toMatchObject({ state: 'available', pendingParents: 0, payload: [Number(p1!.id), Number(p2!.id)] });
    await pgq.cancelWorkflow(g.id);
  });
});

describe('resuming by hand-settled jobs', () => {
  const finish = (ids: string[], state: 'succeeded' | 'failed', result = 'to_jsonb(id)') =>
    ctx.admin.query(
      `UPDATE "${ctx.schema}".jobs SET state = $2, finished_at = now(), result = CASE WHEN $2 = 'succeeded' THEN ${result} END,
              errors = CASE WHEN $2 = 'failed' THEN jsonb_build_array(jsonb_build_object('attempt', 1, 'message', 'broke', 'at', now())) ELSE errors END
        WHERE id = ANY($1)`,
      [ids, state],
    );

  it('a retry revives a diamond of cancelled steps in order, and counts a retried parent again for a run-anyway step', async () => {
    // a → (b, c) → d; e runs after a and x even if they fail.
    const a = step(manual, { n: 1 });
    const x = step(manual, { n: 2 }).named('x');
    const e = step(manualReport).onParentFailure('run').named('e').after(a, x);
    const wf = await pgq.enqueueWorkflow(group([chain(a, group([step(manualInc).named('b'), step(manualInc).named('c')]), step(manualSum).named('d')), e]));
    const id = (name: string) => wf.steps.find((s) => s.step === name)!.id;
    const byName = async () =>
      Object.fromEntries((await pgq.getWorkflow(wf.id))!.steps.map((s) => [s.step, [s.state, s.pendingParents]]));
    await finish([id('manual')], 'failed');
    expect(await byName()).toEqual({
      manual: ['failed', 0], b: ['cancelled', 1], c: ['cancelled', 1], d: ['cancelled', 2], e: ['blocked', 1], x: ['available', 0],
    });
    await pgq.retryJob(id('manual'));
    expect(await byName()).toEqual({
      manual: ['available', 0], b: ['blocked', 1], c: ['blocked', 1], d: ['blocked', 2], e: ['blocked', 2], x: ['available', 0],
    });
    await finish([id('manual')], 'succeeded', `'5'::jsonb`);
    expect((await pgq.getJob(id('b')))!.payload).toBe(5);
    await finish([id('b'), id('c'), id('x')], 'succeeded');
    expect(await pgq.getJob(id('d'))).toMatchObject({ state: 'available', payload: [Number(id('b')), Number(id('c'))] });
    expect(await pgq.getJob(id('e'))).toMatchObject({ state: 'available', payload: [{ ok: true, value: 5 }, { ok: true, value: Number(id('x')) }] });
    await pgq.cancelWorkflow(wf.id);
  });

  it('a step cancelled while blocked gets its input built when it is retried after its parent succeeded', async () => {
    const wf = await pgq.enqueueWorkflow(chain(step(manual, { n: 1 }), step(manualInc), step(manualInc)));
    const [first, second] = wf.steps.map((s) => s.id);
    // Cancelled while blocked; its parent still runs: the error says what it waits on.
    await pgq.cancelJob(second!);
    await expect(pgq.retryJob(second!)).rejects.toThrow(/waits on steps that have not succeeded: "manual" \(job \d+, available\)/);
    await finish([first!], 'succeeded', `'41'::jsonb`);
    const retried = await pgq.retryJob(second!);
    expect(retried).toMatchObject({ state: 'available', payload: 41 });
    await pgq.cancelWorkflow(wf.id);
  });
});

describe('cancellation', () => {
  it('cancelWorkflow cancels every unfinished job, aborting the running one', async () => {
    const running = deferred();
    started.set('cw', running.resolve);
    const wf = await pgq.enqueueWorkflow(chain(step(add, { a: 1, b: 1 }), group([step(hang, { tag: 'cw' }), step(double)]), step(collect)));
    await running.promise;
    const cancelling = await pgq.cancelWorkflow(wf.id);
    // A running step stays running, held by its worker, until its handler
    // has stopped (this one stops at once: it may have by now; the group's
    // other step may be running too, on a loaded host); the steps that had
    // not started are cancelled at once.
    expect(cancelling.state).toMatch(/^(running|cancelled)$/);
    expect(cancelling.steps.map((s) => s.state)).toEqual([
      'succeeded',
      expect.stringMatching(/^(running|cancelled)$/),
      expect.stringMatching(/^(running|succeeded|cancelled)$/),
      'cancelled',
    ]);
    await until(async () => worker.runningJobs === 0, { what: 'the hanging handler to stop' });
    const cancelled = await pgq.waitForWorkflow(wf.id);
    expect(cancelled.state).toBe('cancelled');
    expect(cancelled.steps.map((s) => s.state)).toEqual(['succeeded', 'cancelled', expect.stringMatching(/succeeded|cancelled/), 'cancelled']);
    expect(cancelled.result).toBeNull();
    const hung = (await pgq.getJob(cancelled.steps[1]!.id))!;
    expect(hung.cancelRequestedAt).toBeNull();
    expect(hung.errors.at(-1)!.message).toMatch(/cancel/i);
  });

  it('cancelJob on one step cancels its dependents, naming it', async () => {
    const wf = await pgq.enqueueWorkflow(chain(step(manual, { n: 1 }), step(double), step(double)));
    await pgq.cancelJob(wf.steps[0]!.id);
    const after = (await pgq.getWorkflow(wf.id))!;
    expect(after.state).toBe('cancelled');
    expect(after.steps.map((s) => s.state)).toEqual(['cancelled', 'cancelled', 'cancelled']);
    expect(after.steps[2]!.errors[0]!.message).toBe(`cancelled: step "manual" (job ${wf.steps[0]!.id}, task manual) was cancelled`);
  });

  it('cancelWorkflow on a wide chord reads the final step once per parent: the triggers of parents without a blocked child return at once', async () => {
    const n = 300;
    const wf = await pgq.enqueueWorkflow(chord(group(Array.from({ length: n }, (_, i) => step(manual, { n: i }))), step(manualSum)));
    const last = wf.steps.at(-1)!.id;
    const s = `"${ctx.schema}"`;
    // Other finished jobs, and statistics that count them, so that reading the chord's jobs by id is worth an index
    // to PostgreSQL (it read the whole table for the cancel's one statement otherwise).
    await ctx.admin.query(`INSERT INTO ${s}.jobs (task, queue, state, payload, finished_at)
       SELECT 'manual', 'cancel-chord-other', 'succeeded', '{}', now() FROM generate_series(1, 5000)`);
    await ctx.admin.query(`ANALYZE ${s}.jobs`);
    const kysely = new Kysely<PgqDatabase>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: ctx.url, max: 1 }) }) }).withSchema(ctx.schema);
    try {
      await kysely.transaction().execute(async (trx) => {
        // cancelWorkflow's transaction: its live jobs locked in id order, then cancelled in one statement.
        const { rows: live } = await sql<{ id: string; state: JobState }>`SELECT id::text, state FROM ${sql.id(ctx.schema, 'jobs')}
           WHERE workflow_id = ${wf.id} AND state IN ('available', 'blocked') ORDER BY id FOR UPDATE`.execute(trx);
        expect(live).toHaveLength(n + 1);
        const before = await jobRowsRead(trx, ctx.schema);
        await cancelLockedJobs(trx, channelNames(ctx.schema), live);
        // The statement reads each job once, and each parent's trigger reads the final step, cancelled by that
        // statement already, once, to find it no longer blocked: 2n + 1 rows. The trigger's eight statements,
        // which ran for each parent all the same, read it four times (1,501 rows here) and were planned afresh
        // on every call: 7-9 s of a 20,000-wide chord's cancel.
        expect((await jobRowsRead(trx, ctx.schema)) - before).toBeLessThan(n * 3);
      });
    } finally {
      await kysely.destroy();
      await ctx.admin.query(`DELETE FROM ${s}.jobs WHERE queue = 'cancel-chord-other'`);
    }
    const cancelled = (await pgq.getWorkflow(wf.id))!;
    expect(cancelled.state).toBe('cancelled');
    expect(cancelled.counts.cancelled).toBe(n + 1);
    // Cancelled by the workflow's cancel, not by a parent's.
    expect(cancelled.steps.find((x) => x.id === last)).toMatchObject({ state: 'cancelled', cancelledBy: null, pendingParents: n });
  });
});

describe('deleting steps', () => {
  it('refuses to delete a step that has not finished (its dependents would wait forever); bulk deletes skip it; once cancelled it goes', async () => {
    const wf = await pgq.enqueueWorkflow(chain(step(manual, { n: 1 }), step(double)));
    const first = wf.steps[0]!.id;
    await expect(pgq.deleteJob(first)).rejects.toMatchObject({ code: 'PGQ_WORKFLOW_STEP_LIVE' });
    expect(await pgq.deleteJobs({ workflowId: wf.id })).toBe(0);
    expect((await jobsOf(wf.id)).map((j) => j.state)).toEqual(['available', 'blocked']);
    await pgq.cancelJob(first);
    expect((await pgq.getWorkflow(wf.id))!.state).toBe('cancelled');
    expect(await pgq.deleteJob(first)).toBe(true);
    expect(await pgq.deleteJobs({ workflowId: wf.id })).toBe(1);
    expect(await jobsOf(wf.id)).toEqual([]);
  });

  it('refuses to delete a finished step a blocked dependent still waits on (its result is part of that input); bulk deletes skip it', async () => {
    const wf = await pgq.enqueueWorkflow(chord(group([step(manual, { n: 1 }), step(manual, { n: 2 })]), step(manualSum)));
    const [first, second, callback] = wf.steps.map((st) => st.id);
    const settle = (id: string, result: number) =>
      ctx.admin.query(`UPDATE "${ctx.schema}".jobs SET state = 'succeeded', result = $2::jsonb, finished_at = now() WHERE id = $1`, [id, String(result)]);
    await settle(first!, 100);
    await expect(pgq.deleteJob(first!)).rejects.toMatchObject({ code: 'PGQ_WORKFLOW_STEP_LIVE', message: expect.stringMatching(/still wait \(blocked\)/) });
    expect(await pgq.deleteJobs({ workflowId: wf.id, state: 'succeeded' })).toBe(0);
    await settle(second!, 200);
    // The callback got both results, in member order; now the parents may go.
    expect((await pgq.getJob(callback!))!).toMatchObject({ state: 'available', payload: [100, 200] });
    expect(await pgq.deleteJobs({ workflowId: wf.id, state: 'succeeded' })).toBe(2);
    await pgq.cancelWorkflow(wf.id);
  });

  it('a retry that would resume a step whose input includes a deleted result, or past a deleted failed step, is refused naming it (never run with part of its input)', async () => {
    const wf = await pgq.enqueueWorkflow(chord(group([step(manual, { n: 1 }), step(manual, { n: 2 })]), step(manualSum)));
    const [first, second, callback] = wf.steps.map((st) => st.id);
    const s = `"${ctx.schema}"`;
    await ctx.admin.query(`UPDATE ${s}.jobs SET state = 'succeeded', result = '10', attempts = 1, finished_at = now() WHERE id = $1`, [first]);
    await pgq.cancelJob(second!); // the callback is cancelled by it, and would resume with its retry
    expect((await pgq.getWorkflow(wf.id))!.steps[2]).toMatchObject({ state: 'cancelled', cancelledBy: second });
    // The first member's result is not waited on by anything blocked: it can go (an ordinary cleanup of succeeded jobs).
    expect(await pgq.deleteJobs({ workflowId: wf.id, state: 'succeeded' })).toBe(1);
    await expect(pgq.retryJob(second!)).rejects.toMatchObject({
      code: 'PGQ_NOT_RETRYABLE',
      message: expect.stringMatching(new RegExp(`the input of step "[^"]+" \\(job ${callback}\\), which it would resume, includes the result of job ${first}, which has been deleted`)),
    });
    expect(await pgq.retryJobs({ workflowId: wf.id })).toBe(0);
    expect((await pgq.getJob(second!))!.state).toBe('cancelled');

    // The step whose failure cancelled the callback deleted: retrying the callback says so.
    expect(await pgq.deleteJob(second!)).toBe(true);
    await expect(pgq.retryJob(callback!)).rejects.toMatchObject({
      code: 'PGQ_NOT_RETRYABLE',
      message: expect.stringMatching(new RegExp(`job ${second} has been deleted: the workflow cannot resume from there`)),
    });
    expect(await pgq.deleteJobs({ workflowId: wf.id })).toBe(1);
  });

  it('a step cancelled while blocked is retried though a parent that only ordered it was deleted (its result was never part of the input)', async () => {
    const s = `"${ctx.schema}"`;
    const a = step(manual, { n: 7 }).named('a');
    // `b` runs before `sum` in the chain but only orders it: sum's input is [a's result].
    const wf = await pgq.enqueueWorkflow(chain(step(manual, { n: 1 }).named('b'), step(manualSum).named('sum').after(a)));
    const ids = new Map(wf.steps.map((st) => [st.step, st.id]));
    expect((await pgq.getWorkflow(wf.id))!.steps.find((st) => st.step === 'sum')!.dependsOn).toEqual([ids.get('a'), ids.get('b')]);
    await pgq.cancelJob(ids.get('sum')!);
    await ctx.admin.query(`UPDATE ${s}.jobs SET state = 'succeeded', result = to_jsonb(id), attempts = 1, finished_at = now() WHERE id = ANY($1::bigint[])`, [[ids.get('a'), ids.get('b')]]);
    expect(await pgq.deleteJob(ids.get('b')!)).toBe(true);
    expect(await pgq.countJobs({ workflowId: wf.id }, { action: 'retry' })).toBe(1);
    const retried = await pgq.retryJob(ids.get('sum')!);
    expect(retried).toMatchObject({ state: 'available', payload: [Number(ids.get('a'))] });
  });

  it('deleteJob of a parent racing retryJob of the step that cancelled its dependent: one of them is refused, whichever goes first (the dependent ran without that parent\'s result)', async () => {
    const s = `"${ctx.schema}"`;
    for (const first of ['delete', 'retry'] as const) {
      const wf = await pgq.enqueueWorkflow(chord(group([step(manual, { n: 1 }), step(manual, { n: 2 })]), step(manualSum)));
      const [parent, failing, callback] = wf.steps.map((st) => st.id) as [string, string, string];
      await ctx.admin.query(`UPDATE ${s}.jobs SET state = 'succeeded', result = '10', attempts = 1, finished_at = now() WHERE id = $1`, [parent]);
      await pgq.cancelJob(failing); // the callback is cancelled by it
      // The parent's row held a moment by another session: both calls begin, then meet at it, in this order.
      const holder = await ctx.admin.connect();
      try {
        await holder.query('BEGIN');
        await holder.query(`SELECT 1 FROM ${s}.jobs WHERE id = $1 FOR UPDATE`, [parent]);
        const calls: Promise<unknown>[] = [];
        for (const call of first === 'delete' ? ['delete', 'retry'] : ['retry', 'delete']) {
          const made = call === 'delete' ? pgq.deleteJob(parent) : pgq.retryJob(failing);
          made.catch(() => undefined);
          calls.push(made);
          await ctx.lockWaiters(calls.length, `the ${call} to wait for the parent's row`);
        }
        await holder.query('COMMIT');
        const [deleted, retried] = first === 'delete' ? await Promise.allSettled(calls) : (await Promise.allSettled(calls)).reverse();
        if (first === 'delete') {
          expect(deleted).toEqual({ status: 'fulfilled', value: true });
          expect(retried).toMatchObject({ status: 'rejected', reason: { code: 'PGQ_NOT_RETRYABLE', message: expect.stringMatching(new RegExp(`includes the result of job ${parent}, which has been deleted`)) } });
          expect((await pgq.getJob(callback))!.state).toBe('cancelled');
        } else {
          expect(retried).toMatchObject({ status: 'fulfilled', value: { state: 'available' } });
          expect(deleted).toMatchObject({ status: 'rejected', reason: { code: 'PGQ_WORKFLOW_STEP_LIVE' } });
          // The retried step settles: the callback's input has both results.
          await ctx.admin.query(`UPDATE ${s}.jobs SET state = 'succeeded', result = '20', attempts = 2, finished_at = now() WHERE id = $1`, [failing]);
          expect(await pgq.getJob(callback)).toMatchObject({ state: 'available', payload: [10, 20] });
        }
      } finally {
        await holder.query('ROLLBACK').catch(() => undefined);
        holder.release();
        await pgq.cancelWorkflow(wf.id);
      }
    }
  });

  it('a step whose input was made when it left blocked is retried with it though the parent it came from was deleted (it was refused, as if that input were lost)', async () => {
    const wf = await pgq.enqueueWorkflow(chain(step(manual, { n: 1 }), step(manualInc)));
    const [first, second] = wf.steps.map((st) => st.id);
    await ctx.admin.query(`UPDATE "${ctx.schema}".jobs SET state = 'succeeded', result = '21', attempts = 1, finished_at = now() WHERE id = $1`, [first]);
    expect(await pgq.getJob(second!)).toMatchObject({ state: 'available', payload: 21 });
    await pgq.cancelJob(second!);
    expect(await pgq.deleteJob(first!)).toBe(true);
    expect(await pgq.countJobs({ workflowId: wf.id }, { action: 'retry' })).toBe(1);
    expect(await pgq.retryJob(second!)).toMatchObject({ state: 'available', payload: 21 });
    await pgq.cancelWorkflow(wf.id);
  });

  it('a retry of a step and a delete of its parent at once do not deadlock: the delete goes first, the retry keeps the step\'s input', async () => {
    const s = `"${ctx.schema}"`;
    // Deadlocks are found only after a minute here: one would hold both calls, not end one of them (40P01) to be run again.
    const url = new URL(ctx.url);
    url.searchParams.set('options', '-c deadlock_timeout=60s');
    const slow = ctx.pgq({ connectionString: url.toString(), tasks: [manual, manualInc] });
    for (const retry of [(id: string) => slow.retryJob(id).then((j) => j.id), (_id: string, wf: string) => slow.retryJobs({ workflowId: wf, state: 'cancelled' })]) {
      const wf = await pgq.enqueueWorkflow(chain(step(manual, { n: 1 }), step(manualInc)));
      const [first, second] = wf.steps.map((st) => st.id);
      await ctx.admin.query(`UPDATE ${s}.jobs SET state = 'succeeded', result = '41', attempts = 1, finished_at = now() WHERE id = $1`, [first]);
      await pgq.cancelJob(second!);
      // Both reach their first read of the edges holding their own job: the
      // retry its step, the delete the parent.
      const holder = await ctx.admin.connect();
      try {
        await holder.query('BEGIN');
        await holder.query(`LOCK TABLE ${s}.job_dependencies IN ACCESS EXCLUSIVE MODE`);
        const retried = retry(second!, wf.id);
        retried.catch(() => undefined);
        await ctx.lockWaiters(1, 'the retry to wait for the edges');
        const deleted = slow.deleteJob(first!);
        deleted.catch(() => undefined);
        await ctx.lockWaiters(2, 'the delete to wait for the edges');
        await holder.query('COMMIT');
        // Holding the step FOR UPDATE, the retry made the delete wait for it while it waited for the parent.
        expect(await Promise.race([deleted, wait(20_000).then(() => 'still waiting')])).toBe(true);
        expect(await retried).toBeTruthy();
      } finally {
        await holder.query('ROLLBACK').catch(() => undefined);
        holder.release();
      }
      expect(await pgq.getJob(first!)).toBeNull();
      expect(await pgq.getJob(second!)).toMatchObject({ state: 'available', payload: 41 });
      await pgq.cancelWorkflow(wf.id);
    }
  });

  it('two deletes of the last jobs of one workflow at once take its row (it stayed, listed as a succeeded workflow with no step)', async () => {
    const s = `"${ctx.schema}"`;
    const one = (wf: { id: string; steps: { id: string }[] }) => wf.steps.map((x) => pgq.deleteJob(x.id));
    const bulk = (wf: { id: string; steps: { id: string }[] }) => [1, 2].map((n) => pgq.deleteJobs({ workflowId: wf.id, payload: { contains: { n } } }));
    for (const deleteEach of [one, bulk]) {
      const wf = await pgq.enqueueWorkflow(group([step(manual, { n: 1 }), step(manual, { n: 2 })]));
      await pgq.cancelWorkflow(wf.id);
      // Both deletes reach the trigger's DELETE of the workflow row while this lock holds them, and take their snapshots after it.
      const holder = await ctx.admin.connect();
      await holder.query('BEGIN');
      await holder.query(`LOCK TABLE ${s}.workflows IN SHARE ROW EXCLUSIVE MODE`);
      const deletes = deleteEach(wf);
      await ctx.lockWaiters(2, 'both deletes to wait');
      await holder.query('COMMIT');
      holder.release();
      expect((await Promise.all(deletes)).map(Number)).toEqual([1, 1]);
      expect(await jobsOf(wf.id)).toEqual([]);
      expect(await pgq.getWorkflow(wf.id)).toBeNull();
      expect((await pgq.listWorkflows()).map((w) => w.id)).not.toContain(wf.id);
    }
  });

  it('one statement deleting jobs of two workflows takes their edges, and each workflow row once its last job is gone', async () => {
    const s = `"${ctx.schema}"`;
    const a = await pgq.enqueueWorkflow(chain(step(manual, { n: 1 }), step(double), step(double)));
    const b = await pgq.enqueueWorkflow(chain(step(manual, { n: 2 }), step(double)));
    for (const wf of [a, b]) await pgq.cancelWorkflow(wf.id);
    const edges = async (ids: string[]) =>
      Number((await ctx.admin.query(`SELECT count(*)::int AS n FROM ${s}.job_dependencies WHERE child_id = ANY($1::bigint[])`, [ids])).rows[0].n);
    const workflowRows = async () =>
      (await ctx.admin.query<{ id: string }>(`SELECT id::text FROM ${s}.workflows WHERE id = ANY($1::bigint[]) ORDER BY id`, [[a.id, b.id]])).rows.map((r) => r.id);
    const aIds = a.steps.map((x) => x.id);
    const bIds = b.steps.map((x) => x.id);
    expect(await edges([...aIds, ...bIds])).toBe(3);
    // All of b and the last step of a, in one statement: b goes whole, a keeps its row and its other edge.
    await ctx.admin.query(`DELETE FROM ${s}.jobs WHERE id = ANY($1::bigint[])`, [[...bIds, aIds[2]!]]);
    expect(await workflowRows()).toEqual([a.id]);
    expect(await edges(bIds)).toBe(0);
    expect(await edges(aIds)).toBe(1);
    await ctx.admin.query(`DELETE FROM ${s}.jobs WHERE id = ANY($1::bigint[])`, [aIds.slice(0, 2)]);
    expect(await workflowRows()).toEqual([]);
    expect(await edges(aIds)).toBe(0);
  });
});

describe('atomic enqueue', () => {
  it('a workflow in a rolled-back transaction leaves no job, edge or workflow row', async () => {
    const count = async () =>
      (
        await ctx.admin.query<{ jobs: string; workflows: string; edges: string }>(
          `SELECT (SELECT count(*) FROM "${ctx.schema}".jobs) AS jobs, (SELECT count(*) FROM "${ctx.schema}".workflows) AS workflows,
                  (SELECT count(*) FROM "${ctx.schema}".job_dependencies) AS edges`,
        )
      ).rows[0]!;
    const before = await count();
    const client = await ctx.admin.connect();
    try {
      await client.query('BEGIN');
      const wf = await pgq.enqueueWorkflow(chord(group([step(manual, { n: 1 }), step(manual, { n: 2 })]), step(manualSum)), { db: client });
      expect(wf.steps).toHaveLength(3);
      await client.query('ROLLBACK');
    } finally {
      client.release();
    }
    expect(await count()).toEqual(before);
    expect(await pgq.getWorkflow('999999999')).toBeNull();
  });

  it('joins a Kysely transaction and commits with it', async () => {
    const id = await pgq.kysely.transaction().execute(async (trx) => {
      const wf = await pgq.enqueueWorkflow(chain(step(manual, { n: 1 }), step(double)), { db: trx });
      expect(await ctx.admin.query(`SELECT 1 FROM "${ctx.schema}".workflows WHERE id = $1`, [wf.id])).toMatchObject({ rowCount: 0 });
      return wf.id;
    });
    expect((await pgq.getWorkflow(id))!.steps).toHaveLength(2);
    await pgq.cancelWorkflow(id);
  });

  it('bad input throws a ValidationError naming the step, and writes nothing', async () => {
    const before = (await ctx.admin.query(`SELECT count(*) AS n FROM "${ctx.schema}".jobs`)).rows[0].n;
    const cases: [() => Promise<unknown>, RegExp][] = [
      [() => pgq.enqueueWorkflow(chain(step(add, { a: 1, b: 2 }), step(label, { text: 5 as unknown as string }))), /steps\["label"\]\.payload\.text/],
      [() => pgq.enqueueWorkflow(group([step(add, { a: 1, b: 1 }).named('x'), step(label, { text: 'a' }).named('x')])), /steps\["x"\]: two steps/],
      [() => pgq.enqueueWorkflow(chain(step(add, { a: 1, b: 1 }), step(double).with({ priority: 1.5 }))), /steps\["double"\]\.options\.priority/],
      [() => pgq.enqueueWorkflow(step(double) as never), /steps\["double"\]: has no payload and nothing before it/],
      [() => pgq.enqueueWorkflow(group([]) as never), /group\(\) needs at least one member/],
      [() => pgq.enqueueWorkflow(group([group([step(add, { a: 1, b: 1 })])] as never) as never), /a group member must end in one step/],
      [() => pgq.enqueueWorkflow({ kind: 'nope' } as never), /must be a step\(\), chain\(\), group\(\) or chord\(\)/],
      [() => pgq.enqueueWorkflow(step(add, { a: 1, b: 1 }), { name: '' }), /options\.name/],
    ];
    const repeated = step(add, { a: 1, b: 1 });
    cases.push([() => pgq.enqueueWorkflow(group([repeated, repeated])), /appears twice/]);
    // A sparse list: its holes were skipped, and the results no longer lined up with it.
    const sparse = new Array<{ a: number; b: number }>(3);
    sparse[1] = { a: 1, b: 1 };
    cases.push([async () => pgq.enqueueWorkflow(map(add, sparse)), /^map\.payloads\[0\]: is a hole in a sparse array/]);
    // Two unnamed steps of a task whose name is 199 characters: "<name>#1" is over the 200 a step name may have.
    const longName = defineTask({ name: 'l'.repeat(199), schema: z.object({}), handler: () => 1 });
    cases.push([() => pgq.enqueueWorkflow(group([step(longName, {}), step(longName, {})])), /^steps\[0\]\.name: "l+#1", the name given to an unnamed step/]);
    // A cycle through after(): x runs after y, which the chain places after x.
    const y = step(double).named('y');
    const x = step(sum).named('x').after(y);
    cases.push([() => pgq.enqueueWorkflow(chain(x, y)), /steps "x", "y" wait on each other/]);
    // A group after a group: every member of the second waits on every member of the first (600 × 400).
    const wide = group(Array.from({ length: 600 }, (_, a) => step(add, { a, b: 0 })));
    const wider = group(Array.from({ length: 400 }, () => step(sum)));
    cases.push([() => pgq.enqueueWorkflow(chain(wide, wider)), /has 240000 dependencies between its steps, more than 200000/]);
    for (const [run, message] of cases) {
      const err = await run().then(() => null, (e: unknown) => e);
      expect(err, String(message)).toBeInstanceOf(ValidationError);
      expect((err as Error).message).toMatch(message);
    }
    expect((await ctx.admin.query(`SELECT count(*) AS n FROM "${ctx.schema}".jobs`)).rows[0].n).toBe(before);
  });
});

describe('settling', () => {
  it('two parents finishing at once in two transactions unblock the child exactly once, with both results', async () => {
    const wf = await pgq.enqueueWorkflow(chord(group([step(manual, { n: 1 }), step(manual, { n: 2 })]), step(manualSum)));
    const [a, b, child] = wf.steps.map((s) => s.id);
    const t1 = await ctx.admin.connect();
    const t2 = await ctx.admin.connect();
    try {
      const finish = `UPDATE "${ctx.schema}".jobs SET state = 'succeeded', result = $2::jsonb, finished_at = now() WHERE id = $1`;
      await t1.query('BEGIN');
      await t2.query('BEGIN');
      await t1.query(finish, [a, '10']);
      const pid2 = (await t2.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
      const second = t2.query(finish, [b, '20']);
      // t2's trigger waits on the child's row lock, held by t1's decrement.
      await until(async () => {
        const { rows } = await ctx.admin.query(`SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1`, [pid2]);
        return rows[0]?.wait_event_type === 'Lock';
      }, { what: 'the second parent to wait on the child lock' });
      await t1.query('COMMIT');
      await second;
      await t2.query('COMMIT');
    } finally {
      t1.release();
      t2.release();
    }
    const settled = (await pgq.getJob(child!))!;
    expect(settled).toMatchObject({ state: 'available', payload: [10, 20] });
    const { rows } = await ctx.admin.query(`SELECT pending_parents FROM "${ctx.schema}".jobs WHERE id = $1`, [child]);
    expect(rows[0].pending_parents).toBe(0);
    await pgq.cancelWorkflow(wf.id);
  });

  it('retrying a failed parent while a worker settles its sibling parent does not deadlock (parents are locked before the jobs they change)', async () => {
    // p1 and p2 are parents of c (cancelled when a parent fails) and of d (runs anyway).
    const p1 = step(manual, { n: 1 }).named('p1');
    const p2 = step(manual, { n: 2 }).named('p2');
    const d = step(manualReport).onParentFailure('run').named('d').after(p1, p2);
    const wf = await pgq.enqueueWorkflow(group([chord(group([p1, p2]), step(manualSum).named('c')), d]));
    const id = (name: string) => wf.steps.find((s) => s.step === name)!.id;
    await ctx.admin.query(
      `UPDATE "${ctx.schema}".jobs SET state = 'failed', finished_at = now(),
              errors = jsonb_build_array(jsonb_build_object('attempt', 1, 'message', 'broke', 'at', now())) WHERE id = $1`,
      [id('p1')],
    );
    expect((await pgq.getJob(id('c')))!.state).toBe('cancelled');
    // A completion of p2 as the completer makes it: the settling row first
    // (held here), then its dependents (workflow_lock_dependents), then the update.
    const completion = await ctx.admin.connect();
    try {
      await completion.query('BEGIN');
      await completion.query(`SELECT 1 FROM "${ctx.schema}".jobs WHERE id = $1 FOR UPDATE`, [id('p2')]);
      const retried = pgq.retryJob(id('p1'));
      retried.catch(() => undefined);
      // The retry waits on p2 (it reads every parent of the job it revives).
      await ctx.lockWaiters(1, 'the retry to wait on the sibling parent');
      // Before the fix the retry held d here (its pending count) and this waited on it: a deadlock, one side aborted with 40P01.
      await completion.query(`SELECT "${ctx.schema}".workflow_lock_dependents(ARRAY[$1]::bigint[], NULL)`, [id('p2')]);
      await completion.query(`UPDATE "${ctx.schema}".jobs SET state = 'succeeded', finished_at = now(), result = '2' WHERE id = $1`, [id('p2')]);
      await completion.query('COMMIT');
      expect(await retried).toMatchObject({ state: 'available' });
    } finally {
      completion.release();
    }
    const states = Object.fromEntries((await pgq.getWorkflow(wf.id))!.steps.map((s) => [s.step, s.state]));
    // d ran on p2's success with p1's failure; the retry revives c, now waiting on p1 again.
    expect(states).toEqual({ p1: 'available', p2: 'succeeded', c: 'blocked', d: 'available' });
    await pgq.cancelWorkflow(wf.id);
  });

  it('two retries of failed parents that share a run-anyway child both commit (neither upgrades a shared lock the other holds)', async () => {
    // crun runs after p1, q and l whatever they do; j waits on p1 and crun, k on q and crun.
    const p1 = step(manual, { n: 1 }).named('p1');
    const q = step(manual, { n: 2 }).named('q');
    const l = step(manual, { n: 3 }).named('l');
    const crun = step(manualReport).onParentFailure('run').named('crun').after(p1, q, l);
    const wf = await pgq.enqueueWorkflow(group([step(manual, { n: 5 }).named('j').after(p1, crun), step(manual, { n: 6 }).named('k').after(q, crun)]));
    const id = (name: string) => wf.steps.find((s) => s.step === name)!.id;
    for (const failed of ['p1', 'q']) {
      await ctx.admin.query(
        `UPDATE "${ctx.schema}".jobs SET state = 'failed', finished_at = now(),
                errors = jsonb_build_array(jsonb_build_object('attempt', 1, 'message', 'broke', 'at', now())) WHERE id = $1`,
        [id(failed)],
      );
    }
    expect(await pgq.getJob(id('j'))).toMatchObject({ state: 'cancelled' });
    expect(await pgq.getJob(id('k'))).toMatchObject({ state: 'cancelled' });
    // A reader holding crun makes both retries reach it before either can change it.
    const reader = await ctx.admin.connect();
    try {
      await reader.query('BEGIN');
      await reader.query(`SELECT 1 FROM "${ctx.schema}".jobs WHERE id = $1 FOR SHARE`, [id('crun')]);
      const retries = [pgq.retryJob(id('p1')), pgq.retryJob(id('q'))];
      for (const r of retries) r.catch(() => undefined);
      await ctx.lockWaiters(2, 'both retries to wait on crun');
      await reader.query('COMMIT');
      // Before, both held crun FOR SHARE and then both updated it: PostgreSQL aborted one (40P01).
      expect(await Promise.all(retries)).toMatchObject([{ state: 'available' }, { state: 'available' }]);
    } finally {
      reader.release();
    }
    const steps = (await pgq.getWorkflow(wf.id))!.steps;
    expect(Object.fromEntries(steps.map((s) => [s.step, [s.state, s.pendingParents]]))).toEqual({
      p1: ['available', 0], q: ['available', 0], l: ['available', 0], crun: ['blocked', 3], j: ['blocked', 2], k: ['blocked', 2],
    });
    await pgq.cancelWorkflow(wf.id);
  });

  it('two retries by hand that both read a parent they share do not wait on each other for it', async () => {
    // j waits on s, q and p1; k on s and q. s succeeds, p1 fails (j cancelled), then q (k cancelled).
    const s = step(manual, { n: 1 }).named('s');
    const q = step(manual, { n: 2 }).named('q');
    const p1 = step(manual, { n: 3 }).named('p1');
    const wf = await pgq.enqueueWorkflow(group([step(manual, { n: 4 }).named('j').after(s, q, p1), step(manual, { n: 5 }).named('k').after(s, q)]));
    const id = (name: string) => wf.steps.find((x) => x.step === name)!.id;
    const settle = (name: string, state: 'succeeded' | 'failed') =>
      ctx.admin.query(`UPDATE "${ctx.schema}".jobs SET state = $2, finished_at = now() WHERE id = $1`, [id(name), state]);
    await settle('s', 'succeeded');
    await settle('p1', 'failed');
    await settle('q', 'failed');
    expect(Object.fromEntries((await pgq.getWorkflow(wf.id))!.steps.map((x) => [x.step, x.state]))).toMatchObject({ j: 'cancelled', k: 'cancelled' });
    const a = await ctx.admin.connect();
    const b = await ctx.admin.connect();
    try {
      const revive = `UPDATE "${ctx.schema}".jobs SET state = 'available', finished_at = NULL WHERE id = $1`;
      await a.query('BEGIN');
      await b.query('BEGIN');
      await b.query(`SELECT 1 FROM "${ctx.schema}".jobs WHERE id = $1 FOR UPDATE`, [id('q')]);
      // A revives j: it reads s, then waits on q (held by B).
      const pidA = (await a.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
      const first = a.query(revive, [id('p1')]);
      first.catch(() => undefined);
      await until(async () => (await ctx.admin.query(`SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1`, [pidA])).rows[0]?.wait_event_type === 'Lock', {
        what: 'the first retry to wait on q',
      });
      // B revives k and reads s too: a shared read, not a wait (it was a deadlock with s locked FOR NO KEY UPDATE).
      await b.query(revive, [id('q')]);
      await b.query('COMMIT');
      await first;
      await a.query('COMMIT');
    } finally {
      a.release();
      b.release();
    }
    expect(Object.fromEntries((await pgq.getWorkflow(wf.id))!.steps.map((x) => [x.step, x.state]))).toEqual({
      s: 'succeeded', q: 'available', p1: 'available', j: 'blocked', k: 'blocked',
    });
    await pgq.cancelWorkflow(wf.id);
  });

  it('a retry that PostgreSQL ends as a deadlock victim is run again (a statement taking the workflow in id order, as the pruner does)', async () => {
    const wf = await pgq.enqueueWorkflow(chord(group([step(manual, { n: 1 }).named('p0'), step(manual, { n: 2 }).named('p1')]), step(manualSum).named('c')));
    const id = (name: string) => wf.steps.find((s) => s.step === name)!.id;
    await ctx.admin.query(
      `UPDATE "${ctx.schema}".jobs SET state = 'failed', finished_at = now(),
              errors = jsonb_build_array(jsonb_build_object('attempt', 1, 'message', 'broke', 'at', now())) WHERE id = $1`,
      [id('p1')],
    );
    const pruner = await ctx.admin.connect();
    try {
      await pruner.query('BEGIN');
      await pruner.query(`SELECT 1 FROM "${ctx.schema}".jobs WHERE id = $1 FOR UPDATE`, [id('p0')]);
      // The retry holds p1 and waits on p0 (a parent of c, which it revives).
      const retried = pgq.retryJob(id('p1'));
      retried.catch(() => undefined);
      await ctx.lockWaiters(1, 'the retry to wait on p0');
      // The other side of the cycle: PostgreSQL ends the retry (it waited first) with 40P01, and pgq tries it again.
      await pruner.query(`SELECT 1 FROM "${ctx.schema}".jobs WHERE id = $1 FOR UPDATE`, [id('p1')]);
      await pruner.query('COMMIT');
      expect(await retried).toMatchObject({ state: 'available' });
    } finally {
      pruner.release();
    }
    expect(await pgq.getJob(id('c'))).toMatchObject({ state: 'blocked' });
    await pgq.cancelWorkflow(wf.id);
  });

  it('prunes a workflow whole in one statement, whatever the states of its steps and however many loose jobs expired beside it', async () => {
    const wf = await pgq.enqueueWorkflow(chain(step(manual, { n: 1 }), step(manual, { n: 2 }), step(manual, { n: 3 })));
    const loose = await pgq.enqueueMany(manual, Array.from({ length: 7 }, (_, n) => ({ n })));
    const [a, b, c] = wf.steps.map((s) => s.id);
    await ctx.admin.query(`UPDATE "${ctx.schema}".jobs SET state = 'succeeded', finished_at = now() - interval '2 days', result = '1' WHERE id = ANY($1)`, [
      [a, b, ...loose.map((j) => j.id)],
    ]);
    await ctx.admin.query(`UPDATE "${ctx.schema}".jobs SET state = 'failed', finished_at = now() - interval '8 days' WHERE id = $1`, [c]);
    const pruner = defaultRetention(2, 100);
    const left = async (): Promise<number> => (await jobsOf(wf.id)).length;
    expect(await left()).toBe(3);
    // Two of the seven loose jobs and the whole workflow go in the first batch.
    expect(await pruner.pruneBatch()).toBe(5);
    expect(await left()).toBe(0);
    expect(await pgq.getWorkflow(wf.id)).toBeNull();
    expect(await pruner.pruneOnce()).toBe(5);
    for (const job of loose) expect(await pgq.getJob(job.id)).toBeNull();
  });

  it('a retry that commits while the pruner waits for its job keeps the whole workflow (none of it pruned)', async () => {
    const wf = await pgq.enqueueWorkflow(chain(step(manual, { n: 1 }), step(manual, { n: 2 }), step(manual, { n: 3 })));
    const [a, b, c] = wf.steps.map((s) => s.id);
    await ctx.admin.query(`UPDATE "${ctx.schema}".jobs SET state = 'succeeded', finished_at = now() - interval '2 days', result = '1' WHERE id = ANY($1)`, [[a, b]]);
    await ctx.admin.query(`UPDATE "${ctx.schema}".jobs SET state = 'failed', finished_at = now() - interval '8 days' WHERE id = $1`, [c]);
    const pruner = defaultRetention(100, 1);
    const retry = await ctx.admin.connect();
    try {
      // What retryJob writes, held open: the failed step is due again.
      await retry.query('BEGIN');
      await retry.query(`UPDATE "${ctx.schema}".jobs SET state = 'available', finished_at = NULL, run_at = now() WHERE id = $1`, [c]);
      const pruned = pruner.pruneBatch();
      await until(
        async () => {
          const { rows } = await ctx.admin.query(
            `SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE 'with "expired_workflows"%'`,
          );
          return rows.length > 0;
        },
        { what: 'the pruner to wait for the retried job' },
      );
      await retry.query('COMMIT');
      expect(await pruned).toBe(0);
    } finally {
      await retry.query('ROLLBACK').catch(() => undefined);
      retry.release();
    }
    expect((await jobsOf(wf.id)).map((j) => j.state)).toEqual(['succeeded', 'succeeded', 'available']);
    await pgq.cancelWorkflow(wf.id);
  });

  it('keeps a workflow from the pruner until all its jobs expired, then prunes jobs, edges and workflow together', async () => {
    const wf = await pgq.enqueueWorkflow(chord(group([step(manual, { n: 1 })]), step(manualSum)));
    const loose = await pgq.enqueue(manual, { n: 9 });
    await ctx.admin.query(`UPDATE "${ctx.schema}".jobs SET state = 'succeeded', finished_at = now() - interval '1 hour', result = '1' WHERE id = ANY($1)`, [
      [wf.steps[0]!.id, loose.id],
    ]);
    const pruner = new Pruner(
      { succeededMs: 1_000, failedMs: 1_000, cancelledMs: 1_000, batchSize: 1_000, intervalMs: 60_000, maxBatchesPerPass: 100 },
      pgq.kysely,
      pgq.logger,
    );
    await pruner.pruneOnce();
    expect(await pgq.getJob(loose.id)).toBeNull();
    expect((await pgq.getWorkflow(wf.id))!.steps).toHaveLength(2);
    await pgq.cancelWorkflow(wf.id);
    await ctx.admin.query(`UPDATE "${ctx.schema}".jobs SET finished_at = now() - interval '1 hour' WHERE workflow_id = $1`, [wf.id]);
    await pruner.pruneOnce();
    expect(await pgq.getWorkflow(wf.id)).toBeNull();
    const left = await ctx.admin.query(`SELECT 1 FROM "${ctx.schema}".job_dependencies WHERE child_id = $1`, [wf.steps[1]!.id]);
    expect(left.rowCount).toBe(0);
    expect(await jobsOf(wf.id)).toEqual([]);
  });
});

describe('the pruner and a large workflow kept by one live step', () => {
  it('checks the workflow once, not once per expired step: rows read grow with its steps, not with their square', async () => {
    const n = 2_000;
    const wf = await pgq.enqueueWorkflow(group(Array.from({ length: n }, (_, i) => step(manual, { n: i }))));
    const last = wf.steps.at(-1)!.id;
    // Every step but the last succeeded an hour ago, past retention; the last one is still waiting.
    await ctx.admin.query(`UPDATE "${ctx.schema}".jobs SET state = 'succeeded', finished_at = now() - interval '1 hour', result = '1'
       WHERE workflow_id = $1 AND id <> $2`, [wf.id, last]);
    const retention = { succeededMs: 1_000, failedMs: 1_000, cancelledMs: 1_000, batchSize: 1_000, intervalMs: 60_000, maxBatchesPerPass: 100 };
    const kysely = new Kysely<PgqDatabase>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: ctx.url, max: 1 }) }) }).withSchema(ctx.schema);
    try {
      await kysely.transaction().execute(async (trx) => {
        await new Pruner(retention, trx, pgq.logger).workflowBatchQuery(1_000).execute();
        // Asked of each expired step whether a step of its workflow had not expired, PostgreSQL walked the
        // workflow's steps for each (a nested-loop anti join): 379,810 rows here, and over 3 minutes a pass
        // for a workflow of 20,000 steps (90 ms now).
        expect(await jobRowsRead(trx, ctx.schema)).toBeLessThan(n * 20);
        // (The expired workflows of the tests before it may go; this one stays whole.)
        const { rows: kept } = await sql<{ n: string }>`SELECT count(*) AS n FROM ${sql.id(ctx.schema, 'jobs')} WHERE workflow_id = ${wf.id}`.execute(trx);
        expect(Number(kept[0]!.n)).toBe(n);
      });
    } finally {
      await kysely.destroy();
    }
    // Once the last step expired too, the workflow goes whole.
    await ctx.admin.query(`UPDATE "${ctx.schema}".jobs SET state = 'succeeded', finished_at = now() - interval '1 hour', result = '1' WHERE id = $1`, [last]);
    await new Pruner(retention, pgq.kysely, pgq.logger).pruneOnce();
    expect(await pgq.getWorkflow(wf.id)).toBeNull();
    expect(await jobsOf(wf.id)).toEqual([]);
  });
});

describe('results through JSON', () => {
  it("a step whose schema refuses its parents' stored results (a Date as text) fails for good, saying its input came from them; z.coerce.date() takes them", async () => {
    const stamp = defineTask({ name: 'json-stamp', queue: 'json-results', schema: z.object({ n: z.number() }), handler: ({ n }) => ({ n, at: new Date(0) }) });
    const strict = defineTask({ name: 'json-strict', queue: 'json-results', schema: z.object({ n: z.number(), at: z.date() }), maxAttempts: 3, handler: ({ at }) => at.getTime() });
    const coerced = defineTask({ name: 'json-coerced', queue: 'json-results', schema: z.object({ n: z.number(), at: z.coerce.date() }), handler: ({ at }) => at.getTime() });
    const own = ctx.pgq({ tasks: [stamp, strict, coerced] });
    await own.migrate();
    const jsonWorker = own.worker({ queues: ['json-results'], pollIntervalMs: 100 });
    await jsonWorker.start();
    try {
      // tsc refuses this link (the stored result's `at` is text): the cast stands for code that slipped past it.
      const bad = await own.enqueueWorkflow(chain(step(stamp, { n: 1 }), step(strict as unknown as typeof coerced)));
      const failed = await own.waitForWorkflow(bad, { timeoutMs: 20_000 });
      expect(failed.state).toBe('failed');
      const refused = failed.steps[1]!;
      expect(refused).toMatchObject({ state: 'failed', attempts: 1 });
      expect(refused.payload).toEqual({ n: 1, at: '1970-01-01T00:00:00.000Z' });
      const job = await own.getJob(refused.id);
      expect(job!.errors[0]!.message).toMatch(
        /^stored payload no longer matches the schema of task json-strict \(a workflow step given its parents' results gets them as stored, through JSON: a Date is its ISO text.*\): payload\.at: /,
      );
      const good = await own.enqueueWorkflow(chain(step(stamp, { n: 2 }), step(coerced)));
      const done = await own.waitForWorkflow(good, { timeoutMs: 20_000 });
      expect(done.state).toBe('succeeded');
      expect(done.result).toBe(0);
    } finally {
      await jsonWorker.stop();
    }
  });
});
