/**
 * What every command shares: the global options, the logger, and a Pgq built
 * from --database-url, DATABASE_URL, or the embedded PostgreSQL.
 */
import { pino } from 'pino';
import pg from 'pg';
import { Pgq } from '../client.js';
import type { AnyTask } from '../task.js';
import type { Logger } from '../core/logger.js';
import { PgqError } from '../core/errors.js';
import { validateSchemaName } from '../db/identifiers.js';
import { ensureEmbedded } from './embedded.js';
import { redact } from './format.js';
import { isMissing, OPTIONAL_PACKAGES } from '../core/optional-packages.js';

export interface GlobalOptions {
  schema: string;
  databaseUrl?: string;
  logLevel: string;
}

/** The levels `--log-level` accepts, most verbose first. */
export { LOG_LEVELS } from '../core/logger.js';

/**
 * The CLI's logger on stderr: JSON lines, or on a terminal one readable line
 * per event through pino-pretty (an optional dependency, imported only here;
 * without it a terminal gets JSON lines and a note saying what to install).
 */
export async function makeLogger(level: string): Promise<Logger> {
  if (process.stderr.isTTY) {
    try {
      const { default: pretty } = await import('pino-pretty');
      const stream = pretty({
        colorize: true,
        destination: 2,
        singleLine: true,
        translateTime: 'SYS:HH:MM:ss',
        ignore: 'pid,hostname,name,jobId,task,attempt,workerId',
      });
      const logger: Logger = pino({ name: 'pgq', level }, stream);
      return logger;
    } catch (err) {
      if (!isMissing(err, 'pino-pretty')) throw err;
      process.stderr.write(`pgq: logs are JSON lines; install pino-pretty to ${OPTIONAL_PACKAGES['pino-pretty']}\n`);
    }
  }
  return plainLogger(level);
}

/** JSON lines on stderr. */
export function plainLogger(level: string): Logger {
  return pino({ name: 'pgq', level }, pino.destination(2));
}

/** Set when this process started the embedded server (the demo stops it again). */
export const embeddedState = { startedHere: false };

/** The libpq environment variables that say where the database is (PGPORT, PGPASSWORD and the rest only refine it). */
const LIBPQ_VARIABLES = ['PGHOST', 'PGDATABASE', 'PGUSER'] as const;

/** The database URL to use: the flag, DATABASE_URL, libpq's PGHOST/PGDATABASE/PGUSER, else the embedded server (started when needed). */
export async function resolveDatabaseUrl(opts: GlobalOptions, logger: Logger): Promise<string> {
  // Given but empty (an unset variable in `--database-url "$URL"`): an error, not the embedded server.
  if (opts.databaseUrl !== undefined && opts.databaseUrl.trim() === '') {
    throw new PgqError('PGQ_USAGE', '--database-url is empty; give a postgres:// URL, or leave the flag out to use DATABASE_URL, libpq\'s PG* variables or the embedded PostgreSQL');
  }
  // Set but empty (a deployment whose secret did not arrive): an error too, not a worker of an empty embedded
  // database beside the real one, idle while the application's jobs wait.
  if (opts.databaseUrl === undefined && process.env.DATABASE_URL !== undefined && process.env.DATABASE_URL.trim() === '') {
    throw new PgqError('PGQ_USAGE', "DATABASE_URL is set but empty; give it a postgres:// URL, or unset it to use libpq's PG* variables or the embedded PostgreSQL");
  }
  const url = opts.databaseUrl ?? process.env.DATABASE_URL;
  if (url) return checkedUrl(url, opts.databaseUrl !== undefined ? '--database-url' : 'DATABASE_URL');
  // libpq's variables, as psql and an application's `new pg.Pool()` read them: a container configured
  // with them got an embedded database of its own here, and `pgq migrate` migrated that one.
  const libpq = LIBPQ_VARIABLES.filter((name) => process.env[name]);
  if (libpq.length > 0) {
    const shown = ['PGHOST', 'PGPORT', 'PGDATABASE', 'PGUSER'].filter((name) => process.env[name]).map((name) => `${name}=${process.env[name]}`);
    process.stderr.write(`pgq: no --database-url or DATABASE_URL; connecting with libpq's environment variables (${shown.join(', ')})\n`);
    return 'postgres://';
  }
  const info = await ensureEmbedded();
  if (info.started) embeddedState.startedHere = true;
  const how = info.started ? 'started' : 'reusing';
  process.stderr.write(`pgq: no --database-url or DATABASE_URL; ${how} embedded PostgreSQL (data in ./.pgq) at ${info.url}\n`);
  logger.debug({ url: info.url }, 'embedded PostgreSQL');
  return info.url;
}

/**
 * The URL as given, if it reads as one node-postgres takes (a postgres: or
 * postgresql: URL, its socket: form, or a socket directory); else an error
 * naming where it came from, rather than a DNS error about a host it made up.
 */
function checkedUrl(url: string, from: string): string {
  if (url.startsWith('/')) return url;
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url)?.[1]?.toLowerCase();
  if (scheme !== 'postgres' && scheme !== 'postgresql' && scheme !== 'socket') {
    // The value itself is not echoed: it may hold a password.
    const got = scheme === undefined ? 'it does not start with postgres://' : `its scheme is ${scheme}:`;
    throw new PgqError('PGQ_BAD_OPTION', `${from} is not a PostgreSQL URL (postgres://user:password@host:5432/database): ${got}`);
  }
  return url;
}

/**
 * What a command does with the schema before it runs: `check` (the default)
 * verifies read-only that it is migrated; only `pgq migrate` (`none`, it
 * migrates itself) and the demo (`migrate`) change it.
 */
export type SchemaPreparation = 'check' | 'migrate' | 'none';

/** A connected Pgq on a ready schema; fails with a clear message when the database cannot be reached or the schema is not migrated. */
export async function openPgq(opts: GlobalOptions, logger: Logger, tasks: AnyTask[] = [], options: { schema?: SchemaPreparation } = {}): Promise<Pgq> {
  validateSchemaName(opts.schema);
  const url = await resolveDatabaseUrl(opts, logger);
  await checkReachable(url);
  const pgq = new Pgq({ connectionString: url, schema: opts.schema, tasks, logger });
  try {
    if (options.schema === 'migrate') await pgq.migrate();
    else if (options.schema !== 'none') await pgq.checkSchema();
  } catch (err) {
    await pgq.close();
    throw err;
  }
  return pgq;
}

async function checkReachable(url: string): Promise<void> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 10_000 });
  try {
    await client.connect();
    await client.query('SELECT 1');
  } catch (err) {
    throw new PgqError('PGQ_UNREACHABLE', `cannot reach PostgreSQL at ${redact(url)}: ${err instanceof Error ? err.message : String(err)}`);
  } finally {
    await client.end().catch(() => undefined);
  }
}
