/**
 * OpenTelemetry tracing for pgq, as a middleware (`pgq/otel`).
 *
 * - Each enqueue call (one `enqueue`, one `enqueueMany`, one workflow, one
 *   schedule tick) is one PRODUCER span `send <queue>`, a child of the span
 *   active at the call. Its W3C trace context is stored in every job's
 *   `meta` (`traceparent`, and `tracestate` when there is one).
 * - Each attempt is one CONSUMER span `process <queue>` that links to that
 *   context (or, with `propagation: 'child'`, is its child), ended when the
 *   handler settles: status ERROR and an exception event when the attempt
 *   failed. A snooze, and a job given back at shutdown (`requeued`), used
 *   up no attempt: status UNSET, no exception, the outcome attribute only.
 *   The handler runs with the span active, so its own spans nest under it.
 * - A schedule's ticks are enqueued by the leader outside any request: their
 *   `send` span starts a trace of its own. A run-now (`runSchedule()`) is a
 *   child of the span active at the call, as any enqueue. Workflow steps all carry the
 *   context of the workflow's `send` span, and link to their parents too:
 *   a workflow job's attempt records its `process` span's context with its
 *   outcome (`ctx.recordMeta('pgq.process', …)`: no write of its own;
 *   ordinary jobs record nothing); when a step unblocks, the workflow
 *   trigger copies the contexts of the parent attempts that settled it into
 *   its meta as `pgq.parents` (migrations/…_workflow_parent_traces.sql),
 *   and its `process` span links to each (`messaging.pgq.link` = `parent`).
 *
 * `@opentelemetry/api` is an optional peer dependency, loaded by `tracing()`
 * with a dynamic import: `import 'pgq'` never loads it. Without an SDK
 * registered, the API's no-op tracer makes the spans free.
 *
 * @example
 * import { tracing } from 'pgq/otel';
 * const pgq = new Pgq({ connectionString, tasks, middleware: [await tracing()] });
 */
import type { Attributes, Link, Span, SpanContext, Tracer } from '@opentelemetry/api';
import {
  JobCancelledError,
  JobTimeoutError,
  LeaseLostError,
  PgqError,
  ValidationError,
  WorkerShutdownError,
  errorMessage,
  isPermanentError,
  readableError,
  snoozeDelay,
  UnstorableResultError,
} from './core/errors.js';
import type { JobMeta, Json } from './core/types.js';
import type { EnqueueCall, Middleware } from './middleware.js';
import type { JobContext } from './task.js';

/** Options of `tracing()`. */
export interface TracingOptions {
  /**
   * How a `process` span relates to the `send` span of its enqueue: `link`
   * (default: a new trace with a link, as the messaging conventions advise
   * for work that may run much later) or `child` (the same trace).
   */
  propagation?: 'link' | 'child' | undefined;
  /** Tracer name. Default `pgq`. */
  tracerName?: string | undefined;
  /** A tracer to use instead of the global provider's. */
  tracer?: Tracer | undefined;
}

type Api = typeof import('@opentelemetry/api');

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/** The meta key under which a workflow job's attempt records its `process` span's context; the workflow trigger reads it. */
const PROCESS_KEY = 'pgq.process';
/** The meta key under which the workflow trigger gives a step its parents' recorded contexts. */
const PARENTS_KEY = 'pgq.parents';

/**
 * A middleware that traces enqueues and attempts with the global (or given)
 * OpenTelemetry tracer. Rejects with a clear error if `@opentelemetry/api`
 * is not installed.
 */
