/**
 * `npm run bench:rss`: a worker's peak memory (and its drain rate) as an
 * application runs it — plain Node.js, no TypeScript loader, pgq from
 * `dist/` — beside graphile-worker tuned, side by side in one run.
 *
 * The main benchmark's children run under tsx, which keeps every loaded
 * module's source and adds tens of MiB that grow with the module count (an
 * idle process importing pgq: 78 MiB plain, 135 MiB under tsx); its RSS row
 * measures that too. Here each run gets a fresh database, the jobs are
 * seeded by one process and drained by another (bench/worker-rss.mjs), and
 * the drain process reports its peak RSS (the kernel's high-water mark).
 * Each round also loads each package alone in a fresh process: the RSS that
 * zod (pgq's dependency) and the package's own modules add, the start-up
 * share of the gap; and, after pgq, a bare worker thread: the floor of what
 * pgq's lease thread (started by start(), so after "RSS before the drain")
 * adds during the drain.
 *
 * Options: --rounds N (default 3), --jobs N (default 20,000),
 * --concurrency N (default 100). Builds pgq first (npm run build).
 * Environment: BENCH_DATABASE_URL, as for `npm run bench`; an embedded
 * PostgreSQL when nothing answers.
 */
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { answers, startEmbedded, type EmbeddedServer } from './lib/embedded.js';
import { median } from './lib/stats.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SCRIPT = path.join(ROOT, 'bench', 'worker-rss.mjs');
const SYSTEMS = ['pgq', 'graphile-worker-tuned'] as const;

interface Drain {
  jobs: number;
  ms: number;
  jobsPerSec: number;
  peakRssMiB: number;
  rssAtStartMiB: number;
}

const { values } = parseArgs({
  options: { rounds: { type: 'string', default: '3' }, jobs: { type: 'string', default: '20000' }, concurrency: { type: 'string', default: '100' } },
});
const rounds = Number(values.rounds);
const jobs = Number(values.jobs);
const concurrency = Number(values.concurrency);

let embedded: EmbeddedServer | undefined;
let baseUrl = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
if (!(await answers(baseUrl))) {
  embedded = await startEmbedded();
  baseUrl = embedded.url;
}

function databaseUrl(name: string): string {
  const url = new URL(baseUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

function step(mode: 'migrate' | 'seed' | 'drain', system: string, url: string): string {
  return execFileSync(process.execPath, [SCRIPT, mode, system, url, String(jobs), String(concurrency)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
}

/** What importing costs, in a fresh process: zod (pgq's dependency) and the package's own code; for pgq, a bare worker thread. */
interface Imports {
  zodMiB: number;
  ownMiB: number;
  /** pgq only: a bare Node.js worker thread (pgq's lease thread runs on one). */
  threadMiB: number | null;
}
function imports(system: string): Imports {
  const out = execFileSync(process.execPath, ['--expose-gc', SCRIPT, 'imports', system], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  return JSON.parse(out.trim().split('\n').at(-1)!) as Imports;
}

const results = new Map<string, Drain[]>(SYSTEMS.map((s) => [s, []]));
const loaded = new Map<string, Imports[]>(SYSTEMS.map((s) => [s, []]));
const admin = new pg.Client({ connectionString: baseUrl });
try {
  execFileSync('npm', ['run', '-s', 'build'], { cwd: ROOT, stdio: 'inherit' });
  await admin.connect();
  for (let round = 0; round < rounds; round++) {
    // Systems rotate, so neither always runs first.
    const order = round % 2 === 0 ? SYSTEMS : [...SYSTEMS].reverse();
    for (const system of order) {
      const db = `bench_rss_${system.replaceAll('-', '_')}`;
      await admin.query(`DROP DATABASE IF EXISTS ${db}`);
      await admin.query(`CREATE DATABASE ${db}`);
      const url = databaseUrl(db);
      step('migrate', system, url);
      step('seed', system, url);
      const drain = JSON.parse(step('drain', system, url).trim().split('\n').at(-1)!) as Drain;
      results.get(system)!.push(drain);
      loaded.get(system)!.push(imports(system));
      process.stderr.write(`[bench:rss] round ${round + 1}/${rounds} ${system.padEnd(22)} ${drain.jobsPerSec} jobs/s, peak RSS ${drain.peakRssMiB} MiB (${drain.rssAtStartMiB} at start)\n`);
      await admin.query(`DROP DATABASE ${db}`);
    }
  }
} finally {
  await admin.end().catch(() => undefined);
  await embedded?.stop();
}

const med = (system: string, key: keyof Drain): number => median(results.get(system)!.map((d) => d[key]))!;
const fmt = (n: number): string => n.toLocaleString('en-US', { maximumFractionDigits: 1 });
const lines = [
  `Worker processes under plain Node.js ${process.version}, ${jobs.toLocaleString('en-US')} no-op jobs drained at concurrency ${concurrency}; medians of ${rounds} rounds.`,
  '',
  '| | pgq | graphile-worker-tuned | pgq ÷ graphile-worker-tuned |',
  '|---|---:|---:|---:|',
  ...(
    [
      ['Worker peak RSS (MiB)', 'peakRssMiB'],
      ['RSS before the drain (MiB)', 'rssAtStartMiB'],
      ['Drain (jobs/s)', 'jobsPerSec'],
    ] as const
  ).map(([title, key]) => `| ${title} | ${fmt(med('pgq', key))} | ${fmt(med('graphile-worker-tuned', key))} | ${(med('pgq', key) / med('graphile-worker-tuned', key)).toFixed(2)} |`),
  ...(
    [
      ['Loading zod alone, a fresh process (MiB; pgq depends on it)', 'zodMiB'],
      ['Loading the package itself, a fresh process (MiB)', 'ownMiB'],
    ] as const
  ).map(([title, key]) => {
    const of = (system: string): number => median(loaded.get(system)!.map((i) => i[key]))!;
    return `| ${title} | ${fmt(of('pgq'))} | ${fmt(of('graphile-worker-tuned'))} | |`;
  }),
  `| A bare Node.js worker thread, started after the package (MiB; pgq renews its lease on one, during the drain, not before it) | ${fmt(median(loaded.get('pgq')!.map((i) => i.threadMiB ?? Number.NaN))!)} | n/a | |`,
];
process.stdout.write(`${lines.join('\n')}\n`);
