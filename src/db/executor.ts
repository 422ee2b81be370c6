import type pg from 'pg';
import { CompiledQuery, type QueryResult } from 'kysely';
import { PgqError } from '../core/errors.js';

/**
 * The one seam through which pgq runs SQL: text plus parameter values. The
 * pgq pool, a caller's `pg` client inside BEGIN, or a caller's Kysely
 * transaction all become one of these, so an enqueue commits or rolls back
 * with whatever transaction it was handed.
 */
export interface SqlExecutor {
  query<Row>(statement: Statement): Promise<Row[]>;
}

/** A SQL statement with a fixed shape. `name` makes pg prepare it once per connection. */
export interface Statement {
  name?: string;
  text: string;
  values: unknown[];
}

/** Anything with pg's `query(config)`: a `pg.Pool`, `pg.Client` or pool client. */
export interface PgQueryable {
  query(config: pg.QueryConfig): Promise<pg.QueryResult>;
}

/** Anything with Kysely's `executeQuery`: a `Kysely` instance or a `Transaction`. */
export interface KyselyQueryable {
  executeQuery<R>(query: CompiledQuery<R>): Promise<QueryResult<R>>;
}

/**
 * The caller's database handle for `db` options: a `pg` client inside BEGIN
 * (or a pool, for autocommit), or a Kysely `Transaction`/`Kysely`.
 */
export type DbHandle = PgQueryable | KyselyQueryable;

export function pgExecutor(db: PgQueryable, prepare = true): SqlExecutor {
  return {
    async query<Row>(statement: Statement): Promise<Row[]> {
      const config: pg.QueryConfig = { text: statement.text, values: statement.values };
      if (prepare && statement.name) config.name = statement.name;
      const result = await db.query(config);
      return result.rows as Row[];
    },
  };
}

export function kyselyExecutor(db: KyselyQueryable): SqlExecutor {
  return {
    async query<Row>(statement: Statement): Promise<Row[]> {
      const result = await db.executeQuery(CompiledQuery.raw(statement.text, statement.values));
      return result.rows as Row[];
    },
  };
}

/** Wraps whatever the caller passed as `db`. */
export function executorFor(db: DbHandle): SqlExecutor {
  if (db !== null && typeof db === 'object') {
    if (typeof (db as KyselyQueryable).executeQuery === 'function') return kyselyExecutor(db as KyselyQueryable);
    if (typeof (db as PgQueryable).query === 'function') return pgExecutor(db as PgQueryable, false);
  }
  throw new PgqError(
    'PGQ_BAD_DB',
    'options.db must be a pg client/pool (with query()) or a Kysely instance/transaction (with executeQuery())',
  );
}
