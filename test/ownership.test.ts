/**
 * Attempt ownership: one owner per running attempt, one outcome on every
 * path. Each test here failed on pgq before attempts had owners.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import pg from 'pg';
import { z } from 'zod';
import { defineTask, JobTimeoutError, LeaseLostError, Pgq, type JobRecord, type WorkerOptions } from '../src/index.js';
import { createStatements } from '../src/db/statements.js';
import { createQueueStatements } from '../src/db/queue-statements.js';
import { fromPg } from '../src/db/queryable.js';
import { Lease } from '../src/worker/lease.js';
import type { Logger } from '../src/core/logger.js';
import { deferred, until, useTestSchema } from './support/harness.js';
import { spawnWorker } from './support/processes.js';
import { createLedger, overlappingRuns } from './support/ledger.js';

const ctx = useTestSchema('ownership');

interface Run {
  attempt: number;
  start: number;
  end: number | null;
}

/** SQL that registers worker `id` as another process would (another host, a lease of an hour), in the schema's `workers` table. */
function registeredElsewhere(workers: string, id: string, queue: string, lastHeartbeatAt?: string): string {
  return `INSERT INTO ${workers} (id, hostname, pid, queues, concurrency, rescue_after_ms, lease_expires_at${lastHeartbeatAt ? ', last_heartbeat_at' : ''})
          VALUES ('${id}', 'elsewhere', 1, '{${queue}}', 1, 60000, now() + interval '1 hour'${lastHeartbeatAt ? `, '${lastHeartbeatAt}'` : ''})`;
}

/**
 * A worker with a fixed `id` serving a queue of that name (a task that does nothing: `noop`), started on this
 * file's schema; `schema` is the schema, quoted.
 */
async function startFixedWorker(id: string, options: Partial<WorkerOptions>) {
  const noop = defineTask({ name: `${id}-noop`, queue: id, schema: z.object({}), handler: () => 'ok' });
  const pgq = await ctx.migrated({ tasks: [noop] });
  const worker = pgq.worker({ id, queues: [id], heartbeatMs: 100, ...options });
  await worker.start();
  return { pgq, noop, worker, schema: `"${ctx.schema}"` };
}

/**
 * Stops `worker` while an admin transaction that ran `lockSql` holds its locks for `holdMs` (`meanwhile` runs
 * once they are taken, before the stop); resolves once the stop has.
 */
async function stopWhileHolding(worker: { stop(): Promise<void> }, lockSql: string, holdMs: number, meanwhile?: () => Promise<void>): Promise<void> {
  const holder = await ctx.admin.connect();
  try {
    await holder.query(`BEGIN; ${lockSql}`);
    await meanwhile?.();
    const stopped = worker.stop();
    await new Promise((resolve) => setTimeout(resolve, holdMs));
    await holder.query('COMMIT');
    await stopped;
  } finally {
    await holder.query('ROLLBACK').catch(() => undefined);
    holder.release();
  }
}

/** No two runs overlap in time. */
function overlaps(runs: Run[]): number {
  let n = 0;
  for (const a of runs) for (const b of runs) {
    if (a !== b && a.start < b.start && b.start < (a.end ?? Infinity)) n += 1;
  }
  return n;
}

describe('a handler that ignores its signal', () => {
  it('keeps its slot and its job past its timeout: its retry never overlaps it', async () => {
    const runs: Run[] = [];
    const stubborn = defineTask({
      name: 'stubborn',
      schema: z.object({}),
      timeoutMs: 100,
      maxAttempts: 3,
      backoff: { baseMs: 1, maxMs: 1 },
      handler: async (_p, c) => {
        const run: Run = { attempt: c.attempt, start: performance.now(), end: null };
        runs.push(run);
        await new Promise((r) => setTimeout(r, 600)); // ignores c.signal
        run.end = performance.now();
        return 'late';
      },
    });
    const pgq = await ctx.migrated({ tasks: [stubborn] });
    const worker = pgq.worker({ concurrency: 1, pollIntervalMs: 20, abortGraceMs: 200 });
    const stuck: string[] = [];
    worker.on('job:stuck', (job) => stuck.push(job.id));
    await worker.start();
    const job = await pgq.enqueue(stubborn, {});
    const done = await pgq.waitForJob(job.id, { timeoutMs: 20_000 });
    expect(done.state).toBe('failed');
    expect(done.attempts).toBe(3);
    expect(done.errors.map((e) => e.message)).toEqual(Array(3).fill('job timed out after 100 ms'));
    expect(runs).toHaveLength(3);
    expect(overlaps(runs)).toBe(0);
    expect(stuck).toEqual([job.id, job.id, job.id]);
    expect(worker.stuckJobs).toBe(0);
    await worker.stop();
  });

  it('hardStop signals it but resolves only once it settled, and gives its job back', async () => {
    const started = deferred();
    let ended = false;
    const slow = defineTask({
      name: 'slow-ignorer',
      schema: z.object({}),
      handler: async () => {
        started.resolve();
        await new Promise((r) => setTimeout(r, 400));
        ended = true;
        throw new Error('stopped late');
      },
    });
    const pgq = await ctx.migrated({ tasks: [slow] });
    const worker = pgq.worker({ concurrency: 1, pollIntervalMs: 20 });
    await worker.start();
    const job = await pgq.enqueue(slow, {});
    await started.promise;
    await worker.hardStop();
    expect(ended).toBe(true);
    const after = await pgq.getJob(job.id);
    // Given back: available again, the attempt not counted against it.
    expect(after).toMatchObject({ state: 'available', attempts: 1, maxAttempts: 26 });
  });
});

