/**
 * The read-only schema check every entry point but `migrate` makes: it reads
 * which migrations `<schema>.pgq_migrations` records and compares them with
 * the ones this pgq ships, changing nothing. A schema that is missing or
 * behind is an error that says to run `pgq migrate`; one ahead of this pgq
 * (a newer version migrated it, as in a rolling deploy) is accepted.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { PgqError } from '../core/errors.js';
import type { Queryable } from './queryable.js';
import { quoteIdent } from './identifiers.js';

/** The package's own migrations folder, wherever pgq is installed. */
export const MIGRATIONS_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../migrations');

let shipped: string[] | undefined;

/** A migration's file name. */
export const MIGRATION_FILE = /^\d+_.+\.sql$/;

/**
 * Names of the migrations this pgq ships (file names without `.sql`), oldest
 * first. They are SQL files only: the build's node-pg-migrate loads any other
 * file through jiti, which it does not carry (scripts/bundle-deps.ts).
 */
export function shippedMigrations(): string[] {
  shipped ??= fs
    .readdirSync(MIGRATIONS_DIR)
    .filter((f) => MIGRATION_FILE.test(f))
    .map((f) => f.replace(/\.sql$/, ''))
    .sort();
  return shipped;
}

/** A schema that is absent or older than this pgq. */
export class SchemaNotReadyError extends PgqError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('PGQ_SCHEMA_NOT_READY', message, options);
    this.name = 'SchemaNotReadyError';
  }
}

/**
 * For PostgreSQL's "relation/function does not exist" (42P01, 42883) naming
 * an object of `schema` itself, or "column does not exist" (42703, a column a
 * later migration adds): a SchemaNotReadyError when the schema is
 * indeed not migrated to this pgq's version (asked of the database), the
 * error itself otherwise (a caller's own object gone missing, in a schema of
 * a similar name or in pgq's).
 */
export async function explainNotMigrated(err: unknown, db: Queryable, schema: string): Promise<unknown> {
  if (err === null || typeof err !== 'object') return err;
  const { code, message } = err as { code?: unknown; message?: unknown };
  if ((code !== '42P01' && code !== '42883' && code !== '42703') || typeof message !== 'string') return err;
  const name = schema.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  // A missing column's message names no schema ("column "meta" of relation "jobs" does not exist"):
  // the version check below alone tells an older pgq schema from a caller's own mistake.
  if (code !== '42703' && !new RegExp(`^(relation "${name}\\.[^".]+"|function ${name}\\.[^.(]+\\()`).test(message)) return err;
  try {
    await checkSchemaVersion(db, schema);
    return err;
  } catch (check) {
    if (!(check instanceof SchemaNotReadyError)) return err;
    return new SchemaNotReadyError(`${check.message} (${message})`, { cause: err });
  }
}

/** Resolves when `schema` has every migration this pgq ships; rejects with SchemaNotReadyError otherwise. */
export async function checkSchemaVersion(db: Queryable, schema: string): Promise<void> {
  const table = `${quoteIdent(schema)}.pgq_migrations`;
  const needed = shippedMigrations();
  const latest = version(needed[needed.length - 1]);
  // One round trip: the table read straight away, its absence (42P01, the schema's or the table's) the error.
  // Asked of the pool, never inside a caller's transaction, which the error would abort.
  let rows: { name: string }[];
  try {
    rows = await db.query<{ name: string }>({ text: `SELECT name FROM ${table}`, values: [] });
  } catch (err) {
    if ((err as { code?: unknown } | null)?.code !== '42P01') throw err;
    throw new SchemaNotReadyError(`schema ${schema} is not migrated (this pgq needs version ${latest}): run pgq migrate (or pgq.migrate())`, { cause: err });
  }
  const applied = new Set(rows.map((r) => r.name));
  const missing = needed.filter((name) => !applied.has(name));
  if (missing.length === 0) return;
  const at = [...applied].sort().at(-1);
  throw new SchemaNotReadyError(
    `schema ${schema} is at version ${at ? version(at) : 'none'}, this pgq needs ${latest} (missing: ${missing.join(', ')}): run pgq migrate (or pgq.migrate())`,
  );
}

function version(name: string | undefined): string {
  return name?.split('_')[0] ?? 'none';
}