export async function tracing(options: TracingOptions = {}): Promise<Middleware> {
  const propagation = options.propagation ?? 'link';
  if (propagation !== 'link' && propagation !== 'child') {
    throw new ValidationError('tracing.propagation', `must be 'link' or 'child', got ${JSON.stringify(propagation)}`);
  }
  let api: Api;
  try {
    api = await import('@opentelemetry/api');
  } catch {
    throw new PgqError('PGQ_OTEL_MISSING', 'pgq tracing needs the @opentelemetry/api package: npm install @opentelemetry/api');
  }
  const tracer = (): Tracer => options.tracer ?? api.trace.getTracer(options.tracerName ?? 'pgq');
  return {
    name: 'opentelemetry',
    enqueue: (call, next) => {
      const queues = [...new Set(call.jobs.map((j) => j.queue))];
      const attributes: Attributes = {
        'messaging.system': 'pgq',
        'messaging.operation.type': 'send',
        'messaging.operation.name': 'send',
        'messaging.destination.name': queues.join(','),
        'messaging.pgq.enqueue.kind': call.kind,
        'messaging.pgq.task': [...new Set(call.jobs.map((j) => j.task))].join(','),
      };
      if (call.jobs.length !== 1) attributes['messaging.batch.message_count'] = call.jobs.length;
      const schedule = call.jobs[0]?.schedule;
      if (schedule) attributes['messaging.pgq.schedule'] = schedule.name;
      // A schedule's tick belongs to no request: it starts its own trace.
      const parent = isScheduleTick(call) ? api.ROOT_CONTEXT : api.context.active();
      return tracer().startActiveSpan(`send ${queues.join(',')}`, { kind: api.SpanKind.PRODUCER, attributes }, parent, async (span) => {
        try {
          injectContext(api, span.spanContext(), call);
          const ids = await next();
          if (ids.length === 1) span.setAttribute('messaging.message.id', ids[0]!);
          return ids;
        } catch (err) {
          fail(api, span, err);
          throw err;
        } finally {
          span.end();
        }
      });
    },
    attempt: (ctx, next) => {
      const { job } = ctx;
      const remote = extractContext(api, job.meta);
      const links: Link[] = remote && propagation === 'link' ? [{ context: remote }] : [];
      if (job.workflowId !== null) links.push(...parentLinks(api, job.meta));
      const parent = remote && propagation === 'child' ? api.trace.setSpanContext(api.ROOT_CONTEXT, remote) : api.ROOT_CONTEXT;
      const attributes: Attributes = {
        'messaging.system': 'pgq',
        'messaging.operation.type': 'process',
        'messaging.operation.name': 'process',
        'messaging.destination.name': job.queue,
        'messaging.message.id': job.id,
        'messaging.pgq.task': job.task,
        'messaging.pgq.attempt': ctx.attempt,
        'messaging.pgq.max_attempts': job.maxAttempts,
      };
      return tracer().startActiveSpan(`process ${job.queue}`, { kind: api.SpanKind.CONSUMER, attributes, links }, parent, async (span) => {
        try {
          // Only workflow jobs can have dependents to link to this span.
          if (job.workflowId !== null) recordProcessContext(api, span.spanContext(), ctx);
          const result = await next();
          const reason: unknown = ctx.signal.aborted ? ctx.signal.reason : undefined;
          if (reason instanceof JobTimeoutError || reason instanceof JobCancelledError || reason instanceof LeaseLostError) {
            // Returned after such a signal, the worker records the signal's
            // reason, not a success (after a stop's, a value returned is one).
            const outcome = outcomeOf(reason, ctx);
            span.setAttribute('messaging.pgq.outcome', outcome);
            fail(api, span, reason);
            return result;
          }
          span.setAttribute('messaging.pgq.outcome', 'succeeded');
          return result;
        } catch (err) {
          // Nothing here may throw: the worker must record what the handler threw, as it does without tracing.
          try {
            const outcome = outcomeOf(readableError(err), ctx);
            span.setAttribute('messaging.pgq.outcome', outcome);
            if (outcome !== 'snoozed' && outcome !== 'requeued') fail(api, span, err);
          } catch {
            // The span goes without; the attempt's outcome is unchanged.
          }
          throw err;
        } finally {
          span.end();
        }
      });
    },
  };
}

/**
 * Whether the call writes a schedule's ticks, which the leader enqueues
 * outside any request. A run-now (`runSchedule()`) is kind `schedule` too,
 * but made inside the caller's request: its schedule info has `runNow`.
 */
function isScheduleTick(call: EnqueueCall): boolean {
  return call.kind === 'schedule' && call.jobs[0]?.schedule?.runNow !== true;
}

