/**
 * Queue control in one process: settings and their validation, counts,
 * pause and resume, limits on the claim, expiry, and the CLI.
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { ValidationError, defineTask, type Pgq } from '../src/index.js';
import { createStatements } from '../src/db/statements.js';
import { fromPg } from '../src/db/queryable.js';
import { createQueueStatements } from '../src/db/queue-statements.js';
import { retryConflicts } from '../src/db/transaction.js';
import { QueueGate } from '../src/worker/queue-gate.js';
import { Listener } from '../src/notify/listener.js';
import { channelNames } from '../src/notify/channels.js';
import { defaultLogger } from '../src/core/logger.js';
import { deferred, until, useTestSchema } from './support/harness.js';

const ctx = useTestSchema('queues');
const root = path.resolve(import.meta.dirname, '..');

const started: string[] = [];
const gate = { open: deferred() };
const hold = defineTask({
  name: 'hold',
  schema: z.object({ n: z.number().int() }),
  queue: 'held',
  async handler(_p, c) {
    started.push(c.job.id);
    await gate.open.promise;
  },
});
const failOnce = defineTask({
  name: 'fail-once',
  schema: z.object({}),
  queue: 'expiring',
  maxAttempts: 3,
  backoff: { baseMs: 5_000, maxMs: 5_000 },
  handler(_p, c) {
    started.push(c.job.id);
    if (c.attempt === 1) throw new Error('first attempt fails');
  },
});
const tenant = defineTask({
  name: 'tenant',
  schema: z.object({ tenant: z.string() }),
  queue: 'tenants',
  expiresInMs: 3_600_000,
  concurrencyKey: (p) => `tenant:${p.tenant}`,
  handler: () => undefined,
});

const quick = { heartbeatMs: 200, rescueAfterMs: 15_000, pollIntervalMs: 60_000 } as const;

describe('queue settings', () => {
  it('sets, reads and removes limits; bad settings are ValidationErrors that change nothing', async () => {
    const pgq = await ctx.migrated({ tasks: [hold] });
    expect(await pgq.getQueue('emails')).toMatchObject({ name: 'emails', paused: false, concurrency: null, rateLimit: null, createdAt: null });
    const set = await pgq.setQueue('emails', { concurrency: 3, rateLimit: { limit: 100, periodMs: 60_000 }, keyConcurrency: 2 });
    expect(set).toMatchObject({ concurrency: 3, rateLimit: { limit: 100, periodMs: 60_000 }, keyConcurrency: 2, paused: false });
    const before = (await ctx.admin.query(`SELECT * FROM "${ctx.schema}".queues`)).rows;
    const bad: [string, unknown, RegExp][] = [
      ['emails', { concurrency: 0 }, /settings\.concurrency: must be at least 1/],
      ['emails', { concurrency: -2 }, /settings\.concurrency: must be at least 1/],
      ['emails', { concurrency: 1.5 }, /settings\.concurrency: must be a whole number/],
      ['emails', { keyConcurrency: 0 }, /settings\.keyConcurrency: must be at least 1/],
      ['emails', { rateLimit: { limit: 0, periodMs: 1_000 } }, /settings\.rateLimit\.limit: must be at least 1/],
      ['emails', { rateLimit: { limit: 5, periodMs: 0.5 } }, /settings\.rateLimit\.periodMs: must be a whole number/],
      ['emails', { rateLimit: { limit: 5, periodMs: 0 } }, /settings\.rateLimit\.periodMs: must be at least 1 ms/],
      // A month is past int4's milliseconds: said as that, not as "must be a number".
      ['emails', { rateLimit: { limit: 1_000, periodMs: 30 * 86_400_000 } }, /settings\.rateLimit\.periodMs: must be at most 2147483647 ms \(about 24\.8 days\)/],
      ['emails', { concurrency: 3_000_000_000 }, /settings\.concurrency: must be at most 2147483647$/],
      ['emails', { rateLimit: { limit: 5 } }, /settings\.rateLimit\.periodMs/],
      ['emails', { concurency: 3 }, /settings: .*concurency/i],
      ['emails', {}, /give at least one of/],
      ['', { concurrency: 1 }, /queue: must not be empty/],
      ['a\u0001b', { concurrency: 1 }, /queue: must not contain control characters/],
      ['..', { concurrency: 1 }, /queue: must not be "\." or "\.\."/],
      ['x'.repeat(201), { concurrency: 1 }, /queue: must be at most 200/],
    ];
    for (const [name, settings, message] of bad) {
      const err = await pgq.setQueue(name, settings as never).catch((e: unknown) => e);
      expect(err, JSON.stringify(settings)).toBeInstanceOf(ValidationError);
      expect((err as Error).message).toMatch(message);
    }
    await expect(pgq.pauseQueue('')).rejects.toThrow(ValidationError);
    expect((await ctx.admin.query(`SELECT * FROM "${ctx.schema}".queues`)).rows).toEqual(before);

    expect(await pgq.setQueue('emails', { rateLimit: null, concurrency: null })).toMatchObject({ concurrency: null, rateLimit: null, keyConcurrency: 2 });
    // Plain SQL works too, and the trigger stamps updated_at.
    await ctx.admin.query(`UPDATE "${ctx.schema}".queues SET concurrency = 7, updated_at = 'epoch' WHERE name = 'emails'`);
    const viaSql = await pgq.getQueue('emails');
    expect(viaSql.concurrency).toBe(7);
    expect(viaSql.updatedAt!.getTime()).toBeGreaterThan(0);
    // Pausing an unknown queue creates its row, paused.
    expect(await pgq.pauseQueue('not-yet-used')).toMatchObject({ name: 'not-yet-used', paused: true, createdAt: expect.any(Date) });
    expect((await pgq.listQueues()).map((q) => q.name)).toEqual(['emails', 'not-yet-used']);
  });

  it('the same rate limit saved again keeps its bucket (a refill would let the rate be exceeded); a new one starts full', async () => {
    const pgq = await ctx.migrated({ tasks: [hold] });
    const bucket = async () =>
      (await ctx.admin.query<{ rate_tokens: number; refilled: boolean }>(`SELECT rate_tokens, rate_refilled_at IS NOT NULL AS refilled FROM "${ctx.schema}".queues WHERE name = 'metered'`)).rows[0];
    await pgq.setQueue('metered', { rateLimit: { limit: 100, periodMs: 60_000 } });
    expect(await bucket()).toEqual({ rate_tokens: 100, refilled: false });
    // Drained by the claims, as a busy minute leaves it.
    await ctx.admin.query(`UPDATE "${ctx.schema}".queues SET rate_tokens = 0, rate_refilled_at = now() WHERE name = 'metered'`);
    // A settings form posts every field: the concurrency changes, the rate is the same.
    await pgq.setQueue('metered', { concurrency: 5, rateLimit: { limit: 100, periodMs: 60_000 } });
    expect(await bucket()).toEqual({ rate_tokens: 0, refilled: true });
    await pgq.setQueue('metered', { rateLimit: { limit: 50, periodMs: 60_000 } });
    expect(await bucket()).toEqual({ rate_tokens: 50, refilled: false });
  });
});

describe('pause, limits and expiry on a worker', () => {
  it('pause stops claims, running jobs finish, resume wakes the worker without a poll; counts are live', async () => {
    const pgq = await ctx.migrated({ tasks: [hold] });
    gate.open = deferred();
    started.length = 0;
    const w = pgq.worker({ ...quick, concurrency: 5 });
    await w.start();
    const first = await pgq.enqueue(hold, { n: 0 });
    await until(() => started.includes(first.id), { what: 'first job started' });
    await pgq.pauseQueue('held');
    const waiting = await pgq.enqueueMany(hold, [1, 2, 3].map((n) => ({ n })));
    const q = await pgq.getQueue('held');
    expect(q).toMatchObject({ paused: true, running: 1, counts: { running: 1, available: 3 } });
    gate.open.resolve();
    expect((await pgq.waitForJob(first.id, { timeoutMs: 10_000 })).state).toBe('succeeded');
    // A claim is made (the slot freed, a NOTIFY for a new job) and takes nothing.
    await pgq.enqueue(hold, { n: 4 });
    await until(async () => (await pgq.getQueue('held')).counts.available === 4, { what: 'jobs still waiting' });
    expect(started).toEqual([first.id]);
    await pgq.resumeQueue('held');
    for (const job of waiting) expect((await pgq.waitForJob(job.id, { timeoutMs: 10_000 })).state).toBe('succeeded');
    await w.stop();
  });

  it('a worker that hears of a pause gives back the jobs of the queue it claimed ahead and has not started', async () => {
    const blocker = deferred();
    const ran: number[] = [];
    const mixed = defineTask({
      name: 'mixed',
      schema: z.object({ n: z.number().int(), block: z.boolean() }),
      queue: 'ahead',
      async handler(p) {
        ran.push(p.n);
        if (p.block) await blocker.promise;
      },
    });
    const pgq = await ctx.migrated({ tasks: [mixed] });
    const s = `"${ctx.schema}"`;
    // A long prefetchTtlMs: what is held ahead goes back at the pause, not when it ages out.
    const w = pgq.worker({ ...quick, concurrency: 2, prefetchTtlMs: 60_000 });
    await w.start();
    try {
      // Quick jobs first, so the worker knows jobs are short and claims ahead.
      const warm = await pgq.enqueueMany(mixed, Array.from({ length: 40 }, (_, n) => ({ n, block: false })));
      for (const job of warm) await pgq.waitForJob(job.id, { timeoutMs: 10_000 });
      await pgq.enqueueMany(mixed, [{ n: 100, block: true }, { n: 101, block: true }], { priority: 10 });
      await pgq.enqueueMany(mixed, Array.from({ length: 40 }, (_, n) => ({ n: 200 + n, block: false })));
      const running = async () => Number((await ctx.admin.query(`SELECT count(*) AS n FROM ${s}.jobs WHERE queue = 'ahead' AND state = 'running'`)).rows[0].n);
      // Both slots blocked, and more taken ahead: running in the table, not started.
      await until(async () => (await running()) > 2, { what: 'jobs claimed ahead of the two blocked slots' });
      const startedBefore = ran.length;
      await pgq.pauseQueue('ahead');
      await until(async () => (await running()) === 2, { timeoutMs: 5_000, what: 'the jobs held ahead given back' });
      const back = await ctx.admin.query(`SELECT count(*)::int AS n FROM ${s}.jobs WHERE queue = 'ahead' AND state = 'available' AND attempts = 0`);
      expect(back.rows[0].n).toBe(40);
      blocker.resolve();
      await until(async () => (await running()) === 0, { what: 'the blocked jobs done' });
      await new Promise((r) => setTimeout(r, 300));
      expect(ran.length).toBe(startedBefore);
    } finally {
      blocker.resolve();
      await w.stop();
    }
  });

  it('the claim itself skips a paused queue, whatever a worker has cached: a pause holds from its commit', async () => {
    const pgq = await ctx.migrated({ tasks: [hold] });
    await pgq.enqueueMany(hold, [{ n: 1 }, { n: 2 }], { queue: 'p1' });
    await pgq.enqueueMany(hold, [{ n: 3 }, { n: 4 }], { queue: 'p2' });
    const statements = createStatements(ctx.schema);
    const db = fromPg(ctx.admin);
    const workerId = 'pause-claimer';
    await statements.registerWorker(db, { workerId, hostname: 'h', pid: 1, queues: ['p1', 'p2'], concurrency: 10, rescueAfterMs: 60_000 });
    const claim = async (queues: string[]) =>
      (await statements.claimJobs(db, { queues, tasks: ['hold'], limit: 10, workerId })).map((r) => r.queue).sort();
    await pgq.pauseQueue('p1');
    await pgq.pauseQueue('p2');
    expect(await claim(['p1'])).toEqual([]);
    expect(await claim(['p1', 'p2'])).toEqual([]);
    await pgq.resumeQueue('p2');
    expect(await claim(['p1', 'p2'])).toEqual(['p2', 'p2']);
    await pgq.resumeQueue('p1');
    expect(await claim(['p1'])).toEqual(['p1', 'p1']);
  });

  it('a concurrency limit holds on one worker with room for more; a job not started by its expiry never runs', async () => {
    const pgq = await ctx.migrated({ tasks: [hold, failOnce] });
    gate.open = deferred();
    started.length = 0;
    await pgq.setQueue('held', { concurrency: 2 });
    const w = pgq.worker({ ...quick, concurrency: 10, pollIntervalMs: 50 });
    await w.start();
    const jobs = await pgq.enqueueMany(hold, [1, 2, 3, 4, 5].map((n) => ({ n })));
    await until(() => started.length === 2, { what: 'two started' });
    expect((await pgq.getQueue('held')).running).toBe(2);
    // The pause of another queue lets a job expire; raising the limit lets the rest run.
    await pgq.pauseQueue('expiring');
    const expiring = await pgq.enqueue(failOnce, {}, { expiresInMs: 200 });
    const cancelled = await pgq.waitForJob(expiring.id, { timeoutMs: 10_000 });
    expect(cancelled).toMatchObject({ state: 'cancelled', attempts: 0 });
    expect(cancelled.errors[0]!.message).toMatch(/^expired: not started by its expiry time/);
    expect(started).not.toContain(expiring.id);
    expect(started).toHaveLength(2);
    await pgq.setQueue('held', { concurrency: null });
    await until(() => started.length === 5, { what: 'the rest started once the limit was lifted' });
    gate.open.resolve();
    for (const job of jobs) expect((await pgq.waitForJob(job.id, { timeoutMs: 10_000 })).state).toBe('succeeded');

    // A retry due after the expiry never runs.
    await pgq.resumeQueue('expiring');
    const retried = await pgq.enqueue(failOnce, {}, { expiresInMs: 1_500 });
    const done = await pgq.waitForJob(retried.id, { timeoutMs: 15_000 });
    expect(done).toMatchObject({ state: 'cancelled', attempts: 1 });
    expect(done.errors.map((e) => e.message)).toEqual(['first attempt fails', expect.stringMatching(/^expired: its retry was not started by its expiry time /)]);
    expect(started.filter((id) => id === retried.id)).toHaveLength(1);
    await w.stop();
  });

  it('a queue limited to the worker\'s concurrency drains as its outcomes commit, not at the poll', async () => {
    const quickTask = defineTask({ name: 'quick', schema: z.object({ n: z.number().int() }), queue: 'full', handler: () => undefined });
    const pgq = await ctx.migrated({ tasks: [quickTask] });
    await pgq.setQueue('full', { concurrency: 10 });
    const jobs = await pgq.enqueueMany(quickTask, Array.from({ length: 200 }, (_, n) => ({ n })));
    // Each claim fills the ten slots exactly (no limit is hit, nothing to re-check): the next one must
    // follow once those outcomes are committed. Waiting for the poll instead, 20 claims take 20 minutes.
    const w = pgq.worker({ ...quick, concurrency: 10, queues: ['full'] });
    await w.start();
    try {
      for (const job of jobs) expect((await pgq.waitForJob(job.id, { timeoutMs: 30_000 })).state).toBe('succeeded');
    } finally {
      await w.stop();
    }
  });

  it('a limited queue beside an unlimited one with a backlog of quick jobs is not starved by the jobs claimed ahead for it', async () => {
    const quickTask = defineTask({ name: 'quick-5ms', schema: z.object({}), queue: 'busy', handler: () => new Promise((r) => setTimeout(r, 5)) });
    const pgq = await ctx.migrated({ tasks: [quickTask] });
    await pgq.setQueue('capped-beside', { concurrency: 5 });
    await pgq.enqueueMany(quickTask, Array.from({ length: 2_000 }, () => ({})));
    await pgq.enqueueMany(quickTask, Array.from({ length: 300 }, () => ({})), { queue: 'capped-beside' });
    const w = pgq.worker({ ...quick, concurrency: 10, queues: ['busy', 'capped-beside'] });
    await w.start();
    let done: Record<string, number>;
    try {
      await until(async () => (await pgq.getQueue('busy')).counts.available <= 1_000, { timeoutMs: 60_000, what: 'half of the busy backlog claimed' });
      const { rows } = await ctx.admin.query<{ queue: string; n: number }>(
        `SELECT queue, count(*)::int AS n FROM "${ctx.schema}".jobs WHERE state = 'succeeded' AND queue IN ('busy', 'capped-beside') GROUP BY 1`,
      );
      done = Object.fromEntries(rows.map((r) => [r.queue, r.n]));
    } finally {
      await w.stop();
    }
    // Half of the slots are the limited queue's to take. Before, the jobs the worker claimed ahead of
    // the busy queue filled every slot as it freed, and the limited queue was asked only when that
    // buffer ran dry: 5 to 26 of its jobs ran while the busy queue ran 1,000.
    expect(done['capped-beside'] ?? 0).toBeGreaterThanOrEqual(Math.floor((done.busy ?? 0) / 25));
  }, 90_000);

  it('one limited queue with a backlog below its limit beside an unlimited one leaves it a share when nothing is claimed ahead (long jobs)', async () => {
    // 300 ms jobs on 2 slots: what the full slots start within the worker's hold time is none, so nothing is
    // claimed ahead, and a claim is for the free slots only.
    const slowTask = defineTask({ name: 'slow-300ms', schema: z.object({}), queue: 'slow-free', handler: () => new Promise((r) => setTimeout(r, 300)) });
    const pgq = await ctx.migrated({ tasks: [slowTask] });
    await pgq.setQueue('slow-capped', { concurrency: 50 });
    await pgq.enqueueMany(slowTask, Array.from({ length: 10 }, () => ({})));
    await pgq.enqueueMany(slowTask, Array.from({ length: 30 }, () => ({})), { queue: 'slow-capped' });
    const w = pgq.worker({ ...quick, concurrency: 2, queues: ['slow-free', 'slow-capped'] });
    await w.start();
    let done: Record<string, number>;
    try {
      const succeeded = async () =>
        (await ctx.admin.query<{ n: number }>(`SELECT count(*)::int AS n FROM "${ctx.schema}".jobs WHERE state = 'succeeded' AND queue = 'slow-capped'`)).rows[0]!.n;
      await until(async () => (await succeeded()) >= 10, { timeoutMs: 60_000, what: 'ten of the limited queue\'s jobs run' });
      const { rows } = await ctx.admin.query<{ queue: string; n: number }>(
        `SELECT queue, count(*)::int AS n FROM "${ctx.schema}".jobs WHERE state IN ('running', 'succeeded') AND queue IN ('slow-free', 'slow-capped') GROUP BY 1`,
      );
      done = Object.fromEntries(rows.map((r) => [r.queue, r.n]));
    } finally {
      await w.stop();
    }
    // Before, the limited queue was asked first and took every free slot, and with nothing to claim ahead
    // the unlimited one got none of them until its backlog ran out: 0 of its jobs had run.
    expect(done['slow-free'] ?? 0).toBeGreaterThanOrEqual(3);
  }, 90_000);

  it('two limited queues with backlogs beside an unlimited one leave it a share of the free slots', async () => {
    const quickTask = defineTask({ name: 'quick-5ms-two', schema: z.object({}), queue: 'busy-two', handler: () => new Promise((r) => setTimeout(r, 5)) });
    const pgq = await ctx.migrated({ tasks: [quickTask] });
    await pgq.setQueue('capped-a', { concurrency: 50 });
    await pgq.setQueue('capped-b', { concurrency: 50 });
    await pgq.enqueueMany(quickTask, Array.from({ length: 2_000 }, () => ({})));
    for (const queue of ['capped-a', 'capped-b']) await pgq.enqueueMany(quickTask, Array.from({ length: 1_000 }, () => ({})), { queue });
    const w = pgq.worker({ ...quick, concurrency: 4, queues: ['busy-two', 'capped-a', 'capped-b'] });
    await w.start();
    let done: Record<string, number>;
    try {
      const waiting = async () => (await pgq.getQueue('capped-a')).counts.available + (await pgq.getQueue('capped-b')).counts.available;
      await until(async () => (await waiting()) <= 1_000, { timeoutMs: 60_000, what: 'half of the limited backlogs claimed' });
      const { rows } = await ctx.admin.query<{ queue: string; n: number }>(
        `SELECT queue, count(*)::int AS n FROM "${ctx.schema}".jobs WHERE state = 'succeeded' AND queue IN ('busy-two', 'capped-a', 'capped-b') GROUP BY 1`,
      );
      done = Object.fromEntries(rows.map((r) => [r.queue, r.n]));
    } finally {
      await w.stop();
    }
    // Before, the limited queues were always asked first and took every free slot between them, and
    // with a limited queue left unasked nothing was claimed ahead for the others: the unlimited queue
    // ran 0 jobs while they ran 1,000.
    const limitedDone = (done['capped-a'] ?? 0) + (done['capped-b'] ?? 0);
    expect(done['busy-two'] ?? 0).toBeGreaterThanOrEqual(Math.floor(limitedDone / 25));
  }, 90_000);

  it('an expired job is never claimed, even with no leader to cancel it', async () => {
    const pgq = await ctx.migrated({ tasks: [failOnce] });
    started.length = 0;
    const job = await pgq.enqueue(failOnce, {}, { queue: 'fresh', expiresAt: new Date(Date.now() + 60_000) });
    await ctx.admin.query(`UPDATE "${ctx.schema}".jobs SET expires_at = now() - interval '1 second' WHERE id = $1`, [job.id]);
    const sentinel = await pgq.enqueue(failOnce, {}, { queue: 'fresh', maxAttempts: 1 });
    const w = pgq.worker({ ...quick, queues: ['fresh'], leader: false, pollIntervalMs: 50 });
    await w.start();
    await pgq.waitForJob(sentinel.id, { timeoutMs: 10_000 });
    expect(started).toEqual([sentinel.id]);
    expect((await pgq.getJob(job.id))?.state).toBe('available');
    await w.stop();
  });

  it('enqueue options: concurrencyKey and expiry from the task or the call, validated', async () => {
    const pgq = await ctx.migrated({ tasks: [tenant] });
    const a = await pgq.enqueue(tenant, { tenant: '42' });
    expect(a.concurrencyKey).toBe('tenant:42');
    expect(a.expiresAt!.getTime() - a.createdAt.getTime()).toBeCloseTo(3_600_000, -3);
    const at = new Date(Date.now() + 60_000);
    const b = await pgq.enqueue(tenant, { tenant: '42' }, { concurrencyKey: 'vip', expiresAt: at });
    expect(b).toMatchObject({ concurrencyKey: 'vip', expiresAt: at });
    await expect(pgq.enqueue(tenant, { tenant: '1' }, { concurrencyKey: '' })).rejects.toThrow(/options\.concurrencyKey: must not be empty/);
    await expect(pgq.enqueue(tenant, { tenant: '1' }, { expiresInMs: 0 })).rejects.toThrow(/options\.expiresInMs: must be at least 1/);
    await expect(pgq.enqueue(tenant, { tenant: '1' }, { expiresAt: at, expiresInMs: 5 })).rejects.toThrow(/expiresAt or expiresInMs, not both/);
    await expect(pgq.enqueue(tenant, { tenant: '1' }, { delayMs: 5_000, expiresInMs: 1_000 })).rejects.toThrow(/must be more than delayMs/);
    // Jobs that could never start before they expire, however the two times are given (the task's expiry is an hour).
    await expect(pgq.enqueue(tenant, { tenant: '1' }, { delayMs: 7_200_000 })).rejects.toThrow(/task tenant's expiresInMs: is 3600000 ms, not more than the job's wait/);
    await expect(pgq.enqueue(tenant, { tenant: '1' }, { runAt: new Date(Date.now() + 7_200_000), expiresInMs: 3_600_000 })).rejects.toThrow(/options\.expiresInMs: .*could never run/);
    await expect(pgq.enqueue(tenant, { tenant: '1' }, { delayMs: 3_600_000, expiresAt: new Date(Date.now() + 600_000) })).rejects.toThrow(/options\.expiresAt: .*could never run/);
    await expect(pgq.enqueue(tenant, { tenant: '1' }, { expiresAt: new Date(Date.now() - 1_000) })).rejects.toThrow(/options\.expiresAt: .*\(now\): the job could never run/);
    await expect(pgq.enqueue(tenant, { tenant: '1' }, { runAt: new Date(Date.now() - 86_400_000), expiresAt: new Date(Date.now() - 3_600_000) })).rejects.toThrow(/options\.expiresAt: .*could never run/);
    await expect(pgq.enqueueMany(tenant, [{ tenant: '1' }], { delayMs: 7_200_000 })).rejects.toThrow(/could never run/);
    await expect(pgq.enqueue(tenant, { tenant: 'x'.repeat(300) })).rejects.toThrow(/concurrencyKey\(payload\): must be at most 200/);
    expect(() => defineTask({ name: 'bad', schema: z.object({}), concurrencyKey: 'k' as never, handler: () => undefined })).toThrow(/must be a function/);
    const { rows } = await ctx.admin.query(`SELECT count(*)::int AS n FROM "${ctx.schema}".jobs WHERE task = 'tenant'`);
    expect(rows[0].n).toBe(2);
  });
});

describe('the limited claim statement', () => {
  const limitedTask = ['lim'];
  /** `jobs` jobs of task lim in queue `queue` (spread over `keys` concurrency keys), and a worker with a live lease. */
  async function setUp(queue: string, workerId: string, jobs: number, keys?: number): Promise<ReturnType<typeof createQueueStatements>> {
    await ctx.migrated();
    const s = `"${ctx.schema}"`;
    await ctx.admin.query(
      `INSERT INTO ${s}.jobs (task, queue, payload, concurrency_key)
       SELECT 'lim', $3, '{}', CASE WHEN $2::int IS NULL THEN NULL ELSE 'k' || (g % $2::int) END FROM generate_series(1, $1::int) g`,
      [jobs, keys ?? null, queue],
    );
    await createStatements(ctx.schema).registerWorker(fromPg(ctx.admin), {
      workerId, hostname: 'h', pid: 1, queues: [queue], concurrency: 50, rescueAfterMs: 60_000,
    });
    return createQueueStatements(ctx.schema);
  }

  /** A queue gate over `queues` of `pgq`'s schema, with no LISTEN connection; `wake` counts its wakes. */
  function gateOver(queues: string[], pgq: Pgq, qs: ReturnType<typeof createQueueStatements>, wake: () => void): QueueGate {
    return new QueueGate(queues, {
      kysely: pgq.kysely,
      statements: createStatements(ctx.schema),
      queueStatements: qs,
      listener: new Listener(null, defaultLogger()),
      channels: channelNames(ctx.schema),
      logger: defaultLogger(),
      wake,
    });
  }

  it('claims fired at once from eight connections take exactly the room a concurrency limit leaves', async () => {
    const qs = await setUp('lim8', 'w8', 50);
    await ctx.pgq().setQueue('lim8', { concurrency: 3 });
    const clients = Array.from({ length: 8 }, () => new pg.Client({ connectionString: ctx.url }));
    try {
      await Promise.all(clients.map((c) => c.connect()));
      const claims = await Promise.all(clients.map((c) => qs.claimLimited(fromPg(c), { queue: 'lim8', tasks: limitedTask, limit: 10, workerId: 'w8' })));
      expect(claims.reduce((n, c) => n + c.claimed.length, 0)).toBe(3);
      // Each saw jobs left waiting behind the limit: its worker looks again.
      expect(claims.every((c) => c.waiting && c.tokenMs === null)).toBe(true);
    } finally {
      await Promise.all(clients.map((c) => c.end()));
    }
  });

  it('a claim waiting for the queue\'s row sees what the holder claimed before it committed', async () => {
    const qs = await setUp('limwait', 'wait', 20);
    await ctx.pgq().setQueue('limwait', { concurrency: 3 });
    const s = `"${ctx.schema}"`;
    const holder = await ctx.admin.connect();
    try {
      // Another claim holds the row and marks two jobs running...
      await holder.query('BEGIN');
      await holder.query(`SELECT 1 FROM ${s}.queues WHERE name = 'limwait' FOR UPDATE`);
      const claim = qs.claimLimited(fromPg(ctx.admin), { queue: 'limwait', tasks: limitedTask, limit: 10, workerId: 'wait' });
      await until(async () => {
        const { rows } = await ctx.admin.query(`SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%claim_limited%'`);
        return rows.length > 0;
      }, { what: 'the claim waiting for the row' });
      const { rows: ids } = await ctx.admin.query<{ id: string }>(`SELECT id FROM ${s}.jobs WHERE queue = 'limwait' ORDER BY id`);
      await holder.query(`UPDATE ${s}.jobs SET state = 'running', attempts = 1, started_at = now(), worker_id = 'other' WHERE id IN ($1, $2)`, [ids[0]!.id, ids[1]!.id]);
      await holder.query('COMMIT');
      // ...so the claim, started before that commit, finds room for one (with the statement's own snapshot it would take three).
      const { claimed } = await claim;
      expect(claimed.map((r) => r.id)).toEqual([ids[2]!.id]);
      const { rows } = await ctx.admin.query(`SELECT count(*)::int AS n FROM ${s}.jobs WHERE queue = 'limwait' AND state = 'running'`);
      expect(rows[0].n).toBe(3);
    } finally {
      holder.release();
    }
  });

  it('a claim whose free slots one limited queue filled claims again once outcomes commit: the other queue was not asked', async () => {
    const qs = await setUp('gate-a', 'gate', 10);
    await ctx.admin.query(`INSERT INTO "${ctx.schema}".jobs (task, queue, payload) SELECT 'lim', 'gate-b', '{}' FROM generate_series(1, 5)`);
    const pgq = ctx.pgq();
    await pgq.setQueue('gate-a', { concurrency: 10 });
    await pgq.setQueue('gate-b', { concurrency: 10 });
    let wakes = 0;
    const gate = gateOver(['gate-a', 'gate-b'], pgq, qs, () => (wakes += 1));
    await gate.refresh();
    // Ten free slots: gate-a, asked first, fills them and has nothing left waiting; gate-b is not asked.
    const rows = await gate.claim(fromPg(ctx.admin), { queues: ['gate-a', 'gate-b'], tasks: limitedTask, limit: 20, startable: 10, workerId: 'gate' });
    expect(rows.map((r) => r.queue)).toEqual(Array(10).fill('gate-a'));
    wakes = 0;
    gate.outcomesCommitted();
    expect(wakes).toBe(1);
  });

  it('a later claim\'s 50 ms recheck is not put off by an earlier one armed for a rate limit\'s token (an hour)', async () => {
    const qs = await setUp('gate-r', 'gate2', 2);
    const s = `"${ctx.schema}"`;
    await ctx.admin.query(
      `INSERT INTO ${s}.jobs (task, queue, payload, state, attempts, started_at, worker_id) VALUES ('lim', 'gate-c', '{}', 'running', 1, now(), 'other')`,
    );
    await ctx.admin.query(`INSERT INTO ${s}.jobs (task, queue, payload) VALUES ('lim', 'gate-c', '{}')`);
    const pgq = ctx.pgq();
    await pgq.setQueue('gate-r', { rateLimit: { limit: 1, periodMs: 3_600_000 } });
    await pgq.setQueue('gate-c', { concurrency: 1 });
    let wakes = 0;
    const gate = gateOver(['gate-r', 'gate-c'], pgq, qs, () => (wakes += 1));
    await gate.refresh();
    wakes = 0; // the settings read, a change: woken once
    try {
      const claim = (queue: string) => gate.claim(fromPg(ctx.admin), { queues: [queue], tasks: limitedTask, limit: 5, startable: 5, workerId: 'gate2' });
      // The rate-limited queue: one job now, the next a token (an hour) later.
      expect((await claim('gate-r')).map((r) => r.queue)).toEqual(['gate-r']);
      // The concurrency-limited one: full, a job waiting: look again in 50 ms.
      expect(await claim('gate-c')).toEqual([]);
      await until(() => wakes > 0, { timeoutMs: 2_000, what: 'the 50 ms recheck' });
    } finally {
      await gate.stop();
    }
  });

  it('per key: one claim gives every key the slots it has left, however deep the backlog of a key ahead of the others', async () => {
    // Ten keys of 20 jobs each, inserted key by key: claim order meets k0's twenty first.
    const qs = await setUp('limfill', 'fill', 0);
    const s = `"${ctx.schema}"`;
    await ctx.admin.query(`INSERT INTO ${s}.jobs (task, queue, payload, concurrency_key) SELECT 'lim', 'limfill', '{}', 'k' || (g / 20) FROM generate_series(0, 199) g ORDER BY g`);
    await ctx.pgq().setQueue('limfill', { keyConcurrency: 1 });
    const db = fromPg(ctx.admin);
    const first = await qs.claimLimited(db, { queue: 'limfill', tasks: limitedTask, limit: 10, workerId: 'fill' });
    expect(first.claimed.map((r) => r.concurrency_key).sort()).toEqual(Array.from({ length: 10 }, (_, k) => `k${k}`).sort());

    // One key with a backlog of 500 ahead (two slots), nine keys of one job behind it.
    await ctx.admin.query(`DELETE FROM ${s}.jobs WHERE queue = 'limfill'`);
    await ctx.pgq().setQueue('limfill', { keyConcurrency: 2 });
    await ctx.admin.query(`INSERT INTO ${s}.jobs (task, queue, payload, concurrency_key) SELECT 'lim', 'limfill', '{}', 'deep' FROM generate_series(1, 500)`);
    await ctx.admin.query(`INSERT INTO ${s}.jobs (task, queue, payload, concurrency_key) SELECT 'lim', 'limfill', '{}', 'k' || g FROM generate_series(1, 9) g`);
    const second = await qs.claimLimited(db, { queue: 'limfill', tasks: limitedTask, limit: 10, workerId: 'fill' });
    const keys = second.claimed.map((r) => r.concurrency_key!);
    expect(keys.filter((k) => k === 'deep')).toHaveLength(2);
    expect(new Set(keys.filter((k) => k !== 'deep')).size).toBe(8);
    expect(second.waiting).toBe(true);
  });

  it('a claim that waited for the queue\'s row does not start a job that expired meanwhile', async () => {
    const qs = await setUp('limexp', 'exp', 0);
    const s = `"${ctx.schema}"`;
    await ctx.pgq().setQueue('limexp', { concurrency: 5 });
    await ctx.admin.query(`INSERT INTO ${s}.jobs (task, queue, payload, expires_at) VALUES ('lim', 'limexp', '{}', now() + interval '1 second')`);
    const holder = await ctx.admin.connect();
    try {
      await holder.query('BEGIN');
      await holder.query(`SELECT 1 FROM ${s}.queues WHERE name = 'limexp' FOR UPDATE`);
      const claim = qs.claimLimited(fromPg(ctx.admin), { queue: 'limexp', tasks: limitedTask, limit: 5, workerId: 'exp' });
      await until(async () => {
        const { rows } = await ctx.admin.query(`SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%claim_limited%'`);
        return rows.length > 0;
      }, { what: 'the claim waiting for the row' });
      // The job expires while the claim waits.
      await until(async () => (await ctx.admin.query(`SELECT 1 FROM ${s}.jobs WHERE queue = 'limexp' AND expires_at < clock_timestamp()`)).rows.length > 0, { what: 'the expiry' });
      await holder.query('COMMIT');
      expect(await claim).toEqual({ claimed: [], waiting: false, tokenMs: null });
      expect((await ctx.admin.query(`SELECT state FROM ${s}.jobs WHERE queue = 'limexp'`)).rows).toEqual([{ state: 'available' }]);
    } finally {
      holder.release();
    }
  });

  it('a rate limit changed with plain SQL starts a full bucket, as one set with setQueue does', async () => {
    const qs = await setUp('limsql', 'sql', 120);
    const s = `"${ctx.schema}"`;
    const db = fromPg(ctx.admin);
    const claim = () => qs.claimLimited(db, { queue: 'limsql', tasks: limitedTask, limit: 50, workerId: 'sql' });
    await ctx.pgq().setQueue('limsql', { rateLimit: { limit: 1, periodMs: 3_600_000 } });
    expect((await claim()).claimed).toHaveLength(1);
    expect((await claim()).claimed).toHaveLength(0);
    await ctx.admin.query(`UPDATE ${s}.queues SET rate_limit = 100, rate_period_ms = 60000 WHERE name = 'limsql'`);
    expect((await claim()).claimed).toHaveLength(50);
    // The same limit written again keeps the bucket (50 tokens left, not 100).
    await ctx.admin.query(`UPDATE ${s}.queues SET rate_limit = 100, rate_period_ms = 60000 WHERE name = 'limsql'`);
    expect((await claim()).claimed).toHaveLength(50);
    expect((await claim()).claimed.length).toBeLessThan(2);
  });

  it('says nothing is waiting when what is left is of tasks the worker does not run or expired (no look again every 50 ms); a full key still counts', async () => {
    const qs = await setUp('limleft', 'left', 0);
    await ctx.pgq().setQueue('limleft', { concurrency: 5, keyConcurrency: 1 });
    const s = `"${ctx.schema}"`;
    const db = fromPg(ctx.admin);
    const claim = () => qs.claimLimited(db, { queue: 'limleft', tasks: limitedTask, limit: 10, workerId: 'left' });
    await ctx.admin.query(
      `INSERT INTO ${s}.jobs (task, queue, payload, concurrency_key, expires_at) VALUES
         ('other-task', 'limleft', '{}', NULL, NULL),
         ('lim', 'limleft', '{}', NULL, now() - interval '1 second'),
         ('lim', 'limleft', '{}', 'k', NULL)`,
    );
    // The one job of key k is taken; the rest wait for nobody this worker is.
    expect(await claim()).toMatchObject({ waiting: false });
    expect((await ctx.admin.query(`SELECT count(*)::int AS n FROM ${s}.jobs WHERE queue = 'limleft' AND state = 'running'`)).rows[0].n).toBe(1);
    expect(await claim()).toEqual({ claimed: [], waiting: false, tokenMs: null });
    // Another job of key k waits for the key: it counts (the running one's outcome frees it, and the worker claims then).
    await ctx.admin.query(`INSERT INTO ${s}.jobs (task, queue, payload, concurrency_key) VALUES ('lim', 'limleft', '{}', 'k')`);
    expect(await claim()).toEqual({ claimed: [], waiting: true, tokenMs: null });
  });

  it('a queue held back by its concurrency limit, with tokens left, gives no token time (the worker looked again a token later: 36 s for 100 an hour)', async () => {
    const qs = await setUp('limboth', 'both', 5);
    await ctx.pgq().setQueue('limboth', { concurrency: 1, rateLimit: { limit: 100, periodMs: 3_600_000 } });
    const db = fromPg(ctx.admin);
    const claim = () => qs.claimLimited(db, { queue: 'limboth', tasks: limitedTask, limit: 10, workerId: 'both' });
    const first = await claim();
    expect(first.claimed).toHaveLength(1);
    expect(first).toMatchObject({ waiting: true, tokenMs: null });
    expect(await claim()).toEqual({ claimed: [], waiting: true, tokenMs: null });
    // Half a token left, the concurrency free: the time until a whole one.
    await ctx.admin.query(`UPDATE "${ctx.schema}".jobs SET state = 'succeeded' WHERE queue = 'limboth' AND state = 'running'`);
    await ctx.admin.query(`UPDATE "${ctx.schema}".queues SET rate_tokens = 0.5, rate_refilled_at = now() WHERE name = 'limboth'`);
    const half = await claim();
    expect(half).toMatchObject({ claimed: [], waiting: true });
    expect(half.tokenMs).toBeGreaterThan(15_000);
    expect(half.tokenMs).toBeLessThanOrEqual(18_000);
  });

  it('holds a concurrency limit under a default isolation of repeatable read: claims of different tasks begun together fill the room once (8 took 24 of 3)', async () => {
    const queue = 'limrr';
    const qs = await setUp(queue, 'rr', 0);
    const s = `"${ctx.schema}"`;
    const tasks = Array.from({ length: 8 }, (_, i) => `rr${i}`);
    await ctx.admin.query(`INSERT INTO ${s}.jobs (task, queue, payload) SELECT 'rr' || (g % 8), $1, '{}' FROM generate_series(0, 79) g`, [queue]);
    await ctx.pgq().setQueue(queue, { concurrency: 3 });
    const url = new URL(ctx.url);
    url.searchParams.set('options', '-c default_transaction_isolation=repeatable\\ read');
    const clients = tasks.map(() => new pg.Client({ connectionString: url.toString() }));
    const holder = await ctx.admin.connect();
    try {
      await Promise.all(clients.map((c) => c.connect()));
      expect((await clients[0]!.query('SHOW transaction_isolation')).rows[0].transaction_isolation).toBe('repeatable read');
      // The queue's row held: every claim takes its snapshot, then waits for the row.
      await holder.query('BEGIN');
      await holder.query(`SELECT 1 FROM ${s}.queues WHERE name = $1 FOR UPDATE`, [queue]);
      const claims = clients.map((c, i) => retryConflicts(() => qs.claimLimited(fromPg(c), { queue, tasks: [tasks[i]!], limit: 10, workerId: 'rr' })));
      await ctx.lockWaiters(8, 'the eight claims to wait for the queue row');
      await holder.query('COMMIT');
      const claimed = (await Promise.all(claims)).reduce((n, c) => n + c.claimed.length, 0);
      const { rows } = await ctx.admin.query(`SELECT count(*)::int AS n FROM ${s}.jobs WHERE queue = $1 AND state = 'running'`, [queue]);
      expect(rows[0].n).toBe(3);
      expect(claimed).toBe(3);
    } finally {
      await holder.query('ROLLBACK').catch(() => undefined);
      holder.release();
      await Promise.all(clients.map((c) => c.end()));
    }
  });

  it('per key and rate: the room each key has left, one token a start, and nothing for a lost lease or a paused queue', async () => {
    const qs = await setUp('limkeys', 'keys', 40, 4);
    const pgq = ctx.pgq();
    await pgq.setQueue('limkeys', { keyConcurrency: 2, rateLimit: { limit: 6, periodMs: 60_000 } });
    const s = `"${ctx.schema}"`;
    const db = fromPg(ctx.admin);
    const first = await qs.claimLimited(db, { queue: 'limkeys', tasks: limitedTask, limit: 20, workerId: 'keys' });
    // Four keys at two each would be 8; the bucket holds 6.
    expect(first.claimed).toHaveLength(6);
    // The bucket ran out: the time until it holds a whole token again (a few ms of refill since).
    expect(first.tokenMs).toBeGreaterThan(9_000);
    expect(first.tokenMs).toBeLessThanOrEqual(10_000);
    const perKey = new Map<string, number>();
    for (const r of first.claimed) perKey.set(r.concurrency_key!, (perKey.get(r.concurrency_key!) ?? 0) + 1);
    expect(Math.max(...perKey.values())).toBe(2);
    const { rows: bucket } = await ctx.admin.query(`SELECT rate_tokens FROM ${s}.queues WHERE name = 'limkeys'`);
    expect(bucket[0].rate_tokens).toBeLessThan(1);
    const empty = await qs.claimLimited(db, { queue: 'limkeys', tasks: limitedTask, limit: 20, workerId: 'keys' });
    expect(empty).toMatchObject({ claimed: [], waiting: true });
    expect(empty.tokenMs).toBeGreaterThan(9_000);
    expect(empty.tokenMs).toBeLessThanOrEqual(10_000);
    await pgq.setQueue('limkeys', { rateLimit: null });
    // The keys: two at their limit, two with one slot left.
    expect((await qs.claimLimited(db, { queue: 'limkeys', tasks: limitedTask, limit: 20, workerId: 'keys' })).claimed).toHaveLength(2);
    await ctx.admin.query(`UPDATE ${s}.jobs SET state = 'succeeded' WHERE queue = 'limkeys' AND state = 'running'`);
    expect((await qs.claimLimited(db, { queue: 'limkeys', tasks: limitedTask, limit: 20, workerId: 'nobody' })).claimed).toEqual([]);
    await pgq.pauseQueue('limkeys');
    expect(await qs.claimLimited(db, { queue: 'limkeys', tasks: limitedTask, limit: 20, workerId: 'keys' })).toEqual({ claimed: [], waiting: false, tokenMs: null });
  });
});

