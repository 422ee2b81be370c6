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
 * The name pgq prepares statement `statement`, whose SQL is `text`, under
 * for `schema`: `pgq_<schema>_<statement>_<8 hex digits of the text's
 * SHA-256>`, or, where that is longer than PostgreSQL keeps,
 * `pgq_<10 hex digits of the schema's SHA-256>_<statement>_<text hash>` (pg
 * writes a warning to the console for every longer name it prepares, and
 * names cut to one would clash). The text's hash keeps two pgq versions
 * whose statement of one name differs apart on one connection (an
 * application's pool given to both): pg refuses a name prepared before
 * with other text.
 */
export function statementName(schema: string, statement: string, text: string): string {
  const key = `${schema}\0${statement}`;
  const known = names.get(key);
  if (known?.text === text) return known.name;
  const digest = createHash('sha256').update(text).digest('hex').slice(0, 8);
  const plain = `pgq_${schema}_${statement}_${digest}`;
  const schemaPart = plain.length <= STATEMENT_NAME_MAX ? schema : createHash('sha256').update(schema).digest('hex').slice(0, 10);
  const name = `pgq_${schemaPart}_${statement}_${digest}`;
  names.set(key, { text, name });
  return name;
}

/** Each statement's name with the text it was made for (names are asked for at every call: hashed once). */
const names = new Map<string, { text: string; name: string }>();
