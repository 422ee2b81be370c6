/**
 * Applies the migrations in `migrations/` with node-pg-migrate, inside the
 * configured schema (created if missing; an existing one needs no CREATE on
 * the database), recording them in
 * `<schema>.pgq_migrations`. Several processes may migrate at once: they queue
 * on node-pg-migrate's advisory lock and the later ones find nothing to do.
 * node-pg-migrate is imported on the first migrate(), not with `import 'pgq'`:
 * it is the heaviest module pgq uses and most processes never migrate.
 */
import type pg from 'pg';
import type { Logger } from '../core/logger.js';

import { MIGRATIONS_DIR, SchemaNotReadyError, checkSchemaVersion } from './schema-version.js';
import { fromPg } from './queryable.js';

export { MIGRATIONS_DIR };

export interface MigrateResult {
  /** Names of the migrations this call applied (empty when up to date). */
  applied: string[];
}

export async function migrate(pool: pg.Pool, schema: string, logger: Logger): Promise<MigrateResult> {
  // Up to date: nothing to run, and nothing to ask of the role. (node-pg-migrate
  // would still check its table, which a worker role may read but not alter,
  // and fail with "must be owner of table pgq_migrations" at every start.)
  try {
    await checkSchemaVersion(fromPg(pool, false), schema);
    return { applied: [] };
  } catch (err) {
    if (!(err instanceof SchemaNotReadyError)) throw err;
  }
  const { runner } = await import('./node-pg-migrate.js');
  const client = await pool.connect();
  let searchPath: string | null = null;
  try {
    searchPath = (await client.query<{ search_path: string }>('SHOW search_path')).rows[0]?.search_path ?? null;
    // CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when the
    // schema is there: a role that owns a schema made for it by someone else
    // (the usual least-privilege setup) could not migrate it.
    const exists = (await client.query<{ exists: boolean }>('SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1) AS exists', [schema])).rows[0]!.exists;
    const ran = await runner({
      dbClient: client,
      dir: MIGRATIONS_DIR,
      direction: 'up',
      count: Infinity,
      schema,
      createSchema: !exists,
      migrationsSchema: schema,
      createMigrationsSchema: !exists,
      migrationsTable: 'pgq_migrations',
      singleTransaction: true,
      checkOrder: true,
      advisoryLockMode: 'wait',
      logger: {
        debug: () => undefined,
        info: (msg: string) => logger.debug({}, msg),
        warn: (msg: string) => logger.warn({}, msg),
        error: (msg: string) => logger.error({}, msg),
      },
    });
    return { applied: ran.map((m) => m.name) };
  } finally {
    // The runner set this connection's search_path to pgq's schema: a pool
    // that is the application's gets the connection back as it was (or not
    // at all, when that cannot be done).
    const restored = searchPath !== null && (await client.query("SELECT set_config('search_path', $1, false)", [searchPath]).then(() => true, () => false));
    client.release(!restored);
  }
}
