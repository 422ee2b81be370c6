/**
 * The console's JSON API, under `<base>/api`. The pages use it for every
 * action and live update; scripts can too (send the token from
 * `GET api/csrf` in `X-Pgq-Csrf` with every POST).
 *
 * Bulk endpoints take the same filter query string as `GET api/jobs` and
 * refuse an empty filter, so no request acts on every job by accident.
 */
import { Hono } from 'hono';
import { streamSSE } from 'hono/streaming';
import { errorMessage, errorSummary, JobNotFoundError, ValidationError } from '../core/errors.js';
import type { BulkAction } from '../jobs/job-store.js';
import { parseQueueName, parseRateText, type QueueSettings } from '../queues.js';
import { ScheduleNotFoundError } from '../schedules.js';
import { WorkflowNotFoundError } from '../workflow/store.js';
import type { LiveFeed } from './live.js';
import type { ResolvedDashboardOptions } from './options.js';
import { filterFromQuery, hasFilterParams, listFromQuery, refuseUnknownParams, singleParam } from './query.js';
import { consoleJob, consoleSchedule } from './serialize.js';

/** `GET api/jobs/count` counts this many at most and then answers `{ count: 10000, more: true }`. */
export const CONSOLE_COUNT_MAX = 10_000;

function parseAction(value: string): BulkAction {
  if (value === 'retry' || value === 'cancel' || value === 'delete') return value;
  throw new ValidationError('action', 'must be retry, cancel or delete');
}

/**
 * The body of `POST api/queues/<name>/limits`: `setQueue`'s settings, where
 * `rateLimit` may also be text such as `100/1m` (what the page's form sends).
 */
export function queueSettingsFrom(body: string): QueueSettings {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    throw new ValidationError('body', 'must be JSON such as {"concurrency":3,"rateLimit":"100/1m","keyConcurrency":null}');
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new ValidationError('body', 'must be a JSON object');
  const settings = { ...(parsed as Record<string, unknown>) };
  if (typeof settings.rateLimit === 'string') settings.rateLimit = parseRateText(settings.rateLimit, 'settings.rateLimit');
  return settings as QueueSettings;
}

