/**
 * OpenTelemetry tracing (pgq/otel): the request that enqueues and the worker
 * process that runs the job are linked through the trace context in
 * `jobs.meta`, and a workflow step's process span to the process spans of
 * the parent attempts it depends on. This process records its spans in
 * memory; the worker process prints its spans as JSON lines.
 */
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { ProxyTracerProvider, SpanKind, SpanStatusCode, context, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { PermanentError, chain, chord, defineTask, group, step, stepOutcome } from '../src/index.js';
import { tracing } from '../src/otel.js';
import { createStatements } from '../src/db/statements.js';
import { Scheduler } from '../src/maintenance/scheduler.js';
import { MiddlewareChain } from '../src/middleware.js';
import { deferred, useTestSchema, until } from './support/harness.js';
import { manualClock } from './support/schedules.js';
import { spawnWorker } from './support/processes.js';
import { tracedTask } from './fixtures/traced-tasks.js';

const exporter = new InMemorySpanExporter();
const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
const contextManager = new AsyncLocalStorageContextManager().enable();
context.setGlobalContextManager(contextManager);
trace.setGlobalTracerProvider(provider);
afterAll(async () => {
  await provider.shutdown();
  contextManager.disable();
});

const ctx = useTestSchema('tracing');
const WORKER = path.resolve(import.meta.dirname, 'fixtures/traced-worker.ts');

interface ExportedSpan {
  name: string;
  kind: number;
  traceId: string;
  spanId: string;
  parentSpanId: string | null;
  links: { traceId: string; spanId: string }[];
  status: { code: number; message?: string };
  events: string[];
  attributes: Record<string, unknown>;
}

describe('tracing', () => {
  it('links the request that enqueued to the process spans in another process; a failed attempt is an ERROR with an exception', async () => {
    const pgq = await ctx.migrated({ tasks: [tracedTask], middleware: [await tracing()] });
    const worker = spawnWorker({ PGQ_URL: ctx.url, PGQ_SCHEMA: ctx.schema }, WORKER);
    await worker.waitFor((e) => e.event === 'ready');
    const tracer = trace.getTracer('test');
    const { job, request } = await tracer.startActiveSpan('request', async (span) => {
      const enqueued = await pgq.enqueue(tracedTask, { failFirst: true });
      span.end();
      return { job: enqueued, request: span.spanContext() };
    });

    const send = exporter.getFinishedSpans().find((s) => s.name === 'send traced');
    expect(send).toBeDefined();
    expect(send!.kind).toBe(SpanKind.PRODUCER);
    expect(send!.spanContext().traceId).toBe(request.traceId);
    expect(send!.parentSpanContext?.spanId).toBe(request.spanId);
    expect(send!.attributes).toMatchObject({
      'messaging.system': 'pgq',
      'messaging.destination.name': 'traced',
      'messaging.operation.type': 'send',
      'messaging.message.id': job.id,
    });
    expect(job.meta.traceparent).toBe(`00-${request.traceId}-${send!.spanContext().spanId}-01`);

    expect((await pgq.waitForJob(job.id, { timeoutMs: 20_000 })).state).toBe('succeeded');
    const spans = () =>
      worker.events.filter((e) => e.event === 'span' && (e.attributes as Record<string, unknown>)['messaging.message.id'] === job.id) as unknown as ExportedSpan[];
    await until(() => spans().length === 2, { what: 'two process spans from the worker process' });
    const [first, second] = spans().sort((a, b) => Number(a.attributes['messaging.pgq.attempt']) - Number(b.attributes['messaging.pgq.attempt']));
    for (const span of [first!, second!]) {
      expect(span.name).toBe('process traced');
      expect(span.kind).toBe(SpanKind.CONSUMER);
      expect(span.links).toEqual([{ traceId: request.traceId, spanId: send!.spanContext().spanId }]);
      expect(span.traceId).not.toBe(request.traceId);
      expect(span.attributes).toMatchObject({
        'messaging.system': 'pgq',
        'messaging.destination.name': 'traced',
        'messaging.operation.type': 'process',
        'messaging.pgq.task': 'traced',
      });
    }
    expect(first!.attributes['messaging.pgq.attempt']).toBe(1);
    expect(first!.status.code).toBe(SpanStatusCode.ERROR);
    expect(first!.events).toContain('exception');
    expect(first!.attributes['messaging.pgq.outcome']).toBe('retried');
    expect(second!.attributes['messaging.pgq.attempt']).toBe(2);
    expect(second!.status.code).not.toBe(SpanStatusCode.ERROR);
    expect(second!.attributes['messaging.pgq.outcome']).toBe('succeeded');
    worker.child.kill('SIGTERM');
    await worker.exited;
  });

  it('makes one send span for enqueueMany with the job count', async () => {
    const pgq = await ctx.migrated({ tasks: [tracedTask], middleware: [await tracing()] });
    exporter.reset();
    const jobs = await pgq.enqueueMany(tracedTask, [{ failFirst: false }, { failFirst: false }, { failFirst: false }], { queue: 'idle' });
    const sends = exporter.getFinishedSpans().filter((s) => s.name.startsWith('send'));
    expect(sends).toHaveLength(1);
    expect(sends[0]!.attributes['messaging.batch.message_count']).toBe(3);
    expect(new Set(jobs.map((j) => j.meta.traceparent)).size).toBe(1);
  });

  it('an attempt that returns after its signal (past its timeout) is an ERROR with the outcome the worker records, not a success', async () => {
    const late = defineTask({
      name: 'late-return',
      queue: 'late-return',
      schema: z.object({}),
      maxAttempts: 1,
      timeoutMs: 100,
      handler: async () => {
        await new Promise((resolve) => setTimeout(resolve, 400)); // ignores its signal
        return 'too late';
      },
    });
    const pgq = await ctx.migrated({ tasks: [late], middleware: [await tracing()] });
    const worker = pgq.worker({ queues: ['late-return'], pollIntervalMs: 50, leader: false });
    await worker.start();
    try {
      exporter.reset();
      const job = await pgq.enqueue(late, {});
      const done = await pgq.waitForJob(job.id, { timeoutMs: 20_000 });
      expect(done.state).toBe('failed');
      const process = await until(() => exporter.getFinishedSpans().find((s) => s.name === 'process late-return'), { what: 'the process span' });
      expect(process.attributes['messaging.pgq.outcome']).toBe('failed');
      expect(process.status.code).toBe(SpanStatusCode.ERROR);
      expect(process.status.message).toMatch(/timed out after 100 ms/);
    } finally {
      await worker.stop();
    }
  });

  it('an attempt whose handler returns a value after a stop signalled it is a success, as the worker records it', async () => {
    const started = deferred();
    const finishing = defineTask({
      name: 'finishing',
      queue: 'finishing',
      schema: z.object({}),
      handler: async (_p, c) => {
        started.resolve();
        await new Promise((resolve) => c.signal.addEventListener('abort', resolve, { once: true }));
        return 'finished cleanly';
      },
    });
    const pgq = await ctx.migrated({ tasks: [finishing], middleware: [await tracing()] });
    const worker = pgq.worker({ queues: ['finishing'], pollIntervalMs: 50, leader: false });
    await worker.start();
    exporter.reset();
    const job = await pgq.enqueue(finishing, {});
    await started.promise;
    await worker.stop({ graceMs: 100 });
    expect(await pgq.getJob(job.id)).toMatchObject({ state: 'succeeded', result: 'finished cleanly' });
    const process = exporter.getFinishedSpans().find((s) => s.name === 'process finishing')!;
    expect(process.attributes['messaging.pgq.outcome']).toBe('succeeded');
    expect(process.status.code).not.toBe(SpanStatusCode.ERROR);
  });

  it('an attempt whose result cannot be stored is an ERROR, as the worker records it (failed for good), also when it returns after a stop signalled it', async () => {
    const started = deferred();
    const unstorable = defineTask({
      name: 'unstorable',
      queue: 'unstorable',
      schema: z.object({ wait: z.boolean() }),
      maxAttempts: 3,
      handler: async ({ wait }, c) => {
        if (wait) {
          started.resolve();
          await new Promise((resolve) => c.signal.addEventListener('abort', resolve, { once: true }));
        }
        return { n: 1n };
      },
    });
    const pgq = await ctx.migrated({ tasks: [unstorable], middleware: [await tracing()] });
    const worker = pgq.worker({ queues: ['unstorable'], pollIntervalMs: 50, leader: false });
    await worker.start();
    exporter.reset();
    const job = await pgq.enqueue(unstorable, { wait: false });
    const failed = await pgq.waitForJob(job.id, { timeoutMs: 10_000 });
    expect(failed).toMatchObject({ state: 'failed', attempts: 1 });
    expect(failed.errors[0]!.message).toMatch(/^the handler succeeded, but its result cannot be stored: result\.n: .*BigInt/);
    // The span said "succeeded", status UNSET: the result was checked after the middleware had settled.
    const process = await until(() => exporter.getFinishedSpans().find((s) => s.name === 'process unstorable'), { what: 'the process span' });
    expect(process.attributes['messaging.pgq.outcome']).toBe('failed');
    expect(process.status.code).toBe(SpanStatusCode.ERROR);
    // Returned after a stop's signal: its work is done, so it fails for good rather than being given back to run again.
    const late = await pgq.enqueue(unstorable, { wait: true });
    await started.promise;
    await worker.stop({ graceMs: 100 });
    expect(await pgq.getJob(late.id)).toMatchObject({ state: 'failed', attempts: 1 });
    // Its span said "requeued", status UNSET, for a job failed for good.
    const lateSpan = exporter.getFinishedSpans().find((s) => s.name === 'process unstorable' && s.attributes['messaging.message.id'] === late.id)!;
    expect(lateSpan.attributes['messaging.pgq.outcome']).toBe('failed');
    expect(lateSpan.status.code).toBe(SpanStatusCode.ERROR);
  });

  it('a handler that throws a value String() cannot convert: the job records the same error as without tracing, and the span is an ERROR', async () => {
    const odd = defineTask({
      name: 'odd-throw',
      queue: 'odd-throw',
      schema: z.object({}),
      maxAttempts: 1,
      handler: async () => {
        throw Object.assign(Object.create(null) as object, { message: 'db unreachable' });
      },
    });
    const recorded: (string | undefined)[] = [];
    for (const middleware of [[], [await tracing()]]) {
      const pgq = await ctx.migrated({ tasks: [odd], middleware });
      const worker = pgq.worker({ queues: ['odd-throw'], pollIntervalMs: 50, leader: false });
      await worker.start();
      try {
        exporter.reset();
        const job = await pgq.enqueue(odd, {});
        const done = await pgq.waitForJob(job.id, { timeoutMs: 20_000 });
        expect(done.state).toBe('failed');
        recorded.push(done.errors.at(-1)?.message);
      } finally {
        await worker.stop();
      }
    }
    expect(recorded[0]).toBe('{"message":"db unreachable"}');
    expect(recorded[1]).toBe(recorded[0]); // it was 'Cannot convert object to primitive value', thrown by the middleware
    const process = exporter.getFinishedSpans().find((s) => s.name === 'process odd-throw')!;
    expect(process.attributes['messaging.pgq.outcome']).toBe('failed');
    expect(process.status).toEqual({ code: SpanStatusCode.ERROR, message: '{"message":"db unreachable"}' });
    expect(process.events.map((e) => e.name)).toEqual(['exception']);
  });

  it('a job given back at shutdown (a handler that throws after the stop signalled it) is no ERROR: the attempt is not used up', async () => {
    const started = deferred();
    const givenBack = defineTask({
      name: 'given-back',
      queue: 'given-back',
      schema: z.object({}),
      handler: async (_p, c) => {
        started.resolve();
        await new Promise((resolve) => c.signal.addEventListener('abort', resolve, { once: true }));
        throw new Error('stopped before it could finish');
      },
    });
    const pgq = await ctx.migrated({ tasks: [givenBack], middleware: [await tracing()] });
    const worker = pgq.worker({ queues: ['given-back'], pollIntervalMs: 50, leader: false });
    await worker.start();
    exporter.reset();
    const job = await pgq.enqueue(givenBack, {});
    await started.promise;
    await worker.stop({ graceMs: 100 });
    expect((await pgq.getJob(job.id))!.state).toBe('available');
    const process = exporter.getFinishedSpans().find((s) => s.name === 'process given-back')!;
    expect(process.attributes['messaging.pgq.outcome']).toBe('requeued');
    expect(process.status.code).toBe(SpanStatusCode.UNSET);
    expect(process.events).toEqual([]);
  });

  it('without an SDK it writes no trace context, and passes on one that is already active', async () => {
    // A provider with no SDK behind it: its tracer makes no-op spans.
    const noop = new ProxyTracerProvider().getTracer('pgq');
    const pgq = await ctx.migrated({ tasks: [tracedTask], middleware: [await tracing({ tracer: noop })] });
    const bare = await pgq.enqueue(tracedTask, { failFirst: false }, { queue: 'idle' });
    expect(bare.meta).not.toHaveProperty('traceparent');
    expect((await pgq.getJob(bare.id))!.meta).not.toHaveProperty('traceparent');
    const request = provider.getTracer('app').startSpan('request');
    const within = await context.with(trace.setSpan(context.active(), request), () => pgq.enqueue(tracedTask, { failFirst: false }, { queue: 'idle' }));
    request.end();
    const { traceId, spanId } = request.spanContext();
    expect(within.meta.traceparent).toBe(`00-${traceId}-${spanId}-01`);
  });

  it("a schedule's run-now is a child of the request that asked for it; a tick the leader fires starts a trace of its own", async () => {
    const middleware = await tracing();
    const pgq = await ctx.migrated({ tasks: [tracedTask], middleware: [middleware] });
    const schedule = await pgq.schedule({ name: 'hourly', every: '1h', task: tracedTask, payload: { failFirst: false } });
    exporter.reset();
    const tracer = trace.getTracer('test');
    const { job, request } = await tracer.startActiveSpan('POST /schedules/hourly/run', async (span) => {
      const ran = await pgq.runSchedule('hourly');
      span.end();
      return { job: ran, request: span.spanContext() };
    });
    const sends = () => exporter.getFinishedSpans().filter((s) => s.name === 'send traced');
    const runNow = sends().find((s) => s.attributes['messaging.message.id'] === job.id)!;
    expect(runNow.attributes['messaging.pgq.enqueue.kind']).toBe('schedule');
    expect(runNow.spanContext().traceId).toBe(request.traceId); // not a trace of its own, as a tick has
    expect(runNow.parentSpanContext?.spanId).toBe(request.spanId);

    // The leader's pass at the next tick, even with a span active around it.
    const clock = manualClock(schedule.nextRunAt);
    const scheduler = new Scheduler(
      { maxSleepMs: 1_000 },
      { kysely: pgq.kysely, statements: createStatements(pgq.schema), clock, logger: pgq.logger, schema: pgq.schema, middleware: new MiddlewareChain([middleware]) },
    );
    const { pass, around } = await tracer.startActiveSpan('around', async (span) => {
      const fired = await scheduler.runOnce();
      span.end();
      return { pass: fired, around: span.spanContext() };
    });
    expect(pass.fired).toHaveLength(1);
    const tick = sends().find((s) => s.attributes['messaging.message.id'] === pass.fired[0]!.jobId)!;
    expect(tick.parentSpanContext).toBeUndefined();
    expect(tick.spanContext().traceId).not.toBe(around.traceId);
  });

  it("with propagation 'child', the process span is a child of the send span", async () => {
    const pgq = await ctx.migrated({ tasks: [tracedTask], middleware: [await tracing({ propagation: 'child' })] });
    exporter.reset();
    const job = await pgq.enqueue(tracedTask, { failFirst: false }, { queue: 'child' });
    const worker = pgq.worker({ queues: ['child'], pollIntervalMs: 50 });
    await worker.start();
    await pgq.waitForJob(job.id, { timeoutMs: 10_000 });
    await worker.stop();
    const send = exporter.getFinishedSpans().find((s) => s.name === 'send child')!;
    const processed = await until(() => exporter.getFinishedSpans().find((s) => s.name === 'process child'));
    expect(processed.spanContext().traceId).toBe(send.spanContext().traceId);
    expect(processed.parentSpanContext?.spanId).toBe(send.spanContext().spanId);
    expect(processed.links).toEqual([]);
  });
});

// Workflow tasks, run by an in-process worker on queue 'wf'.
const inc = defineTask({ name: 'wf-inc', queue: 'wf', schema: z.number(), handler: (n) => n + 1 });
const total = defineTask({ name: 'wf-sum', queue: 'wf', schema: z.array(z.number()), handler: (ns) => ns.reduce((a, b) => a + b, 0) });
/** Fails its first attempt, then succeeds. */
const flakyInc = defineTask({
  name: 'wf-flaky',
  queue: 'wf',
  schema: z.number(),
  maxAttempts: 3,
  backoff: { baseMs: 10, maxMs: 20 },
  handler: (n, c) => {
    if (c.attempt === 1) throw new Error('first attempt fails');
    return n + 1;
  },
});
const refuse = defineTask({
  name: 'wf-refuse',
  queue: 'wf',
  schema: z.number(),
  handler: (n): number => {
    throw new PermanentError(`refuses ${n}`);
  },
});
const oks = defineTask({ name: 'wf-oks', queue: 'wf', schema: z.array(stepOutcome(z.number())), handler: (os) => os.map((o) => o.ok) });
const workflowTasks = [inc, total, flakyInc, refuse, oks];

/** The one finished process span of this job's attempt (the last attempt by default). */
function processSpan(jobId: string, attempt?: number): ReadableSpan | undefined {
  const spans = exporter
    .getFinishedSpans()
    .filter((s) => s.name === 'process wf' && s.attributes['messaging.message.id'] === jobId)
    .sort((a, b) => Number(a.attributes['messaging.pgq.attempt']) - Number(b.attributes['messaging.pgq.attempt']));
  return attempt === undefined ? spans.at(-1) : spans.find((s) => s.attributes['messaging.pgq.attempt'] === attempt);
}

/** The span ids a process span links to as parents, in link order. */
function parentSpanIds(span: ReadableSpan): string[] {
  return span.links.filter((l) => l.attributes?.['messaging.pgq.link'] === 'parent').map((l) => l.context.spanId);
}

function traceparent(span: ReadableSpan): string {
  return `00-${span.spanContext().traceId}-${span.spanContext().spanId}-01`;
}

describe('tracing workflows', () => {
  it("a step's process span links to the process span of each parent attempt it depends on; ordinary jobs record nothing", async () => {
    const pgq = await ctx.migrated({ tasks: workflowTasks, middleware: [await tracing()] });
    const worker = pgq.worker({ queues: ['wf'], concurrency: 5, pollIntervalMs: 50 });
    await worker.start();
    try {
      const chained = await pgq.enqueueWorkflow(chain(step(inc, 1), step(inc)));
      const chorded = await pgq.enqueueWorkflow(chord(group([step(inc, 10), step(inc, 20), step(inc, 30)]), step(total)));
      const single = await pgq.enqueue(inc, 5);

      const chainDone = await pgq.waitForWorkflow(chained, { timeoutMs: 20_000 });
      expect(chainDone).toMatchObject({ state: 'succeeded', result: 3 });
      const [a, b] = chainDone.steps;
      const spanA = await until(() => processSpan(a!.id), { what: "a's process span" });
      const spanB = await until(() => processSpan(b!.id), { what: "b's process span" });
      // b links to the workflow's send span (as before) and to a's process span.
      expect(spanB.links).toHaveLength(2);
      const sendLink = spanB.links[0]!.context;
      expect(`00-${sendLink.traceId}-${sendLink.spanId}-01`).toBe(b!.meta.traceparent);
      expect(spanB.links[0]!.attributes).toBeUndefined();
      expect(spanB.links[1]!.context).toMatchObject({ traceId: spanA.spanContext().traceId, spanId: spanA.spanContext().spanId });
      expect(spanB.links[1]!.attributes).toEqual({ 'messaging.pgq.link': 'parent', 'messaging.message.id': a!.id, 'messaging.pgq.step': a!.step });
      // What carried it: a's recorded context, copied into b's meta as b unblocked.
      expect(a!.meta['pgq.process']).toEqual({ traceparent: traceparent(spanA), attempt: 1 });
      expect(b!.meta['pgq.parents']).toEqual([{ traceparent: traceparent(spanA), attempt: 1, jobId: a!.id, step: a!.step }]);
      expect(parentSpanIds(spanA)).toEqual([]);

      const chordDone = await pgq.waitForWorkflow(chorded, { timeoutMs: 20_000 });
      expect(chordDone).toMatchObject({ state: 'succeeded', result: 63 });
      const members = chordDone.steps.filter((s) => s.task === 'wf-inc');
      const callback = chordDone.steps.find((s) => s.task === 'wf-sum')!;
      expect(members).toHaveLength(3);
      const memberSpans = await Promise.all(members.map((m) => until(() => processSpan(m.id), { what: `member ${m.step}'s process span` })));
      const callbackSpan = await until(() => processSpan(callback.id), { what: "the callback's process span" });
      expect(parentSpanIds(callbackSpan)).toEqual(memberSpans.map((s) => s.spanContext().spanId));

      // An ordinary job records no process context: its meta is what the enqueue wrote.
      const plain = await pgq.waitForJob(single.id, { timeoutMs: 20_000 });
      expect(plain.state).toBe('succeeded');
      expect(plain.meta).toEqual({ traceparent: single.meta.traceparent });
      const plainSpan = await until(() => processSpan(single.id), { what: "the ordinary job's process span" });
      expect(plainSpan.links).toHaveLength(1);
    } finally {
      await worker.stop();
    }
  });

  it('a retried parent: the step links to the attempt that succeeded; a run-anyway step links to the attempt that failed', async () => {
    const pgq = await ctx.migrated({ tasks: workflowTasks, middleware: [await tracing()] });
    const worker = pgq.worker({ queues: ['wf'], concurrency: 5, pollIntervalMs: 50 });
    await worker.start();
    try {
      const retried = await pgq.enqueueWorkflow(chain(step(flakyInc, 1), step(inc)));
      const runAnyway = await pgq.enqueueWorkflow(chord(group([step(refuse, 1), step(inc, 2)]), step(oks).onParentFailure('run')));

      const retriedDone = await pgq.waitForWorkflow(retried, { timeoutMs: 20_000 });
      expect(retriedDone).toMatchObject({ state: 'succeeded', result: 3 });
      const [parent, child] = retriedDone.steps;
      expect(parent!.attempts).toBe(2);
      const failedAttempt = await until(() => processSpan(parent!.id, 1), { what: "the parent's first process span" });
      const succeededAttempt = await until(() => processSpan(parent!.id, 2), { what: "the parent's second process span" });
      expect(failedAttempt.attributes['messaging.pgq.outcome']).toBe('retried');
      expect(succeededAttempt.attributes['messaging.pgq.outcome']).toBe('succeeded');
      const childSpan = await until(() => processSpan(child!.id), { what: "the child's process span" });
      expect(parentSpanIds(childSpan)).toEqual([succeededAttempt.spanContext().spanId]);
      expect(parent!.meta['pgq.process']).toEqual({ traceparent: traceparent(succeededAttempt), attempt: 2 });

      const runDone = await pgq.waitForWorkflow(runAnyway, { timeoutMs: 20_000 });
      expect(runDone.state).toBe('failed');
      const refused = runDone.steps.find((s) => s.task === 'wf-refuse')!;
      const fine = runDone.steps.find((s) => s.task === 'wf-inc')!;
      const report = runDone.steps.find((s) => s.task === 'wf-oks')!;
      expect(report).toMatchObject({ state: 'succeeded', result: [false, true] });
      const refusedSpan = await until(() => processSpan(refused.id), { what: "the failed parent's process span" });
      expect(refusedSpan.attributes['messaging.pgq.outcome']).toBe('failed');
      const fineSpan = await until(() => processSpan(fine.id), { what: "the other parent's process span" });
      const reportSpan = await until(() => processSpan(report.id), { what: "the run-anyway step's process span" });
      expect(parentSpanIds(reportSpan)).toEqual([refusedSpan.spanContext().spanId, fineSpan.spanContext().spanId]);
    } finally {
      await worker.stop();
    }
  });

  it("the trigger copies only a context recorded by the parent's last attempt", async () => {
    // Nothing runs queue 'by-hand': the parents are settled here in SQL, as the rescuer or a cancel would.
    const pgq = await ctx.migrated({ tasks: workflowTasks });
    const s = `"${ctx.schema}"`;
    const recorded = (spanId: string, attempt: number) => JSON.stringify({ 'pgq.process': { traceparent: `00-${'a'.repeat(32)}-${spanId}-01`, attempt } });
    const settle = async (id: string, state: string, attempts: number, meta: string): Promise<void> => {
      await ctx.admin.query(`UPDATE ${s}.jobs SET state = 'running', attempts = $2, meta = meta || $3::jsonb WHERE id = $1`, [id, attempts, meta]);
      await ctx.admin.query(`UPDATE ${s}.jobs SET state = $2, finished_at = now() WHERE id = $1`, [id, state]);
    };
    const byHand = { queue: 'by-hand' };
    const wf = await pgq.enqueueWorkflow(
      chord(group([1, 2, 3].map((n) => step(inc, n).with(byHand))), step(oks).with(byHand).onParentFailure('run')),
    );
    const [current, stale, cancelled, child] = wf.steps;
    // Failed through its last attempt, which recorded its context: copied.
    await settle(current!.id, 'failed', 1, recorded('1'.repeat(16), 1));
    // Failed by the rescuer in attempt 2: the context is attempt 1's, not copied.
    await settle(stale!.id, 'failed', 2, recorded('2'.repeat(16), 1));
    // Cancelled: never copied.
    await settle(cancelled!.id, 'cancelled', 1, recorded('3'.repeat(16), 1));
    const unblocked = (await pgq.getJob(child!.id))!;
    expect(unblocked.state).toBe('available');
    expect(unblocked.meta['pgq.parents']).toEqual([
      { traceparent: `00-${'a'.repeat(32)}-${'1'.repeat(16)}-01`, attempt: 1, jobId: current!.id, step: current!.step },
    ]);
  });
});
