/**
 * Sandboxed handlers in real worker threads and child processes: results,
 * errors, logs, the abort forwarded in, hard time limits, crash isolation,
 * I/O jobs flowing beside a CPU-bound one, and shutdown.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { defineTask, sandboxed, ValidationError, type JobRecord, type Logger, type SandboxKind } from '../src/index.js';
import type echoHandler from './fixtures/sandbox/handlers.js';
import type { lastWords, misbehave, unstorableOnStop } from './fixtures/sandbox/handlers.js';
import { misbehaveSchema } from './fixtures/sandbox/schemas.js';
import { inheritedExecArgv } from '../src/sandbox/process-pool.js';
import { ThreadPool } from '../src/sandbox/thread-pool.js';
import { importModule } from '../src/core/import-module.js';
import { fileURLToPath } from 'node:url';
import { SandboxStopped } from '../src/sandbox/protocol.js';
import { computeTask, echoTask, misbehaveTask, progressTask, strayRetryTask, strayTask } from './fixtures/sandbox/tasks.js';
import { deferred, until, useTestSchema } from './support/harness.js';
import { captureLogger, type Line } from './support/logger.js';

const ctx = useTestSchema('sandbox');

const io = defineTask({
  name: 'io',
  schema: z.object({ n: z.number() }),
  handler: async ({ n }) => {
    await new Promise((resolve) => setTimeout(resolve, 5));
    return n;
  },
});

describe.each<SandboxKind>(['thread', 'process'])('sandboxed %s', (kind) => {
  it('runs the handler away from the worker, with its result, errors and log lines', async () => {
    const lines: Line[] = [];
    const echo = echoTask(kind);
    const pgq = await ctx.migrated({ tasks: [echo], logger: captureLogger(lines) });
    const worker = pgq.worker({ concurrency: 4, pollIntervalMs: 50, sandbox: { threads: 1, processes: 1 } });
    await worker.start();
    const [ok, plain, permanent] = await pgq.enqueueMany(echo, [{ text: 'hi' }, { text: 'a', fail: 'plain' }, { text: 'b', fail: 'permanent' }]);
    const done = await pgq.waitForJob(ok!.id, { timeoutMs: 30_000 });
    expect(done.state).toBe('succeeded');
    const result = done.result as { text: string; pid: number; threadId: number; jobId: string; attempt: number; at: string };
    expect(result).toMatchObject({ text: 'HI', jobId: ok!.id, attempt: 1, at: '1970-01-01T00:00:00.000Z' });
    if (kind === 'thread') expect([result.pid, result.threadId === 0]).toEqual([process.pid, false]);
    else expect(result.pid).not.toBe(process.pid);

    const failed = await pgq.waitForJob(plain!.id, { timeoutMs: 30_000 });
    expect([failed.state, failed.errors[0]?.message]).toEqual(['failed', 'plain failure of a']);
    expect(failed.errors[0]?.stack).toContain('handlers.ts');
    const dead = await pgq.waitForJob(permanent!.id, { timeoutMs: 30_000 });
    expect([dead.state, dead.errors[0]?.message]).toEqual(['failed', 'permanent failure of b']);
    await worker.stop();
  });

  it('keeps the log line and progress report a handler makes just before it returns (a thread\'s were lost when its reply came first)', async () => {
    const lines: Line[] = [];
    const last = defineTask({
      name: `last-words-${kind}`,
      schema: z.object({ n: z.number() }),
      sandbox: sandboxed<typeof lastWords>({ module: new URL('./fixtures/sandbox/handlers.js', import.meta.url), kind, export: 'lastWords' }),
    });
    const pgq = await ctx.migrated({ tasks: [last], logger: captureLogger(lines) });
    const worker = pgq.worker({ concurrency: 2, pollIntervalMs: 50, sandbox: { threads: 2, processes: 2 } });
    await worker.start();
    const jobs = await pgq.enqueueMany(last, Array.from({ length: 20 }, (_, n) => ({ n })));
    const progress: unknown[] = [];
    for (const job of jobs) progress.push((await pgq.waitForJob(job.id, { timeoutMs: 30_000 })).progress);
    await worker.stop();
    expect(progress).toEqual(Array.from({ length: 20 }, (_, n) => ({ n })));
    expect(lines.filter((l) => l.msg === 'last words').map((l) => l.obj.n).sort((a, b) => Number(a) - Number(b))).toEqual(Array.from({ length: 20 }, (_, n) => n));
  });

  /** Runs one job of a task whose module (`fixture`) throws at its first load only: the finished job. */
  const afterFlakyLoad = async (name: string, fixture: string): Promise<JobRecord> => {
    process.env.PGQ_TEST_FLAKY_FILE = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'pgq-flaky-')), 'loads');
    const flaky = defineTask({
      name: `${name}-${kind}`,
      schema: z.object({}),
      maxAttempts: 3,
      backoff: { baseMs: 10, maxMs: 20 },
      sandbox: { module: new URL(`./fixtures/sandbox/${fixture}`, import.meta.url), kind },
    });
    const pgq = await ctx.migrated({ tasks: [flaky] });
    const worker = pgq.worker({ concurrency: 1, pollIntervalMs: 50, sandbox: { threads: 1, processes: 1 } });
    await worker.start();
    try {
      return await pgq.waitForJob((await pgq.enqueue(flaky, {})).id, { timeoutMs: 30_000 });
    } finally {
      await worker.stop();
      delete process.env.PGQ_TEST_FLAKY_FILE;
    }
  };

  it('loads a module again on the next attempt after it failed to load (it failed every attempt of that sandbox for good)', async () => {
    const done = await afterFlakyLoad('flaky-load', 'flaky-load.mjs');
    expect([done.state, done.attempts, done.errors[0]?.message]).toEqual(['succeeded', 2, expect.stringContaining('transient failure at load 1')]);
    expect(done.result).toEqual({ loads: 2 });
  });

  it.runIf(kind === 'process')('replaces a process whose handler module failed to load in a module it imports (that failure stays in its module map)', async () => {
    const done = await afterFlakyLoad('flaky-dependency', 'flaky-dependency.mjs');
    expect([done.state, done.attempts, done.errors[0]?.message]).toEqual(['succeeded', 2, expect.stringContaining('transient failure at load 1')]);
    expect(done.result).toEqual({ loads: 2 });
  });

  it('fails for good a handler that returns an unstorable result after a stop signalled it, as on the main thread (it was given back to run again)', async () => {
    const lines: Line[] = [];
    const unstorable = defineTask({
      name: `unstorable-on-stop-${kind}`,
      schema: z.object({}),
      sandbox: sandboxed<typeof unstorableOnStop>({ module: new URL('./fixtures/sandbox/handlers.js', import.meta.url), kind, export: 'unstorableOnStop' }),
    });
    const pgq = await ctx.migrated({ tasks: [unstorable], logger: captureLogger(lines) });
    const worker = pgq.worker({ concurrency: 1, pollIntervalMs: 50, sandbox: { threads: 1, processes: 1 } });
    await worker.start();
    const job = await pgq.enqueue(unstorable, {});
    await until(() => lines.some((l) => l.msg === 'waiting for the stop') || null, { timeoutMs: 30_000 });
    await worker.stop({ graceMs: 100 });
    const after = (await pgq.getJob(job.id))!;
    expect([after.state, after.attempts, after.errors.at(-1)?.message]).toEqual(['failed', 1, expect.stringMatching(/the handler succeeded, but its result cannot be stored/)]);
  });

  it('runs a handler module compiled to CommonJS (a .ts file in a package without "type": "module")', async () => {
    const double = defineTask({
      name: `cjs-${kind}`,
      schema: z.object({ n: z.number() }),
      maxAttempts: 1,
      sandbox: { module: new URL('./fixtures/commonjs/handler.ts', import.meta.url), kind },
    });
    const pgq = await ctx.migrated({ tasks: [double] });
    const worker = pgq.worker({ concurrency: 1, sandbox: { threads: 1, processes: 1 } });
    await worker.start();
    try {
      const job = await pgq.enqueue(double, { n: 21 });
      const done = await pgq.waitForJob(job.id, { timeoutMs: 30_000 });
      expect([done.state, done.result, done.errors[0]?.message]).toEqual(['succeeded', 42, undefined]);
    } finally {
      await worker.stop();
    }
  });

  it('forwards the abort into the handler: one that stops on its signal is not terminated', async () => {
    const lines: Line[] = [];
    const started = deferred();
    const sawAbort = deferred<Line>();
    const task = misbehaveTask('forward', kind);
    const logger = captureLogger(lines, (line) => {
      if (line.msg === 'misbehave started') started.resolve();
      if (line.msg === 'saw the abort') sawAbort.resolve(line);
    });
    const pgq = await ctx.migrated({ tasks: [task], logger });
    const worker = pgq.worker({ pollIntervalMs: 50, sandbox: { terminateGraceMs: 60_000 } });
    await worker.start();
    const job = await pgq.enqueue(task, { firstAttempt: 'wait-for-abort' });
    await started.promise;
    await pgq.cancelJob(job.id);
    const line = await sawAbort.promise;
    expect(line.obj).toMatchObject({ reason: 'PGQ_CANCELLED', jobId: job.id, attempt: 1 });
    expect((await pgq.waitForJob(job.id, { timeoutMs: 30_000 })).state).toBe('cancelled');
    await worker.stop();
  });

  it('saves ctx.progress reports made inside the sandbox; a bad value throws there', async () => {
    const task = progressTask(kind);
    const pgq = await ctx.migrated({ tasks: [task] });
    const worker = pgq.worker({ pollIntervalMs: 50, sandbox: { threads: 1, processes: 1 } });
    await worker.start();
    const [good, bad] = await pgq.enqueueMany(task, [{ steps: 3 }, { steps: 1, bad: true }]);
    const done = await pgq.waitForJob(good!.id, { timeoutMs: 30_000 });
    expect([done.state, done.result, done.progress]).toEqual(['succeeded', { steps: 3, badError: null }, { done: 3, of: 3 }]);
    const refused = await pgq.waitForJob(bad!.id, { timeoutMs: 30_000 });
    expect(refused.result).toEqual({ steps: 1, badError: 'ValidationError: progress: a number must be from 0 to 100, got 101' });
    expect(refused.progress).toEqual({ done: 1, of: 1 });
    await worker.stop();
  });

  it("counts a sandboxed job's time limit from its start in the sandbox, not while it waits for one", async () => {
    // One thread or process, two jobs of 3 s each with a 5 s limit: the second waits about 3 s
    // for the sandbox and then runs 3 s, over its limit if the wait counted.
    const task = computeTask(kind, 5_000);
    const pgq = await ctx.migrated({ tasks: [task] });
    const worker = pgq.worker({ concurrency: 2, pollIntervalMs: 50, sandbox: { threads: 1, processes: 1 } });
    await worker.start();
    const jobs = await pgq.enqueueMany(task, [{ ms: 3_000 }, { ms: 3_000 }]);
    const done = await Promise.all(jobs.map((job) => pgq.waitForJob(job.id, { timeoutMs: 60_000 })));
    expect(done.map((job) => [job.state, job.errors.length])).toEqual([['succeeded', 0], ['succeeded', 0]]);
    const [first, second] = done.map((job) => job.result as { pid: number; threadId: number });
    expect(second).toMatchObject({ pid: first!.pid, threadId: first!.threadId });
    await worker.stop();
  });

  it('terminates a busy loop past its timeout; the next attempt runs', async () => {
    // The timeout counts from the handler's start in its sandbox, loading its module in a fresh thread or process included: leave room for it.
    const task = misbehaveTask('spin', kind, 10_000);
    const pgq = await ctx.migrated({ tasks: [task] });
    const worker = pgq.worker({ pollIntervalMs: 50, sandbox: { threads: 1, processes: 1, terminateGraceMs: 200 } });
    await worker.start();
    const job = await pgq.enqueue(task, { firstAttempt: 'spin' });
    const done = await pgq.waitForJob(job.id, { timeoutMs: 60_000 });
    expect([done.state, done.attempts, done.errors.length]).toEqual(['succeeded', 2, 1]);
    expect(done.errors[0]?.message).toBe(
      `job timed out after 10000 ms; the handler did not stop within 200 ms, so its ${kind} was terminated`,
    );
    await worker.stop();
  });

  it('runs a job that waited for a sandbox after the ones before it ended their sandboxes (process.exit, terminated busy loops)', async () => {
    const module = new URL('./fixtures/sandbox/handlers.js', import.meta.url);
    const task = defineTask({
      name: `ends-sandbox-${kind}`,
      schema: misbehaveSchema,
      maxAttempts: 1,
      timeoutMs: 3_000,
      sandbox: sandboxed<typeof misbehave>({ module, kind, export: 'misbehave' }),
    });
    const pgq = await ctx.migrated({ tasks: [task] });
    // More slots than sandboxes: the last job waits for one, and no other job comes after it.
    const worker = pgq.worker({ concurrency: 4, pollIntervalMs: 50, sandbox: { threads: 2, processes: 2, terminateGraceMs: 100 } });
    await worker.start();
    try {
      for (const ending of ['exit', 'spin'] as const) {
        const [first, second, last] = await pgq.enqueueMany(task, [{ firstAttempt: ending }, { firstAttempt: ending }, { firstAttempt: 'ok' }]);
        const done = await pgq.waitForJob(last!.id, { timeoutMs: 30_000 });
        expect(done.state, ending).toBe('succeeded');
        for (const job of [first!, second!]) expect((await pgq.waitForJob(job.id, { timeoutMs: 30_000 })).state).toBe('failed');
      }
    } finally {
      await worker.stop();
    }
  });

  // A process is killed (SIGKILL) at once; a thread ends only once its native call returns.
  it.runIf(kind === 'thread')('a terminated attempt ends only once its thread has: one blocked in a native call is not retried beside it', async () => {
    // Its time limit counts from the sandbox's start, loading the module in a fresh thread included: room for that, and less than the 4 s.
    const task = misbehaveTask('native', kind, 2_500);
    const lines: Line[] = [];
    const pgq = await ctx.migrated({ tasks: [task], logger: captureLogger(lines) });
    const worker = pgq.worker({ pollIntervalMs: 50, sandbox: { threads: 1, processes: 1, terminateGraceMs: 100 } });
    await worker.start();
    try {
      const job = await pgq.enqueue(task, { firstAttempt: 'native-block' });
      const done = await pgq.waitForJob(job.id, { timeoutMs: 60_000 });
      expect([done.state, done.attempts], JSON.stringify(done.errors)).toEqual(['succeeded', 2]);
      const starts = lines.filter((l) => l.msg === 'misbehave started').map((l) => l.obj as { attempt: number; at: number });
      expect(starts.map((s) => s.attempt)).toEqual([1, 2]);
      // The first attempt's thread was in `sleep 4` for 4 s at least: the second started after it had ended.
      expect(starts[1]!.at - starts[0]!.at).toBeGreaterThanOrEqual(4_000);
    } finally {
      await worker.stop();
    }
  });

  it('a result that cannot be stored, or a module without the handler named, fails the job for good (not once per attempt)', async () => {
    const task = misbehaveTask('unstorable', kind);
    const noExport = defineTask({
      name: `no-export-${kind}`,
      schema: z.object({ text: z.string() }),
      maxAttempts: 3,
      sandbox: sandboxed<typeof echoHandler>({ module: new URL('./fixtures/sandbox/handlers.js', import.meta.url), kind, export: 'nope' }),
    });
    const pgq = await ctx.migrated({ tasks: [task, noExport] });
    const worker = pgq.worker({ pollIntervalMs: 50, sandbox: { threads: 1, processes: 1 } });
    await worker.start();
    try {
      const unstorable = await pgq.waitForJob((await pgq.enqueue(task, { firstAttempt: 'unstorable' })).id, { timeoutMs: 30_000 });
      expect([unstorable.state, unstorable.attempts]).toEqual(['failed', 1]);
      expect(unstorable.errors[0]!.message).toMatch(/^the handler succeeded, but its result cannot be stored: result\.n: is a BigInt/);
      const missing = await pgq.waitForJob((await pgq.enqueue(noExport, { text: 'x' })).id, { timeoutMs: 30_000 });
      expect([missing.state, missing.attempts]).toEqual(['failed', 1]);
      expect(missing.errors[0]!.message).toMatch(/has no handler: it needs an export named "nope"/);
    } finally {
      await worker.stop();
    }
  });

  it('fails only the attempt whose sandbox exits or runs out of memory; other jobs finish, the worker goes on', async () => {
    const task = misbehaveTask('crash', kind);
    const pgq = await ctx.migrated({ tasks: [task, io] });
    const worker = pgq.worker({
      concurrency: 8,
      pollIntervalMs: 50,
      sandbox: { threads: 2, processes: 2, resourceLimits: { maxOldGenerationSizeMb: 64 } },
    });
    await worker.start();
    const [exits, ooms] = await pgq.enqueueMany(task, [{ firstAttempt: 'exit' }, { firstAttempt: 'oom' }]);
    const ios = await pgq.enqueueMany(io, Array.from({ length: 20 }, (_, n) => ({ n })));
    const exited = await pgq.waitForJob(exits!.id, { timeoutMs: 60_000 });
    const oom = await pgq.waitForJob(ooms!.id, { timeoutMs: 60_000 });
    for (const job of ios) expect((await pgq.waitForJob(job.id, { timeoutMs: 30_000 })).state).toBe('succeeded');
    expect([exited.state, exited.attempts, oom.state, oom.attempts]).toEqual(['succeeded', 2, 'succeeded', 2]);
    if (kind === 'thread') {
      expect(exited.errors[0]?.message).toMatch(/^the sandbox thread running job \d+ exited with code: 1 \(process\.exit\(\) in the handler\?\)$/);
      expect(oom.errors[0]?.message).toMatch(/^the sandbox thread running job \d+ ran out of memory \(.*memory limit.*\)/);
    } else {
      expect(exited.errors[0]?.message).toMatch(/^the sandbox process \d+ running job \d+ exited with code 1 \(process\.exit\(\) in the handler\?\)$/);
      expect(oom.errors[0]?.message).toMatch(/^the sandbox process \d+ running job \d+ was killed by SIGABRT \(out of memory.*heap out of memory/);
    }
    expect(worker.state).toBe('running');
    const after = await pgq.enqueue(task, { firstAttempt: 'ok' });
    expect((await pgq.waitForJob(after.id, { timeoutMs: 30_000 })).state).toBe('succeeded');
    await worker.stop();
  });

  it('a thrown value that cannot cross back as it is (a Symbol for a message) fails that attempt, described; the sandbox goes on', async () => {
    const task = misbehaveTask('odd', kind);
    const pgq = await ctx.migrated({ tasks: [task] });
    const worker = pgq.worker({ concurrency: 1, pollIntervalMs: 50, sandbox: { threads: 1, processes: 1 } });
    await worker.start();
    try {
      const job = await pgq.enqueue(task, { firstAttempt: 'odd-throw' });
      const done = await pgq.waitForJob(job.id, { timeoutMs: 30_000 });
      expect(done).toMatchObject({ state: 'succeeded', attempts: 2 });
      expect(done.errors[0]?.message).toMatch(/^the handler threw a value pgq could not read/);
      const first = await pgq.enqueue(task, { firstAttempt: 'ok' });
      const second = await pgq.enqueue(task, { firstAttempt: 'ok' });
      const [a, b] = [await pgq.waitForJob(first.id, { timeoutMs: 30_000 }), await pgq.waitForJob(second.id, { timeoutMs: 30_000 })];
      // One sandbox, still the same one: it was not killed.
      expect((a.result as { pid: number }).pid).toBe((done.result as { pid: number }).pid);
      expect((b.result as { pid: number }).pid).toBe((done.result as { pid: number }).pid);
    } finally {
      await worker.stop();
    }
  });

  it("a result over the worker's maxPayloadBytes is refused in the sandbox, at that limit (not at a fixed cap of the sandbox's own)", async () => {
    const echo = echoTask(kind);
    // The payload {"text":"x…"} fits in 1,040 bytes; the echo, which adds where it ran, does not.
    const pgq = await ctx.migrated({ tasks: [echo], maxPayloadBytes: 1_040 });
    const worker = pgq.worker({ pollIntervalMs: 50, sandbox: { threads: 1, processes: 1 } });
    await worker.start();
    try {
      const done = await pgq.waitForJob((await pgq.enqueue(echo, { text: 'x'.repeat(1_000) })).id, { timeoutMs: 30_000 });
      expect([done.state, done.attempts]).toEqual(['failed', 1]);
      expect(done.errors[0]!.message).toMatch(/^the handler succeeded, but its result cannot be stored: result: is \d+ bytes of JSON, over the limit of 1040 bytes$/);
      // Refused where it was made, before it was copied out to the worker.
      expect(done.errors[0]!.stack).toContain('sandbox-entry');
    } finally {
      await worker.stop();
    }
  });

  it('a thrown value JSON cannot show, and an Error without name or message, are recorded readably (not [object Object], not empty)', async () => {
    const task = misbehaveTask('opaque', kind);
    const pgq = await ctx.migrated({ tasks: [task] });
    const worker = pgq.worker({ concurrency: 2, pollIntervalMs: 50, sandbox: { threads: 1, processes: 1 } });
    await worker.start();
    try {
      const [cyclic, empty] = await pgq.enqueueMany(task, [{ firstAttempt: 'cyclic-throw' }, { firstAttempt: 'empty-throw' }]);
      const a = await pgq.waitForJob(cyclic!.id, { timeoutMs: 30_000 });
      const b = await pgq.waitForJob(empty!.id, { timeoutMs: 30_000 });
      expect(a.errors[0]?.message).toBe('<ref *1> { status: 500, request: { res: [Circular *1] } }');
      expect(b.errors[0]?.message).toBe('Error with no message and no name');
    } finally {
      await worker.stop();
    }
  });

  it('a payload that cannot be sent into the sandbox (a schema that turns it into a function) fails the job for good, not once per attempt', async () => {
    const task = defineTask({
      name: `uncloneable-${kind}`,
      schema: z.object({ text: z.string() }).transform((p) => ({ ...p, shout: () => p.text.toUpperCase() })) as unknown as z.ZodType<{ text: string }>,
      maxAttempts: 3,
      backoff: { baseMs: 10, maxMs: 20 },
      sandbox: sandboxed<typeof echoHandler>({ module: new URL('./fixtures/sandbox/handlers.js', import.meta.url), kind }),
    });
    const echo = echoTask(kind);
    const pgq = await ctx.migrated({ tasks: [task, echo] });
    const worker = pgq.worker({ concurrency: 1, pollIntervalMs: 50, sandbox: { threads: 1, processes: 1 } });
    await worker.start();
    try {
      const job = await pgq.enqueue(task, { text: 'hi' });
      const done = await pgq.waitForJob(job.id, { timeoutMs: 30_000 });
      expect(done).toMatchObject({ state: 'failed', attempts: 1 });
      expect(done.errors[0]?.message).toMatch(/^the payload of job \d+ cannot be sent into its sandbox .*: .*(could not be cloned|function)/i);
      // The sandbox goes on.
      const next = await pgq.enqueue(echo, { text: 'after' });
      expect((await pgq.waitForJob(next.id, { timeoutMs: 30_000 })).state).toBe('succeeded');
    } finally {
      await worker.stop();
    }
  });

  it('an error a handler leaves behind fails neither the next job nor the sandbox; one thrown while its own attempt runs fails that attempt', async () => {
    const task = strayTask(kind);
    const lines: Line[] = [];
    const pgq = await ctx.migrated({ tasks: [task], logger: captureLogger(lines) });
    const worker = pgq.worker({ concurrency: 1, pollIntervalMs: 50, sandbox: { threads: 1, processes: 1 } });
    await worker.start();
    try {
      type Where = { pid: number; threadId: number; jobId: string };
      // One sandbox, one job at a time: the error each leaves behind lands while the job after it runs there.
      const jobs = await pgq.enqueueMany(task, [{ mode: 'late-throw' }, { mode: 'wait', ms: 1_500 }, { mode: 'late-reject' }, { mode: 'wait', ms: 1_500 }]);
      const [throwing, , rejecting] = jobs;
      const done = await Promise.all(jobs.map((j) => pgq.waitForJob(j.id, { timeoutMs: 30_000 })));
      expect(done.map((j) => [j.state, j.attempts])).toEqual(Array.from({ length: 4 }, () => ['succeeded', 1]));
      const places = done.map((j) => j.result as Where);
      // The same thread or process ran all three: nothing crashed.
      expect(new Set(places.map((p) => `${p.pid}:${p.threadId}`)).size).toBe(1);
      await until(() => lines.filter((l) => /caught an error thrown job \d+'s handler after it ended/.test(l.msg ?? '')).length >= 2, {
        timeoutMs: 10_000,
        what: 'both stray errors to be logged',
      });
      const strays = lines.filter((l) => /caught an error thrown/.test(l.msg ?? ''));
      expect(strays.map((l) => l.obj.leftByJob).sort()).toEqual([throwing!.id, rejecting!.id].sort());
      expect(strays.map((l) => (l.obj.err as { message: string }).message).sort()).toEqual(
        [`promise left by job ${rejecting!.id} rejected`, `timer left by job ${throwing!.id} threw`].sort(),
      );

      // Thrown by a timer of the attempt's own while it runs: that attempt fails with it, and the sandbox goes on.
      const markFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'pgq-stray-')), 'aborted');
      const own = await pgq.enqueue(task, { mode: 'own-throw', markFile });
      const failed = await pgq.waitForJob(own.id, { timeoutMs: 30_000 });
      expect(failed.state).toBe('failed');
      expect(failed.errors[0]!.message).toBe(`own timer of job ${own.id} threw`);
      // Its signal fired with that error, so a handler that watches it stops rather than running on.
      await until(() => fs.existsSync(markFile), { timeoutMs: 5_000, what: "the failed attempt's signal to fire" });
      expect(fs.readFileSync(markFile, 'utf8')).toBe(`own timer of job ${own.id} threw`);
      const after = await pgq.enqueue(task, { mode: 'wait', ms: 0 });
      const next = await pgq.waitForJob(after.id, { timeoutMs: 30_000 });
      expect(next.state).toBe('succeeded');
      expect(`${(next.result as Where).pid}:${(next.result as Where).threadId}`).toBe(`${places[0]!.pid}:${places[0]!.threadId}`);
    } finally {
      await worker.stop();
    }
  });
  /** The ledger's lines as attempts with their start and end (ms since epoch), and where each ran. */
  const readLedger = (file: string) => {
    const attempts = new Map<number, { start?: number; end?: number; where: string }>();
    for (const line of fs.readFileSync(file, 'utf8').trim().split('\n')) {
      const [what, attempt, where, at] = line.split(' ');
      const entry = attempts.get(Number(attempt)) ?? { where: where! };
      entry[what as 'start' | 'end'] = Number(at);
      attempts.set(Number(attempt), entry);
    }
    return attempts;
  };

  it("an error its own code leaves behind fails the attempt, whose retry waits until the handler has settled (one deaf to its signal runs on)", async () => {
    const task = strayRetryTask(kind);
    const pgq = await ctx.migrated({ tasks: [task] });
    const worker = pgq.worker({ concurrency: 2, pollIntervalMs: 50, sandbox: { threads: 2, processes: 2, terminateGraceMs: 30_000 } });
    await worker.start();
    try {
      const ledger = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'pgq-stray-')), 'ledger');
      const job = await pgq.enqueue(task, { mode: 'own-throw-deaf', ms: 1_500, ledger });
      const done = await pgq.waitForJob(job.id, { timeoutMs: 30_000 });
      expect(done).toMatchObject({ state: 'succeeded', attempts: 2 });
      expect(done.errors[0]!.message).toBe(`own timer of job ${job.id} threw`);
      const attempts = readLedger(ledger);
      const [first, second] = [attempts.get(1)!, attempts.get(2)!];
      expect(first.end).toBeDefined();
      // Never twice at once: the retry starts only once the first attempt's handler has ended.
      expect(second.start!).toBeGreaterThanOrEqual(first.end!);
    } finally {
      await worker.stop();
    }
  });

  it("an attempt failed by its own stray error whose handler never settles has its sandbox terminated after terminateGraceMs; then it is retried", async () => {
    const task = strayRetryTask(kind);
    const pgq = await ctx.migrated({ tasks: [task] });
    const worker = pgq.worker({ concurrency: 1, pollIntervalMs: 50, sandbox: { threads: 1, processes: 1, terminateGraceMs: 300 } });
    await worker.start();
    try {
      const ledger = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'pgq-stray-')), 'ledger');
      const job = await pgq.enqueue(task, { mode: 'own-throw-hang', ledger });
      const done = await pgq.waitForJob(job.id, { timeoutMs: 30_000 });
      expect(done).toMatchObject({ state: 'succeeded', attempts: 2 });
      expect(done.errors[0]!.message).toBe(
        `own timer of job ${job.id} threw (the handler did not stop within 300 ms, so its ${kind} was terminated after that error)`,
      );
      const attempts = readLedger(ledger);
      expect(attempts.get(1)!.end).toBeUndefined();
      // The retry ran in another thread or process: the first one's was terminated.
      expect(attempts.get(2)!.where).not.toBe(attempts.get(1)!.where);
    } finally {
      await worker.stop();
    }
  });

  it.runIf(kind === 'process')("a message the handler sends on the process's IPC channel is not taken for its reply", async () => {
    const task = strayRetryTask(kind);
    const pgq = await ctx.migrated({ tasks: [task] });
    const worker = pgq.worker({ concurrency: 1, pollIntervalMs: 50, sandbox: { processes: 1 } });
    await worker.start();
    try {
      const ledger = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'pgq-ipc-')), 'ledger');
      const job = await pgq.enqueue(task, { mode: 'ipc-send', ms: 500, ledger });
      const done = await pgq.waitForJob(job.id, { timeoutMs: 30_000 });
      expect(done).toMatchObject({ state: 'succeeded', attempts: 1, errors: [] });
      expect(readLedger(ledger).get(1)!.end).toBeDefined();
    } finally {
      await worker.stop();
    }
  });
});

