import { AssertionError } from 'node:assert';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { chain, defineTask, step, JobTimeoutError, PermanentError, SnoozeError, ValidationError, type Middleware } from '../src/index.js';
import { assertEnqueued, drain, performJob, refuteEnqueued } from '../src/testing/index.js';
import { deferred, useTestSchema } from './support/harness.js';

const ctx = useTestSchema('testing');

const double = defineTask({
  name: 'double',
  schema: z.object({ n: z.number().int() }),
  handler: (p) => ({ doubled: p.n * 2 }),
});

// Fails its first two attempts, with a backoff a test must not wait for.
const flaky = defineTask({
  name: 'flaky',
  schema: z.object({ id: z.string() }),
  maxAttempts: 5,
  backoff: { baseMs: 3_600_000, maxMs: 3_600_000 },
  handler: (_p, c) => {
    if (c.attempt < 3) throw new Error(`attempt ${c.attempt} fails`);
    return { attempt: c.attempt };
  },
});

const broken = defineTask({
  name: 'broken',
  schema: z.object({}),
  handler: () => {
    throw new PermanentError('invalid payload');
  },
});

const email = defineTask({
  name: 'email',
  schema: z.object({ to: z.string(), subject: z.string(), tags: z.array(z.string()).optional() }),
  queue: 'emails',
  handler: () => undefined,
});

