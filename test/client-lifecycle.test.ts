/**
 * Starting and closing: what `worker.start()` rejects with, and what a Pgq
 * leaves behind on a pool it was given.
 */
import pg from 'pg';
import { sql } from 'kysely';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { defineTask, Pgq, PgqError, WorkerStartError } from '../src/index.js';
import { databaseUrl, deferred, until, useTestSchema, withAppName } from './support/harness.js';
import { poolClientConfig } from '../src/db/pool.js';
import v8 from 'node:v8';
import vm from 'node:vm';
import { getEventListeners } from 'node:events';
import { Registry } from 'prom-client';
import { PgqMetrics } from '../src/metrics.js';
import { captureLogger, type Line } from './support/logger.js';

const ctx = useTestSchema('client_lifecycle');
const noop = defineTask({ name: 'noop', schema: z.object({}), handler: () => undefined });

describe('worker.start()', () => {
  it('rejects with a WorkerStartError carrying the cause when the database cannot be reached', async () => {
    const pgq = new Pgq({ connectionString: 'postgres://postgres@127.0.0.1:1/postgres', tasks: [noop], listen: false });
    try {
      const worker = pgq.worker({ heartbeatMs: 200, rescueAfterMs: 1_000 });
      const err = await worker.start().then(() => null, (e: unknown) => e);
      expect(err).toBeInstanceOf(WorkerStartError);
      expect(err).toBeInstanceOf(PgqError);
      expect((err as PgqError).code).toBe('PGQ_WORKER_START');
      expect((err as Error).message).toMatch(/^the worker could not start: /);
      expect((err as Error).cause).toBeInstanceOf(Error);
      expect(worker.state).toBe('idle');
    } finally {
      await pgq.close();
    }
  });

  it('an enqueue that meets a column a later migration adds says the schema is not migrated; the same column dropped from an up-to-date schema is the database error as it is', async () => {
    const pgq = await ctx.migrated({ tasks: [noop] });
    const jobs = `"${ctx.schema}".jobs`;
    const migrations = `"${ctx.schema}".pgq_migrations`;
    const { rows } = await ctx.admin.query<{ name: string }>(`SELECT name FROM ${migrations} ORDER BY name DESC LIMIT 1`);
    await ctx.admin.query(`ALTER TABLE ${jobs} RENAME COLUMN meta TO meta_gone`);
    // The schema is this file's other tests' too: put back as it was (a migration row left out is run again, and fails).
    const kept = (await ctx.admin.query<{ row: unknown }>(`SELECT to_jsonb(m) AS row FROM ${migrations} m WHERE name = $1`, [rows[0]!.name])).rows[0]!.row;
    try {
      // Still at this pgq's version: the missing column is someone's own change.
      await expect(pgq.enqueue(noop, {})).rejects.toMatchObject({ code: '42703' });
      await ctx.admin.query(`DELETE FROM "${ctx.schema}".pgq_migrations WHERE name = $1`, [rows[0]!.name]);
      const err = await pgq.enqueue(noop, {}).then(() => null, (e: unknown) => e);
      expect(err).toMatchObject({ code: 'PGQ_SCHEMA_NOT_READY' });
      expect((err as Error).message).toMatch(/^schema \S+ is at version \d+, this pgq needs \d+ .*run pgq migrate.*column "meta"/);
    } finally {
      await ctx.admin.query(`ALTER TABLE ${jobs} RENAME COLUMN meta_gone TO meta`);
      await ctx.admin.query(
        `INSERT INTO ${migrations} SELECT * FROM jsonb_populate_record(NULL::${migrations}, $1) AS k WHERE NOT EXISTS (SELECT 1 FROM ${migrations} m WHERE m.name = k.name)`,
        [kept],
      );
    }
  });

  it('rejects with its own PgqError as it is (schema not migrated), and PGQ_WORKER_STOPPED once stopped', async () => {
    const unmigrated = ctx.pgq({ tasks: [noop], schema: `${ctx.schema}_none` });
    const err = await unmigrated.worker().start().then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(PgqError);
    expect((err as PgqError).code).toBe('PGQ_SCHEMA_NOT_READY');

    const pgq = await ctx.migrated({ tasks: [noop] });
    const worker = pgq.worker();
    await worker.start();
    await worker.stop();
    await expect(worker.start()).rejects.toMatchObject({ code: 'PGQ_WORKER_STOPPED' });
    // A start in the same tick as a stop, before it: the worker started, and no stop or close() ever ended it.
    const again = pgq.worker({ leader: false });
    const stopping = again.stop();
    await expect(again.start()).rejects.toMatchObject({ code: 'PGQ_WORKER_STOPPED' });
    await stopping;
    expect(again.state).toBe('stopped');
    const { rows } = await ctx.admin.query(`SELECT 1 FROM "${ctx.schema}".workers WHERE id = $1`, [again.id]);
    expect(rows).toEqual([]);
  });
});

