import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import pg from 'pg';
import { setTimeout as sleepMs } from 'node:timers/promises';
import { CamelCasePlugin, Kysely, PostgresDialect, sql } from 'kysely';
import { defineTask, ValidationError, type PgqDatabase } from '../src/index.js';
import { deferred, until, useTestSchema } from './support/harness.js';
import { createStatements } from '../src/db/statements.js';
import { fromPg } from '../src/db/queryable.js';
import { captureLogger, type Line } from './support/logger.js';

const ctx = useTestSchema('enqueue');

const email = defineTask({
  name: 'email',
  schema: z.object({ to: z.string().email(), n: z.number().int().optional() }),
  queue: 'emails',
  priority: 3,
  maxAttempts: 7,
  handler: () => undefined,
});

async function count(where = 'true'): Promise<number> {
  const { rows } = await ctx.admin.query<{ n: string }>(`SELECT count(*) AS n FROM "${ctx.schema}".jobs WHERE ${where}`);
  return Number(rows[0]!.n);
}

describe('enqueue', () => {
  it('writes a job with the task defaults and returns its record', async () => {
    const pgq = await ctx.migrated({ tasks: [email] });
    const job = await pgq.enqueue(email, { to: 'a@b.co' });
    expect(job).toMatchObject({
      task: 'email',
      queue: 'emails',
      state: 'available',
      payload: { to: 'a@b.co' },
      priority: 3,
      attempts: 0,
      maxAttempts: 7,
      result: null,
      errors: [],
    });
    expect(typeof job.id).toBe('string');
    expect(await pgq.getJob(job.id)).toEqual(job);
  });

  it('enqueueMany with shared options returns, in payload order, the records the store holds', async () => {
    const pgq = await ctx.migrated({ tasks: [email] });
    const payloads = Array.from({ length: 50 }, (_, n) => ({ to: `u${n}@b.co`, n }));
    const now = await pgq.enqueueMany(email, payloads, { meta: { tenant: 't1' }, timeoutMs: 9_000, expiresInMs: 60_000 });
    expect(now.map((j) => j.payload)).toEqual(payloads);
    expect(now.map((j) => BigInt(j.id))).toEqual([...now.map((j) => BigInt(j.id))].sort((a, b) => (a < b ? -1 : 1)));
    for (const job of now) expect(await pgq.getJob(job.id)).toEqual(job);
    const later = await pgq.enqueueMany(email, payloads.slice(0, 3), { delayMs: 60_000, priority: 9, queue: 'later' });
    expect(later.every((j) => j.state === 'scheduled' && j.priority === 9 && j.queue === 'later' && j.expiresAt === null)).toBe(true);
    for (const job of later) expect(await pgq.getJob(job.id)).toEqual(job);
    expect(await count(`queue = 'later'`)).toBe(3);
  });

  it('per-job options override the task and a future runAt makes it scheduled', async () => {
    const pgq = await ctx.migrated({ tasks: [email] });
    const runAt = new Date(Date.now() + 3_600_000);
    const job = await pgq.enqueue(email, { to: 'a@b.co' }, { runAt, priority: -1, queue: 'slow', maxAttempts: 2 });
    expect(job).toMatchObject({ state: 'scheduled', priority: -1, queue: 'slow', maxAttempts: 2 });
    expect(job.runAt.getTime()).toBe(runAt.getTime());
    const delayed = await pgq.enqueue(email, { to: 'a@b.co' }, { delayMs: 60_000 });
    expect(delayed.state).toBe('scheduled');
    expect(delayed.runAt.getTime() - delayed.createdAt.getTime()).toBeGreaterThanOrEqual(59_000);
  });

  it('joins a pg transaction: rollback leaves no job, commit keeps it', async () => {
    const pgq = await ctx.migrated({ tasks: [email] });
    const client = new pg.Client({ connectionString: ctx.url });
    await client.connect();
    try {
      await client.query('BEGIN');
      const rolledBack = await pgq.enqueue(email, { to: 'x@y.co' }, { db: client });
      expect(await pgq.getJob(rolledBack.id)).toBeNull(); // not visible outside yet
      await client.query('ROLLBACK');
      expect(await pgq.getJob(rolledBack.id)).toBeNull();

      await client.query('BEGIN');
      const committed = await pgq.enqueueMany(email, [{ to: 'p@q.co' }, { to: 'r@s.co' }], { db: client });
      await client.query('COMMIT');
      expect((await pgq.getJob(committed[1]!.id))?.payload).toEqual({ to: 'r@s.co' });
    } finally {
      await client.end();
    }
  });

  it('joins a Kysely transaction', async () => {
    const pgq = await ctx.migrated({ tasks: [email] });
    const db = new Kysely<PgqDatabase>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: ctx.url, max: 2 }) }) });
    try {
      let inside = '';
      await expect(
        db.transaction().execute(async (trx) => {
          inside = (await pgq.enqueue(email, { to: 'k@y.co' }, { db: trx })).id;
          throw new Error('roll back');
        }),
      ).rejects.toThrow('roll back');
      expect(await pgq.getJob(inside)).toBeNull();
      const kept = await db.transaction().execute((trx) => pgq.enqueue(email, { to: 'k@y.co' }, { db: trx }));
      expect((await pgq.getJob(kept.id))?.state).toBe('available');
    } finally {
      await db.destroy();
    }
  });

  it('joins a Kysely transaction whose instance has CamelCasePlugin: the records come back whole', async () => {
    const pgq = await ctx.migrated({ tasks: [email] });
    const db = new Kysely<PgqDatabase>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: ctx.url, max: 2 }) }), plugins: [new CamelCasePlugin()] });
    try {
      const [one, many, keyed] = await db.transaction().execute(async (trx) => [
        await pgq.enqueue(email, { to: 'camel@y.co' }, { db: trx, maxAttempts: 3 }),
        await pgq.enqueueMany(email, [{ to: 'a@y.co' }, { to: 'b@y.co' }], { db: trx }),
        await pgq.enqueue(email, { to: 'camel@y.co' }, { db: trx, uniqueKey: 'camel' }),
      ] as const);
      // runAt, createdAt and maxAttempts were undefined: the plugin had renamed run_at, created_at, max_attempts.
      expect(one).toMatchObject({ maxAttempts: 3, runAt: expect.any(Date), createdAt: expect.any(Date), state: 'available' });
      for (const job of many) expect(job).toMatchObject({ runAt: expect.any(Date), createdAt: expect.any(Date), maxAttempts: expect.any(Number) });
      expect(keyed).toMatchObject({ uniqueKey: 'camel', runAt: expect.any(Date) });
      expect(await pgq.getJob(one.id)).toMatchObject({ id: one.id, maxAttempts: 3, runAt: one.runAt });
    } finally {
      await db.destroy();
    }
  });

  it("the built package, with kysely bundled into it, joins the application's own Kysely transaction", async () => {
    // dist/db/kysely.js is kysely bundled into one file by `npm run build`; the
    // application's Kysely below is the one in node_modules: two copies.
    const distIndex = new URL('../dist/index.js', import.meta.url).href; // built by `npm test`
    const built = (await import(distIndex)) as typeof import('../src/index.js');
    const task = built.defineTask({ name: 'built-email', schema: z.object({ to: z.string() }), queue: 'emails', handler: () => undefined });
    const pgq = new built.Pgq({ connectionString: ctx.url, schema: ctx.schema, tasks: [task] });
    const pool = new pg.Pool({ connectionString: ctx.url, max: 2 });
    pool.on('error', () => undefined);
    const db = new Kysely<PgqDatabase>({ dialect: new PostgresDialect({ pool }) });
    try {
      // Two copies indeed: pgq's handle is not an instance of the application's class.
      expect(pgq.kysely).not.toBeInstanceOf(Kysely);
      await pgq.migrate();
      await expect(
        db.transaction().execute(async (trx) => {
          await pgq.enqueue(task, { to: 'rolled@back.co' }, { db: trx });
          throw new Error('roll back');
        }),
      ).rejects.toThrow('roll back');
      const kept = await db.transaction().execute((trx) => pgq.enqueue(task, { to: 'kept@k.co' }, { db: trx }));
      // pgq's own handle (the bundled copy) reads it, with a fragment of the application's `sql`.
      const rows = await pgq.kysely
        .selectFrom('jobs')
        .select(['id', 'state'])
        .where('task', '=', 'built-email')
        .where(sql<boolean>`payload->>'to' = ${'kept@k.co'}`)
        .execute();
      expect(rows).toEqual([{ id: kept.id, state: 'available' }]);
      expect(await count(`payload->>'to' = 'rolled@back.co'`)).toBe(0);
      expect((await pgq.listJobs({ task: 'built-email', state: 'available' })).map((j) => j.id)).toEqual([kept.id]);
      expect(await pgq.cancelJobs({ task: 'built-email' })).toBe(1);
    } finally {
      await Promise.allSettled([db.destroy(), pgq.close()]);
    }
  });

  it('rejects a bad payload with the schema message and writes nothing', async () => {
    const pgq = await ctx.migrated({ tasks: [email] });
    const before = await count();
    await expect(pgq.enqueue(email, { to: 'not-an-email' })).rejects.toThrow(ValidationError);
    await expect(pgq.enqueue(email, { to: 'not-an-email' })).rejects.toThrow(/^payload\.to: /);
    const err = await pgq
      .enqueueMany(email, [{ to: 'ok@ok.co' }, { to: 'ok2@ok.co' }, { to: 'a@b.co', n: 1.5 }])
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ValidationError);
    expect((err as ValidationError).field).toBe('payload[2].n');
    expect(await count()).toBe(before);
  });

  it('rejects values PostgreSQL or JSON would mangle, naming the field', async () => {
    const loose = defineTask({ name: 'loose', schema: z.unknown(), handler: () => undefined });
    const pgq = await ctx.migrated({ tasks: [loose], maxPayloadBytes: 1_000 });
    const before = await count();
    await expect(pgq.enqueue(loose, { a: 'x\u0000y' })).rejects.toThrow(/payload\.a: contains \\u0000/);
    await expect(pgq.enqueue(loose, { big: 'x'.repeat(2_000) })).rejects.toThrow(/over the limit of 1000 bytes/);
    await expect(pgq.enqueue(loose, { n: 10n })).rejects.toThrow(/payload\.n: is a BigInt/);
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    await expect(pgq.enqueue(loose, cyclic)).rejects.toThrow(/cycle/);
    await expect(pgq.enqueue(loose, { s: 'half \ud800' })).rejects.toThrow(/payload\.s: contains a lone UTF-16 surrogate/);
    await expect(pgq.enqueue(loose, { ['k\udc00']: 1 })).rejects.toThrow(/payload: has a key containing a lone UTF-16 surrogate/);
    // 1,000 characters of a script that takes 3 bytes each, not compressible: more than an index entry holds.
    const cjk = Array.from({ length: 1_000 }, (_, i) => String.fromCodePoint(0x4e00 + ((i * 7919) % 20_000))).join('');
    await expect(pgq.enqueue(loose, {}, { uniqueKey: cjk })).rejects.toThrow(/options\.uniqueKey: must be at most 2,000 bytes of UTF-8/);
    await expect(pgq.enqueue(loose, {}, { runAt: new Date('nope') })).rejects.toThrow(/options\.runAt/);
    await expect(pgq.enqueue(loose, {}, { delayMs: -1 })).rejects.toThrow(/options\.delayMs/);
    await expect(pgq.enqueue(loose, {}, { priority: 1.5 })).rejects.toThrow(/options\.priority/);
    await expect(pgq.enqueue(loose, {}, { maxAttempts: 0 })).rejects.toThrow(/options\.maxAttempts/);
    await expect(pgq.enqueue(loose, {}, { queue: '' })).rejects.toThrow(/options\.queue/);
    await expect(pgq.enqueue(loose, {}, { delayMs: 5, runAt: new Date() })).rejects.toThrow(/runAt or delayMs/);
    expect(await count()).toBe(before);
    // An object referenced twice is no cycle: JSON writes it twice.
    const shared = { x: '\u{1F600}' };
    const job = await pgq.enqueue(loose, { a: shared, b: [shared, shared] });
    expect((await pgq.getJob(job.id))!.payload).toEqual({ a: shared, b: [shared, shared] });
  });

  it('treats quotes, semicolons and unicode in names as plain data', async () => {
    const odd = defineTask({ name: `it's"; DROP TABLE jobs; --ü`, schema: z.object({}), handler: () => undefined });
    const pgq = await ctx.migrated({ tasks: [odd] });
    const job = await pgq.enqueue(odd, {}, { queue: `q'"; SELECT 1; -- 🚀` });
    expect(await pgq.getJob(job.id)).toMatchObject({ task: odd.name, queue: `q'"; SELECT 1; -- 🚀` });
  });

  it('returns the live job for a repeated uniqueKey, and a new one once it finished', async () => {
    const pgq = await ctx.migrated({ tasks: [email] });
    const first = await pgq.enqueue(email, { to: 'u@u.co' }, { uniqueKey: 'user:1' });
    const again = await pgq.enqueue(email, { to: 'other@u.co' }, { uniqueKey: 'user:1' });
    expect(again.id).toBe(first.id);
    expect(again.payload).toEqual({ to: 'u@u.co' });
    const many = await pgq.enqueueMany(email, [{ to: 'a@u.co' }], { uniqueKey: 'user:1' });
    expect(many.map((j) => j.id)).toEqual([first.id]);
    // One key for several payloads would keep one of them: refused, nothing written.
    const before = await pgq.countJobs({});
    await expect(pgq.enqueueMany(email, [{ to: 'a@u.co' }, { to: 'b@u.co' }], { uniqueKey: 'user:2' })).rejects.toThrow(
      expect.objectContaining({ name: 'ValidationError', message: expect.stringMatching(/^options\.uniqueKey: is shared by every payload of enqueueMany/) }),
    );
    expect(await pgq.countJobs({})).toBe(before);
    await pgq.cancelJob(first.id);
    const fresh = await pgq.enqueue(email, { to: 'u@u.co' }, { uniqueKey: 'user:1' });
    expect(fresh.id).not.toBe(first.id);
  });

  it('concurrent enqueues with one uniqueKey make exactly one live job', async () => {
    const pgq = await ctx.migrated({ tasks: [email] });
    const jobs = await Promise.all(Array.from({ length: 10 }, () => pgq.enqueue(email, { to: 'c@c.co' }, { uniqueKey: 'race' })));
    expect(new Set(jobs.map((j) => j.id)).size).toBe(1);
    expect(await count(`unique_key = 'race'`)).toBe(1);
  });

  it('a uniqueKey held by a job past its expiry, never started, goes to a new job: the old one ends as the expirer ends it', async () => {
    // No worker, so no leader and no expirer: the expired job still holds the key.
    const pgq = await ctx.migrated({ tasks: [email] });
    const old = await pgq.enqueue(email, { to: 'old@u.co' }, { uniqueKey: 'exp', expiresInMs: 60_000 });
    const alive = await pgq.enqueue(email, { to: 'again@u.co' }, { uniqueKey: 'exp', expiresInMs: 60_000 });
    expect(alive.id).toBe(old.id); // not expired yet: it is the live job
    await ctx.admin.query(`UPDATE "${ctx.schema}".jobs SET expires_at = now() - interval '1 second' WHERE id = $1`, [old.id]);

    const fresh = await pgq.enqueue(email, { to: 'new@u.co' }, { uniqueKey: 'exp', expiresInMs: 60_000 });
    expect(fresh).toMatchObject({ state: 'available', payload: { to: 'new@u.co' }, uniqueKey: 'exp' });
    expect(fresh.id).not.toBe(old.id);
    const ended = await pgq.getJob(old.id);
    expect(ended).toMatchObject({ state: 'cancelled', finishedAt: expect.any(Date) });
    expect(ended!.errors.at(-1)!.message).toMatch(/^expired: not started by its expiry time /);

    // The same inside the application's transaction: both changes commit together, or neither.
    await ctx.admin.query(`UPDATE "${ctx.schema}".jobs SET expires_at = now() - interval '1 second' WHERE id = $1`, [fresh.id]);
    const client = new pg.Client({ connectionString: ctx.url });
    await client.connect();
    try {
      await client.query('BEGIN');
      const inTx = await pgq.enqueue(email, { to: 'tx@u.co' }, { uniqueKey: 'exp', db: client });
      expect(inTx.id).not.toBe(fresh.id);
      await client.query('ROLLBACK');
    } finally {
      await client.end();
    }
    expect(await pgq.getJob(fresh.id)).toMatchObject({ state: 'available' });
    expect(await count(`unique_key = 'exp'`)).toBe(2);
  });

  it('enqueueMany returns one record per payload, in order', async () => {
    const pgq = await ctx.migrated({ tasks: [email] });
    const payloads = Array.from({ length: 500 }, (_, n) => ({ to: `n${n}@x.co`, n }));
    const jobs = await pgq.enqueueMany(email, payloads);
    expect(jobs.map((j) => (j.payload as { n: number }).n)).toEqual(payloads.map((p) => p.n));
    expect(await pgq.enqueueMany(email, [])).toEqual([]);
  });

  it('sends one NOTIFY at commit, not before, and none on rollback', async () => {
    const pgq = await ctx.migrated({ tasks: [email] });
    const listener = new pg.Client({ connectionString: ctx.url });
    await listener.connect();
    const got: string[] = [];
    listener.on('notification', (n) => got.push(n.payload ?? ''));
    await listener.query(`LISTEN "pgq:${ctx.schema}:jobs"`);
    const client = new pg.Client({ connectionString: ctx.url });
    await client.connect();
    try {
      await client.query('BEGIN');
      await pgq.enqueueMany(email, [{ to: 'a@a.co' }, { to: 'b@a.co' }], { db: client });
      await client.query('ROLLBACK');
      await client.query('BEGIN');
      await pgq.enqueueMany(email, [{ to: 'a@a.co' }, { to: 'b@a.co' }], { db: client });
      // A delayed job's NOTIFY says when it is due (a worker sets a timer for it).
      const later = await pgq.enqueue(email, { to: 'c@a.co' }, { db: client, delayMs: 60_000 });
      await listener.query('SELECT 1');
      expect(got).toEqual([]);
      await client.query('COMMIT');
      await listener.query('SELECT 1'); // a round trip after the commit delivers the notification
      expect(got).toHaveLength(2);
      expect(got[0]).toBe('emails');
      const [queue, dueAt] = got[1]!.split('\n');
      expect(queue).toBe('emails');
      // run_at in microseconds, rounded up to the millisecond; the record's is truncated to it.
      expect(Number(dueAt) - later.runAt.getTime()).toBeGreaterThanOrEqual(0);
      expect(Number(dueAt) - later.runAt.getTime()).toBeLessThanOrEqual(1);
    } finally {
      await client.end();
      await listener.end();
    }
  });

  it('wakes workers for concurrent enqueues that skip their own NOTIFY (no polling needed)', async () => {
    const quick = defineTask({ name: 'quick', schema: z.object({ n: z.number() }), handler: ({ n }) => n });
    const pgq = await ctx.migrated({ tasks: [quick] });
    // A poll interval of an hour: only NOTIFY can wake this worker.
    const worker = pgq.worker({ concurrency: 4, pollIntervalMs: 3_600_000 });
    await worker.start();
    for (let round = 0; round < 3; round += 1) {
      const jobs = await Promise.all(Array.from({ length: 25 }, (_, n) => pgq.enqueue(quick, { n })));
      for (const job of jobs) expect((await pgq.waitForJob(job.id, { timeoutMs: 15_000 })).state).toBe('succeeded');
    }
    await worker.stop();
  });
});

