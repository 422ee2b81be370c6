/**
 * Sandboxed jobs across worker processes: a job computing in a sandbox
 * longer than `rescueAfterMs` keeps its worker's lease (the main thread is
 * free) and runs exactly once.
 */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { misbehaveTask, sandboxedLedgerTask } from './fixtures/sandbox/tasks.js';
import { until, useTestSchema } from './support/harness.js';
import { alive, spawnWorker } from './support/processes.js';
import { createLedger, overlappingRuns } from './support/ledger.js';

const ctx = useTestSchema('sandbox_processes');
const SCRIPT = path.resolve(import.meta.dirname, 'fixtures/sandbox-worker.ts');

describe('sandboxed jobs across worker processes', () => {
  it('a sandbox child computing without ever yielding ends when its worker is killed -9 (it would run on beside the rescued job)', async () => {
    const task = misbehaveTask('orphan', 'process');
    const pgq = await ctx.migrated({ tasks: [task] });
    const worker = spawnWorker({ PGQ_URL: ctx.url, PGQ_SCHEMA: ctx.schema, PGQ_LOG_LEVEL: 'info' }, path.resolve(import.meta.dirname, 'fixtures/sandbox-process-worker.ts'));
    await worker.waitFor((e) => e.event === 'ready', 60_000);
    await pgq.enqueue(task, { firstAttempt: 'spin' });
    // The handler logs its own pid through the worker's logger when it starts.
    await until(() => /misbehave started/.test(worker.stderr()), { timeoutMs: 30_000, what: `the sandboxed handler to start: ${worker.stderr()} ${JSON.stringify(worker.events)}` });
    // pino's own pid (the worker's) comes first on the line, the handler's last.
    const line = worker.stderr().split('\n').find((l) => l.includes('misbehave started'))!;
    const sandboxPid = Number([...line.matchAll(/"pid":(\d+)/g)].at(-1)![1]);
    expect(sandboxPid).not.toBe(worker.pid);
    expect(alive(sandboxPid)).toBe(true);
    try {
      worker.child.kill('SIGKILL');
      await worker.exited;
      await until(() => !alive(sandboxPid), { timeoutMs: 10_000, what: `sandbox child ${sandboxPid} to end with its worker` });
    } finally {
      if (alive(sandboxPid)) process.kill(sandboxPid, 'SIGKILL');
    }
  }, 120_000);

  it('a job computing longer than rescueAfterMs runs once', async () => {
    const pgq = await ctx.migrated({ tasks: [sandboxedLedgerTask] });
    await createLedger(ctx.admin, ctx.schema);
    const env = { PGQ_URL: ctx.url, PGQ_SCHEMA: ctx.schema, PGQ_RESCUE_AFTER_MS: '3000', PGQ_HEARTBEAT_MS: '300' };
    const workers = [spawnWorker(env, SCRIPT), spawnWorker(env, SCRIPT)];
    await Promise.all(workers.map((w) => w.waitFor((e) => e.event === 'ready', 60_000)));
    const job = await pgq.enqueue(sandboxedLedgerTask, { ms: 8_000 });
    const done = await pgq.waitForJob(job.id, { timeoutMs: 90_000 });
    expect([done.state, done.attempts, done.errors]).toEqual(['succeeded', 1, []]);
    const { rows } = await ctx.admin.query<{ attempt: number; pid: number; finished: boolean }>(
      `SELECT attempt, pid, finished_at IS NOT NULL AS finished FROM "${ctx.schema}".ledger WHERE job_id = $1`,
      [job.id],
    );
    expect(rows).toEqual([{ attempt: 1, pid: (done.result as { pid: number }).pid, finished: true }]);
    expect(workers.map((w) => w.pid)).toContain(rows[0]!.pid);
    expect(await overlappingRuns(ctx.admin, ctx.schema)).toBe(0);
    for (const w of workers) w.child.kill('SIGTERM');
    expect(await Promise.all(workers.map((w) => w.exited))).toEqual([0, 0]);
  }, 180_000);
});
