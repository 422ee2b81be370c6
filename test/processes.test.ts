/**
 * Workers as real processes: several over one queue, kill -9 mid-job, and
 * SIGTERM drains.
 */
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { defineTask } from '../src/index.js';
import { useTestSchema } from './support/harness.js';
import { spawnWorker } from './support/processes.js';
import { createLedger, overlappingRuns } from './support/ledger.js';

const ctx = useTestSchema('processes');

// The same name and schema as the fixture's task, so this process can enqueue for it.
const ledgerTask = defineTask({
  name: 'ledger',
  schema: z.object({ sleepMs: z.number().int().min(0), firstAttemptSleepMs: z.number().int().min(0).optional(), n: z.number().int().optional() }),
  maxAttempts: 10,
  handler: () => undefined,
});

const env = (extra: Record<string, string> = {}): Record<string, string> => ({
  PGQ_URL: ctx.url,
  PGQ_SCHEMA: ctx.schema,
  ...extra,
});

async function setup() {
  const pgq = await ctx.migrated({ tasks: [ledgerTask] });
  await createLedger(ctx.admin, ctx.schema);
  await ctx.admin.query(`TRUNCATE "${ctx.schema}".ledger`);
  return pgq;
}

describe('worker processes', () => {
  it('three processes drain one queue and never start a job twice', async () => {
    const pgq = await setup();
    const workers = [0, 1, 2].map(() => spawnWorker(env({ PGQ_CONCURRENCY: '4' })));
    await Promise.all(workers.map((w) => w.waitFor((e) => e.event === 'ready')));
    const jobs = await pgq.enqueueMany(
      ledgerTask,
      Array.from({ length: 300 }, (_, n) => ({ sleepMs: 2, n })),
    );
    for (const job of jobs) expect((await pgq.waitForJob(job.id, { timeoutMs: 60_000 })).state).toBe('succeeded');
    const { rows } = await ctx.admin.query<{ runs: string; jobs: string; pids: string; retries: string }>(
      `SELECT count(*) AS runs, count(DISTINCT job_id) AS jobs, count(DISTINCT pid) AS pids,
              count(*) FILTER (WHERE attempt > 1) AS retries FROM "${ctx.schema}".ledger`,
    );
    expect(rows[0]).toMatchObject({ runs: '300', jobs: '300', retries: '0' });
    expect(Number(rows[0]!.pids)).toBeGreaterThan(1);
    for (const w of workers) w.child.kill('SIGTERM');
    await Promise.all(workers.map((w) => w.exited));
  });

  it('rescues the job of a worker killed with SIGKILL mid-job', async () => {
    const pgq = await setup();
    const a = spawnWorker(env({ PGQ_RESCUE_AFTER_MS: '1500', PGQ_HEARTBEAT_MS: '200' }));
    await a.waitFor((e) => e.event === 'ready');
    const job = await pgq.enqueue(ledgerTask, { sleepMs: 10, firstAttemptSleepMs: 600_000 });
    await a.waitFor((e) => e.event === 'job-start' && e.id === job.id);
    const b = spawnWorker(env({ PGQ_RESCUE_AFTER_MS: '1500', PGQ_HEARTBEAT_MS: '200' }));
    await b.waitFor((e) => e.event === 'ready');
    a.child.kill('SIGKILL');
    await a.exited;
    const { rows: killed } = await ctx.admin.query<{ now: Date }>('SELECT clock_timestamp() AS now');
    await ctx.admin.query(`UPDATE "${ctx.schema}".ledger SET finished_at = $1 WHERE pid = $2 AND finished_at IS NULL`, [killed[0]!.now, a.pid]);

    const done = await pgq.waitForJob(job.id, { timeoutMs: 30_000 });
    expect(done.state).toBe('succeeded');
    expect(done.attempts).toBe(2);
    expect(done.errors).toHaveLength(1);
    expect(done.errors[0]!.message).toMatch(/rescued: the lease of worker .* expired \(no heartbeat for 1500 ms, its rescueAfterMs\)/);
    expect(done.result).toEqual({ pid: b.pid });
    expect(await overlappingRuns(ctx.admin, ctx.schema)).toBe(0);
    b.child.kill('SIGTERM');
    await b.exited;
  });

  it('a fixed-id worker killed with SIGKILL and started again at once, with no other worker to lead: the start waits out the dead lease, rescues its own job and reruns it; a live worker of the id is refused', async () => {
    const pgq = await setup();
    // A lease long enough that the restart, started right after the kill, finds it still running.
    const timing = { PGQ_RESCUE_AFTER_MS: '5000', PGQ_HEARTBEAT_MS: '200', PGQ_WORKER_ID: 'solo' };
    const a = spawnWorker(env(timing));
    await a.waitFor((e) => e.event === 'ready');
    const job = await pgq.enqueue(ledgerTask, { sleepMs: 10, firstAttemptSleepMs: 600_000 });
    await a.waitFor((e) => e.event === 'job-start' && e.id === job.id);
    // A second process under the id while the first lives: it waits for the lease, sees it renewed, and fails.
    const twin = spawnWorker(env({ ...timing, PGQ_LOG_LEVEL: 'warn' }));
    expect(await twin.exited).not.toBe(0);
    expect(twin.stderr()).toMatch(/is registered by a worker whose lease runs \d+ ms more: waiting for it to run out/);
    expect(twin.stderr()).toMatch(/worker id "solo" is already registered by a live worker \(its lease has not run out\)/);
    expect((await pgq.getJob(job.id))!.state).toBe('running');
    // The restart, loaded before the kill and started just after it: a start
    // through tsx can take longer than the lease on a loaded machine.
    const b = spawnWorker(env({ ...timing, PGQ_LOG_LEVEL: 'warn', PGQ_START_ON_SIGUSR2: '1' }));
    await b.waitFor((e) => e.event === 'loaded');
    a.child.kill('SIGKILL');
    await a.exited;
    const { rows: killed } = await ctx.admin.query<{ now: Date }>('SELECT clock_timestamp() AS now');
    await ctx.admin.query(`UPDATE "${ctx.schema}".ledger SET finished_at = $1 WHERE pid = $2 AND finished_at IS NULL`, [killed[0]!.now, a.pid]);
    // Started again at once: the dead worker's lease still runs, and no worker runs to lead (its row stayed for good before).
    expect((await ctx.admin.query(`SELECT 1 FROM "${ctx.schema}".workers WHERE id = 'solo' AND lease_expires_at > now()`)).rowCount).toBe(1);
    b.child.kill('SIGUSR2');
    await b.waitFor((e) => e.event === 'ready');
    expect(b.stderr()).toMatch(/is registered by a worker whose lease runs \d+ ms more: waiting for it to run out/);
    const done = await pgq.waitForJob(job.id, { timeoutMs: 30_000 });
    expect(done).toMatchObject({ state: 'succeeded', attempts: 2, result: { pid: b.pid }, workerId: 'solo' });
    expect(done.errors[0]!.message).toMatch(/rescued: the lease of worker solo expired \(no heartbeat for 5000 ms, its rescueAfterMs\)/);
    expect(await overlappingRuns(ctx.admin, ctx.schema)).toBe(0);
    b.child.kill('SIGTERM');
    await b.exited;
  });

  it('a worker frozen (SIGSTOP) past its rescueAfterMs thaws, registers again, signals its rescued attempts and works on; each job succeeds once', async () => {
    const pgq = await setup();
    const timing = { PGQ_RESCUE_AFTER_MS: '1500', PGQ_HEARTBEAT_MS: '200', PGQ_CONCURRENCY: '2' };
    const a = spawnWorker(env(timing));
    const { workerId } = await a.waitFor((e) => e.event === 'ready');
    // Two first attempts that only their signal ends.
    const held = await pgq.enqueueMany(ledgerTask, [0, 1].map((n) => ({ sleepMs: 10, firstAttemptSleepMs: 600_000, n })));
    for (const job of held) await a.waitFor((e) => e.event === 'job-start' && e.id === job.id);
    const b = spawnWorker(env(timing));
    await b.waitFor((e) => e.event === 'ready');
    a.child.kill('SIGSTOP');
    for (const job of held) {
      expect(await pgq.waitForJob(job.id, { timeoutMs: 30_000 })).toMatchObject({ state: 'succeeded', attempts: 2, result: { pid: b.pid } });
    }
    const { rows: thawed } = await ctx.admin.query<{ now: Date }>('SELECT clock_timestamp() AS now');
    a.child.kill('SIGCONT');
    // A finds its row gone, registers again, and its two attempts end on their LeaseLostError; their outcomes are discarded.
    for (const job of held) await a.waitFor((e) => e.event === 'discarded' && e.id === job.id && e.outcome === 'fail', 20_000);
    const { rows: frozen } = await ctx.admin.query<{ finished_at: Date | null }>(
      `SELECT finished_at FROM "${ctx.schema}".ledger WHERE pid = $1 AND attempt = 1 ORDER BY job_id`,
      [a.pid],
    );
    expect(frozen).toHaveLength(2);
    for (const row of frozen) expect(row.finished_at!.getTime()).toBeGreaterThanOrEqual(thawed[0]!.now.getTime());
    // With B gone, A serves the queue under its new id.
    b.child.kill('SIGTERM');
    await b.exited;
    const later = await pgq.enqueueMany(ledgerTask, [0, 1, 2].map((n) => ({ sleepMs: 0, n })));
    for (const job of later) {
      expect(await pgq.waitForJob(job.id, { timeoutMs: 20_000 })).toMatchObject({ state: 'succeeded', attempts: 1, result: { pid: a.pid }, workerId: `${String(workerId)}~2` });
    }
    // The only overlapping runs are the frozen attempts with their reruns: a handler runs twice at once only after its process stopped renewing for its rescueAfterMs.
    const { rows: overlaps } = await ctx.admin.query<{ job_id: string; pids: number[] }>(`
      SELECT a.job_id, ARRAY[a.pid, b.pid] AS pids FROM "${ctx.schema}".ledger a JOIN "${ctx.schema}".ledger b
        ON a.job_id = b.job_id AND (a.attempt, a.pid, a.started_at, a.run) < (b.attempt, b.pid, b.started_at, b.run)
       WHERE a.started_at < coalesce(b.finished_at, 'infinity') AND b.started_at < coalesce(a.finished_at, 'infinity')
       ORDER BY a.job_id`);
    expect(overlaps).toEqual(held.map((job) => ({ job_id: job.id, pids: [a.pid, b.pid] })));
    // Every run: the frozen first attempts and their reruns, then one run of each later job.
    const { rows: runs } = await ctx.admin.query<{ job_id: string; attempt: number; pid: number }>(
      `SELECT job_id, attempt, pid FROM "${ctx.schema}".ledger ORDER BY job_id, attempt, started_at`,
    );
    expect(runs).toEqual([
      ...held.flatMap((job) => [
        { job_id: job.id, attempt: 1, pid: a.pid },
        { job_id: job.id, attempt: 2, pid: b.pid },
      ]),
      ...later.map((job) => ({ job_id: job.id, attempt: 1, pid: a.pid })),
    ]);
    a.child.kill('SIGTERM');
    expect(await a.exited).toBe(0);
  });

  it('drains on SIGTERM: the running job finishes once, nothing new is claimed', async () => {
    const pgq = await setup();
    const w = spawnWorker(env({ PGQ_CONCURRENCY: '1' }));
    await w.waitFor((e) => e.event === 'ready');
    const running = await pgq.enqueue(ledgerTask, { sleepMs: 1_500 });
    await w.waitFor((e) => e.event === 'job-start' && e.id === running.id);
    const waiting = await pgq.enqueue(ledgerTask, { sleepMs: 0 });
    w.child.kill('SIGTERM');
    expect(await w.exited).toBe(0);
    const done = await pgq.getJob(running.id);
    expect(done).toMatchObject({ state: 'succeeded', attempts: 1 });
    expect((await pgq.getJob(waiting.id))?.state).toBe('available');
    const { rows } = await ctx.admin.query(`SELECT * FROM "${ctx.schema}".ledger WHERE job_id = $1`, [running.id]);
    expect(rows).toHaveLength(1);
    expect(rows[0].finished_at).not.toBeNull();
    expect(await pgq.stats()).toEqual([expect.objectContaining({ queue: 'default' })]);
    const { rows: workers } = await ctx.admin.query(`SELECT id FROM "${ctx.schema}".workers`);
    expect(workers).toEqual([]);
  });

  it('a second SIGTERM stops at once and puts the running job back without using up an attempt', async () => {
    const pgq = await setup();
    const w = spawnWorker(env({ PGQ_CONCURRENCY: '1', PGQ_GRACE_MS: '60000' }));
    await w.waitFor((e) => e.event === 'ready');
    const job = await pgq.enqueue(ledgerTask, { sleepMs: 0, firstAttemptSleepMs: 600_000 });
    await w.waitFor((e) => e.event === 'job-start' && e.id === job.id);
    w.child.kill('SIGTERM');
    await w.waitFor((e) => e.event === 'stopping');
    w.child.kill('SIGTERM');
    expect(await w.exited).toBe(0);
    const after = await pgq.getJob(job.id);
    expect(after).toMatchObject({ state: 'available', attempts: 1, maxAttempts: 11 });
    expect(after!.errors[0]!.message).toMatch(/shut down/);
    const next = spawnWorker(env());
    const done = await pgq.waitForJob(job.id, { timeoutMs: 30_000 });
    expect(done).toMatchObject({ state: 'succeeded', attempts: 2 });
    next.child.kill('SIGTERM');
    await next.exited;
  });
});