describe('drain', () => {
  it('runs every due job to a final state, retries at once, and counts', async () => {
    const pgq = await ctx.migrated({ tasks: [double, flaky, broken] });
    const a = await pgq.enqueue(double, { n: 2 });
    const b = await pgq.enqueue(flaky, { id: 'x' });
    const c = await pgq.enqueue(broken, {});
    const later = await pgq.enqueue(double, { n: 9 }, { delayMs: 3_600_000 });
    const result = await drain(pgq);
    expect(result).toEqual({ processed: 5, succeeded: 2, retried: 2, failed: 1 });
    expect((await pgq.getJob(a.id))).toMatchObject({ state: 'succeeded', result: { doubled: 4 } });
    expect((await pgq.getJob(b.id))).toMatchObject({ state: 'succeeded', attempts: 3, result: { attempt: 3 } });
    expect((await pgq.getJob(c.id))?.state).toBe('failed');
    expect((await pgq.getJob(later.id))?.state).toBe('scheduled');
    expect(await drain(pgq)).toEqual({ processed: 0, succeeded: 0, retried: 0, failed: 0 });
  });

  it('runs the later steps of a workflow as their parents finish', async () => {
    const pgq = await ctx.migrated({ tasks: [double] });
    const wf = await pgq.enqueueWorkflow(chain(step(double, { n: 1 }), step(double, { n: 3 })));
    const result = await drain(pgq);
    expect(result.succeeded).toBe(2);
    expect((await pgq.getWorkflow(wf.id))?.state).toBe('succeeded');
  });

  it('only drains the queues it is given, and stops after maxJobs', async () => {
    const pgq = await ctx.migrated({ tasks: [double, email] });
    const mail = await pgq.enqueue(email, { to: 'a', subject: 's' });
    for (let n = 0; n < 5; n++) await pgq.enqueue(double, { n });
    const some = await drain(pgq, { queues: ['default'], maxJobs: 2 });
    expect(some.processed).toBe(2);
    const rest = await drain(pgq, { queues: ['default'] });
    expect(some.processed + rest.processed).toBe(5);
    expect((await pgq.getJob(mail.id))?.state).toBe('available');
    await expect(drain(pgq, { maxJobs: 0 })).rejects.toThrow(/maxJobs/);
  });

  it("also drains the queues its tasks' jobs wait in (a queue given at enqueue, a workflow step's), and leaves a paused queue's jobs, as not due", async () => {
    const pgq = await ctx.migrated({ tasks: [double] });
    // Both were left available, and drain resolved as if done.
    const elsewhere = await pgq.enqueue(double, { n: 1 }, { queue: 'other' });
    const wf = await pgq.enqueueWorkflow(chain(step(double, { n: 2 }), step(double, { n: 3 }).with({ queue: 'images' })));
    expect(await drain(pgq)).toMatchObject({ succeeded: 3, failed: 0 });
    expect((await pgq.getJob(elsewhere.id))?.state).toBe('succeeded');
    expect((await pgq.getWorkflow(wf.id))?.state).toBe('succeeded');
    // A paused queue's job waited out the whole timeout, then drain said "1 job(s) still to run".
    await pgq.pauseQueue('default');
    const paused = await pgq.enqueue(double, { n: 4 });
    expect(await drain(pgq, { timeoutMs: 5_000 })).toEqual({ processed: 0, succeeded: 0, retried: 0, failed: 0 });
    expect((await pgq.getJob(paused.id))?.state).toBe('available');
    await pgq.resumeQueue('default');
    expect(await drain(pgq)).toMatchObject({ succeeded: 1 });
  });

  it('rejects at its timeout even while a handler ignores its signal and never settles', async () => {
    const gate = deferred();
    const deaf = defineTask({ name: 'deaf', schema: z.object({}), handler: () => gate.promise });
    const pgq = await ctx.migrated({ tasks: [deaf] });
    await pgq.enqueue(deaf, {});
    const outcome = await Promise.race([
      drain(pgq, { timeoutMs: 300 }).then(() => 'resolved', (err: unknown) => (err as { code?: string }).code),
      new Promise((resolve) => setTimeout(() => resolve('hung'), 15_000)),
    ]);
    expect(outcome).toBe('PGQ_DRAIN_TIMEOUT');
    gate.resolve(); // the handler settles: its worker stops
  });

  it('times out on a rate-limited queue as a worker waits on it, naming the limit', async () => {
    const pgq = await ctx.migrated({ tasks: [double] });
    await pgq.setQueue(double.queue, { rateLimit: { limit: 1, periodMs: 60_000 } });
    try {
      await pgq.enqueueMany(double, [{ n: 1 }, { n: 2 }]);
      await expect(drain(pgq, { timeoutMs: 1_000 })).rejects.toThrow(
        new RegExp(`drain: 1 job\\(s\\) still to run after 1000 ms \\(rate-limited, as under a worker: queue ${double.queue}; lift the limit`),
      );
      await pgq.setQueue(double.queue, { rateLimit: null });
      expect(await drain(pgq)).toMatchObject({ processed: 1, succeeded: 1 });
    } finally {
      await pgq.setQueue(double.queue, { rateLimit: null });
    }
  });

  it('ends a job past its expiry cancelled, as the expirer would, instead of waiting for it until the timeout; a bad timeoutMs is refused', async () => {
    const pgq = await ctx.migrated({ tasks: [double, flaky] });
    // Alone (no other job's end to wake it), waited for since before it expired (the waiter has looked and
    // waits): woken by the expirer's NOTIFY, before waitForJob's next look 5 s after its first.
    const alone = await pgq.enqueue(double, { n: 0 }, { expiresInMs: 1_500 });
    const waitedAlone = pgq.waitForJob(alone.id, { timeoutMs: 30_000 });
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    expect(await drain(pgq, { timeoutMs: 10_000 })).toEqual({ processed: 0, succeeded: 0, retried: 0, failed: 0 });
    const woken = await Promise.race([waitedAlone.then((j) => j.state), new Promise((resolve) => setTimeout(() => resolve('not woken'), 2_000))]);
    expect(woken).toBe('cancelled');
    const expired = await pgq.enqueue(double, { n: 1 }, { expiresInMs: 50 });
    // A retry due after its expiry: drain makes retries due at once, and the claim still skips it.
    const retry = await pgq.enqueue(flaky, { id: 'r' }, { expiresInMs: 60_000 });
    await pgq.kysely.updateTable('jobs').set({ state: 'retryable', attempts: 1, expires_at: new Date(Date.now() - 1_000) }).where('id', '=', retry.id).execute();
    await new Promise((resolve) => setTimeout(resolve, 100));
    const fresh = await pgq.enqueue(double, { n: 2 });
    expect(await drain(pgq, { timeoutMs: 10_000 })).toEqual({ processed: 1, succeeded: 1, retried: 0, failed: 0 });
    expect(await pgq.getJob(expired.id)).toMatchObject({ state: 'cancelled', errors: [{ message: expect.stringMatching(/^expired: not started by its expiry time/) }] });
    expect((await pgq.getJob(retry.id))?.state).toBe('cancelled');
    expect((await pgq.getJob(fresh.id))?.state).toBe('succeeded');
    for (const timeoutMs of [Number.NaN, -1, Infinity, '5' as never]) {
      await expect(drain(pgq, { timeoutMs })).rejects.toThrow(/drain: timeoutMs must be a number of milliseconds >= 0/);
    }
  });
});

