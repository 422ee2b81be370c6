/**
 * Type-checks every TypeScript sample of the documentation, so a sample that
 * no longer matches the API fails `npm run typecheck`.
 *
 * Run: node --import tsx scripts/check-docs.ts   (npm run check:docs)
 *
 * What is checked: each fenced block opened with ```ts or ```typescript in
 * README.md and docs/**\/*.md (other languages, sh, sql, text, are ignored).
 * Each block is written as a module of its own under .cache/docs-check/ (one
 * directory per markdown file; gitignored) and compiled with the project's
 * tsconfig.json, with 'pgq' and its subpaths ('pgq/testing', 'pgq/metrics',
 * ...) resolved to the sources in src/: the subpaths are read from
 * package.json "exports" (./dist/x.d.ts there is ./src/x.ts here), so no
 * build is needed. Errors are printed as <markdown file>:<line>:<column>.
 *
 * A block may be preceded (on the line right above its fence, in an HTML
 * comment, which renders as nothing) by directives, space-separated:
 *
 *   <!-- check-docs: file=tasks.ts -->
 *       the module's path (relative, in the page's directory), so that later
 *       blocks of the same markdown file can import it
 *       (`import { sendEmail } from './tasks.js'`).
 *   <!-- check-docs: preamble=pgq,tasks -->
 *       prepends the named preambles (PREAMBLES below): what a fragment uses
 *       but does not show, such as a `pgq` instance or the page's tasks.
 *   <!-- check-docs: skip (reason) -->
 *       not checked; the reason in parentheses is required. Keep these rare.
 *
 * A comment that does not end on its first line carries hidden code: the
 * lines up to `-->` are prepended too (after any named preamble), for the
 * one-off declarations of a fragment:
 *
 *   <!-- check-docs: preamble=pgq
 *   declare const userId: string;
 *   -->
 *
 * Every block is a module (an `export {}` is appended), so top-level await
 * works and blocks never see each other's names unless they import them.
 * Each block compiles twice: with the project's options, and again with
 * `exactOptionalPropertyTypes`, as an application may.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const outDir = path.join(root, '.cache', 'docs-check');

/**
 * Named preambles. Each declares names a fragment may use without showing
 * where they come from. They import nothing (types are `import()` types), so
 * a block may import `Pgq`, `z` or anything else itself without a clash.
 */
const PREAMBLES: Record<string, string> = {
  /** `pgq`: a Pgq instance. */
  pgq: "declare const pgq: import('pgq').Pgq;",
  /** `worker`: one of its workers. */
  worker: "declare const worker: import('pgq').Worker;",
  /** The tasks most pages use, with the schemas the samples rely on. */
  tasks: [
    "declare const sendEmail: import('pgq').Task<import('zod').ZodObject<{ to: import('zod').ZodString; subject: import('zod').ZodString }>, { sent: boolean }>;",
    "declare const refreshCache: import('pgq').Task<import('zod').ZodObject<{}>, void>;",
    "declare const chargeCustomers: import('pgq').Task<import('zod').ZodObject<{}>, void>;",
  ].join('\n'),
  /** `pool`: a pg Pool. */
  pool: "declare const pool: import('pg').Pool;",
  /** `db`: a Kysely of the application's own tables (`orders`). */
  db: [
    'interface AppTables { orders: { id: import(\'kysely\').Generated<number>; customer: string; total: number } }',
    "declare const db: import('kysely').Kysely<AppTables>;",
  ].join('\n'),
};

interface Block {
  /** Markdown file, relative to the repository. */
  doc: string;
  /** 1-based line of the block's first code line in the markdown file. */
  line: number;
  /** Columns of indentation stripped from each code line (a block inside a list). */
  indent: number;
  code: string;
  file: string | null;
  preambles: string[];
  hidden: string;
  hiddenLine: number;
  skip: string | null;
}

interface Directives {
  file: string | null;
  preambles: string[];
  hidden: string;
  /** 1-based markdown line of the first hidden line. */
  hiddenLine: number;
  skip: string | null;
}

