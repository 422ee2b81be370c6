/**
 * The one loader for modules named by a file path: tasks modules (the CLI)
 * and sandboxed handler modules. A TypeScript module goes through tsx.
 */
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { importTsx } from './optional-packages.js';

/** Whether the file is TypeScript (`.ts`, `.mts`, `.cts`, `.tsx`), loaded through tsx. */
function isTypeScript(file: string): boolean {
  return /\.[mc]?tsx?$/.test(file);
}

/** Imports a module by file path; a TypeScript module goes through tsx (an optional dependency). */
export async function importModule(file: string): Promise<Record<string, unknown>> {
  const url = pathToFileURL(path.resolve(file)).href;
  if (isTypeScript(file)) {
    const { tsImport } = await importTsx();
    return (await tsImport(url, import.meta.url)) as Record<string, unknown>;
  }
  return (await import(url)) as Record<string, unknown>;
}