describe('assertEnqueued / refuteEnqueued', () => {
  it('matches waiting jobs by a partial payload and shows a diff when none matches', async () => {
    const pgq = await ctx.migrated({ tasks: [email] });
    await refuteEnqueued(pgq, email, { to: 'a@b.c' });
    await pgq.enqueue(email, { to: 'a@b.c', subject: 'hello', tags: ['x'] });
    const job = await assertEnqueued(pgq, email, { to: 'a@b.c' });
    expect(job.payload).toMatchObject({ subject: 'hello' });
    await assertEnqueued(pgq, 'email', { tags: ['x'] }, { queue: 'emails' });
    await refuteEnqueued(pgq, email, { to: 'other@b.c' });

    const miss = await assertEnqueued(pgq, email, { to: 'a@b.c', subject: 'bye' }).catch((e: unknown) => e);
    expect(miss).toBeInstanceOf(AssertionError);
    expect((miss as AssertionError).message).toMatch(/expected a job of task email with a payload matching .*"subject":"bye"[\s\S]*\n  job \d+ \(available, queue emails\): .*"hello"/);
    expect((miss as AssertionError).actual).toEqual({ to: 'a@b.c', subject: 'hello' });
    expect((miss as AssertionError).expected).toEqual({ to: 'a@b.c', subject: 'bye' });
    await expect(assertEnqueued(pgq, email, { to: 'a@b.c' }, { queue: 'other' })).rejects.toThrow(/no job of task email is enqueued in queue "other"/);
    await expect(refuteEnqueued(pgq, email, { to: 'a@b.c' })).rejects.toThrow(/expected no job of task email .* job \d+ \(available, queue emails\)/);
  });

  it('compares the match as payloads are stored, through JSON: a Date matches its ISO string; a value that is not JSON is refused by name', async () => {
    const reminder = defineTask({ name: 'reminder', schema: z.object({ at: z.coerce.date(), note: z.string().optional() }), handler: () => undefined });
    const pgq = await ctx.migrated({ tasks: [reminder] });
    const at = new Date('2030-01-02T03:04:05.678Z');
    await pgq.enqueue(reminder, { at });
    const job = await assertEnqueued(pgq, reminder, { at });
    expect(job.payload).toEqual({ at: '2030-01-02T03:04:05.678Z' });
    await assertEnqueued(pgq, reminder, { at, note: undefined });
    await refuteEnqueued(pgq, reminder, { at: new Date('2030-01-02T03:04:05.679Z') });
    await expect(refuteEnqueued(pgq, reminder, { at })).rejects.toThrow(/expected no job of task reminder/);
    await expect(assertEnqueued(pgq, reminder, { at: 1n } as never)).rejects.toMatchObject({ name: 'ValidationError', message: expect.stringMatching(/payloadMatch/) });
  });

  it('with no payloadMatch, finds any waiting job of the task, whatever its payload (a number, an array)', async () => {
    const add = defineTask({ name: 'add-one', schema: z.number(), handler: (n) => n + 1 });
    const pgq = await ctx.migrated({ tasks: [add] });
    await refuteEnqueued(pgq, add);
    await expect(assertEnqueued(pgq, add)).rejects.toThrow(/^expected a job of task add-one; no job of task add-one is enqueued$/);
    const job = await pgq.enqueue(add, 5);
    // The match defaulted to {}, which only an object payload contains: refuteEnqueued passed while the job waited.
    await expect(refuteEnqueued(pgq, add)).rejects.toThrow(new RegExp(`^expected no job of task add-one; job ${job.id} \\(available, queue default\\) has 5$`));
    expect((await assertEnqueued(pgq, add)).id).toBe(job.id);
    await assertEnqueued(pgq, add, 5);
    await refuteEnqueued(pgq, add, 6);
  });

  it('no longer counts a job once it has run', async () => {
    const pgq = await ctx.migrated({ tasks: [email] });
    await pgq.enqueue(email, { to: 'done@b.c', subject: 's' });
    await assertEnqueued(pgq, email, { to: 'done@b.c' });
    await drain(pgq);
    await refuteEnqueued(pgq, email, { to: 'done@b.c' });
  });
});