const FENCE = /^(\s*)(`{3,}|~{3,})\s*([\w+-]*)/;
const DIRECTIVE = /^\s*<!--\s*check-docs:(.*)$/;

function fail(message: string): never {
  console.error(`check-docs: ${message}`);
  process.exit(2);
}

/** Reads the directives comment that ends on line `end` (0-based), if there is one. */
function directivesAbove(lines: string[], end: number, doc: string): Directives {
  const none: Directives = { file: null, preambles: [], hidden: '', hiddenLine: 0, skip: null };
  if (end < 0 || !(lines[end] ?? '').trimEnd().endsWith('-->')) return none;
  let start = end;
  while (start >= 0 && !DIRECTIVE.test(lines[start] ?? '')) {
    if (start < end && (lines[start] ?? '').includes('-->')) return none;
    start -= 1;
  }
  if (start < 0) return none;
  const first = (lines[start] ?? '').match(DIRECTIVE)?.[1] ?? '';
  const head = (start === end ? first.replace(/-->\s*$/, '') : first).trim();
  const hiddenLines = start === end ? [] : lines.slice(start + 1, end + 1);
  if (hiddenLines.length > 0) {
    const last = hiddenLines.length - 1;
    hiddenLines[last] = (hiddenLines[last] ?? '').replace(/-->\s*$/, '');
  }
  const where = `${doc}:${start + 1}`;
  const result: Directives = { ...none, hidden: hiddenLines.join('\n'), hiddenLine: start + 2 };
  const skip = head.match(/^skip\s*\((.+)\)$/);
  if (skip) return { ...result, skip: skip[1] ?? '' };
  if (/^skip\b/.test(head)) fail(`${where}: a skip needs a reason: <!-- check-docs: skip (why) -->`);
  for (const word of head.split(/\s+/).filter(Boolean)) {
    const [key, value] = word.split('=', 2);
    if (key === 'file' && value && /^[\w-][\w.-]*(\/[\w-][\w.-]*)*\.ts$/.test(value)) result.file = value;
    else if (key === 'preamble' && value) {
      for (const name of value.split(',')) {
        if (!(name in PREAMBLES)) fail(`${where}: unknown preamble "${name}" (known: ${Object.keys(PREAMBLES).join(', ')})`);
        result.preambles.push(name);
      }
    } else fail(`${where}: unknown directive "${word}" (file=<name>.ts, preamble=<names>, skip (reason))`);
  }
  return result;
}

function extractBlocks(doc: string): Block[] {
  const lines = fs.readFileSync(path.join(root, doc), 'utf8').split('\n');
  const blocks: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = (lines[i] ?? '').match(FENCE);
    if (!open) continue;
    const indent = open[1]?.length ?? 0;
    const fence = open[2] ?? '```';
    const lang = (open[3] ?? '').toLowerCase();
    let end = i + 1;
    while (end < lines.length && !(lines[end] ?? '').trim().startsWith(fence)) end += 1;
    if (end >= lines.length) fail(`${doc}:${i + 1}: a fenced block is never closed`);
    if (lang === 'ts' || lang === 'typescript') {
      const directives = directivesAbove(lines, i - 1, doc);
      const code = lines
        .slice(i + 1, end)
        .map((line) => (line.slice(0, indent).trim() === '' ? line.slice(indent) : line))
        .join('\n');
      blocks.push({ doc, line: i + 2, indent, code, ...directives });
    }
    i = end;
  }
  return blocks;
}

function markdownFiles(): string[] {
  const files = ['README.md'];
  const walk = (dir: string): void => {
    for (const entry of fs.readdirSync(path.join(root, dir), { withFileTypes: true })) {
      const rel = path.posix.join(dir, entry.name);
      if (entry.isDirectory()) walk(rel);
      else if (entry.name.endsWith('.md')) files.push(rel);
    }
  };
  if (fs.existsSync(path.join(root, 'docs'))) walk('docs');
  return files;
}