describe('one outcome on every path', () => {
  it('a schema transform that throws fails the attempt with its message', async () => {
    const parsing = defineTask({
      name: 'parsing',
      schema: z.object({ raw: z.string() }).transform((p) => JSON.parse(p.raw) as unknown),
      maxAttempts: 3,
      handler: () => 'never',
    });
    const pgq = await ctx.migrated({ tasks: [parsing] });
    await ctx.admin.query(`INSERT INTO "${ctx.schema}".jobs (task, payload) VALUES ('parsing', '{"raw":"not json"}')`);
    const { rows } = await ctx.admin.query<{ id: string }>(`SELECT id FROM "${ctx.schema}".jobs WHERE task = 'parsing'`);
    const worker = pgq.worker({ pollIntervalMs: 20 });
    await worker.start();
    const failed = await pgq.waitForJob(rows[0]!.id, { timeoutMs: 10_000 });
    expect(failed.state).toBe('failed');
    expect(failed.errors).toHaveLength(1);
    expect(failed.errors[0]!.message).toMatch(/the schema of task parsing threw on the stored payload: .*JSON/);
    await worker.stop();
  });

  it('a job:start listener that throws fails that attempt; the worker goes on', async () => {
    const plain = defineTask({ name: 'plain', schema: z.object({ n: z.number() }), maxAttempts: 1, handler: ({ n }) => n });
    const pgq = await ctx.migrated({ tasks: [plain] });
    const worker = pgq.worker({ pollIntervalMs: 20 });
    worker.on('job:start', (job) => {
      if ((job.payload as { n: number }).n === 1) throw new Error('listener broke');
    });
    await worker.start();
    const [bad, good] = await pgq.enqueueMany(plain, [{ n: 1 }, { n: 2 }]);
    expect((await pgq.waitForJob(bad!.id, { timeoutMs: 10_000 })).errors[0]!.message).toMatch(/job:start listener threw: listener broke/);
    expect((await pgq.waitForJob(good!.id, { timeoutMs: 10_000 })).result).toBe(2);
    await worker.stop();
  });

  it('an outcome the database refuses is recorded as a failure once, not retried in a loop', async () => {
    const poison = defineTask({ name: 'poison', schema: z.object({ poison: z.boolean() }), maxAttempts: 1, handler: () => 'ok' });
    const pgq = await ctx.migrated({ tasks: [poison] });
    await ctx.admin.query(`
      CREATE FUNCTION "${ctx.schema}".refuse_success() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN RAISE EXCEPTION 'successes of poison jobs are refused'; END $$;
      CREATE TRIGGER refuse_success BEFORE UPDATE ON "${ctx.schema}".jobs FOR EACH ROW
        WHEN (NEW.state = 'succeeded' AND (NEW.payload->>'poison')::boolean) EXECUTE FUNCTION "${ctx.schema}".refuse_success();`);
    const worker = pgq.worker({ pollIntervalMs: 20 });
    const successes: string[] = [];
    worker.on('job:success', (job) => successes.push(job.id));
    await worker.start();
    const [bad, good] = await pgq.enqueueMany(poison, [{ poison: true }, { poison: false }]);
    const failed = await pgq.waitForJob(bad!.id, { timeoutMs: 10_000 });
    expect(failed.state).toBe('failed');
    expect(failed.errors[0]!.message).toMatch(/could not record this attempt's complete: successes of poison jobs are refused/);
    expect((await pgq.waitForJob(good!.id, { timeoutMs: 10_000 })).state).toBe('succeeded');
    // The event follows the completer's reply, which may come after the
    // NOTIFY that woke waitForJob: wait for it, stop, then count.
    await until(() => successes.length > 0, { what: "the good job's job:success" });
    await worker.stop();
    expect(successes).toEqual([good!.id]);
    await ctx.admin.query(`DROP TRIGGER refuse_success ON "${ctx.schema}".jobs`);
  });
});

describe('leases', () => {
  it('the rescue does not take a job that, while it waited for the row, a worker registered after it began has claimed', async () => {
    const noop = defineTask({ name: 'rescue-race', queue: 'rescue-race', schema: z.object({}), handler: () => null });
    const pgq = await ctx.migrated({ tasks: [noop] });
    const schema = `"${ctx.schema}"`;
    const job = await pgq.enqueue(noop, {}, { delayMs: 3_600_000 });
    // Job J runs for worker D, whose lease has run out.
    await ctx.admin.query(`INSERT INTO ${schema}.workers (id, hostname, pid, queues, concurrency, rescue_after_ms, tasks, lease_expires_at)
                           VALUES ('d', 'h', 1, '{rescue-race}', 1, 1000, '{rescue-race}', now() - interval '1 hour')`);
    await ctx.admin.query(`UPDATE ${schema}.jobs SET state = 'running', worker_id = 'd', attempts = 1, started_at = now() - interval '2 hours' WHERE id = $1`, [job.id]);
    // A transaction holds J's row (D's own give-back, say) ...
    const holder = await ctx.admin.connect();
    const rescuerPool = new pg.Pool({ connectionString: ctx.url, max: 1, application_name: `pgq_${ctx.schema}` });
    try {
      await holder.query('BEGIN');
      await holder.query(`SELECT 1 FROM ${schema}.jobs WHERE id = $1 FOR UPDATE`, [job.id]);
      // ... when the rescue begins: it sees J held by dead D, and waits for the row.
      const rescuing = createStatements(ctx.schema).rescueJobs(fromPg(rescuerPool), { legacyRescueAfterMs: 30_000 });
      await ctx.lockWaiters(1, 'the rescue to wait for the row');
      // Worker N registers now, after the rescue began, and the row's newest
      // version is N's claim of J (attempt 2, started now).
      await ctx.admin.query(`INSERT INTO ${schema}.workers (id, hostname, pid, queues, concurrency, rescue_after_ms, tasks, lease_expires_at)
                             VALUES ('n', 'h', 2, '{rescue-race}', 1, 60000, '{rescue-race}', now() + interval '1 minute')`);
      await holder.query(`UPDATE ${schema}.jobs SET worker_id = 'n', attempts = 2, started_at = clock_timestamp() WHERE id = $1`, [job.id]);
      await holder.query('COMMIT');
      const rescued = await rescuing;
      // N's lease is live: its attempt is N's to finish. It was rescued from under it (the rescue read N's row from before N registered).
      expect(rescued).toEqual([]);
      expect(await pgq.getJob(job.id)).toMatchObject({ state: 'running', workerId: 'n', attempts: 2 });
      expect((await ctx.admin.query(`SELECT id FROM ${schema}.workers ORDER BY id`)).rows).toEqual([{ id: 'n' }]);
    } finally {
      await holder.query('ROLLBACK').catch(() => undefined);
      holder.release();
      await rescuerPool.end();
      await ctx.admin.query(`DELETE FROM ${schema}.workers WHERE id IN ('d', 'n')`);
      await ctx.admin.query(`DELETE FROM ${schema}.jobs WHERE id = $1`, [job.id]);
    }
  });

  it('health() reads the lease the worker holds now: ready again once it has registered again after a lost lease', async () => {
    const idle = defineTask({ name: 'idle', schema: z.object({}), handler: () => null });
    const pgq = await ctx.migrated({ tasks: [idle] });
    const worker = pgq.worker({ queues: ['health-lease'], leader: false, heartbeatMs: 100, rescueAfterMs: 10_000 });
    await worker.start();
    try {
      expect((await worker.health()).ready).toBe(true);
      const firstId = worker.id;
      // As the rescuer does with an expired lease: the row goes, the next renewal finds it gone.
      await ctx.admin.query(`DELETE FROM "${ctx.schema}".workers WHERE id = $1`, [firstId]);
      await until(() => worker.id === `${firstId}~2`, { timeoutMs: 10_000, what: 'the worker to register again' });
      await until(async () => (await worker.health()).ready, { timeoutMs: 5_000, what: 'health() to be ready again' });
      expect((await worker.health()).checks.lease.ok).toBe(true);
    } finally {
      await worker.stop();
    }
  });

  /**
   * A worker whose lease ran out while it held J1: the rescuer takes J1 and
   * removes the worker's row; the worker notices at its next renewal and
   * registers again. Its adoption (which of its attempts are still its own)
   * is slowed by a trigger, so the window where it is registered again but
   * has not yet signalled what was rescued is a second wide; with
   * `slowPromote`, so is its promotion of due jobs (0.4 s), which it runs
   * before most claims: the loss is then noticed while one is in flight.
   */
  async function loseLease(handler: (wait: boolean, c: { attempt: number; signal: AbortSignal }) => Promise<number>, slowPromote = false) {
    const held = defineTask({
      name: 'held',
      schema: z.object({ wait: z.boolean() }),
      backoff: { baseMs: 1, maxMs: 1 },
      handler: ({ wait }, c) => handler(wait, c),
    });
    const pgq = await ctx.migrated({ tasks: [held] });
    await ctx.admin.query(`
      CREATE OR REPLACE FUNCTION "${ctx.schema}".slow_adopt() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF current_query() LIKE '%AS v(id, attempt)%' THEN PERFORM pg_sleep(1); END IF;
        IF ${slowPromote} AND current_query() LIKE '%SET state = ''available''%' THEN PERFORM pg_sleep(0.4); END IF;
        RETURN NULL;
      END $$;
      DROP TRIGGER IF EXISTS slow_adopt ON "${ctx.schema}".jobs;
      CREATE TRIGGER slow_adopt BEFORE UPDATE ON "${ctx.schema}".jobs FOR EACH STATEMENT EXECUTE FUNCTION "${ctx.schema}".slow_adopt();`);
    // A renews every 300 ms; B only leads (it serves another queue) and rescues.
    const a = pgq.worker({ leader: false, heartbeatMs: 300, rescueAfterMs: 60_000, pollIntervalMs: 20 });
    await a.start();
    const firstId = a.id;
    const j1 = await pgq.enqueue(held, { wait: true });
    await until(async () => (await pgq.getJob(j1.id))?.state === 'running');
    // A's lease runs out, and its renewals keep it out (a 1 ms lease), as if
    // A were silent; B's rescuer takes J1 and removes A's row.
    await ctx.admin.query(
      `UPDATE "${ctx.schema}".workers SET rescue_after_ms = 1, lease_expires_at = now() - interval '1 second' WHERE id = $1`,
      [firstId],
    );
    const b = pgq.worker({ queues: ['elsewhere'], heartbeatMs: 50, rescueAfterMs: 1_000 });
    await b.start();
    await until(async () => (await ctx.admin.query(`SELECT 1 FROM "${ctx.schema}".workers WHERE id = $1`, [firstId])).rowCount === 0);
    return { pgq, a, b, firstId, held, j1 };
  }

  it('a lease registered while its thread is still starting is renewed by the thread while the main loop is blocked', async () => {
    await ctx.migrated({ tasks: [] });
    await ctx.admin.query(`
      CREATE TABLE "${ctx.schema}".renewals (at timestamptz NOT NULL);
      CREATE FUNCTION "${ctx.schema}".log_renewal() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN INSERT INTO "${ctx.schema}".renewals VALUES (clock_timestamp()); RETURN NULL; END $$;
      CREATE TRIGGER log_renewal AFTER UPDATE ON "${ctx.schema}".workers FOR EACH ROW EXECUTE FUNCTION "${ctx.schema}".log_renewal();`);
    const quiet: Logger = { error() {}, warn() {}, info() {}, debug() {}, child: () => quiet };
    const lease = new Lease(
      { workerId: 'early', queues: ['default'], tasks: [], concurrency: 1, heartbeatMs: 100, rescueAfterMs: 10_000, stallWarnMs: 60_000, connection: { connectionString: ctx.url }, held: null },
      fromPg(ctx.admin),
      createStatements(ctx.schema),
      quiet,
      { lost: () => undefined, stall: () => undefined },
    );
    try {
      // Spawned, not waited for: the row is registered at once, as a worker does before its first claim.
      await lease.start();
      let running = false;
      void lease.running.then(() => (running = true));
      await lease.register();
      const blockedFrom = (await ctx.admin.query<{ now: Date }>('SELECT clock_timestamp() AS now')).rows[0]!.now;
      // What this test is about: the main loop has not yet heard from the thread.
      expect(running).toBe(false);
      // The main loop is blocked from here on: 3 s, and a renewal must come within 2.5 s of it.
      const end = Date.now() + 3_000;
      while (Date.now() < end);
      await lease.running;
      const { rows } = await ctx.admin.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM "${ctx.schema}".renewals WHERE at > $1 AND at < $1::timestamptz + interval '2.5 seconds'`,
        [blockedFrom],
      );
      expect(rows[0]!.n).toBeGreaterThan(0);
    } finally {
      await lease.stop();
      await ctx.admin.query(`
        DROP TRIGGER log_renewal ON "${ctx.schema}".workers;
        DROP FUNCTION "${ctx.schema}".log_renewal();
        DROP TABLE "${ctx.schema}".renewals;
        DELETE FROM "${ctx.schema}".workers WHERE id = 'early';`);
    }
  });

  it('a lease lost between a claim and the next renewal strands no job: the worker registers again, signals what was rescued, then claims', async () => {
    const gate = deferred();
    const signals: { reason: unknown; at: number }[] = [];
    const { pgq, a, b, firstId, held, j1 } = await loseLease(async (wait, c) => {
      if (wait && c.attempt === 1) {
        await new Promise<void>((resolve) => {
          c.signal.addEventListener('abort', () => {
            signals.push({ reason: c.signal.reason, at: Date.now() });
            resolve();
          });
          void gate.promise.then(resolve);
        });
        if (c.signal.aborted) throw c.signal.reason;
      }
      return c.attempt;
    }, true);
    // A claim now, before A notices, must not take J2 under the dead lease.
    const j2 = await pgq.enqueue(held, { wait: false });
    const done2 = await pgq.waitForJob(j2.id, { timeoutMs: 10_000 });
    expect(done2.state).toBe('succeeded');
    expect(done2.workerId).toBe(`${firstId}~2`);
    const done1 = await pgq.waitForJob(j1.id, { timeoutMs: 10_000 });
    expect(done1).toMatchObject({ state: 'succeeded', attempts: 2, result: 2 });
    expect(signals).toHaveLength(1);
    expect(signals[0]!.reason).toBeInstanceOf(LeaseLostError);
    // Nothing was claimed under the new id before the rescued attempt had its signal.
    expect(done1.startedAt!.getTime()).toBeGreaterThanOrEqual(signals[0]!.at);
    expect(done2.startedAt!.getTime()).toBeGreaterThanOrEqual(signals[0]!.at);
    expect(a.id).toBe(`${firstId}~2`);
    // The new registration says which tasks it runs, as the first did (orphaned-job reports read it).
    const registered = await ctx.admin.query(`SELECT tasks FROM "${ctx.schema}".workers WHERE id = $1`, [a.id]);
    expect(registered.rows).toEqual([{ tasks: ['held'] }]);
    const running = await ctx.admin.query(`SELECT id FROM "${ctx.schema}".jobs WHERE state = 'running'`);
    expect(running.rowCount).toBe(0);
    gate.resolve();
    await a.stop();
    await b.stop();
  });

  /**
   * loseLease with a first attempt deaf to its LeaseLostError (and to any
   * other signal) until `gate` opens; resolves once A, registered again, has
   * claimed J1's second attempt.
   */
  async function loseLeaseDeaf() {
    const gate = deferred();
    const runs: Run[] = [];
    const lost = await loseLease(async (wait, c) => {
      const run: Run = { attempt: c.attempt, start: performance.now(), end: null };
      runs.push(run);
      if (wait && c.attempt === 1) await gate.promise;
      run.end = performance.now();
      return c.attempt;
    });
    await until(async () => (await lost.pgq.getJob(lost.j1.id))?.workerId === `${lost.firstId}~2`, { timeoutMs: 10_000 });
    return { ...lost, gate, runs };
  }

  it('a rescued attempt that ignores its signal and the next attempt of its job, claimed by the same worker, never run at once', async () => {
    // A registers again and claims J1's second attempt, which must wait for the first.
    const { pgq, a, b, j1, gate, runs } = await loseLeaseDeaf();
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(runs.map((r) => r.attempt)).toEqual([1]);
    gate.resolve();
    const done1 = await pgq.waitForJob(j1.id, { timeoutMs: 10_000 });
    expect(done1).toMatchObject({ state: 'succeeded', attempts: 2, result: 2 });
    expect(runs.map((r) => r.attempt)).toEqual([1, 2]);
    expect(overlaps(runs)).toBe(0);
    expect((await ctx.admin.query(`SELECT id FROM "${ctx.schema}".jobs WHERE state = 'running'`)).rowCount).toBe(0);
    await a.stop();
    await b.stop();
  });

  it('a worker stopping while such a next attempt waits gives it back unstarted, without counting it', async () => {
    const { pgq, a, b, j1, gate, runs } = await loseLeaseDeaf();
    const stopped = a.stop({ graceMs: 100 });
    // Given back (attempts 2 → 1) while the first attempt still runs.
    await until(async () => (await pgq.getJob(j1.id))?.state === 'available', { timeoutMs: 10_000 });
    gate.resolve();
    await stopped;
    expect(runs.map((r) => r.attempt)).toEqual([1]);
    expect(await pgq.getJob(j1.id)).toMatchObject({ state: 'available', attempts: 1 });
    await b.stop();
  });

  it('the rescuer honours each worker\'s own rescueAfterMs, not the leader\'s', async () => {
    const gate = deferred();
    const started = deferred();
    const long = defineTask({
      name: 'long',
      schema: z.object({}),
      handler: async () => {
        started.resolve();
        await gate.promise;
        return 'kept';
      },
    });
    const pgq = await ctx.migrated({ tasks: [long] });
    // A: a long lease, renewed rarely. B: leads with a short one and rescues often.
    const a = pgq.worker({ leader: false, heartbeatMs: 2_000, rescueAfterMs: 120_000, pollIntervalMs: 20 });
    await a.start();
    const job = await pgq.enqueue(long, {});
    await started.promise;
    const b = pgq.worker({ queues: ['elsewhere'], heartbeatMs: 50, rescueAfterMs: 500 });
    await b.start();
    await until(() => b.isLeader);
    // Many rescue passes, each long past the leader's own 500 ms.
    await new Promise((r) => setTimeout(r, 2_500));
    expect((await pgq.getJob(job.id))?.state).toBe('running');
    gate.resolve();
    expect(await pgq.waitForJob(job.id, { timeoutMs: 10_000 })).toMatchObject({ state: 'succeeded', attempts: 1, result: 'kept' });
    await a.stop();
    await b.stop();
  });

  it('a lease thread that cannot reconnect while the pool still works: the lease is renewed through the pool in time, and the running job is not rescued', async () => {
    // A login that can be refused new connections (as after a password
    // rotation, or with the server at its connection limit) while the
    // connections it holds keep working.
    const role = `pgq_lease_${ctx.schema.slice(-6)}`;
    await ctx.admin.query(`CREATE ROLE "${role}" LOGIN SUPERUSER PASSWORD 'pw'`);
    const asRole = new URL(ctx.url);
    asRole.username = role;
    asRole.password = 'pw';
    const started = deferred();
    const runs: Run[] = [];
    const signals: unknown[] = [];
    const steady = defineTask({
      name: 'steady',
      queue: 'lease-fallback',
      schema: z.object({}),
      handler: async (_p, c) => {
        const run: Run = { attempt: c.attempt, start: performance.now(), end: null };
        runs.push(run);
        c.signal.addEventListener('abort', () => signals.push(c.signal.reason));
        started.resolve();
        await new Promise((r) => setTimeout(r, 5_000));
        run.end = performance.now();
        return 'kept';
      },
    });
    await ctx.migrated({ tasks: [steady] });
    const warnings: string[] = [];
    const logger: Logger = { error() {}, warn: (_f, msg) => void warnings.push(msg ?? ''), info() {}, debug() {}, child: () => logger };
    const app = new Pgq({ connectionString: asRole.toString(), schema: ctx.schema, tasks: [steady], logger });
    const statements = createStatements(ctx.schema);
    const renewText = statements.renewLeaseStatement({ workerId: '', stuckJobs: 0, loopLagMs: 0, registeredAt: '' }).text;
    // A serves the queue with the shortest lease allowed, two heartbeats; B only leads, and rescues every few hundred ms.
    const a = app.worker({ leader: false, heartbeatMs: 500, rescueAfterMs: 1_000, pollIntervalMs: 50, concurrency: 2 });
    const b = ctx.pgq({ tasks: [steady] }).worker({ queues: ['elsewhere'], heartbeatMs: 100, rescueAfterMs: 1_000 });
    try {
      await a.start();
      await b.start();
      const job = await app.enqueue(steady, {});
      await started.promise;
      // A healthy lease thread: the pool did not renew in its stead. The
      // thread connects at its first renewal, half a heartbeat after the
      // registration: its connection is there before logins are refused.
      expect(warnings.filter((w) => /through its pool/.test(w))).toEqual([]);
      await until(async () => {
        const { rowCount } = await ctx.admin.query(`SELECT 1 FROM pg_stat_activity WHERE usename = $1 AND query = $2`, [role, renewText]);
        return rowCount! > 0;
      }, { what: 'the lease thread\'s first renewal' });
      // The lease thread's connection breaks, and no new connection of this login is accepted.
      await ctx.admin.query(`ALTER ROLE "${role}" NOLOGIN`);
      await until(async () => {
        const { rowCount } = await ctx.admin.query(
          `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1 AND query = $2`,
          [role, renewText],
        );
        return rowCount! > 0;
      }, { what: 'the lease thread\'s connection' });
      // Three times A's rescueAfterMs: the lease would have run out by now.
      await new Promise((r) => setTimeout(r, 3_000));
      expect(await app.getJob(job.id)).toMatchObject({ state: 'running', workerId: a.id, attempts: 1 });
      expect(await app.waitForJob(job.id, { timeoutMs: 10_000 })).toMatchObject({ state: 'succeeded', attempts: 1, result: 'kept' });
      expect(runs.map((r) => r.attempt)).toEqual([1]);
      expect(signals).toEqual([]);
      expect(warnings.filter((w) => /through its pool/.test(w))).toHaveLength(1);
      expect(warnings.filter((w) => /lost its lease/.test(w))).toEqual([]);
    } finally {
      await ctx.admin.query(`ALTER ROLE "${role}" LOGIN`);
      await a.stop();
      await b.stop();
      await app.close();
      await ctx.admin.query(`DROP ROLE IF EXISTS "${role}"`);
    }
  });

  it('a claim answered after the worker registered again (its lease lost meanwhile) gives its jobs back uncounted: they run once, under the new id', async () => {
    const once = defineTask({ name: 'once', queue: 'late-claim', schema: z.object({}), maxAttempts: 1, handler: (_p, c) => c.attempt });
    const pgq = await ctx.migrated({ tasks: [once] });
    const schema = `"${ctx.schema}"`;
    // The next claim sleeps 1.5 s after its snapshot was taken (it saw the lease live).
    await ctx.admin.query(`
      CREATE TABLE ${schema}.slow_claim (pending boolean NOT NULL);
      CREATE FUNCTION ${schema}.slow_claim() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF current_query() LIKE '%claim_candidates%' THEN
          UPDATE ${schema}.slow_claim SET pending = false WHERE pending;
          IF FOUND THEN PERFORM pg_sleep(1.5); END IF;
        END IF;
        RETURN NULL;
      END $$;
      CREATE TRIGGER slow_claim BEFORE UPDATE ON ${schema}.jobs FOR EACH STATEMENT EXECUTE FUNCTION ${schema}.slow_claim();`);
    // No rescuer runs: what the worker does alone decides the job's fate.
    const a = pgq.worker({ queues: ['late-claim'], leader: false, heartbeatMs: 100, rescueAfterMs: 10_000, pollIntervalMs: 20 });
    try {
      await a.start();
      const firstId = a.id;
      await ctx.admin.query(`INSERT INTO ${schema}.slow_claim VALUES (true)`);
      const job = await pgq.enqueue(once, {});
      await until(async () => {
        const { rowCount } = await ctx.admin.query(`SELECT 1 FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND application_name = $1`, [`pgq_${ctx.schema}`]);
        return rowCount! > 0;
      }, { what: 'the claim to sleep' });
      // While the claim sleeps, the lease is lost (as the rescuer does with an expired one); the worker registers again.
      await ctx.admin.query(`DELETE FROM ${schema}.workers WHERE id = $1`, [firstId]);
      await until(() => a.id === `${firstId}~2`, { timeoutMs: 10_000, what: 'the worker to register again' });
      // The claim answers under the lost id: the job must not stay running for nobody, nor be counted.
      expect(await pgq.waitForJob(job.id, { timeoutMs: 10_000 })).toMatchObject({ state: 'succeeded', attempts: 1, result: 1, workerId: `${firstId}~2` });
    } finally {
      await a.stop();
      await ctx.admin.query(`DROP TRIGGER slow_claim ON ${schema}.jobs; DROP FUNCTION ${schema}.slow_claim(); DROP TABLE ${schema}.slow_claim;`);
    }
  });

  /**
   * A worker of concurrency 1 on `queue` that has learnt its jobs are short
   * (three quick ones first), so it claims ahead: `blocker` runs until `gate`
   * opens, `ahead` is held claimed behind it. Handlers record their payload's
   * tag in `ran`.
   */
  async function claimAheadBehindBlocker(queue: string, options: { prefetchTtlMs: number; maxAttempts?: number; logger?: Logger }) {
    const gate = deferred();
    const ran: string[] = [];
    const tagged = defineTask({
      name: queue,
      queue,
      ...(options.maxAttempts === undefined ? {} : { maxAttempts: options.maxAttempts }),
      schema: z.object({ block: z.boolean(), tag: z.string() }),
      handler: async ({ block, tag }) => {
        ran.push(tag);
        return block ? gate.promise.then(() => 'unblocked') : 'quick';
      },
    });
    const pgq = await ctx.migrated({ tasks: [tagged], ...(options.logger ? { logger: options.logger } : {}) });
    const a = pgq.worker({ queues: [queue], leader: false, concurrency: 1, heartbeatMs: 50, rescueAfterMs: 10_000, pollIntervalMs: 20, prefetchTtlMs: options.prefetchTtlMs });
    try {
      await a.start();
      for (let i = 0; i < 3; i += 1) await pgq.waitForJob((await pgq.enqueue(tagged, { block: false, tag: `warm${i}` })).id, { timeoutMs: 10_000 });
      const blocker = await pgq.enqueue(tagged, { block: true, tag: 'blocker' });
      await until(async () => (await pgq.getJob(blocker.id))?.state === 'running');
      const ahead = await pgq.enqueue(tagged, { block: false, tag: 'ahead' });
      await until(async () => (await pgq.getJob(ahead.id))?.state === 'running', { what: 'the job claimed ahead' });
      return { pgq, a, gate, ran, blocker, ahead, firstId: a.id, schema: `"${ctx.schema}"` };
    } catch (err) {
      gate.resolve();
      await a.stop();
      throw err;
    }
  }

  it('a job claimed ahead that ages out while the worker adopts its attempts after a lost lease goes back, and runs once', async () => {
    const { pgq, a, gate, blocker, ahead, firstId, schema } = await claimAheadBehindBlocker('adopt-expiry', { prefetchTtlMs: 300 });
    try {
      // The adoption after the lost lease takes a second: the job claimed ahead ages out meanwhile.
      await ctx.admin.query(`
        DROP TRIGGER IF EXISTS slow_adopt ON ${schema}.jobs;
        CREATE FUNCTION ${schema}.adopt_delay() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF current_query() LIKE '%SET worker_id = $1%' THEN PERFORM pg_sleep(1); END IF; RETURN NULL; END $$;
        CREATE TRIGGER adopt_delay BEFORE UPDATE ON ${schema}.jobs FOR EACH STATEMENT EXECUTE FUNCTION ${schema}.adopt_delay();`);
      await ctx.admin.query(`DELETE FROM ${schema}.workers WHERE id = $1`, [firstId]);
      await until(() => a.id === `${firstId}~2`, { timeoutMs: 10_000, what: 'the worker to register again' });
      gate.resolve();
      expect(await pgq.waitForJob(blocker.id, { timeoutMs: 10_000 })).toMatchObject({ state: 'succeeded', attempts: 1 });
      // Given back while its rows were still under the lost id, it was neither adopted nor stranded.
      expect(await pgq.waitForJob(ahead.id, { timeoutMs: 10_000 })).toMatchObject({ state: 'succeeded', attempts: 1, workerId: `${firstId}~2` });
    } finally {
      gate.resolve();
      await a.stop();
      await ctx.admin.query(`DROP TRIGGER IF EXISTS adopt_delay ON ${schema}.jobs; DROP FUNCTION IF EXISTS ${schema}.adopt_delay();`);
    }
  });

  it('a job claimed ahead that the lease thread gives back while the worker adopts its attempts (the loop blocked) is not left running for nobody', async () => {
    const warnings: string[] = [];
    const logger: Logger = { error() {}, warn: (_f, msg) => void warnings.push(msg ?? ''), info() {}, debug() {}, child: () => logger };
    const { pgq, a, gate, ran, blocker, ahead, firstId, schema } = await claimAheadBehindBlocker('adopt-blocked', { prefetchTtlMs: 1_500, maxAttempts: 1, logger });
    try {
      // The lease is lost; the adoption after it takes 3 s, and meanwhile the
      // event loop is blocked past releaseAfterMs: the lease thread gives the
      // held job back, under the new id, while its row is still under the old one.
      await ctx.admin.query(`
        DROP TRIGGER IF EXISTS slow_adopt ON ${schema}.jobs;
        CREATE OR REPLACE FUNCTION ${schema}.adopt_delay() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF current_query() LIKE '%SET worker_id = $1%' THEN PERFORM pg_sleep(3); END IF; RETURN NULL; END $$;
        CREATE TRIGGER adopt_delay BEFORE UPDATE ON ${schema}.jobs FOR EACH STATEMENT EXECUTE FUNCTION ${schema}.adopt_delay();`);
      await ctx.admin.query(`DELETE FROM ${schema}.workers WHERE id = $1`, [firstId]);
      await until(async () => (await ctx.admin.query(`SELECT 1 FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND query LIKE '%SET worker_id = $1%'`)).rowCount! > 0, { what: 'the adoption to wait' });
      const end = Date.now() + 2_000;
      while (Date.now() < end); // blocks the event loop
      await until(() => warnings.some((w) => w.includes('registered again as')), { timeoutMs: 10_000, what: 'the adoption to end' });
      // Stopped while the long job runs (it ends within the grace): nothing may be left running.
      const stopping = a.stop();
      setTimeout(() => gate.resolve(), 200);
      await stopping;
      expect(await pgq.getJob(blocker.id)).toMatchObject({ state: 'succeeded', attempts: 1 });
      expect(ran).not.toContain('ahead');
      expect(await pgq.getJob(ahead.id)).toMatchObject({ state: 'available', attempts: 0 });
    } finally {
      gate.resolve();
      await a.stop();
      await ctx.admin.query(`DROP TRIGGER IF EXISTS adopt_delay ON ${schema}.jobs; DROP FUNCTION IF EXISTS ${schema}.adopt_delay();`);
    }
  });

  it('a job claimed ahead that the lease thread failed to give back goes back at stop, not to the rescuer, even with every slot taken meanwhile', async () => {
    const { pgq, a, gate, ran, blocker, ahead, schema } = await claimAheadBehindBlocker('giveback-failed', { prefetchTtlMs: 1_000 });
    try {
      // The lease thread's give-back (the statement only it sends) fails.
      await ctx.admin.query(`
        CREATE FUNCTION ${schema}.refuse_giveback() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF current_query() LIKE '%''epoch''::timestamptz + $3%' THEN RAISE EXCEPTION 'give-back refused'; END IF; RETURN NULL; END $$;
        CREATE TRIGGER refuse_giveback BEFORE UPDATE ON ${schema}.jobs FOR EACH STATEMENT EXECUTE FUNCTION ${schema}.refuse_giveback();`);
      const end = Date.now() + 1_600;
      while (Date.now() < end); // blocks the event loop past releaseAfterMs: the thread takes the held job and fails to give it back
      await new Promise((r) => setTimeout(r, 100));
      const stopping = a.stop();
      setTimeout(() => gate.resolve(), 200);
      await stopping;
      expect(await pgq.getJob(blocker.id)).toMatchObject({ state: 'succeeded', attempts: 1 });
      expect(ran).not.toContain('ahead');
      expect(await pgq.getJob(ahead.id)).toMatchObject({ state: 'available', attempts: 0 });
    } finally {
      gate.resolve();
      await a.stop();
      await ctx.admin.query(`DROP TRIGGER IF EXISTS refuse_giveback ON ${schema}.jobs; DROP FUNCTION IF EXISTS ${schema}.refuse_giveback();`);
    }
  });

  it('a late answer to the lease thread\'s renewal of a lost id does not report the lease registered since as lost', async () => {
    await ctx.migrated({ tasks: [] });
    // A TCP proxy to the database whose answers can be held back (the lease thread's connection goes through it).
    let delayMs = 0;
    const upstream = new URL(ctx.url);
    const sockets = new Set<net.Socket>();
    const server = net.createServer((client) => {
      const db = net.connect(Number(upstream.port || 5432), upstream.hostname);
      sockets.add(client).add(db);
      client.pipe(db);
      db.on('data', (chunk) => (delayMs > 0 ? setTimeout(() => client.writable && client.write(chunk), delayMs) : client.write(chunk)));
      const end = (): void => void (client.destroy(), db.destroy());
      client.on('error', end).on('close', end);
      db.on('error', end).on('close', end);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const proxied = new URL(ctx.url);
    proxied.hostname = '127.0.0.1';
    proxied.port = String((server.address() as net.AddressInfo).port);
    const heartbeatMs = 1_000;
    const lost: string[] = [];
    const quiet: Logger = { error() {}, warn() {}, info() {}, debug() {}, child: () => quiet };
    const workerId = `late-${ctx.schema.slice(-6)}`;
    const pool = new pg.Pool({ connectionString: ctx.url, max: 3 });
    const lease: Lease = new Lease(
      {
        workerId, queues: ['default'], tasks: [], concurrency: 1, heartbeatMs, rescueAfterMs: 4 * heartbeatMs, stallWarnMs: 60_000, held: null,
        connection: { connectionString: proxied.toString(), keepAlive: true, connectionTimeoutMillis: heartbeatMs, query_timeout: heartbeatMs },
      },
      fromPg(pool),
      createStatements(ctx.schema),
      quiet,
      {
        // As the worker does: register again under a new id.
        lost: (id) => {
          lost.push(id);
          void lease.reregister().then(() => lease.adopted());
        },
        stall: () => undefined,
      },
    );
    const beat = async (): Promise<string> =>
      String((await ctx.admin.query(`SELECT last_heartbeat_at FROM "${ctx.schema}".workers WHERE id = $1`, [workerId])).rows[0]?.last_heartbeat_at);
    try {
      await lease.start();
      await lease.register();
      await lease.running;
      const first = await beat();
      await until(async () => (await beat()) !== first, { what: 'a renewal by the thread' });
      // The thread's answers now come 800 ms late, and the row goes (as a rescue removes it):
      // the pool finds it gone first, and the worker registers again while the thread's renewal is on its way.
      delayMs = 800;
      await ctx.admin.query(`DELETE FROM "${ctx.schema}".workers WHERE id = $1`, [workerId]);
      await new Promise((r) => setTimeout(r, 4 * heartbeatMs));
      expect(lost).toEqual([workerId]);
      expect(lease.workerId).toBe(`${workerId}~2`);
    } finally {
      await lease.stop();
      await pool.end();
      sockets.forEach((s) => s.destroy());
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await ctx.admin.query(`DELETE FROM "${ctx.schema}".workers WHERE id LIKE $1`, [`${workerId}%`]);
    }
  });

  it('a worker with a fixed id whose row another process registered since (it froze past its lease) finds its lease lost: it neither renews nor removes that row', async () => {
    const { pgq, noop, worker, schema } = await startFixedWorker('fixed', { leader: false, rescueAfterMs: 60_000 });
    const workers = `${schema}.workers`;
    try {
      // What a rescue and then a new process with the same id leave: the row removed, and one of that id
      // registered again, in one transaction, so the worker's renewals see one row or the other, never none.
      const other = await ctx.admin.connect();
      try {
        await other.query('BEGIN');
        await other.query(`DELETE FROM ${workers} WHERE id = 'fixed'`);
        await other.query(registeredElsewhere(workers, 'fixed', 'fixed', '2000-01-01T00:00:00Z'));
        await other.query('COMMIT');
      } finally {
        other.release();
      }
      const rows = async () => (await ctx.admin.query<{ id: string; hostname: string; last_heartbeat_at: Date }>(
        `SELECT id, hostname, last_heartbeat_at FROM ${workers} WHERE id LIKE 'fixed%' ORDER BY id`,
      )).rows;
      // worker.id names the new id as the registration is sent: wait for its row.
      await until(async () => worker.id === 'fixed~2' && (await rows()).length === 2, { what: 'the worker registering again', timeoutMs: 5_000 });
      const before = await rows();
      expect(before.map((r) => [r.id, r.hostname])).toEqual([['fixed', 'elsewhere'], ['fixed~2', os.hostname()]]);
      expect(before[0]!.last_heartbeat_at.toISOString()).toBe('2000-01-01T00:00:00.000Z');
      // It works on under its new id.
      const job = await pgq.enqueue(noop, {});
      expect(await pgq.waitForJob(job.id, { timeoutMs: 10_000 })).toMatchObject({ state: 'succeeded', workerId: 'fixed~2' });
      await worker.stop();
      const after = await rows();
      expect(after.map((r) => [r.id, r.hostname, r.last_heartbeat_at.toISOString()])).toEqual([['fixed', 'elsewhere', '2000-01-01T00:00:00.000Z']]);
    } finally {
      await worker.stop();
      await ctx.admin.query(`DELETE FROM ${workers} WHERE id LIKE 'fixed%'`);
    }
  });

  it("health() does not take another process's registration of its fixed id for its own lease", async () => {
    // Renewals 20 s apart: the worker has not noticed yet when its health is asked. Not a leader: its lease row would
    // outlive it (its release leaves a row whose id another process holds) and hold back the next test's leader.
    const { worker, schema } = await startFixedWorker('fixed-health', { heartbeatMs: 20_000, rescueAfterMs: 60_000, leader: false });
    try {
      expect((await worker.health()).checks.lease).toEqual({ ok: true });
      const other = await ctx.admin.connect();
      try {
        await other.query('BEGIN');
        await other.query(`DELETE FROM ${schema}.workers WHERE id = 'fixed-health'`);
        await other.query(registeredElsewhere(`${schema}.workers`, 'fixed-health', 'fixed-health'));
        await other.query('COMMIT');
      } finally {
        other.release();
      }
      // That row's lease runs an hour: read by id alone, it looked like this worker's, live.
      expect((await worker.health()).checks.lease).toMatchObject({ ok: false, message: expect.stringMatching(/another process registered the id since/) });
    } finally {
      await worker.stop();
      await ctx.admin.query(`DELETE FROM ${schema}.workers WHERE id LIKE 'fixed-health%'`);
    }
  });

  it('a leader with a fixed id whose row another process registered since does not renew that process leadership: it steps down and leaves the row alone', async () => {
    const { worker, schema } = await startFixedWorker('fixed-leader', { rescueAfterMs: 60_000 });
    try {
      await until(() => worker.isLeader, { what: 'the worker to lead', timeoutMs: 10_000 });
      // Another process took the id (its row registered again) and holds the leadership under it until a fixed time.
      // Its transaction stays open for five of the worker's election rounds: a round that began meanwhile read the
      // worker's row as it stood before and waited on the leader row; let through once the takeover commits, it
      // renewed that process's lease as its own.
      const other = await ctx.admin.connect();
      try {
        await other.query('BEGIN');
        await other.query(`DELETE FROM ${schema}.workers WHERE id = 'fixed-leader'`);
        await other.query(registeredElsewhere(`${schema}.workers`, 'fixed-leader', 'fixed-leader'));
        await other.query(`UPDATE ${schema}.leader SET expires_at = '2100-01-01T00:00:00Z' WHERE name = 'maintenance'`);
        await new Promise((r) => setTimeout(r, 500));
        await other.query('COMMIT');
      } finally {
        await other.query('ROLLBACK').catch(() => undefined);
        other.release();
      }
      await until(() => !worker.isLeader, { what: 'the worker to step down', timeoutMs: 5_000 });
      await until(() => worker.id === 'fixed-leader~2', { what: 'the worker registering again', timeoutMs: 5_000 });
      await new Promise((r) => setTimeout(r, 500));
      expect(worker.isLeader).toBe(false);
      const leader = async () => (await ctx.admin.query<{ leader_id: string; expires_at: Date }>(`SELECT leader_id, expires_at FROM ${schema}.leader`)).rows;
      expect((await leader()).map((r) => [r.leader_id, r.expires_at.toISOString()])).toEqual([['fixed-leader', '2100-01-01T00:00:00.000Z']]);
      await worker.stop();
      expect((await leader()).map((r) => r.leader_id)).toEqual(['fixed-leader']);
    } finally {
      await worker.stop();
      await ctx.admin.query(`DELETE FROM ${schema}.workers WHERE id LIKE 'fixed-leader%'`);
      await ctx.admin.query(`DELETE FROM ${schema}.leader`);
    }
  });

  it("a leader's release at stop leaves the lease another process took under its fixed id while the release waited on it", async () => {
    // Renewals 20 s apart: the worker is still leader when it stops (an election round would end it first).
    const { worker, schema } = await startFixedWorker('fixed-release', { heartbeatMs: 20_000, rescueAfterMs: 60_000 });
    try {
      await until(() => worker.isLeader, { what: 'the worker to lead', timeoutMs: 10_000 });
      // The takeover holds the leader row while the stop's release begins: the release read the workers as they stood
      // before it committed (no other registration), and once let through it deleted the lease renewed under it.
      await stopWhileHolding(
        worker,
        `DELETE FROM ${schema}.workers WHERE id = 'fixed-release';
         ${registeredElsewhere(`${schema}.workers`, 'fixed-release', 'fixed-release')};
         UPDATE ${schema}.leader SET expires_at = '2100-01-01T00:00:00Z' WHERE name = 'maintenance';`,
        500,
      );
      const rows = await ctx.admin.query<{ leader_id: string; expires_at: Date }>(`SELECT leader_id, expires_at FROM ${schema}.leader`);
      expect(rows.rows.map((r) => [r.leader_id, r.expires_at.toISOString()])).toEqual([['fixed-release', '2100-01-01T00:00:00.000Z']]);
    } finally {
      await worker.stop();
      await ctx.admin.query(`DELETE FROM ${schema}.workers WHERE id LIKE 'fixed-release%'`);
      await ctx.admin.query(`DELETE FROM ${schema}.leader`);
    }
  });

  it('a registration again after a lost lease that lands after the stop gave up waiting for it is removed too, not left listed as live', async () => {
    const { worker, schema } = await startFixedWorker('late-reg', { leader: false, rescueAfterMs: 2_000 });
    const blocker = await ctx.admin.connect();
    try {
      await until(async () => (await ctx.admin.query(`SELECT 1 FROM ${schema}.workers WHERE id = 'late-reg'`)).rowCount === 1, { what: 'the registration' });
      // An uncommitted row of the next id: the worker's registration again, once its lease is lost, waits for this transaction.
      await blocker.query('BEGIN');
      await blocker.query(registeredElsewhere(`${schema}.workers`, 'late-reg~2', 'late-reg'));
      await ctx.admin.query(`DELETE FROM ${schema}.workers WHERE id = 'late-reg'`);
      await until(() => worker.id === 'late-reg~2', { what: 'the worker to register again (held back)', timeoutMs: 5_000 });
      // The stop waits for that registration for its limit (5 s), then ends.
      await worker.stop();
      // Now it lands: the row the worker registered is removed after it.
      await blocker.query('ROLLBACK');
      await until(async () => (await ctx.admin.query(`SELECT 1 FROM ${schema}.workers WHERE id LIKE 'late-reg%'`)).rowCount === 0, {
        what: 'the late registration removed',
        timeoutMs: 5_000,
      });
    } finally {
      await blocker.query('ROLLBACK').catch(() => undefined);
      blocker.release();
      await worker.stop();
      await ctx.admin.query(`DELETE FROM ${schema}.workers WHERE id LIKE 'late-reg%'`);
    }
  }, 40_000);

  it('a fixed-id leader whose row another process registered since, with no leader row left, does not take the leadership under that id', async () => {
    const { worker, schema } = await startFixedWorker('fixed-none', { rescueAfterMs: 60_000 });
    const seen = new Set<string>();
    // Each look counts only if it began after the last clear: one sent before may answer after it.
    let generation = 0;
    let watching = true;
    const watch = (async () => {
      while (watching) {
        const began = generation;
        const { rows } = await ctx.admin.query<{ leader_id: string }>(`SELECT leader_id FROM ${schema}.leader`);
        if (began === generation) for (const r of rows) seen.add(r.leader_id);
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    })();
    try {
      await until(() => worker.isLeader, { what: 'the worker to lead', timeoutMs: 10_000 });
      // Another process took the id (its row registered again), and the leadership row is gone (expired and
      // removed). Then, in the same breath, for a second the worker's renewals wait (they write workers: SHARE
      // mode holds them; the election's FOR KEY SHARE lock of its row goes through it): it has not yet found its
      // lease lost, and its election runs ten times meanwhile. (The leadership table is held while the takeover
      // commits, so no election is under way across it; the test above holds one across it.)
      const holder = await ctx.admin.connect();
      try {
        await holder.query(
          `BEGIN;
           LOCK TABLE ${schema}.leader IN SHARE MODE;
           DELETE FROM ${schema}.workers WHERE id = 'fixed-none';
           DELETE FROM ${schema}.leader;
           ${registeredElsewhere(`${schema}.workers`, 'fixed-none', 'fixed-none')};
           COMMIT;
           BEGIN;
           LOCK TABLE ${schema}.workers IN SHARE MODE;`,
        );
        generation += 1;
        seen.clear();
        await new Promise((resolve) => setTimeout(resolve, 1_000));
        await holder.query('COMMIT');
      } finally {
        holder.release();
      }
      await until(() => worker.id === 'fixed-none~2', { what: 'the worker registering again', timeoutMs: 5_000 });
      await new Promise((resolve) => setTimeout(resolve, 300));
      // Never under the id the other process registered: at most under its own new registration.
      expect([...seen].filter((id) => id !== 'fixed-none~2')).toEqual([]);
    } finally {
      watching = false;
      await watch;
      await worker.stop();
      await ctx.admin.query(`DELETE FROM ${schema}.workers WHERE id LIKE 'fixed-none%'`);
      await ctx.admin.query(`DELETE FROM ${schema}.leader`);
    }
  });

  it('a leader whose leadership row is held up for longer than a heartbeat when it stops still releases it: a successor need not wait out the lease', async () => {
    const { worker, schema } = await startFixedWorker('releasing', { rescueAfterMs: 60_000 });
    await until(() => worker.isLeader, { what: 'the worker to lead', timeoutMs: 10_000 });
    // The row locked for two seconds (twice the election's statement limit) while the worker stops.
    await stopWhileHolding(worker, `SELECT 1 FROM ${schema}.leader FOR UPDATE;`, 2_000);
    expect((await ctx.admin.query(`SELECT leader_id FROM ${schema}.leader`)).rows).toEqual([]);
    await ctx.admin.query(`DELETE FROM ${schema}.workers WHERE id = 'releasing'`);
  });

  it('a stopping fixed-id leader does not release the leadership once another process has registered its id (that process may lead under it)', async () => {
    const { worker, schema } = await startFixedWorker('fixed-release', { rescueAfterMs: 60_000 });
    try {
      await until(() => worker.isLeader, { what: 'the worker to lead', timeoutMs: 10_000 });
      // The leadership table held (reads allowed, writes wait): the worker's elections wait and time out, and it
      // stays leader within its trust window. Meanwhile another process registers the id. Held for three
      // seconds: the election waiting when the stop began ends on its 1 s limit (and the cancel), not by
      // finding the registration gone after the lock (then it would step down, and never release).
      await stopWhileHolding(worker, `LOCK TABLE ${schema}.leader IN SHARE MODE;`, 3_000, async () => {
        await ctx.admin.query(`BEGIN; DELETE FROM ${schema}.workers WHERE id = 'fixed-release'; ${registeredElsewhere(`${schema}.workers`, 'fixed-release', 'fixed-release')}; COMMIT;`);
        expect(worker.isLeader).toBe(true);
      });
      expect((await ctx.admin.query(`SELECT leader_id FROM ${schema}.leader`)).rows).toEqual([{ leader_id: 'fixed-release' }]);
    } finally {
      await worker.stop();
      await ctx.admin.query(`DELETE FROM ${schema}.workers WHERE id LIKE 'fixed-release%'`);
      await ctx.admin.query(`DELETE FROM ${schema}.leader`);
    }
  });

  it('a worker whose row is held up for longer than a heartbeat when it stops still removes it, rather than stay listed as live until its lease runs out', async () => {
    const { worker, schema } = await startFixedWorker('deregistering', { leader: false, rescueAfterMs: 60_000 });
    // The row's removal held up for two seconds (twice a heartbeat-bound statement's limit) while the
    // worker stops; its renewals, which change no key, go on meanwhile.
    await stopWhileHolding(worker, `SELECT 1 FROM ${schema}.workers WHERE id = 'deregistering' FOR KEY SHARE;`, 2_000);
    expect((await ctx.admin.query(`SELECT id FROM ${schema}.workers WHERE id LIKE 'deregistering%'`)).rows).toEqual([]);
  });

  it('claims, the reconcile and the lease thread give-back of a process whose id another process has registered since touch nothing of that process', async () => {
    const noop = defineTask({ name: 'fx-noop', queue: 'fx-plain', schema: z.object({}), handler: () => 'ok' });
    const pgq = await ctx.migrated({ tasks: [noop] });
    await pgq.setQueue('fx-limited', { concurrency: 10 });
    const statements = createStatements(ctx.schema);
    const queueStatements = createQueueStatements(ctx.schema);
    const db = fromPg(ctx.admin);
    const workers = `"${ctx.schema}".workers`;
    const register = async (): Promise<string> =>
      (await statements.registerWorker(db, { workerId: 'fx', hostname: 'h', pid: 1, queues: ['fx-plain', 'fx-limited'], concurrency: 10, rescueAfterMs: 60_000 }))!.registeredAt;
    const mine = await register();
    // The row removed (a rescue) and the id registered again by another process.
    await ctx.admin.query(`DELETE FROM ${workers} WHERE id = 'fx'`);
    const theirs = await register();
    expect(theirs).not.toBe(mine);
    await pgq.enqueueMany(noop, [{}, {}, {}, {}]);
    await pgq.enqueueMany(noop, [{}, {}], { queue: 'fx-limited' });
    // The other process claims two jobs of each queue under the id.
    const taken = await statements.claimJobs(db, { queues: ['fx-plain'], tasks: ['fx-noop'], limit: 2, workerId: 'fx', registeredAt: theirs });
    const takenLimited = await queueStatements.claimLimited(db, { queue: 'fx-limited', tasks: ['fx-noop'], limit: 1, workerId: 'fx', registeredAt: theirs });
    expect(taken).toHaveLength(2);
    expect(takenLimited.claimed).toHaveLength(1);
    const theirIds = [...taken, ...takenLimited.claimed].map((r) => String(r.id));
    // The first process, under its old registration: no claim of either kind, and nothing of the other's given back.
    expect(await statements.claimJobs(db, { queues: ['fx-plain'], tasks: ['fx-noop'], limit: 10, workerId: 'fx', registeredAt: mine })).toEqual([]);
    expect(await statements.claimJobs(db, { queues: ['fx-plain', 'fx-limited'], tasks: ['fx-noop'], limit: 10, workerId: 'fx', registeredAt: mine })).toEqual([]);
    expect((await queueStatements.claimLimited(db, { queue: 'fx-limited', tasks: ['fx-noop'], limit: 10, workerId: 'fx', registeredAt: mine })).claimed).toEqual([]);
    expect(await statements.releaseOrphans(db, { workerId: 'fx', registeredAt: mine, heldIds: [] })).toEqual([]);
    const { rows: held } = await ctx.admin.query<{ n: number }>({ text: statements.releaseHeldText, values: ['fx', theirIds, 0, mine] });
    expect(held[0]!.n).toBe(0);
    const states = async () => (await ctx.admin.query<{ state: string; n: number }>(
      `SELECT state, count(*)::int AS n FROM "${ctx.schema}".jobs WHERE task = 'fx-noop' GROUP BY state ORDER BY state`,
    )).rows;
    expect(await states()).toEqual([{ state: 'available', n: 3 }, { state: 'running', n: 3 }]);
    // Under the registration that holds the row, the same give-back does take them.
    expect(await statements.releaseOrphans(db, { workerId: 'fx', registeredAt: theirs, heldIds: [] })).toHaveLength(3);
    expect(await states()).toEqual([{ state: 'available', n: 6 }]);
    await ctx.admin.query(`DELETE FROM ${workers} WHERE id = 'fx'`);
  });

  it.each(['the reconcile', "the lease thread's give-back"] as const)(
    '%s of a process whose id another process takes over while it waits on the job gives back nothing of that process',
    async (which) => {
      const noop = defineTask({ name: 'fx-wait-noop', queue: 'fx-wait', schema: z.object({}), handler: () => 'ok' });
      const pgq = await ctx.migrated({ tasks: [noop] });
      const statements = createStatements(ctx.schema);
      const db = fromPg(ctx.admin);
      const workers = `"${ctx.schema}".workers`;
      const register = async (on = db): Promise<string> =>
        (await statements.registerWorker(on, { workerId: 'fxw', hostname: 'h', pid: 1, queues: ['fx-wait'], concurrency: 1, rescueAfterMs: 60_000 }))!.registeredAt;
      await ctx.admin.query(`DELETE FROM ${workers} WHERE id = 'fxw'`);
      const mine = await register();
      // A job running under the id that the first process does not hold (its claim's reply lost, say).
      const job = await pgq.enqueue(noop, {});
      await ctx.admin.query(`UPDATE "${ctx.schema}".jobs SET state = 'running', attempts = 1, started_at = now(), worker_id = 'fxw' WHERE id = $1`, [job.id]);
      // Another process takes the id over in one transaction, held open: the row removed (a rescue), the id
      // registered again, the job claimed again under it (its next attempt).
      const takeover = await ctx.admin.connect();
      try {
        await takeover.query('BEGIN');
        await takeover.query(`DELETE FROM ${workers} WHERE id = 'fxw'`);
        await register(fromPg(takeover));
        await takeover.query(`UPDATE "${ctx.schema}".jobs SET attempts = 2, started_at = now() WHERE id = $1`, [job.id]);
        // The first process's give-back begins meanwhile: its snapshot still has its own registration.
        const given =
          which === 'the reconcile'
            ? statements.releaseOrphans(db, { workerId: 'fxw', registeredAt: mine, heldIds: [] }).then((rows) => rows.length)
            : ctx.admin.query<{ n: number }>({ text: statements.releaseHeldText, values: ['fxw', [job.id], 0, mine] }).then((r) => r.rows[0]!.n);
        given.catch(() => undefined);
        await until(
          async () => (await ctx.admin.query(`SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%released AS%' AND query LIKE '%${ctx.schema}%'`)).rowCount === 1,
          { what: 'the give-back to wait on the takeover' },
        );
        await takeover.query('COMMIT');
        // Had it read its registration from its snapshot (as before), the registration would have let it through,
        // and the job's row, read again once the takeover committed, would have looked like its own: it gave back
        // the other process's attempt.
        expect(await given).toBe(0);
        expect((await pgq.getJob(job.id))!).toMatchObject({ state: 'running', attempts: 2, workerId: 'fxw' });
      } finally {
        await takeover.query('ROLLBACK').catch(() => undefined);
        takeover.release();
        await ctx.admin.query(`DELETE FROM ${workers} WHERE id = 'fxw'`);
        await ctx.admin.query(`DELETE FROM "${ctx.schema}".jobs WHERE id = $1`, [job.id]);
      }
    },
  );

  it("a limited claim that waits on its queue's row while its lease runs out and another process takes the id over claims nothing under that process's registration", async () => {
    const noop = defineTask({ name: 'fx-lim-noop', queue: 'fx-lim', schema: z.object({}), handler: () => 'ok' });
    const pgq = await ctx.migrated({ tasks: [noop] });
    await pgq.setQueue('fx-lim', { concurrency: 5 });
    const statements = createStatements(ctx.schema);
    const queueStatements = createQueueStatements(ctx.schema);
    const workers = `"${ctx.schema}".workers`;
    const register = async (on: pg.PoolClient | pg.Pool, rescueAfterMs: number): Promise<string> =>
      (await statements.registerWorker(fromPg(on), { workerId: 'fxl', hostname: 'h', pid: 1, queues: ['fx-lim'], concurrency: 5, rescueAfterMs }))!.registeredAt;
    await ctx.admin.query(`DELETE FROM ${workers} WHERE id = 'fxl'`);
    const mine = await register(ctx.admin, 1_000);
    const job = await pgq.enqueue(noop, {});
    const holder = await ctx.admin.connect();
    const takeover = await ctx.admin.connect();
    let takenOver: Promise<string> | undefined;
    try {
      // Another claim holds the queue's row; this process's claim waits for it.
      await holder.query('BEGIN');
      await holder.query(`SELECT 1 FROM "${ctx.schema}".queues WHERE name = 'fx-lim' FOR UPDATE`);
      const claimed = queueStatements.claimLimited(fromPg(ctx.admin), { queue: 'fx-lim', tasks: ['fx-lim-noop'], limit: 5, workerId: 'fxl', registeredAt: mine });
      claimed.catch(() => undefined);
      await until(
        async () => (await ctx.admin.query(`SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%claim_limited%' AND query LIKE '%${ctx.schema}%'`)).rowCount === 1,
        { what: 'the claim to wait on the queue row' },
      );
      // Meanwhile its lease runs out, and another process takes the id over: the row removed (a rescue), the id
      // registered again with a live lease. (Once the claim holds its registration, the removal waits for it.)
      await new Promise((resolve) => setTimeout(resolve, 1_200));
      takenOver = (async () => {
        await takeover.query('BEGIN');
        await takeover.query(`DELETE FROM ${workers} WHERE id = 'fxl'`);
        const theirs = await register(takeover, 60_000);
        await takeover.query('COMMIT');
        return theirs;
      })();
      takenOver.catch(() => undefined);
      await new Promise((resolve) => setTimeout(resolve, 300));
      await holder.query('COMMIT');
      // Had its registration only been read (as before), its lease would have been tested by id alone once the
      // queue's row was free, and the other process's live lease let it claim under that process's registration.
      expect((await claimed).claimed).toEqual([]);
      expect(await takenOver).not.toBe(mine);
      expect((await pgq.getJob(job.id))!.state).toBe('available');
    } finally {
      await holder.query('ROLLBACK').catch(() => undefined);
      // The takeover's statements end first (they wait for the claim, which waited for the holder).
      await takenOver?.catch(() => undefined);
      await takeover.query('ROLLBACK').catch(() => undefined);
      holder.release();
      takeover.release();
      await ctx.admin.query(`DELETE FROM ${workers} WHERE id = 'fxl'`);
      await ctx.admin.query(`DELETE FROM "${ctx.schema}".jobs WHERE id = $1`, [job.id]);
      await ctx.admin.query(`DELETE FROM "${ctx.schema}".queues WHERE name = 'fx-lim'`);
    }
  });

  it('a worker of a fixed id gives back, at start, jobs an earlier process of that id left running (an outcome given up, its row deleted): its lease kept the rescuer from them', async () => {
    const task = defineTask({ name: 'fixed-left', queue: 'fixed-left', schema: z.object({}), handler: () => 'ran' });
    const pgq = await ctx.migrated({ tasks: [task] });
    const job = await pgq.enqueue(task, {});
    await ctx.admin.query(`UPDATE "${ctx.schema}".jobs SET state = 'running', attempts = 1, started_at = now() - interval '1 minute', worker_id = 'fixed-id' WHERE id = $1`, [job.id]);
    // A poll interval of an hour and a long lease: nothing but the start's look gives it back in time.
    const worker = pgq.worker({ id: 'fixed-id', queues: ['fixed-left'], pollIntervalMs: 3_600_000, rescueAfterMs: 600_000, leader: false });
    await worker.start();
    try {
      expect(await pgq.waitForJob(job.id, { timeoutMs: 10_000 })).toMatchObject({ state: 'succeeded', result: 'ran', attempts: 1 });
    } finally {
      await worker.stop();
    }
  });

  it('a claim over several queues locks only the rows it takes', async () => {
    const q = defineTask({ name: 'multi', schema: z.object({ q: z.string() }), handler: () => undefined });
    const pgq = await ctx.migrated({ tasks: [q] });
    const queues = ['q1', 'q2', 'q3', 'q4'];
    for (const queue of queues) await pgq.enqueueMany(q, [{ q: queue }, { q: queue }], { queue });
    const statements = createStatements(ctx.schema);
    const holder = await ctx.admin.connect();
    try {
      await statements.registerWorker(fromPg(holder), {
        workerId: 'multi-claimer', hostname: 'h', pid: 1, queues, concurrency: 2, rescueAfterMs: 60_000,
      });
      await holder.query('BEGIN');
      const claimed = await statements.claimJobs(fromPg(holder), { queues, tasks: ['multi'], limit: 2, workerId: 'multi-claimer' });
      expect(claimed).toHaveLength(2);
      // While that claim is uncommitted, every other row is still claimable.
      const other = await ctx.admin.connect();
      try {
        await other.query('BEGIN');
        const free = await other.query(`SELECT id FROM "${ctx.schema}".jobs WHERE state = 'available' AND task = 'multi' FOR UPDATE SKIP LOCKED`);
        expect(free.rowCount).toBe(6);
        await other.query('ROLLBACK');
      } finally {
        other.release();
      }
      await holder.query('ROLLBACK');
    } finally {
      holder.release();
    }
  });
});

