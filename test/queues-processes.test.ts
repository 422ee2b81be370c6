/**
 * Queue control across worker processes (3 processes × concurrency 20): a
 * concurrency limit, a rate limit, per-key fairness, and pause/resume, each
 * proved from the ledger the processes write (pid, start, end).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { defineTask, type Pgq } from '../src/index.js';
import { until, useTestSchema } from './support/harness.js';
import { spawnWorker, type WorkerProcess } from './support/processes.js';
import { createLedger } from './support/ledger.js';

const ctx = useTestSchema('queues_proc');

// The same name and schema as the fixture's task, so this process can enqueue for it.
const ledgerTask = defineTask({
  name: 'ledger',
  schema: z.object({ sleepMs: z.number().int().min(0), firstAttemptSleepMs: z.number().int().min(0).optional(), n: z.number().int().optional() }),
  maxAttempts: 10,
  handler: () => undefined,
});

let pgq: Pgq;
let workers: WorkerProcess[] = [];

/** Most ledger runs of the jobs matching `where` (on jobs j) in progress at any one instant. */
async function maxOverlap(where: string): Promise<number> {
  const s = `"${ctx.schema}"`;
  const { rows } = await ctx.admin.query<{ n: number | null }>(`
    WITH runs AS (SELECT l.* FROM ${s}.ledger l JOIN ${s}.jobs j ON j.id = l.job_id WHERE ${where})
    SELECT max((SELECT count(*) FROM runs b
                 WHERE b.started_at <= a.started_at AND coalesce(b.finished_at, 'infinity') > a.started_at))::int AS n
      FROM runs a`);
  return rows[0]!.n ?? 0;
}

beforeAll(async () => {
  pgq = await ctx.migrated({ tasks: [ledgerTask] });
  await createLedger(ctx.admin, ctx.schema);
  await pgq.setQueue('capped', { concurrency: 3 });
  await pgq.setQueue('rated', { rateLimit: { limit: 20, periodMs: 1_000 } });
  await pgq.setQueue('keyed', { keyConcurrency: 2 });
  workers = [0, 1, 2].map(() =>
    spawnWorker({
      PGQ_URL: ctx.url,
      PGQ_SCHEMA: ctx.schema,
      PGQ_CONCURRENCY: '20',
      // Small claims, so every process takes part however quick the jobs are.
      PGQ_MAX_CLAIM_BATCH: '5',
      PGQ_QUEUES: 'capped,rated,keyed,pausable,marker',
      PGQ_POLL_MS: '60000',
    }),
  );
  await Promise.all(workers.map((w) => w.waitFor((e) => e.event === 'ready', 60_000)));
}, 120_000);

afterAll(async () => {
  for (const w of workers) w.child.kill('SIGTERM');
  await Promise.all(workers.map((w) => w.exited));
});

const drain = async (jobs: { id: string }[]): Promise<void> => {
  for (const job of jobs) expect((await pgq.waitForJob(job.id, { timeoutMs: 60_000 })).state).toBe('succeeded');
};

