/**
 * pgq on connections whose server settings are not the defaults, as a
 * database or role may set them (here given per connection, in the URL's
 * `options`, so other tests' connections keep theirs): a non-ISO DateStyle,
 * repeatable read by default, idle sessions ended by the server.
 */
import net from 'node:net';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { Pgq, chord, defineTask, group, step } from '../src/index.js';
import { deferred, until, useTestSchema } from './support/harness.js';
import { captureLogger, type Line } from './support/logger.js';

const ctx = useTestSchema('settings');

/** This file's URL with server settings for every connection made from it (`-c name=value`, spaces escaped). */
function urlWith(settings: Record<string, string>): string {
  const url = new URL(ctx.url);
  url.searchParams.set('options', Object.entries(settings).map(([k, v]) => `-c ${k}=${v.replaceAll(' ', '\\ ')}`).join(' '));
  return url.toString();
}

async function serverVersion(): Promise<number> {
  const { rows } = await ctx.admin.query<{ v: number }>("SELECT current_setting('server_version_num')::int AS v");
  return rows[0]!.v;
}

const ping = defineTask({ name: 'ping', schema: z.object({}).optional(), handler: () => 'pong' });

describe('server settings', () => {
  it("reads times under DateStyle 'SQL, DMY' (every time read back was null, and no schedule fired)", async () => {
    await ctx.migrated({ tasks: [ping] });
    const pgq = new Pgq({ connectionString: urlWith({ DateStyle: 'SQL, DMY' }), schema: ctx.schema, tasks: [ping] });
    const worker = pgq.worker({ pollIntervalMs: 100 });
    try {
      const job = await pgq.enqueue(ping, {});
      expect(job.createdAt).toBeInstanceOf(Date);
      expect(job.runAt).toBeInstanceOf(Date);
      const schedule = await pgq.schedule({ name: 'every-second', every: '1s', task: ping });
      expect(schedule.nextRunAt).toBeInstanceOf(Date);
      await worker.start();
      expect((await pgq.waitForJob(job, { timeoutMs: 10_000 })).finishedAt).toBeInstanceOf(Date);
      await until(async () => (await pgq.countJobs({ task: 'ping', state: 'succeeded' })) >= 3, { what: 'the schedule to fire', timeoutMs: 10_000 });
    } finally {
      await worker.stop();
      await pgq.close();
    }
  });

  it('sets DateStyle on a new connection only where the server did not report ISO (a round trip less per connection)', async () => {
    await ctx.migrated({ tasks: [ping] });
    const original = pg.Client.prototype.query;
    let sets = 0;
    pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
      if (typeof args[0] === 'string' && args[0].includes('DateStyle')) sets += 1;
      return (original as (...a: unknown[]) => unknown).apply(this, args);
    } as typeof original;
    const iso = new Pgq({ connectionString: ctx.url, schema: ctx.schema, tasks: [ping], poolSize: 3 });
    const dmy = new Pgq({ connectionString: urlWith({ DateStyle: 'SQL, DMY' }), schema: ctx.schema, tasks: [ping], poolSize: 3 });
    try {
      await iso.warmUp();
      const job = await iso.enqueue(ping, {});
      expect(job.createdAt).toBeInstanceOf(Date);
      expect(sets).toBe(0);
      await dmy.warmUp();
      expect(sets).toBe(3);
      expect((await dmy.getJob(job.id))?.createdAt.getTime()).toBe(job.createdAt.getTime());
    } finally {
      pg.Client.prototype.query = original;
      await iso.close();
      await dmy.close();
    }
  });

  it('keeps a queue limited to 1 at one job when workers of two tasks claim at once under default repeatable read (both ran), and says nothing of the conflicts', async () => {
    let running = 0;
    let most = 0;
    const release = deferred();
    const body = async (): Promise<void> => {
      running += 1;
      most = Math.max(most, running);
      await release.promise;
      running -= 1;
    };
    const a = defineTask({ name: 'rr-a', queue: 'rr-one', schema: z.object({}), handler: body });
    const b = defineTask({ name: 'rr-b', queue: 'rr-one', schema: z.object({}), handler: body });
    const admin = await ctx.migrated({ tasks: [a, b] });
    await admin.setQueue('rr-one', { concurrency: 1 });
    const url = urlWith({ default_transaction_isolation: 'repeatable read' });
    const lines: Line[] = [];
    const options = { concurrency: 5, queues: ['rr-one'], leader: false } as const;
    const pa = new Pgq({ connectionString: url, schema: ctx.schema, tasks: [a], logger: captureLogger(lines) });
    const pb = new Pgq({ connectionString: url, schema: ctx.schema, tasks: [b], logger: captureLogger(lines) });
    const [wa, wb] = [pa.worker(options), pb.worker(options)];
    const holder = await ctx.admin.connect();
    try {
      await Promise.all([wa.start(), wb.start()]);
      // The queue's row held while both jobs are enqueued: both workers' claims begin, then wait for it.
      await holder.query('BEGIN');
      await holder.query(`SELECT 1 FROM "${ctx.schema}".queues WHERE name = 'rr-one' FOR UPDATE`);
      // Both in one transaction: each worker's claim (woken by either NOTIFY) takes a snapshot that holds both jobs.
      const enqueuer = await ctx.admin.connect();
      let jobs;
      try {
        await enqueuer.query('BEGIN');
        jobs = [await admin.enqueue(a, {}, { db: enqueuer }), await admin.enqueue(b, {}, { db: enqueuer })];
        await enqueuer.query('COMMIT');
      } finally {
        enqueuer.release();
      }
      await until(async () => (await ctx.admin.query(`SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND application_name = $1`, [`pgq_${ctx.schema}`])).rows.length >= 2, { what: 'both claims to wait for the queue row' });
      await holder.query('COMMIT');
      await until(() => running >= 1, { what: 'a job to run' });
      await new Promise((resolve) => setTimeout(resolve, 500));
      const { rows } = await ctx.admin.query(`SELECT count(*)::int AS n FROM "${ctx.schema}".jobs WHERE queue = 'rr-one' AND state = 'running'`);
      expect(rows[0].n).toBe(1);
      release.resolve();
      for (const job of jobs) expect((await admin.waitForJob(job, { timeoutMs: 10_000 })).state).toBe('succeeded');
      expect(most).toBe(1);
      expect(lines.filter((l) => l.level === 'warn' || l.level === 'error').map((l) => l.msg)).toEqual([]);
    } finally {
      release.resolve();
      await holder.query('ROLLBACK').catch(() => undefined);
      holder.release();
      await Promise.all([wa.stop(), wb.stop()]);
      await Promise.all([pa.close(), pb.close()]);
    }
  });

  it('enqueues one unique key from two clients at once under default repeatable read (40001 reached the caller)', async () => {
    await ctx.migrated({ tasks: [ping] });
    const url = urlWith({ default_transaction_isolation: 'repeatable read' });
    const [a, b] = [new Pgq({ connectionString: url, schema: ctx.schema, tasks: [ping] }), new Pgq({ connectionString: url, schema: ctx.schema, tasks: [ping] })];
    try {
      for (let i = 0; i < 60; i += 1) {
        const [x, y] = await Promise.all([a.enqueue(ping, {}, { uniqueKey: `k${i}` }), b.enqueue(ping, {}, { uniqueKey: `k${i}` })]);
        expect(y.id).toBe(x.id);
      }
      // And queue settings saved at once from both.
      await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? a : b).setQueue('shared', { concurrency: 1 + (i % 5) })));
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('writes outcomes through idle_session_timeout ending idle connections (the outcome of a job that succeeded was written as a failure), and renews the lease without warnings', async (t) => {
    if ((await serverVersion()) < 140000) t.skip(); // idle_session_timeout is PostgreSQL 14's
    await ctx.migrated({ tasks: [] });
    const busy = defineTask({
      name: 'busy',
      schema: z.object({}),
      maxAttempts: 1,
      handler: () => {
        // The event loop blocked past the timeout: the pool's idle connections are ended meanwhile.
        const until = Date.now() + 1_300;
        while (Date.now() < until);
        return 'done';
      },
    });
    const lines: Line[] = [];
    const pgq = new Pgq({ connectionString: urlWith({ idle_session_timeout: '1000' }), schema: ctx.schema, tasks: [busy], logger: captureLogger(lines) });
    const worker = pgq.worker({ concurrency: 1, pollIntervalMs: 100, heartbeatMs: 1_500, rescueAfterMs: 10_000 });
    try {
      await worker.start();
      const jobs = await pgq.enqueueMany(busy, [{}, {}, {}, {}]);
      for (const job of jobs) expect(await pgq.waitForJob(job, { timeoutMs: 30_000 })).toMatchObject({ state: 'succeeded', attempts: 1 });
      const complaints = lines.filter((l) => /could not (record|renew)/.test(l.msg ?? '')).map((l) => l.msg);
      expect(complaints).toEqual([]);
    } finally {
      await worker.stop();
      await pgq.close();
    }
  });

  it('keeps an outcome through a server that refuses writes for a while (25006, a failover to a replica), not written as a failure', async () => {
    const write = defineTask({ name: 'write', queue: 'failover', schema: z.object({}), handler: () => 'pong' });
    const pgq = await ctx.migrated({ tasks: [write] });
    const s = `"${ctx.schema}"`;
    // The completion of a success refused as a read-only server refuses it, until the switch is turned off.
    await ctx.admin.query(`CREATE TABLE ${s}.read_only (on_ boolean NOT NULL)`);
    await ctx.admin.query(`INSERT INTO ${s}.read_only VALUES (true)`);
    await ctx.admin.query(`CREATE FUNCTION ${s}.refuse_writes() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF NEW.task = 'write' AND NEW.state = 'succeeded' AND (SELECT on_ FROM ${s}.read_only) THEN
          RAISE EXCEPTION 'cannot execute UPDATE in a read-only transaction' USING ERRCODE = '25006';
        END IF;
        RETURN NEW;
      END $$`);
    await ctx.admin.query(`CREATE TRIGGER refuse_writes BEFORE UPDATE ON ${s}.jobs FOR EACH ROW EXECUTE FUNCTION ${s}.refuse_writes()`);
    const worker = pgq.worker({ concurrency: 2, pollIntervalMs: 100, queues: ['failover'] });
    try {
      await worker.start();
      const job = await pgq.enqueue(write, {}, { maxAttempts: 1 });
      await until(async () => (await pgq.getJob(job.id))?.state === 'running', { what: 'the job to run' });
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      await ctx.admin.query(`UPDATE ${s}.read_only SET on_ = false`);
      expect(await pgq.waitForJob(job, { timeoutMs: 20_000 })).toMatchObject({ state: 'succeeded', attempts: 1, result: 'pong' });
    } finally {
      await worker.stop();
      await ctx.admin.query(`DROP TRIGGER IF EXISTS refuse_writes ON ${s}.jobs`);
    }
  });

  it('a connection lost while it takes its session settings fails that checkout, and the next one works (the process crashed on an unheard error)', async () => {
    await ctx.migrated({ tasks: [] });
    const target = new URL(ctx.url);
    // A proxy that closes the first connection on which it sees the settings statement.
    let armed = true;
    const proxy = net.createServer((client) => {
      const server = net.connect(Number(target.port || 5432), target.hostname);
      client.on('error', () => undefined);
      server.on('error', () => undefined);
      server.pipe(client);
      client.on('data', (buf) => {
        if (armed && buf[0] === 0x51 /* Query */ && buf.toString().includes('DateStyle')) {
          armed = false;
          client.destroy();
          server.destroy();
          return;
        }
        server.write(buf);
      });
      client.on('close', () => server.destroy());
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    // A DateStyle that is not ISO: the settings statement is sent (on an ISO server it is not needed).
    const via = new URL(urlWith({ DateStyle: 'SQL, DMY' }));
    via.hostname = '127.0.0.1';
    via.port = String((proxy.address() as net.AddressInfo).port);
    const pgq = new Pgq({ connectionString: via.toString(), schema: ctx.schema, tasks: [], logger: captureLogger([]) });
    try {
      await expect(pgq.countJobs({})).rejects.toThrow(/Connection terminated/);
      expect(armed).toBe(false);
      expect(await pgq.countJobs({})).toBeGreaterThanOrEqual(0);
    } finally {
      await pgq.close();
      await new Promise((resolve) => proxy.close(resolve));
    }
  });

  it('logs an outage of a few seconds in a few lines, not a warning with a stack per loop per second, and says what works again', async () => {
    await ctx.migrated({ tasks: [ping] });
    const proxy = await cuttableProxy();
    const lines: Line[] = [];
    const pgq = new Pgq({ connectionString: proxy.url, schema: ctx.schema, tasks: [ping], logger: captureLogger(lines) });
    const worker = pgq.worker({ heartbeatMs: 500, rescueAfterMs: 30_000, pollIntervalMs: 200 });
    // One whose lease runs out during the outage: nothing said so until the database answered again.
    const shortLease = pgq.worker({ id: 'short-lease', queues: ['short-lease'], heartbeatMs: 250, rescueAfterMs: 2_000, leader: false });
    try {
      await worker.start();
      await shortLease.start();
      await until(() => worker.isLeader, { what: 'the worker to lead' });
      // The database away for 6 s: every connection cut, new ones refused.
      await proxy.cut();
      const from = lines.length;
      await new Promise((resolve) => setTimeout(resolve, 6_000));
      await proxy.restore();
      const job = await pgq.enqueue(ping, {});
      await pgq.waitForJob(job, { timeoutMs: 30_000 });
      await until(() => lines.slice(from).some((l) => /^pgq reads queue settings again, after \d+ failure/.test(l.msg ?? '')), {
        what: 'the queue settings read to say it works again',
        timeoutMs: 10_000,
      });
      // One line per connection cut (pool and listener), at the cut, is left out: what repeats while the database is away is counted.
      const warnings = lines
        .slice(from)
        .filter((l) => l.level === 'warn' && !/connection error/.test(l.msg ?? ''))
        .map((l) => (l.msg ?? '').split(':')[0]!);
      const times = new Map<string, number>();
      for (const w of warnings) times.set(w, (times.get(w) ?? 0) + 1);
      // The first failure of each loop, and the connections cut at once; before, the settings read alone wrote one a second.
      for (const [what, n] of times) expect(n, what).toBeLessThanOrEqual(3);
      expect(times.get('pgq could not read queue settings (keeping the last ones)')).toBe(2); // one per worker
      const ranOut = lines.slice(from).filter((l) => /lease has run out/.test(l.msg ?? ''));
      expect(ranOut.map((l) => [l.level, l.msg])).toEqual([
        ['warn', expect.stringMatching(/^pgq worker short-lease's lease has run out \(not renewed for \d+ ms, rescueAfterMs 2000\): its running jobs may be rescued/)],
      ]);
    } finally {
      await shortLease.stop();
      await worker.stop();
      await pgq.close();
      await proxy.close();
    }
  });

  it('says an outage that meets a due promotion once, as the claim loop (not also as a promotion that failed), and promotes once it is over', async () => {
    await ctx.migrated({ tasks: [ping] });
    const proxy = await cuttableProxy();
    const lines: Line[] = [];
    const pgq = new Pgq({ connectionString: proxy.url, schema: ctx.schema, tasks: [ping], logger: captureLogger(lines) });
    // No poll during the outage: the first statement the worker sends in it is the promotion at the job's due time.
    const worker = pgq.worker({ queues: ['due-in-outage'], pollIntervalMs: 60_000, leader: false });
    try {
      await worker.start();
      const delayed = await pgq.enqueue(ping, {}, { queue: 'due-in-outage', delayMs: 1_500 });
      // Its NOTIFY's wake-up (a claim, a look for the next due time) over before the cut.
      await new Promise((resolve) => setTimeout(resolve, 300));
      await proxy.cut();
      const from = lines.length;
      await new Promise((resolve) => setTimeout(resolve, 3_000));
      await proxy.restore();
      expect((await pgq.waitForJob(delayed, { timeoutMs: 30_000 })).state).toBe('succeeded');
      const said = lines.slice(from).filter((l) => l.level === 'warn' && /^pgq could not (claim|make due)/.test(l.msg ?? ''));
      expect(said.map((l) => (l.msg ?? '').split(':')[0])).toEqual(['pgq could not claim jobs, retrying']);
    } finally {
      await worker.stop();
      await pgq.close();
      await proxy.close();
    }
  });
});

/**
 * A TCP proxy to the test database: `cut()` destroys every connection
 * through it and refuses new ones until `restore()`.
 */
async function cuttableProxy(): Promise<{ url: string; cut(): Promise<void>; restore(): Promise<void>; close(): Promise<void> }> {
  const target = new URL(ctx.url);
  const sockets = new Set<net.Socket>();
  const proxy = net.createServer((client) => {
    const server = net.connect(Number(target.port || 5432), target.hostname);
    for (const socket of [client, server]) {
      sockets.add(socket);
      socket.on('error', () => undefined);
      socket.on('close', () => sockets.delete(socket));
    }
    client.pipe(server).pipe(client);
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  const port = (proxy.address() as net.AddressInfo).port;
  const via = new URL(ctx.url);
  via.hostname = '127.0.0.1';
  via.port = String(port);
  return {
    url: via.toString(),
    async cut() {
      const closed = new Promise((resolve) => proxy.close(resolve));
      for (const socket of sockets) socket.destroy();
      await closed;
    },
    restore: () => new Promise<void>((resolve) => proxy.listen(port, '127.0.0.1', resolve)),
    close: () => new Promise<void>((resolve) => (proxy.listening ? proxy.close(() => resolve()) : resolve())),
  };
}

describe('deleting workflow jobs under default repeatable read', () => {
  const manual = defineTask({ name: 'manual', schema: z.object({ n: z.number() }), handler: ({ n }) => n });

  it('two deletes of the last jobs of one workflow at once take its row (the lock taken before deleting did not refresh the second one’s snapshot)', async () => {
    await ctx.migrated({ tasks: [manual] });
    const s = `"${ctx.schema}"`;
    const pgq = new Pgq({ connectionString: urlWith({ default_transaction_isolation: 'repeatable read' }), schema: ctx.schema, tasks: [manual] });
    try {
      const wf = await pgq.enqueueWorkflow(group([step(manual, { n: 1 }), step(manual, { n: 2 })]));
      await pgq.cancelWorkflow(wf.id);
      const holder = await ctx.admin.connect();
      try {
        await holder.query('BEGIN');
        await holder.query(`LOCK TABLE ${s}.workflows IN SHARE ROW EXCLUSIVE MODE`);
        const deletes = wf.steps.map((x) => pgq.deleteJob(x.id));
        await ctx.lockWaiters(2, 'both deletes to wait');
        await holder.query('COMMIT');
        expect(await Promise.all(deletes)).toEqual([true, true]);
      } finally {
        await holder.query('ROLLBACK').catch(() => undefined);
        holder.release();
      }
      expect((await ctx.admin.query(`SELECT id FROM ${s}.workflows WHERE id = $1`, [wf.id])).rows).toEqual([]);
    } finally {
      await pgq.close();
    }
  });

  it('deleteJob and deleteJobs of a parent waiting on retryJob of the step that cancelled its dependent leave it (their snapshot, older than the retry, saw the dependent cancelled, and it ran without that parent\'s result)', async () => {
    const sum = defineTask({ name: 'manual-sum', schema: z.array(z.number()), handler: (ns) => ns.reduce((a, b) => a + b, 0) });
    await ctx.migrated({ tasks: [manual, sum] });
    const s = `"${ctx.schema}"`;
    const pgq = new Pgq({ connectionString: urlWith({ default_transaction_isolation: 'repeatable read' }), schema: ctx.schema, tasks: [manual, sum] });
    try {
      for (const bulk of [false, true]) {
        const wf = await pgq.enqueueWorkflow(chord(group([step(manual, { n: 1 }), step(manual, { n: 2 })]), step(sum)));
        const [parent, failing, callback] = wf.steps.map((st) => st.id) as [string, string, string];
        await ctx.admin.query(`UPDATE ${s}.jobs SET state = 'succeeded', result = '10', attempts = 1, finished_at = now() WHERE id = $1`, [parent]);
        await pgq.cancelJob(failing); // the callback is cancelled by it
        // The parent's row held a moment: the retry, then the delete, begin and wait for it, in this order.
        const holder = await ctx.admin.connect();
        try {
          await holder.query('BEGIN');
          await holder.query(`SELECT 1 FROM ${s}.jobs WHERE id = $1 FOR UPDATE`, [parent]);
          const retried = pgq.retryJob(failing);
          retried.catch(() => undefined);
          await ctx.lockWaiters(1, "the retry to wait for the parent's row");
          const deleted = bulk ? pgq.deleteJobs({ workflowId: wf.id, state: 'succeeded' }) : pgq.deleteJob(parent);
          deleted.catch(() => undefined);
          await ctx.lockWaiters(2, "the delete to wait for the parent's row");
          await holder.query('COMMIT');
          expect(await retried).toMatchObject({ state: 'available' });
          if (bulk) expect(await deleted).toBe(0);
          else await expect(deleted).rejects.toMatchObject({ code: 'PGQ_WORKFLOW_STEP_LIVE' });
        } finally {
          await holder.query('ROLLBACK').catch(() => undefined);
          holder.release();
        }
        // The retried step settles: the callback's input has both results.
        await ctx.admin.query(`UPDATE ${s}.jobs SET state = 'succeeded', result = '20', attempts = 2, finished_at = now() WHERE id = $1`, [failing]);
        expect(await pgq.getJob(callback)).toMatchObject({ state: 'available', payload: [10, 20] });
      }
    } finally {
      await pgq.close();
    }
  });
});

describe('retrying workflow jobs under default repeatable read', () => {
  const manual = defineTask({ name: 'manual', schema: z.object({ n: z.number() }), handler: ({ n }) => n });
  const sum = defineTask({ name: 'manual-sum', schema: z.array(z.number()), handler: (ns) => ns.reduce((a, b) => a + b, 0) });

  it('retryJob of the two failed parents of a chord step at once revives it (the second, waiting on the first, read the step in its older snapshot, not yet named after it, and left it cancelled with both parents live)', async () => {
    await ctx.migrated({ tasks: [manual, sum] });
    const s = `"${ctx.schema}"`;
    const pgq = new Pgq({ connectionString: urlWith({ default_transaction_isolation: 'repeatable read' }), schema: ctx.schema, tasks: [manual, sum] });
    try {
      const wf = await pgq.enqueueWorkflow(chord(group([step(manual, { n: 1 }), step(manual, { n: 2 })]), step(sum)));
      const [first, second, callback] = wf.steps.map((st) => st.id) as [string, string, string];
      await ctx.admin.query(`UPDATE ${s}.jobs SET state = 'failed', attempts = 1, finished_at = now() WHERE id = ANY ($1::bigint[])`, [[first, second]]);
      expect(await pgq.getJob(callback)).toMatchObject({ state: 'cancelled' });
      // The callback's row held a moment: the retry of the first parent (which it names) waits for it holding the
      // second parent's row, and the retry of the second begins and waits for that one.
      const holder = await ctx.admin.connect();
      try {
        await holder.query('BEGIN');
        await holder.query(`SELECT 1 FROM ${s}.jobs WHERE id = $1 FOR KEY SHARE`, [callback]);
        const retriedFirst = pgq.retryJob(first);
        retriedFirst.catch(() => undefined);
        await ctx.lockWaiters(1, "the first retry to wait for the callback's row");
        const retriedSecond = pgq.retryJob(second);
        retriedSecond.catch(() => undefined);
        await ctx.lockWaiters(2, "the second retry to wait for the second parent's row");
        await holder.query('COMMIT');
        expect(await retriedFirst).toMatchObject({ state: 'available' });
        expect(await retriedSecond).toMatchObject({ state: 'available' });
      } finally {
        await holder.query('ROLLBACK').catch(() => undefined);
        holder.release();
      }
      expect(await pgq.getJob(callback)).toMatchObject({ state: 'blocked' });
      await ctx.admin.query(`UPDATE ${s}.jobs SET state = 'succeeded', result = to_jsonb(id - $2::bigint + 10), attempts = 2, finished_at = now() WHERE id = ANY ($1::bigint[])`, [[first, second], first]);
      expect(await pgq.getJob(callback)).toMatchObject({ state: 'available', payload: [10, 11] });
    } finally {
      await pgq.close();
    }
  });
});

describe('settling a workflow job under default repeatable read while a retry revives its dependent', () => {
  it.each(['fails', 'succeeds'] as const)(
    'a worker whose job %s, its outcome waiting on retryJob of the other parent of a chord step it revives, settles the step (its older snapshot saw the step cancelled, and it stayed blocked)',
    async (how) => {
      const gate = deferred();
      // The retried parent runs on a queue the worker does not take, so that only the job it holds settles.
      const held = defineTask({ name: 'rr-held', queue: 'rr-held', schema: z.object({ n: z.number() }), handler: ({ n }) => n });
      const branch = defineTask({
        name: 'rr-branch',
        schema: z.object({ n: z.number() }),
        maxAttempts: 1,
        handler: async ({ n }) => {
          await gate.promise;
          if (how === 'fails') throw new Error('broke');
          return n;
        },
      });
      const sum = defineTask({ name: 'rr-sum', queue: 'rr-held', schema: z.array(z.number()), handler: (ns) => ns.reduce((a, b) => a + b, 0) });
      await ctx.migrated({ tasks: [held, branch, sum] });
      const s = `"${ctx.schema}"`;
      const lines: Line[] = [];
      const pgq = new Pgq({ connectionString: urlWith({ default_transaction_isolation: 'repeatable read' }), schema: ctx.schema, tasks: [held, branch, sum], logger: captureLogger(lines) });
      const worker = pgq.worker({ concurrency: 1, queues: ['default'], leader: false });
      const retry = await ctx.admin.connect();
      try {
        const wf = await pgq.enqueueWorkflow(chord(group([step(held, { n: 1 }), step(branch, { n: 2 })]), step(sum)));
        const [first, second, callback] = wf.steps.map((st) => st.id) as [string, string, string];
        const callbackRow = async (): Promise<unknown> =>
          (await ctx.admin.query(`SELECT state, cancelled_by::text AS "cancelledBy", pending_parents AS "pendingParents", payload FROM ${s}.jobs WHERE id = $1`, [callback])).rows[0];
        await ctx.admin.query(`UPDATE ${s}.jobs SET state = 'failed', attempts = 1, finished_at = now() WHERE id = $1`, [first]);
        expect(await callbackRow()).toMatchObject({ state: 'cancelled', cancelledBy: first });
        await worker.start();
        await until(async () => (await pgq.getJob(second))?.state === 'running', { what: 'the second parent to run' });
        // The retry of the first parent (retryJob's UPDATE), its transaction held open: it has revived the callback
        // to blocked and holds the second parent's row.
        await retry.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
        await retry.query(
          `UPDATE ${s}.jobs SET state = 'available', run_at = now(), finished_at = NULL, max_attempts = greatest(max_attempts, attempts + 1),
                  cancel_requested_at = NULL WHERE id = $1`,
          [first],
        );
        expect((await retry.query(`SELECT state FROM ${s}.jobs WHERE id = $1`, [callback])).rows[0].state).toBe('blocked');
        // The second parent's handler settles: the worker's outcome waits for that row, then the retry commits.
        gate.resolve();
        await ctx.lockWaiters(1, "the worker's outcome to wait for the second parent's row");
        await retry.query('COMMIT');
        await pgq.waitForJob(second, { timeoutMs: 10_000 });
        if (how === 'fails') {
          expect(await pgq.getJob(second)).toMatchObject({ state: 'failed' });
          expect(await callbackRow()).toMatchObject({ state: 'cancelled', cancelledBy: second });
        } else {
          expect(await pgq.getJob(second)).toMatchObject({ state: 'succeeded', result: 2 });
          expect(await callbackRow()).toMatchObject({ state: 'blocked', pendingParents: 1 });
          await ctx.admin.query(`UPDATE ${s}.jobs SET state = 'succeeded', result = '1', attempts = 2, finished_at = now() WHERE id = $1`, [first]);
          expect(await callbackRow()).toMatchObject({ state: 'available', payload: [1, 2] });
        }
        expect(lines.filter((l) => l.level === 'error').map((l) => l.msg)).toEqual([]);
        // The outcome ended by 40001 was written again quietly: a conflict the completer expects, not a failing database.
        expect(lines.filter((l) => l.level === 'warn').map((l) => l.msg)).toEqual([]);
      } finally {
        gate.resolve();
        await retry.query('ROLLBACK').catch(() => undefined);
        retry.release();
        await worker.stop();
        await pgq.close();
      }
    },
  );
});

describe('reporting progress under default repeatable read while a retry revives a dependent', () => {
  it('ctx.progress of a running parent waiting on retryJob of the other parent of a chord step it revives is saved (the retry writes the parent: 40001, and the value was lost with a warning)', async () => {
    const gate = deferred();
    const reported = deferred();
    const held = defineTask({ name: 'rr-held', queue: 'rr-held', schema: z.object({ n: z.number() }), handler: ({ n }) => n });
    const branch = defineTask({
      name: 'rr-branch',
      schema: z.object({ n: z.number() }),
      handler: async ({ n }, jobCtx) => {
        await gate.promise;
        await jobCtx.progress(50);
        reported.resolve();
        return n;
      },
    });
    const sum = defineTask({ name: 'rr-sum', queue: 'rr-held', schema: z.array(z.number()), handler: (ns) => ns.reduce((a, b) => a + b, 0) });
    await ctx.migrated({ tasks: [held, branch, sum] });
    const s = `"${ctx.schema}"`;
    const lines: Line[] = [];
    const pgq = new Pgq({ connectionString: urlWith({ default_transaction_isolation: 'repeatable read' }), schema: ctx.schema, tasks: [held, branch, sum], logger: captureLogger(lines) });
    const worker = pgq.worker({ concurrency: 1, queues: ['default'], leader: false });
    const retry = await ctx.admin.connect();
    try {
      const wf = await pgq.enqueueWorkflow(chord(group([step(held, { n: 1 }), step(branch, { n: 2 })]), step(sum)));
      const [first, second, callback] = wf.steps.map((st) => st.id) as [string, string, string];
      await ctx.admin.query(`UPDATE ${s}.jobs SET state = 'failed', attempts = 1, finished_at = now() WHERE id = $1`, [first]);
      await worker.start();
      await until(async () => (await pgq.getJob(second))?.state === 'running', { what: 'the second parent to run' });
      // The retry of the first parent, its transaction held open: it has revived the callback and holds the second parent's row.
      await retry.query('BEGIN');
      await retry.query(`UPDATE ${s}.jobs SET state = 'available', run_at = now(), finished_at = NULL WHERE id = $1`, [first]);
      expect((await retry.query(`SELECT state FROM ${s}.jobs WHERE id = $1`, [callback])).rows[0].state).toBe('blocked');
      gate.resolve();
      await ctx.lockWaiters(1, "the progress write to wait for the second parent's row");
      await retry.query('COMMIT');
      await reported.promise;
      expect((await ctx.admin.query(`SELECT progress FROM ${s}.jobs WHERE id = $1`, [second])).rows[0].progress).toBe(50);
      expect(lines.filter((l) => l.level === 'warn' || l.level === 'error').map((l) => l.msg)).toEqual([]);
      await pgq.waitForJob(second, { timeoutMs: 10_000 });
    } finally {
      gate.resolve();
      await retry.query('ROLLBACK').catch(() => undefined);
      retry.release();
      await worker.stop();
      await pgq.close();
    }
  });
});
