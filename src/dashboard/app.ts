/**
 * The console as one Hono app under its base path: security first (headers
 * on every answer, the host check, basic auth, then read-only and CSRF for
 * anything that is not GET or HEAD), then the assets, the JSON API and the
 * pages. Both `fetch` and the Node handler in index.ts run this one app.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { Hono, type Context } from 'hono';
import { basicAuth } from 'hono/basic-auth';
import { HTTPException } from 'hono/http-exception';
import { errorMessage, errorSummary } from '../core/errors.js';
import { OverviewReader, throughputReading } from '../inspection/queue-stats.js';
import { apiRoutes, statusOf } from './api.js';
import { consoleClient, liveKey } from './assets/client.js';
import { CONSOLE_CSS, FAVICON_SVG } from './assets/styles.js';
import { html } from './html.js';
import { LiveFeed } from './live.js';
import { hostOf, type ResolvedDashboardOptions } from './options.js';
import type { PageContext } from './pages/components.js';
import { jobPage } from './pages/job.js';
import { jobsPage } from './pages/jobs.js';
import { layout, type Page } from './pages/layout.js';
import { overviewPage } from './pages/overview.js';
import { queuesPage } from './pages/queues.js';
import { schedulesPage } from './pages/schedules.js';
import { workersPage } from './pages/workers.js';
import { workflowPage, workflowsPage } from './pages/workflows.js';

// The client's source as this process holds it. Run from TypeScript through
// esbuild with keepNames (tsx), functions carry calls to esbuild's `__name`
// helper, which the browser lacks: define it there as the identity.
const CLIENT_JS = `var __name = function (f) { return f; };\n(${consoleClient.toString()})(${liveKey.toString()});\n`;

/** The app, and what must be closed with it. */
export interface ConsoleApp {
  app: Hono;
  live: LiveFeed;
  streams: Set<AbortController>;
}