/** 'pgq' and each subpath of package.json "exports", mapped to its source in src/. */
function pgqPaths(): Record<string, string[]> {
  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as {
    name: string;
    exports: Record<string, string | { types?: string }>;
  };
  const paths: Record<string, string[]> = {};
  for (const [subpath, target] of Object.entries(pkg.exports)) {
    const types = typeof target === 'string' ? undefined : target.types;
    if (!types) continue;
    const source = types.replace(/^\.\/dist\//, 'src/').replace(/\.d\.ts$/, '.ts');
    if (!fs.existsSync(path.join(root, source))) fail(`package.json exports "${subpath}": no source at ${source}`);
    paths[path.posix.join(pkg.name, subpath)] = [path.join(root, source)];
  }
  return paths;
}

interface Emitted {
  block: Block;
  /** Lines of the named preambles at the top of the module. */
  named: number;
  /** Lines of preamble (named, then hidden) before the block's first line in the module. */
  offset: number;
}

function main(): void {
  const docs = markdownFiles();
  const blocks = docs.flatMap(extractBlocks);
  fs.rmSync(outDir, { recursive: true, force: true });
  const emitted = new Map<string, Emitted>();
  let skipped = 0;
  for (const block of blocks) {
    if (block.skip !== null) {
      skipped += 1;
      continue;
    }
    const dir = path.join(outDir, block.doc.replace(/\.md$/, '').replace(/[/\\]/g, '__'));
    const file = path.join(dir, block.file ?? `line-${block.line}.ts`);
    if (emitted.has(file)) fail(`${block.doc}:${block.line}: file=${block.file} is used by two blocks of this page`);
    const named = block.preambles.map((name) => PREAMBLES[name] ?? '').join('\n');
    const preamble = [named, block.hidden].filter((text) => text !== '').join('\n');
    const offset = preamble === '' ? 0 : preamble.split('\n').length;
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, `${preamble === '' ? '' : `${preamble}\n`}${block.code}\nexport {};\n`);
    emitted.set(file, { block, named: named === '' ? 0 : named.split('\n').length, offset });
  }

  const configPath = path.join(root, 'tsconfig.json');
  const read = ts.readConfigFile(configPath, (p) => ts.sys.readFile(p));
  if (read.error) fail(ts.flattenDiagnosticMessageText(read.error.messageText, '\n'));
  const parsed = ts.parseJsonConfigFileContent(read.config, ts.sys, root, undefined, configPath);
  const options: ts.CompilerOptions = {
    ...parsed.options,
    noEmit: true,
    declaration: false,
    sourceMap: false,
    paths: pgqPaths(),
  };
  // Twice: as pgq's own code compiles, and under exactOptionalPropertyTypes, which applications turn on
  // (then `connectionString: process.env.DATABASE_URL` is refused unless the option's type says `| undefined`).
  const diagnostics: { diagnostic: ts.Diagnostic; note: string }[] = [];
  for (const [exactOptionalPropertyTypes, note] of [[false, ''], [true, ' (under exactOptionalPropertyTypes)']] as const) {
    const program = ts.createProgram({ rootNames: [...emitted.keys()], options: { ...options, exactOptionalPropertyTypes } });
    const found: ts.Diagnostic[] = [...program.getOptionsDiagnostics(), ...program.getGlobalDiagnostics()];
    for (const file of emitted.keys()) {
      const source = program.getSourceFile(file);
      if (!source) fail(`${file} was not compiled`);
      found.push(...program.getSyntacticDiagnostics(source), ...program.getSemanticDiagnostics(source));
    }
    const seen = new Set(diagnostics.map(({ diagnostic: d }) => `${d.file?.fileName}:${d.start}:${d.code}`));
    for (const d of found) if (!seen.has(`${d.file?.fileName}:${d.start}:${d.code}`)) diagnostics.push({ diagnostic: d, note });
  }

  for (const { diagnostic, note } of diagnostics) {
    const message = ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n  ') + note;
    const source = diagnostic.file;
    const at = source && diagnostic.start !== undefined ? source.getLineAndCharacterOfPosition(diagnostic.start) : null;
    const origin = source ? emitted.get(path.normalize(source.fileName)) : undefined;
    let where: string;
    if (origin && at) {
      const { block, named, offset } = origin;
      if (at.line < named) where = `${block.doc}:${block.line - 1} (preamble=${block.preambles.join(',')} of the block at line ${block.line})`;
      else if (at.line < offset) where = `${block.doc}:${block.hiddenLine + at.line - named}:${at.character + 1} (hidden code of the block at line ${block.line})`;
      else where = `${block.doc}:${block.line + at.line - offset}:${at.character + 1 + block.indent}`;
    } else if (source && at) {
      where = `${path.relative(root, source.fileName)}:${at.line + 1}:${at.character + 1}`;
    } else {
      where = 'tsconfig';
    }
    console.error(`${where} - error TS${diagnostic.code}: ${message}`);
  }
  const summary = `${emitted.size} TypeScript blocks checked in ${docs.length} markdown files${skipped ? `, ${skipped} skipped` : ''}`;
  if (diagnostics.length > 0) {
    console.error(`check-docs: ${diagnostics.length} error(s); ${summary}`);
    process.exit(1);
  }
  console.log(`check-docs: ${summary}`);
}

main();
