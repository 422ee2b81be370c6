/**
 * The shape of src/, read from its import lines (static, type-only and
 * dynamic): no import cycles, the modules of the public surface do not
 * reach into the leader's maintenance services, and kysely's runtime comes in
 * through one module (which the build replaces with kysely in one file).
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import { MIGRATION_FILE, MIGRATIONS_DIR } from '../src/db/schema-version.js';

const src = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'src');

function sourceFiles(dir: string, extensions = ['.ts']): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) return sourceFiles(full, extensions);
    return extensions.some((ext) => entry.name.endsWith(ext)) ? [full] : [];
  });
}

/** Each module of src/ (relative path) and the modules of src/ it imports. */
function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const file of sourceFiles(src)) {
    const info = ts.preProcessFile(fs.readFileSync(file, 'utf8'), true, true);
    const deps = info.importedFiles
      .map((imported) => imported.fileName)
      .filter((specifier) => specifier.startsWith('.'))
      .map((specifier) => path.relative(src, path.resolve(path.dirname(file), specifier)).replace(/\.js$/, '.ts'))
      .filter((dep) => fs.existsSync(path.join(src, dep)));
    graph.set(path.relative(src, file), deps);
  }
  return graph;
}

/** Strongly connected groups of more than one module (or a module importing itself). */
function cycles(graph: Map<string, string[]>): string[][] {
  let next = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const visit = (v: string): void => {
    index.set(v, next);
    low.set(v, next);
    next += 1;
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v)!, index.get(w)!));
      }
    }
    if (low.get(v) !== index.get(v)) return;
    const group: string[] = [];
    let w: string;
    do {
      w = stack.pop()!;
      onStack.delete(w);
      group.push(w);
    } while (w !== v);
    if (group.length > 1 || graph.get(v)!.includes(v)) found.push(group.sort());
  };
  for (const v of graph.keys()) if (!index.has(v)) visit(v);
  return found;
}

/**
 * The imports of kysely (or a kysely/… subpath) in a module's source that
 * load it at run time: any import or re-export that is not `import type` /
 * `export type` (with verbatimModuleSyntax, `import { type X }` still loads
 * the module), and `import('kysely')` as an expression.
 */
function runtimeImports(source: string, pkg: string): string[] {
  const file = ts.createSourceFile('module.ts', source, ts.ScriptTarget.Latest, true);
  const isPkg = (node: ts.Node | undefined): boolean =>
    node !== undefined && ts.isStringLiteral(node) && (node.text === pkg || node.text.startsWith(`${pkg}/`));
  const found: string[] = [];
  const visit = (node: ts.Node): void => {
    if (ts.isImportDeclaration(node) && isPkg(node.moduleSpecifier) && !node.importClause?.isTypeOnly) found.push(node.getText());
    else if (ts.isExportDeclaration(node) && isPkg(node.moduleSpecifier) && !node.isTypeOnly) found.push(node.getText());
    else if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword && isPkg(node.arguments[0])) found.push(node.getText());
    ts.forEachChild(node, visit);
  };
  visit(file);
  return found;
}

