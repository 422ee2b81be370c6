/**
 * OpenTelemetry tracing (pgq/otel): the request that enqueues and the worker
 * process that runs the job are linked through the trace context in
 * `jobs.meta`. This process records its spans in memory; the worker process
 * prints its spans as JSON lines.
 */
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { SpanKind, SpanStatusCode, context, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { tracing } from '../src/otel.js';
import { useTestSchema, until } from './support/harness.js';
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