describe('delayed jobs', () => {
  it('run when due on a worker that would otherwise sleep for its whole poll interval, however they were enqueued', async () => {
    const quick = defineTask({ name: 'later', schema: z.object({ n: z.number() }), handler: ({ n }) => n });
    const elsewhere = defineTask({ name: 'elsewhere', queue: 'elsewhere', schema: z.object({}), handler: () => null });
    const pgq = await ctx.migrated({ tasks: [quick, elsewhere] });
    // A poll interval of an hour: only NOTIFY, or a due time the worker was told of, can wake it.
    const worker = pgq.worker({ queues: ['default'], concurrency: 4, pollIntervalMs: 3_600_000 });
    await worker.start();
    const ranOnTime = async (jobs: { id: string }[]) => {
      for (const { id } of jobs) {
        const done = await pgq.waitForJob(id, { timeoutMs: 15_000 });
        expect(done.state).toBe('succeeded');
        expect(done.startedAt!.getTime()).toBeGreaterThanOrEqual(done.runAt.getTime());
      }
    };
    const client = new pg.Client({ connectionString: ctx.url });
    await client.connect();
    try {
      // One enqueue on pgq's pool (the insert trigger's NOTIFY).
      await ranOnTime([await pgq.enqueue(quick, { n: 1 }, { delayMs: 300 })]);
      // Overlapping an enqueue into a queue the worker does not serve (it inserts with
      // the trigger's NOTIFY, these quietly, with one NOTIFY after they commit), one at a time and in bulk.
      const overlapping = async <T>(delayed: () => Promise<T>[]) => (await Promise.all([pgq.enqueue(elsewhere, {}), ...delayed()])).slice(1) as T[];
      await ranOnTime(await overlapping(() => Array.from({ length: 10 }, (_, n) => pgq.enqueue(quick, { n }, { delayMs: 300 + n * 20 }))));
      await ranOnTime((await overlapping(() => [0, 1, 2].map(() => pgq.enqueueMany(quick, [{ n: 1 }, { n: 2 }], { delayMs: 400 })))).flat());
      // In the caller's transaction, due before it commits.
      await client.query('BEGIN');
      const early = await pgq.enqueue(quick, { n: 3 }, { db: client, delayMs: 50 });
      await new Promise((r) => setTimeout(r, 300));
      await client.query('COMMIT');
      await ranOnTime([early]);
      // By plain SQL.
      const { rows } = await ctx.admin.query<{ id: string }>(
        `INSERT INTO "${ctx.schema}".jobs (task, queue, payload, state, run_at) VALUES ('later', 'default', '{"n": 4}', 'scheduled', now() + interval '300 ms') RETURNING id::text`,
      );
      await ranOnTime(rows);
    } finally {
      await client.end();
      await worker.stop();
    }
  });
});

