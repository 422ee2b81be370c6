/**
 * Per-file test helpers: a schema of its own on the shared test database, Pgq
 * instances closed after the test that made them (or after the file, for
 * those made outside a test), and waits on events, never on fixed sleeps.
 */
import { randomBytes } from 'node:crypto';
import { Kysely, sql } from 'kysely';
import pg from 'pg';
import { afterAll, afterEach, beforeEach, inject } from 'vitest';
import { Pgq, type PgqOptions } from '../../src/index.js';
import type { PgqDatabase } from '../../src/db/tables.js';

export const databaseUrl = (): string => inject('databaseUrl');

export function withAppName(url: string, name: string): string {
  const u = new URL(url);
  u.searchParams.set('application_name', name);
  return u.toString();
}

export interface TestContext {
  schema: string;
  url: string;
  /** An admin pool (not pgq's) for assertions and fault injection. */
  admin: pg.Pool;
  /** A Pgq on this file's schema, closed after the test that made it (after the file when made outside a test). */
  pgq(options?: Partial<PgqOptions>): Pgq;
  /** Migrated Pgq. */
  migrated(options?: Partial<PgqOptions>): Promise<Pgq>;
  /** Resolves once `n` of this file's Pgq connections wait on a lock (a row another transaction holds). */
  lockWaiters(n: number, what: string): Promise<void>;
}

/** Call once at the top of a test file. */
export function useTestSchema(label: string): TestContext {
  const schema = `t_${label.replace(/[^a-z0-9_]/gi, '_').toLowerCase()}_${randomBytes(3).toString('hex')}`;
  const url = withAppName(databaseUrl(), `pgq_${schema}`);
  const admin = new pg.Pool({ connectionString: databaseUrl(), max: 4 });
  admin.on('error', () => undefined);
  const instances: Pgq[] = [];
  // Instances made during a test are closed after it, so a file's pools do
  // not pile up on a server with few connections (max_connections = 100).
  let madeBeforeTest = 0;
  beforeEach(() => {
    madeBeforeTest = instances.length;
  });
  afterEach(async () => {
    await Promise.all(instances.splice(madeBeforeTest).map((p) => p.close()));
  });
  afterAll(async () => {
    await Promise.all(instances.map((p) => p.close()));
    await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => undefined);
    await admin.end();
  });
  const ctx: TestContext = {
    schema,
    url,
    admin,
    pgq(options = {}) {
      const instance = new Pgq({ connectionString: url, schema, ...options });
      instances.push(instance);
      return instance;
    },
    async migrated(options = {}) {
      const instance = ctx.pgq(options);
      await instance.migrate();
      return instance;
    },
    async lockWaiters(n, what) {
      try {
        await until(async () => {
          const { rows } = await admin.query(`SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND application_name = $1`, [`pgq_${schema}`]);
          return rows.length === n;
        }, { what });
      } catch (err) {
        // What the sessions were doing when the wait gave up: which statement waited, or none did.
        const { rows } = await admin.query<{ pid: number; state: string; wait: string | null; xact_age_ms: number | null; query: string }>(
          `SELECT pid, state, wait_event_type || ':' || wait_event AS wait,
                  (extract(epoch FROM clock_timestamp() - xact_start) * 1000)::int AS xact_age_ms, left(query, 200) AS query
             FROM pg_stat_activity WHERE application_name = $1 ORDER BY pid`,
          [`pgq_${schema}`],
        );
        const sessions = rows.map((r) => `  pid ${r.pid} ${r.state}${r.wait ? ` waiting on ${r.wait}` : ''}${r.xact_age_ms !== null ? `, in a transaction for ${r.xact_age_ms} ms` : ''}: ${r.query.replace(/\s+/g, ' ')}`);
        throw new Error(`${(err as Error).message} (${n} session(s) waiting on a lock expected); pgq's sessions then:\n${sessions.join('\n') || '  none'}`);
      }
    },
  };
  return ctx;
}

/** Resolves when `check` returns a truthy value; polls (for database state) every `everyMs`. */
export async function until<T>(check: () => Promise<T> | T, options: { timeoutMs?: number; everyMs?: number; what?: string } = {}): Promise<NonNullable<T>> {
  const deadline = Date.now() + (options.timeoutMs ?? 20_000);
  for (;;) {
    const value = await check();
    if (value) return value as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${options.what ?? 'condition'}`);
    await new Promise((r) => setTimeout(r, options.everyMs ?? 25));
  }
}

/** A promise with its resolve function, for handlers that signal tests. */
export function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void; reject: (err: unknown) => void } {
  let resolve!: (value: T) => void;
  let reject!: (err: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/**
 * Rows of `<schema>.jobs` this transaction has read so far, fetched through
 * indexes or read by scans (pg_stat_xact_user_tables): how a test tells a
 * plan that reads by id from one that reads the table again and again,
 * without timing anything. `db` is a client inside BEGIN or a Kysely
 * transaction. On PostgreSQL 15 it includes what the connection's earlier
 * transactions read and the server has not reported yet (it reports at most
 * once a second): on a connection used before, subtract a reading taken at
 * the start.
 */
export async function jobRowsRead(db: Pick<pg.ClientBase, 'query'> | Kysely<PgqDatabase>, schema: string): Promise<number> {
  const { rows } =
    db instanceof Kysely
      ? await sql<{ n: string }>`SELECT coalesce(idx_tup_fetch, 0) + seq_tup_read AS n FROM pg_stat_xact_user_tables WHERE schemaname = ${schema} AND relname = 'jobs'`.execute(db)
      : await db.query<{ n: string }>(`SELECT coalesce(idx_tup_fetch, 0) + seq_tup_read AS n FROM pg_stat_xact_user_tables WHERE schemaname = $1 AND relname = 'jobs'`, [schema]);
  return Number(rows[0]!.n);
}
