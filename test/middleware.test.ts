/**
 * Job metadata (`jobs.meta`) and the middleware API: order, amending meta,
 * errors refusing an enqueue (nothing written) and failing an attempt.
 */
import { describe, expect, it } from 'vitest';
import pg from 'pg';
import { z } from 'zod';
import { defineTask, chain, step, type JobContext, type Middleware, ValidationError } from '../src/index.js';
import { deferred, until, useTestSchema } from './support/harness.js';
import { performJob } from '../src/testing/index.js';

const ctx = useTestSchema('middleware');

const echo = defineTask({
  name: 'echo',
  schema: z.object({ n: z.number() }),
  queue: 'mw',
  maxAttempts: 1,
  handler: (payload, c) => ({ n: payload.n, meta: c.job.meta }),
});

async function count(task = 'echo'): Promise<number> {
  const { rows } = await ctx.admin.query<{ n: number }>(`SELECT count(*)::int AS n FROM "${ctx.schema}".jobs WHERE task = $1`, [task]);
  return rows[0]!.n;
}

describe('job meta', () => {
  it('stores meta from the enqueue option, readable in getJob and ctx.job.meta', async () => {
    const pgq = await ctx.migrated({ tasks: [echo] });
    const job = await pgq.enqueue(echo, { n: 1 }, { meta: { requestId: 'r-1', tenant: 42 } });
    expect(job.meta).toEqual({ requestId: 'r-1', tenant: 42 });
    expect((await pgq.getJob(job.id))!.meta).toEqual({ requestId: 'r-1', tenant: 42 });
    const plain = await pgq.enqueue(echo, { n: 2 });
    expect(plain.meta).toEqual({});
    const worker = pgq.worker({ queues: ['mw'], pollIntervalMs: 50 });
    await worker.start();
    const done = await pgq.waitForJob(job.id, { timeoutMs: 10_000 });
    expect(done.result).toEqual({ n: 1, meta: { requestId: 'r-1', tenant: 42 } });
    await worker.stop();
  });

  it('rejects meta that is not a JSON object, or too large, and writes nothing', async () => {
    const pgq = await ctx.migrated({ tasks: [echo] });
    const before = await count();
    // The last three: a toJSON() of their own makes them null, a list, a string.
    const bad: unknown[] = [[1, 2], 'text', null, new Date(), { big: 'x'.repeat(70_000) }, { n: Number.NaN }, { toJSON: () => null }, { toJSON: () => [1] }, { toJSON: () => 'str' }];
    for (const meta of bad) {
      await expect(pgq.enqueue(echo, { n: 1 }, { meta: meta as never })).rejects.toThrow(ValidationError);
    }
    await expect(pgq.enqueue(echo, { n: 1 }, { meta: [1] as never })).rejects.toThrow(/options\.meta.*plain JSON object/);
    await expect(pgq.enqueue(echo, { n: 1 }, { meta: { big: 'x'.repeat(70_000) } })).rejects.toThrow(/options\.meta.*over the limit/);
    await expect(pgq.enqueue(echo, { n: 1 }, { meta: { toJSON: () => null } as never })).rejects.toThrow(/options\.meta.*plain JSON object.*toJSON\(\) made null/);
    expect(await count()).toBe(before);
  });
});

