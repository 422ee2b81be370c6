/**
 * Connection faults: pgq's backends killed with pg_terminate_backend while
 * jobs run, and a PostgreSQL restart (on a server of this file's own).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import pg from 'pg';
import { Pgq, defineTask } from '../src/index.js';
import { deferred, useTestSchema, withAppName } from './support/harness.js';
import { startEmbedded, type EmbeddedServer } from './support/embedded.js';

const ctx = useTestSchema('faults');

function countingTask(runs: Map<string, number>, sleepMs: number) {
  return defineTask({
    name: 'counted',
    schema: z.object({ n: z.number() }),
    backoff: { baseMs: 10, maxMs: 50 },
    handler: async (_p, c) => {
      runs.set(c.job.id, (runs.get(c.job.id) ?? 0) + 1);
      await new Promise((r) => setTimeout(r, sleepMs));
      return c.job.id;
    },
  });
}

describe('connection faults', () => {
  it('finishes every job while its connections are terminated again and again', async () => {
    const runs = new Map<string, number>();
    const task = countingTask(runs, 5);
    const pgq = await ctx.migrated({ tasks: [task] });
    const worker = pgq.worker({ concurrency: 8, pollIntervalMs: 50, heartbeatMs: 100, rescueAfterMs: 5_000 });
    await worker.start();
    const jobs = await pgq.enqueueMany(task, Array.from({ length: 400 }, (_, n) => ({ n })));
    let kills = 0;
    let stop = false;
    const killer = (async () => {
      while (!stop) {
        const { rowCount } = await ctx.admin.query(
          `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()`,
          [`pgq_${ctx.schema}`],
        );
        kills += rowCount ?? 0;
        await new Promise((r) => setTimeout(r, 150));
      }
    })();
    try {
      const waiter = new Pgq({ connectionString: ctx.admin.options.connectionString!, schema: ctx.schema, tasks: [task] });
      try {
        for (const job of jobs) expect((await waiter.waitForJob(job.id, { timeoutMs: 60_000 })).state).toBe('succeeded');
      } finally {
        await waiter.close();
      }
    } finally {
      stop = true;
      await killer;
    }
    expect(kills).toBeGreaterThan(0);
    expect(runs.size).toBe(400);
    await worker.stop();
  });
});

/** A task whose handler reports its start (`running`) and returns 'done' once `release()` is called. */
function gatedTask(name: string) {
  const started = deferred();
  const gate = deferred();
  const task = defineTask({
    name,
    schema: z.object({}),
    handler: async () => {
      started.resolve();
      await gate.promise;
      return 'done';
    },
  });
  return { task, running: started.promise, release: () => gate.resolve() };
}

describe('outcome writes held back by another transaction', () => {
  it('with lock_timeout set, an outcome whose row another transaction holds is written once it is released, as it was', async () => {
    await ctx.migrated();
    const { task, running, release } = gatedTask('held-row');
    // Every connection of this worker gives up waiting for a row lock after 200 ms.
    const pool = new pg.Pool({ connectionString: withAppName(ctx.admin.options.connectionString!, `pgq_${ctx.schema}`), options: '-c lock_timeout=200' });
    const pgq = new Pgq({ pool, schema: ctx.schema, tasks: [task] });
    const holder = await ctx.admin.connect();
    try {
      const worker = pgq.worker({ concurrency: 1 });
      const job = await pgq.enqueue(task, {});
      await worker.start();
      await running;
      // The row held while the handler finishes: its outcome's write waits for the lock and times out.
      await holder.query('BEGIN');
      await holder.query(`SELECT 1 FROM "${ctx.schema}".jobs WHERE id = $1 FOR UPDATE`, [job.id]);
      release();
      await new Promise((resolve) => setTimeout(resolve, 1_500)); // several lock timeouts of the outcome's write
      await holder.query('COMMIT');
      const done = await pgq.waitForJob(job.id, { timeoutMs: 20_000 });
      expect(done).toMatchObject({ state: 'succeeded', result: 'done', attempts: 1, errors: [] });
      await worker.stop();
    } finally {
      release();
      await holder.query('ROLLBACK').catch(() => undefined);
      holder.release();
      await pgq.close();
      await pool.end();
    }
  });
});

describe('PostgreSQL restart', () => {
  let server: EmbeddedServer | undefined;
  afterAll(async () => {
    await server?.stop();
  });

  it('stop() while the database is down gives up writing a finished job\'s outcome after a lease and resolves; the job is left running for the rescuer', async () => {
    await server?.stop();
    server = await startEmbedded('outage');
    const url = withAppName(server.url, 'pgq_outage');
    const { task, running, release } = gatedTask('gated');
    const pgq = new Pgq({ connectionString: url, tasks: [task] });
    try {
      await pgq.migrate();
      const worker = pgq.worker({ concurrency: 2, heartbeatMs: 200, rescueAfterMs: 1_000 });
      await worker.start();
      const job = await pgq.enqueue(task, {});
      await running;
      await server.halt();
      release(); // the handler succeeds while nothing can record it
      const stopped = worker.stop().then(() => 'stopped' as const);
      const hung = new Promise<'hung'>((resolve) => setTimeout(() => resolve('hung'), 30_000).unref());
      // Writes are retried for max(5 s, rescueAfterMs), then given up.
      expect(await Promise.race([stopped, hung])).toBe('stopped');
      expect(worker.state).toBe('stopped');
      await server.resume();
      const admin = new pg.Client({ connectionString: server.url });
      await admin.connect();
      try {
        const { rows } = await admin.query<{ state: string }>('SELECT state FROM pgq.jobs WHERE id = $1', [job.id]);
        expect(rows).toEqual([{ state: 'running' }]);
      } finally {
        await admin.end();
      }
    } finally {
      release();
      await pgq.close();
    }
  });

  for (const mode of ['restart', 'crash'] as const) it(`keeps working across a ${mode === 'crash' ? 'crash (immediate shutdown)' : 'restart'}: every job completes, new jobs are picked up after it`, async () => {
    await server?.stop();
    server = await startEmbedded('restart');
    const url = withAppName(server.url, 'pgq_restart');
    const runs = new Map<string, number>();
    const task = countingTask(runs, 20);
    const pgq = new Pgq({ connectionString: url, tasks: [task] });
    try {
      await pgq.migrate();
      const worker = pgq.worker({ concurrency: 4, pollIntervalMs: 100, heartbeatMs: 100, rescueAfterMs: 10_000 });
      await worker.start();
      const jobs = await pgq.enqueueMany(task, Array.from({ length: 100 }, (_, n) => ({ n })));
      const admin = new pg.Client({ connectionString: server.url });
      await admin.connect();
      // Restart once some but not all jobs are done.
      for (;;) {
        const { rows } = await admin.query<{ n: string }>(`SELECT count(*) AS n FROM pgq.jobs WHERE state = 'succeeded'`);
        if (Number(rows[0]!.n) >= 10) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      await admin.end().catch(() => undefined);
      if (mode === 'crash') await server.crash();
      else await server.restart();
      for (const job of jobs) expect((await pgq.waitForJob(job.id, { timeoutMs: 60_000 })).state).toBe('succeeded');
      const late = await pgq.enqueue(task, { n: 1000 });
      expect((await pgq.waitForJob(late.id, { timeoutMs: 30_000 })).state).toBe('succeeded');
      expect(runs.size).toBe(101);
      await worker.stop();
    } finally {
      await pgq.close();
    }
  });
});
