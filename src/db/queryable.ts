/**
 * What pgq runs its SQL on. Every database handle (pgq's pool, a caller's
 * `pg` client inside BEGIN, a caller's Kysely transaction) becomes a
 * `Queryable`: one `query(statement)` that takes text plus parameter values
 * and returns rows, so an enqueue commits or rolls back with whatever
 * transaction it was handed. (Not to be confused with the worker's
 * `Executor`, which runs handlers.)
 */
import type pg from 'pg';
import { CompiledQuery } from './kysely.js';
import { PgqError } from '../core/errors.js';

/** The one seam through which pgq runs SQL. */
export interface Queryable {
  query<Row>(statement: Statement): Promise<Row[]>;
}

/** A SQL statement with a fixed shape. `name` makes pg prepare it once per connection. */
export interface Statement {
  name?: string;
  text: string;
  values: unknown[];
  /** On a Queryable made by `fromPg`: how long to wait for the answer (on a `TimedPool`, instead of its own limit). */
  timeoutMs?: number;
}

/** Anything with pg's `query(config)`: a `pg.Pool`, `pg.Client` or pool client. */
export interface PgQueryable {
  query(config: pg.QueryConfig): Promise<pg.QueryResult>;
}

/**
 * Anything with Kysely's `executeQuery`: a `Kysely` instance or a
 * `Transaction`, of the application's own Kysely version. Typed by what pgq
 * uses of it, not by Kysely's types: an application's Kysely 0.27 (its
 * query nodes typed otherwise than pgq's 0.28) works at run time and
 * type-checks as well.
 */
export interface KyselyQueryable {
  // `never`: any Kysely's own parameter type takes what pgq passes (a `CompiledQuery.raw`), whatever its version names it.
  executeQuery<R>(query: never): Promise<{ readonly rows: R[] }>;
  /** Kysely's own: the same connection without the caller's plugins. */
  withoutPlugins?(): KyselyQueryable;
}

/**
 * The caller's database handle for `db` options: a `pg` client inside BEGIN
 * (or a pool, for autocommit), or a Kysely `Transaction`/`Kysely`.
 */
export type DbHandle = PgQueryable | KyselyQueryable;

/**
 * pg's pool, client or pool client (or a `TimedPool`); `prepare` names
 * hot-path statements so pg prepares them once per connection. A
 * statement's `timeoutMs` becomes pg's `query_timeout`.
 */
export function fromPg(db: PgQueryable, prepare = true, callers = false): Queryable {
  return {
    async query<Row>(statement: Statement): Promise<Row[]> {
      // pg reads query_timeout from the query's config too; its types omit it.
      const config: pg.QueryConfig & { query_timeout?: number } = { text: statement.text, values: statement.values };
      if (prepare && statement.name) config.name = statement.name;
      if (statement.timeoutMs !== undefined) config.query_timeout = statement.timeoutMs;
      const result = (await db.query(config)) as pg.QueryResult | undefined;
      // A handle of another library with a query() of its own (pg-promise's answers with the rows, a
      // callback-style one with nothing) failed further on with a TypeError that named nothing.
      if (callers && (result === null || typeof result !== 'object' || !Array.isArray(result.rows))) throw notPgAnswer();
      return result!.rows as Row[];
    },
  };
}

function notPgAnswer(): PgqError {
  return new PgqError(
    'PGQ_BAD_DB',
    'options.db.query() did not answer as pg does (a result with rows): options.db must be a pg client, pool or pool client, or a Kysely instance or transaction. ' +
      'The statement pgq sent may have run in your transaction: roll it back',
  );
}

/** A `Kysely` instance or `Transaction`. */
export function fromKysely(db: KyselyQueryable): Queryable {
  // pgq's statements read their rows by column name: a caller's result
  // plugins (CamelCasePlugin turns run_at into runAt) must not rename them.
  const plain = typeof db.withoutPlugins === 'function' ? db.withoutPlugins() : db;
  return {
    async query<Row>(statement: Statement): Promise<Row[]> {
      // What every Kysely version's executeQuery takes (KyselyQueryable leaves its parameter to the version's own type).
      const run = plain as unknown as { executeQuery(query: CompiledQuery): Promise<{ readonly rows: unknown[] }> };
      const result = await run.executeQuery(CompiledQuery.raw(statement.text, statement.values));
      return result.rows as Row[];
    },
  };
}

/** Wraps whatever the caller passed as `db`. */
export function fromDbHandle(db: DbHandle): Queryable {
  if (db !== null && typeof db === 'object') {
    if (typeof (db as KyselyQueryable).executeQuery === 'function') return fromKysely(db as KyselyQueryable);
    if (typeof (db as PgQueryable).query === 'function') return fromPg(db as PgQueryable, false, true);
  }
  throw new PgqError(
    'PGQ_BAD_DB',
    'options.db must be a pg client/pool (with query()) or a Kysely instance/transaction (with executeQuery())',
  );
}
