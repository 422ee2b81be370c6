/**
 * Applies the migrations in `migrations/` with node-pg-migrate, inside the
 * configured schema (created if missing; an existing one needs no CREATE on
 * the database), recording them in
 * `<schema>.pgq_migrations`. Several processes may migrate at once: they queue
 * on an advisory lock of pgq's own for the schema (not node-pg-migrate's
 * default one, which an application's own migrations hold: a pgq.migrate()
 * called from one of those waited on it for ever) and the later ones find
 * nothing to do. node-pg-migrate is imported on the first migrate(), not with
 * `import 'pgq'`: it is the heaviest module pgq uses and most processes never
 * migrate.
 */
import { createHash } from 'node:crypto';
import type pg from 'pg';
import type { Logger } from '../core/logger.js';
import { quoteIdent } from './identifiers.js';

import { MIGRATIONS_DIR, SchemaNotReadyError, checkSchemaVersion } from './schema-version.js';
import { fromPg } from './queryable.js';

export { MIGRATIONS_DIR };

export interface MigrateResult {
  /** Names of the migrations this call applied (empty when up to date). */
  applied: string[];
}

/**
 * Migrations that were once committed and then taken back, each with what
 * undoes it on a database that ran it. Left in `pgq_migrations`, such a
 * name stopped every later migration (node-pg-migrate refuses to run one
 * that sorts before a migration already run).
 */
const WITHDRAWN: ReadonlyMap<string, string> = new Map([
  // Waiting rows left out of jobs_state_queue_idx; reverted (reads that mix
  // waiting and other states became sequential scans), and its timestamp
  // reused by 1764830000000_cancel_running. Its index goes back as it was.
  [
    '1764830000000_state_index_without_waiting',
    `CREATE INDEX jobs_state_queue_idx_restored ON jobs (state, queue, id) WHERE state <> 'succeeded';
     DROP INDEX jobs_state_queue_idx;
     ALTER INDEX jobs_state_queue_idx_restored RENAME TO jobs_state_queue_idx;`,
  ],
]);

/** The advisory lock pgq's migrations of `schema` take: a 48-bit hash, pgq's own. */
export function migrationLock(schema: string): number {
  return createHash('sha256').update(`pgq migrations ${schema}`).digest().readUIntBE(0, 6);
}