/** What a thrown error makes of the attempt, as the executor will record it. */
function outcomeOf(err: unknown, ctx: JobContext): string {
  const reason: unknown = ctx.signal.aborted ? ctx.signal.reason : err;
  if (reason instanceof JobCancelledError) return 'cancelled';
  if (reason instanceof LeaseLostError) return 'lease_lost';
  // The handler returned a result that cannot be stored: failed for good, whatever a stop asked meanwhile.
  if (err instanceof UnstorableResultError && !(reason instanceof JobTimeoutError)) return 'failed';
  if (reason instanceof WorkerShutdownError) return 'requeued';
  if (snoozeDelay(reason) !== null) return 'snoozed';
  return !isPermanentError(reason) && ctx.attempt < ctx.job.maxAttempts ? 'retried' : 'failed';
}

/**
 * Status ERROR with the error's message, and an exception event. Never
 * throws: any thrown value is described (a null-prototype object, one whose
 * getters throw), as the worker describes it in the job's errors.
 */
function fail(api: Api, span: Span, err: unknown): void {
  try {
    const readable = readableError(err);
    const message = errorMessage(readable);
    span.setStatus({ code: api.SpanStatusCode.ERROR, message });
    span.recordException(readable instanceof Error ? readable : message);
  } catch {
    // A getter that throws only on a later read: the span goes without, the error is the caller's still.
  }
}

/** A span context as a W3C `traceparent` header value. */
function traceparentOf(sc: SpanContext): string {
  return `00-${sc.traceId}-${sc.spanId}-${(sc.traceFlags & 0xff).toString(16).padStart(2, '0')}`;
}

/**
 * Writes the span's W3C trace context into each job's meta. Nothing without
 * an SDK, unless a valid context is already active (the no-op span carries
 * its parent's): an all-zero traceparent is invalid, and writing one costs a
 * meta key on every job for nothing.
 */
function injectContext(api: Api, sc: SpanContext, call: EnqueueCall): void {
  if (!api.trace.isSpanContextValid(sc)) return;
  const traceparent = traceparentOf(sc);
  const tracestate = sc.traceState?.serialize();
  for (const job of call.jobs) {
    job.meta.traceparent = traceparent;
    if (tracestate) job.meta.tracestate = tracestate;
    else delete job.meta.tracestate;
  }
}

/**
 * Records the process span's context in the job's meta with the attempt's
 * outcome, for the workflow trigger to hand to the job's dependents. The
 * attempt number lets the trigger tell it from an earlier attempt's. Nothing
 * without an SDK (the no-op span's context is invalid).
 */
function recordProcessContext(api: Api, sc: SpanContext, ctx: JobContext): void {
  if (!api.trace.isSpanContextValid(sc)) return;
  const recorded: { [key: string]: Json } = { traceparent: traceparentOf(sc), attempt: ctx.attempt };
  const tracestate = sc.traceState?.serialize();
  if (tracestate) recorded.tracestate = tracestate;
  ctx.recordMeta(PROCESS_KEY, recorded);
}

/** One link per parent context the workflow trigger gave this step (`pgq.parents`), malformed entries skipped. */
function parentLinks(api: Api, meta: JobMeta): Link[] {
  const parents = meta[PARENTS_KEY];
  if (!Array.isArray(parents)) return [];
  const links: Link[] = [];
  for (const entry of parents) {
    if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) continue;
    const context = extractContext(api, entry);
    if (!context) continue;
    const attributes: Attributes = { 'messaging.pgq.link': 'parent' };
    if (typeof entry.jobId === 'string') attributes['messaging.message.id'] = entry.jobId;
    if (typeof entry.step === 'string') attributes['messaging.pgq.step'] = entry.step;
    links.push({ context, attributes });
  }
  return links;
}

/** A span context from an object holding `traceparent` (and maybe `tracestate`), or undefined when there is none (or it is malformed). */
function extractContext(api: Api, meta: JobMeta): SpanContext | undefined {
  const match = typeof meta.traceparent === 'string' ? TRACEPARENT.exec(meta.traceparent) : null;
  if (!match) return undefined;
  const context: SpanContext = {
    traceId: match[1]!,
    spanId: match[2]!,
    traceFlags: parseInt(match[3]!, 16),
    isRemote: true,
  };
  if (typeof meta.tracestate === 'string') context.traceState = api.createTraceState(meta.tracestate);
  return api.trace.isSpanContextValid(context) ? context : undefined;
}
