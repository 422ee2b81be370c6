/**
 * Example tasks for `pgq worker --tasks examples/tasks.ts` and the quick-start
 * demo (`npm run demo`). Each simulates real work with a short wait that
 * honours ctx.signal.
 */
import { setTimeout as wait } from 'node:timers/promises';
import { z } from 'zod';
import { defineTask, type Pgq } from 'pgq';

export const sendEmail = defineTask({
  name: 'send-email',
  queue: 'emails',
  schema: z.object({ to: z.string().email(), subject: z.string().min(1) }),
  maxAttempts: 5,
  async handler(payload, ctx) {
    await wait(50 + Math.random() * 150, undefined, { signal: ctx.signal });
    return { messageId: `msg-${ctx.job.id}`, to: payload.to };
  },
});

export const resizeImage = defineTask({
  name: 'resize-image',
  schema: z.object({ url: z.string().url(), width: z.number().int().positive() }),
  timeoutMs: 10_000,
  async handler(payload, ctx) {
    await wait(100, undefined, { signal: ctx.signal });
    return { thumbnail: `${payload.url}?w=${payload.width}` };
  },
});

/** Fails its first attempt, like an API that answers 503 once; pgq retries it after a backoff. */
export const callFlakyApi = defineTask({
  name: 'call-flaky-api',
  schema: z.object({ endpoint: z.string() }),
  backoff: { baseMs: 500, maxMs: 5_000 },
  async handler(payload, ctx) {
    if (ctx.attempt === 1) throw new Error(`${payload.endpoint} answered 503 Service Unavailable`);
    return { status: 200, attempt: ctx.attempt };
  },
});

export const buildReport = defineTask({
  name: 'build-report',
  queue: 'reports',
  schema: z.object({ month: z.string().regex(/^\d{4}-\d{2}$/) }),
  async handler(payload) {
    return { report: `report-${payload.month}.pdf`, rows: 1234 };
  },
});

/** Used by `pgq demo`: enqueues a few jobs and returns their ids. */
export async function enqueueDemo(pgq: Pgq): Promise<string[]> {
  const emails = await pgq.enqueueMany(sendEmail, [
    { to: 'ada@example.com', subject: 'Welcome' },
    { to: 'grace@example.com', subject: 'Welcome' },
    { to: 'linus@example.com', subject: 'Your invoice' },
  ]);
  const image = await pgq.enqueue(resizeImage, { url: 'https://example.com/cat.png', width: 320 });
  const flaky = await pgq.enqueue(callFlakyApi, { endpoint: 'https://api.example.com/charge' });
  const delayed = await pgq.enqueue(buildReport, { month: '2026-10' }, { delayMs: 2_000 });
  return [...emails, image, flaky, delayed].map((job) => job.id);
}
