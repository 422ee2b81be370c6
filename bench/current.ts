/**
 * `npm run bench:current -- [bench options]`: the benchmark (bench/run.ts,
 * every option passed through) on the newest Node.js LTS against the peers'
 * newest releases, which may need a newer Node.js than the project's own
 * devDependencies do (pg-boss 11+ and graphile-worker 0.18 need Node.js 22).
 *
 * Node.js comes from the registry's `node-<platform>` package (shared with
 * the compatibility matrix's cache); `pg-boss`, `graphile-worker` and
 * `bullmq` are installed at `latest` into a prefix of their own
 * (.cache/bench-peers) and loaded from there through bench/lib/peers.mjs.
 * The report's Libraries line names the versions compared.
 *
 * Environment: BENCH_NODE (Node.js major, default the newest supported LTS),
 * BENCH_PEER_VERSIONS (e.g. `pg-boss@12 graphile-worker@0.18`, default
 * each at `latest`), PGQ_MATRIX_CACHE (as for test:matrix).
 */
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { PLATFORM, assertReachableByOthers, ensurePackage } from '../test/matrix/install.js';
import { NEWEST_NODE, NODE_MAJORS } from '../test/matrix/versions.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const cacheRoot = path.resolve(process.env.PGQ_MATRIX_CACHE ?? path.join(ROOT, '.cache/test-matrix'));
const peersPrefix = path.join(ROOT, '.cache/bench-peers');
const major = Number(process.env.BENCH_NODE ?? NEWEST_NODE);
if (!NODE_MAJORS.includes(major)) throw new Error(`BENCH_NODE must be one of ${NODE_MAJORS.join(', ')}; got ${process.env.BENCH_NODE}`);
const peers = (process.env.BENCH_PEER_VERSIONS ?? 'pg-boss@latest graphile-worker@latest bullmq@latest').split(/\s+/).filter(Boolean);

assertReachableByOthers(cacheRoot);
const node = path.join(ensurePackage(cacheRoot, `node${major}`, `node-${PLATFORM}`, String(major)), 'bin', 'node');
fs.mkdirSync(peersPrefix, { recursive: true });
process.stdout.write(`installing ${peers.join(' ')} into ${path.relative(ROOT, peersPrefix)}\n`);
execFileSync('npm', ['install', '--no-save', '--no-package-lock', '--no-audit', '--no-fund', '--ignore-scripts', '--prefix', peersPrefix, ...peers], {
  stdio: ['ignore', 'ignore', 'inherit'],
});

const env: NodeJS.ProcessEnv = {
  ...process.env,
  PATH: `${path.dirname(node)}${path.delimiter}${process.env.PATH ?? ''}`,
  NODE_OPTIONS: [process.env.NODE_OPTIONS, `--import ${path.join(ROOT, 'bench/lib/peers.mjs')}`].filter(Boolean).join(' '),
  PGQ_BENCH_PEERS: peersPrefix,
};
process.stdout.write(`running bench/run.ts on Node.js ${execFileSync(node, ['--version'], { encoding: 'utf8' }).trim()}\n`);
const child = spawn(node, ['--import', 'tsx', path.join(ROOT, 'bench/run.ts'), ...process.argv.slice(2)], { cwd: ROOT, env, stdio: 'inherit' });
child.once('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
