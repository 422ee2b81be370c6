/**
 * Replaces two compiled re-exports in dist/db/ with one file each holding the
 * dependency's code, built from node_modules. Run by `npm run build`, after
 * tsc.
 *
 * - dist/db/kysely.js (pgq's one import of kysely's runtime). kysely ships as
 *   about 280 ES modules, and Node.js 20 loads ES modules one by one (resolve,
 *   read, compile, link each); that was about 200 ms of CPU of `import
 *   'pgq'`'s 460 here, against about 25 ms for the same code in one file. The
 *   package still depends on kysely: its types (`pgq.kysely` is a
 *   `Kysely<PgqDatabase>`, `KyselyQueryable` takes your own kysely
 *   transaction) come from it. pgq reaches a kysely object you hand it only
 *   through its methods, so the two copies work together.
 * - dist/db/node-pg-migrate.js (the migration runner, imported by the first
 *   `migrate()`). node-pg-migrate's package brings glob, jiti, yargs and
 *   lru-cache, about 9 MiB of a library user's install, for its command line
 *   and for migration files pgq does not have: pgq's migrations are SQL files
 *   in one directory, which node-pg-migrate reads with `readdir` and loads
 *   with its SQL loader. The bundle holds node-pg-migrate itself; `glob` (used
 *   only for a directory given as a pattern) and `jiti` (used to load every
 *   migration file that is not `.sql`; pgq ships none, a structure test
 *   keeps it so) are replaced by modules that throw if they are ever
 *   reached; `pg` stays pgq's own. So node-pg-migrate is a build-time
 *   dependency of pgq, not an install-time one.
 *
 * Each file carries the dependency's licence and version in a header; it has
 * no source map (tsc's map of the re-export is removed, as it no longer
 * matches).
 *
 * Run: node --import tsx scripts/bundle-deps.ts
 */
import fs from 'node:fs';
import path from 'node:path';
import { builtinModules, createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { build, type Plugin } from 'esbuild';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(path.join(root, 'package.json'));

interface Bundle {
  /** The npm package bundled. */
  name: string;
  /** Its home page, for the header. */
  home: string;
  /** The re-export in src/db/ whose output is replaced. */
  module: string;
  /** Packages left as imports (pgq's own dependencies). */
  external: string[];
  /** Packages replaced by a module of this source, never loaded. */
  stubs: Record<string, string>;
  /** Whether the package ships tsc's declaration of the re-export (only where its types are pgq's public types). */
  declaration: boolean;
}

const unreachable = (what: string): string =>
  `throw new Error(${JSON.stringify(`pgq's bundled node-pg-migrate reached ${what}, which pgq's migrations never use`)});`;

const bundles: Bundle[] = [
  { name: 'kysely', home: 'https://kysely.dev', module: 'kysely', external: [], stubs: {}, declaration: true },
  {
    name: 'node-pg-migrate',
    home: 'https://salsita.github.io/node-pg-migrate',
    module: 'node-pg-migrate',
    external: ['pg'],
    declaration: false,
    stubs: {
      glob: `export async function glob() { ${unreachable('glob (a migrations directory given as a pattern)')} }`,
      jiti: `export function createJiti() { return { import: async () => { ${unreachable('jiti (a migration file that is not .sql)')} } }; }`,
    },
  },
];

/** The directory of the installed package `name` (walking up from its entry: not every exports map exports package.json). */
function packageDir(name: string): string {
  let dir = path.dirname(require.resolve(name));
  const isIt = (d: string): boolean => {
    const file = path.join(d, 'package.json');
    return fs.existsSync(file) && (JSON.parse(fs.readFileSync(file, 'utf8')) as { name?: string }).name === name;
  };
  while (!isIt(dir)) {
    if (path.dirname(dir) === dir) throw new Error(`${name}'s package directory not found`);
    dir = path.dirname(dir);
  }
  return dir;
}

function stubPlugin(stubs: Record<string, string>): Plugin {
  return {
    name: 'pgq-stubs',
    setup(b) {
      const filter = new RegExp(`^(${Object.keys(stubs).map((s) => s.replace(/[.*+?^${}()|[\]\\/-]/g, '\\$&')).join('|')})$`);
      b.onResolve({ filter }, (args) => ({ path: args.path, namespace: 'pgq-stub' }));
      b.onLoad({ filter: /.*/, namespace: 'pgq-stub' }, (args) => ({ contents: stubs[args.path], loader: 'js' }));
    },
  };
}

for (const bundle of bundles) {
  const out = path.join(root, `dist/db/${bundle.module}.js`);
  if (!fs.existsSync(out)) throw new Error(`${out} is missing: run tsc -p tsconfig.build.json first`);
  const dir = packageDir(bundle.name);
  const { version } = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { version: string };
  const licence = fs.readFileSync(path.join(dir, 'LICENSE'), 'utf8').trim();

  const result = await build({
    entryPoints: [path.join(root, `src/db/${bundle.module}.ts`)],
    outfile: out,
    bundle: true,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    sourcemap: false,
    legalComments: 'none',
    logLevel: 'warning',
    metafile: true,
    external: bundle.external,
    plugins: Object.keys(bundle.stubs).length > 0 ? [stubPlugin(bundle.stubs)] : [],
    banner: {
      js: `/*\n * ${bundle.name} ${version} (${bundle.home}), bundled into one module by pgq's build\n * (scripts/bundle-deps.ts).\n *\n${licence
        .split('\n')
        .map((line) => ` *${line ? ` ${line}` : ''}`)
        .join('\n')}\n */`,
    },
  });
  fs.rmSync(`${out}.map`, { force: true });
  // A declaration nothing imports that names a package the user may not have.
  if (!bundle.declaration) fs.rmSync(out.replace(/\.js$/, '.d.ts'), { force: true });

  // What the bundle still imports (esbuild's own record of it) must be a
  // Node.js builtin or one of the packages left external; and no CommonJS
  // `require` may be left for esbuild's shim, which throws in an ES module.
  const text = fs.readFileSync(out, 'utf8');
  const imported = Object.values(result.metafile.outputs).flatMap((o) => o.imports.map((i) => i.path));
  const stray = imported.filter((spec) => !spec.startsWith('node:') && !bundle.external.includes(spec) && !builtinModules.includes(spec));
  if (stray.length > 0) throw new Error(`${out} still imports ${[...new Set(stray)].join(', ')}: the bundle did not inline it`);
  if (/\b__require\(/.test(text)) throw new Error(`${out} calls require() through esbuild's shim, which fails in an ES module`);
  process.stderr.write(`dist/db/${bundle.module}.js: ${bundle.name} ${version} in one module, ${(text.length / 1024).toFixed(0)} KiB\n`);
}
