import { describe, expect, it } from 'vitest';
import { setTimeout as sleepMs } from 'node:timers/promises';
import { z } from 'zod';
import { chain, defineTask, PermanentError, step, type JobRecord } from '../src/index.js';
import { deferred, until, useTestSchema } from './support/harness.js';
import { captureLogger, type Line } from './support/logger.js';
import { createStatements } from '../src/db/statements.js';
import { fromPg, type Queryable } from '../src/db/queryable.js';

const ctx = useTestSchema('worker');

describe('worker', () => {
  it('runs a job and stores its result', async () => {
    const add = defineTask({
      name: 'add',
      schema: z.object({ a: z.number(), b: z.number() }),
      handler: ({ a, b }) => ({ sum: a + b }),
    });
    const pgq = await ctx.migrated({ tasks: [add] });
    const worker = pgq.worker({ concurrency: 2 });
    await worker.start();
    const job = await pgq.enqueue(add, { a: 2, b: 3 });
    const done = await pgq.waitForJob(job.id, { timeoutMs: 10_000 });
    expect(done.state).toBe('succeeded');
    expect(done.result).toEqual({ sum: 5 });
    expect(done.attempts).toBe(1);
    await worker.stop();
  });

  it('retries a failing job and records each error', async () => {
    let calls = 0;
    const flaky = defineTask({
      name: 'flaky',
      schema: z.object({}),
      backoff: { baseMs: 10, maxMs: 20 },
      handler: () => {
        calls += 1;
        if (calls < 3) throw new Error(`boom ${calls}`);
        return 'ok';
      },
    });
    const pgq = await ctx.migrated({ tasks: [flaky] });
    const worker = pgq.worker({ pollIntervalMs: 50 });
    await worker.start();
    const job = await pgq.enqueue(flaky, {});
    const done = await pgq.waitForJob(job.id, { timeoutMs: 10_000 });
    expect(done.state).toBe('succeeded');
    expect(done.attempts).toBe(3);
    expect(done.errors.map((e) => [e.attempt, e.message])).toEqual([
      [1, 'boom 1'],
      [2, 'boom 2'],
    ]);
    await worker.stop();
  });

  it("gives a handler the job as its row stands once claimed: running, this worker's, no outcome yet, the errors and meta so far", async () => {
    const seen: Array<{ job: JobRecord; row: JobRecord | null }> = [];
    let attempts = 0;
    const look = defineTask({
      name: 'look',
      schema: z.object({ failFirst: z.boolean() }),
      backoff: { baseMs: 10, maxMs: 20 },
      handler: async ({ failFirst }, c) => {
        seen.push({ job: c.job, row: await pgq.getJob(c.job.id) });
        attempts += 1;
        if (failFirst && c.job.attempts === 1) throw new Error('first try');
        return 'ok';
      },
    });
    const pgq = await ctx.migrated({ tasks: [look] });
    const worker = pgq.worker({ pollIntervalMs: 50 });
    await worker.start();
    const plain = await pgq.enqueue(look, { failFirst: false });
    const retried = await pgq.enqueue(look, { failFirst: true }, { meta: { tenant: 7 }, expiresInMs: 600_000 });
    await pgq.waitForJob(plain.id, { timeoutMs: 10_000 });
    await pgq.waitForJob(retried.id, { timeoutMs: 10_000 });
    await worker.stop();
    expect(attempts).toBe(3);
    const fields = ['id', 'state', 'workerId', 'attempts', 'finishedAt', 'result', 'errors', 'meta', 'runAt', 'createdAt', 'startedAt', 'expiresAt'] as const;
    for (const { job, row } of seen) {
      expect(row).not.toBeNull();
      const pick = (j: JobRecord): Record<string, unknown> => Object.fromEntries(fields.map((f) => [f, j[f]]));
      expect(pick(job)).toEqual(pick(row!));
    }
    const last = seen.find((s) => s.job.id === retried.id && s.job.attempts === 2)!.job;
    expect(last).toMatchObject({ state: 'running', finishedAt: null, result: null, meta: { tenant: 7 } });
    expect(last.errors.map((e) => e.message)).toEqual(['first try']);
    expect(last.workerId).toEqual(expect.any(String));
    expect(seen.find((s) => s.job.id === plain.id)!.job).toMatchObject({ errors: [], meta: {}, expiresAt: null });
  });

  it('writes the successes of a batch and discards the one whose job was cancelled by SQL while it ran', async () => {
    const gate = deferred();
    let started = 0;
    const hold = defineTask({
      name: 'hold',
      schema: z.object({ n: z.number() }),
      handler: async ({ n }) => {
        started += 1;
        await gate.promise; // ignores its signal: it finishes after the cancel
        return n;
      },
    });
    const pgq = await ctx.migrated({ tasks: [hold] });
    const worker = pgq.worker({ concurrency: 3, pollIntervalMs: 50 });
    const events: string[] = [];
    worker.on('job:success', (job) => events.push(`success ${job.id}`));
    worker.on('job:discarded', (job, outcome) => events.push(`discarded ${job.id} ${outcome}`));
    await worker.start();
    const jobs = await pgq.enqueueMany(hold, [{ n: 1 }, { n: 2 }, { n: 3 }]);
    await until(() => started === 3, { timeoutMs: 10_000 });
    // Cancelled by an operator's SQL: no notice reaches the worker (cancelJob's
    // would signal the attempt, whose outcome could then be a failure), so the
    // handler's success is what the completion statement finds no longer running.
    await ctx.admin.query(`UPDATE "${ctx.schema}".jobs SET state = 'cancelled', finished_at = now() WHERE id = $1`, [jobs[1]!.id]);
    // The three handlers return in one turn of the event loop, so their outcomes go out in one statement.
    gate.resolve();
    await pgq.waitForJob(jobs[0]!.id, { timeoutMs: 10_000 });
    await pgq.waitForJob(jobs[2]!.id, { timeoutMs: 10_000 });
    await until(() => events.length === 3, { timeoutMs: 10_000 });
    await worker.stop();
    expect(events.sort()).toEqual([`discarded ${jobs[1]!.id} complete`, `success ${jobs[0]!.id}`, `success ${jobs[2]!.id}`].sort());
    const rows = await Promise.all(jobs.map((j) => pgq.getJob(j.id)));
    expect(rows.map((r) => [r!.state, r!.result])).toEqual([
      ['succeeded', 1],
      ['cancelled', null],
      ['succeeded', 3],
    ]);
  });

  it('a batch whose failure statement is refused reports the success the other statement committed as a success, and records the failure with why it could not be written', async () => {
    const gate = deferred();
    let started = 0;
    const mixed = defineTask({
      name: 'mixed',
      schema: z.object({ ok: z.boolean() }),
      handler: async ({ ok }) => {
        started += 1;
        await gate.promise;
        if (!ok) throw new Error('handler failed');
        return 'fine';
      },
    });
    const pgq = await ctx.migrated({ tasks: [mixed] });
    // The first statement that fails a job is refused (once): the success beside it commits on its own.
    await ctx.admin.query(`
      CREATE SEQUENCE "${ctx.schema}".refuse_once;
      CREATE FUNCTION "${ctx.schema}".refuse_fail() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        -- A sequence is not rolled back with the refused statement: only the first is refused.
        IF NEW.state IN ('failed', 'retryable') AND nextval('"${ctx.schema}".refuse_once') = 1 THEN
          RAISE EXCEPTION 'refused once';
        END IF;
        RETURN NEW;
      END $$;
      CREATE TRIGGER refuse_fail BEFORE UPDATE OF state ON "${ctx.schema}".jobs FOR EACH ROW EXECUTE FUNCTION "${ctx.schema}".refuse_fail();`);
    try {
      const worker = pgq.worker({ concurrency: 2 });
      const events: string[] = [];
      worker.on('job:success', (job) => events.push(`success ${job.id}`));
      worker.on('job:failure', (job) => events.push(`failure ${job.id}`));
      worker.on('job:discarded', (job, outcome) => events.push(`discarded ${job.id} ${outcome}`));
      const [good, bad] = await pgq.enqueueMany(mixed, [{ ok: true }, { ok: false }], { maxAttempts: 1 });
      await worker.start();
      await until(() => started === 2, { timeoutMs: 10_000 });
      gate.resolve(); // both settle in one turn: one batch, a complete and a fail statement
      await until(() => events.length === 2, { timeoutMs: 10_000 });
      await worker.stop();
      expect(events.sort()).toEqual([`failure ${bad!.id}`, `success ${good!.id}`].sort());
      expect(await pgq.getJob(good!.id)).toMatchObject({ state: 'succeeded', result: 'fine' });
      // The refused statement's outcome: the job fails for good, saying why its failure could not be written.
      const failed = await pgq.getJob(bad!.id);
      expect(failed!.state).toBe('failed');
      expect(failed!.errors[0]!.message).toMatch(/could not record this attempt's fail: refused once/);
    } finally {
      await ctx.admin.query(`DROP TRIGGER refuse_fail ON "${ctx.schema}".jobs; DROP FUNCTION "${ctx.schema}".refuse_fail(); DROP SEQUENCE "${ctx.schema}".refuse_once;`);
    }
  });

  it('a success whose result the database refuses as data fails for good (another attempt would do the work again), other refusals stay retryable', async () => {
    let runs = 0;
    const refused = defineTask({
      name: 'refused-result',
      queue: 'refused-result',
      maxAttempts: 3,
      backoff: { baseMs: 60_000 },
      schema: z.object({ code: z.string() }),
      handler: () => ((runs += 1), 'refuse-me'),
    });
    const pgq = await ctx.migrated({ tasks: [refused], logger: captureLogger([]) });
    // Stands for what jsonb itself refuses (class 22, a data exception), or for a rule of the application's.
    await ctx.admin.query(`
      CREATE FUNCTION "${ctx.schema}".refuse_result() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF NEW.state = 'succeeded' AND NEW.result = '"refuse-me"' THEN
          RAISE EXCEPTION 'result refused' USING ERRCODE = NEW.payload ->> 'code';
        END IF;
        RETURN NEW;
      END $$;
      CREATE TRIGGER refuse_result BEFORE UPDATE OF state ON "${ctx.schema}".jobs FOR EACH ROW EXECUTE FUNCTION "${ctx.schema}".refuse_result();`);
    const worker = pgq.worker({ queues: ['refused-result'], pollIntervalMs: 20, leader: false });
    await worker.start();
    try {
      const data = await pgq.enqueue(refused, { code: '22023' });
      const failed = await pgq.waitForJob(data.id, { timeoutMs: 10_000 });
      expect(failed).toMatchObject({ state: 'failed', attempts: 1 });
      expect(failed.errors[0]!.message).toMatch(/^pgq could not record this attempt's complete: result refused/);
      const other = await pgq.enqueue(refused, { code: 'P0001' });
      const retryable = await until(async () => {
        const j = await pgq.getJob(other.id);
        return j?.state === 'retryable' ? j : null;
      }, { what: 'the other refusal to be retryable' });
      expect(retryable.attempts).toBe(1);
      expect(runs).toBe(2);
    } finally {
      await worker.stop();
      await ctx.admin.query(`DROP TRIGGER refuse_result ON "${ctx.schema}".jobs`);
    }
  });

  it('fails permanently on PermanentError', async () => {
    const perm = defineTask({
      name: 'perm',
      schema: z.object({}),
      handler: () => {
        throw new PermanentError('nope');
      },
    });
    const pgq = await ctx.migrated({ tasks: [perm] });
    const worker = pgq.worker();
    await worker.start();
    const job = await pgq.enqueue(perm, {});
    const done = await pgq.waitForJob(job.id, { timeoutMs: 10_000 });
    expect(done.state).toBe('failed');
    expect(done.attempts).toBe(1);
    expect(done.errors[0]?.message).toBe('nope');
    await worker.stop();
  });

  it('cancels a running job through its signal', async () => {
    const started = deferred();
    const slow = defineTask({
      name: 'slow',
      schema: z.object({}),
      handler: async (_p, c) => {
        started.resolve();
        await new Promise((_, reject) => c.signal.addEventListener('abort', () => reject(c.signal.reason)));
      },
    });
    const pgq = await ctx.migrated({ tasks: [slow] });
    const worker = pgq.worker();
    await worker.start();
    const job = await pgq.enqueue(slow, {});
    await started.promise;
    await pgq.cancelJob(job.id);
    const done = await pgq.waitForJob(job.id, { timeoutMs: 10_000 });
    expect(done.state).toBe('cancelled');
    await worker.stop();
    expect(worker.runningJobs).toBe(0);
  });
});

describe('outcomes jsonb would refuse or JSON would mangle', () => {
  it('stores a result that shares an object, and records errors whatever their text; each job settles on its own', async () => {
    const shared = { n: 1 };
    const tasks = [
      defineTask({ name: 'shared', schema: z.object({}), handler: () => ({ a: shared, b: shared, list: [shared, shared, shared] }) }),
      // 10,000 characters are kept: the cut falls between the halves of the emoji.
      defineTask({ name: 'long-error', schema: z.object({}), handler: () => { throw new Error(`${'x'.repeat(9_999)}\u{1F600}tail`); } }),
      defineTask({ name: 'lone-surrogate', schema: z.object({}), handler: () => ({ s: 'half \ud83d' }) }),
      defineTask({
        name: 'object-message',
        schema: z.object({}),
        handler: () => {
          const err = new Error('x');
          (err as { message: unknown }).message = { code: 7 };
          throw err;
        },
      }),
      defineTask({ name: 'plain', schema: z.object({}), handler: () => 'ok' }),
      defineTask({
        name: 'bigint-thrown',
        schema: z.object({}),
        handler: () => {
          throw 10n;
        },
      }),
    ];
    const pgq = await ctx.migrated({ tasks });
    const jobs = [];
    for (const task of tasks) jobs.push(await pgq.enqueue(task, {}, { maxAttempts: 1 }));
    const worker = pgq.worker({ concurrency: 10 });
    await worker.start();
    const [sharedJob, longError, lone, objectMessage, plain, bigintThrown] = await Promise.all(jobs.map((j) => pgq.waitForJob(j.id, { timeoutMs: 10_000 })));
    await worker.stop();
    expect(sharedJob).toMatchObject({ state: 'succeeded', result: { a: { n: 1 }, b: { n: 1 }, list: [{ n: 1 }, { n: 1 }, { n: 1 }] } });
    expect(longError!.state).toBe('failed');
    expect(longError!.errors[0]!.message).toBe('x'.repeat(9_999));
    expect(lone!.state).toBe('failed');
    expect(lone!.errors[0]!.message).toMatch(/result\.s: contains a lone UTF-16 surrogate/);
    expect(objectMessage!.state).toBe('failed');
    expect(objectMessage!.errors[0]!.message).toBe('Error: {"code":7}');
    expect(plain).toMatchObject({ state: 'succeeded', result: 'ok' });
    expect(bigintThrown!.errors[0]!.message).toBe('10');
  });
});

describe('worker behaviour', () => {
  it('snoozes without counting a failure', async () => {
    const seen: number[] = [];
    const snoozer = defineTask({
      name: 'snoozer',
      schema: z.object({}),
      maxAttempts: 1,
      handler: (_p, c) => {
        seen.push(c.attempt);
        if (seen.length === 1) c.snooze(50);
        return 'woke';
      },
    });
    const pgq = await ctx.migrated({ tasks: [snoozer] });
    const worker = pgq.worker({ pollIntervalMs: 20 });
    await worker.start();
    const job = await pgq.enqueue(snoozer, {});
    const done = await pgq.waitForJob(job.id, { timeoutMs: 10_000 });
    expect(done).toMatchObject({ state: 'succeeded', result: 'woke', errors: [] });
    expect(seen).toEqual([1, 2]);
    await worker.stop();
  });

  it('backs off by failed attempts, not attempt numbers: snoozes and give-backs at a stop do not lengthen the wait after a failure', async () => {
    // With baseMs 60 s the first failure waits 30–60 s (jittered 50–100%). Three snoozes and two give-backs took
    // five attempt numbers, so the failure was the sixth: 60 s × 2^5, 16 to 32 minutes.
    let calls = 0;
    const flaky = defineTask({
      name: 'snooze-then-fail',
      queue: 'backoff-count',
      schema: z.object({}),
      backoff: { baseMs: 60_000 },
      handler: async (_p, c) => {
        calls += 1;
        if (calls <= 3) c.snooze(0);
        if (calls <= 5) {
          await new Promise((_resolve, reject) => c.signal.addEventListener('abort', () => reject(c.signal.reason), { once: true }));
        }
        throw new Error('first real failure');
      },
    });
    const pgq = await ctx.migrated({ tasks: [flaky] });
    const job = await pgq.enqueue(flaky, {});
    let worker = pgq.worker({ queues: ['backoff-count'], pollIntervalMs: 20, leader: false });
    await worker.start();
    await until(() => calls === 4, { what: 'three snoozes, then the attempt that waits for its signal' });
    await worker.stop({ graceMs: 0 });
    worker = pgq.worker({ queues: ['backoff-count'], pollIntervalMs: 20, leader: false });
    await worker.start();
    await until(() => calls === 5, { what: 'the second attempt that waits for its signal' });
    await worker.stop({ graceMs: 0 });
    worker = pgq.worker({ queues: ['backoff-count'], pollIntervalMs: 20, leader: false });
    await worker.start();
    try {
      const failed = await until(async () => {
        const j = await pgq.getJob(job.id);
        return j?.state === 'retryable' ? j : null;
      }, { what: 'the failure' });
      expect(failed.attempts).toBe(6);
      expect(failed.errors.map((e) => [e.attempt, e.requeued ?? false])).toEqual([[4, true], [5, true], [6, false]]);
      const waitMs = failed.runAt.getTime() - new Date(failed.errors[2]!.at).getTime();
      expect(waitMs).toBeGreaterThan(25_000);
      expect(waitMs).toBeLessThan(65_000);
      // Notes that are no failure of this job: a workflow step's cancel each time a parent failed (attempt 0,
      // failedStep), an expiry note (the number of an attempt already there). Its first failure waits 30–60 s.
      const noted = await pgq.enqueue(flaky, {}, { delayMs: 3_600_000 }); // made due once its notes are in
      const note = (attempt: number, extra: object) => ({ attempt, message: 'a note', at: new Date().toISOString(), ...extra });
      const failedStep = { step: 'parent', jobId: '1', task: 'x', state: 'failed', message: 'boom' };
      await ctx.admin.query(`UPDATE "${ctx.schema}".jobs SET errors = $2::jsonb, state = 'available', run_at = now() WHERE id = $1`, [
        noted.id,
        JSON.stringify([note(0, { failedStep }), note(0, { failedStep }), note(0, { failedStep }), note(0, {})]),
      ]);
      const firstFailure = await until(async () => {
        const j = await pgq.getJob(noted.id);
        return j?.state === 'retryable' ? j : null;
      }, { what: 'the noted job to fail' });
      expect(firstFailure.attempts).toBe(1);
      const noteWait = firstFailure.runAt.getTime() - new Date(firstFailure.errors.at(-1)!.at).getTime();
      expect(noteWait).toBeGreaterThan(25_000);
      expect(noteWait).toBeLessThan(65_000);
    } finally {
      await worker.stop();
    }
  });

  it('keeps the last 20 give-back notes of a job given back at every stop, and every failure', async () => {
    let started = 0;
    const long = defineTask({
      name: 'longer-than-a-deploy',
      queue: 'give-backs',
      schema: z.object({}),
      handler: async (_p, c) => {
        started += 1;
        await new Promise((_resolve, reject) => c.signal.addEventListener('abort', () => reject(c.signal.reason), { once: true }));
      },
    });
    const pgq = await ctx.migrated({ tasks: [long] });
    const at = new Date().toISOString();
    const failure = (attempt: number) => ({ attempt, message: `failure ${attempt}`, at });
    const requeued = (attempt: number) => ({ attempt, message: 'pgq worker is shutting down', at, requeued: true });
    const seed = async (history: object[]): Promise<string> => {
      const job = await pgq.enqueue(long, {}, { delayMs: 3_600_000 });
      await ctx.admin.query(`UPDATE "${ctx.schema}".jobs SET errors = $2::jsonb, attempts = $3, max_attempts = $3 + 20, state = 'available', run_at = now() WHERE id = $1`, [
        job.id,
        JSON.stringify(history),
        history.length,
      ]);
      return job.id;
    };
    // Given back at 20 stops already, after a failure of its first attempt and before one of its 12th.
    const one = await seed([failure(1), ...[2, 3, 4, 5, 6, 7, 8, 9, 10, 11].map(requeued), failure(12), ...Array.from({ length: 10 }, (_, i) => requeued(13 + i))]);
    // Given back at 30 stops by a pgq that kept every note.
    const legacy = await seed(Array.from({ length: 30 }, (_, i) => requeued(1 + i)));
    for (let stop = 1; stop <= 2; stop += 1) {
      const worker = pgq.worker({ queues: ['give-backs'], pollIntervalMs: 20, leader: false });
      await worker.start();
      await until(() => started === 2 * stop, { what: `both jobs' attempts to start (stop ${stop})` });
      await worker.stop({ graceMs: 0 });
    }
    const after = (await pgq.getJob(one))!;
    expect(after.state).toBe('available');
    expect(after.attempts).toBe(24);
    // The two oldest notes went (attempts 2 and 3), the failures stayed, the two new notes are last.
    expect(after.errors.map((e) => [e.attempt, e.requeued ?? false])).toEqual([
      [1, false],
      ...[4, 5, 6, 7, 8, 9, 10, 11].map((a) => [a, true]),
      [12, false],
      ...Array.from({ length: 12 }, (_, i) => [13 + i, true]),
    ]);
    // Cut back to the newest 20 at its first give-back here, and kept there.
    expect((await pgq.getJob(legacy))!.errors.map((e) => e.attempt)).toEqual(Array.from({ length: 20 }, (_, i) => 13 + i));
  });

  it('aborts a handler past its timeout and retries it', async () => {
    const reasons: string[] = [];
    const slow = defineTask({
      name: 'slow-timeout',
      schema: z.object({}),
      timeoutMs: 50,
      maxAttempts: 2,
      backoff: { baseMs: 1, maxMs: 1 },
      handler: async (_p, c) => {
        await new Promise((resolve) => c.signal.addEventListener('abort', resolve));
        reasons.push((c.signal.reason as Error).name);
        return 'too late';
      },
    });
    const pgq = await ctx.migrated({ tasks: [slow] });
    const worker = pgq.worker({ pollIntervalMs: 20 });
    await worker.start();
    const job = await pgq.enqueue(slow, {});
    const done = await pgq.waitForJob(job.id, { timeoutMs: 10_000 });
    expect(done.state).toBe('failed');
    expect(done.errors.map((e) => e.message)).toEqual(['job timed out after 50 ms', 'job timed out after 50 ms']);
    expect(reasons).toEqual(['JobTimeoutError', 'JobTimeoutError']);
    await worker.stop();
  });

  it('ctx members made on first use: a signal first read after the timeout is already aborted; ctx spreads, proxies and takes new values; methods work taken off it', async () => {
    const seen: { aborted: boolean; reason: string; validatedPayload: boolean; sameJob: boolean }[] = [];
    const late = defineTask({
      name: 'late-signal',
      schema: z.object({ n: z.number().transform((n) => n * 2) }),
      timeoutMs: 30,
      maxAttempts: 1,
      handler: async (p, c) => {
        const { progress, recordMeta } = c;
        await progress(50);
        recordMeta('seen', true);
        // Busy past the time limit without ever touching ctx.signal.
        await sleepMs(120);
        seen.push({ aborted: c.signal.aborted, reason: (c.signal.reason as Error).name, validatedPayload: c.job.payload === p, sameJob: c.job === c.job });
        return 'late';
      },
    });
    const snoozer = defineTask({
      name: 'detached-snooze',
      schema: z.object({}),
      handler: (_p, c) => {
        // ctx behaves as a plain object: it spreads with every member, takes new values, and proxies.
        const copy = { ...c };
        if (copy.job.id !== c.job.id || !(copy.signal instanceof AbortSignal) || typeof copy.progress !== 'function' || !copy.logger) {
          throw new Error('a spread ctx lacks a member');
        }
        if (Object.getOwnPropertySymbols(copy).length !== 0) throw new Error('a spread ctx carries internals');
        // A getter taken off its descriptor works called with the ctx, and says what is wrong without it.
        const loggerGetter = Object.getOwnPropertyDescriptor(c, 'logger')!.get!;
        if (loggerGetter.call(c) !== c.logger) throw new Error('a descriptor getter called with ctx gives another logger');
        let bare = '';
        try {
          loggerGetter.call({});
        } catch (err) {
          bare = (err as Error).message;
        }
        if (!/ctx\.logger was used with a `this` that is not a handler's ctx/.test(bare)) throw new Error(`a bare descriptor getter: ${bare}`);
        const proxied = new Proxy(c, {});
        if (proxied.job.task !== 'detached-snooze' || proxied.signal.aborted) throw new Error('a proxied ctx does not read through');
        const own = new AbortController().signal;
        c.signal = own;
        if (c.signal !== own) throw new Error('ctx.signal could not be replaced');
        const { snooze, attempt } = c;
        if (attempt === 1) snooze(10);
        return attempt;
      },
    });
    const pgq = await ctx.migrated({ tasks: [late, snoozer] });
    const worker = pgq.worker({ pollIntervalMs: 20 });
    await worker.start();
    const job = await pgq.enqueue(late, { n: 21 });
    const done = await pgq.waitForJob(job.id, { timeoutMs: 10_000 });
    expect(done).toMatchObject({ state: 'failed', progress: 50, meta: { seen: true } });
    expect(done.errors[0]!.message).toBe('job timed out after 30 ms');
    expect(seen).toEqual([{ aborted: true, reason: 'JobTimeoutError', validatedPayload: true, sameJob: true }]);
    const snoozed = await pgq.waitForJob((await pgq.enqueue(snoozer, {})).id, { timeoutMs: 10_000 });
    expect(snoozed).toMatchObject({ state: 'succeeded', result: 2, errors: [] });
    await worker.stop();
  });

  it("a claimed job's timestamps are the stored ones to the millisecond", async () => {
    const seen: JobRecord[] = [];
    const stamp = defineTask({
      name: 'stamp',
      schema: z.object({ i: z.number() }),
      handler: (_p, c) => {
        seen.push(c.job);
      },
    });
    const pgq = await ctx.migrated({ tasks: [stamp] });
    // Enqueued ahead of the worker; half the run_at values on a whole millisecond (where a
    // float8 epoch can land a hair below it), half with microseconds (567 × an odd id, modulo
    // 1,000, is never 0; from run_at's own microseconds a row landed on a whole millisecond
    // one time in 1,000); expiry times far ahead
    // (expiresInMs goes up to 1e13 ms), where a float8 of epoch seconds with microseconds is
    // coarser than a microsecond: .949999 must stay .949, not become .950.
    const jobs = await pgq.enqueueMany(stamp, Array.from({ length: 20 }, (_, i) => ({ i })), { expiresInMs: 3_600_000 });
    await ctx.admin.query(
      `UPDATE "${ctx.schema}".jobs
          SET run_at = CASE WHEN id % 2 = 0 THEN date_trunc('milliseconds', run_at) - interval '1.001 seconds' * id
                            ELSE date_trunc('milliseconds', run_at) - interval '1.234567 seconds' * id END,
              expires_at = timestamptz '2139-05-03 16:06:43.949999+00' + interval '1 day' * id
        WHERE task = 'stamp'`,
    );
    const worker = pgq.worker({ concurrency: 5 });
    await worker.start();
    for (const job of jobs) await pgq.waitForJob(job.id, { timeoutMs: 10_000 });
    await worker.stop();
    expect(seen).toHaveLength(20);
    for (const claimed of seen) {
      const stored = (await pgq.getJob(claimed.id))!;
      expect({ runAt: claimed.runAt, createdAt: claimed.createdAt, startedAt: claimed.startedAt, expiresAt: claimed.expiresAt, finishedAt: claimed.finishedAt }).toEqual({
        runAt: stored.runAt,
        createdAt: stored.createdAt,
        startedAt: stored.startedAt,
        expiresAt: stored.expiresAt,
        finishedAt: null,
      });
    }
    const micros = await ctx.admin.query(
      `SELECT count(*) FILTER (WHERE extract(microseconds FROM run_at)::int % 1000 <> 0)::int AS micro, count(*)::int AS n FROM "${ctx.schema}".jobs WHERE task = 'stamp'`,
    );
    expect(micros.rows[0]).toEqual({ micro: 10, n: 20 });
  });

  it('cancels a queued job before it runs, and retryJob runs it again', async () => {
    let runs = 0;
    const counted = defineTask({ name: 'counted', schema: z.object({}), handler: () => ++runs });
    const pgq = await ctx.migrated({ tasks: [counted] });
    const job = await pgq.enqueue(counted, {}, { delayMs: 60_000 });
    const cancelled = await pgq.cancelJob(job.id);
    expect(cancelled.state).toBe('cancelled');
    expect(cancelled.finishedAt).toBeInstanceOf(Date);
    const worker = pgq.worker({ pollIntervalMs: 20 });
    await worker.start();
    const probe = await pgq.enqueue(counted, {});
    await pgq.waitForJob(probe.id, { timeoutMs: 10_000 });
    expect(runs).toBe(1);
    expect((await pgq.getJob(job.id))?.state).toBe('cancelled');
    const retried = await pgq.retryJob(job.id);
    expect(retried.state).toBe('available');
    const done = await pgq.waitForJob(job.id, { timeoutMs: 10_000 });
    expect(done).toMatchObject({ state: 'succeeded', result: 2 });
    await expect(pgq.retryJob(job.id)).rejects.toThrow(/succeeded; only failed/);
    await worker.stop();
  });

  it('retryJob gives a failed job another attempt', async () => {
    let fail = true;
    const once = defineTask({
      name: 'fails-until-fixed',
      schema: z.object({}),
      maxAttempts: 1,
      handler: () => {
        if (fail) throw new Error('broken');
        return 'fixed';
      },
    });
    const pgq = await ctx.migrated({ tasks: [once] });
    const worker = pgq.worker({ pollIntervalMs: 20 });
    await worker.start();
    const job = await pgq.enqueue(once, {});
    expect((await pgq.waitForJob(job.id, { timeoutMs: 10_000 })).state).toBe('failed');
    fail = false;
    await pgq.retryJob(job.id);
    const done = await pgq.waitForJob(job.id, { timeoutMs: 10_000 });
    expect(done).toMatchObject({ state: 'succeeded', attempts: 2, maxAttempts: 2, result: 'fixed' });
    await worker.stop();
  });

  it('runs due jobs by priority, then run_at, then id', async () => {
    const order: number[] = [];
    const ordered = defineTask({ name: 'ordered', schema: z.object({ n: z.number() }), handler: ({ n }) => void order.push(n) });
    const pgq = await ctx.migrated({ tasks: [ordered] });
    const past = (ms: number): Date => new Date(Date.now() - ms);
    await pgq.enqueue(ordered, { n: 4 }, { priority: 0, runAt: past(1_000) });
    await pgq.enqueue(ordered, { n: 5 }, { priority: 0, runAt: past(1_000) });
    await pgq.enqueue(ordered, { n: 3 }, { priority: 0, runAt: past(5_000) });
    await pgq.enqueue(ordered, { n: 1 }, { priority: 10 });
    await pgq.enqueue(ordered, { n: 2 }, { priority: 5 });
    const future = await pgq.enqueue(ordered, { n: 6 }, { priority: 100, delayMs: 1_500 });
    const worker = pgq.worker({ concurrency: 1, maxClaimBatch: 1 });
    await worker.start();
    await pgq.waitForJob(future.id, { timeoutMs: 10_000 });
    expect(order).toEqual([1, 2, 3, 4, 5, 6]);
    await worker.stop();
  });

  it('fails a job whose stored payload no longer validates, and goes on', async () => {
    const strict = defineTask({ name: 'strict', schema: z.object({ n: z.number() }), handler: ({ n }) => n * 2 });
    const pgq = await ctx.migrated({ tasks: [strict] });
    await ctx.admin.query(`INSERT INTO "${ctx.schema}".jobs (task, payload) VALUES ('strict', '{"n":"seven"}')`);
    const { rows } = await ctx.admin.query<{ id: string }>(`SELECT id FROM "${ctx.schema}".jobs WHERE task = 'strict'`);
    const worker = pgq.worker();
    await worker.start();
    const bad = await pgq.waitForJob(rows[0]!.id, { timeoutMs: 10_000 });
    expect(bad.state).toBe('failed');
    expect(bad.attempts).toBe(1);
    expect(bad.errors[0]!.message).toMatch(/stored payload no longer matches the schema of task strict: payload\.n/);
    const good = await pgq.enqueue(strict, { n: 21 });
    expect((await pgq.waitForJob(good.id, { timeoutMs: 10_000 })).result).toBe(42);
    await worker.stop();
  });

  it('leaves jobs of tasks it does not know for a worker that does', async () => {
    const known = defineTask({ name: 'known', schema: z.object({}), handler: () => 'k' });
    const other = defineTask({ name: 'deployed-later', schema: z.object({}), handler: () => 'later' });
    const oldPgq = await ctx.migrated({ tasks: [known] });
    const newPgq = ctx.pgq({ tasks: [known, other] });
    const stranger = await newPgq.enqueue(other, {});
    const worker = oldPgq.worker({ pollIntervalMs: 20 });
    await worker.start();
    const probe = await oldPgq.enqueue(known, {});
    await oldPgq.waitForJob(probe.id, { timeoutMs: 10_000 });
    expect((await oldPgq.getJob(stranger.id))?.state).toBe('available');
    const newWorker = newPgq.worker({ pollIntervalMs: 20 });
    await newWorker.start();
    expect((await newPgq.waitForJob(stranger.id, { timeoutMs: 10_000 })).result).toBe('later');
    await worker.stop();
    await newWorker.stop();
  });

  it('waitForJob rejects after its timeout and for unknown ids', async () => {
    const idle = defineTask({ name: 'idle', schema: z.object({}), handler: () => undefined });
    const pgq = await ctx.migrated({ tasks: [idle] });
    const job = await pgq.enqueue(idle, {}, { delayMs: 60_000 });
    await expect(pgq.waitForJob(job.id, { timeoutMs: 100 })).rejects.toThrow(/still scheduled after 100 ms/);
    await expect(pgq.waitForJob('999999999', { timeoutMs: 100 })).rejects.toThrow(/does not exist/);
    await expect(pgq.getJob('1; DROP TABLE x')).rejects.toThrow(/not a job id/);
    // A timeout that is not a number of milliseconds is refused before any look
    // (NaN compared false with every deadline: no timeout and no wait between looks).
    for (const timeoutMs of [Number.NaN, -1, '100' as unknown as number]) {
      await expect(pgq.waitForJob(job.id, { timeoutMs }), String(timeoutMs)).rejects.toThrow(/timeoutMs: must be a number of milliseconds/);
    }
    await expect(pgq.waitForJob(job.id, { timeoutMs: 0 })).rejects.toThrow(/still scheduled after 0 ms/);
  });

  it('rejects the late completion of an attempt that was rescued and re-claimed (fencing)', async () => {
    const release = deferred();
    const firstStarted = deferred();
    const fenced = defineTask({
      name: 'fenced',
      schema: z.object({}),
      backoff: { baseMs: 1, maxMs: 1 },
      handler: async (_p, c) => {
        if (c.attempt === 1) {
          firstStarted.resolve();
          await release.promise;
          return 'from the first attempt';
        }
        return 'from the second attempt';
      },
    });
    const pgq = await ctx.migrated({ tasks: [fenced] });
    // A renews its lease once at start and then not for a minute.
    const a = pgq.worker({ leader: false, heartbeatMs: 60_000, rescueAfterMs: 120_000, pollIntervalMs: 20 });
    await a.start();
    const job = await pgq.enqueue(fenced, {});
    await firstStarted.promise;
    // A's lease runs out and its renewals keep it out (a 1 ms lease), as if A
    // had been silent for its rescueAfterMs.
    await ctx.admin.query(
      `UPDATE "${ctx.schema}".workers SET rescue_after_ms = 1, lease_expires_at = now() - interval '1 second' WHERE id = $1`,
      [a.id],
    );
    // B leads: it finds A's lease expired and rescues the job, then runs it itself.
    // (B's own lease is long enough that a loaded host does not cost it: A's is what the rescue reads.)
    const b = pgq.worker({ heartbeatMs: 100, rescueAfterMs: 5_000, pollIntervalMs: 20 });
    let done: JobRecord;
    try {
      await b.start();
      await until(() => b.isLeader, { what: 'B to lead', timeoutMs: 10_000 });
      // The job rescued and claimed again. On a loaded host A's lease thread may make its first renewal only
      // after the rescue removed its row: A then registers again and may claim the job itself, its second
      // attempt waiting (by design) for the first to settle. Either way the first attempt ends now, late.
      await until(async () => ((await pgq.getJob(job.id))?.attempts ?? 0) >= 2 || null, { what: 'the second attempt', timeoutMs: 30_000 });
      release.resolve();
      done = await pgq.waitForJob(job.id, { timeoutMs: 30_000 });
    } finally {
      // A handler left waiting would hold its worker's stop.
      release.resolve();
    }
    expect(done).toMatchObject({ state: 'succeeded', attempts: 2, result: 'from the second attempt' });
    await a.stop();
    const after = await pgq.getJob(job.id);
    expect(after?.result).toBe('from the second attempt');
    expect(after?.finishedAt).toEqual(done.finishedAt);
    await b.stop();
  });

  it('gives back a job claimed ahead that does not start within prefetchTtlMs, its attempt not counted', async () => {
    const gate = deferred();
    const ran: string[] = [];
    const quick = defineTask({
      name: 'aged',
      schema: z.object({ hold: z.boolean() }),
      handler: async ({ hold }, c) => {
        ran.push(c.job.id);
        if (hold) await gate.promise;
      },
    });
    const pgq = await ctx.migrated({ tasks: [quick] });
    const worker = pgq.worker({ concurrency: 1, pollIntervalMs: 20, prefetchTtlMs: 200 });
    await worker.start();
    for (const j of await pgq.enqueueMany(quick, Array.from({ length: 3 }, () => ({ hold: false })))) {
      await pgq.waitForJob(j.id, { timeoutMs: 10_000 });
    }
    const [blocker] = await pgq.enqueueMany(quick, [{ hold: true }]);
    await until(() => ran.includes(blocker!.id), { what: 'the slot busy' });
    const [waiting] = await pgq.enqueueMany(quick, [{ hold: false }]);
    await until(async () => (await pgq.getJob(waiting!.id))?.state === 'running', { what: 'claimed ahead' });
    await until(async () => (await pgq.getJob(waiting!.id))?.state === 'available', { what: 'given back after its TTL' });
    expect(await pgq.getJob(waiting!.id)).toMatchObject({ state: 'available', attempts: 0 });
    expect(ran).not.toContain(waiting!.id);
    gate.resolve();
    expect(await pgq.waitForJob(waiting!.id, { timeoutMs: 10_000 })).toMatchObject({ state: 'succeeded', attempts: 1 });
    await worker.stop();
  });

  it('claims ahead of long jobs only as many as the full slots start within 50 ms', async () => {
    const gates = [deferred(), deferred()];
    const ran: string[] = [];
    const slow = defineTask({
      name: 'long-io',
      schema: z.object({ ms: z.number(), gate: z.number().int().min(0).max(1).optional() }),
      handler: async ({ ms, gate }, c) => {
        ran.push(c.job.id);
        await sleepMs(ms);
        if (gate !== undefined) await gates[gate]!.promise;
      },
    });
    const pgq = await ctx.migrated({ tasks: [slow] });
    try {
      // 2 slots of 200 ms jobs start one job per 100 ms: nothing is claimed ahead.
      const narrow = pgq.worker({ concurrency: 2, pollIntervalMs: 20 });
      await narrow.start();
      for (const j of await pgq.enqueueMany(slow, [{ ms: 200 }, { ms: 200 }])) {
        await pgq.waitForJob(j.id, { timeoutMs: 10_000 });
      }
      const busy = await pgq.enqueueMany(slow, [{ ms: 200, gate: 0 }, { ms: 200, gate: 0 }]);
      await until(() => busy.every((j) => ran.includes(j.id)), { what: 'both slots busy' });
      const [behind] = await pgq.enqueueMany(slow, [{ ms: 0 }]);
      await sleepMs(300); // 15 poll intervals: time enough to claim it ahead, were it allowed
      expect((await pgq.getJob(behind!.id))?.state).toBe('available');
      gates[0]!.resolve();
      await pgq.waitForJob(behind!.id, { timeoutMs: 10_000 });
      await narrow.stop();

      // 40 slots of 60 ms jobs start one job per 1.5 ms: up to 33 are claimed ahead.
      const wide = pgq.worker({ concurrency: 40, pollIntervalMs: 20 });
      await wide.start();
      for (const j of await pgq.enqueueMany(slow, Array.from({ length: 40 }, () => ({ ms: 60 })))) {
        await pgq.waitForJob(j.id, { timeoutMs: 10_000 });
      }
      const blockers = await pgq.enqueueMany(slow, Array.from({ length: 40 }, () => ({ ms: 60, gate: 1 })));
      await until(() => blockers.every((j) => ran.includes(j.id)), { what: 'all 40 slots busy' });
      const [ahead] = await pgq.enqueueMany(slow, [{ ms: 0 }]);
      await until(async () => (await pgq.getJob(ahead!.id))?.state === 'running', { what: 'claimed ahead' });
      expect(ran).not.toContain(ahead!.id);
      gates[1]!.resolve();
      expect(await pgq.waitForJob(ahead!.id, { timeoutMs: 10_000 })).toMatchObject({ state: 'succeeded', attempts: 1 });
      await wide.stop();
    } finally {
      for (const g of gates) g.resolve(); // a failed check must not leave a worker stuck on a gate
    }
  });

  it('a quick job finishing first among long ones does not size the claim: a new worker holds at most twice its slots of them claimed ahead', async () => {
    const gate = deferred();
    let started = 0;
    const mixed = defineTask({
      name: 'mixed-length',
      queue: 'mixed-length',
      schema: z.object({ long: z.boolean() }),
      handler: async ({ long }) => {
        started += 1;
        if (long) await gate.promise;
      },
    });
    const pgq = await ctx.migrated({ tasks: [mixed] });
    // The quick one first (claimed first), then long ones that run until the gate opens.
    await pgq.enqueue(mixed, { long: false });
    await pgq.enqueueMany(mixed, Array.from({ length: 600 }, () => ({ long: true })));
    const worker = pgq.worker({ concurrency: 20, pollIntervalMs: 20 });
    let mostHeld = 0;
    try {
      await worker.start();
      await until(() => started >= 21, { what: 'the quick job and 20 long ones started' });
      // Claimed and not started: rows running for the worker less the handlers that ran. Sampled for
      // 600 ms, within prefetchTtlMs (1 s), before anything held ages out and goes back.
      const until600 = performance.now() + 600;
      while (performance.now() < until600) {
        const { rows } = await ctx.admin.query<{ n: number }>(`SELECT count(*)::int AS n FROM "${ctx.schema}".jobs WHERE state = 'running'`);
        mostHeld = Math.max(mostHeld, rows[0]!.n - (started - 1));
        await sleepMs(20);
      }
    } finally {
      gate.resolve();
      await worker.stop();
    }
    // Sized by the quick job's time alone it took up to `maxClaimBatch` (500) of them; until as many
    // jobs as there are slots have finished, the figure kept ahead grows by doubling from the slots.
    expect(mostHeld).toBeGreaterThan(0);
    expect(mostHeld).toBeLessThanOrEqual(40);
  });

  it('prefetches quick jobs; a cancelled prefetched job never runs, and a stop gives the others back', async () => {
    const gate = deferred();
    const ran: string[] = [];
    const quick = defineTask({
      name: 'prefetched',
      schema: z.object({ hold: z.boolean() }),
      handler: async ({ hold }, c) => {
        ran.push(c.job.id);
        if (hold) await gate.promise;
      },
    });
    const pgq = await ctx.migrated({ tasks: [quick] });
    const worker = pgq.worker({ concurrency: 2, pollIntervalMs: 20 });
    await worker.start();
    for (const j of await pgq.enqueueMany(quick, Array.from({ length: 5 }, () => ({ hold: false })))) {
      await pgq.waitForJob(j.id, { timeoutMs: 10_000 });
    }
    const held = await pgq.enqueueMany(quick, [{ hold: true }, { hold: true }]);
    await until(() => held.every((j) => ran.includes(j.id)), { what: 'both slots busy' });
    const [b, c] = await pgq.enqueueMany(quick, [{ hold: false }, { hold: false }]);
    // Both are claimed into the local buffer while the slots stay busy.
    await until(async () => (await pgq.getJob(c!.id))?.state === 'running', { what: 'prefetch' });
    expect((await pgq.getJob(b!.id))?.state).toBe('running');
    expect(ran).not.toContain(b!.id);
    await pgq.cancelJob(b!.id);
    const stopping = worker.stop();
    await until(async () => (await pgq.getJob(c!.id))?.state === 'available', { what: 'prefetched job given back' });
    gate.resolve();
    await stopping;
    expect(ran).not.toContain(b!.id);
    expect(ran).not.toContain(c!.id);
    expect(await pgq.getJob(c!.id)).toMatchObject({ state: 'available', attempts: 0 });
    expect((await pgq.getJob(b!.id))?.state).toBe('cancelled');
  });
});

describe('retention.succeededMs 0: succeeded jobs are not kept', () => {
  it('deletes a job that succeeds outside a workflow as its success is recorded; failures, a cancel asked while it ran and workflow steps keep their rows', async () => {
    const gate = deferred();
    const started = deferred();
    const work = defineTask({
      name: 'keep-none',
      queue: 'keep-none',
      schema: z.object({ i: z.number() }),
      maxAttempts: 1,
      handler: ({ i }) => {
        if (i % 4 === 0) throw new PermanentError(`refused ${i}`);
        return { i };
      },
    });
    const deaf = defineTask({
      name: 'keep-none-deaf',
      queue: 'keep-none',
      schema: z.object({}),
      handler: async () => {
        started.resolve();
        await gate.promise;
        return 'finished anyway';
      },
    });
    const pgq = await ctx.migrated({ tasks: [work, deaf] });
    const schema = `"${ctx.schema}"`;
    // No leader, so no pruner: whatever is gone was deleted by the completion.
    const worker = pgq.worker({ concurrency: 10, queues: ['keep-none'], leader: false, retention: { succeededMs: 0 } });
    await worker.start();
    try {
      const jobs = await pgq.enqueueMany(work, Array.from({ length: 40 }, (_, i) => ({ i })));
      const ids = jobs.map((j) => j.id);
      const left = async () =>
        (await ctx.admin.query<{ id: string; state: string }>(`SELECT j.id::text AS id, j.state FROM ${schema}.jobs j WHERE j.id = ANY($1::bigint[]) ORDER BY j.id`, [ids])).rows;
      await until(async () => (await left()).every((r) => r.state === 'failed'));
      const kept = await left();
      expect(kept.map((r) => r.id)).toEqual(jobs.filter((_, i) => i % 4 === 0).map((j) => j.id));

      const wf = await pgq.enqueueWorkflow(chain(step(work, { i: 1 }), step(work, { i: 2 })));
      expect((await pgq.waitForWorkflow(wf, { timeoutMs: 10_000 })).state).toBe('succeeded');
      const { rows: steps } = await ctx.admin.query(`SELECT state, result FROM ${schema}.jobs WHERE workflow_id = $1 ORDER BY id`, [wf.id]);
      expect(steps).toEqual([{ state: 'succeeded', result: { i: 1 } }, { state: 'succeeded', result: { i: 2 } }]);

      // Cancelled while it ran, its handler took no notice and returned: it ends cancelled, and stays.
      const job = await pgq.enqueue(deaf, {});
      await started.promise;
      await pgq.cancelJob(job.id);
      gate.resolve();
      const done = await pgq.waitForJob(job.id, { timeoutMs: 10_000 });
      expect(done.state).toBe('cancelled');
      expect(worker.runningJobs).toBe(0);
    } finally {
      await worker.stop();
    }
  });

  it("a success reported for an attempt that no longer stands deletes nothing; the attempt that stands is deleted as it succeeds", async () => {
    const noop = defineTask({ name: 'keep-none-stale', queue: 'keep-none-stale', schema: z.object({}), handler: () => null });
    const pgq = await ctx.migrated({ tasks: [noop] });
    const schema = `"${ctx.schema}"`;
    const statements = createStatements(ctx.schema);
    const db = fromPg(ctx.admin);
    await statements.registerWorker(db, { workerId: 'stale', hostname: 'h', pid: 1, queues: ['keep-none-stale'], concurrency: 1, rescueAfterMs: 60_000 });
    const job = await pgq.enqueue(noop, {});
    const claim = () => statements.claimJobs(db, { queues: ['keep-none-stale'], tasks: ['keep-none-stale'], limit: 1, workerId: 'stale' });
    const [first] = await claim();
    expect(first!.attempts).toBe(1);
    // Rescued (as the rescuer gives a job back) and claimed again: attempt 2 runs now.
    await ctx.admin.query(`UPDATE ${schema}.jobs SET state = 'available', worker_id = NULL WHERE id = $1`, [job.id]);
    const [second] = await claim();
    expect(second!.attempts).toBe(2);
    const complete = (attempt: number) =>
      statements.completeJobs(db, { ids: [job.id], attempts: [attempt], results: ['1'], metas: [null], deleteSucceeded: true });
    expect(await complete(1)).toEqual({ skipped: [1], cancelled: [] });
    expect((await pgq.getJob(job.id))!.state).toBe('running');
    expect(await complete(2)).toEqual({ skipped: [], cancelled: [] });
    expect(await pgq.getJob(job.id)).toBeNull();
    // Sent again (a reply lost on the way): nothing left to delete, and said so.
    expect(await complete(2)).toEqual({ skipped: [1], cancelled: [] });
  });

  it('a batch that deletes some jobs and updates others locks them in id order: a bulk cancel crossing it waits, no deadlock', async () => {
    const task = defineTask({ name: 'keep-none-order', queue: 'keep-none-order', schema: z.object({ n: z.number() }), handler: () => null });
    const pgq = await ctx.migrated({ tasks: [task] });
    const schema = `"${ctx.schema}"`;
    // A workflow step (kept: the UPDATE) with the lower id, a plain job (deleted) with the higher one.
    const wf = await pgq.enqueueWorkflow(chain(step(task, { n: 1 })));
    const plain = await pgq.enqueue(task, { n: 2 });
    const statements = createStatements(ctx.schema);
    const db = fromPg(ctx.admin);
    await statements.registerWorker(db, { workerId: 'order', hostname: 'h', pid: 1, queues: ['keep-none-order'], concurrency: 2, rescueAfterMs: 60_000 });
    const claimed = await statements.claimJobs(db, { queues: ['keep-none-order'], tasks: ['keep-none-order'], limit: 2, workerId: 'order' });
    const ids = claimed.map((r) => String(r.id)).sort((a, b) => Number(a) - Number(b));
    expect(ids).toEqual([wf.steps[0]!.id, plain.id]);
    const waiting = async (): Promise<number> =>
      (await ctx.admin.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE $1`, [`%${ctx.schema}%`])).rows[0]!.n;
    // Someone holds the workflow step for a moment, so the order of the waits is fixed.
    const holder = await ctx.admin.connect();
    const completer = await ctx.admin.connect();
    try {
      await holder.query('BEGIN');
      await holder.query(`SELECT 1 FROM ${schema}.jobs WHERE id = $1 FOR UPDATE`, [ids[0]]);
      const cancelling = pgq.cancelJobs({ queue: 'keep-none-order' });
      await until(async () => (await waiting()) >= 1);
      const completing = statements.completeJobs(fromPg(completer), { ids, attempts: [1, 1], results: ['1', '1'], metas: [null, null], deleteSucceeded: true });
      await until(async () => (await waiting()) >= 2);
      await holder.query('COMMIT');
      // The cancel (first in line) asks both to stop; the batch then ends both cancelled, keeping them.
      expect(await cancelling).toBe(2);
      expect(await completing).toEqual({ skipped: [], cancelled: [1, 2] });
      const { rows } = await ctx.admin.query(`SELECT id::text, state FROM ${schema}.jobs WHERE id = ANY($1::bigint[]) ORDER BY id`, [ids]);
      expect(rows).toEqual([{ id: ids[0], state: 'cancelled' }, { id: ids[1], state: 'cancelled' }]);
    } finally {
      await holder.query('ROLLBACK').catch(() => undefined);
      holder.release();
      completer.release();
    }
  });

  it('a waitForJob that saw the job says it was deleted as it succeeded', async () => {
    const gate = deferred();
    const started = deferred();
    const gated = defineTask({
      name: 'keep-none-gated',
      queue: 'keep-none-wait',
      schema: z.object({}),
      handler: async () => {
        started.resolve();
        await gate.promise;
        return 'done';
      },
    });
    const pgq = await ctx.migrated({ tasks: [gated] });
    const worker = pgq.worker({ queues: ['keep-none-wait'], leader: false, retention: { succeededMs: 0 } });
    await worker.start();
    try {
      const job = await pgq.enqueue(gated, {});
      await started.promise;
      const waiting = pgq.waitForJob(job.id, { timeoutMs: 10_000 });
      waiting.catch(() => undefined);
      // Its first look sees the job running.
      await sleepMs(500);
      gate.resolve();
      await expect(waiting).rejects.toThrow(`job ${job.id} does not exist (it was running when last seen and was deleted since: by deleteJob or deleteJobs, by retention or by hand, or, had it succeeded, by a worker with retention.succeededMs 0, which deletes a job as it succeeds)`);
    } finally {
      await worker.stop();
    }
  });
});

describe('outcome statements and the planner', () => {
  it.each([false, true])('an outcome batch reads its jobs by primary key even when the statistics say no job runs (custom plans, 20,000 jobs; deleting succeeded jobs: %s)', async (deleteSucceeded) => {
    const noop = defineTask({ name: 'plan-noop', queue: 'plans', schema: z.object({ i: z.number() }), handler: () => null });
    const pgq = await ctx.migrated({ tasks: [noop] });
    const schema = `"${ctx.schema}"`;
    await ctx.admin.query(`DELETE FROM ${schema}.jobs WHERE task = 'plan-noop'`);
    await ctx.admin.query(
      `INSERT INTO ${schema}.jobs (task, queue, payload) SELECT 'plan-noop', 'plans', jsonb_build_object('i', g) FROM generate_series(1, 20000) AS g`,
    );
    // Statistics taken while nothing ran: "state = 'running'" looks like one row.
    await ctx.admin.query(`ANALYZE ${schema}.jobs`);
    const statements = createStatements(ctx.schema);
    const client = await ctx.admin.connect();
    try {
      await statements.registerWorker(fromPg(client), { workerId: 'planner', hostname: 'h', pid: 1, queues: ['plans'], concurrency: 500, rescueAfterMs: 60_000 });
      const claimed = await statements.claimJobs(fromPg(client), { queues: ['plans'], tasks: ['plan-noop'], limit: 500, workerId: 'planner' });
      expect(claimed).toHaveLength(500);
      const ids = claimed.map((r) => String(r.id));
      let text = '';
      const capture = { query: async (s: { text: string }) => ((text = s.text), [{ skipped: [], cancelled: [] }]) } as unknown as Queryable;
      await statements.completeJobs(capture, { ids: [], attempts: [], results: [], metas: [], deleteSucceeded });
      // What the first executions on a connection get: a plan made for these 500 values.
      await client.query('SET plan_cache_mode = force_custom_plan');
      await client.query(`PREPARE complete_plan AS ${text}`);
      const args = `'{${ids.join(',')}}'::bigint[], '{${claimed.map((r) => r.attempts).join(',')}}'::int[], '[${ids.map(() => '1').join(',')}]', NULL`;
      const { rows } = await client.query<{ 'QUERY PLAN': string }>(`EXPLAIN EXECUTE complete_plan(${args})`);
      const plan = rows.map((r) => r['QUERY PLAN']).join('\n');
      if (process.env.SHOW_PLAN) console.log(plan);
      expect(plan).not.toMatch(/Seq Scan on jobs/);
      expect(plan).not.toMatch(/Index (Only )?Scan using jobs_pkey on jobs j\s*$/m);
      expect(plan).toMatch(/Index Scan using jobs_pkey on jobs j/);
      expect(plan, plan).toMatch(/Index Cond: \(id = /);
      // And it does its work: every one of them succeeded (or, deleting, is gone).
      const done = await client.query<{ skipped: number[] }>(`EXECUTE complete_plan(${args})`);
      expect(done.rows[0]!.skipped).toEqual([]);
      const { rows: states } = await ctx.admin.query(`SELECT state, count(*)::int AS n FROM ${schema}.jobs WHERE id = ANY($1::bigint[]) GROUP BY state`, [ids]);
      expect(states).toEqual(deleteSucceeded ? [] : [{ state: 'succeeded', n: 500 }]);
    } finally {
      // Not DEALLOCATE ALL: the pool's connection keeps pg's own prepared statements, which the next test uses.
      await client.query('DEALLOCATE complete_plan').catch(() => undefined);
      await client.query('RESET plan_cache_mode').catch(() => undefined);
      await client.query(`DELETE FROM ${schema}.workers WHERE id = 'planner'`).catch(() => undefined);
      client.release();
    }
  });

  it('a batch of outcomes with no workflow job does not call workflow_lock_dependents; one with a workflow job does', async () => {
    const plain = defineTask({
      name: 'lock-plain',
      queue: 'lock-calls',
      schema: z.object({ i: z.number() }),
      maxAttempts: 1,
      handler: ({ i }) => {
        if (i % 5 === 0) throw new PermanentError(`refused ${i}`);
        return i;
      },
    });
    const pgq = await ctx.migrated({ tasks: [plain] });
    const schema = `"${ctx.schema}"`;
    // Count the statements' calls (not the workflow trigger's, which calls it for its own row):
    // the function is renamed and a counting wrapper takes its name.
    await ctx.admin.query(`CREATE TABLE ${schema}.lock_calls (at timestamptz DEFAULT now())`);
    await ctx.admin.query(`ALTER FUNCTION ${schema}.workflow_lock_dependents(bigint[], bigint[]) RENAME TO workflow_lock_dependents_counted`);
    await ctx.admin.query(`
      CREATE FUNCTION ${schema}.workflow_lock_dependents(succeeded bigint[], failed bigint[]) RETURNS integer LANGUAGE sql AS $$
        INSERT INTO ${schema}.lock_calls SELECT now() WHERE pg_trigger_depth() = 0;
        SELECT ${schema}.workflow_lock_dependents_counted(succeeded, failed);
      $$`);
    const calls = async (): Promise<number> => (await ctx.admin.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${schema}.lock_calls`)).rows[0]!.n;
    const worker = pgq.worker({ concurrency: 10, queues: ['lock-calls'] });
    try {
      await worker.start();
      const jobs = await pgq.enqueueMany(plain, Array.from({ length: 50 }, (_, i) => ({ i })));
      await until(async () => (await ctx.admin.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM ${schema}.jobs WHERE id = ANY($1::bigint[]) AND finished_at IS NOT NULL`, [jobs.map((j) => j.id)],
      )).rows[0]!.n === 50);
      const { rows } = await ctx.admin.query(`SELECT state, count(*)::int AS n FROM ${schema}.jobs WHERE id = ANY($1::bigint[]) GROUP BY state ORDER BY state`, [jobs.map((j) => j.id)]);
      expect(rows).toEqual([{ state: 'failed', n: 10 }, { state: 'succeeded', n: 40 }]);
      expect(await calls()).toBe(0);
      // A workflow's parent settling: its dependents are locked first.
      const wf = await pgq.enqueueWorkflow(chain(step(plain, { i: 1 }), step(plain, { i: 2 })));
      const done = await pgq.waitForWorkflow(wf, { timeoutMs: 10_000 });
      expect(done.state).toBe('succeeded');
      expect(await calls()).toBeGreaterThan(0);
    } finally {
      await worker.stop();
      await ctx.admin.query(`DROP FUNCTION ${schema}.workflow_lock_dependents(bigint[], bigint[])`);
      await ctx.admin.query(`ALTER FUNCTION ${schema}.workflow_lock_dependents_counted(bigint[], bigint[]) RENAME TO workflow_lock_dependents`);
    }
  });
});

describe('a worker id held by a lease that still runs', () => {
  it("a registration again after a lost lease takes the next id at once, never waiting out the live holder of the one it tried", async () => {
    const noop = defineTask({ name: 'fx-noop', queue: 'fx', schema: z.object({}), handler: () => null });
    await ctx.migrated({ tasks: [noop] });
    const lines: Line[] = [];
    const one = ctx.pgq({ tasks: [noop] });
    const two = ctx.pgq({ tasks: [noop], logger: captureLogger(lines) });
    const options = { id: 'fx', queues: ['fx'], heartbeatMs: 500, rescueAfterMs: 20_000, leader: false };
    const w1 = one.worker(options);
    await w1.start();
    const w2 = two.worker(options);
    try {
      // W1's row taken away: it registers again as fx~2; then fx is free for W2.
      await ctx.admin.query(`DELETE FROM "${ctx.schema}".workers WHERE id = 'fx'`);
      await until(() => w1.id === 'fx~2');
      await w2.start();
      expect(w2.id).toBe('fx');
      // W2's row taken away: fx~2 is W1's, live, so W2 goes on to fx~3 (it waited out W1's 20 s lease before).
      await ctx.admin.query(`DELETE FROM "${ctx.schema}".workers WHERE id = 'fx'`);
      await until(() => w2.id === 'fx~3', { timeoutMs: 10_000 });
      expect(lines.filter((l) => /waiting for it to run out/.test(l.msg ?? ''))).toEqual([]);
    } finally {
      await w2.stop();
      await w1.stop();
    }
  });

  it('start() waits for the lease to run out; stop() meanwhile ends that wait, and the start fails as stopped, not as an id taken', async () => {
    const noop = defineTask({ name: 'held-id', queue: 'held-id', schema: z.object({}), handler: () => null });
    const pgq = await ctx.migrated({ tasks: [noop] });
    // The row a worker killed a moment ago leaves: its lease runs 20 s more.
    await ctx.admin.query(
      `INSERT INTO "${ctx.schema}".workers (id, hostname, pid, queues, concurrency, rescue_after_ms, lease_expires_at) VALUES ('held', 'gone', 1, '{held-id}', 1, 30000, now() + interval '20 seconds')`,
    );
    const worker = pgq.worker({ id: 'held', queues: ['held-id'], leader: false });
    try {
      const starting = worker.start();
      starting.catch(() => undefined);
      await sleepMs(300);
      await worker.stop();
      await expect(starting).rejects.toMatchObject({ code: 'PGQ_SHUTDOWN', message: 'the worker was stopped while its start waited for the lease of its id to run out' });
      expect((await ctx.admin.query(`SELECT hostname FROM "${ctx.schema}".workers WHERE id = 'held'`)).rows).toEqual([{ hostname: 'gone' }]);
    } finally {
      await ctx.admin.query(`DELETE FROM "${ctx.schema}".workers WHERE id = 'held'`);
    }
  });
});

describe('stop() with a handler still running', () => {
  it('stop({ graceMs: Infinity }) waits for the handler however long, never signalling it (a timer that long fired at once)', async () => {
    const started = deferred();
    let signalled = false;
    const slow = defineTask({
      name: 'slow-to-stop',
      queue: 'slow-to-stop',
      schema: z.object({}),
      handler: async (_p, c) => {
        started.resolve();
        c.signal.addEventListener('abort', () => (signalled = true));
        await sleepMs(400);
        return 'finished';
      },
    });
    const pgq = await ctx.migrated({ tasks: [slow] });
    const worker = pgq.worker({ queues: ['slow-to-stop'] });
    await worker.start();
    const job = await pgq.enqueue(slow, {});
    await started.promise;
    await worker.stop({ graceMs: Infinity });
    expect(signalled).toBe(false);
    expect(await pgq.getJob(job.id)).toMatchObject({ state: 'succeeded', result: 'finished' });
  });

  it('gives back a job whose handler stops on its signal, and logs its id (it left no trace in the log)', async () => {
    const started = deferred();
    const waits = defineTask({
      name: 'waits',
      queue: 'waits',
      schema: z.object({}),
      handler: async (_p, c) => {
        started.resolve();
        await new Promise((_resolve, reject) => c.signal.addEventListener('abort', () => reject(c.signal.reason), { once: true }));
      },
    });
    const lines: Line[] = [];
    const pgq = await ctx.migrated({ tasks: [waits], logger: captureLogger(lines) });
    const worker = pgq.worker({ queues: ['waits'], pollIntervalMs: 50, leader: false });
    await worker.start();
    const job = await pgq.enqueue(waits, {});
    await started.promise;
    await worker.stop({ graceMs: 100 });
    expect(await pgq.getJob(job.id)).toMatchObject({ state: 'available', attempts: 1, maxAttempts: job.maxAttempts + 1 });
    expect(lines.filter((l) => l.level === 'info' && l.obj.jobId === job.id).map((l) => l.msg)).toContainEqual(
      `pgq gave back job ${job.id} (waits), interrupted by the worker's stop: it runs again, this attempt not used up`,
    );
  });
});

describe('outcomes written side by side', () => {
  it("a failure is settled as its statement commits, not held for a success in the same batch that another transaction's row lock holds up", async () => {
    const lines: Line[] = [];
    const gate = deferred<void>();
    const starts: string[] = [];
    const task = defineTask({
      name: 'hol',
      schema: z.object({ mode: z.enum(['fail', 'ok']) }),
      maxAttempts: 3,
      backoff: { baseMs: 1, maxMs: 2 },
      async handler(p, c) {
        starts.push(`${c.job.id}:${c.attempt}`);
        if (c.attempt === 1) await gate.promise;
        if (p.mode === 'fail' && c.attempt === 1) throw new Error('boom');
        return 'ok';
      },
    });
    const pgq = await ctx.migrated({ tasks: [task], logger: captureLogger(lines) });
    const worker = pgq.worker({ concurrency: 4, pollIntervalMs: 20 });
    const failures: string[] = [];
    worker.on('job:failure', (job) => failures.push(`${job.id}:${job.attempts}`));
    await worker.start();
    const a = await pgq.enqueue(task, { mode: 'fail' });
    const b = await pgq.enqueue(task, { mode: 'ok' });
    await until(() => (starts.includes(`${a.id}:1`) && starts.includes(`${b.id}:1`)) || null);
    const locker = await ctx.admin.connect();
    try {
      await locker.query('BEGIN');
      await locker.query(`SELECT 1 FROM "${ctx.schema}".jobs WHERE id = $1 FOR UPDATE`, [b.id]);
      gate.resolve(); // both settle in one turn: one batch, A's failure beside B's success
      // While B's row stays locked, A's failure is settled and its second attempt runs.
      await until(() => (failures.includes(`${a.id}:1`) && starts.includes(`${a.id}:2`)) || null, { timeoutMs: 10_000 });
      expect((await pgq.getJob(b.id))!.state).toBe('running');
      await locker.query('COMMIT');
    } finally {
      locker.release();
    }
    expect(await pgq.waitForJob(a.id, { timeoutMs: 10_000 })).toMatchObject({ state: 'succeeded', attempts: 2 });
    expect(await pgq.waitForJob(b.id, { timeoutMs: 10_000 })).toMatchObject({ state: 'succeeded', attempts: 1 });
    expect(lines.filter((l) => /claimed again while its attempt/.test(l.msg ?? ''))).toEqual([]);
    await worker.stop();
  });
});

describe('a stop whose last outcomes cannot all be written', () => {
  it('names only the jobs whose outcomes are not written (it named a failure its own statement had written beside a locked success)', async () => {
    const lines: Line[] = [];
    const gate = deferred<void>();
    const starts: string[] = [];
    const task = defineTask({
      name: 'stuck-write',
      schema: z.object({ fail: z.boolean() }),
      maxAttempts: 1,
      async handler(p, c) {
        starts.push(c.job.id);
        await gate.promise;
        if (p.fail) throw new Error('boom');
        return 'ok';
      },
    });
    const pgq = await ctx.migrated({ tasks: [task], logger: captureLogger(lines) });
    const worker = pgq.worker({ concurrency: 2, pollIntervalMs: 20, heartbeatMs: 500, rescueAfterMs: 1_000 });
    await worker.start();
    const [failing, locked] = await pgq.enqueueMany(task, [{ fail: true }, { fail: false }]);
    await until(() => starts.length === 2 || null);
    const locker = await ctx.admin.connect();
    try {
      await locker.query('BEGIN');
      await locker.query(`SELECT 1 FROM "${ctx.schema}".jobs WHERE id = $1 FOR UPDATE`, [locked!.id]);
      gate.resolve();
      await until(async () => (await pgq.getJob(failing!.id))!.state === 'failed' || null, { timeoutMs: 10_000 });
      await worker.stop(); // its write limit (5 s) runs out on the locked success
    } finally {
      await locker.query('ROLLBACK');
      locker.release();
    }
    const warned = lines.find((l) => /could not record the last outcomes/.test(l.msg ?? ''));
    expect(warned?.obj.jobs).toEqual([locked!.id]);
  });
});

describe('a loop:stall listener that throws', () => {
  it('is logged, and the worker goes on (it ended the process)', async () => {
    const lines: Line[] = [];
    const block = defineTask({
      name: 'block-loop',
      schema: z.object({ ms: z.number() }),
      handler: ({ ms }) => {
        const until = Date.now() + ms;
        while (Date.now() < until) {
          // computing on the event loop
        }
        return 'done';
      },
    });
    const pgq = await ctx.migrated({ tasks: [block], logger: captureLogger(lines) });
    const worker = pgq.worker({ pollIntervalMs: 20, stallWarnMs: 200 });
    const stalls: number[] = [];
    worker.on('loop:stall', (lagMs) => {
      stalls.push(lagMs);
      throw new Error('listener boom');
    });
    await worker.start();
    const job = await pgq.enqueue(block, { ms: 800 });
    expect(await pgq.waitForJob(job.id, { timeoutMs: 20_000 })).toMatchObject({ state: 'succeeded' });
    await until(() => stalls.length > 0 || null, { timeoutMs: 10_000 });
    await until(() => lines.some((l) => /a pgq loop:stall listener threw: listener boom/.test(l.msg ?? '')) || null);
    const after = await pgq.enqueue(block, { ms: 0 });
    expect(await pgq.waitForJob(after.id, { timeoutMs: 20_000 })).toMatchObject({ state: 'succeeded' });
    await worker.stop();
  });
});

describe('a stop whose deregistration loses its connection', () => {
  it('removes the worker row on another connection (it stayed, listed as live until its lease ran out)', async () => {
    const lines: Line[] = [];
    const idle = defineTask({ name: 'idle', schema: z.object({}), handler: () => null });
    const pgq = await ctx.migrated({ tasks: [idle], logger: captureLogger(lines) });
    const worker = pgq.worker({ leader: false, pollIntervalMs: 50 });
    await worker.start();
    const locker = await ctx.admin.connect();
    try {
      // The DELETE waits behind this lock, where its backend is terminated.
      await locker.query('BEGIN');
      await locker.query(`SELECT 1 FROM "${ctx.schema}".workers WHERE id = $1 FOR UPDATE`, [worker.id]);
      const stopping = worker.stop();
      const pid = await until(async () => {
        const { rows } = await ctx.admin.query<{ pid: number }>(
          `SELECT pid FROM pg_stat_activity WHERE query LIKE 'DELETE FROM "${ctx.schema}".workers%' AND wait_event_type = 'Lock'`,
        );
        return rows[0]?.pid ?? null;
      });
      await ctx.admin.query('SELECT pg_terminate_backend($1)', [pid]);
      await locker.query('ROLLBACK');
      await stopping;
    } finally {
      locker.release();
    }
    const { rowCount } = await ctx.admin.query(`SELECT 1 FROM "${ctx.schema}".workers WHERE id = $1`, [worker.id]);
    expect(rowCount).toBe(0);
    expect(lines.filter((l) => /could not deregister/.test(l.msg ?? ''))).toEqual([]);
  });
});