describe('a payload that cannot cross into a sandbox', () => {
  it.each<SandboxKind>(['thread', 'process'])('%s: fails only that attempt (a function in the validated payload); the pool goes on', async (kind) => {
    const echoModule = new URL('./fixtures/sandbox/handlers.js', import.meta.url);
    const uncloneable = defineTask({
      name: `uncloneable-${kind}`,
      // The schema's output, which the sandbox gets, holds a function (stored as JSON, it has none).
      schema: z.object({ text: z.string() }).transform((p) => ({ ...p, format: (s: string) => s.toUpperCase() })),
      maxAttempts: 1,
      sandbox: sandboxed<typeof echoHandler>({ module: echoModule, kind }),
    });
    const fine = echoTask(kind);
    const pgq = await ctx.migrated({ tasks: [uncloneable, fine] });
    const worker = pgq.worker({ concurrency: 2, pollIntervalMs: 50, sandbox: { threads: 1, processes: 1 } });
    await worker.start();
    try {
      const bad = await pgq.enqueue(uncloneable, { text: 'x' });
      const failed = await pgq.waitForJob(bad.id, { timeoutMs: 30_000 });
      expect(failed.state).toBe('failed');
      expect(failed.errors[0]!.message).toMatch(/could not be (sent|cloned)|DataCloneError|could not be cloned/i);
      // The one sandbox is free again: the next job runs in it.
      const good = await pgq.enqueue(fine, { text: 'hi' });
      expect(await pgq.waitForJob(good.id, { timeoutMs: 30_000 })).toMatchObject({ state: 'succeeded' });
      expect(worker.state).toBe('running');
    } finally {
      await worker.stop();
    }
  });
});

