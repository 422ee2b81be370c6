/**
 * Hostile input, property-based: whatever is thrown at the public API, pgq
 * either stores it faithfully or refuses it with a PgqError naming the field —
 * and a refusal writes nothing. SQL never interprets a value.
 */
import { describe, expect, it, vi } from 'vitest';
import fc from 'fast-check';
import { z } from 'zod';
import { Pgq, PgqError, ValidationError, defineTask, group, step, type JobRecord, type Task } from '../src/index.js';
import pg from 'pg';
import { statementName } from '../src/db/identifiers.js';
import { fromPg } from '../src/db/queryable.js';
import { createStatements } from '../src/db/statements.js';
import { useTestSchema } from './support/harness.js';

const ctx = useTestSchema('hostile');
const loose = defineTask({ name: 'loose', schema: z.unknown(), handler: () => undefined });

async function jobCount(): Promise<number> {
  const { rows } = await ctx.admin.query<{ n: string }>(`SELECT count(*) AS n FROM "${ctx.schema}".jobs`);
  return Number(rows[0]!.n);
}

function hasNul(value: unknown): boolean {
  if (typeof value === 'string') return value.includes('\u0000');
  if (Array.isArray(value)) return value.some(hasNul);
  if (value && typeof value === 'object') return Object.entries(value).some(([k, v]) => k.includes('\u0000') || hasNul(v));
  return false;
}

/** Runs one job of `task` (payload `{}`) on a worker of its own, concurrency 1, and returns it once it has finished. */
async function runToEnd(task: Task): Promise<JobRecord> {
  const pgq = await ctx.migrated({ tasks: [task] });
  const worker = pgq.worker({ concurrency: 1, pollIntervalMs: 50 });
  await worker.start();
  try {
    const job = await pgq.enqueue(task, {});
    return await pgq.waitForJob(job.id, { timeoutMs: 10_000 });
  } finally {
    await worker.stop();
  }
}

