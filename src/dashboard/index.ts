/**
 * pgq's operations console: `import { createDashboard } from 'pgq/dashboard'`.
 * One implementation served two ways: a Web-standard fetch handler (Hono,
 * Next.js route handlers, Bun, Deno) and a Node `(req, res, next?)` handler
 * (node:http, Express, Connect; Fastify through @fastify/middie). `import 'pgq'`
 * loads none of it.
 *
 * @example
 * import { createDashboard } from 'pgq/dashboard';
 * const dashboard = createDashboard({ pgq, basePath: '/admin/jobs', basicAuth: { username: 'ops', password } });
 * app.use('/admin/jobs', dashboard.node);            // Express
 * export const GET = dashboard.fetch;                // a Next.js catch-all route
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { getRequestListener } from '@hono/node-server';
import { buildConsoleApp, EVERY_ANSWER_HEADERS } from './app.js';
import { resolveDashboardOptions, type DashboardOptions } from './options.js';

export type { DashboardOptions } from './options.js';
export { parseBasicAuth } from './options.js';

/** A console ready to mount. */
export interface Dashboard {
  /** The base path it answers under (no trailing slash; `''` at the root). */
  readonly basePath: string;
  /** Web-standard handler: answers every request under the base path (404 elsewhere). */
  fetch(request: Request): Promise<Response>;
  /**
   * Node handler for `node:http`, Express or Connect: answers requests under
   * the base path; others go to `next()` when given, else get a 404. Under
   * Express, `app.use(basePath, dashboard.node)` works (it reads `originalUrl`).
   */
  node(req: IncomingMessage, res: ServerResponse, next?: (err?: unknown) => void): void;
  /** Ends the live event streams and the shared poller (not the Pgq, which is yours). */
  close(): Promise<void>;
}

/** The 404 of a path outside the base path: the headers of every answer of the console. */
const NOT_FOUND_HEADERS: Readonly<Record<string, string>> = { ...EVERY_ANSWER_HEADERS, 'Cache-Control': 'no-store', 'Content-Type': 'text/plain; charset=utf-8' };

/**
 * Builds the console on a Pgq instance.
 *
 * @example
 * // On loopback, answering only loopback names (listen(4100) alone is every interface, no auth).
 * const dashboard = createDashboard({ pgq, readOnly: true, allowedHosts: ['localhost', '127.0.0.1'] });
 * http.createServer(dashboard.node).listen(4100, '127.0.0.1');
 */
export function createDashboard(options: DashboardOptions): Dashboard {
  const o = resolveDashboardOptions(options);
  const { app, live, streams } = buildConsoleApp(o);
  const base = o.basePath;
  const under = (path: string): boolean => base === '' || path === base || path.startsWith(`${base}/`);
  const listener = getRequestListener((request) => app.fetch(request));
  return {
    basePath: base,
    async fetch(request: Request): Promise<Response> {
      if (!under(new URL(request.url).pathname)) return new Response('Not Found', { status: 404, headers: NOT_FOUND_HEADERS });
      return app.fetch(request);
    },
    node(req, res, next) {
      const full = (req as IncomingMessage & { originalUrl?: string }).originalUrl ?? req.url ?? '/';
      if (!under(full.split('?')[0] ?? '/')) {
        if (next) return next();
        res.writeHead(404, NOT_FOUND_HEADERS);
        res.end('Not Found');
        return;
      }
      req.url = full;
      listener(req, res).catch((err: unknown) => {
        if (next) return next(err);
        res.statusCode = 500;
        res.end();
      });
    },
    async close() {
      live.close();
      for (const stream of streams) stream.abort();
    },
  };
}
