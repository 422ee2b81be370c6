/**
 * The console over HTTP without a browser: every JSON endpoint, every page,
 * the fetch handler and the Node handler mounted under a base path in a
 * node:http app, basic auth (401), read-only (403), CSRF (403), hidden
 * payloads, and escaping of a `<script>` payload.
 */
import http from 'node:http';
import pg from 'pg';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { z } from 'zod';
import { chain, defineTask, group, PermanentError, Pgq, step } from '../src/index.js';
import { captureLogger, type Line } from './support/logger.js';
import { createDashboard, type Dashboard } from '../src/dashboard/index.js';
import { buildConsoleApp } from '../src/dashboard/app.js';
import { CONSOLE_COUNT_MAX } from '../src/dashboard/api.js';
import { resolveDashboardOptions } from '../src/dashboard/options.js';
import { setTimeout as sleepMs } from 'node:timers/promises';
import { until, useTestSchema } from './support/harness.js';
import { boom } from './fixtures/mail-tasks.js';

const ctx = useTestSchema('dashapi');
const mail = defineTask({ name: 'mail', queue: 'emails', maxAttempts: 1, schema: z.object({ to: z.string() }), handler: ({ to }) => ({ sent: to }) });

let pgq: Pgq;
let dashboard: Dashboard;
let token: string;
const dashboards: Dashboard[] = [];
const make = (o: Omit<Parameters<typeof createDashboard>[0], 'pgq'> = {}): Dashboard => {
  const d = createDashboard({ pgq, pollIntervalMs: 200, ...o });
  dashboards.push(d);
  return d;
};
const get = (d: Dashboard, path: string, headers: Record<string, string> = {}) => d.fetch(new Request(`http://console.test${path}`, { headers }));
const post = (d: Dashboard, path: string, headers: Record<string, string> = {}) =>
  d.fetch(new Request(`http://console.test${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: '{}' }));

beforeAll(async () => {
  pgq = await ctx.migrated({ tasks: [mail, boom] });
  dashboard = make();
  token = ((await (await get(dashboard, '/api/csrf')).json()) as { token: string }).token;
  await pgq.enqueue(boom, { to: 'dead@x.y' });
  await pgq.enqueue(mail, { to: 'ok@x.y' });
  await pgq.enqueue(mail, { to: '<script>alert(1)</script>' }, { queue: 'xss', delayMs: 600_000 });
  await pgq.enqueueWorkflow(chain(step(mail, { to: 'a@x.y' }), step(mail, { to: 'b@x.y' })), { name: 'two' });
  await pgq.schedule({ name: 'nightly', cron: '0 2 * * *', timezone: 'Europe/Rome', task: 'mail', payload: { to: 'ops@x.y' } });
  const worker = pgq.worker({ queues: ['emails'] });
  await worker.start();
  await pgq.waitForJob((await pgq.listJobs({ task: 'boom' }))[0]!.id, { timeoutMs: 20_000 });
  const wf = (await pgq.listWorkflows())[0]!;
  await pgq.waitForWorkflow(wf.id, { timeoutMs: 20_000 });
  await worker.stop();
});
afterAll(async () => {
  await Promise.all(dashboards.map((d) => d.close()));
});

describe('JSON API', () => {
  it('lists, filters, counts, shows and acts on jobs', async () => {
    const list = (await (await get(dashboard, '/api/jobs?state=failed&payload={"to":"dead@x.y"}')).json()) as { jobs: { id: string; errors: { stack: string }[] }[]; next: string | null };
    expect(list.jobs).toHaveLength(1);
    expect(list.next).toBeNull();
    const id = list.jobs[0]!.id;
    expect(list.jobs[0]!.errors[0]!.stack).toMatch(/mailbox dead@x.y is full/);
    const paged = (await (await get(dashboard, '/api/jobs?task=mail&limit=1')).json()) as { jobs: { id: string }[]; next: string };
    expect(paged.next).toBe(paged.jobs[0]!.id);
    expect(await (await get(dashboard, '/api/jobs/count?queue=emails&action=retry')).json()).toEqual({ count: 1 });
    // The count a confirmation shows stops past CONSOLE_COUNT_MAX instead of scanning every matching row.
    await ctx.admin.query(
      `INSERT INTO ${ctx.schema}.jobs (task, queue, payload) SELECT 'mail', 'bulk-count', '{}'::jsonb FROM generate_series(1, ${CONSOLE_COUNT_MAX + 5})`,
    );
    expect(await (await get(dashboard, '/api/jobs/count?queue=bulk-count&action=cancel')).json()).toEqual({ count: CONSOLE_COUNT_MAX, more: true });
    expect(await (await get(dashboard, '/api/jobs/count?queue=bulk-count&action=retry')).json()).toEqual({ count: 0 });
    await ctx.admin.query(`DELETE FROM ${ctx.schema}.jobs WHERE queue = 'bulk-count'`);
    expect(await (await get(dashboard, `/api/jobs/${id}`)).json()).toMatchObject({ id, state: 'failed', payload: { to: 'dead@x.y' } });
    expect((await get(dashboard, '/api/jobs/99999999')).status).toBe(404);
    expect((await get(dashboard, '/api/jobs?state=nope')).status).toBe(400);
    // A misspelt filter is refused by the list and the count, as by the bulk action (not ignored: every job).
    for (const path of ['/api/jobs?queu=emails', '/api/jobs/count?queu=emails&action=delete']) {
      const refused = await get(dashboard, path);
      expect(refused.status, path).toBe(400);
      expect(((await refused.json()) as { error: { message: string } }).error.message).toMatch(/^queu: is not a job filter/);
    }
    // Input no row can match is bad input (400 naming it), not a server error.
    for (const path of [
      '/api/jobs/9223372036854775808',
      '/jobs/9999999999999999999',
      '/api/workflows/9999999999999999999',
      '/api/jobs?before=9999999999999999999',
      '/api/jobs?queue=a%00b',
      '/api/jobs?task=%00',
      '/api/jobs?payload=x%00',
      `/api/jobs?error=${encodeURIComponent('{"message":"\\u0000"}')}`,
      // Dates before any PostgreSQL holds (it was a 500), and a queue no name can be (likewise).
      '/api/jobs?since=-200000-01-01',
      '/api/jobs?until=-004714-11-23T23:59:59Z',
      '/api/series?queue=%00',
      // A bare number is no time: JavaScript reads 45 as the year 2045 (a delete "until 45" matched every job).
      '/api/jobs?until=45',
      '/api/jobs?since=7',
      '/api/jobs/count?until=45&action=delete',
      // No such day: JavaScript would roll it over to 3 March.
      '/api/jobs?until=2026-02-31',
    ]) {
      const res = await get(dashboard, path);
      expect(res.status, path).toBe(400);
    }
    expect((await get(dashboard, '/api/jobs/9223372036854775807')).status).toBe(404);
    const jobsBefore = await pgq.countJobs({});
    const refused = await post(dashboard, '/api/jobs/delete?until=45', { 'x-pgq-csrf': token });
    expect(refused.status).toBe(400);
    expect(await refused.json()).toMatchObject({ error: { message: expect.stringMatching(/^until: must be a duration back from now .* or an ISO 8601 date/) } });
    expect(await pgq.countJobs({})).toBe(jobsBefore);
    // A misspelt filter is refused, not dropped (the rest alone would match every cancelled job).
    const misspelt = await post(dashboard, '/api/jobs/delete?state=cancelled&queu=nope', { 'x-pgq-csrf': token });
    expect(misspelt.status).toBe(400);
    expect(await misspelt.json()).toMatchObject({ error: { message: expect.stringMatching(/^queu: is not a job filter/) } });
    // A key given twice is refused, not read as its first value (a cancel then acted on that queue alone).
    for (const [method, path] of [['GET', '/api/jobs/count?queue=q1&queue=nope'], ['POST', '/api/jobs/cancel?queue=emails&queue=nope']] as const) {
      const twice = method === 'GET' ? await get(dashboard, path) : await post(dashboard, path, { 'x-pgq-csrf': token });
      expect(twice.status).toBe(400);
      expect(await twice.json()).toMatchObject({ error: { message: expect.stringMatching(/^queue: is given 2 times; it takes one value/) } });
    }
    expect(await pgq.countJobs({})).toBe(jobsBefore);
    expect((await get(dashboard, `/api/jobs?until=${new Date(Date.now() + 60_000).toISOString()}`)).status).toBe(200);

    const retried = await post(dashboard, `/api/jobs/${id}/retry`, { 'x-pgq-csrf': token });
    expect(await retried.json()).toMatchObject({ id, state: 'available' });
    expect((await post(dashboard, `/api/jobs/${id}/retry`, { 'x-pgq-csrf': token })).status).toBe(409);
    expect(await (await post(dashboard, `/api/jobs/${id}/cancel`, { 'x-pgq-csrf': token })).json()).toMatchObject({ state: 'cancelled' });
    expect(await (await post(dashboard, '/api/jobs/retry?queue=emails&state=cancelled', { 'x-pgq-csrf': token })).json()).toEqual({ action: 'retry', count: 1 });
    expect(await (await post(dashboard, '/api/jobs/cancel?task=boom', { 'x-pgq-csrf': token })).json()).toEqual({ action: 'cancel', count: 1 });
    expect((await post(dashboard, '/api/jobs/delete', { 'x-pgq-csrf': token })).status).toBe(400); // no filter: refused
    // Filter keys that constrain nothing are no filter either; nothing is deleted.
    const before = await pgq.countJobs();
    for (const q of ['state=,', 'state=%20,%20', 'queue=&task=']) {
      const refused = await post(dashboard, `/api/jobs/delete?${q}`, { 'x-pgq-csrf': token });
      expect(refused.status).toBe(400);
      expect(((await refused.json()) as { error: { message: string } }).error.message).toMatch(/needs at least one filter/);
    }
    // So is an empty JSON match: errors @> '[]' holds for every job, and POST api/jobs/cancel?error=[] cancelled them all.
    for (const q of ['error=[]', 'error={}', 'payload={}', 'result=%20[%20]%20']) {
      const refused = await post(dashboard, `/api/jobs/cancel?${q}`, { 'x-pgq-csrf': token });
      expect(refused.status, q).toBe(400);
      expect(((await refused.json()) as { error: { message: string } }).error.message).toMatch(/^(error|payload|result): (\[\]|\{\}) is empty: it looks for nothing, so it would match every job/);
      expect((await get(dashboard, `/api/jobs/count?${q}&action=cancel`)).status, q).toBe(400);
    }
    expect(await pgq.countJobs()).toBe(before);
    expect(before).toBeGreaterThan(0);
    expect(await (await post(dashboard, `/api/jobs/${id}/delete`, { 'x-pgq-csrf': token })).json()).toEqual({ deleted: true });
    expect(await pgq.getJob(id)).toBeNull();
  });

  it('takes queue and task names in filters as they are: " sp " is not "sp", and " " is a queue, not no filter (its bulk delete deleted every queue\'s failed jobs)', async () => {
    const odd = defineTask({ name: ' odd ', queue: ' sp ', maxAttempts: 1, schema: z.object({ n: z.number() }), handler: () => null });
    await pgq.enqueue(odd, { n: 1 });
    await pgq.enqueue(odd, { n: 2 }, { queue: ' ' });
    await pgq.enqueue(odd, { n: 3 }, { queue: 'sp' });
    const list = async (path: string) => ((await (await get(dashboard, path)).json()) as { jobs: { queue: string; task: string }[] }).jobs;
    expect((await list('/api/jobs?queue=%20sp%20')).map((j) => j.queue)).toEqual([' sp ']);
    expect((await list('/api/jobs?queue=sp')).map((j) => j.queue)).toEqual(['sp']);
    expect((await list('/api/jobs?task=%20odd%20')).length).toBe(3);
    expect((await list('/api/jobs?task=odd')).length).toBe(0);
    // The overview's link to the queue keeps the spaces, and its page lists that queue's job alone.
    // (One snapshot serves every request for an interval: one taken before these enqueues may answer first.)
    await until(async () => (await (await get(dashboard, '/')).text()).includes('/jobs?queue=%20sp%20'));
    const page = await (await get(dashboard, '/jobs?queue=%20sp%20')).text();
    expect(page).toContain('value=" sp "');
    const before = await pgq.countJobs();
    const count = await get(dashboard, '/api/jobs/count?queue=%20&action=delete');
    expect(await count.json()).toEqual({ count: 1 });
    const deleted = await post(dashboard, '/api/jobs/delete?queue=%20', { 'x-pgq-csrf': token });
    expect(await deleted.json()).toEqual({ action: 'delete', count: 1 });
    expect(await pgq.countJobs()).toBe(before - 1);
    expect(await pgq.countJobs({ queue: ' ' })).toBe(0);
    // Other values still lose the spaces around them; repeated page keys are refused as filter keys are.
    expect((await get(dashboard, '/api/jobs?state=%20available%20&queue=sp')).status).toBe(200);
    for (const path of ['/api/jobs?limit=1&limit=1000', '/api/jobs?before=3&before=2', '/api/jobs/count?action=retry&action=delete&state=failed', '/api/workflows?limit=1&limit=2', '/api/series?range=hour&range=day']) {
      const twice = await get(dashboard, path);
      expect(twice.status, path).toBe(400);
      expect(await twice.json()).toMatchObject({ error: { message: expect.stringMatching(/^(limit|before|action|range): is given 2 times/) } });
    }
    await pgq.deleteJobs({ task: ' odd ' });
  });

  it("the overview's oldest waiting job counts scheduled ones past their time that no worker has made available (none runs), as the metrics do", async () => {
    const late = await pgq.enqueue(mail, { to: 'late@x.y' }, { queue: 'due-late', delayMs: 600_000 });
    const runAt = new Date(Date.now() - 60_000);
    await ctx.admin.query(`UPDATE "${ctx.schema}".jobs SET run_at = $2 WHERE id = $1`, [late.id, runAt]);
    type Overview = { queues: { queue: string; counts: Record<string, number>; oldestWaitingRunAt: string | null }[] };
    // One snapshot serves every request for an interval (200 ms here): one taken before the change may answer first.
    const overview = await until(async () => {
      const answer = (await (await get(dashboard, '/api/overview')).json()) as Overview;
      return answer.queues.some((q) => q.queue === 'due-late') ? answer : null;
    });
    const due = overview.queues.find((q) => q.queue === 'due-late')!;
    expect(due.counts).toMatchObject({ scheduled: 1, available: 0 });
    expect(new Date(due.oldestWaitingRunAt!).getTime()).toBe(Math.floor(runAt.getTime()));
    // Not yet due: nothing waits.
    expect(overview.queues.find((q) => q.queue === 'xss')!.oldestWaitingRunAt).toBeNull();
    await pgq.deleteJob(late.id);
  });

  it('says the table has no size estimate before its first ANALYZE (PostgreSQL 14+ reads -1 there), not "About 0 jobs"', async () => {
    const jobs = `"${ctx.schema}".jobs`;
    const table = await (await get(dashboard, '/api/overview')).json() as { estimatedJobs: number | null };
    expect(table).toHaveProperty('estimatedJobs');
    // As a table looks before any ANALYZE or VACUUM has run on it.
    await ctx.admin.query(`UPDATE pg_class SET reltuples = -1 WHERE oid = $1::regclass`, [jobs]);
    const unknown = await until(async () => {
      const answer = (await (await get(dashboard, '/api/overview')).json()) as { estimatedJobs: number | null };
      return answer.estimatedJobs === null ? answer : null;
    });
    expect(unknown.estimatedJobs).toBeNull();
    expect(await until(async () => {
      const page = await (await get(dashboard, '/')).text();
      return page.includes('has not been analyzed yet') ? page : null;
    })).not.toContain('About -');
    await ctx.admin.query(`ANALYZE ${jobs}`);
    const { rows } = await ctx.admin.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${jobs}`);
    const page = await until(async () => {
      const text = await (await get(dashboard, '/')).text();
      return text.includes(' jobs in the table (planner estimate)') ? text : null;
    });
    expect(page).toContain(`About ${rows[0]!.n.toLocaleString('en-US')} jobs in the table`);
  });

  it("shows a retry made through the console on the next chart, though the chart's readings are cached and reused", async () => {
    const { rows } = await ctx.admin.query<{ id: string }>(
      `INSERT INTO "${ctx.schema}".jobs (task, queue, payload, state, attempts, max_attempts, run_at, started_at, finished_at, errors)
       VALUES ('mail', 'chart', '{"to": "c@x.y"}', 'failed', 1, 1, now() - interval '6 min', now() - interval '6 min', now() - interval '5 min',
               '[{"attempt": 1, "message": "no", "at": "2026-01-01T00:00:00Z"}]') RETURNING id::text`,
    );
    type Series = { points: { failed: number }[] };
    const failed = async (): Promise<number> =>
      ((await (await get(dashboard, '/api/series?range=hour&queue=chart')).json()) as Series).points.reduce((n, p) => n + p.failed, 0);
    try {
      expect(await failed()).toBe(1);
      expect((await post(dashboard, `/api/jobs/${rows[0]!.id}/retry`, { 'x-pgq-csrf': token })).status).toBe(200);
      // No longer failed: out of the bucket it finished in, at once.
      expect(await failed()).toBe(0);
    } finally {
      await ctx.admin.query(`DELETE FROM "${ctx.schema}".jobs WHERE queue = 'chart'`);
    }
  });

  it('serves overview, series, queues, workflows, schedules, workers and live events', async () => {
    const overview = (await (await get(dashboard, '/api/overview')).json()) as { queues: { queue: string; counts: Record<string, number> }[] };
    expect(overview.queues.find((q) => q.queue === 'xss')!.counts.scheduled).toBe(1);
    expect(await (await get(dashboard, '/api/queues')).json()).toEqual(overview.queues);
    const series = (await (await get(dashboard, '/api/series?range=day')).json()) as { points: { succeeded: number }[]; bucketSeconds: number };
    expect(series.bucketSeconds).toBe(1_800);
    expect(series.points.reduce((a, p) => a + p.succeeded, 0)).toBeGreaterThanOrEqual(3);
    expect((await get(dashboard, '/api/series?range=week')).status).toBe(400);
    const workflows = (await (await get(dashboard, '/api/workflows')).json()) as { id: string; state: string }[];
    expect(workflows[0]).toMatchObject({ state: 'succeeded' });
    expect(await (await get(dashboard, `/api/workflows/${workflows[0]!.id}`)).json()).toMatchObject({ name: 'two', steps: [{ step: expect.any(String) }, {}] });
    expect(await (await get(dashboard, '/api/workers')).json()).toEqual([]);
    expect(await (await get(dashboard, '/api/schedules')).json()).toEqual([expect.objectContaining({ name: 'nightly', paused: false })]);
    expect(await (await post(dashboard, '/api/schedules/nightly/pause', { 'x-pgq-csrf': token })).json()).toMatchObject({ paused: true });
    expect(await (await post(dashboard, '/api/schedules/nightly/resume', { 'x-pgq-csrf': token })).json()).toMatchObject({ paused: false });
    expect(await (await post(dashboard, '/api/schedules/nightly/run', { 'x-pgq-csrf': token })).json()).toMatchObject({ task: 'mail', state: 'available' });
    expect((await post(dashboard, '/api/schedules/missing/pause', { 'x-pgq-csrf': token })).status).toBe(404);
    // A name no schedule can have: refused by name (it was the database's encoding error, a 500).
    for (const action of ['pause', 'resume', 'run']) {
      const res = await post(dashboard, `/api/schedules/${encodeURIComponent('a\u0000b')}/${action}`, { 'x-pgq-csrf': token });
      expect(res.status).toBe(400);
      expect(await res.json()).toMatchObject({ error: { message: expect.stringMatching(/^schedule: must not contain a NUL character/) } });
    }
    await expect(pgq.getSchedule('a\u0000b')).rejects.toThrow(/^schedule: must not contain a NUL character/);
    await expect(pgq.getSchedule(42 as never)).rejects.toThrow(/^schedule: must be a schedule name \(a string\), got number/);
    // Lookups do not apply the rules for new names: a schedule made under older rules stays reachable.
    expect(await pgq.unschedule('x'.repeat(201))).toBe(false);
    await pgq.schedule({ name: 'renamed', cron: '0 3 * * *', task: 'mail', payload: { to: 'x@y.z' } });
    await pgq.kysely.updateTable('schedules').set({ name: '..' }).where('name', '=', 'renamed').execute();
    expect((await pgq.pauseSchedule('..')).paused).toBe(true);
    expect(await pgq.getSchedule('..')).toMatchObject({ name: '..', paused: true });
    expect(await pgq.unschedule('..')).toBe(true);

    const events = await get(dashboard, '/api/events');
    expect(events.headers.get('content-type')).toMatch(/text\/event-stream/);
    const reader = events.body!.getReader();
    let text = '';
    while (!text.includes('\n\n')) text += new TextDecoder().decode((await reader.read()).value);
    expect(text).toMatch(/event: snapshot\ndata: \{"queues":/);
    await reader.cancel();
  });
});