describe('performJob', () => {
  it('runs a handler with a validated payload and a real context, no database', async () => {
    expect(await performJob(double, { n: 21 })).toEqual({ doubled: 42 });
    expect(await performJob(flaky, { id: 'x' }, { attempt: 3 })).toEqual({ attempt: 3 });
    // ctx.attempt and ctx.job.attempts are one number, given either way (job.attempts was 4 beside attempt 1).
    const counted = defineTask({ name: 'counted', schema: z.object({}), handler: (_p, c) => [c.attempt, c.job.attempts] });
    expect(await performJob(counted, {}, { job: { attempts: 4 } })).toEqual([4, 4]);
    expect(await performJob(counted, {}, { attempt: 2, job: { attempts: undefined } })).toEqual([2, 2]);
    await expect(performJob(flaky, { id: 'x' })).rejects.toThrow('attempt 1 fails');
    await expect(performJob(double, { n: 1.5 } as never)).rejects.toBeInstanceOf(ValidationError);
    const seen = defineTask({
      name: 'seen',
      schema: z.object({ n: z.number().default(7) }),
      handler: (p, c) => ({ n: p.n, task: c.job.task, workflowId: c.job.workflowId, aborted: c.signal.aborted }),
    });
    expect(await performJob(seen, {}, { job: { workflowId: '9' } })).toEqual({ n: 7, task: 'seen', workflowId: '9', aborted: false });
    // recordMeta is validated as under a worker, and merged into ctx.job.meta at once.
    const recording = defineTask({
      name: 'recording',
      schema: z.object({ bad: z.boolean() }),
      handler: ({ bad }, c) => {
        c.recordMeta('step', bad ? ({ n: 1n } as never) : 'done');
        return c.job.meta;
      },
    });
    expect(await performJob(recording, { bad: false }, { job: { meta: { requestId: 'r' } } })).toEqual({ requestId: 'r', step: 'done' });
    await expect(performJob(recording, { bad: true })).rejects.toThrow(/ctx\.recordMeta\("step"\)/);
  });

  it('snooze, timeout and non-JSON results behave as under a worker', async () => {
    const snoozy = defineTask({ name: 'snoozy', schema: z.object({}), handler: (_p, c) => c.snooze(1_000) });
    await expect(performJob(snoozy, {})).rejects.toBeInstanceOf(SnoozeError);
    const slow = defineTask({ name: 'slow', schema: z.object({}), timeoutMs: 20, handler: () => new Promise(() => undefined) });
    await expect(performJob(slow, {})).rejects.toBeInstanceOf(JobTimeoutError);
    const bigint = defineTask({ name: 'bigint', schema: z.object({}), handler: () => ({ n: 1n }) });
    await expect(performJob(bigint, {})).rejects.toBeInstanceOf(ValidationError);
  });

  it('fails where a worker fails: a payload its schema does not take back from JSON, a progress value out of range, the job own time limit', async () => {
    // A worker reads the stored JSON through the schema again: a Date is a string there.
    const dated = defineTask({ name: 'dated', schema: z.object({ at: z.date() }), handler: ({ at }) => at.getTime() });
    await expect(performJob(dated, { at: new Date(0) })).rejects.toThrow(/^stored payload no longer matches the schema of task dated .*at/);
    // ctx.job.payload is what the schema made of the stored JSON, as a worker gives it (it was the JSON: a string here).
    const coerced = defineTask({ name: 'coerced', schema: z.object({ at: z.coerce.date() }), handler: ({ at }, c) => ({ ms: at.getTime(), date: c.job.payload.at instanceof Date }) });
    expect(await performJob(coerced, { at: new Date(0) })).toEqual({ ms: 0, date: true });
    const progressing = defineTask({ name: 'progressing', schema: z.object({ to: z.number() }), handler: async ({ to }, c) => (await c.progress(to), 'ok') });
    expect(await performJob(progressing, { to: 50 })).toBe('ok');
    await expect(performJob(progressing, { to: 150 })).rejects.toThrow(/progress: a number must be from 0 to 100, got 150/);
    const hanging = defineTask({ name: 'hanging', schema: z.object({}), handler: () => new Promise(() => undefined) });
    await expect(performJob(hanging, {}, { job: { timeoutMs: 30 } })).rejects.toBeInstanceOf(JobTimeoutError);
    // A payload over pgq's default 1 MiB that a worker with a larger maxPayloadBytes runs; a result sized by the option.
    const big = defineTask({ name: 'big', schema: z.object({ text: z.string() }), handler: ({ text }) => text });
    const text = 'x'.repeat(2 * 1024 * 1024);
    await expect(performJob(big, { text })).rejects.toThrow(/result: is \d+ bytes of JSON, over the limit/);
    expect((await performJob(big, { text }, { maxPayloadBytes: 8 * 1024 * 1024 })).length).toBe(text.length);
  });

  it('runs the middleware it is given around the handler, first one outermost, as a worker does (recorded keys merged at once, as performJob does); none without', async () => {
    const order: string[] = [];
    const tagged = defineTask({
      name: 'tagged',
      schema: z.object({ n: z.number() }),
      handler: ({ n }, c) => {
        order.push(`handler sees ${String(c.job.meta.tenant)}, traced ${String(c.job.meta.traced)}`);
        return n + 1;
      },
    });
    const outer: Middleware = {
      name: 'outer',
      async attempt(c, next) {
        order.push('outer in');
        c.recordMeta('traced', true);
        const value = await next();
        order.push('outer out');
        return { wrapped: value };
      },
    };
    const inner: Middleware = {
      name: 'inner',
      async attempt(c, next) {
        order.push('inner in');
        c.job.meta = { ...c.job.meta, tenant: 't1' };
        return next();
      },
    };
    expect(await performJob(tagged, { n: 1 }, { middleware: [outer, inner] })).toEqual({ wrapped: 2 });
    expect(order).toEqual(['outer in', 'inner in', 'handler sees t1, traced true', 'outer out']);
    order.length = 0;
    expect(await performJob(tagged, { n: 1 })).toBe(2);
    expect(order).toEqual(['handler sees undefined, traced undefined']);
    // A middleware that refuses the attempt fails it, as under a worker; the handler does not run.
    const refusing: Middleware = { name: 'refusing', attempt: () => Promise.reject(new PermanentError('no tenant')) };
    await expect(performJob(tagged, { n: 1 }, { middleware: [refusing] })).rejects.toThrow('no tenant');
    expect(order).toEqual(['handler sees undefined, traced undefined']);
  });
});
