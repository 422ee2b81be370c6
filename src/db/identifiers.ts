import { createHash } from 'node:crypto';
import { ValidationError } from '../core/errors.js';

/**
 * At most 46 characters: PostgreSQL cuts names at 63 bytes, and pgq's own
 * names hold the schema's: at 50, the NOTIFY channel `pgq:<schema>:schedules`
 * is refused. (Prepared statements too long to keep take a hash of the
 * schema instead: `statementName`.)
 */
export const SCHEMA_NAME_MAX = 46;
const IDENTIFIER = new RegExp(`^[A-Za-z_][A-Za-z0-9_]{0,${SCHEMA_NAME_MAX - 1}}$`);

/**
 * pgq's schema name is spliced into SQL as an identifier, so it is held to a
 * plain identifier (letters, digits, underscore; at most SCHEMA_NAME_MAX
 * characters) and then quoted by `quoteIdent`, the one place identifiers are quoted.
 */
export function validateSchemaName(schema: string): string {
  if (typeof schema !== 'string' || !IDENTIFIER.test(schema)) {
    const long = typeof schema === 'string' && schema.length > SCHEMA_NAME_MAX ? ` (${schema.length}: pgq's channel names hold it, and PostgreSQL cuts names at 63 bytes)` : '';
    throw new ValidationError(
      'schema',
      `${JSON.stringify(schema)} is not a plain identifier (letters, digits and _, not starting with a digit, at most ${SCHEMA_NAME_MAX} characters)${long}`,
    );
  }
  return schema;
}

export function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/** PostgreSQL cuts a prepared statement's name at 63 bytes (NAMEDATALEN - 1). */
const STATEMENT_NAME_MAX = 63;

/**
 * The name pgq prepares statement `statement` under for `schema`:
 * `pgq_<schema>_<statement>`, or, where that is longer than PostgreSQL
 * keeps, `pgq_<10 hex digits of the schema's SHA-256>_<statement>` (pg
 * writes a warning to the console for every longer name it prepares, and
 * names cut to one would clash).
 */
export function statementName(schema: string, statement: string): string {
  const plain = `pgq_${schema}_${statement}`;
  if (plain.length <= STATEMENT_NAME_MAX) return plain;
  let hash = schemaHashes.get(schema);
  if (hash === undefined) {
    hash = createHash('sha256').update(schema).digest('hex').slice(0, 10);
    schemaHashes.set(schema, hash);
  }
  return `pgq_${hash}_${statement}`;
}

/** Each long schema's hash, made once (statement names are asked for at every call). */
const schemaHashes = new Map<string, string>();