describe('middleware', () => {
  it('runs enqueue and attempt hooks in order, first outermost, and lets enqueue middleware amend meta', async () => {
    const order: string[] = [];
    const mw = (name: string): Middleware => ({
      name,
      async enqueue(call, next) {
        order.push(`${name}:enqueue:before:${call.kind}:${call.jobs.length}`);
        for (const job of call.jobs) job.meta[name] = true;
        const ids = await next();
        order.push(`${name}:enqueue:after:${ids.length}`);
        return ids;
      },
      async attempt(c: JobContext, next) {
        order.push(`${name}:attempt:before:${c.attempt}`);
        const result = await next();
        order.push(`${name}:attempt:after`);
        return result;
      },
    });
    const pgq = await ctx.migrated({ tasks: [echo], middleware: [mw('a'), mw('b')] });
    const jobs = await pgq.enqueueMany(echo, [{ n: 1 }, { n: 2 }], { meta: { requestId: 'r' } });
    expect(order).toEqual(['a:enqueue:before:enqueueMany:2', 'b:enqueue:before:enqueueMany:2', 'b:enqueue:after:2', 'a:enqueue:after:2']);
    expect(jobs.map((j) => j.meta)).toEqual([
      { requestId: 'r', a: true, b: true },
      { requestId: 'r', a: true, b: true },
    ]);
    order.length = 0;
    const worker = pgq.worker({ queues: ['mw'], concurrency: 1, pollIntervalMs: 50 });
    await worker.start();
    const done = await pgq.waitForJob(jobs[0]!.id, { timeoutMs: 10_000 });
    await pgq.waitForJob(jobs[1]!.id, { timeoutMs: 10_000 });
    await worker.stop();
    expect(order.slice(0, 4)).toEqual(['a:attempt:before:1', 'b:attempt:before:1', 'b:attempt:after', 'a:attempt:after']);
    expect(done.result).toEqual({ n: 1, meta: { requestId: 'r', a: true, b: true } });
  });

  it('returns the meta an enqueue middleware set as it was stored, one object per job', async () => {
    const pgq = await ctx.migrated({ tasks: [echo] });
    const at = new Date('2026-01-02T03:04:05.678Z');
    pgq.use({
      enqueue(call, next) {
        for (const job of call.jobs) Object.assign(job.meta, { at, gone: undefined, nested: { k: 1 } });
        return next();
      },
    });
    const single = await pgq.enqueue(echo, { n: 1 });
    const many = await pgq.enqueueMany(echo, [{ n: 2 }, { n: 3 }]);
    for (const job of [single, ...many]) {
      // A Date is stored as its ISO text; an undefined key is no key (JSON).
      expect(job.meta).toEqual({ at: at.toISOString(), nested: { k: 1 } });
      expect(Object.keys(job.meta)).not.toContain('gone');
      expect(job.meta).toEqual((await pgq.getJob(job.id))!.meta);
    }
    (many[0]!.meta.nested as { k: number }).k = 2;
    expect(many[1]!.meta.nested).toEqual({ k: 1 });
  });

  it('an error in enqueue middleware refuses the enqueue and writes nothing; skipping next() is an error too', async () => {
    const pgq = await ctx.migrated({ tasks: [echo] });
    pgq.use({
      async enqueue(call, next) {
        if (call.jobs.some((j) => j.meta.deny === true)) throw new Error('denied by policy');
        if (call.jobs.some((j) => j.meta.skip === true)) return [];
        return next();
      },
    });
    const before = await count();
    await expect(pgq.enqueue(echo, { n: 1 }, { meta: { deny: true } })).rejects.toThrow('denied by policy');
    await expect(pgq.enqueueMany(echo, [{ n: 1 }, { n: 2 }], { meta: { skip: true } })).rejects.toThrow(/without calling next\(\)/);
    expect(await count()).toBe(before);
    const ok = await pgq.enqueue(echo, { n: 3 });
    expect(await count()).toBe(before + 1);
    expect(ok.meta).toEqual({});
  });

  it('a next() kept and called after the enqueue or the attempt has ended writes nothing and runs nothing', async () => {
    const ran: number[] = [];
    const late = defineTask({ name: 'late-next', schema: z.object({ n: z.number() }), queue: 'late-next', handler: ({ n }) => void ran.push(n) });
    const pgq = await ctx.migrated({ tasks: [late] });
    // Each kept next() called 50 ms later; what it settled with (its rejection handled at once).
    const afterwards: Promise<string>[] = [];
    const settledLater = (next: () => Promise<unknown>): Promise<string> =>
      new Promise((resolve) => setTimeout(resolve, 50))
        .then(() => next())
        .then(
          () => 'fulfilled',
          (err: unknown) => (err as Error).message,
        );
    pgq.use({
      enqueue(call, next) {
        if (call.jobs[0]!.payload && (call.jobs[0]!.payload as { n: number }).n === 1) {
          afterwards.push(settledLater(next));
          return Promise.resolve([]);
        }
        return next();
      },
      attempt(c, next) {
        afterwards.push(settledLater(next));
        return Promise.resolve('skipped');
      },
    });
    await expect(pgq.enqueue(late, { n: 1 })).rejects.toThrow(/without calling next\(\)/);
    const job = await pgq.enqueue(late, { n: 2 });
    const worker = pgq.worker({ queues: ['late-next'], pollIntervalMs: 50 });
    await worker.start();
    try {
      expect(await pgq.waitForJob(job.id, { timeoutMs: 10_000 })).toMatchObject({ state: 'succeeded', result: 'skipped' });
      expect(await Promise.all(afterwards)).toEqual([
        expect.stringMatching(/next\(\) after the enqueue had ended: nothing was written/),
        expect.stringMatching(/next\(\) after the attempt had ended: the handler did not run/),
      ]);
      expect(await count('late-next')).toBe(1);
      expect(ran).toEqual([]);
    } finally {
      await worker.stop();
    }
  });

  it("gives hooks the caller's transaction, so what a hook writes commits or rolls back with the jobs", async () => {
    const audit = defineTask({ name: 'audit', schema: z.object({ of: z.string() }), queue: 'mw', handler: () => null });
    const pgq = await ctx.migrated({ tasks: [echo, audit] });
    const seen: unknown[] = [];
    pgq.use({
      async enqueue(call, next) {
        seen.push(call.db);
        const ids = await next();
        if (call.jobs.every((j) => j.task !== 'audit')) {
          await pgq.enqueueMany(audit, ids.map((of) => ({ of })), { db: call.db });
        }
        return ids;
      },
    });
    const client = new pg.Client({ connectionString: ctx.url });
    await client.connect();
    try {
      const before = await count('audit');
      await client.query('BEGIN');
      await pgq.enqueue(echo, { n: 1 }, { db: client });
      expect(await count('audit')).toBe(before); // not committed yet
      await client.query('ROLLBACK');
      expect(await count('audit')).toBe(before);
      expect(seen[0]).toBe(client);

      await client.query('BEGIN');
      const flow = await pgq.enqueueWorkflow(step(echo, { n: 2 }), { db: client });
      await client.query('COMMIT');
      const { rows } = await ctx.admin.query<{ of: string }>(`SELECT payload->>'of' AS of FROM "${ctx.schema}".jobs WHERE task = 'audit'`);
      expect(rows.map((r) => r.of)).toEqual([flow.steps[0]!.id]);

      // On pgq's pool the hook sees no transaction, and its own write commits on the pool.
      const job = await pgq.enqueue(echo, { n: 3 });
      expect(seen.at(-2)).toBeUndefined();
      expect(await count('audit')).toBe(before + 2);
      expect(job.id).toBeTruthy();
    } finally {
      await client.end();
    }
  });

  it('a hook that does not await next() still gets the written jobs back; one that throws after next() reports its error once the jobs are written', async () => {
    const pgq = await ctx.migrated({ tasks: [echo] });
    pgq.use({
      async enqueue(call, next) {
        if (call.jobs.some((j) => j.meta.fireAndForget === true)) {
          void next();
          return [];
        }
        const ids = await next();
        if (call.jobs.some((j) => j.meta.auditFails === true)) throw new Error('audit log unreachable');
        return ids;
      },
    });
    // A second hook inside the first: the first's unawaited next() is then a promise of pgq's own.
    pgq.use({
      async enqueue(call, next) {
        for (const j of call.jobs) if (j.meta.breakWrite === true) j.meta.bad = 1n as never;
        return next();
      },
    });
    const before = await count();
    const job = await pgq.enqueue(echo, { n: 1 }, { meta: { fireAndForget: true } });
    expect(await pgq.getJob(job.id)).toMatchObject({ id: job.id, payload: { n: 1 } });
    // The write fails under a hook that did not await it: the caller hears of it, and the process does not
    // (it was an unhandled rejection, which ends a Node process).
    await expect(pgq.enqueue(echo, { n: 3 }, { meta: { fireAndForget: true, breakWrite: true } })).rejects.toThrow(/BigInt/);
    expect(await count()).toBe(before + 1);
    await expect(pgq.enqueue(echo, { n: 2 }, { meta: { auditFails: true } })).rejects.toThrow('audit log unreachable');
    // Written before the hook threw: as documented, the job stays.
    expect(await count()).toBe(before + 2);
  });

  it('a lone hook that does not await next() and returns later: a failed write reaches the caller, and the process does not hear of it', async () => {
    const pgq = await ctx.migrated({ tasks: [echo] });
    pgq.use({
      async enqueue(call, next) {
        for (const j of call.jobs) j.meta.bad = 1n as never;
        void next();
        await new Promise((r) => setTimeout(r, 100)); // the write fails meanwhile: its promise was nobody's
        return [];
      },
    });
    const before = await count();
    await expect(pgq.enqueue(echo, { n: 1 })).rejects.toThrow(/BigInt/);
    expect(await count()).toBe(before);
  });

  it('meta made invalid by middleware is refused with a clear error', async () => {
    const pgq = await ctx.migrated({
      tasks: [echo],
      middleware: [{ async enqueue(call, next) { for (const j of call.jobs) j.meta = [1] as never; return next(); } }],
    });
    const before = await count();
    await expect(pgq.enqueue(echo, { n: 1 })).rejects.toThrow(/meta: must be a plain JSON object/);
    expect(await count()).toBe(before);
  });

  it('an error in attempt middleware fails that attempt like a handler error', async () => {
    const pgq = await ctx.migrated({
      tasks: [echo],
      middleware: [{ name: 'guard', async attempt(c, next) { if (c.job.meta.block === true) throw new Error('blocked by guard'); return next(); } }],
    });
    const worker = pgq.worker({ queues: ['mw'], pollIntervalMs: 50 });
    await worker.start();
    const blocked = await pgq.enqueue(echo, { n: 1 }, { meta: { block: true } });
    const fine = await pgq.enqueue(echo, { n: 2 });
    const failed = await pgq.waitForJob(blocked.id, { timeoutMs: 10_000 });
    expect(failed.state).toBe('failed');
    expect(failed.errors[0]!.message).toBe('blocked by guard');
    expect((await pgq.waitForJob(fine.id, { timeoutMs: 10_000 })).state).toBe('succeeded');
    await worker.stop();
  });

  it('attempt middleware that misuses next(): not awaited, the attempt still lasts as long as the handler and takes its error; called twice, the handler runs once', async () => {
    const gate = deferred();
    let runs = 0;
    let settled = 0;
    const slow = defineTask({
      name: 'mw-slow',
      queue: 'mw-misuse',
      maxAttempts: 1,
      schema: z.object({ throws: z.boolean() }),
      handler: async ({ throws }) => {
        runs += 1;
        await gate.promise;
        settled += 1;
        if (throws) throw new Error('handler failed after the middleware returned');
        return 'handler';
      },
    });
    const pgq = await ctx.migrated({
      tasks: [slow],
      middleware: [{
        async attempt(c, next) {
          if (c.job.meta.twice === true) {
            await next();
            return next();
          }
          void next(); // not awaited
          if (c.job.meta.late === true) await new Promise((r) => setTimeout(r, 100)); // the handler fails meanwhile
          return 'middleware';
        },
      }, {
        // Inside the first: its next() is then a promise of pgq's own, which rejected unhandled.
        attempt: (_c, next) => next(),
      }],
    });
    const worker = pgq.worker({ queues: ['mw-misuse'], concurrency: 3, pollIntervalMs: 50 });
    await worker.start();
    try {
      const ok = await pgq.enqueue(slow, { throws: false });
      const bad = await pgq.enqueue(slow, { throws: true });
      await until(() => runs === 2, { what: 'both handlers to start' });
      await new Promise((r) => setTimeout(r, 300));
      // The middleware returned long ago; the attempts still run (their slots taken, no outcome written).
      expect((await pgq.getJob(ok.id))!.state).toBe('running');
      expect(worker.runningJobs).toBe(2);
      gate.resolve();
      expect(await pgq.waitForJob(ok.id, { timeoutMs: 10_000 })).toMatchObject({ state: 'succeeded', result: 'middleware' });
      const failed = await pgq.waitForJob(bad.id, { timeoutMs: 10_000 });
      expect(failed.state).toBe('failed');
      expect(failed.errors[0]!.message).toBe('handler failed after the middleware returned');
      // A handler that fails while the middleware that did not await it has not returned yet.
      const lateFail = await pgq.enqueue(slow, { throws: true }, { meta: { late: true } });
      expect(await pgq.waitForJob(lateFail.id, { timeoutMs: 10_000 })).toMatchObject({ state: 'failed' });
      const twice = await pgq.enqueue(slow, { throws: false }, { meta: { twice: true } });
      const done = await pgq.waitForJob(twice.id, { timeoutMs: 10_000 });
      expect(done.state).toBe('failed');
      expect(done.errors[0]!.message).toMatch(/called next\(\) twice/);
      expect(runs).toBe(4);
      expect(settled).toBe(4);
    } finally {
      gate.resolve();
      await worker.stop();
    }
  });

  it("a hook that awaits next() and returns a value of its own recovers from the handler's error (also one an inner hook passed on, and a result that cannot be stored); performJob the same", async () => {
    const boom = defineTask({
      name: 'mw-boom',
      queue: 'mw-recover',
      maxAttempts: 1,
      schema: z.object({ unstorable: z.boolean() }),
      handler: async ({ unstorable }) => {
        if (unstorable) return { n: 1n };
        throw new Error('boom');
      },
    });
    const recover: Middleware = {
      name: 'recover',
      async attempt(_c, next) {
        try {
          return await next();
        } catch (err) {
          return { recovered: (err as Error).message.slice(0, 40) };
        }
      },
    };
    const passOn: Middleware = { name: 'pass-on', attempt: (_c, next) => next() };
    const pgq = await ctx.migrated({ tasks: [boom], middleware: [recover, passOn] });
    expect(await performJob(boom, { unstorable: false }, { middleware: [recover] })).toEqual({ recovered: 'boom' });
    // Caught through a chain of its own (then, then catch), or by an outer hook around an inner one that chains then(): recovered.
    const chained: Middleware = { attempt: (_c, next) => next().then((v) => v).catch(() => 'caught in a chain') };
    expect(await performJob(boom, { unstorable: false }, { middleware: [chained] })).toBe('caught in a chain');
    const mapping: Middleware = { attempt: (_c, next) => next().then((v) => v) };
    expect(await performJob(boom, { unstorable: false }, { middleware: [recover, mapping] })).toEqual({ recovered: 'boom' });
    // A finally() rethrows to nobody: the hook never looked, and the handler's error stays the attempt's (no unhandled rejection).
    const looksAway: Middleware = {
      async attempt(_c, next) {
        void next().finally(() => undefined);
        await new Promise((r) => setTimeout(r, 50));
        return 'not a recovery';
      },
    };
    const slowBoom = defineTask({
      name: 'mw-slow-boom',
      schema: z.object({}),
      handler: async () => {
        await new Promise((r) => setTimeout(r, 10));
        throw new Error('boom later');
      },
    });
    await expect(performJob(slowBoom, {}, { middleware: [looksAway] })).rejects.toThrow('boom later');
    const worker = pgq.worker({ queues: ['mw-recover'], pollIntervalMs: 50, leader: false });
    await worker.start();
    try {
      const thrown = await pgq.enqueue(boom, { unstorable: false });
      expect(await pgq.waitForJob(thrown.id, { timeoutMs: 10_000 })).toMatchObject({ state: 'succeeded', result: { recovered: 'boom' }, errors: [] });
      const unstorable = await pgq.enqueue(boom, { unstorable: true });
      const done = await pgq.waitForJob(unstorable.id, { timeoutMs: 10_000 });
      expect(done.state).toBe('succeeded');
      expect(done.result).toEqual({ recovered: expect.stringMatching(/./) });
    } finally {
      await worker.stop();
    }
  });

  it('stores what attempt middleware returns, also a result it changed in place', async () => {
    const made = defineTask({ name: 'mw-made', queue: 'mw-made', schema: z.object({}), handler: () => ({ n: 1 }) });
    const pgq = await ctx.migrated({
      tasks: [made],
      middleware: [{
        async attempt(_c, next) {
          const result = (await next()) as { n: number; auditedBy?: string };
          result.auditedBy = 'audit'; // the text made as the handler returned was stored: {"n":1}
          return result;
        },
      }],
    });
    const worker = pgq.worker({ queues: ['mw-made'], pollIntervalMs: 50, leader: false });
    await worker.start();
    try {
      const job = await pgq.enqueue(made, {});
      expect(await pgq.waitForJob(job.id, { timeoutMs: 10_000 })).toMatchObject({ state: 'succeeded', result: { n: 1, auditedBy: 'audit' } });
    } finally {
      await worker.stop();
    }
  });

  it('ctx.recordMeta: the keys are written with the outcome (success, failure, snooze); nothing recorded, nothing changed; a bad value fails the attempt', async () => {
    const recording = defineTask({
      name: 'recording',
      schema: z.object({ mode: z.enum(['ok', 'fail', 'snooze', 'none', 'bad']) }),
      queue: 'mw-record',
      maxAttempts: 1,
      handler: ({ mode }, c) => {
        if (mode === 'none') return null;
        c.recordMeta('handler', mode);
        c.recordMeta('handler', `${mode}!`); // the later value wins
        if (mode === 'fail') throw new Error('fails');
        if (mode === 'snooze') c.snooze(3_600_000);
        return c.job.meta; // not changed by recordMeta
      },
    });
    const pgq = await ctx.migrated({
      tasks: [recording],
      middleware: [{
        async attempt(c, next) {
          const { mode } = c.job.payload as { mode: string };
          if (mode === 'bad') c.recordMeta('bad', { n: 1n } as never);
          if (mode !== 'none') c.recordMeta('mw', { attempt: c.attempt });
          return next();
        },
      }],
    });
    const jobs = Object.fromEntries(
      await Promise.all((['ok', 'fail', 'snooze', 'none', 'bad'] as const).map(async (mode) => [mode, await pgq.enqueue(recording, { mode }, { meta: { requestId: mode } })] as const)),
    );
    const worker = pgq.worker({ queues: ['mw-record'], pollIntervalMs: 50 });
    await worker.start();
    const ok = await pgq.waitForJob(jobs.ok!.id, { timeoutMs: 10_000 });
    expect(ok).toMatchObject({ state: 'succeeded', result: { requestId: 'ok' } });
    expect(ok.meta).toEqual({ requestId: 'ok', mw: { attempt: 1 }, handler: 'ok!' });
    const failed = await pgq.waitForJob(jobs.fail!.id, { timeoutMs: 10_000 });
    expect(failed.state).toBe('failed');
    expect(failed.meta).toEqual({ requestId: 'fail', mw: { attempt: 1 }, handler: 'fail!' });
    const none = await pgq.waitForJob(jobs.none!.id, { timeoutMs: 10_000 });
    expect(none.state).toBe('succeeded');
    expect(none.meta).toEqual({ requestId: 'none' });
    const bad = await pgq.waitForJob(jobs.bad!.id, { timeoutMs: 10_000 });
    expect(bad.state).toBe('failed');
    expect(bad.errors[0]!.message).toMatch(/ctx\.recordMeta\("bad"\)\.n.*BigInt/);
    expect(bad.meta).toEqual({ requestId: 'bad' });
    const snoozed = await until(async () => {
      const job = (await pgq.getJob(jobs.snooze!.id))!;
      return job.state === 'scheduled' ? job : null;
    });
    expect(snoozed.meta).toEqual({ requestId: 'snooze', mw: { attempt: 1 }, handler: 'snooze!' });
    await worker.stop();
  });

  it('sees workflow steps and schedule ticks as one call each', async () => {
    const calls: { kind: string; steps: (string | undefined)[]; schedule?: string }[] = [];
    const pgq = await ctx.migrated({
      tasks: [echo],
      middleware: [{
        async enqueue(call, next) {
          calls.push({ kind: call.kind, steps: call.jobs.map((j) => j.step), schedule: call.jobs[0]?.schedule?.name });
          for (const j of call.jobs) j.meta.seen = call.kind;
          return next();
        },
      }],
    });
    const wf = await pgq.enqueueWorkflow(chain(step(echo, { n: 1 }).named('one'), step(echo, { n: 2 }).named('two')), { meta: { requestId: 'w' } });
    expect(calls[0]).toEqual({ kind: 'workflow', steps: ['one', 'two'], schedule: undefined });
    for (const s of wf.steps) expect((await pgq.getJob(s.id))!.meta).toEqual({ requestId: 'w', seen: 'workflow' });
    await pgq.schedule({ name: 'tick', every: '1h', task: echo, payload: { n: 3 } });
    const ran = await pgq.runSchedule('tick');
    expect(calls[1]).toMatchObject({ kind: 'schedule', schedule: 'tick' });
    expect(ran.meta).toEqual({ seen: 'schedule' });
  });

  it('refuses a middleware without hooks', async () => {
    expect(() => ctx.pgq({ middleware: [{} as Middleware] })).toThrow(/needs an enqueue or an attempt function/);
  });
});
