import { ValidationError } from '../core/errors.js';

/**
 * At most 46 characters: PostgreSQL cuts names at 63 bytes, and pgq's own
 * names hold the schema's. At 47, prepared statements `pgq_<schema>_insert_jobs`
 * and `pgq_<schema>_insert_jobs_quiet` are cut to one name and clash; at 50,
 * the NOTIFY channel `pgq:<schema>:schedules` is refused.
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
    const long = typeof schema === 'string' && schema.length > SCHEMA_NAME_MAX ? ` (${schema.length}: pgq's statement and channel names hold it, and PostgreSQL cuts names at 63 bytes)` : '';
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