describe('queue control across processes', () => {
  it('a queue limited to 3 never runs more than 3 at once across 3 × 20 slots, and drains', async () => {
    // The process whose job ends claims the freed slot first, so on a busy
    // machine one process can take a whole wave: the limit is checked after
    // every wave, and waves go on (at most three) until more than one
    // process has run the queue's jobs, which is what makes it a check
    // across processes.
    let pids = 0;
    for (let wave = 0; wave < 3 && pids < 2; wave += 1) {
      const jobs = await pgq.enqueueMany(ledgerTask, Array.from({ length: 60 }, (_, n) => ({ sleepMs: 100, n })), { queue: 'capped' });
      await drain(jobs);
      expect(await maxOverlap(`j.queue = 'capped'`)).toBe(3);
      const { rows } = await ctx.admin.query(`SELECT count(DISTINCT pid)::int AS pids FROM "${ctx.schema}".ledger l JOIN "${ctx.schema}".jobs j ON j.id = l.job_id WHERE j.queue = 'capped'`);
      pids = rows[0].pids;
    }
    expect(pids).toBeGreaterThan(1);
  }, 120_000);

  it('a rate limit of 20/s never starts more than the burst plus the refill (20 + 60) in any 3 s', async () => {
    const jobs = await pgq.enqueueMany(ledgerTask, Array.from({ length: 150 }, (_, n) => ({ sleepMs: 0, n })), { queue: 'rated' });
    await drain(jobs);
    const { rows } = await ctx.admin.query<{ n: number; span_ms: number }>(`
      WITH s AS (SELECT started_at FROM "${ctx.schema}".jobs WHERE queue = 'rated')
      SELECT max((SELECT count(*) FROM s b WHERE b.started_at >= a.started_at AND b.started_at < a.started_at + interval '3 seconds'))::int AS n,
             (extract(epoch FROM max(started_at) - min(started_at)) * 1000)::int AS span_ms
        FROM s a`);
    expect(rows[0]!.n).toBeLessThanOrEqual(80);
    // Unlimited, 60 slots would start 150 quick jobs in a small fraction of this.
    expect(rows[0]!.span_ms).toBeGreaterThanOrEqual(Math.floor(((150 - 20) / 20) * 1_000) - 50);
  }, 120_000);

  it('per key: 200 jobs of key A run at most 2 at once, and key B\'s 20 jobs finish before A\'s backlog', async () => {
    const a = await pgq.enqueueMany(ledgerTask, Array.from({ length: 200 }, (_, n) => ({ sleepMs: 30, n })), { queue: 'keyed', concurrencyKey: 'A' });
    const b = await pgq.enqueueMany(ledgerTask, Array.from({ length: 20 }, (_, n) => ({ sleepMs: 30, n })), { queue: 'keyed', concurrencyKey: 'B' });
    await drain([...b, ...a]);
    expect(await maxOverlap(`j.concurrency_key = 'A'`)).toBe(2);
    expect(await maxOverlap(`j.concurrency_key = 'B'`)).toBeLessThanOrEqual(2);
    const { rows } = await ctx.admin.query<{ b_done: Date; a_half: Date }>(`
      SELECT (SELECT max(finished_at) FROM "${ctx.schema}".jobs WHERE concurrency_key = 'B') AS b_done,
             (SELECT finished_at FROM "${ctx.schema}".jobs WHERE concurrency_key = 'A' ORDER BY finished_at OFFSET 99 LIMIT 1) AS a_half`);
    expect(rows[0]!.b_done.getTime()).toBeLessThan(rows[0]!.a_half.getTime());
  }, 120_000);

  it('pause stops claiming on every process; resume wakes them at once (their poll is 60 s)', async () => {
    const first = await pgq.enqueueMany(ledgerTask, Array.from({ length: 90 }, (_, n) => ({ sleepMs: 200, n })), { queue: 'pausable' });
    await until(async () => (await pgq.getQueue('pausable')).running > 0, { what: 'pausable jobs running' });
    await pgq.pauseQueue('pausable');
    // A pause reaches the workers with the queues NOTIFY, or at their
    // once-a-second re-read; a claim under way before that may still take the
    // queue's jobs (docs/queues.md, Guarantees). Give it that time, so the
    // jobs below test the pause itself, not its propagation.
    await new Promise((resolve) => setTimeout(resolve, 2_500));
    // Older than the markers: a process still claiming this queue would take these first.
    const later = await pgq.enqueueMany(ledgerTask, Array.from({ length: 30 }, (_, n) => ({ sleepMs: 0, n })), { queue: 'pausable' });
    // Markers on another queue: claimed while the paused queue's jobs wait.
    const markers = await pgq.enqueueMany(ledgerTask, Array.from({ length: 90 }, (_, n) => ({ sleepMs: 200, n })), { queue: 'marker' });
    await drain(markers);
    await until(async () => (await pgq.getQueue('pausable')).running === 0, { what: 'running pausable jobs finished' });
    const { rows: pids } = await ctx.admin.query(`SELECT count(DISTINCT pid)::int AS n FROM "${ctx.schema}".ledger l JOIN "${ctx.schema}".jobs j ON j.id = l.job_id WHERE j.queue = 'marker'`);
    // Claiming went on for other queues after the pause. Which processes
    // took the markers depends on which had free slots first (the others may
    // still be busy with the paused queue's running jobs), so only one is
    // certain; every process was woken for the paused queue's later jobs
    // (their NOTIFY) and none of them took one, checked below.
    expect(pids[0].n).toBeGreaterThanOrEqual(1);
    const ids = later.map((j) => j.id);
    const { rows: ran } = await ctx.admin.query(`SELECT count(*)::int AS n FROM "${ctx.schema}".ledger WHERE job_id = ANY($1::bigint[])`, [ids]);
    expect(ran[0].n).toBe(0);
    const q = await pgq.getQueue('pausable');
    expect(q.paused).toBe(true);
    expect(q.counts.available).toBeGreaterThanOrEqual(30);
    await pgq.resumeQueue('pausable');
    await drain([...first, ...later]);
  }, 120_000);
});
