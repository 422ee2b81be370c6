/** `pgq dashboard`: the operations console on its own HTTP server until SIGTERM/SIGINT. */
import http from 'node:http';
import dns from 'node:dns/promises';
import net from 'node:net';
import { InvalidArgumentError, type Command } from 'commander';
import { HOST_NAME } from '../../dashboard/options.js';
import type { CliRuntime } from '../runtime.js';
import { httpBase, parseIntOption } from '../options.js';
import { importOptional } from '../../core/optional-packages.js';
import { PgqError } from '../../core/errors.js';

interface DashboardCommandOptions {
  port: number;
  host: string;
  basePath: string;
  readOnly?: boolean;
  basicAuth?: string;
  hidePayloads?: boolean;
  allowedHost?: string[];
}

const LOOPBACK_NAMES = ['localhost', '127.0.0.1', '::1'];

/** Whether `host` is a loopback address, however it is written (exported for its test). */
export function isLoopback(host: string): boolean {
  const bare = host.toLowerCase().replace(/^\[(.*)\]$/, '$1');
  // An IPv6 address however it is written (0:0:0:0:0:0:0:1 is ::1, ::ffff:7f00:1 is ::ffff:127.0.0.1).
  const address = net.isIPv6(bare) ? new net.SocketAddress({ address: bare, family: 'ipv6' }).address : bare;
  return address === 'localhost' || address === '::1' || /^(::ffff:)?127\.\d+\.\d+\.\d+$/.test(address);
}

/**
 * Whether the server listens on loopback for `--host`: its own spelling, or
 * the address the resolver gives, as listen() takes it (127.1 and 2130706433
 * listen on 127.0.0.1). A name that does not resolve is not loopback; listen
 * says why.
 */
export async function listensOnLoopback(host: string): Promise<boolean> {
  if (isLoopback(host)) return true;
  try {
    return isLoopback((await dns.lookup(host.replace(/^\[(.*)\]$/, '$1'))).address);
  } catch {
    return false;
  }
}

/**
 * What `pgq dashboard` warns of when it starts, if anything: off loopback
 * without basic auth, anyone who reaches the address reads every job and,
 * unless --read-only, acts on them; and without --allowed-host any Host name
 * is answered, so a web page that a user of the console opens can rebind its
 * own name to this address and do the same from their browser.
 */
export function exposureWarning(host: string, options: { loopback: boolean; basicAuth: boolean; readOnly: boolean; allowedHosts: readonly string[] }): string | undefined {
  if (options.loopback || options.basicAuth) return undefined;
  const what = options.readOnly ? 'read every job' : 'read every job and retry, cancel or delete jobs and pause queues';
  const rebinding = options.allowedHosts.length === 0 ? ', and any host name is answered (a web page can reach it through DNS rebinding: name its hosts with --allowed-host)' : '';
  return `the console listens on ${host} without basic auth: anyone who can reach it can ${what}${rebinding}; set --basic-auth (or PGQ_DASHBOARD_AUTH), or serve it on 127.0.0.1 behind a proxy that authenticates`;
}

/** `--allowed-host`, repeatable, each value checked as given. */
function collectHost(value: string, previous: string[] | undefined): string[] {
  if (!HOST_NAME.test(value)) throw new InvalidArgumentError(`--allowed-host must be a host name or address without a port or scheme (e.g. jobs.example.com), got ${JSON.stringify(value)}`);
  return [...(previous ?? []), value];
}

export function registerDashboard(program: Command, rt: CliRuntime): void {
  program
    .command('dashboard')
    .description('serve the operations console (jobs, workflows, schedules, queues, workers) until Ctrl-C')
    .option('--port <port>', 'port to listen on (0 picks a free one)', parseIntOption('--port', 0, 65_535), 4100)
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('--base-path <path>', 'serve under this path, e.g. /admin/jobs', '/')
    .option('--read-only', 'hide every action and refuse every change (403)')
    .option('--basic-auth <user:password>', 'require HTTP basic auth (or set PGQ_DASHBOARD_AUTH=user:password)')
    .option('--hide-payloads', 'never show or search payloads and results')
    .option('--allowed-host <host>', 'answer requests for this host name too (repeatable); on a loopback address only localhost, 127.0.0.1 and ::1 are answered otherwise', collectHost)
    .action(async (opts: DashboardCommandOptions) => {
      const { createDashboard, parseBasicAuth } = await importOptional(['hono', '@hono/node-server'], () => import('../../dashboard/index.js'));
      const auth = opts.basicAuth ?? process.env.PGQ_DASHBOARD_AUTH;
      // Checked before anything connects (with no database configured, before the embedded server starts).
      const basicAuth = auth ? parseBasicAuth(auth) : undefined;
      const pgq = await rt.open();
      try {
        const loopback = await listensOnLoopback(opts.host);
        const dashboard = createDashboard({
          pgq,
          basePath: opts.basePath,
          readOnly: Boolean(opts.readOnly),
          hidePayloads: Boolean(opts.hidePayloads),
          basicAuth,
          // On a loopback address, only the loopback names: a web page whose
          // own name is rebound to 127.0.0.1 cannot use the console. --host
          // too where a Host header can name it (not a hosts-file name with `_`:
          // added, the console refused to start).
          allowedHosts: loopback ? [...LOOPBACK_NAMES, ...(HOST_NAME.test(opts.host) ? [opts.host] : []), ...(opts.allowedHost ?? [])] : opts.allowedHost,
        });
        const server = http.createServer((req, res) => dashboard.node(req, res));
        await new Promise<void>((resolve, reject) => {
          server.once('error', (err) => reject(new PgqError('PGQ_LISTEN', `cannot listen on ${opts.host}:${opts.port}: ${err.message}`)));
          server.listen(opts.port, opts.host, resolve);
        });
        const address = server.address();
        const port = typeof address === 'object' && address ? address.port : opts.port;
        const notes = [opts.readOnly ? 'read-only' : '', auth ? 'basic auth on' : '', opts.hidePayloads ? 'payloads hidden' : ''].filter(Boolean);
        const warning = exposureWarning(opts.host, { loopback, basicAuth: Boolean(auth), readOnly: Boolean(opts.readOnly), allowedHosts: opts.allowedHost ?? [] });
        if (warning) rt.logger.warn({}, `pgq: ${warning}`);
        rt.logger.info({}, `pgq console at ${httpBase(opts.host, port)}${dashboard.basePath || ''}/${notes.length ? ` (${notes.join(', ')})` : ''}; Ctrl-C to stop`);
        await new Promise<void>((resolve) => {
          const stop = (): void => {
            process.off('SIGINT', stop);
            process.off('SIGTERM', stop);
            resolve();
          };
          process.on('SIGINT', stop);
          process.on('SIGTERM', stop);
        });
        await dashboard.close();
        server.closeAllConnections();
        await new Promise<void>((resolve) => server.close(() => resolve()));
      } finally {
        await pgq.close();
      }
    });
}