describe('jobs due later wake the workers of their queue', () => {
  it('take plain-SQL inserts at infinity and -infinity as before (no NOTIFY for them)', async () => {
    const pgq = await ctx.migrated({ tasks: [] });
    try {
      const { rows } = await ctx.admin.query(
        `INSERT INTO "${ctx.schema}".jobs (task, queue, payload, state, run_at)
         VALUES ('t', 'default', '{}', 'scheduled', 'infinity'), ('t', 'default', '{}', 'scheduled', '-infinity'), ('t', 'default', '{}', 'scheduled', now() + interval '2 hours')
         RETURNING run_at::text`,
      );
      expect(rows.map((r) => r.run_at).slice(0, 2)).toEqual(['infinity', '-infinity']);
    } finally {
      await pgq.close();
    }
  });

  it('measure the wait on the database clock: a worker whose clock is ahead does not spin, one behind is not late', async () => {
    const job = defineTask({ name: 'skewed', schema: z.object({}), handler: () => 'ran' });
    const pgq = await ctx.migrated({ tasks: [job] });
    const looks: string[] = [];
    const query = pg.Client.prototype.query;
    // Counts this process's look-ups of the next due time (the statement an idle worker spins on).
    pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
      const config = args[0] as { name?: string } | undefined;
      if (typeof config === 'object' && config?.name && /_next_run_at_[0-9a-f]{8}$/.test(config.name)) looks.push(config.name);
      return (query as (...a: unknown[]) => unknown).apply(this, args);
    } as typeof query;
    try {
      for (const offsetMs of [5_000, -10_000]) {
        const skewed = ctx.pgq({ tasks: [job], clock: { now: () => new Date(Date.now() + offsetMs), monotonicMs: () => performance.now() } });
        const worker = skewed.worker({ pollIntervalMs: 3_600_000, leader: false });
        await worker.start();
        try {
          looks.length = 0;
          const enqueued = await pgq.enqueue(job, {}, { delayMs: 2_000 });
          const done = await pgq.waitForJob(enqueued.id, { timeoutMs: 8_000 });
          expect(done.state).toBe('succeeded');
          // Ahead by 5 s, it took the job for due at once and looked again and again until it was.
          expect(looks.length, `next_run_at looks with a clock ${offsetMs} ms off`).toBeLessThan(20);
        } finally {
          await worker.stop();
          await skewed.close();
        }
      }
    } finally {
      pg.Client.prototype.query = query;
      await pgq.close();
    }
  });

  it("a worker's start goes to its first claim in few round trips: one LISTEN for every channel, no look for orphans, promotion or election before the claim; a job due at start still runs", async () => {
    const task = defineTask({ name: 'at-start', queue: 'at-start', schema: z.object({ n: z.number() }), handler: ({ n }) => n });
    const pgq = await ctx.migrated({ tasks: [task] });
    const due = await pgq.enqueue(task, { n: 1 }, { delayMs: 50 });
    const available = await pgq.enqueue(task, { n: 2 });
    await sleepMs(100); // due, and still scheduled: no worker made it available
    // The queue's row made before (a worker's first use makes it, and its NOTIFY holds the first claim back for a re-read).
    await ctx.admin.query(`INSERT INTO "${ctx.schema}".queues (name) VALUES ('at-start')`);
    const statements: string[] = [];
    const query = pg.Client.prototype.query;
    pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
      const config = args[0] as string | { name?: string; text?: string } | undefined;
      const text = typeof config === 'string' ? config : (config?.name?.replace(/_[0-9a-f]{8}$/, '') ?? config?.text ?? '');
      statements.push(text);
      const callback = args.at(-1);
      if (/_claim(_many)?$/.test(text) && typeof callback === 'function') {
        // The answer held back 200 ms: what waits for it waits that long.
        args[args.length - 1] = (...answer: unknown[]) =>
          setTimeout(() => {
            statements.push('answered: claim');
            (callback as (...a: unknown[]) => void)(...answer);
          }, 200);
      }
      return (query as (...a: unknown[]) => unknown).apply(this, args);
    } as typeof query;
    // A poll interval of an hour: the due job runs by the promotion that follows the first claim, or not at all.
    const worker = ctx.pgq({ tasks: [task] }).worker({ queues: ['at-start'], pollIntervalMs: 3_600_000 });
    try {
      await worker.start();
      await until(() => worker.isLeader, { what: 'the worker to lead' });
      expect(await pgq.waitForJob(available.id, { timeoutMs: 10_000 })).toMatchObject({ state: 'succeeded', result: 2 });
      expect(await pgq.waitForJob(due.id, { timeoutMs: 10_000 })).toMatchObject({ state: 'succeeded', result: 1 });
      const firstClaim = statements.findIndex((text) => /_claim(_many)?$/.test(text));
      expect(firstClaim).toBeGreaterThan(0);
      const before = statements.slice(0, firstClaim);
      expect(before.filter((text) => /(release_orphans|promote_due)$/.test(text))).toEqual([]);
      expect(before.filter((text) => /to_regclass|DateStyle/.test(text))).toEqual([]);
      const listens = before.filter((text) => text.includes('LISTEN'));
      expect(listens).toHaveLength(1);
      for (const channel of ['jobs', 'cancel', 'queues']) expect(listens[0]).toContain(`LISTEN "pgq:${ctx.schema}:${channel}"`);
      // The leader's election and maintenance come after the first claim has been answered.
      expect(before.filter((text) => /"leader"/.test(text))).toEqual([]);
      expect(statements.indexOf('answered: claim')).toBeGreaterThan(firstClaim);
      expect(statements.findIndex((text) => /"leader"/.test(text))).toBeGreaterThan(statements.indexOf('answered: claim'));
    } finally {
      pg.Client.prototype.query = query;
      await worker.stop();
    }
  });

  it('a job announced as available is claimed before the periodic promotion, which comes after the claim', async () => {
    const now = defineTask({ name: 'announced', schema: z.object({}), handler: () => 'ran' });
    const pgq = await ctx.migrated({ tasks: [now] });
    let aheadMs = 0;
    const worker = ctx
      .pgq({ tasks: [now], clock: { now: () => new Date(), monotonicMs: () => performance.now() + aheadMs } })
      .worker({ pollIntervalMs: 3_600_000, leader: false });
    const statements: string[] = [];
    const query = pg.Client.prototype.query;
    pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
      const config = args[0] as { name?: string } | undefined;
      // Without the hash of the statement's text that ends each name.
      if (typeof config === 'object' && config?.name) statements.push(config.name.replace(/_[0-9a-f]{8}$/, ''));
      return (query as (...a: unknown[]) => unknown).apply(this, args);
    } as typeof query;
    try {
      await worker.start();
      const first = await pgq.enqueue(now, {});
      await pgq.waitForJob(first.id, { timeoutMs: 10_000 });
      // Idle: its outcome written, its last look the next due time (or the outcome, written after it).
      await until(async () => statements.some((name) => name.endsWith('_complete')), { what: 'the outcome to be written' });
      await sleepMs(100);
      await until(async () => /(_complete|next_run_at)$/.test(statements.at(-1) ?? ''), { what: 'the worker to go idle' });
      // A poll interval later by the worker's clock: the periodic promotion is due at its next claim.
      aheadMs = 3_600_001;
      statements.length = 0;
      const job = await pgq.enqueue(now, {});
      expect((await pgq.waitForJob(job.id, { timeoutMs: 10_000 })).state).toBe('succeeded');
      await until(async () => statements.some((name) => name.endsWith('promote_due')), { what: 'the periodic promotion' });
      const order = statements.filter((name) => name.endsWith('_claim') || name.endsWith('promote_due'));
      expect(order[0], order.join(', ')).toMatch(/_claim$/);
    } finally {
      pg.Client.prototype.query = query;
      await worker.stop();
    }
  });

  it('run the available jobs while due jobs cannot be made available, logged as that (not as a failed claim), and the due ones once they can', async () => {
    const task = defineTask({ name: 'promote-refused', queue: 'promote-refused', schema: z.object({ n: z.number() }), handler: ({ n }) => n });
    const lines: Line[] = [];
    const pgq = await ctx.migrated({ tasks: [task], logger: captureLogger(lines) });
    await ctx.admin.query(`
      CREATE FUNCTION "${ctx.schema}".refuse_promotion() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN RAISE EXCEPTION 'promotions refused here'; END $$;
      CREATE TRIGGER refuse_promotion BEFORE UPDATE ON "${ctx.schema}".jobs FOR EACH ROW
        WHEN (OLD.state IN ('scheduled', 'retryable') AND NEW.state = 'available') EXECUTE FUNCTION "${ctx.schema}".refuse_promotion();`);
    const worker = pgq.worker({ queues: ['promote-refused'], pollIntervalMs: 200, leader: false });
    await worker.start();
    try {
      const delayed = await pgq.enqueue(task, { n: 1 }, { delayMs: 50 });
      await until(() => lines.some((l) => l.msg?.startsWith('pgq could not make due scheduled and retryable jobs available')), { what: 'the failed promotion to be logged' });
      // Claims go on: a job enqueued available runs.
      const now = await pgq.enqueue(task, { n: 2 });
      expect((await pgq.waitForJob(now.id, { timeoutMs: 10_000 })).state).toBe('succeeded');
      expect((await pgq.getJob(delayed.id))?.state).toBe('scheduled');
      await ctx.admin.query(`DROP TRIGGER refuse_promotion ON "${ctx.schema}".jobs`);
      expect((await pgq.waitForJob(delayed.id, { timeoutMs: 10_000 })).state).toBe('succeeded');
      expect(lines.some((l) => l.msg?.startsWith('pgq makes due scheduled and retryable jobs available again'))).toBe(true);
      expect(lines.filter((l) => l.msg?.includes('could not claim'))).toEqual([]);
    } finally {
      await worker.stop();
    }
  });

  it('run when due where the workers of their queue run different tasks (the one that promotes it may not run it)', async () => {
    const x = defineTask({ name: 'x-only', schema: z.object({}), handler: () => 'x' });
    const y = defineTask({ name: 'y-only', schema: z.object({}), handler: () => 'y' });
    const pgq = await ctx.migrated({ tasks: [x, y] });
    const workers = [ctx.pgq({ tasks: [x] }), ctx.pgq({ tasks: [y] })].map((p) => p.worker({ pollIntervalMs: 60_000, leader: false }));
    for (const worker of workers) await worker.start();
    try {
      const late: string[] = [];
      for (let n = 0; n < 20; n += 1) {
        const job = await pgq.enqueue(y, {}, { delayMs: 200 });
        const done = await pgq.waitForJob(job.id, { timeoutMs: 3_000 }).catch(() => undefined);
        if (done?.state !== 'succeeded') late.push(job.id);
      }
      expect(late).toEqual([]);
    } finally {
      for (const worker of workers) await worker.stop();
    }
  });

  it('a promotion wakes the other workers of the queue only for what its worker will not claim itself', async () => {
    const slow = defineTask({ name: 'slow-due', schema: z.object({}), handler: async () => new Promise((r) => setTimeout(() => r('done'), 300)) });
    const pgq = await ctx.migrated({ tasks: [slow] });
    const heard: string[] = [];
    const listener = new pg.Client({ connectionString: ctx.url });
    await listener.connect();
    listener.on('notification', (n) => heard.push(n.payload ?? ''));
    await listener.query(`LISTEN "pgq:${ctx.schema}:jobs"`);
    const workers = ['w1', 'w2'].map((id) => ctx.pgq({ tasks: [slow] }).worker({ id, concurrency: 1, pollIntervalMs: 3_600_000, leader: false }));
    await workers[0]!.start();
    try {
      // One due job, one worker: it promotes and claims it; nobody else needs waking. (A first
      // round creates the queue's row, whose trigger wakes the queue's workers once.)
      for (const round of ['first', 'second']) {
        heard.length = 0;
        const one = await pgq.enqueue(slow, {}, { delayMs: 200 });
        expect((await pgq.waitForJob(one.id, { timeoutMs: 10_000 })).state).toBe('succeeded');
        await listener.query('SELECT 1');
        if (round === 'second') expect(heard.filter((p) => p === 'default')).toEqual([]);
      }
      // Four due at once, two idle workers of one slot: whichever promotes them claims two at most, and
      // wakes the other, which may have looked before the promotion committed and found nothing.
      await workers[1]!.start();
      const four = await pgq.enqueueMany(slow, [{}, {}, {}, {}], { delayMs: 300 });
      const done = await Promise.all(four.map((job) => pgq.waitForJob(job.id, { timeoutMs: 10_000 })));
      expect(new Set(done.map((job) => job.workerId))).toEqual(new Set(['w1', 'w2']));
    } finally {
      for (const worker of workers) await worker.stop();
      await listener.end();
    }
  });

  it('a promotion that saw due jobs and did not promote them says so: to its worker, or to the queue when its worker will not claim them', async () => {
    // Two workers promote at one due time: the one whose snapshot came first reaches the row after the
    // other made it available, locks it, finds it no longer scheduled and holds the lock to its commit;
    // the other's claim meanwhile skips the row and its worker, which promoted its own task's job and
    // sent no NOTIFY, slept. A row skipped locked is the same case for the promotion that saw it.
    const later = defineTask({ name: 'seen-due', schema: z.object({}), handler: () => null });
    await ctx.migrated({ tasks: [later] });
    // Scheduled and due (an enqueue at a past time would be available at once).
    const { rows } = await ctx.admin.query<{ id: string }>(
      `INSERT INTO "${ctx.schema}".jobs (task, queue, payload, state, run_at) VALUES ('seen-due', 'seen', '{}', 'scheduled', now() - interval '1 second') RETURNING id::text`,
    );
    const job = rows[0]!;
    const heard: string[] = [];
    const listener = new pg.Client({ connectionString: ctx.url });
    const holder = await ctx.admin.connect();
    await listener.connect();
    listener.on('notification', (n) => heard.push(n.payload ?? ''));
    await listener.query(`LISTEN "pgq:${ctx.schema}:jobs"`);
    const statements = createStatements(ctx.schema);
    const promote = (tasks: string[], claimable: number) => statements.promoteDue(fromPg(ctx.admin), { queues: ['seen'], limit: 100, tasks, claimable });
    const told = async (): Promise<number> => {
      await listener.query('SELECT 1');
      return heard.splice(0).filter((payload) => payload === 'seen').length;
    };
    try {
      await holder.query('BEGIN');
      await holder.query(`SELECT 1 FROM "${ctx.schema}".jobs WHERE id = $1 FOR UPDATE`, [job.id]);
      // A worker of its task that claims at least that many next: it is told, and claims; no NOTIFY wakes every worker.
      expect(await promote(['seen-due'], 100)).toEqual({ promoted: 0, seen: 1 });
      expect(await told()).toBe(0);
      // A worker of other tasks, or one that claims none next: the queue is told.
      expect(await promote(['other-task'], 100)).toEqual({ promoted: 0, seen: 1 });
      expect(await told()).toBe(1);
      expect(await promote(['seen-due'], 0)).toEqual({ promoted: 0, seen: 1 });
      expect(await told()).toBe(1);
      // Nothing seen due and left: nothing said.
      await holder.query('ROLLBACK');
      expect(await promote(['seen-due'], 100)).toEqual({ promoted: 1, seen: 0 });
      expect(await promote(['seen-due'], 100)).toEqual({ promoted: 0, seen: 0 });
      expect(await told()).toBe(0);
    } finally {
      await holder.query('ROLLBACK').catch(() => undefined);
      holder.release();
      await listener.end();
    }
  });

  it('a job rescued from a dead worker wakes an idle worker of its queue', async () => {
    const orphaned = defineTask({ name: 'orphaned', schema: z.object({}), handler: () => 'ran again' });
    const pgq = await ctx.migrated({ tasks: [orphaned] });
    const idle = pgq.worker({ concurrency: 1, pollIntervalMs: 3_600_000, leader: false });
    // The leader (whose rescuer finds the job) serves another queue.
    const other = defineTask({ name: 'other', queue: 'elsewhere', schema: z.object({}), handler: () => null });
    const leader = ctx.pgq({ tasks: [other] }).worker({ heartbeatMs: 100, rescueAfterMs: 1_000 });
    await idle.start();
    try {
      await ctx.admin.query(
        `INSERT INTO "${ctx.schema}".workers (id, hostname, pid, queues, concurrency, rescue_after_ms, lease_expires_at) VALUES ('dead', 'gone', 1, '{default}', 1, 1000, now() - interval '1 minute')`,
      );
      const { rows } = await ctx.admin.query<{ id: string }>(
        `INSERT INTO "${ctx.schema}".jobs (task, queue, payload, state, attempts, worker_id, started_at) VALUES ('orphaned', 'default', '{}', 'running', 1, 'dead', now() - interval '1 minute') RETURNING id::text`,
      );
      await leader.start();
      const done = await pgq.waitForJob(rows[0]!.id, { timeoutMs: 10_000 });
      expect(done).toMatchObject({ state: 'succeeded', result: 'ran again', attempts: 2 });
    } finally {
      await leader.stop();
      await idle.stop();
    }
  });

  it('a retry and a snooze wake an idle worker of their queue while the one that ran them is busy', async () => {
    const pgqA = await ctx.migrated({ tasks: [] });
    let startB!: () => Promise<void>;
    let release = deferred<void>();
    const long = defineTask({ name: 'long', schema: z.object({}), handler: () => release.promise });
    const flaky = defineTask({
      name: 'flaky',
      schema: z.object({ how: z.enum(['fail', 'snooze']) }),
      backoff: { baseMs: 300, maxMs: 300 },
      handler: async ({ how }, c) => {
        if (c.attempt > 1) return `ran by ${c.job.workerId}`;
        // The other worker starts only now (it cannot take this attempt), and this worker's one slot goes to a long job next.
        await startB();
        await pgqA.enqueue(long, {});
        await new Promise((r) => setTimeout(r, 300)); // long enough that this worker claims nothing ahead
        if (how === 'snooze') c.snooze(300);
        throw new Error('first attempt fails');
      },
    });
    const a = ctx.pgq({ tasks: [flaky, long] });
    const b = ctx.pgq({ tasks: [flaky] });
    const workerA = a.worker({ id: 'busy', concurrency: 1, pollIntervalMs: 3_600_000, leader: false });
    const workerB = b.worker({ id: 'idle', concurrency: 1, pollIntervalMs: 3_600_000, leader: false });
    let bStarted = false;
    startB = async () => {
      if (!bStarted) await workerB.start();
      bStarted = true;
    };
    await workerA.start();
    try {
      for (const how of ['fail', 'snooze'] as const) {
        const job = await a.enqueue(flaky, { how });
        const done = await a.waitForJob(job.id, { timeoutMs: 10_000 });
        expect(done.result).toBe('ran by idle');
        release.resolve();
        release = deferred<void>();
        await until(async () => (await a.countJobs({ task: 'long', state: ['running', 'available'] })) === 0, { what: 'the long job to end' });
      }
    } finally {
      release.resolve();
      await workerA.stop();
      await workerB.stop();
      await a.close();
      await b.close();
      await pgqA.close();
    }
  });
});