describe('sandbox beside I/O jobs', () => {
  it('keeps I/O jobs flowing while a sandboxed job computes', async () => {
    const lines: Line[] = [];
    const started = deferred();
    const compute = computeTask('thread');
    const logger = captureLogger(lines, (line) => line.msg === 'compute started' && started.resolve());
    const pgq = await ctx.migrated({ tasks: [compute, io], logger });
    const worker = pgq.worker({ concurrency: 10, pollIntervalMs: 50, sandbox: { threads: 1 } });
    await worker.start();
    // Computes at least 3 s, and then until the test says stop: on the main
    // thread it would hold up the I/O jobs, which would never finish.
    const stopFile = path.join(os.tmpdir(), `pgq-sandbox-stop-${process.pid}-${Date.now()}`);
    const cpu = await pgq.enqueue(compute, { ms: 3_000, stopFile });
    await started.promise;
    const ios = await pgq.enqueueMany(io, Array.from({ length: 30 }, (_, n) => ({ n })));
    const waits: number[] = [];
    for (const job of ios) {
      const done = await pgq.waitForJob(job.id, { timeoutMs: 30_000 });
      expect(done.state).toBe('succeeded');
      waits.push(done.startedAt!.getTime() - done.createdAt.getTime());
    }
    expect((await pgq.getJob(cpu.id))?.state).toBe('running');
    fs.writeFileSync(stopFile, '');
    try {
      const done = await pgq.waitForJob(cpu.id, { timeoutMs: 90_000 });
      expect(done.state).toBe('succeeded');
      expect(done.result).toMatchObject({ stoppedBy: 'done', pid: process.pid });
    } finally {
      fs.rmSync(stopFile, { force: true });
    }
    console.log(`I/O start latency beside a computing sandbox: max ${Math.max(...waits)} ms over ${waits.length} jobs`);
    await worker.stop();
  });
});

