/**
 * Parents finishing together: the statements that settle workflow jobs lock
 * the jobs waiting on them in id order, so two batches whose parents share
 * children cannot deadlock, whatever order the parents come in; and a wide
 * chord whose header finishes on two worker processes at once runs its
 * callback exactly once.
 */
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { chord, defineTask, group, step, type Pgq } from '../src/index.js';
import { fromPg } from '../src/db/queryable.js';
import { createStatements } from '../src/db/statements.js';
import { until, useTestSchema } from './support/harness.js';
import { spawnWorker } from './support/processes.js';
import { collect, item, total, workflowTasks } from './fixtures/workflow-tasks.js';

const ctx = useTestSchema('workflow_lock_order');
const FIXTURE = new URL('./fixtures/workflow-worker.ts', import.meta.url).pathname;

// Tasks no worker runs here: the tests settle their jobs with the worker's own statements.
const manual = defineTask({ name: 'manual', schema: z.object({ n: z.number() }), handler: ({ n }) => n });
const manualSum = defineTask({ name: 'manual-sum', schema: z.array(z.number()), handler: () => 0 });

/** A migrated Pgq for one test (closed after it). */
function migratedPgq(): Promise<Pgq> {
  return ctx.migrated({ tasks: [manual, manualSum, ...workflowTasks] });
}

/** Marks these jobs running in attempt 1, as a claim would. */
async function markRunning(ids: string[]): Promise<void> {
  await ctx.admin.query(`UPDATE "${ctx.schema}".jobs SET state = 'running', attempts = 1, started_at = now() WHERE id = ANY($1)`, [ids]);
}