describe('waits and start keep their time limits while the listener is down', () => {
  it('waitForJob times out on time and worker.start() resolves when LISTEN cannot connect', async () => {
    const idle = defineTask({ name: 'idle', schema: z.object({}), handler: () => 'done' });
    await ctx.migrated({ tasks: [idle] });
    const pgq = ctx.pgq({ tasks: [idle], listenConnectionString: 'postgres://pgq@127.0.0.1:9/nowhere' });
    const job = await pgq.enqueue(idle, {}, { delayMs: 60_000 });
    const t0 = performance.now();
    await expect(pgq.waitForJob(job.id, { timeoutMs: 500 })).rejects.toThrow(/still scheduled after 500 ms/);
    expect(performance.now() - t0).toBeLessThan(10_000);
    const worker = pgq.worker({ pollIntervalMs: 50 });
    await worker.start(); // polls instead of waiting for LISTEN
    const now = await pgq.enqueue(idle, {});
    expect((await pgq.waitForJob(now.id, { timeoutMs: 10_000 })).result).toBe('done');
    await worker.stop();
  });
});

describe('schema version', () => {
  it('a worker refuses to start on a schema that is not migrated, and changes nothing', async () => {
    const t = defineTask({ name: 't', schema: z.object({}), handler: () => undefined });
    const pgq = ctx.pgq({ tasks: [t], schema: `${ctx.schema}_unmigrated` });
    await expect(pgq.worker().start()).rejects.toThrow(/schema .*_unmigrated is not migrated .*run pgq migrate/);
    const { rowCount } = await ctx.admin.query(`SELECT 1 FROM pg_namespace WHERE nspname = $1`, [`${ctx.schema}_unmigrated`]);
    expect(rowCount).toBe(0);
  });

  it('calls on a schema that is not migrated say so and how to fix it, not that a relation does not exist', async () => {
    const t = defineTask({ name: 't', schema: z.object({}), handler: () => undefined });
    const schema = `${ctx.schema}_bare`;
    const pgq = ctx.pgq({ tasks: [t], schema });
    for (const call of [() => pgq.enqueue(t, {}), () => pgq.getJob('1'), () => pgq.listJobs({}), () => pgq.listQueues(), () => pgq.pauseQueue('q'), () => pgq.listSchedules()]) {
      const err = await call().then(() => null, (e: unknown) => e);
      expect(err).toMatchObject({ code: 'PGQ_SCHEMA_NOT_READY', message: expect.stringMatching(new RegExp(`^schema ${schema} is not migrated.*run pgq migrate`)) });
      expect((err as Error).cause).toMatchObject({ code: '42P01' });
    }
    // An error that is not about pgq's schema is the caller's own, unchanged:
    // another schema, one whose name ends with pgq's, or on a migrated schema
    // a missing object of the caller's in pgq's own.
    const refused = (message: string) => ({ query: () => Promise.reject(Object.assign(new Error(message), { code: '42P01' })) });
    const migrated = await ctx.migrated({ tasks: [t] });
    for (const [client, message] of [
      [pgq, 'relation "mine.orders" does not exist'],
      [pgq, `relation "x${schema}.audit" does not exist`],
      [migrated, `relation "${ctx.schema}.audit" does not exist`],
    ] as const) {
      const own = await client.enqueue(t, {}, { db: refused(message) }).then(() => null, (e: unknown) => e);
      expect(own).toMatchObject({ code: '42P01', message });
    }
    expect((await ctx.admin.query(`SELECT 1 FROM pg_namespace WHERE nspname = $1`, [schema])).rowCount).toBe(0);
  });

  it('a worker refuses a schema that is behind this pgq, naming both versions', async () => {
    const t = defineTask({ name: 't2', schema: z.object({}), handler: () => undefined });
    const pgq = await ctx.migrated({ tasks: [t] });
    const { rows } = await ctx.admin.query<{ name: string }>(`SELECT name FROM "${ctx.schema}".pgq_migrations ORDER BY name DESC LIMIT 1`);
    await ctx.admin.query(`DELETE FROM "${ctx.schema}".pgq_migrations WHERE name = $1`, [rows[0]!.name]);
    try {
      await expect(pgq.worker().start()).rejects.toThrow(/is at version \d+, this pgq needs \d+ .*run pgq migrate/);
    } finally {
      await ctx.admin.query(`INSERT INTO "${ctx.schema}".pgq_migrations (name, run_on) VALUES ($1, now())`, [rows[0]!.name]);
    }
  });
});