describe('enqueues of a uniqueKey an open transaction holds', () => {
  it('wait on at most half of the pool: the worker, other enqueues and reads go on until the holder commits, then all get its job', async () => {
    const keyed = defineTask({ name: 'keyed', queue: 'keyed', schema: z.object({ n: z.number() }), handler: ({ n }) => n });
    const other = defineTask({ name: 'other-work', queue: 'other-work', schema: z.object({}), handler: () => 'done' });
    const pgq = await ctx.migrated({ tasks: [keyed, other], poolSize: 4 });
    const holder = await ctx.admin.connect();
    const worker = pgq.worker({ queues: ['other-work'], concurrency: 2, leader: false });
    await worker.start();
    try {
      await holder.query('BEGIN');
      const held = await pgq.enqueue(keyed, { n: 0 }, { uniqueKey: 'k', db: holder });
      // Each waits in PostgreSQL for the holder's transaction, holding a connection of the pool while it does.
      const waiting = Array.from({ length: 6 }, (_, n) => pgq.enqueue(keyed, { n: n + 1 }, { uniqueKey: 'k' }));
      await ctx.lockWaiters(2, 'two enqueues of the key to wait on the holder');
      // With all four connections taken by them, none of this could run before the holder committed.
      const stillBlocked = (work: Promise<unknown>) => Promise.race([work.then(() => 'ran'), new Promise((r) => setTimeout(() => r('blocked'), 15_000))]);
      const job = await pgq.enqueue(other, {});
      expect(await stillBlocked(pgq.waitForJob(job.id, { timeoutMs: 14_000 }))).toBe('ran');
      expect((await pgq.getJob(job.id))!.state).toBe('succeeded');
      await holder.query('COMMIT');
      const got = await Promise.all(waiting);
      expect(new Set(got.map((j) => j.id))).toEqual(new Set([held.id]));
    } finally {
      await holder.query('ROLLBACK').catch(() => undefined);
      holder.release();
      await worker.stop();
    }
  });
});

