/**
 * The console in a real headless Chromium (Debian's `chromium`, driven by
 * playwright-core), mounted under /admin/jobs in a node:http app, with a
 * worker running: find a failed job by its payload and retry it, bulk retry,
 * a workflow graph, pausing a schedule and a queue from their pages, live
 * progress, cancelling a running job, read-only mode, basic auth and a `<script>` payload.
 *
 * One browser for the file; each test opens its pages in the one context.
 * Skipped, saying so, where /usr/bin/chromium is not installed.
 */
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { chain, defineTask, PermanentError, step, type Pgq, type Worker } from '../src/index.js';
import { createDashboard, type Dashboard } from '../src/dashboard/index.js';
import { deferred, until, useTestSchema } from './support/harness.js';

const CHROMIUM = '/usr/bin/chromium';
const HAVE_CHROMIUM = existsSync(CHROMIUM);
if (!HAVE_CHROMIUM) console.warn(`dashboard browser tests skipped: ${CHROMIUM} is not installed (apt-get install -y chromium)`);

const ctx = useTestSchema('dashbrowser');

let failing = true;
const flaky = defineTask({
  name: 'send-mail',
  queue: 'emails',
  maxAttempts: 1,
  schema: z.object({ to: z.string() }),
  handler: ({ to }) => {
    if (failing) throw new Error(`SMTP server refused ${to}`);
    return { sent: to };
  },
});
const alwaysFails = defineTask({
  name: 'sync-crm',
  queue: 'bulk',
  maxAttempts: 1,
  schema: z.object({ n: z.number() }),
  handler: ({ n }) => {
    throw new PermanentError(`CRM rejected record ${n}`);
  },
});
const wfStep = defineTask({
  name: 'wf-step',
  queue: 'wf',
  maxAttempts: 1,
  schema: z.object({ fail: z.boolean() }),
  handler: ({ fail }) => {
    if (fail) throw new PermanentError('template missing');
    return 'ok';
  },
});
const reached10 = deferred();
const to60 = deferred();
const finish = deferred();
const longRun = defineTask({
  name: 'export-report',
  queue: 'reports',
  schema: z.object({}),
  handler: async (_p, c) => {
    await c.progress(10);
    reached10.resolve();
    await to60.promise;
    await c.progress(60);
    await finish.promise;
    return 'exported';
  },
});

const stubbornStarted = deferred();
const letStubbornGo = deferred();
let stubbornSignalled = false;
/** Hears its signal and goes on until the test lets it go, as a handler finishing its step would. */
const stubborn = defineTask({
  name: 'rebuild-index',
  queue: 'reports',
  schema: z.object({}),
  handler: async (_p, c) => {
    c.signal.addEventListener('abort', () => (stubbornSignalled = true));
    stubbornStarted.resolve();
    await letStubbornGo.promise;
    return 'rebuilt';
  },
});

