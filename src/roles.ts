/**
 * Least-privilege roles for pgq's tables.
 *
 * - The enqueuer role may add jobs and read back the jobs it added — nothing
 *   else: it cannot see other roles' payloads or results (row-level security
 *   on `jobs.created_by`), cannot change any job, and cannot touch workers,
 *   leadership, schedules or queue control (it can neither read nor change
 *   `queues`: no pausing, no limits).
 * - The worker role may run workers: claim, complete, heartbeat, lead, rescue,
 *   prune and fire schedules, and read `queues` (limited claims lock a
 *   queue's row and spend its rate tokens). It cannot change the schema.
 *
 * Row-level security applies to every role except the tables' owner (the role
 * that ran the migrations) and superusers, so the owner's own pgq keeps its
 * full speed. Re-run after a migration that adds tables.
 */
import type pg from 'pg';
import { ValidationError } from './core/errors.js';
import { quoteIdent, validateSchemaName } from './db/identifiers.js';

export interface RolesOptions {
  /** Role that may only enqueue (and read its own jobs). Created NOLOGIN if missing. */
  enqueuer?: string;
  /** Role that runs workers. Created NOLOGIN if missing. */
  worker?: string;
}

const ROLE = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;

/** The SQL that sets the roles up, idempotent; `pgq roles --print` shows it. */
export function rolesSql(schema: string, options: RolesOptions): string[] {
  validateSchemaName(schema);
  if (!options.enqueuer && !options.worker) throw new ValidationError('roles', 'name an enqueuer role, a worker role, or both');
  for (const [key, name] of Object.entries(options)) {
    if (name !== undefined && (typeof name !== 'string' || !ROLE.test(name))) {
      throw new ValidationError(`roles.${key}`, `${JSON.stringify(name)} is not a plain identifier`);
    }
  }
  if (options.enqueuer && options.enqueuer === options.worker) {
    throw new ValidationError('roles', 'the enqueuer and worker roles must differ');
  }
  const s = quoteIdent(schema);
  const statements: string[] = [`ALTER TABLE ${s}.jobs ENABLE ROW LEVEL SECURITY`];
  const createRole = (name: string): string =>
    `DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = ${literal(name)}) THEN CREATE ROLE ${quoteIdent(name)} NOLOGIN; END IF; END $$`;
  if (options.enqueuer) {
    const r = quoteIdent(options.enqueuer);
    const policy = quoteIdent(`pgq_enqueuer_${options.enqueuer}`);
    statements.push(
      createRole(options.enqueuer),
      `GRANT USAGE ON SCHEMA ${s} TO ${r}`,
      `GRANT SELECT, INSERT ON ${s}.jobs TO ${r}`,
      `DROP POLICY IF EXISTS ${policy} ON ${s}.jobs`,
      `CREATE POLICY ${policy} ON ${s}.jobs AS PERMISSIVE FOR ALL TO ${r}
         USING (created_by = current_user::regrole)
         WITH CHECK (created_by = current_user::regrole AND state IN ('available', 'scheduled') AND attempts = 0)`,
    );
  }
  if (options.worker) {
    const r = quoteIdent(options.worker);
    const policy = quoteIdent(`pgq_worker_${options.worker}`);
    statements.push(
      createRole(options.worker),
      `GRANT USAGE ON SCHEMA ${s} TO ${r}`,
      `GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA ${s} TO ${r}`,
      `REVOKE ALL ON ${s}.pgq_migrations FROM ${r}`,
      `GRANT SELECT ON ${s}.pgq_migrations TO ${r}`,
      `GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA ${s} TO ${r}`,
      `DROP POLICY IF EXISTS ${policy} ON ${s}.jobs`,
      `CREATE POLICY ${policy} ON ${s}.jobs AS PERMISSIVE FOR ALL TO ${r} USING (true) WITH CHECK (true)`,
    );
  }
  return statements;
}

/** Runs `rolesSql` in one transaction. */
export async function setupRoles(pool: pg.Pool, schema: string, options: RolesOptions): Promise<void> {
  const statements = rolesSql(schema, options);
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    for (const statement of statements) await client.query(statement);
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
}

function literal(value: string): string {
  return `'${value.replaceAll("'", "''")}'`;
}