describe('queue control', () => {
  it('answers HEAD on the event stream without opening a stream, and 503 once closed', async () => {
    const { app, live, streams } = buildConsoleApp(resolveDashboardOptions({ pgq, pollIntervalMs: 200 }));
    try {
      const head = await app.fetch(new Request('http://console.test/api/events', { method: 'HEAD' }));
      expect(head.status).toBe(200);
      expect(head.headers.get('content-type')).toMatch(/text\/event-stream/);
      await sleepMs(500);
      expect(streams.size).toBe(0);
      const open = await app.fetch(new Request('http://console.test/api/events'));
      const reader = open.body!.getReader();
      expect(new TextDecoder().decode((await reader.read()).value)).toMatch(/event: snapshot/);
      expect(streams.size).toBe(1);
      await reader.cancel();
      await until(async () => streams.size === 0, { timeoutMs: 5_000 });
    } finally {
      live.close();
      for (const stream of streams) stream.abort();
    }
    const after = await app.fetch(new Request('http://console.test/api/events'));
    expect(after.status).toBe(503);
  });

  it('pauses, resumes and sets limits, shown by the API, the Queues page and the overview', async () => {
    const h = { 'x-pgq-csrf': token };
    const paused = await post(dashboard, '/api/queues/emails/pause', h);
    expect(await paused.json()).toMatchObject({ name: 'emails', paused: true });
    expect((await pgq.getQueue('emails')).paused).toBe(true);
    const limitsOf = (body: unknown) =>
      dashboard.fetch(new Request('http://console.test/api/queues/emails/limits', { method: 'POST', headers: { 'content-type': 'application/json', ...h }, body: JSON.stringify(body) }));
    const set = await limitsOf({ concurrency: 3, rateLimit: '100/1m', keyConcurrency: 2 });
    expect(await set.json()).toMatchObject({ name: 'emails', concurrency: 3, rateLimit: { limit: 100, periodMs: 60_000 }, keyConcurrency: 2 });
    expect(await (await get(dashboard, '/api/queues/emails')).json()).toMatchObject({ paused: true, concurrency: 3, keyConcurrency: 2 });

    // the live snapshot (overview, api/queues) carries the settings too, once its cache has expired
    await until(async () => {
      const queues = (await (await get(dashboard, '/api/queues')).json()) as { queue: string; paused: boolean; concurrency: number | null }[];
      return queues.find((q) => q.queue === 'emails' && q.paused && q.concurrency === 3);
    }, { what: 'the snapshot to show the pause and limits' });
    const queuesPage = await (await get(dashboard, '/queues')).text();
    expect(queuesPage).toMatch(/status-paused">paused/);
    expect(queuesPage).toContain('value="100/1m"');
    expect(queuesPage).toContain('data-post="/api/queues/emails/resume"');
    expect(queuesPage).toContain('data-post-form="/api/queues/emails/limits"');
    expect(await (await get(dashboard, '/')).text()).toMatch(/≤ 3 running.*100\/1m.*≤ 2 per key/s);

    // bad input: 400 naming the field, nothing changed
    for (const [body, field] of [[{ concurrency: 0 }, /settings\.concurrency/], [{ rateLimit: '100 per minute' }, /settings\.rateLimit/], [{ speed: 1 }, /speed/], [{}, /at least one/]] as const) {
      const res = await limitsOf(body);
      expect(res.status).toBe(400);
      expect(((await res.json()) as { error: { message: string } }).error.message).toMatch(field);
    }
    const notJson = await dashboard.fetch(new Request('http://console.test/api/queues/emails/limits', { method: 'POST', headers: h, body: 'concurrency=3' }));
    expect(notJson.status).toBe(400);
    expect(await pgq.getQueue('emails')).toMatchObject({ concurrency: 3, rateLimit: { limit: 100, periodMs: 60_000 }, keyConcurrency: 2 });

    // null removes a limit; a left-out field stays
    expect(await (await limitsOf({ concurrency: null, rateLimit: null })).json()).toMatchObject({ concurrency: null, rateLimit: null, keyConcurrency: 2 });
    expect(await (await post(dashboard, '/api/queues/emails/resume', h)).json()).toMatchObject({ paused: false });
    expect((await post(dashboard, '/api/queues/emails/pause')).status).toBe(403); // no CSRF token
    expect((await pgq.getQueue('emails')).paused).toBe(false);
    expect((await get(dashboard, `/api/queues/${encodeURIComponent('bad\u0000name')}`)).status).toBe(400);
  });

  it('read-only: no queue controls, and their POSTs are 403', async () => {
    const ro = make({ readOnly: true });
    const page = await (await get(ro, '/queues')).text();
    expect(page).toMatch(/<strong>emails<\/strong>/);
    expect(page).not.toMatch(/data-post|Limits…/);
    expect((await post(ro, '/api/queues/emails/pause', { 'x-pgq-csrf': token })).status).toBe(403);
    expect((await post(ro, '/api/queues/emails/limits', { 'x-pgq-csrf': token })).status).toBe(403);
    expect((await pgq.getQueue('emails')).paused).toBe(false);
  });
});

describe('pages', () => {
  it('the Workers page marks a worker whose lease has run out (a killed one, its row kept while no leader runs), not a live one', async () => {
    const worker = pgq.worker({ queues: ['emails'], leader: false });
    await worker.start();
    // What a worker killed a minute ago leaves when no leader's rescuer has run since.
    await ctx.admin.query(
      `INSERT INTO "${ctx.schema}".workers (id, hostname, pid, queues, concurrency, rescue_after_ms, lease_expires_at) VALUES ('killed-one', 'gone', 1, '{emails}', 4, 1000, now() - interval '1 minute')`,
    );
    // A live worker of a pgq version before leases: no lease, no rescue_after_ms, a heartbeat just now.
    await ctx.admin.query(
      `INSERT INTO "${ctx.schema}".workers (id, hostname, pid, queues, concurrency, rescue_after_ms, lease_expires_at) VALUES ('older-pgq', 'old', 2, '{emails}', 4, NULL, NULL)`,
    );
    try {
      const page = await (await get(dashboard, '/workers')).text();
      const rowOf = (id: string) => page.slice(page.indexOf(id), page.indexOf('</tr>', page.indexOf(id)));
      expect(rowOf('killed-one')).toContain('lease expired');
      expect(rowOf(worker.id)).not.toContain('lease expired');
      expect(rowOf('older-pgq')).not.toContain('lease expired');
      expect(rowOf('older-pgq')).toContain('pid 2');
    } finally {
      await ctx.admin.query(`DELETE FROM "${ctx.schema}".workers WHERE id IN ('killed-one', 'older-pgq')`);
      await worker.stop();
    }
  });

  it('renders every page, escaping a <script> payload', async () => {
    for (const path of ['/', '/?range=day', '/jobs', '/jobs?state=failed', '/workflows', '/schedules', '/queues', '/workers']) {
      const res = await get(dashboard, path);
      expect(res.status, path).toBe(200);
      expect(await res.text(), path).toMatch(/<\/html>/);
    }
    const [xss] = await pgq.listJobs({ queue: 'xss' });
    const page = await (await get(dashboard, `/jobs/${xss!.id}`)).text();
    expect(page).not.toContain('<script>alert(1)</script>');
    expect(page).toContain('&lt;script&gt;alert(1)&lt;/script&gt;');
    const wf = (await pgq.listWorkflows())[0]!;
    expect(await (await get(dashboard, `/workflows/${wf.id}`)).text()).toMatch(/<svg class="graph"/);
    // A workflow of 600 steps: the first 500 listed, no graph, the jobs page named for the rest.
    const wide = await pgq.enqueueWorkflow(group(Array.from({ length: 600 }, (_, i) => step(mail, { to: `w${i}@x.y` }))));
    const widePage = await (await get(dashboard, `/workflows/${wide.id}`)).text();
    expect(widePage).not.toMatch(/<svg class="graph"/);
    expect(widePage).toMatch(/600 steps: drawn up to 500/);
    expect(widePage).toMatch(/The first 500 of 600; every one: <a href="[^"]*\/jobs\?workflow=\d+">/);
    expect(widePage.match(/href="[^"]*\/jobs\/\d+"/g)).toHaveLength(500);
    await pgq.cancelWorkflow(wide.id);
    await pgq.deleteJobs({ workflowId: wide.id });
    const fragment = await (await get(dashboard, '/jobs', { 'x-pgq-fragment': '1' })).text();
    expect(fragment).not.toMatch(/<html/);
    expect((await get(dashboard, '/assets/console.js')).headers.get('content-type')).toMatch(/javascript/);
    expect((await get(dashboard, '/jobs/424242424')).status).toBe(404);
    // A misspelt filter on the page is refused as in the API, not shown as an unfiltered list.
    const misspeltPage = await get(dashboard, '/jobs?queu=emails');
    expect(misspeltPage.status).toBe(400);
    expect(await misspeltPage.text()).toMatch(/queu: is not a job filter/);
    // No such route: JSON under api/, the console's error page elsewhere.
    const noRoute = await get(dashboard, '/api/nope');
    expect(noRoute.status).toBe(404);
    expect(await noRoute.json()).toEqual({ error: { code: 'PGQ_NOT_FOUND', message: 'no such API route: GET /api/nope' } });
    const noPage = await get(dashboard, '/jobs/abc');
    expect(noPage.status).toBe(404);
    expect(noPage.headers.get('content-type')).toMatch(/text\/html/);
    expect(noPage.headers.get('x-frame-options')).toBe('DENY');
    expect(noPage.headers.get('content-security-policy')).toMatch(/frame-ancestors 'none'/);
    expect(await (await get(dashboard, '/api')).json()).toMatchObject({ error: { code: 'PGQ_NOT_FOUND' } });
    expect(await noPage.text()).toMatch(/No such page: \/jobs\/abc.*Back to the console/s);
  });

  it('keeps the page size in the Older link, and in the filter form the filters it has no field for', async () => {
    const paged = await (await get(dashboard, '/jobs?limit=2')).text();
    const older = /href="([^"]*before=[^"]*)"/.exec(paged)?.[1]?.replaceAll('&amp;', '&');
    expect(older).toMatch(/limit=2/); // it dropped it: the next page had 50 rows
    expect((await (await get(dashboard, older!)).text()).match(/<tr>/g)?.length).toBeLessThanOrEqual(3); // a header row and at most 2 jobs
    const wf = (await pgq.listWorkflows())[0]!;
    const form = await (await get(dashboard, `/jobs?state=succeeded,failed&workflow=${wf.id}&until=1d&limit=10`)).text();
    expect(form).toMatch(/<option value="succeeded,failed" selected>succeeded, failed<\/option>/);
    for (const [name, value] of [['workflow', wf.id], ['until', '1d'], ['limit', '10']]) expect(form).toContain(`<input type="hidden" name="${name}" value="${value}">`);
  });

  it('the Jobs and Workflow pages read neither payloads nor results, nor errors before the last, which they do not show (a page of large jobs read gigabytes at every refresh)', async () => {
    // A pool whose statements' answers are weighed: pgq reads through it, the dashboard through pgq.
    const pool = new pg.Pool({ connectionString: ctx.url, max: 2 });
    let bytesRead = 0;
    const wrapped = new WeakSet<pg.PoolClient>();
    pool.on('acquire', (client) => {
      if (wrapped.has(client)) return;
      wrapped.add(client);
      const query = client.query.bind(client) as (...args: unknown[]) => Promise<pg.QueryResult>;
      const weigh = (result: pg.QueryResult | pg.QueryResult[] | undefined): void => {
        for (const r of [result ?? []].flat()) bytesRead += JSON.stringify(r.rows ?? []).length;
      };
      // Called with a callback (pool.query) or for a promise (Kysely).
      (client as unknown as { query: (...args: unknown[]) => unknown }).query = (...args: unknown[]) => {
        const callback = args.at(-1);
        if (typeof callback === 'function') {
          return query(...args.slice(0, -1), (err: unknown, result: pg.QueryResult) => {
            if (!err) weigh(result);
            (callback as (err: unknown, result: pg.QueryResult) => void)(err, result);
          });
        }
        return query(...args).then((result) => {
          weigh(result);
          return result;
        });
      };
    });
    const reader = new Pgq({ connectionString: undefined, pool, schema: ctx.schema });
    const d = createDashboard({ pgq: reader, pollIntervalMs: 200 });
    try {
      const big = 'x'.repeat(200_000);
      await ctx.admin.query(
        `INSERT INTO ${ctx.schema}.jobs (task, queue, payload, result, state, errors)
         SELECT 'mail', 'big-rows', jsonb_build_object('doc', $1::text), jsonb_build_object('doc', $1::text), 'failed',
                jsonb_build_array(jsonb_build_object('attempt', 1, 'message', 'first', 'stack', $1::text, 'at', now()),
                                  jsonb_build_object('attempt', 2, 'message', 'last error', 'at', now()))
           FROM generate_series(1, 5)`,
        [big],
      );
      bytesRead = 0;
      const res = await d.fetch(new Request('http://console.test/jobs?queue=big-rows'));
      const page = await res.text();
      expect(res.status).toBe(200);
      expect(page.match(/>last error</g)).toHaveLength(5); // the last error's first line is still shown
      // Five jobs of 600 kB each: what the page needs is ids, states, times and the last error.
      expect(bytesRead).toBeLessThan(50_000);
      // A workflow's page likewise (read again at every tick while it runs): its steps' names, states and parents.
      const wf = await pgq.enqueueWorkflow(chain(step(mail, { to: big }), step(mail, { to: big }), step(mail, { to: big })), { name: 'big-steps' });
      bytesRead = 0;
      const wfPage = await (await d.fetch(new Request(`http://console.test/workflows/${wf.id}`))).text();
      expect(wfPage).toMatch(/<svg class="graph"/);
      expect(wfPage.match(/class="node"/g)).toHaveLength(3);
      expect(wfPage).toMatch(/big-steps/);
      expect(bytesRead).toBeLessThan(50_000);
      await pgq.cancelWorkflow(wf.id);
      await pgq.deleteJobs({ workflowId: wf.id });
    } finally {
      await d.close();
      await ctx.admin.query(`DELETE FROM ${ctx.schema}.jobs WHERE queue = 'big-rows'`);
      await reader.close();
      await pool.end();
    }
  });

  it('hides payloads and refuses to search them when asked', async () => {
    const hidden = make({ hidePayloads: true });
    const [xss] = await pgq.listJobs({ queue: 'xss' });
    expect(await (await get(hidden, `/api/jobs/${xss!.id}`)).json()).toMatchObject({ payload: null, payloadHidden: true });
    // A workflow's steps say so too, as jobs do.
    const wf = (await pgq.listWorkflows())[0]!;
    const hiddenFlow = (await (await get(hidden, `/api/workflows/${wf.id}`)).json()) as { payloadHidden: boolean; steps: { payload: unknown; payloadHidden: boolean }[] };
    expect(hiddenFlow.payloadHidden).toBe(true);
    expect(hiddenFlow.steps.every((s) => s.payload === null && s.payloadHidden)).toBe(true);
    const shownFlow = (await (await get(dashboard, `/api/workflows/${wf.id}`)).json()) as { payloadHidden: boolean; steps: { payloadHidden: boolean }[] };
    expect([shownFlow.payloadHidden, ...shownFlow.steps.map((s) => s.payloadHidden)].every((h) => h === false)).toBe(true);
    expect((await get(hidden, '/api/jobs?payload=abc')).status).toBe(400);
    expect(await (await get(hidden, `/jobs/${xss!.id}`)).text()).not.toContain('alert(1)');
    // A schedule's payload is its jobs' payload: hidden too.
    const schedules = await get(hidden, '/api/schedules');
    expect(await schedules.clone().text()).not.toContain('ops@x.y');
    expect(await schedules.json()).toEqual([expect.objectContaining({ name: 'nightly', payload: null, payloadHidden: true })]);
    const hiddenToken = ((await (await get(hidden, '/api/csrf')).json()) as { token: string }).token;
    for (const action of ['pause', 'resume']) {
      const res = await post(hidden, `/api/schedules/nightly/${action}`, { 'x-pgq-csrf': hiddenToken });
      expect(await res.json()).toMatchObject({ name: 'nightly', payload: null, payloadHidden: true });
    }
    expect(await (await get(dashboard, '/api/schedules')).json()).toEqual([expect.objectContaining({ payload: { to: 'ops@x.y' }, payloadHidden: false })]);
  });
});

describe('safety', () => {
  it('refuses POSTs without the CSRF token', async () => {
    const res = await post(dashboard, '/api/schedules/nightly/pause');
    expect(res.status).toBe(403);
    expect((await pgq.getSchedule('nightly'))!.paused).toBe(false);
  });

  it('read-only: no action buttons, no token, every POST is 403', async () => {
    const ro = make({ readOnly: true });
    const page = await (await get(ro, '/jobs?state=failed')).text();
    expect(page).not.toMatch(/data-post=/);
    expect(page).toMatch(/read-only/);
    expect((await post(ro, '/api/schedules/nightly/pause', { 'x-pgq-csrf': token })).status).toBe(403);
    expect((await pgq.getSchedule('nightly'))!.paused).toBe(false);
  });

  it('basic auth: 401 without credentials, 200 with them', async () => {
    const locked = make({ basicAuth: { username: 'ops', password: 's3cret' } });
    const none = await get(locked, '/');
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toMatch(/Basic/);
    expect((await get(locked, '/api/jobs', { authorization: `Basic ${Buffer.from('ops:wrong').toString('base64')}` })).status).toBe(401);
    expect((await get(locked, '/api/jobs', { authorization: `Basic ${Buffer.from('ops:s3cret').toString('base64')}` })).status).toBe(200);
  });

  it('every answer says nosniff and no-referrer, and none but the assets may be kept by a cache (an API answer holds payloads)', async () => {
    const [xss] = await pgq.listJobs({ queue: 'xss' });
    const locked = make({ basicAuth: { username: 'ops', password: 's3cret' } });
    const strict = make({ allowedHosts: ['jobs.example'] });
    const mounted = make({ basePath: '/admin/jobs' });
    const answers: [string, Response][] = [
      ['a job', await get(dashboard, `/api/jobs/${xss!.id}`)],
      ['the job list', await get(dashboard, '/api/jobs?queue=xss')],
      ['the token', await get(dashboard, '/api/csrf')],
      ['a bad filter', await get(dashboard, '/api/jobs?limit=x')],
      ['no such route', await get(dashboard, '/api/nope')],
      ['a POST without the token', await post(dashboard, '/api/schedules/nightly/pause')],
      ['a page', await get(dashboard, `/jobs/${xss!.id}`)],
      ['no credentials', await get(locked, '/api/jobs')],
      ['another host', await get(strict, '/api/jobs')],
      ['no such page', await get(dashboard, '/nope')],
      ['a path outside the base path', await get(mounted, '/elsewhere')],
    ];
    for (const [what, res] of answers) {
      expect(res.headers.get('x-content-type-options'), what).toBe('nosniff');
      expect(res.headers.get('cache-control'), what).toBe('no-store');
      expect(res.headers.get('referrer-policy'), what).toBe('no-referrer');
    }
    const asset = await get(dashboard, '/assets/console.js');
    expect(asset.headers.get('x-content-type-options')).toBe('nosniff');
    expect(asset.headers.get('cache-control')).toBe('public, max-age=300');
    const events = await get(dashboard, '/api/events', {});
    expect(events.headers.get('cache-control')).toBe('no-cache');
    expect(events.headers.get('x-content-type-options')).toBe('nosniff');
    await events.body?.cancel();
    // Where a markup injection would send a form or resolve relative URLs: nowhere else.
    const csp = answers.find(([what]) => what === 'a page')![1].headers.get('content-security-policy');
    expect(csp).toMatch(/form-action 'self'/);
    expect(csp).toMatch(/base-uri 'none'/);
  });

  it('rejects bad options with the field named', () => {
    expect(() => createDashboard({ pgq, basePath: 'admin' })).toThrow(/dashboard\.basePath: must be a path/);
    // URL paths collapse these segments: the console's links under /a/../b went to /b (404).
    expect(() => createDashboard({ pgq, basePath: '/a/../b' })).toThrow(/dashboard\.basePath: must not contain \. or \.\. segments/);
    expect(() => createDashboard({ pgq, basePath: '/a/./b' })).toThrow(/must not contain/);
    // An empty segment: every link of the console (href="//evil.example/jobs") and every request of its script, CSRF token included, went to another host.
    expect(() => createDashboard({ pgq, basePath: '//evil.example' })).toThrow(/dashboard\.basePath: must not contain \/\//);
    expect(() => createDashboard({ pgq, basePath: '/admin//jobs' })).toThrow(/dashboard\.basePath: must not contain \/\//);
    expect(make({ basePath: '/admin/jobs//' }).basePath).toBe('/admin/jobs');
    expect(make({ basePath: '//' }).basePath).toBe('');
    expect(() => createDashboard({ pgq, pollIntervalMs: 5 })).toThrow(/pollIntervalMs/);
    expect(() => createDashboard({ pgq, allowedHosts: ['jobs.example:8080'] })).toThrow(/dashboard\.allowedHosts\[0\]: must be a host name or address without a port/);
    expect(() => createDashboard({ pgq, allowedHosts: [] })).toThrow(/dashboard\.allowedHosts/);
  });

  it('allowedHosts: a request for another host gets 421 and changes nothing', async () => {
    const strict = make({ allowedHosts: ['jobs.example', '::1'] });
    const ask = (host: string, method = 'GET', path = '/api/overview') =>
      strict.fetch(new Request(`http://${host}${path}`, { method, headers: { 'x-pgq-csrf': 'x' } }));
    expect((await ask('jobs.example')).status).toBe(200);
    expect((await ask('JOBS.example:4100')).status).toBe(200);
    expect((await ask('[::1]:4100')).status).toBe(200);
    const before = await pgq.countJobs();
    expect((await ask('attacker.example', 'POST', '/api/jobs/delete?state=failed')).status).toBe(421);
    expect((await ask('127.0.0.1')).status).toBe(421);
    expect(await pgq.countJobs()).toBe(before);
  });
});

describe('mounted in a node:http app under /admin/jobs', () => {
  it('answers under the base path and passes everything else on', async () => {
    const mounted = make({ basePath: '/admin/jobs' });
    const server = http.createServer((req, res) =>
      mounted.node(req, res, () => {
        res.statusCode = 200;
        res.end('the app itself');
      }),
    );
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      const page = await fetch(`${base}/admin/jobs/jobs`);
      expect(page.status).toBe(200);
      expect(await page.text()).toContain('href="/admin/jobs/assets/console.css"');
      expect((await fetch(`${base}/admin/jobs`)).status).toBe(200);
      expect(await (await fetch(`${base}/elsewhere`)).text()).toBe('the app itself');
      const csrf = ((await (await fetch(`${base}/admin/jobs/api/csrf`)).json()) as { token: string }).token;
      const ran = await fetch(`${base}/admin/jobs/api/schedules/nightly/run`, { method: 'POST', headers: { 'x-pgq-csrf': csrf } });
      expect(await ran.json()).toMatchObject({ state: 'available' });
      expect((await mounted.fetch(new Request('http://x/other'))).status).toBe(404);
      // Without next(), a path outside the base path is the console's 404, with its headers.
      const alone = http.createServer((req, res) => mounted.node(req, res));
      await new Promise<void>((resolve) => alone.listen(0, '127.0.0.1', resolve));
      try {
        const outside = await fetch(`http://127.0.0.1:${(alone.address() as AddressInfo).port}/elsewhere`);
        expect(outside.status).toBe(404);
        expect(outside.headers.get('x-content-type-options')).toBe('nosniff');
        expect(outside.headers.get('referrer-policy')).toBe('no-referrer');
        expect(outside.headers.get('cache-control')).toBe('no-store');
      } finally {
        alone.closeAllConnections();
        await new Promise((resolve) => alone.close(resolve));
      }
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

describe('the console against a database it cannot reach', () => {
  it("says so in pgq's log when an event stream cannot start, not through console.error", async () => {
    const lines: Line[] = [];
    const away = new Pgq({ connectionString: 'postgres://postgres@127.0.0.1:1/postgres', tasks: [], logger: captureLogger(lines) });
    const console = createDashboard({ pgq: away, pollIntervalMs: 60_000 });
    const printed = vi.spyOn(globalThis.console, 'error').mockImplementation(() => undefined);
    try {
      const events = await console.fetch(new Request('http://console.test/api/events'));
      await events.text();
      expect(printed).not.toHaveBeenCalled();
      expect(lines.filter((l) => l.level === 'warn').map((l) => l.msg)).toContainEqual(expect.stringMatching(/^pgq console could not start an event stream: /));
    } finally {
      printed.mockRestore();
      await console.close();
      await away.close();
    }
  });
});