describe('a db handle that is not pg or Kysely', () => {
  it('is refused naming options.db, whether it has no query() or a query() of another library (pg-promise answers with the rows; a callback-style one with nothing)', async () => {
    const plain = defineTask({ name: 'plain-db', queue: 'plain-db', schema: z.object({}), handler: () => null });
    const pgq = await ctx.migrated({ tasks: [plain] });
    await expect(pgq.enqueue(plain, {}, { db: { execute: () => undefined } as never })).rejects.toMatchObject({ code: 'PGQ_BAD_DB' });
    const client = await ctx.admin.connect();
    try {
      await client.query('BEGIN');
      // Like pg-promise: the statement runs, and the answer is the rows alone.
      const rowsOnly = { query: async (config: pg.QueryConfig) => (await client.query(config)).rows };
      await expect(pgq.enqueue(plain, {}, { db: rowsOnly as never })).rejects.toMatchObject({
        code: 'PGQ_BAD_DB',
        message: expect.stringMatching(/^options\.db\.query\(\) did not answer as pg does .* roll it back$/),
      });
      await expect(pgq.enqueue(plain, {}, { db: { query: () => undefined } as never })).rejects.toMatchObject({ code: 'PGQ_BAD_DB' });
      await client.query('ROLLBACK');
    } finally {
      client.release();
    }
    expect(await pgq.countJobs({ task: 'plain-db' })).toBe(0);
  });
});