function sameSecret(given: string, expected: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Headers on every answer of the console (Cache-Control: no-store too, but on its assets). */
export const EVERY_ANSWER_HEADERS: Readonly<Record<string, string>> = { 'X-Content-Type-Options': 'nosniff', 'Referrer-Policy': 'no-referrer' };

export function buildConsoleApp(o: ResolvedDashboardOptions): ConsoleApp {
  const { pgq } = o;
  const csrfToken = createHmac('sha256', o.secret).update('pgq-dashboard-csrf').digest('base64url');
  const overview = new OverviewReader(pgq.kysely, pgq.schema, (err) =>
    pgq.logger.warn({}, `pgq console could not count failed and cancelled jobs (showing the last count): ${errorMessage(err)}`),
  );
  const live = new LiveFeed(
    () => overview.read(),
    (range, queue, previous) => throughputReading(pgq.kysely, pgq.schema, range, queue, previous),
    o.pollIntervalMs,
    (err) => pgq.logger.warn({}, `pgq console could not read its live snapshot: ${errorMessage(err)}`),
  );
  const streams = new Set<AbortController>();
  const app = new Hono({ strict: false }).basePath(o.basePath || '/');

  // Every answer, refusals included (and the 404 of a path outside the base
  // path, index.ts): read as the type it says (a JSON answer holds payloads
  // and error text), kept by no cache but the assets, and its address (job
  // ids, filters) told to no site a link leads to.
  app.use('*', async (c, next) => {
    await next();
    for (const [name, value] of Object.entries(EVERY_ANSWER_HEADERS)) c.header(name, value);
    if (!c.res.headers.has('Cache-Control')) c.header('Cache-Control', 'no-store');
  });
  if (o.allowedHosts) {
    const allowed = o.allowedHosts;
    app.use('*', async (c, next) => {
      const asked = c.req.header('host') ?? new URL(c.req.url).host;
      const host = hostOf(asked);
      if (host !== null && allowed.has(host)) return next();
      return c.text(`pgq console: host ${JSON.stringify(asked)} is not one this console answers for`, 421);
    });
  }
  if (o.basicAuth) {
    const { username, password } = o.basicAuth;
    app.use('*', basicAuth({ username, password, realm: 'pgq console' }));
  }
  app.use('*', async (c, next) => {
    const method = c.req.method;
    if (method === 'GET' || method === 'HEAD') return next();
    if (o.readOnly) return c.json({ error: { code: 'PGQ_READ_ONLY', message: 'this console is read-only' } }, 403);
    if (!sameSecret(c.req.header('x-pgq-csrf') ?? '', csrfToken)) {
      return c.json({ error: { code: 'PGQ_CSRF', message: 'missing or wrong X-Pgq-Csrf header (GET api/csrf gives the token)' } }, 403);
    }
    try {
      await next();
    } finally {
      // A retry or a delete may have changed the failed count and buckets of the chart already read.
      overview.forgetFinished();
      live.forgetSeries();
    }
  });
  /** The headers every page of the console answers with. */
  const pageHeaders = (c: Context): void => {
    c.header('Cache-Control', 'no-store');
    c.header('X-Frame-Options', 'DENY');
    c.header('Content-Security-Policy', "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'");
  };
  const isApi = (c: Context): boolean => c.req.path === `${o.basePath}/api` || c.req.path.startsWith(`${o.basePath}/api/`);
  app.onError((err, c) => {
    if (err instanceof HTTPException) return err.getResponse(); // basic auth's 401
    const status = statusOf(err);
    if (status === 500) pgq.logger.error({ err: errorSummary(err) }, `pgq console: ${errorMessage(err)}`);
    const message = status === 500 ? 'internal error (see the server log)' : errorMessage(err);
    const code = (err as { code?: unknown }).code;
    if (isApi(c)) return c.json({ error: { code: typeof code === 'string' ? code : 'PGQ_ERROR', message } }, status);
    pageHeaders(c);
    return c.html(html`<!doctype html><title>pgq: ${status}</title><p>${message}</p><p><a href="${o.basePath}/">Back to the console</a></p>`.value, status);
  });

  // No route: the API answers as its errors do (JSON); a page as the console's error page does.
  app.notFound((c) => {
    const what = `${c.req.method} ${c.req.path}`;
    if (isApi(c)) return c.json({ error: { code: 'PGQ_NOT_FOUND', message: `no such API route: ${what}` } }, 404);
    pageHeaders(c);
    return c.html(html`<!doctype html><title>pgq: 404</title><p>No such page: ${c.req.path}</p><p><a href="${o.basePath}/">Back to the console</a></p>`.value, 404);
  });

  const cache = { 'Cache-Control': 'public, max-age=300' };
  app.get('/assets/console.js', (c) => c.body(CLIENT_JS, 200, { 'Content-Type': 'text/javascript; charset=utf-8', ...cache }));
  app.get('/assets/console.css', (c) => c.body(CONSOLE_CSS, 200, { 'Content-Type': 'text/css; charset=utf-8', ...cache }));
  app.get('/assets/favicon.svg', (c) => c.body(FAVICON_SVG, 200, { 'Content-Type': 'image/svg+xml', ...cache }));
  app.route('/api', apiRoutes(o, live, csrfToken, streams));

  const context = (c: Context): PageContext => ({
    base: o.basePath,
    readOnly: o.readOnly,
    hidePayloads: o.hidePayloads,
    csrfToken,
    query: new URL(c.req.url).searchParams,
  });
  const page = (render: (ctx: PageContext, c: Context) => Promise<Page>) => async (c: Context) => {
    const ctx = context(c);
    // A snapshot no newer than what the page shows: the one its region was
    // drawn from (overview, queues), else the newest read before the page
    // reads its own rows, taken as it is (a page does not wait on the
    // counts). The browser refreshes the page on the first snapshot of its
    // event stream that differs from it, and on the first one when there was
    // none yet (''). A fragment (a refresh) needs none.
    const latest = live.latest();
    const result = await render(ctx, c);
    pageHeaders(c);
    if (c.req.header('x-pgq-fragment') === '1') return c.html(result.region.value);
    const beside = result.drawnFrom ?? latest;
    return c.html(layout(ctx, result, pgq.schema, beside ? liveKey(beside.queues) : '').value);
  };
  app.get('/', page(async (ctx) => overviewPage(ctx, live, (await pgq.listWorkers()).filter((w) => w.live).length)));
  app.get('/jobs', page((ctx) => jobsPage(ctx, pgq)));
  app.get('/jobs/:id{[0-9]+}', page((ctx, c) => jobPage(ctx, pgq, c.req.param('id') ?? '')));
  app.get('/workflows', page((ctx) => workflowsPage(ctx, pgq)));
  app.get('/workflows/:id{[0-9]+}', page((ctx, c) => workflowPage(ctx, pgq, c.req.param('id') ?? '')));
  app.get('/schedules', page((ctx) => schedulesPage(ctx, pgq)));
  app.get('/queues', page((ctx) => queuesPage(ctx, live)));
  app.get('/workers', page((ctx) => workersPage(ctx, pgq)));
  return { app, live, streams };
}
