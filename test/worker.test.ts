import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { defineTask, PermanentError } from '../src/index.js';
import { deferred, useTestSchema } from './support/harness.js';

const ctx = useTestSchema('worker');

describe('worker', () => {
  it('runs a job and stores its result', async () => {
    const add = defineTask({
      name: 'add',
      schema: z.object({ a: z.number(), b: z.number() }),
      handler: ({ a, b }) => ({ sum: a + b }),
    });
    const pgq = await ctx.migrated({ tasks: [add] });
    const worker = pgq.worker({ concurrency: 2 });
    await worker.start();
    const job = await pgq.enqueue(add, { a: 2, b: 3 });
    const done = await pgq.waitForJob(job.id, { timeoutMs: 10_000 });
    expect(done.state).toBe('succeeded');
    expect(done.result).toEqual({ sum: 5 });
    expect(done.attempts).toBe(1);
    await worker.stop();
  });

  it('retries a failing job and records each error', async () => {
    let calls = 0;
    const flaky = defineTask({
      name: 'flaky',
      schema: z.object({}),
      backoff: { baseMs: 10, maxMs: 20 },
      handler: () => {
        calls += 1;
        if (calls < 3) throw new Error(`boom ${calls}`);
        return 'ok';
      },
    });
    const pgq = await ctx.migrated({ tasks: [flaky] });
    const worker = pgq.worker({ pollIntervalMs: 50 });
    await worker.start();
    const job = await pgq.enqueue(flaky, {});
    const done = await pgq.waitForJob(job.id, { timeoutMs: 10_000 });
    expect(done.state).toBe('succeeded');
    expect(done.attempts).toBe(3);
    expect(done.errors.map((e) => [e.attempt, e.message])).toEqual([
      [1, 'boom 1'],
      [2, 'boom 2'],
    ]);
    await worker.stop();
  });

  it('fails permanently on PermanentError', async () => {
    const perm = defineTask({
      name: 'perm',
      schema: z.object({}),
      handler: () => {
        throw new PermanentError('nope');
      },
    });
    const pgq = await ctx.migrated({ tasks: [perm] });
    const worker = pgq.worker();
    await worker.start();
    const job = await pgq.enqueue(perm, {});
    const done = await pgq.waitForJob(job.id, { timeoutMs: 10_000 });
    expect(done.state).toBe('failed');
    expect(done.attempts).toBe(1);
    expect(done.errors[0]?.message).toBe('nope');
    await worker.stop();
  });

  it('cancels a running job through its signal', async () => {
    const started = deferred();
    const slow = defineTask({
      name: 'slow',
      schema: z.object({}),
      handler: async (_p, c) => {
        started.resolve();
        await new Promise((_, reject) => c.signal.addEventListener('abort', () => reject(c.signal.reason)));
      },
    });
    const pgq = await ctx.migrated({ tasks: [slow] });
    const worker = pgq.worker();
    await worker.start();
    const job = await pgq.enqueue(slow, {});
    await started.promise;
    await pgq.cancelJob(job.id);
    const done = await pgq.waitForJob(job.id, { timeoutMs: 10_000 });
    expect(done.state).toBe('cancelled');
    await worker.stop();
    expect(worker.runningJobs).toBe(0);
  });
});
