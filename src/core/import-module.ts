/**
 * The one loader for modules named by a file path: tasks modules (the CLI)
 * and sandboxed handler modules. A TypeScript module goes through tsx.
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { importTsx } from './optional-packages.js';

/** Whether the file is TypeScript (`.ts`, `.mts`, `.cts`, `.tsx`), loaded through tsx. */
function isTypeScript(file: string): boolean {
  return /\.[mc]?tsx?$/.test(file);
}

/**
 * Imports a module by file path; a TypeScript module goes through tsx (an
 * optional dependency). Returns its exports as an ES module's: one compiled
 * from ES module syntax to CommonJS (a `.ts` file in a package without
 * `"type": "module"`, or a transpiled `.js`) comes as its `module.exports`,
 * not as a default export holding them (where its `export default` was
 * `default.default`).
 */
export async function importModule(file: string, options: { reload?: number } = {}): Promise<Record<string, unknown>> {
  // Node keeps an ES module whose evaluation threw, and throws its error again on every import of its URL: a
  // load after such a failure asks for the module under another URL (`?pgq-reload=<n>`), which evaluates it anew.
  const url = pathToFileURL(path.resolve(file)).href + (options.reload ? `?pgq-reload=${options.reload}` : '');
  let mod: Record<string, unknown>;
  if (isTypeScript(file)) {
    const { tsImport } = await importTsx();
    mod = (await tsImport(url, import.meta.url)) as Record<string, unknown>;
  } else {
    try {
      mod = (await import(url)) as Record<string, unknown>;
    } catch (err) {
      throw await withSyntaxLocation(err, path.resolve(file));
    }
  }
  return compiledToCommonJs(mod) ?? mod;
}

/**
 * A SyntaxError of an ES module as Node.js 20 reports it has no file nor
 * line ("Unexpected token ';'"): `node --check` on the file finds them, and
 * they are put in front of the message, with the line and its caret. One
 * whose location the error has already, or that is in a module the file
 * imports (the file itself checks clean), is left as it is.
 */
async function withSyntaxLocation(err: unknown, file: string): Promise<unknown> {
  if (!(err instanceof SyntaxError) || err.stack?.includes(file) || err.stack?.includes(pathToFileURL(file).href)) return err;
  try {
    await promisify(execFile)(process.execPath, ['--check', file], { timeout: 10_000 });
    return err;
  } catch (checked) {
    const stderr = String((checked as { stderr?: unknown }).stderr ?? '');
    // "<file>:<line>", the line, a caret under the place, a blank line, the error.
    const [where, line, caret] = stderr.split('\n');
    if (!where?.startsWith(`${file}:`)) return err;
    return new SyntaxError(`${where}: ${err.message}\n${line ?? ''}\n${caret ?? ''}`, { cause: err });
  }
}

/**
 * The `module.exports` of a module compiled from ES module syntax to
 * CommonJS, as Node gives it (its default export, marked `__esModule`,
 * holding the module's own `default`; any other export is one of its
 * properties, copied); undefined for any other module, such as an ES module
 * whose default export is such an object beside exports of its own.
 */
function compiledToCommonJs(mod: Record<string, unknown>): Record<string, unknown> | undefined {
  const exported = mod.default as Record<string, unknown> | null | undefined;
  if (exported === null || typeof exported !== 'object' || exported.__esModule !== true || !('default' in exported)) return undefined;
  // Names, not values: Node's names are a snapshot of module.exports (a NaN, or a `let` reassigned since, differ in value).
  // Node 23 and later also name module.exports itself 'module.exports'.
  return Object.keys(mod).every((key) => key === 'default' || key === 'module.exports' || key in exported) ? exported : undefined;
}