describe('sandbox lifecycle', () => {
  it('stop() aborts, then terminates a sandbox that does not stop; no child process outlives the worker', async () => {
    const lines: Line[] = [];
    const started = deferred<Line>();
    const task = misbehaveTask('shutdown', 'process');
    const logger = captureLogger(lines, (line) => line.msg === 'misbehave started' && started.resolve(line));
    const pgq = await ctx.migrated({ tasks: [task], logger });
    const worker = pgq.worker({ pollIntervalMs: 50, shutdownGraceMs: 100, sandbox: { processes: 1, terminateGraceMs: 100 } });
    await worker.start();
    const job = await pgq.enqueue(task, { firstAttempt: 'spin' });
    const pid = (await started.promise).obj.pid as number;
    expect(pid).not.toBe(process.pid);
    await worker.stop();
    expect(() => process.kill(pid, 0)).toThrow(/ESRCH/);
    const after = await pgq.getJob(job.id);
    expect(after?.state).toBe('available');
    expect(after?.errors.at(-1)?.message).toMatch(/worker shut down/);
  });

  it('a thread heap too small to load the handler fails the attempt as out of memory; the worker goes on and stops cleanly', async () => {
    const task = echoTask('thread');
    const pgq = await ctx.migrated({ tasks: [task] });
    // 4 MB, the least accepted: too little to load pgq's thread entry (a smaller heap is refused: on Node.js 24 it ended the process).
    const worker = pgq.worker({ pollIntervalMs: 50, sandbox: { threads: 1, resourceLimits: { maxOldGenerationSizeMb: 4 } } });
    await worker.start();
    try {
      const jobs = await pgq.enqueueMany(task, [{ text: 'a' }, { text: 'b' }]);
      for (const job of jobs) {
        const done = await pgq.waitForJob(job.id, { timeoutMs: 30_000 });
        expect(done.state).toBe('failed');
        expect(done.errors[0]!.message).toMatch(/^the sandbox thread running job \d+ ran out of memory \(.*memory limit.*\); raise the worker's sandbox\.resourceLimits$/);
      }
      expect(worker.state).toBe('running');
    } finally {
      await worker.stop();
    }
  });

  it('a process heap too small to start in fails the attempt with a hint at the memory limit (it said only "killed by SIGTRAP; its stderr: #")', async () => {
    const task = echoTask('process');
    const pgq = await ctx.migrated({ tasks: [task] });
    const worker = pgq.worker({ pollIntervalMs: 50, sandbox: { processes: 1, resourceLimits: { maxOldGenerationSizeMb: 4 } } });
    await worker.start();
    try {
      const job = await pgq.enqueue(task, { text: 'a' });
      const done = await pgq.waitForJob(job.id, { timeoutMs: 30_000 });
      expect(done.state).toBe('failed');
      expect(done.errors[0]!.message).toMatch(/^the sandbox process \d+ running job \d+ was killed by SIG\w+ \((out of memory|a fatal error of Node\.js or V8, such as a heap too small).*maxOldGenerationSizeMb[,)]/);
      expect(worker.state).toBe('running');
    } finally {
      await worker.stop();
    }
  });

  it('refuses a thread stack past 1,024 MB and a heap under 4 MB, naming the option', () => {
    const pgq = ctx.pgq({ tasks: [echoTask('thread')] });
    expect(() => pgq.worker({ sandbox: { resourceLimits: { stackSizeMb: 100_000 } } })).toThrow(/sandbox\.resourceLimits\.stackSizeMb/);
    expect(() => pgq.worker({ sandbox: { resourceLimits: { maxOldGenerationSizeMb: 2 } } })).toThrow(/sandbox\.resourceLimits\.maxOldGenerationSizeMb: must be at least 4/);
  });

  it('refuses a worker whose sandboxed task names a module that does not exist', async () => {
    const missing = defineTask({
      name: 'missing',
      schema: z.object({}),
      sandbox: { module: new URL('./fixtures/sandbox/nowhere.js', import.meta.url) },
    });
    const pgq = await ctx.migrated({ tasks: [missing] });
    expect(() => pgq.worker()).toThrow(ValidationError);
    expect(() => pgq.worker()).toThrow(/task missing\.sandbox\.module: .*nowhere\.js does not exist/);
  });

  it('a sandbox process inherits the worker\'s Node.js flags but not a debugger port or the code of -e/-p', () => {
    expect(inheritedExecArgv(['--import', 'tsx', '--inspect=9229', '-e', 'console.log(1)', '--max-old-space-size=512', '--eval=x', '-p', '1+1', '--print=y'])).toEqual([
      '--import', 'tsx', '--max-old-space-size=512',
    ]);
  });

  it('rejects bad sandbox options at defineTask', () => {
    const base = { name: 'bad', schema: z.object({}) };
    expect(() => defineTask({ ...base, sandbox: { module: './relative.js' } })).toThrow(/sandbox\.module: must be a file URL or an absolute path/);
    expect(() => defineTask({ ...base, sandbox: { module: new URL('https://example.com/x.js') } })).toThrow(/must be a file: URL/);
    // Refused by defineTask, naming the option (a bare TypeError from pgq.worker() before).
    for (const module of ['file://server/share/x.js', 'file:///tmp/a%2Fb.js', new URL('file://otherhost/x.js')]) {
      expect(() => defineTask({ ...base, sandbox: { module } }), String(module)).toThrow(/sandbox\.module: "file:\/\/.*" names no local file/);
    }
    // @ts-expect-error kind is thread or process
    expect(() => defineTask({ ...base, sandbox: { module: '/x.js', kind: 'fiber' } })).toThrow(/task bad\.sandbox\.kind/);
    // @ts-expect-error a sandboxed task has no handler of its own
    expect(() => defineTask({ ...base, sandbox: { module: '/x.js' }, handler: () => 1 })).toThrow(/give handler or sandbox, not both/);
  });

  it('loads modules as their exports: one compiled to CommonJS unwrapped, an ES module exporting such a module as its default kept whole', async () => {
    const compiled = await importModule(fileURLToPath(new URL('./fixtures/commonjs/handler.ts', import.meta.url)));
    expect(typeof compiled.default).toBe('function');
    const withNaN = await importModule(fileURLToPath(new URL('./fixtures/commonjs/nan.ts', import.meta.url)));
    expect([typeof withNaN.default, withNaN.ratio]).toEqual(['function', NaN]);
    const esm = await importModule(fileURLToPath(new URL('./fixtures/commonjs/reexport.mjs', import.meta.url)));
    expect(Object.keys(esm).sort()).toEqual(['default', 'handler']);
    expect(typeof esm.handler).toBe('function');
  });

  it('a thread attempt terminated before the loop read its start (busy, before and after) still ends only once its thread has exited', async () => {
    const pool = new ThreadPool({ size: 1, resourceLimits: undefined });
    const listener = { started: () => undefined, log: () => undefined, progress: async () => undefined, stray: () => undefined };
    const request = (firstAttempt: string) => ({
      module: new URL('./fixtures/sandbox/handlers.js', import.meta.url).href,
      exportName: 'misbehave',
      payload: { firstAttempt },
      job: { id: '1' } as never,
      attempt: 1,
      maxResultBytes: 1_000_000,
    });
    try {
      await pool.run(request('ok'), listener).done; // a thread up and idle
      const begun = Date.now();
      const attempt = pool.run(request('native-block'), listener);
      await new Promise((resolve) => setImmediate(resolve)); // handed to the thread
      // The loop is busy while the thread says it started and enters its 4 s native call.
      while (Date.now() - begun < 1_000);
      attempt.terminate();
      // And busy again before the message is read (longer than any grace the pool gives it).
      for (let turn = 0; turn < 20; turn += 1) await null;
      const again = Date.now();
      while (Date.now() - again < 300);
      const stopped = (await attempt.done.catch((err: unknown) => err)) as SandboxStopped;
      expect(stopped).toBeInstanceOf(SandboxStopped);
      // Started, and settled only once the thread was out of its call: a give-back at once would let the job run again beside it.
      expect(stopped.started).toBe(true);
      expect(Date.now() - begun).toBeGreaterThanOrEqual(3_500);
    } finally {
      await pool.close();
    }
  });

  it("a sandboxed task's handler called outside a worker runs the module in-process", async () => {
    const echo = echoTask('thread');
    const controller = new AbortController();
    const result = await echo.handler({ text: 'direct' }, {
      job: { id: '1' } as never,
      attempt: 1,
      progress: async () => undefined,
      recordMeta: () => undefined,
      signal: controller.signal,
      logger: captureLogger([]),
      snooze: () => {
        throw new Error('no');
      },
    });
    expect(result).toMatchObject({ text: 'DIRECT', pid: process.pid, jobId: '1' });
  });
});
