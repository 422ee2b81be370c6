/**
 * Through PgBouncer in transaction-pooling mode: enqueue, claim, complete,
 * cancel and waitForJob work with no session state (statements unprepared,
 * LISTEN on a direct connection), and in poll-only mode with no LISTEN at all.
 * CI installs pgbouncer; elsewhere the file is skipped when it is missing.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { Pgq, defineTask } from '../src/index.js';
import { deferred, useTestSchema } from './support/harness.js';
import { PGBOUNCER_BIN, startPgBouncer, type Bouncer } from './support/pgbouncer.js';

const ctx = useTestSchema('bouncer');
const required = process.env.CI === 'true' || process.env.PGQ_TEST_PGBOUNCER === '1';
if (!PGBOUNCER_BIN && required) throw new Error('pgbouncer is required here but not installed (apt-get install pgbouncer)');

describe.skipIf(!PGBOUNCER_BIN)('through PgBouncer (transaction pooling)', () => {
  let bouncer: Bouncer;
  beforeAll(async () => {
    await ctx.migrated(); // migrations take a session lock: run them directly
    bouncer = await startPgBouncer(ctx.url);
  });
  afterAll(async () => {
    await bouncer?.stop();
  });

  const runs = new Map<string, number>();
  const started = deferred<string>();
  const add = defineTask({
    name: 'add',
    schema: z.object({ a: z.number(), b: z.number(), hold: z.boolean().optional() }),
    handler: async ({ a, b, hold }, c) => {
      runs.set(c.job.id, (runs.get(c.job.id) ?? 0) + 1);
      if (hold) {
        started.resolve(c.job.id);
        await new Promise((_, reject) => c.signal.addEventListener('abort', () => reject(c.signal.reason)));
      }
      return a + b;
    },
  });

  it('runs jobs, cancels a running one and wakes waiters, with LISTEN on a direct connection', async () => {
    const make = (): Pgq =>
      new Pgq({ connectionString: bouncer.url, listenConnectionString: ctx.url, preparedStatements: false, schema: ctx.schema, tasks: [add] });
    const a = make();
    const b = make();
    try {
      const workers = [a.worker({ concurrency: 4, pollIntervalMs: 100 }), b.worker({ concurrency: 4, pollIntervalMs: 100 })];
      await Promise.all(workers.map((w) => w.start()));
      const jobs = await a.enqueueMany(add, Array.from({ length: 300 }, (_, i) => ({ a: i, b: 1 })));
      for (const [i, job] of jobs.entries()) {
        expect(await b.waitForJob(job.id, { timeoutMs: 30_000 })).toMatchObject({ state: 'succeeded', result: i + 1 });
      }
      expect(jobs.every((j) => runs.get(j.id) === 1)).toBe(true);
      const held = await a.enqueue(add, { a: 0, b: 0, hold: true });
      expect(await started.promise).toBe(held.id);
      await b.cancelJob(held.id);
      expect((await a.waitForJob(held.id, { timeoutMs: 10_000 })).state).toBe('cancelled');
      await Promise.all(workers.map((w) => w.stop()));
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('works poll-only (listen: false) when no direct connection is available', async () => {
    const pgq = new Pgq({ connectionString: bouncer.url, listen: false, preparedStatements: false, schema: ctx.schema, tasks: [add] });
    try {
      const worker = pgq.worker({ concurrency: 2, pollIntervalMs: 50 });
      await worker.start();
      const jobs = await pgq.enqueueMany(add, [{ a: 1, b: 2 }, { a: 3, b: 4 }]);
      expect((await pgq.waitForJob(jobs[1]!.id, { timeoutMs: 10_000 })).result).toBe(7);
      const later = await pgq.enqueue(add, { a: 5, b: 5 }, { delayMs: 200 });
      // Times read back: PgBouncer reports the server's DateStyle (ISO) to the client, which then sets none itself.
      expect(later.runAt.getTime()).toBeGreaterThan(Date.now() - 60_000);
      const done = await pgq.waitForJob(later.id, { timeoutMs: 10_000 });
      expect(done.result).toBe(10);
      expect(done.finishedAt).toBeInstanceOf(Date);
      await worker.stop();
    } finally {
      await pgq.close();
    }
  });
});
