/**
 * Sandboxed jobs across worker processes: a job computing in a sandbox
 * longer than `rescueAfterMs` keeps its worker's lease (the main thread is
 * free) and runs exactly once.
 */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { sandboxedLedgerTask } from './fixtures/sandbox/tasks.js';
import { useTestSchema } from './support/harness.js';
import { spawnWorker } from './support/processes.js';
import { createLedger, overlappingRuns } from './support/ledger.js';

const ctx = useTestSchema('sandbox_processes');
const SCRIPT = path.resolve(import.meta.dirname, 'fixtures/sandbox-worker.ts');

describe('sandboxed jobs across worker processes', () => {
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