describe('hostile input', () => {
  it('stores any JSON payload faithfully or refuses it naming the field, writing nothing', async () => {
    const pgq = await ctx.migrated({ tasks: [loose], maxPayloadBytes: 4_096 });
    await fc.assert(
      fc.asyncProperty(fc.jsonValue({ maxDepth: 4 }), fc.boolean(), async (value, addNul) => {
        const payload = addNul ? { evil: `a\u0000b`, value } : value;
        const before = await jobCount();
        try {
          const job = await pgq.enqueue(loose, payload);
          expect(hasNul(payload)).toBe(false);
          const stored = await pgq.getJob(job.id);
          // jsonb normalises -0 to 0 and drops nothing else that JSON can carry.
          expect(stored!.payload).toEqual(JSON.parse(JSON.stringify(payload ?? null)));
        } catch (err) {
          expect(err).toBeInstanceOf(ValidationError);
          expect((err as ValidationError).field).toMatch(/^payload/);
          expect(await jobCount()).toBe(before);
        }
      }),
      { numRuns: 150 },
    );
  });

  it('enqueueMany stores every payload of a batch as given, in order, whatever quotes, backslashes and escape-like text it holds, with shared options or per-job ones', async () => {
    const pgq = await ctx.migrated({ tasks: [loose] });
    // Strings and keys made of what JSON escapes, what spells an escape once
    // unescaped (a backslash, then u0000: text, no NUL), and what delimits
    // JSON or an array literal.
    const unit = fc.constantFrom('"', '\\', '\\u', '0000', 'd800', '/', '{', '}', '[', ']', ',', 'NULL', ' ', 'é', '\u{1F600}', '\n', '\u2028', 'a');
    const payload = fc.jsonValue({ maxDepth: 3, stringUnit: unit });
    const edge: unknown[] = ['"', '\\', '\\"', '\\u0000', '\\ud800', '\\\\u0041', 'NULL', '', null, 0.1, 1e308, [[], [['"', ['\\']]]], { '"k"': '\\', 'a,b': '{x}', '': [null] }];
    await fc.assert(
      fc.asyncProperty(fc.array(payload, { minLength: 2, maxLength: 6 }), fc.constantFrom('shared', 'per-job', 'workflow'), async (payloads, by) => {
        // With a concurrency key the jobs go in by the per-job insert (insertJobs), without one by the shared-options
        // insert; a workflow's steps by its own insert.
        const jobs =
          by === 'workflow'
            ? (await pgq.enqueueWorkflow(group(payloads.map((p) => step(loose, p))))).steps
            : await pgq.enqueueMany(loose, payloads, by === 'per-job' ? { concurrencyKey: 'k' } : {});
        const expected = payloads.map((p) => JSON.parse(JSON.stringify(p)) as unknown);
        if (by !== 'workflow') expect(jobs.map((j) => (j as { payload: unknown }).payload)).toEqual(expected);
        const { rows } = await ctx.admin.query<{ id: string; payload: unknown }>(
          `SELECT id, payload FROM "${ctx.schema}".jobs WHERE id = ANY($1::bigint[]) ORDER BY id`,
          [jobs.map((j) => j.id)],
        );
        expect(rows.map((r) => r.id)).toEqual(jobs.map((j) => j.id));
        expect(rows.map((r) => r.payload)).toEqual(expected);
      }),
      { numRuns: 80, examples: [[edge, 'shared'], [edge, 'per-job'], [edge, 'workflow']] },
    );
  });

  it('writes every outcome of a batch as given, whatever quotes, backslashes and escape-like text its results, errors, notes and metas hold, with metas and notes missing for some', async () => {
    const pgq = await ctx.migrated({ tasks: [loose] });
    const db = fromPg(ctx.admin);
    const statements = createStatements(ctx.schema);
    const unit = fc.constantFrom('"', '\\', '\\u', '0000', 'd800', '{', '}', '[', ']', ',', 'NULL', 'null', ' ', 'é', '\u{1F600}', '\n', 'a');
    const value = fc.jsonValue({ maxDepth: 3, stringUnit: unit });
    const meta = fc.option(fc.dictionary(fc.string({ unit, maxLength: 4 }), value, { maxKeys: 3 }), { nil: null });
    const outcome = fc.record({ kind: fc.constantFrom('complete', 'fail', 'snooze'), value, meta, note: fc.boolean() });
    await fc.assert(
      fc.asyncProperty(fc.array(outcome, { minLength: 1, maxLength: 8 }), async (outcomes) => {
        const jobs = await pgq.enqueueMany(loose, outcomes.map(() => ({})), { maxAttempts: 5 });
        const ids = jobs.map((j) => j.id);
        await ctx.admin.query(`UPDATE "${ctx.schema}".jobs SET state = 'running', attempts = 1, meta = '{"kept": "\\\\"}' WHERE id = ANY($1::bigint[])`, [ids]);
        const text = (v: unknown): string => JSON.stringify(v);
        const of = (kind: string) => outcomes.map((o, i) => ({ ...o, id: ids[i]! })).filter((o) => o.kind === kind);
        const complete = of('complete');
        const fail = of('fail');
        const snooze = of('snooze');
        // Each kind as one statement, with more than one outcome when the batch has them, as the completer sends them.
        const skipped = (await statements.completeJobs(db, { ids: complete.map((o) => o.id), attempts: complete.map(() => 1), results: complete.map((o) => text(o.value)), metas: complete.map((o) => (o.meta ? text(o.meta) : null)) })).skipped;
        expect(skipped).toEqual([]);
        const failed = await statements.failJobs(db, {
          ids: fail.map((o) => o.id), attempts: fail.map(() => 1), errors: fail.map((o) => text({ message: o.value })),
          delaysMs: fail.map(() => 60_000), permanent: fail.map(() => false), metas: fail.map((o) => (o.meta ? text(o.meta) : null)),
        });
        expect(failed).toHaveLength(fail.length);
        const snoozed = await statements.snoozeJobs(db, {
          ids: snooze.map((o) => o.id), attempts: snooze.map(() => 1), delaysMs: snooze.map(() => 60_000),
          notes: snooze.map((o) => (o.note ? text({ note: o.value }) : null)), metas: snooze.map((o) => (o.meta ? text(o.meta) : null)),
        });
        expect(snoozed).toHaveLength(snooze.length);
        const { rows } = await ctx.admin.query<{ id: string; state: string; result: unknown; errors: unknown[]; meta: unknown }>(
          `SELECT id, state, result, errors, meta FROM "${ctx.schema}".jobs WHERE id = ANY($1::bigint[]) ORDER BY id`,
          [ids],
        );
        const parsed = (v: unknown): unknown => JSON.parse(text(v));
        rows.forEach((row, i) => {
          const o = outcomes[i]!;
          expect(row.state).toBe({ complete: 'succeeded', fail: 'retryable', snooze: 'scheduled' }[o.kind]);
          expect(row.meta).toEqual({ kept: '\\', ...(parsed(o.meta ?? {}) as object) });
          if (o.kind === 'complete') expect(row.result).toEqual(parsed(o.value));
          if (o.kind === 'fail') expect(row.errors).toEqual([{ message: parsed(o.value) }]);
          if (o.kind === 'snooze') expect(row.errors).toEqual(o.note ? [{ note: parsed(o.value) }] : []);
        });
      }),
      { numRuns: 60 },
    );
  });

  it('refuses an enqueueMany whose payloads together are more than one statement carries, naming it, writing nothing (it was a bare RangeError from the driver)', async () => {
    const pgq = await ctx.migrated({ tasks: [loose] });
    const before = await jobCount();
    // 270 payloads of about 1 MB of JSON each (under maxPayloadBytes one by one), quotes all: as a jsonb[]
    // parameter, each escaped again, they went past the longest string Node.js makes (the driver's RangeError).
    const big = '"'.repeat(499_990);
    const payloads = Array.from({ length: 270 }, () => ({ big }));
    await expect(pgq.enqueueMany(loose, payloads)).rejects.toThrow(/^payloads: are 269997300 characters of JSON in all, over the 209715200 \(200 MiB\) one call sends in its statement: split them into several calls$/);
    expect(await jobCount()).toBe(before);
    // In calls of fewer jobs, they go in.
    expect((await pgq.enqueueMany(loose, payloads.slice(0, 5))).length).toBe(5);
  });

  it('refuses a workflow whose steps\' payloads together are more than one statement carries, naming it, writing nothing (it sent them: past 512 MiB a bare RangeError, past 1 GB of UTF-8 a closed connection)', async () => {
    const pgq = await ctx.migrated({ tasks: [loose] });
    const workflows = async (): Promise<number> => Number((await ctx.admin.query(`SELECT count(*) FROM "${ctx.schema}".workflows`)).rows[0].count);
    const before = await jobCount();
    const workflowsBefore = await workflows();
    // As the enqueueMany above: 270 steps of about 1 MB of JSON each, one statement.
    const big = '"'.repeat(499_990);
    const steps = Array.from({ length: 270 }, () => step(loose, { big }));
    await expect(pgq.enqueueWorkflow(group(steps))).rejects.toThrow(
      /^workflow: its steps' payloads are 269997300 characters of JSON in all, over the 209715200 \(200 MiB\) one workflow sends in its statement: split it into several workflows$/,
    );
    expect(await jobCount()).toBe(before);
    expect(await workflows()).toBe(workflowsBefore);
    expect((await pgq.enqueueWorkflow(group(steps.slice(0, 5)))).steps.length).toBe(5);
  });

  it('refuses nesting deeper than 1,000 levels and accepts 1,000', async () => {
    const pgq = await ctx.migrated({ tasks: [loose], maxPayloadBytes: 1_000_000 });
    const nest = (depth: number): unknown => {
      let v: unknown = 'leaf';
      for (let i = 0; i < depth; i += 1) v = i % 2 ? [v] : { v };
      return v;
    };
    const before = await jobCount();
    await expect(pgq.enqueue(loose, nest(5_000))).rejects.toThrow(/nests deeper than 1000 levels/);
    expect(await jobCount()).toBe(before);
    const ok = await pgq.enqueue(loose, nest(1_000));
    expect((await pgq.getJob(ok.id))!.payload).toEqual(nest(1_000));
  });

  it('refuses bad options with a ValidationError naming the option, writing nothing', async () => {
    const pgq = await ctx.migrated({ tasks: [loose] });
    const badNumber = fc.oneof(
      fc.constant(Number.NaN),
      fc.constant(Number.POSITIVE_INFINITY),
      fc.double({ min: -1e6, max: -0.001, noNaN: true }),
      fc.double({ min: 0.001, max: 1e6, noNaN: true }).filter((d) => !Number.isInteger(d)),
    );
    const badOption = fc.oneof(
      badNumber.map((v) => ['priority', v.toString() === 'NaN' || !Number.isFinite(v) ? v : v + 0.5] as const),
      badNumber.map((v) => ['maxAttempts', v] as const),
      badNumber.filter((v) => Number.isNaN(v) || !Number.isFinite(v) || v < 0).map((v) => ['delayMs', v] as const),
      badNumber.map((v) => ['timeoutMs', v] as const),
      fc.constantFrom(new Date('invalid'), 'tomorrow', 12, new Date(-8.64e15), new Date(Date.UTC(-4713, 10, 23))).map((v) => ['runAt', v] as const),
      fc.constantFrom(new Date(-8.64e15), new Date('invalid')).map((v) => ['expiresAt', v] as const),
      fc.constantFrom('', 'x'.repeat(201), 'tab\there', 'nul\u0000').map((v) => ['queue', v] as const),
    );
    await fc.assert(
      fc.asyncProperty(badOption, async ([key, value]) => {
        const before = await jobCount();
        const err = await pgq.enqueue(loose, {}, { [key]: value } as never).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(ValidationError);
        expect((err as ValidationError).field).toBe(`options.${key}`);
        expect(await jobCount()).toBe(before);
      }),
      { numRuns: 100 },
    );
  });

  it('refuses an option it does not know, naming it, rather than ignoring it (a misspelt delayMs ran the job at once)', async () => {
    const pgq = await ctx.migrated({ tasks: [loose] });
    const before = await jobCount();
    const err = await pgq.enqueue(loose, {}, { delay: 5_000 } as never).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ValidationError);
    expect((err as Error).message).toMatch(/^options: .*"delay"/);
    await expect(pgq.enqueueMany(loose, [{}], { runAtt: new Date() } as never)).rejects.toThrow(/"runAtt"/);
    // Inside backoff too (a misspelt base was stored as no backoff at all), and in a task's own backoff.
    await expect(pgq.enqueue(loose, {}, { backoff: { base: 60_000 } } as never)).rejects.toThrow(/^options\.backoff: .*"base"/);
    expect(() => defineTask({ name: 'loose-backoff', schema: z.object({}), backoff: { base: 60_000 } as never, handler: () => null })).toThrow(/backoff.*"base"/);
    // A task's own options, and a schedule's (a misspelt timeZone made a 02:00 Rome schedule fire at 02:00 UTC).
    expect(() => defineTask({ name: 'loose-timeout', schema: z.object({}), timeout: 5_000, handler: () => null } as never)).toThrow(
      /^task loose-timeout: unknown option "timeout"/,
    );
    await expect(pgq.schedule({ name: 'rome', task: loose, cron: '0 2 * * *', timeZone: 'Europe/Rome' } as never)).rejects.toThrow(/"timeZone"/);
    expect(await pgq.listSchedules()).toEqual([]);
    // An empty batch is checked all the same: the mistake would show only with the first batch that is not.
    await expect(pgq.enqueueMany(loose, [], { delay: 5 } as never)).rejects.toThrow(/"delay"/);
    await expect(pgq.enqueueMany({} as never, [])).rejects.toThrow(ValidationError);
    await expect(pgq.enqueueMany(loose, [], { runAt: new Date(), delayMs: 5 })).rejects.toThrow(ValidationError);
    expect(await pgq.enqueueMany(loose, [])).toEqual([]);
    // A sparse array: a TypeError from inside the validation before.
    await expect(pgq.enqueueMany(loose, [, {}] as never)).rejects.toMatchObject({ name: 'ValidationError', message: expect.stringMatching(/^payload\[0\]: is a hole in a sparse array/) });
    await expect(pgq.enqueueMany(loose, new Array(3) as never)).rejects.toThrow(/^payload\[0\]: is a hole/);
    expect(await jobCount()).toBe(before);
    // new Pgq() and pgq.worker(): a misspelt option is an error too (it was a default used in silence), and so is what is not a pool, logger or clock.
    expect(() => new Pgq({ connectionString: ctx.url, poolsize: 20 } as never)).toThrow(/^options: .*"poolsize"/);
    expect(() => pgq.worker({ concurency: 50 } as never)).toThrow(/^worker: .*"concurency"/);
    expect(() => pgq.worker(null as never)).toThrow(/^worker: options must be an object/);
    expect(() => new Pgq({ pool: {} as never })).toThrow(/^options\.pool: must be a pg\.Pool/);
    expect(() => new Pgq({ connectionString: ctx.url, logger: 'x' as never })).toThrow(/^options\.logger: must be a logger/);
    expect(() => new Pgq({ connectionString: ctx.url, clock: 5 as never })).toThrow(/^options\.clock: must be a clock/);
    await expect(pgq.waitForJob('1', null as never)).rejects.toThrow(/^options: must be an object/);
  });

  it("refuses an option it does not know in the options of waits, counts, stop(), setupRoles, drain() and performJob() (a misspelt timeout waited without limit)", async () => {
    const pgq = await ctx.migrated({ tasks: [loose] });
    const job = await pgq.enqueue(loose, {});
    await expect(pgq.waitForJob(job.id, { timeout: 50 } as never)).rejects.toThrow('options.timeout: is not an option here (options: timeoutMs, signal)');
    await expect(pgq.waitForWorkflow('1', { timeout: 50 } as never)).rejects.toThrow(/^options\.timeout: is not an option here/);
    await expect(pgq.countJobs({}, { limit: 5 } as never)).rejects.toThrow('options.limit: is not an option here (options: max, action)');
    await expect(pgq.setupRoles({ enqueuer: 'pgq_hostile_e', workers: 'pgq_hostile_w' } as never)).rejects.toThrow(/^roles\.workers: is not an option here/);
    const { drain, performJob } = await import('../src/testing/index.js');
    await expect(drain(pgq, { queue: 'elsewhere' } as never)).rejects.toThrow(/^options\.queue: is not an option here \(options: queues, /);
    await expect(performJob(loose, {}, { attempts: 2 } as never)).rejects.toThrow(/^options\.attempts: is not an option here/);
    // Given as undefined, an unknown key is as good as missing (`{ ...spread }` of optional fields).
    expect(await pgq.countJobs({}, { other: undefined } as never)).toBeGreaterThan(0);
    // The job was never run nor touched, and no role was made.
    expect((await pgq.getJob(job.id))!.state).toBe('available');
    expect((await ctx.admin.query(`SELECT 1 FROM pg_roles WHERE rolname LIKE 'pgq_hostile_%'`)).rowCount).toBe(0);

    const worker = pgq.worker({ queues: ['nothing-here'], leader: false });
    await worker.start();
    await expect(worker.stop({ grace: 0 } as never)).rejects.toThrow(/^options\.grace: is not an option here/);
    await expect(worker.stop({ graceMs: Number.NaN })).rejects.toThrow(/^options\.graceMs: must be a number of milliseconds/);
    await expect(worker.stop({ graceMs: '5000' as never })).rejects.toThrow(/^options\.graceMs: must be a number/);
    // More than a timer holds would be 1 ms: every running job signalled at once.
    await expect(worker.stop({ graceMs: 3_000_000_000 })).rejects.toThrow(/^options\.graceMs: must be a number of milliseconds from 0 to 2147483647, or Infinity/);
    // Refused, the worker is still running; a good stop() stops it.
    expect(worker.state).toBe('running');
    await worker.stop({ graceMs: 1_000 });
    expect(worker.state).toBe('stopped');
  });

  it('keeps task and queue names with quotes, semicolons and unicode as plain data', async () => {
    const pgq = await ctx.migrated({ tasks: [loose] });
    const name = fc.string({ minLength: 1, maxLength: 40, unit: 'grapheme' }).filter((s) => !/[\u0000-\u001f\u007f]/.test(s));
    await fc.assert(
      fc.asyncProperty(name, name, async (taskName, queue) => {
        const task = defineTask({ name: `${taskName}';--`, schema: z.object({}), handler: () => undefined });
        const job = await pgq.enqueue(task, {}, { queue: `"${queue}"; DROP TABLE jobs;` });
        const stored = await pgq.getJob(job.id);
        expect(stored).toMatchObject({ task: `${taskName}';--`, queue: `"${queue}"; DROP TABLE jobs;` });
      }),
      { numRuns: 60 },
    );
  });

  it('without a database says what is missing, and where the embedded PostgreSQL comes from', () => {
    // connectionString: process.env.DATABASE_URL with the variable unset
    expect(() => new Pgq({ connectionString: undefined })).toThrow(/options: give connectionString or pool \(connectionString is undefined: is DATABASE_URL set\?\); .*npx pgq db start/);
    expect(() => new Pgq({ connectionString: '' })).toThrow(/options.connectionString: Too small/);
    expect(() => new Pgq({} as never)).toThrow(/options: give connectionString or pool; /);
  });

  it('refuses schema names that are not plain identifiers before touching the database', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string().filter((s) => !/^[A-Za-z_][A-Za-z0-9_]{0,45}$/.test(s)),
          fc.constantFrom('pgq"; DROP SCHEMA public; --', 'a-b', '1abc', 'x'.repeat(64), 'sch ema', 'ü'),
        ),
        (schema) => {
          expect(() => new Pgq({ connectionString: ctx.url, schema })).toThrow(/schema: .* is not a plain identifier/);
        },
      ),
      { numRuns: 200 },
    );
    // Longer than 46 is refused: pgq's NOTIFY channel names hold the schema's (PostgreSQL refuses them from 50).
    expect(() => new Pgq({ connectionString: ctx.url, schema: 's'.repeat(47) })).toThrow(/at most 46 characters\) \(47: pgq's channel names hold it/);
  });

  it('works with a schema name of the longest allowed, 46 characters: workers, enqueues, queue control', async () => {
    const schema = `h${ctx.schema}`.padEnd(46, 'x');
    const task = defineTask({ name: 'long-schema', schema: z.object({ n: z.number() }), handler: ({ n }) => n * 2 });
    const pgq = new Pgq({ connectionString: ctx.url, schema, tasks: [task] });
    // pg writes a warning to the console for each statement name over 63 characters it prepares.
    const printed: string[] = [];
    const spy = vi.spyOn(console, 'error').mockImplementation((...args: unknown[]) => void printed.push(args.map(String).join(' ')));
    try {
      await pgq.migrate();
      await pgq.pauseQueue('default');
      await pgq.resumeQueue('default');
      await pgq.schedule({ name: 'long', every: '1h', task, payload: { n: 0 } });
      const worker = pgq.worker({ pollIntervalMs: 50 });
      await worker.start();
      try {
        // Overlapping enqueues take the quiet statements too (insert_one_quiet, insert_bulk_quiet), each under a name of its own.
        const jobs = (await Promise.all([1, 2, 3, 4, 5, 6, 7, 8].map((n) => pgq.enqueue(task, { n })))).slice(0, 4);
        await Promise.all([pgq.enqueueMany(task, [{ n: 5 }, { n: 6 }]), pgq.enqueueMany(task, [{ n: 7 }, { n: 8 }]), pgq.enqueueMany(task, [{ n: 9 }, { n: 10 }])]);
        for (const job of jobs) expect((await pgq.waitForJob(job.id, { timeoutMs: 20_000 })).result).toBe(Number(job.payload.n) * 2);
      } finally {
        await worker.stop();
      }
      expect(printed).toEqual([]);
    } finally {
      spy.mockRestore();
      await pgq.close();
      await ctx.admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    }
  });

  it('prepares a statement whose text changed (another pgq version on the same connection) under a name of its own', async () => {
    // Two pgq versions given one application pool prepare their statements on
    // the same connections; pg refuses a name prepared before with other text.
    const client = new pg.Client({ connectionString: ctx.url });
    await client.connect();
    try {
      const older = { name: statementName(ctx.schema, 'claim', 'SELECT 1 AS n'), text: 'SELECT 1 AS n' };
      const newer = { name: statementName(ctx.schema, 'claim', 'SELECT 2 AS n'), text: 'SELECT 2 AS n' };
      expect(newer.name).not.toBe(older.name);
      for (const statement of [older, newer, older, newer]) {
        expect((await client.query(statement)).rows).toEqual([{ n: statement.text === older.text ? 1 : 2 }]);
      }
      // Within the 63 bytes PostgreSQL keeps, for the longest schema name too.
      expect(statementName('s'.repeat(46), 'release_unstarted', 'SELECT 1').length).toBeLessThanOrEqual(63);
    } finally {
      await client.end();
    }
  });

  it('refuses malformed job ids for every id-taking method', async () => {
    const pgq = await ctx.migrated({ tasks: [loose] });
    const badId = fc.oneof(fc.string().filter((s) => !/^[0-9]{1,19}$/.test(s)), fc.constantFrom('1 OR 1=1', '-1', '1e3', '99999999999999999999'));
    await fc.assert(
      fc.asyncProperty(badId, async (id) => {
        for (const call of [pgq.getJob(id), pgq.cancelJob(id), pgq.retryJob(id), pgq.waitForJob(id, { timeoutMs: 1 })]) {
          const err = await call.then(() => null, (e: unknown) => e);
          expect(err).toBeInstanceOf(PgqError);
          expect((err as ValidationError).field).toBe('id');
        }
      }),
      { numRuns: 50 },
    );
  });

  it('records a failure for a thrown value whose getters throw, and the slot is free for the next job', async () => {
    const hostile = defineTask({
      name: 'hostile-throw',
      schema: z.object({ what: z.enum(['stack', 'message', 'code']) }),
      maxAttempts: 1,
      handler: ({ what }) => {
        const e = new Error('boom');
        Object.defineProperty(e, what, { get() { throw e; } });
        throw e;
      },
    });
    const fine = defineTask({ name: 'hostile-fine', schema: z.object({}), handler: () => 'ok' });
    const pgq = await ctx.migrated({ tasks: [hostile, fine] });
    const worker = pgq.worker({ concurrency: 1, pollIntervalMs: 50 });
    await worker.start();
    try {
      for (const what of ['stack', 'message', 'code'] as const) {
        const bad = await pgq.enqueue(hostile, { what });
        const done = await pgq.waitForJob(bad.id, { timeoutMs: 10_000 });
        expect(done.state, what).toBe('failed');
        expect(done.errors).toHaveLength(1);
        expect(done.errors[0]!.message, what).toMatch(/could not read/);
        // Concurrency 1: the next job runs only if the slot was given back.
        const next = await pgq.enqueue(fine, {});
        expect((await pgq.waitForJob(next.id, { timeoutMs: 10_000 })).state).toBe('succeeded');
      }
    } finally {
      await worker.stop();
    }
  });

  it('records a thrown value JSON cannot show (a cycle, a BigInt, a throwing getter) and an Error without name or message readably, never as [object Object] or nothing', async () => {
    const cases = {
      // An HTTP client's response: it refers back to itself.
      cycle: () => {
        const res: Record<string, unknown> = { status: 500 };
        res.request = { res };
        return res;
      },
      bigint: () => ({ status: 500, id: 10n }),
      getter: () => ({ get message(): string { throw new Error('no message'); } }),
      empty: () => Object.assign(new Error(''), { name: '' }),
    };
    const thrower = defineTask({
      name: 'hostile-opaque',
      schema: z.object({ what: z.enum(['cycle', 'bigint', 'getter', 'empty']) }),
      maxAttempts: 1,
      handler: ({ what }) => {
        throw cases[what]();
      },
    });
    const pgq = await ctx.migrated({ tasks: [thrower] });
    const worker = pgq.worker({ concurrency: 4, pollIntervalMs: 50 });
    await worker.start();
    try {
      const expected = {
        cycle: /^<ref \*1> \{ status: 500, request: \{ res: \[Circular \*1\] \} \}$/,
        bigint: /^\{ status: 500, id: 10n \}$/,
        getter: /^\{ message: \[Getter\] \}$/,
        empty: /^Error with no message and no name$/,
      };
      for (const what of ['cycle', 'bigint', 'getter', 'empty'] as const) {
        const done = await pgq.waitForJob((await pgq.enqueue(thrower, { what })).id, { timeoutMs: 10_000 });
        expect(done.state, what).toBe('failed');
        expect(done.errors[0]!.message, what).toMatch(expected[what]);
      }
    } finally {
      await worker.stop();
    }
  });

  it('a snooze longer than the database can store fails the attempt naming snooze.delayMs, not with a database error', async () => {
    const sleepy = defineTask({ name: 'hostile-snooze', schema: z.object({}), maxAttempts: 1, handler: (_p, c) => c.snooze(1e17) });
    const done = await runToEnd(sleepy);
    expect(done.state).toBe('failed');
    expect(done.errors.at(-1)!.message).toMatch(/^snooze\.delayMs: must be a finite number from 0 to 1e13, got 100000000000000000$/);
  });

  it('a result that cannot be stored fails the job for good, not again and again (the handler did its work each time)', async () => {
    let runs = 0;
    const big = defineTask({ name: 'hostile-result', schema: z.object({}), maxAttempts: 3, backoff: { baseMs: 10 }, handler: () => ((runs += 1), { n: 1n }) });
    const done = await runToEnd(big);
    expect(done).toMatchObject({ state: 'failed', attempts: 1 });
    expect(done.errors[0]!.message).toMatch(/^the handler succeeded, but its result cannot be stored: result\.n: .*BigInt/);
    expect(runs).toBe(1);
  });

  it('a result whose toJSON() or getter answers differently the second time is checked as stored: failed for good naming the field, not retried on a database error', async () => {
    let runs = 0;
    // Checked on the first read, written on the second: jsonb refused the write, and the attempt was recorded as a
    // retryable "could not record" failure, so the handler's work ran again.
    const flipping = (bad: string): { toJSON: () => string } => {
      let reads = 0;
      return { toJSON: () => ((reads += 1) === 1 ? 'fine' : bad) };
    };
    const nul = defineTask({ name: 'hostile-flip-nul', schema: z.object({}), maxAttempts: 2, backoff: { baseMs: 10 }, handler: () => ((runs += 1), { note: flipping('a\u0000b') }) });
    const done = await runToEnd(nul);
    expect(done).toMatchObject({ state: 'failed', attempts: 1 });
    expect(done.errors[0]!.message).toMatch(/^the handler succeeded, but its result cannot be stored: result\.note: contains \\u0000/);
    expect(runs).toBe(1);
    const surrogate = defineTask({
      name: 'hostile-flip-surrogate',
      schema: z.object({}),
      maxAttempts: 2,
      handler: () => {
        let reads = 0;
        return { get x() { return (reads += 1) === 1 ? 'ok' : 'half \ud800'; } };
      },
    });
    const second = await runToEnd(surrogate);
    expect(second).toMatchObject({ state: 'failed', attempts: 1 });
    expect(second.errors[0]!.message).toMatch(/result\.x: contains a lone UTF-16 surrogate/);
    // A text that only looks like such an escape (a backslash before u0000) is stored as it is.
    const pgq = await ctx.migrated({ tasks: [loose] });
    const job = await pgq.enqueue(loose, { path: 'C:\\u0000\\ud800' });
    expect((await pgq.getJob(job.id))!.payload).toEqual({ path: 'C:\\u0000\\ud800' });
  });
});