export async function migrate(pool: pg.Pool, schema: string, logger: Logger): Promise<MigrateResult> {
  // Up to date: nothing to run, and nothing to ask of the role. (node-pg-migrate
  // would still check its table, which a worker role may read but not alter,
  // and fail with "must be owner of table pgq_migrations" at every start.)
  let behind: SchemaNotReadyError;
  try {
    await checkSchemaVersion(fromPg(pool, false), schema);
    return { applied: [] };
  } catch (err) {
    if (!(err instanceof SchemaNotReadyError)) throw err;
    behind = err;
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
    await checkMayMigrate(client, schema, exists, behind);
    if (exists) await withdraw(client, schema, logger);
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
      lockValue: migrationLock(schema),
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

/**
 * pgq's first migrations (committed, so never changed) read the migrating
 * role's name as an identifier (`current_user::regrole`, folded to lower
 * case): a role whose name needs quotes ("AppOwner") fails in them with
 * "role appowner does not exist". Said before anything runs, with what to do.
 */
async function checkRoleNameReadable(client: pg.PoolClient, schema: string): Promise<void> {
  const { rows } = await client.query<{ role: string; quoted: boolean; early: boolean }>(
    // A name that the unquoted reading cannot read (a dot, a space, a leading quote: to_regrole() raises "invalid
    // name syntax" on those before PostgreSQL 16, so they are told by their text) or reads as another name (capitals).
    `SELECT current_user AS role,
            CASE WHEN current_user::text ~ '[.[:space:]]|^"' THEN true
                 ELSE to_regrole(current_user) IS DISTINCT FROM (SELECT oid FROM pg_roles WHERE rolname = current_user) END AS quoted,
            to_regclass(format('%I.pgq_migrations', $1::text)) IS NULL AS early`,
    [schema],
  );
  const { role, quoted } = rows[0]!;
  let early = rows[0]!.early;
  if (!quoted) return;
  if (!early) {
    const ran = await client.query(`SELECT 1 FROM ${quoteIdent(schema)}.pgq_migrations WHERE name = '1764710000000_workflow_enqueuer'`);
    early = ran.rowCount === 0;
  }
  if (early) {
    throw new SchemaNotReadyError(
      `role ${quoteIdent(role)} cannot make pgq's first migrations: its name needs quotes, and they read it unquoted (there it is "role ${role.toLowerCase()} does not exist" or "invalid name syntax"); migrate as a role whose name has no capitals, dots or spaces (it may enqueue and work as this role afterwards)`,
    );
  }
}

/**
 * Refuses, with what to do, a migration this role cannot make: pgq's tables
 * belong to the role that migrated them first, and only it (or a member of
 * it) can change them; a schema that does not exist yet needs CREATE on the
 * database. (node-pg-migrate failed with "must be owner of table
 * pgq_migrations" and a stack trace.)
 */
async function checkMayMigrate(client: pg.PoolClient, schema: string, exists: boolean, behind: SchemaNotReadyError): Promise<void> {
  await checkRoleNameReadable(client, schema);
  if (!exists) {
    const { rows } = await client.query<{ role: string; db: string; may: boolean }>(
      "SELECT current_user AS role, current_database() AS db, has_database_privilege(current_database(), 'CREATE') AS may",
    );
    const { role, db, may } = rows[0]!;
    if (!may) {
      throw new SchemaNotReadyError(
        `${behind.message}; schema ${schema} does not exist and role ${role} may not create schemas in database ${db}: create it for this role (CREATE SCHEMA ${quoteIdent(schema)} AUTHORIZATION ${quoteIdent(role)}) or migrate as a role that may`,
      );
    }
    return;
  }
  const { rows } = await client.query<{ role: string; owner: string | null; may: boolean | null; schema_may: boolean; writes: boolean | null }>(
    `SELECT current_user AS role, c.relowner::regrole::text AS owner, pg_has_role(current_user, c.relowner, 'USAGE') AS may,
            has_schema_privilege(current_user, $1, 'CREATE') AS schema_may,
            has_table_privilege(current_user, c.oid, 'INSERT, UPDATE, DELETE') AS writes
       FROM (SELECT 1) AS one
       LEFT JOIN pg_class c ON c.relname = 'pgq_migrations' AND c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = $1)`,
    [schema],
  );
  const { role, owner, may, schema_may, writes } = rows[0]!;
  if (owner !== null ? !may : !schema_may) {
    const who = owner !== null ? `the owner of pgq's tables, role ${owner}` : `a role with CREATE on schema ${schema}`;
    throw new SchemaNotReadyError(`${behind.message}; migrations change pgq's tables, which only ${who} can: run pgq migrate as that role (this connection is role ${role})`);
  }
  if (owner !== null && writes === false) {
    // Its rights on the table were revoked (pgq roles --worker <owner> did that, before it refused the owner).
    // `owner` is regrole text, quoted already where the name needs it.
    throw new SchemaNotReadyError(
      `${behind.message}; role ${role} may not write ${schema}.pgq_migrations, the table that records migrations (its rights on it were revoked, as pgq roles naming the owner as a worker role did before it refused that): GRANT ALL ON ${quoteIdent(schema)}.pgq_migrations TO ${owner}, then migrate`,
    );
  }
}

/** Undoes and forgets the withdrawn migrations a database ran (WITHDRAWN), under the migrations' lock, in one transaction. */
async function withdraw(client: pg.PoolClient, schema: string, logger: Logger): Promise<void> {
  const table = `${quoteIdent(schema)}.pgq_migrations`;
  const present = (await client.query<{ present: boolean }>('SELECT to_regclass($1) IS NOT NULL AS present', [table])).rows[0]!.present;
  if (!present) return;
  const names = [...WITHDRAWN.keys()];
  if ((await client.query(`SELECT 1 FROM ${table} WHERE name = ANY($1)`, [names])).rowCount === 0) return;
  await client.query('BEGIN');
  try {
    await client.query('SELECT pg_advisory_xact_lock($1)', [migrationLock(schema)]);
    const found = (await client.query<{ name: string }>(`SELECT name FROM ${table} WHERE name = ANY($1) ORDER BY name DESC`, [names])).rows;
    await client.query(`SELECT set_config('search_path', $1, true)`, [quoteIdent(schema)]);
    for (const { name } of found) {
      await client.query(WITHDRAWN.get(name)!);
      await client.query(`DELETE FROM ${table} WHERE name = $1`, [name]);
      logger.info({ migration: name }, `pgq undid withdrawn migration ${name}`);
    }
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}