export function apiRoutes(o: ResolvedDashboardOptions, live: LiveFeed, csrfToken: string, streams: Set<AbortController>): Hono {
  const { pgq, hidePayloads } = o;
  const api = new Hono();
  const query = (url: string): URLSearchParams => new URL(url).searchParams;

  api.get('/csrf', (c) => c.json({ token: csrfToken }));
  api.get('/overview', async (c) => c.json(await live.snapshot()));
  api.get('/queues', async (c) => c.json((await live.snapshot()).queues));
  api.get('/queues/:name', async (c) => c.json(await pgq.getQueue(c.req.param('name'))));
  api.post('/queues/:name/pause', async (c) => c.json(await pgq.pauseQueue(c.req.param('name'))));
  api.post('/queues/:name/resume', async (c) => c.json(await pgq.resumeQueue(c.req.param('name'))));
  api.post('/queues/:name/limits', async (c) => c.json(await pgq.setQueue(c.req.param('name'), queueSettingsFrom(await c.req.text()))));
  api.get('/series', async (c) => {
    const params = query(c.req.url);
    const range = singleParam(params, 'range') ?? 'hour';
    if (range !== 'hour' && range !== 'day') throw new ValidationError('range', 'must be hour or day');
    const queue = singleParam(params, 'queue');
    return c.json(await live.series(range, queue ? parseQueueName(queue) : undefined));
  });

  // A misspelt filter is refused here too: a count or list that ignored it
  // would not match what the bulk action with the same query (refused) does.
  api.get('/jobs', async (c) => {
    const params = query(c.req.url);
    refuseUnknownParams(params, ['before', 'limit']);
    const filter = listFromQuery(params, hidePayloads);
    const limit = filter.limit ?? 50;
    const jobs = await pgq.listJobs({ ...filter, limit });
    return c.json({ jobs: jobs.map((j) => consoleJob(j, hidePayloads)), next: jobs.length === limit ? jobs.at(-1)!.id : null });
  });
  api.get('/jobs/count', async (c) => {
    const params = query(c.req.url);
    refuseUnknownParams(params, ['action']);
    const filter = filterFromQuery(params, hidePayloads);
    const action = singleParam(params, 'action');
    // Bounded: a confirmation needs "more than 10,000", not a scan of every
    // matching row of a table of millions on each click. With an action,
    // what that action would change (its states, less the jobs it skips).
    const counted = await pgq.countJobs(filter, { max: CONSOLE_COUNT_MAX + 1, ...(action ? { action: parseAction(action) } : {}) });
    return c.json(counted > CONSOLE_COUNT_MAX ? { count: CONSOLE_COUNT_MAX, more: true } : { count: counted });
  });
  api.get('/jobs/:id{[0-9]+}', async (c) => {
    const job = await pgq.getJob(c.req.param('id'));
    if (!job) throw new JobNotFoundError(c.req.param('id'));
    return c.json(consoleJob(job, hidePayloads));
  });
  api.post('/jobs/:id{[0-9]+}/retry', async (c) => c.json(consoleJob(await pgq.retryJob(c.req.param('id')), hidePayloads)));
  api.post('/jobs/:id{[0-9]+}/cancel', async (c) => c.json(consoleJob(await pgq.cancelJob(c.req.param('id')), hidePayloads)));
  api.post('/jobs/:id{[0-9]+}/delete', async (c) => {
    if (!(await pgq.deleteJob(c.req.param('id')))) throw new JobNotFoundError(c.req.param('id'));
    return c.json({ deleted: true });
  });
  api.post('/jobs/:action{retry|cancel|delete}', async (c) => {
    const params = query(c.req.url);
    refuseUnknownParams(params);
    if (!hasFilterParams(params, hidePayloads)) throw new ValidationError('filter', 'a bulk action needs at least one filter (state, queue, task, since, until, payload, result, error, workflow)');
    const filter = filterFromQuery(params, hidePayloads);
    const action = parseAction(c.req.param('action'));
    const count = action === 'retry' ? await pgq.retryJobs(filter) : action === 'cancel' ? await pgq.cancelJobs(filter) : await pgq.deleteJobs(filter);
    return c.json({ action, count });
  });

  api.get('/schedules', async (c) => c.json((await pgq.listSchedules()).map((s) => consoleSchedule(s, hidePayloads))));
  api.post('/schedules/:name/pause', async (c) => c.json(consoleSchedule(await pgq.pauseSchedule(c.req.param('name')), hidePayloads)));
  api.post('/schedules/:name/resume', async (c) => c.json(consoleSchedule(await pgq.resumeSchedule(c.req.param('name')), hidePayloads)));
  api.post('/schedules/:name/run', async (c) => c.json(consoleJob(await pgq.runSchedule(c.req.param('name')), hidePayloads)));

  api.get('/workflows', async (c) => {
    const params = query(c.req.url);
    const before = singleParam(params, 'before');
    const limit = singleParam(params, 'limit');
    if (limit !== undefined && !/^\d+$/.test(limit)) throw new ValidationError('limit', 'must be a whole number');
    return c.json(await pgq.listWorkflows({ before, limit: limit === undefined ? undefined : Number(limit) }));
  });
  api.get('/workflows/:id{[0-9]+}', async (c) => {
    const workflow = await pgq.getWorkflow(c.req.param('id'));
    if (!workflow) throw new WorkflowNotFoundError(c.req.param('id'));
    // Steps say whether theirs were hidden, as jobs and schedules do.
    return c.json(
      hidePayloads
        ? { ...workflow, result: null, payloadHidden: true, steps: workflow.steps.map((s) => ({ ...s, payload: null, result: null, payloadHidden: true })) }
        : { ...workflow, payloadHidden: false, steps: workflow.steps.map((s) => ({ ...s, payloadHidden: false })) },
    );
  });
  api.get('/workers', async (c) => c.json(await pgq.listWorkers()));

  api.get('/events', (c) => {
    // HEAD is answered by this GET handler with its body thrown away: a stream
    // opened for it would never be read nor closed.
    if (c.req.method === 'HEAD') return c.body(null, 200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    if (live.closed) return c.json({ error: { code: 'PGQ_CLOSED', message: 'this console was closed' } }, 503);
    return streamSSE(c, async (stream) => {
      const controller = new AbortController();
      streams.add(controller);
      let id = 0;
      // One write at a time: a viewer that stops reading misses snapshots instead of queueing them.
      let writing = false;
      const send = (data: unknown): void => {
        if (writing || controller.signal.aborted) return;
        writing = true;
        stream.writeSSE({ event: 'snapshot', id: String(++id), data: JSON.stringify(data) }).then(
          () => {
            writing = false;
            if (stream.aborted || stream.closed) controller.abort();
          },
          () => controller.abort(),
        );
      };
      const unsubscribe = live.subscribe(send);
      stream.onAbort(() => controller.abort());
      c.req.raw.signal.addEventListener('abort', () => controller.abort(), { once: true });
      try {
        send(await live.snapshot());
        await new Promise<void>((resolve) => {
          if (controller.signal.aborted) return resolve();
          controller.signal.addEventListener('abort', () => resolve(), { once: true });
        });
      } finally {
        unsubscribe();
        streams.delete(controller);
      }
    }, async (err) => {
      // Said in pgq's log, not by Hono's console.error; the browser's EventSource connects again.
      pgq.logger.warn({ err: errorSummary(err) }, `pgq console could not start an event stream: ${errorMessage(err)}`);
    });
  });
  return api;
}

/** HTTP status for an error the API or a page ran into. */
export function statusOf(err: unknown): 400 | 404 | 409 | 500 {
  if (err instanceof ValidationError) return 400;
  if (err instanceof JobNotFoundError || err instanceof WorkflowNotFoundError || err instanceof ScheduleNotFoundError) return 404;
  const code = (err as { code?: unknown } | null)?.code;
  if (code === 'PGQ_NOT_RETRYABLE' || code === 'PGQ_JOB_RUNNING' || code === 'PGQ_WORKFLOW_STEP_LIVE') return 409;
  return 500;
}