async function waitingOnLock(client: pg.PoolClient): Promise<void> {
  const pid = (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
  await until(
    async () => {
      const { rows } = await ctx.admin.query(`SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1`, [pid]);
      return rows[0]?.wait_event_type === 'Lock';
    },
    { what: `backend ${pid} to wait on a row lock` },
  );
}

describe('lock order when parents settle together', () => {
  it.each([
    ['completes', 'available'],
    ['fails', 'cancelled'],
  ] as const)('a batch that %s its parents and a completing batch, sharing two children in crossing order, both commit without a deadlock', async (firstBatch, childState) => {
    const pgq = await migratedPgq();
    // p1..p4 run first; c1 waits on p2 and p3, c2 on p1 and p4. The batch
    // [p1, p2] reaches c2 before c1, the batch [p3, p4] c1 before c2.
    const p = [1, 2, 3, 4].map((n) => step(manual, { n }).named(`p${n}`));
    const c1 = step(manualSum).named('c1').after(p[1]!, p[2]!);
    const c2 = step(manualSum).named('c2').after(p[0]!, p[3]!);
    const wf = await pgq.enqueueWorkflow(group([...p, c1, c2]));
    const id = (name: string): string => wf.steps.find((s) => s.step === name)!.id;
    expect(Number(id('c1'))).toBeLessThan(Number(id('c2')));
    await markRunning(['p1', 'p2', 'p3', 'p4'].map(id));

    const statements = createStatements(ctx.schema);
    const hold = await ctx.admin.connect();
    const t1 = await ctx.admin.connect();
    const t2 = await ctx.admin.connect();
    const settle = async (client: pg.PoolClient, names: string[], how: 'completes' | 'fails'): Promise<unknown> => {
      await client.query('BEGIN');
      const ids = names.map(id);
      const db = fromPg(client, false);
      const attempts = ids.map(() => 1);
      // How many of the batch the statement wrote.
      const written =
        how === 'completes'
          ? ids.length - (await statements.completeJobs(db, { ids, attempts, results: ids.map((jobId) => String(Number(jobId) * 10)) })).skipped.length
          : (await statements.failJobs(db, {
              ids,
              attempts,
              errors: ids.map(() => JSON.stringify({ attempt: 1, message: 'broke', at: new Date().toISOString() })),
              delaysMs: ids.map(() => 0),
              permanent: ids.map(() => true),
            })).length;
      await client.query('COMMIT');
      return written;
    };
    try {
      // Someone else holds c2 for a moment. Batch 1 queues behind it; batch
      // 2 starts while batch 1 waits. Locking children as each parent's
      // trigger reaches them, batch 1 would hold nothing yet wanted c2 and
      // then c1, batch 2 would hold c1 and want c2: a deadlock once c2 is
      // free. Locked in id order up front, both want c1 first.
      await hold.query('BEGIN');
      await hold.query(`SELECT 1 FROM "${ctx.schema}".jobs WHERE id = $1 FOR UPDATE`, [id('c2')]);
      const first = settle(t1, ['p1', 'p2'], firstBatch).catch((err: unknown) => err);
      await waitingOnLock(t1);
      const second = settle(t2, ['p3', 'p4'], 'completes').catch((err: unknown) => err);
      await waitingOnLock(t2);
      await hold.query('COMMIT');
      const outcomes = await Promise.all([first, second]);
      for (const outcome of outcomes) {
        expect(outcome, 'a completion batch failed').not.toBeInstanceOf(Error);
        expect(outcome).toBe(2);
      }
    } finally {
      for (const client of [hold, t1, t2]) {
        await client.query('ROLLBACK').catch(() => undefined);
        client.release();
      }
    }
    const done = (await pgq.getWorkflow(wf.id))!;
    const byName = Object.fromEntries(done.steps.map((s) => [s.step, s]));
    if (childState === 'available') {
      expect(byName.c1).toMatchObject({ state: 'available', pendingParents: 0, payload: [Number(id('p2')) * 10, Number(id('p3')) * 10] });
      expect(byName.c2).toMatchObject({ state: 'available', pendingParents: 0, payload: [Number(id('p1')) * 10, Number(id('p4')) * 10] });
    } else {
      expect(byName.c1).toMatchObject({ state: 'cancelled', cancelledBy: id('p2') });
      expect(byName.c2).toMatchObject({ state: 'cancelled', cancelledBy: id('p1') });
    }
    await pgq.cancelWorkflow(wf.id);
  });

  it('a wide chord whose members also feed steps in every order, finished on two worker processes at once: no deadlock, the callback runs once', async () => {
    const pgq = await migratedPgq();
    await ctx.admin.query(`CREATE TABLE IF NOT EXISTS "${ctx.schema}".wf_calls (
      job_id bigint NOT NULL, attempt int NOT NULL, pid int NOT NULL, count int NOT NULL, in_order boolean NOT NULL)`);
    // 600 members, whose callback waits on all of them; each member also
    // feeds four sums on average, each sum of two members picked at random,
    // so batches of members finishing together on two processes share
    // children in every order. (Without the ordered locks this deadlocked in
    // most runs; the two tests above fail every time.)
    const WIDTH = 600;
    const members = Array.from({ length: WIDTH }, (_, n) => step(item, { n, sleepMs: 20 }));
    let seed = 7;
    const pick = (): number => ((seed = (seed * 1_103_515_245 + 12_345) % 2_147_483_648), seed % WIDTH);
    const pairs = Array.from({ length: 2 * WIDTH }, (_, k) => {
      const a = pick();
      const b = (a + 1 + (pick() % (WIDTH - 1))) % WIDTH;
      return { a, b, flow: step(total).named(`sum${k}`).after(members[a]!, members[b]!) };
    });
    const env = { PGQ_URL: ctx.url, PGQ_SCHEMA: ctx.schema, PGQ_CONCURRENCY: '16', PGQ_LOG_LEVEL: 'warn' };
    const workers = [0, 1].map(() => spawnWorker(env, FIXTURE));
    await Promise.all(workers.map((w) => w.waitFor((e) => e.event === 'ready')));
    // Both workers listen before the enqueue: they claim and finish members side by side.
    const wf = await pgq.enqueueWorkflow(group([chord(group(members), step(collect)), ...pairs.map((p) => p.flow)]), { name: 'wide-chord' });
    const done = await pgq.waitForWorkflow(wf, { timeoutMs: 90_000 });
    for (const w of workers) w.child.kill('SIGTERM');
    await Promise.all(workers.map((w) => w.exited));

    // A deadlock would have shown as a retried outcome write (40P01) in a worker's log.
    for (const w of workers) expect(w.stderr()).not.toMatch(/deadlock/i);
    expect(done.state).toBe('succeeded');
    const callback = done.steps.find((s) => s.task === 'wf-collect')!;
    expect(callback).toMatchObject({ state: 'succeeded', attempts: 1, errors: [], result: { count: WIDTH, inOrder: true } });
    const { rows: calls } = await ctx.admin.query(`SELECT job_id::text FROM "${ctx.schema}".wf_calls`);
    expect(calls).toEqual([{ job_id: callback.id }]);
    const sums = new Map(done.steps.filter((s) => s.task === 'wf-total').map((s) => [s.step, s.result]));
    expect(pairs.map((p, k) => sums.get(`sum${k}`))).toEqual(pairs.map((p) => p.a + p.b));
    // Both processes finished members.
    const { rows } = await ctx.admin.query(
      `SELECT count(DISTINCT worker_id) AS n FROM "${ctx.schema}".jobs WHERE workflow_id = $1 AND task = 'wf-item'`,
      [wf.id],
    );
    expect(Number(rows[0].n)).toBe(2);
  });
});

describe('lock order when retries revive steps together', () => {
  it('two retries at once, each reviving a step that waits on the same live parent, both commit without a deadlock', async () => {
    const pgq = await migratedPgq();
    // s1 waits on p1 and p2, s3 on p3 and p2; p1 and p3 failed (s1 and s3 cancelled), p2 is live. Each retry
    // writes p2, which its revived step waits for: locked FOR SHARE first and written later, both retries
    // held it shared and then each waited for the other to write it (40P01).
    const p = [1, 2, 3].map((n) => step(manual, { n }).named(`p${n}`));
    const wf = await pgq.enqueueWorkflow(group([...p, step(manualSum).named('s1').after(p[0]!, p[1]!), step(manualSum).named('s3').after(p[2]!, p[1]!)]));
    const id = (name: string): string => wf.steps.find((s) => s.step === name)!.id;
    const s = `"${ctx.schema}"`;
    await ctx.admin.query(`UPDATE ${s}.jobs SET state = 'failed', attempts = 1, finished_at = now() WHERE id = ANY ($1::bigint[])`, [[id('p1'), id('p3')]]);
    const hold = await ctx.admin.connect();
    const t1 = await ctx.admin.connect();
    const t3 = await ctx.admin.connect();
    const retry = async (client: pg.PoolClient, parent: string): Promise<unknown> => {
      await client.query('BEGIN');
      await client.query(`UPDATE ${s}.jobs SET state = 'available', run_at = now(), finished_at = NULL WHERE id = $1`, [parent]);
      await client.query('COMMIT');
      return 'committed';
    };
    try {
      // Both revived steps held a moment: each retry has locked p2 by the time it waits for its step.
      await hold.query('BEGIN');
      await hold.query(`SELECT 1 FROM ${s}.jobs WHERE id = ANY ($1::bigint[]) FOR KEY SHARE`, [[id('s1'), id('s3')]]);
      const first = retry(t1, id('p1')).catch((err: unknown) => err);
      await waitingOnLock(t1);
      const second = retry(t3, id('p3')).catch((err: unknown) => err);
      await waitingOnLock(t3);
      await hold.query('COMMIT');
      expect(await Promise.all([first, second])).toEqual(['committed', 'committed']);
    } finally {
      for (const client of [hold, t1, t3]) {
        await client.query('ROLLBACK').catch(() => undefined);
        client.release();
      }
    }
    const done = (await pgq.getWorkflow(wf.id))!;
    const byName = Object.fromEntries(done.steps.map((st) => [st.step, st]));
    expect(byName.s1).toMatchObject({ state: 'blocked', pendingParents: 2 });
    expect(byName.s3).toMatchObject({ state: 'blocked', pendingParents: 2 });
    await pgq.cancelWorkflow(wf.id);
  });
});