describe('worker processes', () => {
  const hog = defineTask({
    name: 'hog',
    schema: z.object({ ms: z.number().int().min(0), mode: z.enum(['block', 'wait-sync', 'ignore-abort']), untilFile: z.string().optional() }),
    maxAttempts: 5,
    handler: () => undefined,
  });
  const env = (extra: Record<string, string> = {}): Record<string, string> => ({
    PGQ_URL: ctx.url,
    PGQ_SCHEMA: ctx.schema,
    PGQ_HEARTBEAT_MS: '500',
    PGQ_RESCUE_AFTER_MS: '2000',
    PGQ_POLL_MS: '100',
    ...extra,
  });

  it('a handler computing on the main thread for 3× rescueAfterMs runs once and succeeds; no success is reported for a discarded attempt', async () => {
    const pgq = await ctx.migrated({ tasks: [hog] });
    await createLedger(ctx.admin, ctx.schema);
    await ctx.admin.query(`TRUNCATE "${ctx.schema}".ledger`);
    const workers = [spawnWorker(env()), spawnWorker(env())];
    await Promise.all(workers.map((w) => w.waitFor((e) => e.event === 'ready')));
    const job = await pgq.enqueue(hog, { ms: 6_000, mode: 'block' });
    const done: JobRecord = await pgq.waitForJob(job.id, { timeoutMs: 60_000 });
    expect(done).toMatchObject({ state: 'succeeded', attempts: 1, errors: [] });
    const { rows } = await ctx.admin.query(`SELECT attempt, pid FROM "${ctx.schema}".ledger WHERE job_id = $1`, [job.id]);
    expect(rows).toHaveLength(1);
    expect(await overlappingRuns(ctx.admin, ctx.schema)).toBe(0);
    for (const w of workers) w.child.kill('SIGTERM');
    await Promise.all(workers.map((w) => w.exited));
    const events = workers.flatMap((w) => w.events).filter((e) => e.id === job.id);
    expect(events.filter((e) => e.event === 'success')).toHaveLength(1);
    expect(events.filter((e) => e.event === 'discarded')).toHaveLength(0);
    // The blocked worker's stall was reported while it was blocked, off the main thread.
    expect(workers.some((w) => /event loop has been blocked for \d+ ms \(running: hog ×1\)/.test(w.stderr()))).toBe(true);
  });

  it('the report of a blocked event loop names the handler that blocked it, even when it started right after another', async () => {
    const ledgerTask = defineTask({ name: 'ledger', schema: z.object({ sleepMs: z.number().int().min(0) }), handler: () => undefined });
    const pgq = await ctx.migrated({ tasks: [hog, ledgerTask] });
    await createLedger(ctx.admin, ctx.schema);
    await ctx.admin.query(`TRUNCATE "${ctx.schema}".ledger`);
    // A warning after 1.5 s of a 4 s block (the default, 5 s, took a 6 s block).
    const worker = spawnWorker(env({ PGQ_CONCURRENCY: '2', PGQ_RESCUE_AFTER_MS: '10000', PGQ_STALL_WARN_MS: '1500' }));
    await worker.waitFor((e) => e.event === 'ready');
    // One claim takes both, in id order: the ledger job starts (and is reported), then the hog, within 250 ms.
    const client = await ctx.admin.connect();
    let hogJob: JobRecord;
    try {
      await client.query('BEGIN');
      await pgq.enqueue(ledgerTask, { sleepMs: 0 }, { priority: 10, db: client });
      hogJob = await pgq.enqueue(hog, { ms: 4_000, mode: 'block' }, { db: client });
      await client.query('COMMIT');
    } finally {
      client.release();
    }
    await pgq.waitForJob(hogJob.id, { timeoutMs: 60_000 });
    expect(worker.stderr()).toMatch(/event loop has been blocked for \d+ ms \(running: [^)]*hog ×1/);
  });

  it('a handler that blocks the event loop waiting, not computing (execSync, Atomics.wait), is reported as a synchronous wait or a paused process, not as CPU-bound work', async () => {
    const pgq = await ctx.migrated({ tasks: [hog] });
    await createLedger(ctx.admin, ctx.schema);
    await ctx.admin.query(`TRUNCATE "${ctx.schema}".ledger`);
    // A warning well after the lease thread's check interval (500 ms here): the CPU it counts is the stall's, not the last interval's.
    const worker = spawnWorker(env({ PGQ_LOG_LEVEL: 'warn', PGQ_STALL_WARN_MS: '2500', PGQ_RESCUE_AFTER_MS: '10000' }));
    await worker.waitFor((e) => e.event === 'ready');
    const waiting = await pgq.enqueue(hog, { ms: 4_000, mode: 'wait-sync' });
    await pgq.waitForJob(waiting.id, { timeoutMs: 60_000 });
    await until(() => /did not run for \d+ ms while the process used little CPU/.test(worker.stderr()) || null, { timeoutMs: 20_000 });
    expect(worker.stderr()).toMatch(/event loop has not run for \d+ ms \(running: hog ×1\), and the process used little CPU meanwhile \(\d+ ms\): a handler waiting synchronously/);
    expect(worker.stderr()).not.toMatch(/blocked for|CPU-bound/);
    // Paused whole (a suspended VM): not blamed on a handler either (the lease thread, paused too, may see it or not).
    process.kill(worker.child.pid!, 'SIGSTOP');
    await new Promise((resolve) => setTimeout(resolve, 2_500));
    process.kill(worker.child.pid!, 'SIGCONT');
    const paused = await pgq.enqueue(hog, { ms: 0, mode: 'wait-sync' });
    await pgq.waitForJob(paused.id, { timeoutMs: 60_000 });
    expect(worker.stderr()).not.toMatch(/blocked for|CPU-bound/);
    // Computing: reported as before.
    const computing = await pgq.enqueue(hog, { ms: 4_000, mode: 'block' });
    await pgq.waitForJob(computing.id, { timeoutMs: 60_000 });
    await until(() => /event loop was blocked for \d+ ms; CPU-bound handlers belong in a sandbox/.test(worker.stderr()) || null, { timeoutMs: 20_000 });
    expect(worker.stderr()).toMatch(/event loop has been blocked for \d+ ms \(running: hog ×1\); its lease is still renewed/);
    // The CPU counted is the stall's own, from the loop's last tick: most of the stall for a computing handler (it
    // was the last check interval's alone, a small part of it).
    const reports = worker.stderr().split('\n').filter((l) => l.includes('"cpuMs"')).map((l) => JSON.parse(l) as { lagMs: number; cpuMs: number; runnableMs: number | null; msg: string });
    const computed = reports.find((r) => r.msg.includes('has been blocked'))!;
    // Where the kernel says how long the main thread ran or waited to run, that (the process's CPU time is
    // load-dependent: a computing handler on a busy host gets a part of a core).
    expect(computed.runnableMs ?? computed.cpuMs).toBeGreaterThan(computed.lagMs * 0.25);
    worker.child.kill('SIGTERM');
    await worker.exited;
  });

  it('a handler computing in a worker started in a worker thread is reported as computing (the idle main thread\'s scheduler statistics were read, and it was called a synchronous wait)', async () => {
    const pgq = await ctx.migrated({ tasks: [hog] });
    await createLedger(ctx.admin, ctx.schema);
    await ctx.admin.query(`TRUNCATE "${ctx.schema}".ledger`);
    const worker = spawnWorker(env({ PGQ_LOG_LEVEL: 'warn', PGQ_STALL_WARN_MS: '1500', PGQ_RESCUE_AFTER_MS: '20000' }), path.resolve(import.meta.dirname, 'fixtures/worker-in-thread.ts'));
    await worker.waitFor((e) => e.event === 'ready');
    const computing = await pgq.enqueue(hog, { ms: 4_000, mode: 'block' });
    await pgq.waitForJob(computing.id, { timeoutMs: 60_000 });
    await until(() => /event loop (was blocked|did not run) for \d+ ms/.test(worker.stderr()) || null, { timeoutMs: 20_000 });
    expect(worker.stderr()).toMatch(/event loop has been blocked for \d+ ms \(running: hog ×1\); its lease is still renewed/);
    expect(worker.stderr()).not.toMatch(/waiting synchronously/);
    worker.child.kill('SIGTERM');
    await worker.exited;
  });

  it.skipIf(!fs.existsSync('/proc/thread-self'))('a handler waiting synchronously in a worker started in a worker thread, beside a busy main thread, is reported as a wait (the process\'s CPU time, the main thread\'s, said it computed)', async () => {
    const pgq = await ctx.migrated({ tasks: [hog] });
    await createLedger(ctx.admin, ctx.schema);
    await ctx.admin.query(`TRUNCATE "${ctx.schema}".ledger`);
    const worker = spawnWorker(
      env({ PGQ_LOG_LEVEL: 'warn', PGQ_STALL_WARN_MS: '1500', PGQ_RESCUE_AFTER_MS: '20000', PGQ_MAIN_BUSY: '1' }),
      path.resolve(import.meta.dirname, 'fixtures/worker-in-thread.ts'),
    );
    await worker.waitFor((e) => e.event === 'ready');
    const waiting = await pgq.enqueue(hog, { ms: 4_000, mode: 'wait-sync' });
    await pgq.waitForJob(waiting.id, { timeoutMs: 60_000 });
    await until(() => /event loop (was blocked|did not run) for \d+ ms/.test(worker.stderr()) || null, { timeoutMs: 20_000 });
    expect(worker.stderr()).toMatch(/event loop has not run for \d+ ms \(running: hog ×1\), and the process used little CPU meanwhile \(\d+ ms\): a handler waiting synchronously/);
    expect(worker.stderr()).not.toMatch(/blocked for|CPU-bound/);
    worker.child.kill('SIGTERM');
    await worker.exited;
  });

  // Linux: the worker is pinned to one CPU beside a busy loop that has a higher priority there.
  const canStarve = fs.existsSync(`/proc/self/task/${process.pid}/schedstat`) && ['taskset', 'renice'].every((bin) => spawnSync(bin, ['--version']).status === 0);
  // The first CPU this process may run on (a runner's set need not hold CPU 0).
  const firstCpu = /Cpus_allowed_list:\s*(\d+)/.exec(canStarve ? fs.readFileSync('/proc/self/status', 'utf8') : '')?.[1] ?? '0';
  it.skipIf(!canStarve)('a handler computing on a host short of CPU is reported as computing, not as a synchronous wait (its process got a sixth of a core under a load of 9, and its CPU time alone said it waited)', async () => {
    const pgq = await ctx.migrated({ tasks: [hog] });
    await createLedger(ctx.admin, ctx.schema);
    await ctx.admin.query(`TRUNCATE "${ctx.schema}".ledger`);
    const worker = spawnWorker(env({ PGQ_LOG_LEVEL: 'warn', PGQ_STALL_WARN_MS: '1500', PGQ_RESCUE_AFTER_MS: '20000' }));
    await worker.waitFor((e) => e.event === 'ready');
    // The busy loop at the default priority, the worker's threads at nice 12 on the same CPU: about 6% of it.
    const busy = spawn('taskset', ['-c', firstCpu, process.execPath, '-e', 'for (;;) {}'], { stdio: 'ignore' });
    try {
      expect(spawnSync('taskset', ['-a', '-p', '-c', firstCpu, String(worker.pid)]).status).toBe(0);
      for (const tid of fs.readdirSync(`/proc/${worker.pid}/task`)) spawnSync('renice', ['-n', '12', '-p', tid]);
      const computing = await pgq.enqueue(hog, { ms: 4_000, mode: 'block' });
      await pgq.waitForJob(computing.id, { timeoutMs: 120_000 });
      await until(() => /event loop (was blocked|did not run) for \d+ ms/.test(worker.stderr()) || null, { timeoutMs: 60_000 });
    } finally {
      busy.kill('SIGKILL');
    }
    const report = worker.stderr().split('\n').filter((l) => l.includes('"lagMs"')).map((l) => JSON.parse(l) as { lagMs: number; cpuMs?: number; runnableMs?: number | null; msg: string })[0]!;
    expect(report.msg).toMatch(/event loop has been blocked for \d+ ms \(running: hog ×1\); its lease is still renewed/);
    // Starved: little CPU time, most of the stall spent running or waiting to run.
    expect(report.cpuMs!).toBeLessThan(report.lagMs * 0.2);
    expect(report.runnableMs!).toBeGreaterThan(report.lagMs * 0.5);
    worker.child.kill('SIGTERM');
    await worker.exited;
  });

  it('jobs claimed ahead by a worker whose handler blocks its event loop go back to the queue and run elsewhere meanwhile, none twice, no attempt counted', async () => {
    const ledgerTask = defineTask({
      name: 'ledger',
      schema: z.object({ sleepMs: z.number().int().min(0) }),
      handler: () => undefined,
    });
    const pgq = await ctx.migrated({ tasks: [hog, ledgerTask] });
    await createLedger(ctx.admin, ctx.schema);
    await ctx.admin.query(`TRUNCATE "${ctx.schema}".ledger`);
    const release = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'pgq-hog-')), 'release');
    // One slot: the hog takes it, and whatever the claim took with it waits in the buffer.
    const blocked = spawnWorker(env({ PGQ_CONCURRENCY: '1', PGQ_RESCUE_AFTER_MS: '10000' }));
    await blocked.waitFor((e) => e.event === 'ready');
    // Quick jobs first, so the worker claims ahead (it does once its average job is under 50 ms). Forty: the
    // average moves a tenth of the way a job, and on a loaded host the first one (the ledger's connections
    // opening) alone can take over 100 ms.
    const warm = await pgq.enqueueMany(ledgerTask, Array.from({ length: 40 }, () => ({ sleepMs: 0 })));
    for (const j of warm) await pgq.waitForJob(j.id, { timeoutMs: 20_000 });
    // The hog and the quick jobs commit together and are claimed together, the hog first.
    const client = await ctx.admin.connect();
    let hogJob: JobRecord;
    let quick: JobRecord[];
    try {
      await client.query('BEGIN');
      // It blocks until the quick jobs are done (at most 60 s), however slowly the other worker starts.
      hogJob = await pgq.enqueue(hog, { ms: 60_000, mode: 'block', untilFile: release }, { priority: 10, db: client });
      quick = await pgq.enqueueMany(ledgerTask, Array.from({ length: 20 }, () => ({ sleepMs: 0 })), { db: client });
      await client.query('COMMIT');
    } finally {
      client.release();
    }
    await blocked.waitFor((e) => e.event === 'job-start' && e.id === hogJob.id, 20_000);
    const other = spawnWorker(env({ PGQ_CONCURRENCY: '4' }));
    const done = await Promise.all(quick.map((j) => pgq.waitForJob(j.id, { timeoutMs: 60_000 })));
    fs.writeFileSync(release, '');
    expect(done.map((j) => [j.state, j.attempts])).toEqual(quick.map(() => ['succeeded', 1]));
    const hogDone = await pgq.waitForJob(hogJob.id, { timeoutMs: 60_000 });
    expect(hogDone).toMatchObject({ state: 'succeeded', attempts: 1 });
    const { rows } = await ctx.admin.query<{ job_id: string; pid: number; finished_at: Date }>(
      `SELECT job_id::text, pid, finished_at FROM "${ctx.schema}".ledger WHERE job_id = ANY($1::bigint[])`,
      [quick.map((j) => j.id)],
    );
    // Each quick job ran once, all of them in the other worker, before the hog let go of its loop.
    expect(rows).toHaveLength(quick.length);
    const { rows: hogRows } = await ctx.admin.query<{ finished_at: Date }>(`SELECT finished_at FROM "${ctx.schema}".ledger WHERE job_id = $1`, [hogJob.id]);
    expect(rows.every((r) => r.pid === other.pid && r.finished_at < hogRows[0]!.finished_at)).toBe(true);
    expect(await overlappingRuns(ctx.admin, ctx.schema)).toBe(0);
    expect(blocked.stderr()).toMatch(/gave back [1-9]\d* job\(s\) claimed ahead: the worker's event loop has been blocked for \d+ ms/);
    for (const w of [blocked, other]) w.child.kill('SIGTERM');
    await Promise.all([blocked.exited, other.exited]);
  });

  it('a handler ignoring its timeout is held, reported stuck, and never overlaps its retry across processes', async () => {
    const pgq = await ctx.migrated({ tasks: [hog] });
    await createLedger(ctx.admin, ctx.schema);
    await ctx.admin.query(`TRUNCATE "${ctx.schema}".ledger`);
    const workers = [0, 1].map(() => spawnWorker(env({ PGQ_HOG_TIMEOUT_MS: '200', PGQ_ABORT_GRACE_MS: '200', PGQ_CONCURRENCY: '1' })));
    await Promise.all(workers.map((w) => w.waitFor((e) => e.event === 'ready')));
    const job = await pgq.enqueue(hog, { ms: 1_500, mode: 'ignore-abort' }, { maxAttempts: 2 });
    const done = await pgq.waitForJob(job.id, { timeoutMs: 60_000 });
    expect(done.state).toBe('failed');
    expect(done.errors.map((e) => e.message)).toEqual([new JobTimeoutError(200).message, new JobTimeoutError(200).message]);
    expect(await overlappingRuns(ctx.admin, ctx.schema)).toBe(0);
    const events = workers.flatMap((w) => w.events).filter((e) => e.id === job.id);
    expect(events.filter((e) => e.event === 'stuck')).toHaveLength(2);
    for (const w of workers) w.child.kill('SIGTERM');
    await Promise.all(workers.map((w) => w.exited));
  });
});
