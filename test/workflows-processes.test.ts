/**
 * Workflows on worker processes: a chord over 1,000 parallel jobs fires its
 * callback exactly once with every result in order, and a workflow survives
 * a worker killed with SIGKILL in the middle of it.
 */
import { describe, expect, it } from 'vitest';
import { chain, chord, group, step } from '../src/index.js';
import { useTestSchema } from './support/harness.js';
import { spawnWorker } from './support/processes.js';
import { addTen, collect, item, seed, slowInc, workflowTasks } from './fixtures/workflow-tasks.js';

const ctx = useTestSchema('workflow_processes');
const FIXTURE = new URL('./fixtures/workflow-worker.ts', import.meta.url).pathname;

const env = (extra: Record<string, string> = {}): Record<string, string> => ({ PGQ_URL: ctx.url, PGQ_SCHEMA: ctx.schema, ...extra });

async function setup() {
  const pgq = await ctx.migrated({ tasks: workflowTasks });
  await ctx.admin.query(`CREATE TABLE IF NOT EXISTS "${ctx.schema}".wf_calls (
    job_id bigint NOT NULL, attempt int NOT NULL, pid int NOT NULL, count int NOT NULL, in_order boolean NOT NULL)`);
  await ctx.admin.query(`TRUNCATE "${ctx.schema}".wf_calls`);
  return pgq;
}

describe('workflows on worker processes', () => {
  it('a chord over 1,000 parallel jobs on three processes fires its callback once, with the 1,000 results in order', async () => {
    const pgq = await setup();
    const workers = [0, 1, 2].map(() => spawnWorker(env({ PGQ_CONCURRENCY: '8' }), FIXTURE));
    await Promise.all(workers.map((w) => w.waitFor((e) => e.event === 'ready')));
    const members = Array.from({ length: 1_000 }, (_, n) => step(item, { n, sleepMs: 1 }));
    const wf = await pgq.enqueueWorkflow(chord(group(members), step(collect)), { name: 'chord-1000' });
    expect(wf.counts).toMatchObject({ blocked: 1 });

    const done = await pgq.waitForWorkflow(wf, { timeoutMs: 50_000 });
    expect(done.state).toBe('succeeded');
    expect(done.counts.succeeded).toBe(1_001);
    expect(done.result).toMatchObject({ count: 1_000, inOrder: true });
    const callback = done.steps.at(-1)!;
    expect(callback).toMatchObject({ task: 'wf-collect', attempts: 1, errors: [] });
    expect(callback.payload).toEqual(Array.from({ length: 1_000 }, (_, n) => n));
    const { rows: calls } = await ctx.admin.query(`SELECT * FROM "${ctx.schema}".wf_calls`);
    expect(calls).toHaveLength(1);
    expect(calls[0]).toMatchObject({ job_id: callback.id, attempt: 1, count: 1_000, in_order: true });
    // The members really ran on several processes.
    const pids = await ctx.admin.query(
      `SELECT count(DISTINCT j.worker_id) AS workers FROM "${ctx.schema}".jobs j WHERE j.workflow_id = $1 AND j.task = 'wf-item'`,
      [wf.id],
    );
    expect(Number(pids.rows[0].workers)).toBeGreaterThan(1);
    for (const w of workers) w.child.kill('SIGTERM');
    await Promise.all(workers.map((w) => w.exited));
  });

  it('a worker killed with SIGKILL mid-workflow: its step is rescued and the workflow completes, the next step run once', async () => {
    const pgq = await setup();
    const fast = { PGQ_RESCUE_AFTER_MS: '1500', PGQ_HEARTBEAT_MS: '200' };
    const a = spawnWorker(env(fast), FIXTURE);
    await a.waitFor((e) => e.event === 'ready');
    const wf = await pgq.enqueueWorkflow(chain(step(seed, { n: 1 }), step(slowInc), step(addTen)));
    const slow = wf.steps[1]!;
    await a.waitFor((e) => e.event === 'job-start' && e.id === slow.id);
    a.child.kill('SIGKILL');
    await a.exited;
    expect((await pgq.getWorkflow(wf))!.steps.map((s) => s.state)).toEqual(['succeeded', 'running', 'blocked']);

    const b = spawnWorker(env(fast), FIXTURE);
    const done = await pgq.waitForWorkflow(wf, { timeoutMs: 30_000 });
    expect(done.state).toBe('succeeded');
    expect(done.result).toBe(12);
    expect(done.steps[1]).toMatchObject({ state: 'succeeded', attempts: 2, result: 2 });
    expect(done.steps[1]!.errors[0]!.message).toMatch(/rescued: the lease of worker .* expired/);
    expect(done.steps[2]).toMatchObject({ state: 'succeeded', attempts: 1, payload: 2 });
    const { rows } = await ctx.admin.query(`SELECT job_id FROM "${ctx.schema}".wf_calls`);
    expect(rows).toEqual([{ job_id: done.steps[2]!.id }]);
    b.child.kill('SIGTERM');
    await b.exited;
  });
});