describe('worker.start() after a failed start', () => {
  it('starts, records its tasks, and stops without leaving a lease connection open', async () => {
    const schema = `${ctx.schema}_late`;
    const appName = `pgq_${schema}`;
    const pgq = new Pgq({ connectionString: withAppName(databaseUrl(), appName), schema, tasks: [noop] });
    const connections = async (): Promise<number> =>
      (await ctx.admin.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1', [appName])).rows[0]!.n;
    try {
      const worker = pgq.worker({ heartbeatMs: 200, rescueAfterMs: 2_000 });
      await expect(worker.start()).rejects.toMatchObject({ code: 'PGQ_SCHEMA_NOT_READY' });
      await pgq.migrate();
      await worker.start();
      const { rows } = await ctx.admin.query<{ id: string; tasks: string[] }>(`SELECT id, tasks FROM "${schema}".workers`);
      expect(rows).toEqual([{ id: worker.id, tasks: ['noop'] }]);
      const job = await pgq.enqueue(noop, {});
      await expect(pgq.waitForJob(job.id, { timeoutMs: 10_000 })).resolves.toMatchObject({ state: 'succeeded' });
      await worker.stop();
      await pgq.close();
      // Every connection of this Pgq, the lease thread's included, is gone (the server may take a moment to drop a backend).
      const until = Date.now() + 3_000;
      while ((await connections()) > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
      expect(await connections()).toBe(0);
    } finally {
      await pgq.close();
      await ctx.admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    }
  });
});

describe('worker.start() failing after the registration', () => {
  it('removes its worker row, so it is not listed as live and a start with the same id works', async () => {
    const pgq = await ctx.migrated({ tasks: [noop] });
    const schema = `"${ctx.schema}"`;
    // Reading the queues' settings fails: the new queue's row is refused.
    await ctx.admin.query(`CREATE FUNCTION ${schema}.refuse_queue() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'queue % refused', NEW.name; END $$`);
    await ctx.admin.query(`CREATE TRIGGER refuse_queue BEFORE INSERT ON ${schema}.queues FOR EACH ROW EXECUTE FUNCTION ${schema}.refuse_queue()`);
    const rows = async (): Promise<string[]> => (await ctx.admin.query<{ id: string }>(`SELECT id FROM ${schema}.workers WHERE id = 'fixed-id'`)).rows.map((r) => r.id);
    try {
      const failing = pgq.worker({ id: 'fixed-id', queues: ['refused'], heartbeatMs: 200, rescueAfterMs: 60_000 });
      await expect(failing.start()).rejects.toMatchObject({ code: 'PGQ_WORKER_START', message: expect.stringMatching(/queue refused refused/) });
      expect(await rows()).toEqual([]);
    } finally {
      await ctx.admin.query(`DROP TRIGGER refuse_queue ON ${schema}.queues`);
    }
    const worker = pgq.worker({ id: 'fixed-id', queues: ['refused'], heartbeatMs: 200, rescueAfterMs: 60_000 });
    await worker.start();
    expect(await rows()).toEqual(['fixed-id']);
    await worker.stop();
    expect(await rows()).toEqual([]);
  });
});

describe('a Pgq given a pool', () => {
  const events = ['error', 'connect', 'acquire', 'release', 'remove'] as const;
  const poolListeners = (pool: pg.Pool): Record<string, number> => Object.fromEntries(events.map((e) => [e, pool.listenerCount(e)]));

  it('watches the connections the pool opened before it: a backend terminated inside a transaction fails that transaction, not the process', async () => {
    const pool = new pg.Pool({ connectionString: ctx.url, max: 2 });
    pool.on('error', () => undefined);
    try {
      // Both connections opened before the Pgq (an application's pool, warmed by its own queries).
      await Promise.all([pool.query('SELECT pg_sleep(0.05)'), pool.query('SELECT pg_sleep(0.05)')]);
      expect(pool.totalCount).toBe(2);
      const pgq = new Pgq({ pool, schema: ctx.schema, tasks: [noop] });
      const ended = pgq.kysely.transaction().execute(async (trx) => {
        const { rows } = await sql<{ pid: number }>`SELECT pg_backend_pid() AS pid`.execute(trx);
        await ctx.admin.query('SELECT pg_terminate_backend($1)', [rows[0]!.pid]);
        await new Promise((resolve) => setTimeout(resolve, 300)); // the client hears of it while idle in the transaction
        await sql`SELECT 1`.execute(trx);
      });
      await expect(ended).rejects.toThrow();
      await pgq.close();
    } finally {
      await pool.end();
    }
  });

  it('removes the listeners it added to the pool and its clients on close(), and leaves the pool open', async () => {
    const pool = new pg.Pool({ connectionString: ctx.url, max: 3 });
    pool.on('error', () => undefined); // the owner's handler: pgq leaves the pool's own 'error' alone
    const checkedOut: pg.PoolClient[] = [];
    const takeAll = async (): Promise<pg.PoolClient[]> => {
      const clients = await Promise.all([pool.connect(), pool.connect(), pool.connect()]);
      checkedOut.push(...clients);
      return clients;
    };
    const giveBack = (clients: pg.PoolClient[]): void => {
      for (const c of clients) checkedOut.splice(checkedOut.indexOf(c), 1);
      clients.forEach((c) => c.release());
    };
    try {
      const first = await pool.connect();
      const clientErrorListeners = first.listenerCount('error'); // a checked-out client, before any Pgq
      first.release(true); // closed: every connection from here on opens while the Pgq watches the pool
      const before = poolListeners(pool);

      const pgq = new Pgq({ pool, schema: ctx.schema, tasks: [noop] });
      await pgq.migrate();
      await pgq.warmUp();
      const worker = pgq.worker({ concurrency: 2 });
      await worker.start();
      const job = await pgq.enqueue(noop, {});
      await pgq.waitForJob(job.id, { timeoutMs: 10_000 });
      await worker.stop();
      const held = await takeAll();
      expect(held.map((c) => c.listenerCount('error'))).toEqual(held.map(() => clientErrorListeners + 1));
      giveBack(held);
      expect(poolListeners(pool)).not.toEqual(before);

      await pgq.close();
      expect(poolListeners(pool)).toEqual(before);
      const after = await takeAll();
      expect(after.map((c) => c.listenerCount('error'))).toEqual(after.map(() => clientErrorListeners));
      expect(after.every((c) => held.includes(c))).toBe(true); // the same connections: the pool stayed open
      giveBack(after);
      expect((await pool.query<{ one: number }>('SELECT 1 AS one')).rows[0]!.one).toBe(1);
    } finally {
      checkedOut.forEach((c) => c.release());
      await pool.end();
    }
  });
});

describe('pgq.close() on a pool it made', () => {
  it("a pool given by its parts keeps its password (and ssl key) for pgq's own connections: LISTEN and the lease thread log in", async () => {
    const url = new URL(ctx.url);
    const parts = { host: url.hostname, port: Number(url.port || 5432), user: decodeURIComponent(url.username), password: decodeURIComponent(url.password) || 'unused', database: url.pathname.slice(1) };
    const pool = new pg.Pool({ ...parts, ssl: false, max: 2 });
    // pg keeps these out of the pool's enumerable options: a spread loses them.
    expect(Object.keys(pool.options)).not.toContain('password');
    expect(poolClientConfig(pool)).toMatchObject({ host: parts.host, user: parts.user, password: parts.password });
    const withKey = new pg.Pool({ ...parts, ssl: { rejectUnauthorized: false, key: 'KEY' } });
    expect(poolClientConfig(withKey).ssl).toMatchObject({ rejectUnauthorized: false, key: 'KEY' });
    await withKey.end();
    await ctx.migrated();
    const lines: Line[] = [];
    const pgq = new Pgq({ pool, schema: ctx.schema, tasks: [noop], logger: captureLogger(lines) });
    const warnings = (): string[] => lines.filter((l) => l.level === 'warn').map((l) => l.msg ?? '');
    const worker = pgq.worker({ heartbeatMs: 100, rescueAfterMs: 2_000 });
    try {
      await worker.start();
      const health = await worker.health();
      expect(health.checks.listener.ok, health.checks.listener.message).toBe(true);
      await new Promise((resolve) => setTimeout(resolve, 500));
      expect(warnings().filter((w) => /listener could not connect|could not renew the worker's lease|lease thread cannot/.test(w))).toEqual([]);
    } finally {
      await worker.stop();
      await pgq.close();
      await pool.end();
    }
  });

  it("a pool with hooks of its own (onConnect, log, types) still has its lease renewed on a thread, not on the main one", async () => {
    await ctx.migrated();
    const pool = new pg.Pool({
      connectionString: ctx.url,
      max: 3,
      // Functions: they could not go to the lease thread, and the renewal moved onto the main thread with a warning.
      onConnect: async (client: pg.ClientBase) => void (await client.query('SET DateStyle = ISO')),
      verify: (_client: pg.ClientBase, done: (err?: Error) => void) => done(),
      log: () => undefined,
      types: { getTypeParser: pg.types.getTypeParser },
    } as pg.PoolConfig);
    const lines: Line[] = [];
    const pgq = new Pgq({ pool, schema: ctx.schema, tasks: [noop], logger: captureLogger(lines) });
    const warnings = (): string[] => lines.filter((l) => l.level === 'warn').map((l) => l.msg ?? '');
    const worker = pgq.worker({ heartbeatMs: 100, rescueAfterMs: 2_000 });
    try {
      await worker.start();
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(warnings().filter((w) => /main thread/.test(w))).toEqual([]);
      expect((await worker.health()).checks.lease.ok).toBe(true);
    } finally {
      await worker.stop();
      await pgq.close();
      await pool.end();
    }
    expect(Object.keys(poolClientConfig(pool))).not.toContain('onConnect');
  });

  it('forgets a worker once it has stopped (a process that replaced its workers kept every stopped one, ~66 KB each), in the Pgq and in PgqMetrics', async () => {
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as () => void;
    const pgq = await ctx.migrated({ tasks: [noop] });
    const metrics = new PgqMetrics(pgq, { registry: new Registry(), queueGauges: false });
    const refs: WeakRef<object>[] = [];
    for (let i = 0; i < 8; i++) {
      const worker = pgq.worker({ leader: false });
      metrics.observe(worker);
      await worker.start();
      await worker.stop();
      refs.push(new WeakRef(worker));
    }
    // PgqMetrics lets go of stopped workers as it observes the next one.
    metrics.observe(pgq.worker({ leader: false }));
    // None of them was ever collected; now all but the odd one a stack or a closure still holds for a while.
    await until(async () => {
      gc();
      await new Promise((resolve) => setTimeout(resolve, 50));
      return refs.filter((r) => r.deref() === undefined).length >= 4 || null;
    }, { what: 'the stopped workers to be collected', timeoutMs: 20_000, everyMs: 100 });
    metrics.close();
  });

  it('a second close() waits for the first: neither resolves before the workers have stopped', async () => {
    const gate = deferred();
    const started = deferred();
    const slow = defineTask({ name: 'slow-close', schema: z.object({}), handler: async () => { started.resolve(); await gate.promise; } });
    const pgq = await ctx.migrated({ tasks: [slow] });
    const worker = pgq.worker({ pollIntervalMs: 50 });
    await worker.start();
    await pgq.enqueue(slow, {});
    await started.promise;
    const first = pgq.close();
    let secondDone = false;
    const second = pgq.close().then(() => (secondDone = true));
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(secondDone).toBe(false);
    gate.resolve();
    await second;
    expect(worker.state).toBe('stopped');
    await first;
  });

  it('migrate() gives the connection back to the pool with its search_path as it was', async () => {
    const pool = new pg.Pool({ connectionString: ctx.url, max: 1 });
    try {
      const before = (await pool.query<{ search_path: string }>('SHOW search_path')).rows[0]!.search_path;
      const pgq = new Pgq({ pool, schema: `${ctx.schema}_own_pool`, tasks: [noop] });
      await pgq.migrate();
      await pgq.close();
      // The pool's one connection is the one the migration ran on.
      expect((await pool.query<{ search_path: string }>('SHOW search_path')).rows[0]!.search_path).toBe(before);
    } finally {
      await ctx.admin.query(`DROP SCHEMA IF EXISTS "${ctx.schema}_own_pool" CASCADE`);
      await pool.end();
    }
  });

  it('lets the calls under way finish first: enqueues waiting for one of two connections are written, a wait ends with PGQ_CLOSED, later calls are refused', async () => {
    const pgq = await ctx.migrated({ tasks: [noop], poolSize: 2 });
    const waiting = await pgq.enqueue(noop, {}, { delayMs: 3_600_000 });
    const wait = pgq.waitForJob(waiting.id).then(() => null, (e: unknown) => e);
    const enqueues = Array.from({ length: 60 }, () => pgq.enqueue(noop, {}, { delayMs: 3_600_000 }).then((job) => job.id, (e: unknown) => e));
    // Before the fix, close() ended the pool under the calls waiting for a connection: they never settled.
    await pgq.close();
    const settled = await Promise.race([Promise.all(enqueues), new Promise((resolve) => setTimeout(() => resolve('still waiting'), 10_000))]);
    expect(settled).not.toBe('still waiting');
    const ids = settled as unknown[];
    expect(ids.every((id) => typeof id === 'string'), String(ids.find((id) => typeof id !== 'string'))).toBe(true);
    const { rows } = await ctx.admin.query(`SELECT count(*)::int AS n FROM "${ctx.schema}".jobs WHERE id = ANY($1::bigint[])`, [ids]);
    expect(rows[0].n).toBe(60);
    expect(await wait).toMatchObject({ code: 'PGQ_CLOSED', message: expect.stringMatching(/closed while waiting/) });
    await expect(pgq.enqueue(noop, {})).rejects.toMatchObject({ code: 'PGQ_CLOSED' });
  });

  it('ends waits only after the workers stopped: a handler waiting on another job during the graceful stop finishes; many waits add no listeners to one signal', async () => {
    const warnings: Error[] = [];
    const onWarning = (w: Error): void => void warnings.push(w);
    process.on('warning', onWarning);
    try {
      const child = defineTask({ name: 'child', schema: z.object({}), handler: () => new Promise((resolve) => setTimeout(() => resolve('child done'), 500)) });
      let pgqRef: Pgq | undefined;
      const parentStarted = deferred<void>();
      const parent = defineTask({
        name: 'parent',
        schema: z.object({ child: z.string() }),
        maxAttempts: 1,
        handler: async ({ child: id }, c) => {
          parentStarted.resolve();
          return (await pgqRef!.waitForJob(id, { signal: c.signal })).result;
        },
      });
      const pgq = await ctx.migrated({ tasks: [child, parent] });
      pgqRef = pgq;
      const kid = await pgq.enqueue(child, {});
      const job = await pgq.enqueue(parent, { child: kid.id });
      const worker = pgq.worker({ concurrency: 2, shutdownGraceMs: 10_000 });
      await worker.start();
      // Its handler started (the child, claimed before it, runs too), not only its row claimed: a claim
      // whose reply the worker has not read when the stop begins goes back unstarted.
      await parentStarted.promise;
      // Waits from outside, with and without a signal of their own: each ends with PGQ_CLOSED.
      const outside = Array.from({ length: 24 }, (_, i) => pgq.waitForJob(i % 2 ? job.id : kid.id, i % 3 ? {} : { signal: new AbortController().signal }).then(() => 'finished', (e: unknown) => (e as PgqError).code));
      await pgq.close();
      const { rows } = await ctx.admin.query(`SELECT id::text, state, result FROM "${ctx.schema}".jobs WHERE id = ANY($1::bigint[]) ORDER BY id`, [[kid.id, job.id]]);
      expect(rows).toEqual([
        { id: kid.id, state: 'succeeded', result: 'child done' },
        { id: job.id, state: 'succeeded', result: 'child done' },
      ]);
      // The outside waits saw their jobs finish during the stop, or ended with PGQ_CLOSED after it.
      for (const outcome of await Promise.all(outside)) expect(['finished', 'PGQ_CLOSED']).toContain(outcome);
      expect(warnings.filter((w) => w.name === 'MaxListenersExceededWarning')).toEqual([]);
    } finally {
      process.off('warning', onWarning);
    }
  });

  it('follows one caller signal shared by many waits with one listener: no leak warning, all end when it aborts, none left after', async () => {
    const warnings: Error[] = [];
    const onWarning = (w: Error): void => void warnings.push(w);
    process.on('warning', onWarning);
    const pgq = await ctx.migrated({ tasks: [noop] });
    try {
      const job = await pgq.enqueue(noop, {}, { delayMs: 3_600_000 });
      const request = new AbortController();
      const waits = Array.from({ length: 30 }, () => pgq.waitForJob(job.id, { signal: request.signal }).then(() => 'finished', (e: unknown) => (e as Error).name));
      // Waits that settled on their own take their follower back; the others still follow.
      const short = Array.from({ length: 5 }, () => pgq.waitForJob(job.id, { signal: request.signal, timeoutMs: 50 }).catch((e: unknown) => (e as PgqError).code));
      expect(await Promise.all(short)).toEqual(Array(5).fill('PGQ_WAIT_TIMEOUT'));
      expect(getEventListeners(request.signal, 'abort')).toHaveLength(1);
      request.abort();
      expect(await Promise.all(waits)).toEqual(Array(30).fill('AbortError'));
      expect(getEventListeners(request.signal, 'abort')).toHaveLength(0);
      // A signal whose waits all ended keeps no listener of pgq's either.
      const other = new AbortController();
      await pgq.waitForJob(job.id, { signal: other.signal, timeoutMs: 20 }).catch(() => undefined);
      expect(getEventListeners(other.signal, 'abort')).toHaveLength(0);
      expect(warnings.filter((w) => w.name === 'MaxListenersExceededWarning')).toEqual([]);
    } finally {
      process.off('warning', onWarning);
      await pgq.close();
    }
  });

  it('says, once, when listenConnectionString names another database than the pool (nothing sent there reaches it)', async () => {
    const other = `pgq_${ctx.schema}_listen`;
    await ctx.admin.query(`CREATE DATABASE "${other}"`);
    const elsewhere = new URL(databaseUrl());
    elsewhere.pathname = `/${other}`;
    const errors = (lines: Line[]) => lines.filter((l) => l.level === 'error').map((l) => l.msg ?? '');
    const wrong: Line[] = [];
    const right: Line[] = [];
    const misdirected = new Pgq({ connectionString: ctx.url, schema: ctx.schema, tasks: [noop], listenConnectionString: elsewhere.href, logger: captureLogger(wrong) });
    const direct = new Pgq({ connectionString: ctx.url, schema: ctx.schema, tasks: [noop], listenConnectionString: ctx.url, logger: captureLogger(right) });
    try {
      await misdirected.migrate();
      const job = await misdirected.enqueue(noop, {}, { delayMs: 3_600_000 });
      // A wait starts the LISTEN connection (both at once: each has its 1.5 s to say something).
      await Promise.all([misdirected, direct].map((pgq) => pgq.waitForJob(job.id, { timeoutMs: 1_500 }).catch(() => undefined)));
      await until(async () => errors(wrong).length > 0, { what: 'the error about the LISTEN database' });
      expect(errors(wrong)).toEqual([expect.stringContaining(`is to database ${other}, its pool to `)]);
      expect(errors(right)).toEqual([]);
    } finally {
      await misdirected.close();
      await direct.close();
      await ctx.admin.query(`DROP DATABASE "${other}"`);
    }
  });

  it('survives the server ending its connections while they close (no uncaught error)', async () => {
    // pool.end() resolves once each connection was asked to end, not once it
    // closed: a server shutting down in that window sends each an error.
    const name = `pgq_${ctx.schema}_close`;
    const uncaught: unknown[] = [];
    const record = (err: unknown): void => void uncaught.push(err);
    process.on('uncaughtException', record);
    const admin = new pg.Client({ connectionString: databaseUrl() });
    await admin.connect();
    try {
      for (let round = 0; round < 10; round += 1) {
        const pgq = new Pgq({ connectionString: withAppName(databaseUrl(), name), schema: ctx.schema, tasks: [noop] });
        await pgq.warmUp(8);
        const closing = pgq.close();
        await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1', [name]);
        await closing;
        await new Promise((r) => setTimeout(r, 20)); // the errors arrive after close() resolved
      }
    } finally {
      process.off('uncaughtException', record);
      await admin.end();
    }
    expect(uncaught).toEqual([]);
  });
});

describe('the default logger', () => {
  it('takes PGQ_LOG_LEVEL, and refuses a value that is no level with an error naming the levels (pino said "default level:bogus must be included in custom levels")', async () => {
    const saved = process.env.PGQ_LOG_LEVEL;
    try {
      process.env.PGQ_LOG_LEVEL = 'bogus';
      expect(() => new Pgq({ connectionString: databaseUrl() })).toThrow(/PGQ_LOG_LEVEL must be one of trace, debug, info, warn, error, fatal, silent, got "bogus"/);
      process.env.PGQ_LOG_LEVEL = 'debug';
      const pgq = new Pgq({ connectionString: databaseUrl() });
      expect((pgq.logger as unknown as { level: string }).level).toBe('debug');
      await pgq.close();
      process.env.PGQ_LOG_LEVEL = '';
      const quiet = new Pgq({ connectionString: databaseUrl() });
      expect((quiet.logger as unknown as { level: string }).level).toBe('warn');
      await quiet.close();
    } finally {
      if (saved === undefined) delete process.env.PGQ_LOG_LEVEL;
      else process.env.PGQ_LOG_LEVEL = saved;
    }
  });
});