describe('src/ structure', () => {
  const graph = importGraph();

  it('reads the imports of every module', () => {
    expect(graph.size).toBeGreaterThan(50);
    expect(graph.get('client.ts')).toContain('config.ts');
  });

  it('has no import cycles', () => {
    expect(cycles(graph)).toEqual([]);
  });

  it('finds a cycle when there is one', () => {
    const looped = new Map(graph);
    looped.set('core/errors.ts', [...(graph.get('core/errors.ts') ?? []), 'client.ts']);
    expect(cycles(looped).length).toBeGreaterThan(0);
  });

  it('keeps the public modules out of src/maintenance', () => {
    const publicModules = [...graph.keys()].filter((m) => !m.includes('/') && m !== 'index.ts');
    const offending = publicModules.flatMap((m) => graph.get(m)!.filter((dep) => dep.startsWith('maintenance/')).map((dep) => `${m} -> ${dep}`));
    expect(offending).toEqual([]);
  });

  /** The modules of src/ that load `pkg` at run time. */
  const importersOf = (pkg: string): string[] =>
    sourceFiles(src, ['.ts', '.mts', '.mjs', '.js'])
      .filter((file) => runtimeImports(fs.readFileSync(file, 'utf8'), pkg).length > 0)
      .map((file) => path.relative(src, file));

  it("imports kysely's runtime only through db/kysely.ts, which the build bundles", () => {
    expect(importersOf('kysely')).toEqual(['db/kysely.ts']);
    // The check itself: what loads kysely at run time, and what does not.
    expect(runtimeImports("import { sql, type Kysely } from 'kysely';", 'kysely')).toHaveLength(1);
    expect(runtimeImports("import { type Kysely } from 'kysely';", 'kysely')).toHaveLength(1); // kept as `import {} from 'kysely'`
    expect(runtimeImports("import 'kysely/helpers/postgres';", 'kysely')).toHaveLength(1);
    expect(runtimeImports("const k = await import('kysely');", 'kysely')).toHaveLength(1);
    expect(runtimeImports("export { sql } from 'kysely';", 'kysely')).toHaveLength(1);
    expect(runtimeImports("import type { Kysely } from 'kysely';\nexport type { Selectable } from 'kysely';\ntype K = import('kysely').Kysely<never>;", 'kysely')).toEqual([]);
  });

  it('ships migrations as SQL files only (the bundled node-pg-migrate cannot load others)', () => {
    const files = fs.readdirSync(MIGRATIONS_DIR).filter((f) => !f.startsWith('.'));
    expect(files.length).toBeGreaterThan(10);
    expect(files.filter((f) => !MIGRATION_FILE.test(f))).toEqual([]);
  });

  it('imports node-pg-migrate only through db/node-pg-migrate.ts, which the build bundles (it is not installed with pgq)', () => {
    expect(importersOf('node-pg-migrate')).toEqual(['db/node-pg-migrate.ts']);
    expect(runtimeImports("const { runner } = await import('node-pg-migrate');", 'node-pg-migrate')).toHaveLength(1);
  });
});

describe('package.json', () => {
  it("gives every subpath export its types under each moduleResolution, node10 too (a CommonJS project's default: it ignores exports)", () => {
    const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
    const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { exports: Record<string, { types?: string }> };
    // A consumer whose node_modules/pgq is this repository.
    const consumer = fs.mkdtempSync(path.join(fs.realpathSync(process.env.TMPDIR ?? '/tmp'), 'pgq-types-'));
    fs.mkdirSync(path.join(consumer, 'node_modules'));
    fs.symlinkSync(root, path.join(consumer, 'node_modules', 'pgq'));
    try {
      const subpaths = Object.entries(pkg.exports).filter(([, target]) => target.types);
      expect(subpaths.length).toBeGreaterThan(4);
      for (const resolution of [ts.ModuleResolutionKind.Node10, ts.ModuleResolutionKind.Node16, ts.ModuleResolutionKind.Bundler]) {
        const options: ts.CompilerOptions = {
          moduleResolution: resolution,
          module: resolution === ts.ModuleResolutionKind.Node16 ? ts.ModuleKind.Node16 : resolution === ts.ModuleResolutionKind.Bundler ? ts.ModuleKind.ESNext : ts.ModuleKind.CommonJS,
          preserveSymlinks: true,
        };
        for (const [subpath, target] of subpaths) {
          const specifier = subpath === '.' ? 'pgq' : `pgq/${subpath.slice(2)}`;
          const resolved = ts.resolveModuleName(specifier, path.join(consumer, 'index.ts'), options, ts.sys).resolvedModule;
          expect(resolved?.resolvedFileName, `${specifier} under moduleResolution ${ts.ModuleResolutionKind[resolution]}`).toBe(
            path.join(consumer, 'node_modules', 'pgq', target.types!),
          );
        }
      }
    } finally {
      fs.rmSync(consumer, { recursive: true, force: true });
    }
  });
});
