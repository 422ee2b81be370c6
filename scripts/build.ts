/**
 * `npm run build`: compiles src/ into dist/ with tsc, then bundles two
 * dependencies into it (scripts/bundle-deps.ts), unless dist/ was already
 * built from exactly these inputs.
 *
 * The inputs are every file under src/, the tsconfig files, package.json,
 * package-lock.json, these two scripts, and the installed package.json of the
 * dependencies the build bundles. Their SHA-256 is written to
 * dist/.build-inputs after a build that succeeded; a build whose inputs hash
 * the same, with that file and dist's entry points present, writes nothing.
 *
 * `npm test`, `npm run test:matrix` and the benchmarks each build first, and
 * a test run spawns dist/cli/bin.js and loads pgq's packages from dist/
 * while it runs: a rebuild rewrote those files under any run already going
 * (a second suite, a benchmark), and took about 15 s of CPU each time. An
 * up-to-date build leaves them alone.
 *
 * `--force` builds whatever the stamp says. Deleting dist/ does the same.
 *
 * Run: node --import tsx scripts/build.ts [--force]
 */
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dist = path.join(root, 'dist');
const stamp = path.join(dist, '.build-inputs');
const { values: args } = parseArgs({ options: { force: { type: 'boolean', default: false } } });

/** The dependencies scripts/bundle-deps.ts puts into dist/: their installed versions are inputs. */
const BUNDLED = ['kysely', 'node-pg-migrate'];
const ENTRY_POINTS = ['index.js', 'index.d.ts', 'cli/bin.js', 'db/kysely.js', 'db/node-pg-migrate.js'];

function filesUnder(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const file = path.join(dir, entry.name);
    return entry.isDirectory() ? filesUnder(file) : entry.isFile() ? [file] : [];
  });
}

function inputsHash(): string {
  const files = [
    ...filesUnder(path.join(root, 'src')),
    ...['tsconfig.json', 'tsconfig.build.json', 'package.json', 'package-lock.json', 'scripts/build.ts', 'scripts/bundle-deps.ts'].map((f) => path.join(root, f)),
    ...BUNDLED.map((name) => path.join(root, 'node_modules', name, 'package.json')),
  ].sort();
  const hash = createHash('sha256');
  for (const file of files) {
    // The path relative to the project, then the content.
    hash.update(`${path.relative(root, file)}\0`);
    hash.update(fs.readFileSync(file));
    hash.update('\0');
  }
  return hash.digest('hex');
}

function run(command: string, commandArgs: string[]): void {
  const result = spawnSync(command, commandArgs, { cwd: root, stdio: 'inherit' });
  if (result.error) throw result.error;
  if (result.status !== 0) process.exit(result.status ?? 1);
}

const hash = inputsHash();
const built = !args.force && fs.existsSync(stamp) && fs.readFileSync(stamp, 'utf8').trim() === hash && ENTRY_POINTS.every((f) => fs.existsSync(path.join(dist, f)));
if (built) {
  console.log('dist/ is up to date with src/ (scripts/build.ts --force builds it anyway)');
} else {
  // Removed first: a build that stops half way leaves no stamp to trust.
  fs.rmSync(stamp, { force: true });
  run(process.execPath, [path.join(root, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json']);
  run(process.execPath, ['--import', 'tsx', path.join(root, 'scripts/bundle-deps.ts')]);
  // The inputs again: a file changed while tsc ran makes this build stale, so no stamp.
  if (inputsHash() === hash) fs.writeFileSync(stamp, `${hash}\n`);
}