describe.skipIf(!HAVE_CHROMIUM)('the console in headless Chromium', () => {
  let pgq: Pgq;
  let worker: Worker;
  let main: Dashboard;
  let readOnly: Dashboard;
  let locked: Dashboard;
  /** Snapshots read at most every 5 s, for the tests of a page drawn before the first snapshot its event stream sends. */
  let slow: Dashboard;
  /** The same, its first snapshot read by the test that uses it. */
  let fresh: Dashboard;
  let server: http.Server;
  let origin: string;
  let browser: Browser;
  let context: BrowserContext;
  const dialogs: string[] = [];

  const open = async (path: string): Promise<Page> => {
    const page = await context.newPage();
    page.setDefaultTimeout(20_000);
    page.on('dialog', (d) => {
      dialogs.push(d.message());
      void d.dismiss();
    });
    const res = await page.goto(`${origin}${path}`);
    expect(res?.status(), path).toBe(200);
    return page;
  };
  /** Clicks Confirm in the console's confirmation dialog and returns the question it asked. */
  const confirm = async (page: Page): Promise<string> => {
    await page.locator('dialog#confirm[open]').waitFor();
    const question = (await page.locator('dialog#confirm .message').textContent()) ?? '';
    await page.locator('#confirm-ok').click();
    return question;
  };
  const flash = (page: Page) => page.locator('#flash.show');

  beforeAll(async () => {
    pgq = await ctx.migrated({ tasks: [flaky, alwaysFails, wfStep, longRun, stubborn] });
    main = createDashboard({ pgq, basePath: '/admin/jobs', pollIntervalMs: 200 });
    readOnly = createDashboard({ pgq, basePath: '/ro', readOnly: true, pollIntervalMs: 200 });
    locked = createDashboard({ pgq, basePath: '/locked', basicAuth: { username: 'ops', password: 'hunter22' }, pollIntervalMs: 200 });
    slow = createDashboard({ pgq, basePath: '/slow', pollIntervalMs: 5_000 });
    fresh = createDashboard({ pgq, basePath: '/fresh', pollIntervalMs: 5_000 });
    server = http.createServer((req, res) =>
      main.node(req, res, () =>
        readOnly.node(req, res, () =>
          locked.node(req, res, () =>
            slow.node(req, res, () =>
              fresh.node(req, res, () => {
                res.setHeader('content-type', 'text/plain');
                res.end('the app itself');
              }),
            ),
          ),
        ),
      ),
    );
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

    // failed jobs: one to find by payload, three to retry in bulk
    await pgq.enqueue(flaky, { to: 'needle@example.com' });
    await pgq.enqueue(flaky, { to: 'hay@example.com' });
    for (const n of [1, 2, 3]) await pgq.enqueue(alwaysFails, { n });
    const once = pgq.worker({ queues: ['emails', 'bulk'] });
    await once.start();
    await until(async () => (await pgq.countJobs({ state: 'failed' })) === 5, { what: 'five failed jobs' });
    await once.stop();
    failing = false;
    await pgq.enqueue(flaky, { to: '<script>window.__xss = 1; alert(1)</script>' }, { queue: 'xss', delayMs: 3_600_000 });
    await pgq.schedule({ name: 'nightly-digest', cron: '0 2 * * *', timezone: 'Europe/Rome', task: 'send-mail', payload: { to: 'digest@example.com' } });

    worker = pgq.worker({ queues: ['emails', 'wf', 'reports'] });
    await worker.start();

    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    context = await browser.newContext();
  });

  afterAll(async () => {
    await browser?.close();
    await Promise.all([main, readOnly, locked, slow, fresh].map((d) => d?.close()));
    server?.closeAllConnections();
    if (server) await new Promise((resolve) => server.close(resolve));
    await worker?.stop();
  });

  it('is mounted under /admin/jobs in a node:http app, which answers everything else', async () => {
    const page = await open('/admin/jobs');
    await expect(page.locator('h1').textContent()).resolves.toBe('Overview');
    const hrefs = await page.locator('header nav a').evaluateAll((links) => links.map((a) => a.getAttribute('href')));
    expect(hrefs).toEqual(['/admin/jobs/', '/admin/jobs/jobs', '/admin/jobs/workflows', '/admin/jobs/schedules', '/admin/jobs/queues', '/admin/jobs/workers']);
    await page.locator('#live-status.on').waitFor(); // the event stream connected through the mount
    await page.goto(`${origin}/somewhere-else`);
    expect(await page.textContent('body')).toBe('the app itself');
    await page.close();
  });

  it('finds a failed job by its payload, shows its stack, and Retry makes it succeed', async () => {
    const page = await open('/admin/jobs/jobs');
    await page.selectOption('select[name=state]', 'failed');
    await page.fill('input[name=payload]', '{"to":"needle@example.com"}');
    await page.click('button[type=submit]:has-text("Filter")');
    await page.waitForURL(/payload=/);
    const rows = page.locator('#live tbody tr');
    expect(await rows.count()).toBe(1);
    expect(await rows.first().textContent()).toContain('SMTP server refused needle@example.com');
    await rows.first().locator('a.mono').click();
    await page.waitForURL(/\/admin\/jobs\/jobs\/\d+$/);
    const id = page.url().split('/').at(-1)!;
    const stack = await page.locator('pre.stack').first().textContent();
    expect(stack).toMatch(/^Error: SMTP server refused needle@example.com\n\s+at /);

    await page.locator('button.btn:has-text("Retry")').click();
    await flash(page).filter({ hasText: `Job ${id} is available.` }).waitFor();
    await until(async () => (await pgq.getJob(id))?.state === 'succeeded', { what: 'the retried job to succeed' });
    await page.locator('h1 .badge.state-succeeded').waitFor(); // the page followed without a reload
    expect(await page.locator('#live pre.json').nth(1).textContent()).toContain('"sent": "needle@example.com"');
    await page.close();
  });

  it('retries everything failed in a queue in bulk, confirming the count first', async () => {
    const page = await open('/admin/jobs/jobs?state=failed&queue=bulk');
    expect(await page.locator('#live tbody tr').count()).toBe(3);
    await page.locator('.bulk button:has-text("Retry all matching")').click();
    expect(await confirm(page)).toBe('Retry 3 matching job(s)?');
    await flash(page).filter({ hasText: 'Retried 3 jobs.' }).waitFor();
    expect(await pgq.countJobs({ queue: 'bulk', state: 'available' })).toBe(3);
    await page.locator('#live .empty:has-text("No jobs match this filter.")').waitFor();
    await page.close();
  });

  it('draws a 3-step workflow with each step in its state', async () => {
    const wf = await pgq.enqueueWorkflow(
      chain(step(wfStep, { fail: false }).named('fetch'), step(wfStep, { fail: true }).named('render'), step(wfStep, { fail: false }).named('send')),
      { name: 'welcome-email' },
    );
    await pgq.waitForWorkflow(wf, { timeoutMs: 20_000 }).catch(() => undefined);
    const page = await open(`/admin/jobs/workflows/${wf.id}`);
    // Found and measured in one call: the page may be refreshed (its region
    // replaced) between two, and a detached node measures 0 (evaluateAll
    // finds the nodes in one call and runs the function in another).
    const nodes = await page.evaluate(() =>
      Array.from(document.querySelectorAll('svg.graph a.node'), (n) => [n.getAttribute('data-step'), n.getAttribute('data-state'), n.querySelector('rect')?.getBoundingClientRect().width ?? 0] as const),
    );
    expect(nodes.map(([name, state]) => [name, state])).toEqual([
      ['fetch', 'succeeded'],
      ['render', 'failed'],
      ['send', 'cancelled'],
    ]);
    for (const [name, , width] of nodes) expect(width, String(name)).toBeGreaterThan(100); // drawn, not just present
    expect(await page.locator('svg.graph path.edge').count()).toBe(2);
    expect(await page.locator('svg.graph a.node[data-step="send"] text.node-state').textContent()).toMatch(/^cancelled · job \d+$/);
    await page.close();
  });

  it('pauses a schedule from the Schedules page', async () => {
    const page = await open('/admin/jobs/schedules');
    await page.locator('tr:has-text("nightly-digest") button:has-text("Pause")').click();
    expect(await confirm(page)).toMatch(/^Pause schedule nightly-digest\?/);
    await flash(page).filter({ hasText: 'Schedule nightly-digest is paused.' }).waitFor();
    const { rows } = await ctx.admin.query<{ paused: boolean }>(`SELECT paused FROM "${ctx.schema}".schedules WHERE name = 'nightly-digest'`);
    expect(rows).toEqual([{ paused: true }]);
    await page.locator('[data-schedule-status="nightly-digest"]:has-text("paused")').waitFor();
    expect(await page.locator('tr:has-text("nightly-digest") button:has-text("Resume")').count()).toBe(1);
    await page.close();
  });

  it('shows progress moving live while the job runs', async () => {
    const job = await pgq.enqueue(longRun, {});
    await reached10.promise;
    await until(async () => (await pgq.getJob(job.id))?.progress === 10, { what: 'progress 10 in the table' });
    const page = await open(`/admin/jobs/jobs/${job.id}`);
    await page.evaluate(() => ((window as unknown as { loadedOnce: boolean }).loadedOnce = true));
    expect(await page.locator('#job-progress .label').textContent()).toBe('10%');
    to60.resolve();
    await page.locator('#job-progress .label:text-is("60%")').waitFor();
    expect(await page.locator('#job-progress [role=progressbar]').getAttribute('aria-valuenow')).toBe('60');
    finish.resolve();
    await page.locator('h1 .badge.state-succeeded').waitFor();
    expect(await page.evaluate(() => (window as unknown as { loadedOnce?: boolean }).loadedOnce)).toBe(true); // no reload
    await page.close();
  });

  it('shows a running job whose cancel was asked for as cancelling, without a second Cancel, until its handler settles', async () => {
    const job = await pgq.enqueue(stubborn, {});
    await stubbornStarted.promise;
    const page = await open(`/admin/jobs/jobs/${job.id}`);
    expect(await page.locator('h1 .badge').allTextContents()).toEqual(['running']);
    await page.locator('.page-head button.btn:has-text("Cancel")').click();
    expect(await confirm(page)).toBe(`Cancel job ${job.id}?`);
    await flash(page).filter({ hasText: `Job ${job.id} is cancelling: it ends cancelled once its handler has settled.` }).waitFor();
    await until(async () => stubbornSignalled, { what: 'the handler to see its signal' });
    // The page follows: the job is still running, held by its worker, and says it is being cancelled.
    await page.locator('h1 .badge.state-cancelling').waitFor();
    expect(await page.locator('h1 .badge').allTextContents()).toEqual(['running', 'cancelling']);
    expect(await page.locator('.page-head button.btn:has-text("Cancel")').count()).toBe(0);
    expect(await page.locator('ol.timeline').textContent()).toContain('Cancel asked for');
    await page.screenshot({ path: join(tmpdir(), 'pgq-console-cancelling.png'), fullPage: true });
    const list = await open(`/admin/jobs/jobs?queue=reports&state=running`);
    const row = list.locator(`#live tbody tr:has(a:text-is("${job.id}"))`);
    expect(await row.locator('.badge').allTextContents()).toEqual(['running', 'cancelling']);
    expect(await row.locator('button:has-text("Cancel")').count()).toBe(0);
    await list.close();

    letStubbornGo.resolve();
    await page.locator('h1 .badge.state-cancelled').waitFor();
    expect(await page.locator('h1 .badge').allTextContents()).toEqual(['cancelled']);
    expect((await pgq.getJob(job.id))?.cancelRequestedAt).toBeNull();
    await page.close();
  });

  it('pauses a queue and sets its limits from the Queues page', async () => {
    const page = await open('/admin/jobs/queues');
    const row = page.locator('#live tr', { has: page.locator('strong', { hasText: /^reports$/ }) });
    await row.locator('button:has-text("Pause")').click();
    expect(await confirm(page)).toMatch(/^Pause queue reports\?/);
    await flash(page).filter({ hasText: 'Queue reports is paused.' }).waitFor();
    const paused = await ctx.admin.query<{ paused: boolean }>(`SELECT paused FROM "${ctx.schema}".queues WHERE name = 'reports'`);
    expect(paused.rows).toEqual([{ paused: true }]);
    await row.locator('.badge.status-paused').waitFor();

    await row.locator('summary:has-text("Limits")').click();
    await row.locator('input[name=concurrency]').fill('4');
    await row.locator('input[name=rateLimit]').fill('20/1s');
    await row.locator('button:has-text("Save limits")').click();
    await flash(page).filter({ hasText: 'Limits of reports saved.' }).waitFor();
    const limits = await ctx.admin.query(`SELECT concurrency, rate_limit, rate_period_ms, key_concurrency FROM "${ctx.schema}".queues WHERE name = 'reports'`);
    expect(limits.rows).toEqual([{ concurrency: 4, rate_limit: 20, rate_period_ms: 1_000, key_concurrency: null }]);
    await row.locator('.chip.limit:has-text("≤ 4 running")').waitFor();

    await row.locator('summary:has-text("Limits")').click();
    await row.locator('input[name=rateLimit]').fill('lots');
    await row.locator('button:has-text("Save limits")').click();
    await page.locator('#flash.error:has-text("settings.rateLimit: must look like 100/1m")').waitFor();
    await row.locator('summary:has-text("Limits")').click(); // close the form so the page refreshes again
    await row.locator('button:has-text("Resume")').click();
    await flash(page).filter({ hasText: 'Queue reports is active.' }).waitFor();
    expect((await pgq.getQueue('reports')).paused).toBe(false);
    await page.close();
  });

  it('read-only: no action buttons or forms, and a POST from the page is refused with 403', async () => {
    const page = await open('/ro/jobs?state=failed');
    await page.locator('.pill.readonly').waitFor();
    expect(await page.locator('#live tbody tr').count()).toBeGreaterThan(0);
    for (const path of ['/ro/jobs?state=failed', '/ro/schedules', '/ro/queues', '/ro/workflows']) {
      await page.goto(`${origin}${path}`);
      expect(await page.locator('button[data-post], form[data-post-form]').count(), path).toBe(0);
    }
    const refused = await page.evaluate(async () => {
      const { token } = (await (await fetch('/admin/jobs/api/csrf')).json()) as { token: string };
      const res = await fetch('/ro/api/schedules/nightly-digest/resume', { method: 'POST', headers: { 'X-Pgq-Csrf': token } });
      return { status: res.status, body: (await res.json()) as unknown };
    });
    expect(refused).toEqual({ status: 403, body: { error: { code: 'PGQ_READ_ONLY', message: 'this console is read-only' } } });
    expect((await pgq.getSchedule('nightly-digest'))!.paused).toBe(true);
    await page.close();
  });

  it('basic auth: 401 without credentials, the console with them', async () => {
    const page = await open('/admin/jobs/workers');
    const refused = await page.evaluate(async () => {
      const res = await fetch('/locked/', { credentials: 'omit' });
      return { status: res.status, challenge: res.headers.get('www-authenticate') };
    });
    expect(refused).toEqual({ status: 401, challenge: 'Basic realm="pgq console"' });
    await page.close();
    const authed = await browser.newContext({ httpCredentials: { username: 'ops', password: 'hunter22' } });
    try {
      const ok = await authed.newPage();
      expect((await ok.goto(`${origin}/locked/jobs`))?.status()).toBe(200);
      expect(await ok.locator('h1').textContent()).toBe('Jobs');
    } finally {
      await authed.close();
    }
  });

  it('keeps the age of the oldest waiting job moving while nothing else changes (it stayed "3s" for good)', async () => {
    const waiting = await pgq.enqueue(flaky, { to: 'nobody@example.com' }, { queue: 'unserved' });
    try {
      const page = await open('/admin/jobs/');
      const row = page.locator('#live tr', { has: page.locator('a', { hasText: /^unserved$/ }) });
      const age = row.locator('[data-age]');
      await age.waitFor();
      const seconds = async (): Promise<number> => {
        const text = (await age.textContent()) ?? '';
        if (text === 'just now') return 0;
        const m = /^(\d+)s ago$/.exec(text);
        if (!m) throw new Error(`unexpected age text ${JSON.stringify(text)}`);
        return Number(m[1]);
      };
      const first = await seconds();
      await expect.poll(seconds, { timeout: 20_000, interval: 500 }).toBeGreaterThanOrEqual(first + 5);
      await page.screenshot({ path: join(tmpdir(), 'pgq-console-live-age.png'), fullPage: true });
      await page.close();
    } finally {
      await pgq.deleteJob(waiting.id);
    }
  });

  it('shows a queue that appeared between the snapshot its page was drawn from and the first its event stream sent (it kept the older page for 30 s)', async () => {
    // The page is drawn from the snapshot read just before the enqueue (the
    // feed keeps one for its poll interval, 5 s here); its event stream,
    // held back past that, starts from a newer snapshot, and every one after
    // it is the same.
    const drawn = await fetch(`${origin}/slow/`);
    await drawn.text();
    expect(drawn.status).toBe(200);
    const late = await pgq.enqueue(flaky, { to: 'late@example.com' }, { queue: 'late-arrival' });
    const page = await context.newPage();
    try {
      page.setDefaultTimeout(20_000);
      await page.route('**/slow/api/events', async (route) => {
        await new Promise((resolve) => setTimeout(resolve, 5_500));
        await route.continue();
      });
      await page.goto(`${origin}/slow/`);
      const queue = page.locator('#live a', { hasText: /^late-arrival$/ });
      expect(await queue.count(), 'drawn from the snapshot read before the enqueue').toBe(0);
      await queue.waitFor({ timeout: 12_000 });
    } finally {
      await page.close();
      await pgq.deleteJob(late.id);
    }
  });

  it('shows a job enqueued between its page and the first snapshot its event stream sent, when no snapshot was read before the page (it kept the page for 30 s)', async () => {
    const page = await context.newPage();
    const released = deferred();
    let late: { id: string } | undefined;
    try {
      page.setDefaultTimeout(20_000);
      await page.route('**/fresh/api/events', async (route) => {
        await released.promise;
        await route.continue();
      });
      await page.goto(`${origin}/fresh/jobs?queue=fresh-arrival`);
      await page.locator('#live .empty:has-text("No jobs match this filter.")').waitFor();
      late = await pgq.enqueue(flaky, { to: 'fresh@example.com' }, { queue: 'fresh-arrival' });
      released.resolve();
      await page.locator(`#live a[href$="/jobs/${late.id}"]`).first().waitFor({ timeout: 12_000 });
    } finally {
      released.resolve();
      await page.close();
      if (late) await pgq.deleteJob(late.id);
    }
  });

  it("shows the charts' times in the viewer's zone, as every other time", async () => {
    const zoned = await browser.newContext({ timezoneId: 'America/New_York', locale: 'en-US' });
    try {
      const page = await zoned.newPage();
      await page.goto(`${origin}/admin/jobs/`);
      const tick = page.locator('svg.chart text[data-at]').last();
      await tick.waitFor();
      const at = (await tick.getAttribute('data-at'))!;
      const expected = new Date(at).toLocaleTimeString('en-US', { timeZone: 'America/New_York', hour: '2-digit', minute: '2-digit' });
      await expect.poll(() => tick.textContent()).toBe(expected);
      // The bar's tooltip too, its counts kept.
      const title = page.locator('svg.chart g title[data-at]').last();
      expect(await title.textContent()).toMatch(new RegExp(`^${expected.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} — \\d+ succeeded, \\d+ failed, \\d+ cancelled$`));
      await page.close();
    } finally {
      await zoned.close();
    }
  });

  it('renders a <script> payload as text: visible, and nothing runs', async () => {
    const [job] = await pgq.listJobs({ queue: 'xss' });
    const page = await open(`/admin/jobs/jobs/${job!.id}`);
    const payload = await page.locator('pre.json').first().textContent();
    expect(payload).toContain('"to": "<script>window.__xss = 1; alert(1)</script>"');
    await page.goto(`${origin}/admin/jobs/jobs?queue=xss`);
    await page.locator('#live tbody tr').first().waitFor();
    expect(await page.evaluate(() => (window as unknown as { __xss?: number }).__xss)).toBeUndefined();
    expect(dialogs).toEqual([]);
    await page.close();
  });
});