describe('what JSON or PostgreSQL would change on the way in', () => {
  it("checks what a value's toJSON() returns: \\u0000 there is a ValidationError naming the field, and the caller's transaction goes on", async () => {
    const pgq = await ctx.migrated({ tasks: [loose] });
    const before = await jobCount();
    const nul = { toJSON: () => 'a\u0000b' };
    await expect(pgq.enqueue(loose, { note: nul })).rejects.toMatchObject({ name: 'ValidationError', field: 'payload.note' });
    await expect(pgq.enqueueMany(loose, [{}, {}, {}, { x: nul }])).rejects.toMatchObject({ name: 'ValidationError', field: 'payload[3].x' });
    await expect(pgq.enqueue(loose, {}, { meta: { m: { toJSON: () => '\ud800' } } as never })).rejects.toMatchObject({ name: 'ValidationError', field: 'options.meta.m' });
    await expect(pgq.enqueue(loose, { t: { toJSON: () => { throw new Error('no'); } } })).rejects.toThrow(/^payload\.t: .*toJSON\(\) threw: no/);
    const client = await ctx.admin.connect();
    try {
      await client.query('BEGIN');
      await expect(pgq.enqueue(loose, { note: nul }, { db: client })).rejects.toThrow(ValidationError);
      // Before, a raw 22P05 from PostgreSQL: the caller's transaction was aborted (25P02 on its next statement).
      expect((await client.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
      await client.query('ROLLBACK');
    } finally {
      client.release();
    }
    // A toJSON that returns what jsonb takes is stored as it returns it.
    const job = await pgq.enqueue(loose, { at: new Date('2026-01-02T03:04:05Z') });
    expect(job.payload).toEqual({ at: '2026-01-02T03:04:05.000Z' });
    expect(await jobCount()).toBe(before + 1);
  });

  it('refuses a payload its schema accepts but whose stored JSON it refuses (the job failed for good on its first attempt), for enqueue, workflows and schedules', async () => {
    const remind = defineTask({ name: 'remind', schema: z.object({ at: z.date() }), handler: (p) => p.at.toISOString() });
    const optional = defineTask({ name: 'optional', schema: z.object({ a: z.string() }).optional(), handler: () => 'ran' });
    const list = defineTask({ name: 'list', schema: z.array(z.string().optional()), handler: () => 'ran' });
    const coerced = defineTask({ name: 'coerced', schema: z.object({ at: z.coerce.date() }), handler: (p) => p.at.getUTCFullYear() });
    const pgq = await ctx.migrated({ tasks: [remind, optional, list, coerced] });
    const before = await jobCount();
    const err = await pgq.enqueue(remind, { at: new Date() }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ValidationError);
    expect((err as ValidationError).field).toBe('payload.at');
    expect((err as Error).message).toMatch(/in the form stored as JSON/);
    await expect(pgq.enqueue(optional, undefined)).rejects.toThrow(ValidationError);
    await expect(pgq.enqueueMany(list, [['a'], ['a', undefined]])).rejects.toMatchObject({ field: 'payload[1][1]' });
    const { step, chain } = await import('../src/index.js');
    await expect(pgq.enqueueWorkflow(chain(step(coerced, { at: new Date() }), step(remind, { at: new Date() })))).rejects.toThrow(/\.payload\.at: .*stored as JSON/);
    await expect(pgq.schedule({ name: 'remind', every: '1h', task: remind, payload: { at: new Date() } })).rejects.toThrow(/payload\.at: .*stored as JSON/);
    expect(await pgq.listSchedules()).toEqual([]);
    expect(await jobCount()).toBe(before);
    // What the schema takes back from JSON is accepted, and runs.
    const worker = pgq.worker({ concurrency: 1, pollIntervalMs: 50 });
    await worker.start();
    try {
      const job = await pgq.enqueue(coerced, { at: new Date('2026-06-01T00:00:00Z') });
      expect(job.payload).toEqual({ at: '2026-06-01T00:00:00.000Z' });
      expect(await pgq.waitForJob(job, { timeoutMs: 10_000 })).toMatchObject({ state: 'succeeded', result: 2026 }); // by its record
    } finally {
      await worker.stop();
    }
  });

  it('refuses a lone UTF-16 surrogate in a unique key, a task or queue name and a concurrency key (pg sent U+FFFD: two keys became one)', async () => {
    const pgq = await ctx.migrated({ tasks: [loose] });
    const before = await jobCount();
    await expect(pgq.enqueue(loose, {}, { uniqueKey: 'x\ud83d' })).rejects.toMatchObject({ field: 'options.uniqueKey' });
    await expect(pgq.enqueue(loose, {}, { queue: 'q\udc00' })).rejects.toMatchObject({ field: 'options.queue' });
    await expect(pgq.enqueue(loose, {}, { concurrencyKey: 'k\ud800' })).rejects.toMatchObject({ field: 'options.concurrencyKey' });
    expect(() => defineTask({ name: 'mail\ud800', schema: z.object({}), handler: () => null })).toThrow(/surrogate/);
    expect(await jobCount()).toBe(before);
    // A pair is a character like any other.
    const job = await pgq.enqueue(loose, {}, { uniqueKey: 'x\ud83d\ude00' });
    expect(job.uniqueKey).toBe('x\ud83d\ude00');
  });

  it('refuses a unique key whose index entry, with the task name, would be too large, as a ValidationError', async () => {
    const long = defineTask({ name: '\u{1F600}'.repeat(200), schema: z.unknown(), handler: () => null });
    const pgq = await ctx.migrated({ tasks: [long, loose] });
    const before = await jobCount();
    // 2,000 bytes of key (its own limit) and 800 of task name: a raw 54000 from the index before.
    await expect(pgq.enqueue(long, {}, { uniqueKey: '\u00e9'.repeat(1_000) })).rejects.toMatchObject({ name: 'ValidationError', field: 'options.uniqueKey' });
    expect(await jobCount()).toBe(before);
    expect((await pgq.enqueue(long, {}, { uniqueKey: '\u00e9'.repeat(900) })).uniqueKey).toHaveLength(900);
    expect((await pgq.enqueue(loose, {}, { uniqueKey: '\u00e9'.repeat(1_000) })).uniqueKey).toHaveLength(1_000);
  });

  it("counts delayMs and expiresInMs from the enqueue's statement, not from the start of the caller's transaction", async () => {
    const pgq = await ctx.migrated({ tasks: [loose] });
    const client = await ctx.admin.connect();
    try {
      await client.query('BEGIN');
      await client.query('SELECT pg_sleep(1.5)');
      const delayed = await pgq.enqueue(loose, {}, { delayMs: 1_000, db: client });
      const expiring = await pgq.enqueue(loose, {}, { expiresInMs: 1_000, db: client });
      const { rows } = await client.query<{ delayed: number; expiring: number }>(
        `SELECT extract(epoch FROM (SELECT run_at FROM "${ctx.schema}".jobs WHERE id = $1) - now()) AS delayed,
                extract(epoch FROM (SELECT expires_at FROM "${ctx.schema}".jobs WHERE id = $2) - now()) AS expiring`,
        [delayed.id, expiring.id],
      );
      await client.query('COMMIT');
      // From the transaction's start (now()): 1.0 s before, at least 2.5 s now.
      expect(Number(rows[0]!.delayed)).toBeGreaterThanOrEqual(2.5);
      expect(Number(rows[0]!.expiring)).toBeGreaterThanOrEqual(2.5);
      expect(delayed.state).toBe('scheduled');
      expect(delayed.runAt.getTime()).toBeGreaterThan(Date.now());
    } finally {
      client.release();
    }
  });

  it('two enqueues of a key whose holder expired, crossing: the one whose expiry found the holder ended already returns the new live job, not the dead one', async () => {
    const pgq = await ctx.migrated({ tasks: [loose] });
    const holder = await pgq.enqueue(loose, { n: 0 }, { uniqueKey: 'k', expiresInMs: 60_000 });
    await ctx.admin.query(`UPDATE "${ctx.schema}".jobs SET expires_at = now() - interval '1 second' WHERE id = $1`, [holder.id]);
    // Each enqueue's expiry statement waits until both have read the holder (the interleaving two processes can hit).
    let arrived = 0;
    let release!: () => void;
    const bothRead = new Promise<void>((resolve) => (release = resolve));
    const clients = [await ctx.admin.connect(), await ctx.admin.connect()];
    const gated = (client: (typeof clients)[number], delayMs: number) => ({
      async query(config: { text: string; values?: unknown[]; name?: string }) {
        if (config.text.includes('expired AS')) {
          if (++arrived === 2) release();
          await bothRead;
          await new Promise((resolve) => setTimeout(resolve, delayMs));
        }
        return client.query(config);
      },
    });
    try {
      const [a, b] = await Promise.all([
        pgq.enqueue(loose, { n: 1 }, { uniqueKey: 'k', db: gated(clients[0]!, 0) as never }),
        pgq.enqueue(loose, { n: 2 }, { uniqueKey: 'k', db: gated(clients[1]!, 300) as never }),
      ]);
      expect(a.id).not.toBe(holder.id);
      expect(b.id).toBe(a.id);
      expect((await pgq.getJob(holder.id))!.state).toBe('cancelled');
      expect((await pgq.getJob(b.id))!.state).toBe('available');
    } finally {
      for (const client of clients) client.release();
    }
  });
});

