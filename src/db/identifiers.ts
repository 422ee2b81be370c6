import { ValidationError } from '../core/errors.js';

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;

/**
 * pgq's schema name is spliced into SQL as an identifier, so it is held to a
 * plain identifier (letters, digits, underscore; at most 63 bytes) and then
 * quoted by `quoteIdent`, the one place identifiers are quoted.
 */
export function validateSchemaName(schema: string): string {
  if (typeof schema !== 'string' || !IDENTIFIER.test(schema)) {
    throw new ValidationError(
      'schema',
      `${JSON.stringify(schema)} is not a plain identifier (letters, digits and _, not starting with a digit, at most 63 characters)`,
    );
  }
  return schema;
}

export function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}
