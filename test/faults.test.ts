/**
 * Connection faults: pgq's backends killed with pg_terminate_backend while
 * jobs run, and a PostgreSQL restart (on a server of this file's own).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import net from 'node:net';
import pg from 'pg';
import { Pgq, WorkerStartError, defineTask } from '../src/index.js';
import { deferred, until, useTestSchema, withAppName } from './support/harness.js';
import { startEmbedded, type EmbeddedServer } from './support/embedded.js';
import { Listener } from '../src/notify/listener.js';
import { defaultLogger } from '../src/core/logger.js';
import { captureLogger, type Line } from './support/logger.js';

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
/** 'ended' once `work` settles, or 'hung' after `ms`. */
function endsWithin(work: Promise<unknown>, ms: number): Promise<'ended' | 'hung'> {
  const hung = new Promise<'hung'>((resolve) => setTimeout(() => resolve('hung'), ms).unref());
  return Promise.race([work.then(() => 'ended' as const), hung]);
}

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

/**
 * A TCP proxy to the test database whose `freeze()` makes every connection
 * open at that moment go silent, as a dropped NAT entry does: nothing is
 * passed on either way, nothing is closed. Connections opened later work,
 * unless `silence()` was called: then they are accepted and never answered.
 */
async function freezableProxy(target: URL): Promise<{ url: string; freeze(): number; silence(): number; close(): Promise<void> }> {
  const pairs: Array<[net.Socket, net.Socket]> = [];
  let silent = false;
  const server = net.createServer((client) => {
    client.on('error', () => undefined);
    if (silent) {
      // Accepted, and never answered: a hung server, a proxy that says nothing.
      frozenSockets.push(client);
      return;
    }
    const upstream = net.connect(Number(target.port || 5432), target.hostname);
    for (const s of [client, upstream]) s.on('error', () => undefined);
    client.pipe(upstream);
    upstream.pipe(client);
    pairs.push([client, upstream]);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = new URL(target);
  url.hostname = '127.0.0.1';
  url.port = String((server.address() as net.AddressInfo).port);
  const freeze = (): number => {
    const frozen = pairs.splice(0);
    for (const [client, upstream] of frozen) {
      client.unpipe(upstream);
      upstream.unpipe(client);
      client.pause();
      upstream.pause();
      frozenSockets.push(client, upstream);
    }
    return frozen.length;
  };
  return {
    url: url.toString(),
    freeze,
    /** freeze(), and every connection opened later is accepted and never answered. */
    silence() {
      silent = true;
      return freeze();
    },
    async close() {
      for (const s of [...frozenSockets.splice(0), ...pairs.splice(0).flat()]) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
const frozenSockets: net.Socket[] = [];

/** This process's sockets to `url` (a client's side) that are still open: each would keep the process up. */
function socketsTo(url: string): number[] {
  const port = Number(new URL(url).port);
  const handles = (process as unknown as { _getActiveHandles(): unknown[] })._getActiveHandles();
  return handles.filter((h): h is net.Socket => h instanceof net.Socket && h.remotePort === port && !h.destroyed).map((h) => h.localPort ?? 0);
}

describe('a database that refuses new connections for a while', () => {
  it('an outcome whose connection is refused (ALLOW_CONNECTIONS false: SQLSTATE 55000) is written once connections are allowed again, by the same attempt', async () => {
    const database = `pgq_refuse_${process.pid}`;
    await ctx.admin.query(`CREATE DATABASE ${database}`);
    const url = new URL(ctx.admin.options.connectionString!);
    url.pathname = `/${database}`;
    url.searchParams.set('application_name', 'pgq_refuse');
    let runs = 0;
    const started = deferred();
    const gate = deferred();
    const counted = defineTask({
      name: 'refused',
      schema: z.object({}),
      handler: async () => {
        runs += 1;
        started.resolve();
        await gate.promise;
        return 'done';
      },
    });
    const release = (): void => gate.resolve();
    const pgq = new Pgq({ connectionString: url.toString(), tasks: [counted] });
    const allow = (on: boolean) => ctx.admin.query(`ALTER DATABASE ${database} ALLOW_CONNECTIONS ${on}`);
    try {
      await pgq.migrate();
      const worker = pgq.worker({ concurrency: 1, heartbeatMs: 200, rescueAfterMs: 30_000 });
      await worker.start();
      const job = await pgq.enqueue(counted, {});
      await started.promise;
      // Every connection of the worker is closed, and new ones are refused.
      await allow(false);
      await ctx.admin.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1`, [database]);
      release();
      // The outcome waits (a refusal is not the statement's fault), and passes once allowed.
      await new Promise((r) => setTimeout(r, 1_500));
      await allow(true);
      const done = await pgq.waitForJob(job.id, { timeoutMs: 20_000 });
      expect(done).toMatchObject({ state: 'succeeded', attempts: 1, result: 'done' });
      expect(runs).toBe(1);
      await worker.stop();
    } finally {
      release();
      await allow(true);
      await pgq.close();
      await ctx.admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
    }
  });
});

describe('a connection that dies without a word', () => {
  it('an outcome sent on a connection that stopped answering is sent again on another after the limit and a cancel, and stop() still ends', async () => {
    await ctx.migrated();
    const proxy = await freezableProxy(new URL(ctx.url));
    const { task, running, release } = gatedTask('silent-death');
    // One connection: the outcome's write must go out on the one that goes silent.
    const pool = new pg.Pool({ connectionString: proxy.url, max: 1 });
    const pgq = new Pgq({ pool, schema: ctx.schema, tasks: [task] });
    try {
      // Not a leader: a maintenance statement (limit 60 s) on the pool's one
      // connection when it goes silent would hold it past this test's wait.
      const worker = pgq.worker({ concurrency: 1, heartbeatMs: 250, rescueAfterMs: 2_000, leader: false });
      const job = await pgq.enqueue(task, {});
      await worker.start();
      await running;
      // Every connection the worker has (its pool's, the lease thread's, LISTEN) goes silent; the handler then finishes.
      expect(proxy.freeze()).toBeGreaterThan(0);
      const releasedAt = Date.now();
      release();
      // Its outcome's write gets no answer: after max(10 s, rescueAfterMs) it
      // is cancelled, and when the connection answers that neither (5 s), it
      // is closed and the write sent again on a new one. Before, it waited
      // for TCP to give up, for minutes to hours, and so did stop().
      const row = await until(async () => {
        const { rows } = await ctx.admin.query<{ state: string; result: unknown; attempts: number }>(
          `SELECT state, result, attempts FROM "${ctx.schema}".jobs WHERE id = $1 AND state <> 'running'`,
          [job.id],
        );
        return rows[0];
      }, { timeoutMs: 45_000, everyMs: 100, what: 'the outcome to be written' });
      expect(row).toEqual({ state: 'succeeded', result: 'done', attempts: 1 });
      // Not sooner than the limit and the grace: the write was held by the silent connection first.
      expect(Date.now() - releasedAt).toBeGreaterThanOrEqual(14_900);
      expect(await endsWithin(worker.stop(), 40_000)).toBe('ended');
    } finally {
      release();
      await pgq.close();
      await proxy.close();
      await pool.end();
    }
  });
});

describe('a database that accepts connections and answers nothing', () => {
  it('does not hold stop() nor close(): the stop gives up writing after one limit of a lease, the job is left running for the rescuer, and close() leaves no connection open', async () => {
    await ctx.migrated();
    const proxy = await freezableProxy(new URL(ctx.url));
    const { task, running, release } = gatedTask('silent-server');
    // A pool pgq makes (close() ends it), of four connections.
    const lines: Line[] = [];
    const pgq = new Pgq({ connectionString: proxy.url, poolSize: 4, schema: ctx.schema, tasks: [task], logger: captureLogger(lines) });
    try {
      const worker = pgq.worker({ concurrency: 1, heartbeatMs: 250, rescueAfterMs: 2_000 });
      const job = await pgq.enqueue(task, {});
      await worker.start();
      await running;
      await until(() => worker.isLeader, { timeoutMs: 10_000, what: 'the worker to lead (its maintenance is part of the stop)' });
      // Every connection goes silent, and so does every new one: before, a new
      // connection was waited for without end, and stop() never resolved.
      proxy.silence();
      release();
      const startedAt = Date.now();
      expect(await endsWithin(worker.stop(), 90_000)).toBe('ended');
      // What the stop writes after its handlers shares one limit, max(5 s,
      // rescueAfterMs): the outcome, the maintenance's end, the row's removal
      // (each waited up to a lease of its own before: 45 s here).
      expect(Date.now() - startedAt).toBeLessThan(12_000);
      const { rows } = await ctx.admin.query<{ state: string }>(`SELECT state FROM "${ctx.schema}".jobs WHERE id = $1`, [job.id]);
      expect(rows[0]?.state).toBe('running');
      // close() too, the server still silent: the connections the given-up
      // statements hold and the new ones that never answered are closed
      // after a second (it waited for their limits before: 30 s here).
      const closeStartedAt = Date.now();
      expect(await endsWithin(pgq.close(), 90_000)).toBe('ended');
      expect(Date.now() - closeStartedAt).toBeLessThan(6_000);
      expect(socketsTo(proxy.url)).toEqual([]);
      // The stop names the job it leaves to the rescuer, once: the completer's own line, after "stopped",
      // said it again as an error with a count and no ids.
      expect(lines.filter((l) => l.level === 'warn' && /could not record the last outcomes/.test(l.msg ?? '')).map((l) => l.msg)).toEqual([
        expect.stringContaining(`(jobs ${job.id}); the rescuer will retry those jobs`),
      ]);
      expect(lines.filter((l) => l.level === 'error' && /gave up recording/.test(l.msg ?? ''))).toEqual([]);
    } finally {
      release();
      await proxy.close();
      await pgq.close();
    }
  }, 200_000);
});

describe('a progress write on a connection that goes silent', () => {
  it('is given up after its limit: ctx.progress resolves, and the job completes', async () => {
    await ctx.migrated();
    const proxy = await freezableProxy(new URL(ctx.url));
    let reported: (() => void) | undefined;
    const progressed = new Promise<void>((resolve) => (reported = resolve));
    const started = deferred();
    const go = deferred();
    const task = defineTask({
      name: 'silent-progress',
      schema: z.object({}),
      handler: async (_p, c) => {
        started.resolve();
        await go.promise;
        await c.progress({ percent: 50 });
        reported!();
        return 'done';
      },
    });
    const pgq = new Pgq({ connectionString: proxy.url, poolSize: 4, schema: ctx.schema, tasks: [task] });
    const holder = await ctx.admin.connect();
    try {
      const worker = pgq.worker({ concurrency: 1, heartbeatMs: 250, rescueAfterMs: 2_000, leader: false });
      const job = await pgq.enqueue(task, {});
      // The job's row held, so the progress write waits on it; then its connection goes silent.
      await holder.query('BEGIN');
      await worker.start();
      await started.promise;
      await holder.query(`SELECT 1 FROM "${ctx.schema}".jobs WHERE id = $1 FOR UPDATE`, [job.id]);
      go.resolve();
      await ctx.lockWaiters(1, 'the progress write to wait on the row');
      proxy.freeze();
      await holder.query('ROLLBACK');
      expect(await endsWithin(progressed, 60_000)).toBe('ended');
      await until(async () => (await ctx.admin.query(`SELECT 1 FROM "${ctx.schema}".jobs WHERE id = $1 AND state = 'succeeded'`, [job.id])).rowCount === 1, {
        what: 'the job to succeed',
        timeoutMs: 60_000,
      });
      await worker.stop();
    } finally {
      go.resolve();
      await holder.query('ROLLBACK').catch(() => undefined);
      holder.release();
      await proxy.close();
      await pgq.close();
    }
  }, 200_000);
});

describe('a worker starting against a database that accepts connections and answers nothing', () => {
  it('a start whose schedule sync is on a connection that goes silent rejects after the statement limit, not when TCP gives up', async () => {
    await ctx.migrated();
    const proxy = await freezableProxy(new URL(ctx.url));
    const { task } = gatedTask('silent-sync');
    const pgq = new Pgq({ connectionString: proxy.url, poolSize: 4, schema: ctx.schema, tasks: [task] });
    const holder = await ctx.admin.connect();
    try {
      // The sync waits on the schedules table (the worker's registration done), then its connection goes silent.
      await holder.query(`BEGIN; LOCK TABLE "${ctx.schema}".schedules IN SHARE MODE;`);
      const worker = pgq.worker({ heartbeatMs: 250, rescueAfterMs: 2_000, schedules: [{ name: 'silent-sync-every-hour', every: '1h', task, payload: {} }] });
      const started = worker.start().then(() => 'started', (err: unknown) => err);
      await ctx.lockWaiters(1, 'the schedule sync to wait on the lock');
      proxy.freeze();
      await holder.query('ROLLBACK');
      // The statement's limit is max(10 s, rescueAfterMs), then 5 s for the cancel's answer.
      expect(await endsWithin(started, 60_000)).toBe('ended');
      const err = await started;
      expect(err).toBeInstanceOf(WorkerStartError);
      // It names what happened, not the ROLLBACK that found the connection closed after it.
      expect(String(err)).toMatch(/did not answer within 10000 ms, nor a cancel/);
    } finally {
      await holder.query('ROLLBACK').catch(() => undefined);
      holder.release();
      await proxy.close();
      await pgq.close();
    }
  }, 200_000);

  it('start() rejects with a WorkerStartError once its first statement gets no connection within its limit (10 s here), not the pool connect limit (30 s) its warm-up waits, and close() then ends at once', async () => {
    await ctx.migrated();
    const proxy = await freezableProxy(new URL(ctx.url));
    const { task } = gatedTask('silent-start');
    const pgq = new Pgq({ connectionString: proxy.url, poolSize: 4, schema: ctx.schema, tasks: [task] });
    try {
      proxy.silence();
      const worker = pgq.worker({ heartbeatMs: 250, rescueAfterMs: 2_000 });
      const startedAt = Date.now();
      const started = worker.start().then(() => 'started', (err: unknown) => err);
      expect(await endsWithin(started, 90_000)).toBe('ended');
      // At its own limit, not the pool's connect limit (30 s) that the warm-up of the pool's connections waited out.
      expect(Date.now() - startedAt).toBeLessThan(20_000);
      const err = await started;
      expect(err).toBeInstanceOf(WorkerStartError);
      expect(String(err)).toMatch(/no database connection within \d+ ms/);
      const closeAt = Date.now();
      expect(await endsWithin(pgq.close(), 30_000)).toBe('ended');
      // It waited for that warm-up too.
      expect(Date.now() - closeAt).toBeLessThan(6_000);
    } finally {
      await proxy.close();
      await pgq.close();
    }
  }, 200_000);
});

describe('idle connections that go silent', () => {
  it('are closed by close(), not left half-closed for TCP to give up on', async () => {
    await ctx.migrated();
    const proxy = await freezableProxy(new URL(ctx.url));
    const task = defineTask({ name: 'idle-silent', schema: z.object({}), handler: () => null });
    const pgq = new Pgq({ connectionString: proxy.url, poolSize: 3, schema: ctx.schema, tasks: [task] });
    try {
      await pgq.warmUp();
      await pgq.enqueue(task, {});
      expect(socketsTo(proxy.url).length).toBeGreaterThan(0);
      // Nothing runs on them when they go silent: the pool's end tells each to end, and the server never closes its side.
      expect(proxy.freeze()).toBeGreaterThan(0);
      expect(await endsWithin(pgq.close(), 10_000)).toBe('ended');
      expect(socketsTo(proxy.url)).toEqual([]);
    } finally {
      await proxy.close();
      await pgq.close();
    }
  }, 30_000);
});

describe('a LISTEN connection that dies without a word', () => {
  it('is found out by its check, replaced, and notifications arrive again', async () => {
    const proxy = await freezableProxy(new URL(ctx.url));
    const listener = new Listener({ connectionString: proxy.url }, defaultLogger(), { checkMs: 200, queryTimeoutMs: 500 });
    const channel = `silent_${ctx.schema}`;
    const received: string[] = [];
    try {
      await listener.subscribe(channel, (payload) => received.push(payload));
      expect(await listener.ready(10_000)).toBe(true);
      expect(proxy.freeze()).toBe(1);
      // Sent while the connection is silent: lost with it. The replacement LISTENs again and hears the next ones.
      await until(async () => {
        await ctx.admin.query('SELECT pg_notify($1, $2)', [channel, 'after']);
        return received.includes('after');
      }, { timeoutMs: 15_000, everyMs: 200, what: 'a notification on a new LISTEN connection' });
      expect(listener.connected).toBe(true);
    } finally {
      expect(await endsWithin(listener.close(), 10_000)).toBe('ended');
      await proxy.close();
    }
  });
});

describe('LISTEN and UNLISTEN at once', () => {
  it('go out one after another on the listener\'s connection, never two at a time (pg queues them itself, deprecated)', async () => {
    const listener = new Listener({ connectionString: ctx.url }, defaultLogger(), { checkMs: 20, queryTimeoutMs: 5_000 });
    const original = pg.Client.prototype.query;
    const inFlight = new Map<unknown, number>();
    let most = 0;
    // Every statement on any pg.Client of this process, counted per client while it runs.
    pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
      const result = (original as (...a: unknown[]) => unknown).apply(this, args);
      if (result instanceof Promise) {
        inFlight.set(this, (inFlight.get(this) ?? 0) + 1);
        most = Math.max(most, inFlight.get(this)!);
        void result.catch(() => undefined).finally(() => inFlight.set(this, inFlight.get(this)! - 1));
      }
      return result;
    } as typeof original;
    try {
      const first = await listener.subscribe(`at_once_0_${ctx.schema}`, () => undefined);
      expect(await listener.ready(10_000)).toBe(true);
      // Subscribed and unsubscribed all at once (a worker's stop ends its subscriptions so), beside the connection's check every 20 ms.
      const offs = await Promise.all(Array.from({ length: 6 }, (_, i) => listener.subscribe(`at_once_${i + 1}_${ctx.schema}`, () => undefined)));
      await Promise.all([first, ...offs].map((off) => off()));
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(most).toBe(1);
    } finally {
      pg.Client.prototype.query = original;
      await listener.close();
    }
  });
});

describe('a LISTEN connection, (re)connected', () => {
  it('LISTENs on every channel in one statement, and hears each of them, also after the server ended it', async () => {
    const appName = `pgq_relisten_${process.pid}`;
    const url = new URL(ctx.url);
    url.searchParams.set('application_name', appName);
    const listener = new Listener({ connectionString: url.toString() }, defaultLogger(), { checkMs: 60_000, queryTimeoutMs: 5_000 });
    const original = pg.Client.prototype.query;
    const sent: string[] = [];
    pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
      if (typeof args[0] === 'string' && args[0].includes('LISTEN')) sent.push(args[0]);
      return (original as (...a: unknown[]) => unknown).apply(this, args);
    } as typeof original;
    const channels = [0, 1, 2].map((i) => `relisten_${i}_${ctx.schema}`);
    const heard = new Set<string>();
    try {
      await Promise.all(channels.map((channel) => listener.subscribe(channel, (payload) => heard.add(`${channel}:${payload}`))));
      expect(await listener.ready(10_000)).toBe(true);
      const hearsAll = async (payload: string): Promise<void> => {
        await until(async () => {
          for (const channel of channels) await ctx.admin.query('SELECT pg_notify($1, $2)', [channel, payload]);
          return channels.every((channel) => heard.has(`${channel}:${payload}`));
        }, { timeoutMs: 15_000, everyMs: 200, what: `every channel to hear ${payload}` });
      };
      await hearsAll('first');
      await ctx.admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1', [appName]);
      await until(() => !listener.connected, { what: 'the listener to see its connection gone' });
      expect(await listener.ready(10_000)).toBe(true);
      await hearsAll('again');
      // One statement per connection, naming every channel.
      expect(sent).toHaveLength(2);
      for (const text of sent) for (const channel of channels) expect(text).toContain(`LISTEN "${channel}"`);
    } finally {
      pg.Client.prototype.query = original;
      await listener.close();
    }
  });
});

describe('a channel subscribed while the connection LISTENs on the others', () => {
  it('is LISTENed on after that statement, and heard (it was left out until the next reconnect)', async () => {
    const listener = new Listener({ connectionString: ctx.url }, defaultLogger(), { checkMs: 60_000, queryTimeoutMs: 5_000 });
    const original = pg.Client.prototype.query;
    const heard: string[] = [];
    let late: Promise<unknown> | undefined;
    const channel = `late_${ctx.schema}`;
    pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
      const result = (original as (...a: unknown[]) => unknown).apply(this, args);
      // Another subscriber (a worker's start beside a waitForJob, say) comes while the connection's first LISTEN runs.
      if (!late && typeof args[0] === 'string' && args[0].includes('LISTEN')) late = listener.subscribe(channel, (payload) => heard.push(payload));
      return result;
    } as typeof original;
    try {
      await listener.subscribe(`early_${ctx.schema}`, () => undefined);
      expect(await listener.ready(10_000)).toBe(true);
      await late;
      await until(async () => {
        await ctx.admin.query('SELECT pg_notify($1, $2)', [channel, 'x']);
        return heard.includes('x');
      }, { timeoutMs: 5_000, everyMs: 200, what: 'the late channel to be heard' });
    } finally {
      pg.Client.prototype.query = original;
      await listener.close();
    }
  });
});

describe('a LISTEN connection closed while it reconnects', () => {
  it('ends the connection it was opening: nothing is left open to keep the process alive', async () => {
    // A proxy that passes each new connection on only after `delayMs`: a reconnect under way when close() comes.
    let delayMs = 0;
    const sockets: net.Socket[] = [];
    const target = new URL(ctx.url);
    const server = net.createServer((client) => {
      client.on('error', () => undefined);
      client.pause();
      sockets.push(client);
      setTimeout(() => {
        const upstream = net.connect(Number(target.port || 5432), target.hostname);
        upstream.on('error', () => undefined);
        sockets.push(upstream);
        client.pipe(upstream);
        upstream.pipe(client);
        client.resume();
      }, delayMs);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = new URL(ctx.url);
    url.hostname = '127.0.0.1';
    url.port = String((server.address() as net.AddressInfo).port);
    const appName = `pgq_reconnecting_${process.pid}`;
    const backends = async (): Promise<number> =>
      (await ctx.admin.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1', [appName])).rows[0]!.n;
    url.searchParams.set('application_name', appName);
    const listener = new Listener({ connectionString: url.toString() }, defaultLogger(), { checkMs: 200, queryTimeoutMs: 500 });
    try {
      await listener.subscribe(`reconnecting_${ctx.schema}`, () => undefined);
      expect(await listener.ready(10_000)).toBe(true);
      delayMs = 1_500;
      await ctx.admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1', [appName]);
      await until(() => !listener.connected, { what: 'the listener to see its connection gone' });
      await new Promise((resolve) => setTimeout(resolve, 600)); // its reconnect is under way, held by the proxy
      expect(await endsWithin(listener.close(), 10_000)).toBe('ended');
      await new Promise((resolve) => setTimeout(resolve, 2_000)); // past the proxy's delay
      expect(await backends()).toBe(0); // the connection it opened after close() stayed, idle, for ever
    } finally {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});

describe('an outcome lost to a crash of PostgreSQL, on a worker that does not listen', () => {
  it('is found running under the worker, not held, and given back to run again: it stayed running for as long as the worker lived', async () => {
    const runs = new Map<string, number>();
    const task = countingTask(runs, 0);
    const pgq = ctx.pgq({ tasks: [task], listen: false });
    await pgq.migrate();
    const worker = pgq.worker({ pollIntervalMs: 100, heartbeatMs: 300, rescueAfterMs: 1_500, leader: false });
    await worker.start();
    try {
      const job = await pgq.enqueue(task, { n: 1 });
      expect((await pgq.waitForJob(job.id, { timeoutMs: 10_000 })).state).toBe('succeeded');
      // What a crash leaves of an outcome committed without waiting for the disk: the row as the claim wrote it.
      await ctx.admin.query(`UPDATE "${ctx.schema}".jobs SET state = 'running', finished_at = NULL, result = NULL, worker_id = $2 WHERE id = $1`, [job.id, worker.id]);
      await until(async () => runs.get(job.id) === 2 && (await pgq.getJob(job.id))?.state === 'succeeded', { timeoutMs: 15_000, what: 'the job to be given back and run again' });
    } finally {
      await worker.stop();
    }
  });
});

describe('an outcome the database refuses for good, on a worker that does not listen', () => {
  it('is left for the rescuer once the worker stops, not given back to run again and again uncounted', async () => {
    const runs = new Map<string, number>();
    const task = countingTask(runs, 0);
    const pgq = ctx.pgq({ tasks: [task], listen: false });
    await pgq.migrate();
    const job = await pgq.enqueue(task, { n: 2 }, { maxAttempts: 2, delayMs: 3_600_000 });
    // Every outcome of this job is refused (as by a constraint or trigger of the application's); a give-back is not.
    await ctx.admin.query(`CREATE FUNCTION "${ctx.schema}".refuse_outcome() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN IF NEW.state IN ('succeeded', 'failed', 'retryable', 'cancelled') THEN RAISE EXCEPTION 'outcome refused'; END IF; RETURN NEW; END $$`);
    await ctx.admin.query(`CREATE TRIGGER refuse_outcome BEFORE UPDATE ON "${ctx.schema}".jobs FOR EACH ROW WHEN (OLD.id = ${Number(job.id)}) EXECUTE FUNCTION "${ctx.schema}".refuse_outcome()`);
    const worker = pgq.worker({ pollIntervalMs: 100, heartbeatMs: 300, rescueAfterMs: 1_000, leader: false });
    await worker.start();
    try {
      await ctx.admin.query(`UPDATE "${ctx.schema}".jobs SET run_at = now() WHERE id = $1`, [job.id]);
      await until(() => runs.get(job.id) === 1, { what: 'the job to run' });
      await new Promise((resolve) => setTimeout(resolve, 4_000)); // four of the worker's looks for jobs it does not hold
      expect(runs.get(job.id)).toBe(1); // it ran once a second, its attempts uncounted
      expect(await pgq.getJob(job.id)).toMatchObject({ state: 'running', attempts: 1 });
    } finally {
      await worker.stop();
      await ctx.admin.query(`DROP TRIGGER refuse_outcome ON "${ctx.schema}".jobs`);
      await ctx.admin.query(`DROP FUNCTION "${ctx.schema}".refuse_outcome()`);
    }
  });
});

describe('PostgreSQL restart', () => {
  // One server for these tests, each in a schema of its own (an initdb and a start each took seconds); a test
  // that did not end with the server up and answering gets a new one for the next.
  let server: EmbeddedServer | undefined;
  let up = false;
  const serverFor = async (): Promise<EmbeddedServer> => {
    if (!up) {
      await server?.stop();
      server = await startEmbedded('restart');
    }
    up = false; // until the test that takes it says so
    return server!;
  };
  afterAll(async () => {
    await server?.stop();
  });

  it('stop() while the database is down gives up writing a finished job\'s outcome after a lease and resolves; the job is left running for the rescuer', async () => {
    const server = await serverFor();
    const url = withAppName(server.url, 'pgq_outage');
    const { task, running, release } = gatedTask('gated');
    const pgq = new Pgq({ connectionString: url, schema: 'outage', tasks: [task] });
    try {
      await pgq.migrate();
      const worker = pgq.worker({ concurrency: 2, heartbeatMs: 200, rescueAfterMs: 1_000 });
      await worker.start();
      const job = await pgq.enqueue(task, {});
      await running;
      await server.halt();
      release(); // the handler succeeds while nothing can record it
      // Writes are retried for max(5 s, rescueAfterMs), then given up.
      expect(await endsWithin(worker.stop(), 30_000)).toBe('ended');
      expect(worker.state).toBe('stopped');
      await server.resume();
      const admin = new pg.Client({ connectionString: server.url });
      await admin.connect();
      try {
        const { rows } = await admin.query<{ state: string }>('SELECT state FROM outage.jobs WHERE id = $1', [job.id]);
        expect(rows).toEqual([{ state: 'running' }]);
      } finally {
        await admin.end();
      }
      up = true;
    } finally {
      release();
      await pgq.close();
    }
  });

  for (const mode of ['restart', 'crash'] as const) it(`keeps working across a ${mode === 'crash' ? 'crash (immediate shutdown)' : 'restart'}: every job completes, new jobs are picked up after it`, async () => {
    const server = await serverFor();
    const url = withAppName(server.url, 'pgq_restart');
    const runs = new Map<string, number>();
    const task = countingTask(runs, 20);
    const pgq = new Pgq({ connectionString: url, schema: mode, tasks: [task] });
    try {
      await pgq.migrate();
      const worker = pgq.worker({ concurrency: 4, pollIntervalMs: 100, heartbeatMs: 100, rescueAfterMs: 10_000 });
      await worker.start();
      const jobs = await pgq.enqueueMany(task, Array.from({ length: 100 }, (_, n) => ({ n })));
      const admin = new pg.Client({ connectionString: server.url });
      await admin.connect();
      // Restart once some but not all jobs are done.
      for (;;) {
        const { rows } = await admin.query<{ n: string }>(`SELECT count(*) AS n FROM ${mode}.jobs WHERE state = 'succeeded'`);
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
      up = true;
    } finally {
      await pgq.close();
    }
  });
});

describe('waitForJob across a reconnect of its LISTEN connection', () => {
  it('looks again as soon as the connection is back (a NOTIFY sent while it was down is lost): not at its next 5 s poll', async () => {
    const task = defineTask({ name: 'waited', queue: 'nobody-runs-it', schema: z.object({}), handler: () => null });
    const appName = `pgq_wait_${ctx.schema}`.slice(0, 60);
    await ctx.migrated({ tasks: [task] });
    const waiter = new Pgq({ connectionString: ctx.url, schema: ctx.schema, tasks: [task], listenConnectionString: withAppName(ctx.url, appName) });
    try {
      const job = await waiter.enqueue(task, {});
      const waited = waiter.waitForJob(job.id, { timeoutMs: 30_000 });
      const listening = async (): Promise<boolean> =>
        (await ctx.admin.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1', [appName])).rows[0]!.n > 0;
      await until(listening, { what: "the waiter's LISTEN connection" });
      await new Promise((resolve) => setTimeout(resolve, 300)); // its first look done: it waits
      await ctx.admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1', [appName]);
      // Ended meanwhile, with no NOTIFY anyone hears.
      await ctx.admin.query(`UPDATE "${ctx.schema}".jobs SET state = 'succeeded', finished_at = now() WHERE id = $1`, [job.id]);
      const woken = await Promise.race([waited.then((j) => j.state), new Promise((resolve) => setTimeout(() => resolve('not woken'), 3_000))]);
      expect(woken).toBe('succeeded');
    } finally {
      await waiter.close();
    }
  });
});
