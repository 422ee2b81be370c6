import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { PgqMetrics, PermanentError, defineTask } from '../src/index.js';
import { useTestSchema } from './support/harness.js';

const ctx = useTestSchema('metrics');

describe('Prometheus metrics', () => {
  it('counts outcomes and durations per task and reads queue depth at scrape time', async () => {
    const work = defineTask({
      name: 'work',
      schema: z.object({ fail: z.boolean() }),
      queue: 'm',
      maxAttempts: 1,
      handler: ({ fail }) => {
        if (fail) throw new PermanentError('no');
        return 1;
      },
    });
    const pgq = await ctx.migrated({ tasks: [work] });
    const metrics = new PgqMetrics(pgq);
    const waiting = await pgq.enqueue(work, { fail: false }, { queue: 'later', delayMs: 60_000 });
    const worker = pgq.worker({ queues: ['m'] });
    metrics.observe(worker);
    await worker.start();
    const jobs = await pgq.enqueueMany(work, [{ fail: false }, { fail: false }, { fail: true }]);
    for (const j of jobs) await pgq.waitForJob(j.id, { timeoutMs: 10_000 });
    const text = await metrics.registry.metrics();
    expect(text).toMatch(/pgq_jobs_finished_total\{task="work",queue="m",outcome="succeeded"\} 2/);
    expect(text).toMatch(/pgq_jobs_finished_total\{task="work",queue="m",outcome="failed"\} 1/);
    expect(text).toMatch(/pgq_job_duration_seconds_count\{task="work",queue="m"\} 3/);
    expect(text).toMatch(/pgq_queue_jobs\{queue="later",state="scheduled"\} 1/);
    expect(text).toMatch(/pgq_queue_jobs\{queue="m",state="succeeded"\} 2/);
    expect(text).toMatch(new RegExp(`pgq_jobs_running\\{worker="${worker.id}"\\} 0`));
    expect(waiting.state).toBe('scheduled');
    await worker.stop();
  });
});
