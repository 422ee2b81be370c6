/**
 * Least-privilege roles for pgq's tables.
 *
 * - The enqueuer role may add jobs and workflows and read back the ones it
 *   added — nothing else: it cannot see other roles' payloads, results,
 *   workflows or dependency edges (row-level security on `created_by` of
 *   `jobs`, `workflows` and `job_dependencies`), cannot change or cancel
 *   any job, and cannot touch workers, leadership, schedules or queue control
 *   (it can neither read nor change `queues`: no pausing, no limits). Its
 *   jobs start `available` or `scheduled`, or `blocked` in a workflow;
 *   triggers (migrations/…_workflow_enqueuer.sql) refuse a job joining
 *   another role's workflow and an edge that does not join two of its own
 *   jobs of one workflow, which a policy cannot see within the one insert
 *   statement.
 * - The worker role may run workers: claim, complete, heartbeat, lead, rescue,
 *   prune and fire schedules, and read `queues` (limited claims lock a
 *   queue's row and spend its rate tokens; a worker adds the row of a queue
 *   it is the first to serve). It can neither pause a queue nor change a
 *   limit, and it cannot change the schema.
 *
 * Row-level security applies to every role except the tables' owner (the role
 * that ran the migrations) and superusers, so the owner's own pgq keeps its
 * full speed. On `workflows` and `job_dependencies` one permissive policy
 * lets every role with table privileges see every row, and a restrictive
 * policy per enqueuer role narrows that role to its own: so enabling it
 * there can never hide rows from a worker role set up by an older pgq,
 * whose trigger work reads those tables. Re-run after upgrading pgq: a
 * migration may add tables or columns the roles need.
 */
import { createHash } from 'node:crypto';
import type pg from 'pg';
import { ValidationError, optionsArgument } from './core/errors.js';
import { quoteIdent, validateSchemaName } from './db/identifiers.js';

export interface RolesOptions {
  /** Role that may only enqueue (and read its own jobs). Created NOLOGIN if missing. */
  enqueuer?: string | undefined;
  /** Role that runs workers. Created NOLOGIN if missing. */
  worker?: string | undefined;
}

const ROLE = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;

/**
 * A role's policy name: `<prefix><role>`, or, where that is longer than the
 * 63 characters PostgreSQL keeps (it would cut it, and two long roles would
 * share a policy), its first 54 characters and a hash of the role.
 */
function policyName(prefix: string, role: string): string {
  const name = `${prefix}${role}`;
  if (name.length <= 63) return name;
  return `${name.slice(0, 54)}_${createHash('sha256').update(role).digest('hex').slice(0, 8)}`;
}

/** The SQL that sets the roles up, idempotent; `pgq roles --print` shows it. */
export function rolesSql(schema: string, options: RolesOptions): string[] {
  validateSchemaName(schema);
  optionsArgument(options, 'roles', ['enqueuer', 'worker']);
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
  const workflowTables = [`${s}.workflows`, `${s}.job_dependencies`];
  // The owner of pgq's tables has every right on them already, and the grants below would take some of its
  // own away (a worker role's REVOKE on pgq_migrations left the owner unable to migrate): refused, changing nothing.
  const notOwner = (key: string, role: string): string =>
    `DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner
                             WHERE c.oid = to_regclass(${literal(`${s}.pgq_migrations`)}) AND r.rolname = ${literal(role)}) THEN
       RAISE EXCEPTION ${literal(`roles.${key}: role ${role} owns pgq's tables in schema ${schema}: it needs no grants, and these would take its own rights away (it could no longer migrate); name a role of its own`)};
     END IF; END $$`;
  const statements: string[] = [];
  for (const [key, role] of Object.entries(options)) if (typeof role === 'string') statements.push(notOwner(key, role));
  statements.push(`ALTER TABLE ${s}.jobs ENABLE ROW LEVEL SECURITY`);
  for (const table of workflowTables) {
    statements.push(
      `ALTER TABLE ${table} ENABLE ROW LEVEL SECURITY`,
      `DROP POLICY IF EXISTS pgq_all_roles ON ${table}`,
      `CREATE POLICY pgq_all_roles ON ${table} AS PERMISSIVE FOR ALL TO PUBLIC USING (true) WITH CHECK (true)`,
    );
  }
  const createRole = (name: string): string =>
    `DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = ${literal(name)}) THEN CREATE ROLE ${quoteIdent(name)} NOLOGIN; END IF; END $$`;
  if (options.enqueuer) {
    const r = quoteIdent(options.enqueuer);
    const policy = quoteIdent(policyName('pgq_enqueuer_', options.enqueuer));
    statements.push(
      createRole(options.enqueuer),
      `GRANT USAGE ON SCHEMA ${s} TO ${r}`,
      `GRANT SELECT, INSERT ON ${s}.jobs, ${workflowTables.join(', ')} TO ${r}`,
      // The pgq command checks the schema's version before it does anything.
      `GRANT SELECT ON ${s}.pgq_migrations TO ${r}`,
      // A workflow draws its job ids ahead (parents get smaller ids than their children).
      `DO $$ BEGIN EXECUTE format('GRANT USAGE ON SEQUENCE %s TO %I', pg_get_serial_sequence(${literal(`${s}.jobs`)}, 'id'), ${literal(options.enqueuer)}); END $$`,
      `DROP POLICY IF EXISTS ${policy} ON ${s}.jobs`,
      `CREATE POLICY ${policy} ON ${s}.jobs AS PERMISSIVE FOR ALL TO ${r}
         USING (created_by = quote_ident(current_user)::regrole)
         WITH CHECK (created_by = quote_ident(current_user)::regrole AND attempts = 0
                     AND (state IN ('available', 'scheduled') OR (state = 'blocked' AND workflow_id IS NOT NULL)))`,
    );
    for (const table of workflowTables) {
      statements.push(
        `DROP POLICY IF EXISTS ${policy} ON ${table}`,
        `CREATE POLICY ${policy} ON ${table} AS RESTRICTIVE FOR ALL TO ${r}
           USING (created_by = quote_ident(current_user)::regrole) WITH CHECK (created_by = quote_ident(current_user)::regrole)`,
      );
    }
  }
  if (options.worker) {
    const r = quoteIdent(options.worker);
    const policy = quoteIdent(policyName('pgq_worker_', options.worker));
    statements.push(
      createRole(options.worker),
      `GRANT USAGE ON SCHEMA ${s} TO ${r}`,
      `GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA ${s} TO ${r}`,
      // Queue control is the operator's: a worker reads the settings, adds the row of a queue it is the first
      // to serve (name only: not paused, no limits) and spends the rate bucket (a limited claim locks the
      // row FOR UPDATE, which column rights allow). It cannot pause, resume, change a limit or delete a row.
      // REVOKE ALL also takes back column rights, so a second run grants exactly these.
      `REVOKE ALL ON ${s}.queues FROM ${r}`,
      `GRANT SELECT, INSERT (name), UPDATE (rate_tokens, rate_refilled_at) ON ${s}.queues TO ${r}`,
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