describe('pgq queues', () => {
  it('lists, pauses, resumes and sets limits; bad input exits 1 and changes nothing', async () => {
    await ctx.migrated();
    // The built binary, as cli.test.ts runs it (npm test builds first).
    const cli = (...args: string[]) => {
      const r = spawnSync(process.execPath, [path.join(root, 'dist/cli/bin.js'), '--database-url', ctx.url, '--schema', ctx.schema, ...args], {
        env: { ...process.env, PGQ_LOG_LEVEL: 'warn' },
        cwd: root,
        encoding: 'utf8',
        timeout: 60_000,
      });
      return { code: r.status, stdout: r.stdout, stderr: r.stderr };
    };
    expect(cli('queues', 'set', 'mail', '--concurrency', '3', '--rate', '100/1m', '--key-concurrency', '2')).toMatchObject({ code: 0 });
    expect(cli('queues', 'pause', 'mail').stdout).toMatch(/paused queue mail/);
    expect(cli('queues', 'list').stdout).toMatch(/mail\s+paused\s+3\s+100\/1m\s+2/);
    const before = (await ctx.admin.query(`SELECT * FROM "${ctx.schema}".queues WHERE name = 'mail'`)).rows;
    for (const args of [['--concurrency', '0'], ['--rate', '10/0ms'], ['--rate', '100/1M']]) { // 1M: not a minute, refused
      const bad = cli('queues', 'set', 'mail', ...args);
      expect(bad.code).toBe(1);
      expect(bad.stderr).toMatch(/must/);
    }
    // A limit given twice is refused (commander kept the last one and said nothing).
    for (const flag of ['--concurrency', '--key-concurrency']) {
      const twice = cli('queues', 'set', 'mail', flag, '5', flag, '50');
      expect(twice.code).toBe(1);
      expect(twice.stderr).toMatch(new RegExp(`${flag} is given twice`));
    }
    const rateTwice = cli('queues', 'set', 'mail', '--rate', 'none', '--rate', '5/s');
    expect(rateTwice.code).toBe(1);
    expect(rateTwice.stderr).toMatch(/--rate is given twice/);
    expect((await ctx.admin.query(`SELECT * FROM "${ctx.schema}".queues WHERE name = 'mail'`)).rows).toEqual(before);
    expect(cli('queues', 'resume', 'mail').stdout).toMatch(/resumed queue mail/);
    const set = cli('--json', 'queues', 'set', 'mail', '--rate', 'none', '--concurrency', 'none');
    expect(set.stderr).toBe('');
    const json = JSON.parse(set.stdout) as Record<string, unknown>;
    expect(json).toMatchObject({ name: 'mail', paused: false, concurrency: null, rateLimit: null, keyConcurrency: 2 });
  }, 180_000);
});
