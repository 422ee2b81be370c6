/**
 * Replaces the compiled dist/db/kysely.js (a re-export of 'kysely') with one
 * file holding the parts of kysely pgq uses, built from the kysely in
 * node_modules. Run by `npm run build`, after tsc.
 *
 * Why: kysely ships as about 280 ES modules, and Node.js 20 loads ES modules
 * one by one (resolve, read, compile, link each); that was about 200 ms of
 * CPU of `import 'pgq'`'s 460 here, against about 25 ms for the same code in
 * one file. The package still depends on kysely: its types (`pgq.kysely` is a
 * `Kysely<PgqDatabase>`, `KyselyQueryable` takes your own kysely
 * transaction) come from it. pgq reaches a kysely object you hand it only
 * through its methods, so the two copies work together.
 *
 * The file carries kysely's licence and version in a header; it has no source
 * map (tsc's map of the re-export is removed, as it no longer matches).
 *
 * Run: node --import tsx scripts/bundle-kysely.ts
 */
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const out = path.join(root, 'dist/db/kysely.js');
if (!fs.existsSync(out)) throw new Error(`${out} is missing: run tsc -p tsconfig.build.json first`);

const require = createRequire(path.join(root, 'package.json'));
// kysely's exports map does not export its package.json: walk up from its
// entry to the package.json that names kysely.
let kyselyDir = path.dirname(require.resolve('kysely'));
const isKysely = (dir: string): boolean => {
  const file = path.join(dir, 'package.json');
  return fs.existsSync(file) && (JSON.parse(fs.readFileSync(file, 'utf8')) as { name?: string }).name === 'kysely';
};
while (!isKysely(kyselyDir)) {
  if (path.dirname(kyselyDir) === kyselyDir) throw new Error("kysely's package directory not found");
  kyselyDir = path.dirname(kyselyDir);
}
const { version } = JSON.parse(fs.readFileSync(path.join(kyselyDir, 'package.json'), 'utf8')) as { version: string };
const licence = fs.readFileSync(path.join(kyselyDir, 'LICENSE'), 'utf8').trim();

await build({
  entryPoints: [path.join(root, 'src/db/kysely.ts')],
  outfile: out,
  bundle: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  sourcemap: false,
  legalComments: 'none',
  logLevel: 'warning',
  banner: {
    js: `/*\n * kysely ${version} (https://kysely.dev), bundled into one module by pgq's build\n * (scripts/bundle-kysely.ts) so that it loads as one file.\n *\n${licence
      .split('\n')
      .map((line) => ` *${line ? ` ${line}` : ''}`)
      .join('\n')}\n */`,
  },
});
fs.rmSync(`${out}.map`, { force: true });

const text = fs.readFileSync(out, 'utf8');
// An import of kysely left in the bundle (static, side-effect or dynamic;
// kysely's own doc comments start with ` * `, so they do not match).
if (/^\s*(?:import|export)\b[^\n]*['"]kysely(?:\/[^'"]*)?['"]|\bimport\(\s*['"]kysely/m.test(text)) throw new Error(`${out} still imports kysely: the bundle did not inline it`);
process.stderr.write(`dist/db/kysely.js: kysely ${version} in one module, ${(text.length / 1024).toFixed(0)} KiB\n`);
