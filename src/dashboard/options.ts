/** The console's options, checked once at construction; all defaults here. */
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { ValidationError } from '../core/errors.js';
import { zodToValidationError } from '../task.js';
import type { Pgq } from '../client.js';

/** A host name or address as `allowedHosts` takes it: no port, no scheme (an IPv6 address has two colons at least: `cafe:8080` is a host and a port). */
export const HOST_NAME = /^(\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f.]*:[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*|[A-Za-z0-9.-]+)$/;

/** Options of `createDashboard`. */
export interface DashboardOptions {
  /** The Pgq the console reads and acts through (its schema is the one shown). */
  pgq: Pgq;
  /** Path the console is served under, e.g. `/admin/jobs`. Default `/`. */
  basePath?: string | undefined;
  /** Hide every action and refuse every state-changing request with 403. Default false. */
  readOnly?: boolean | undefined;
  /** Require HTTP basic auth with these credentials (401 without them). */
  basicAuth?: { username: string; password: string } | undefined;
  /** Never show or search payloads and results (for payloads that hold personal data). Default false. */
  hidePayloads?: boolean | undefined;
  /** How often the one shared live snapshot is read while anyone watches. Default 2,000 ms. */
  pollIntervalMs?: number | undefined;
  /** Secret the CSRF token is derived from. Default: random for this process. */
  secret?: string | undefined;
  /**
   * Answer only requests whose `Host` names one of these hosts (a name or
   * address, without the port); others get 421. Stops DNS rebinding, where a
   * web page's own name is pointed at a console on the viewer's machine.
   * Default: any host (a console mounted in your app lives under your names).
   * `pgq dashboard` on a loopback address sets `localhost`, `127.0.0.1`, `::1`.
   */
  allowedHosts?: string[] | undefined;
}

export interface ResolvedDashboardOptions {
  pgq: Pgq;
  /** Always starts with `/` and ends without one (`''` for the root). */
  basePath: string;
  readOnly: boolean;
  basicAuth: { username: string; password: string } | null;
  hidePayloads: boolean;
  pollIntervalMs: number;
  secret: string;
  /** Lower-case host names, IPv6 addresses without brackets; null: any. */
  allowedHosts: ReadonlySet<string> | null;
}

const schema = z
  .object({
    basePath: z
      .string()
      .regex(/^\/[A-Za-z0-9._~\-/]*$/, 'must be a path such as / or /admin/jobs')
      // A URL path collapses these segments: the console's own links under /a/../b would lead elsewhere.
      .refine((p) => !p.split('/').some((segment) => segment === '.' || segment === '..'), 'must not contain . or .. segments')
      // An empty segment: the console's links and its script's requests under //jobs went to the host "jobs"
      // (a protocol-relative URL), the CSRF token with them.
      .refine((p) => !p.replace(/\/+$/, '').includes('//'), 'must not contain // (an empty segment): a link to //name/… leads to the host "name"')
      .default('/'),
    readOnly: z.boolean().default(false),
    basicAuth: z.object({ username: z.string().min(1).refine((u) => !u.includes(':'), 'must not contain ":"'), password: z.string().min(1) }).optional(),
    hidePayloads: z.boolean().default(false),
    pollIntervalMs: z.number().int().min(200).max(60_000).default(2_000),
    secret: z.string().min(16).optional(),
    allowedHosts: z.array(z.string().regex(HOST_NAME, 'must be a host name or address without a port')).min(1).optional(),
  })
  .strict();

export function resolveDashboardOptions(options: DashboardOptions): ResolvedDashboardOptions {
  if (options === null || typeof options !== 'object') throw new ValidationError('dashboard', 'expects an options object');
  const { pgq, ...rest } = options;
  if (!pgq || typeof pgq.listJobs !== 'function') throw new ValidationError('dashboard.pgq', 'must be a Pgq instance');
  const parsed = schema.safeParse(rest);
  if (!parsed.success) throw zodToValidationError(parsed.error, 'dashboard');
  const o = parsed.data;
  return Object.freeze({
    pgq,
    basePath: o.basePath.replace(/\/+$/, ''),
    readOnly: o.readOnly,
    basicAuth: o.basicAuth ?? null,
    hidePayloads: o.hidePayloads,
    pollIntervalMs: o.pollIntervalMs,
    secret: o.secret ?? randomBytes(32).toString('hex'),
    allowedHosts: o.allowedHosts ? new Set(o.allowedHosts.map((h) => h.toLowerCase().replace(/^\[(.*)\]$/, '$1'))) : null,
  });
}

/** The host name of a `Host` header, lower-case, an IPv6 address without its brackets; null when there is none. */
export function hostOf(header: string | undefined): string | null {
  if (!header) return null;
  const h = header.trim().toLowerCase();
  const v6 = /^\[([^\]]+)\](?::\d+)?$/.exec(h);
  if (v6) return v6[1]!;
  return h.replace(/:\d+$/, '') || null;
}

/** Reads `user:password` (the --basic-auth flag, PGQ_DASHBOARD_AUTH). */
export function parseBasicAuth(value: string): { username: string; password: string } {
  const at = value.indexOf(':');
  if (at < 1 || at === value.length - 1) throw new ValidationError('basicAuth', 'must be user:password');
  return { username: value.slice(0, at), password: value.slice(at + 1) };
}
