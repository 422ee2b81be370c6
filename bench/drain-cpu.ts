/**
 * `npm run bench:drain-cpu`: where a drain's CPU goes, pgq beside
 * graphile-worker tuned (or any PostgreSQL-backed `--systems`). Each round,
 * each system in turn (the order rotating) gets a fresh database, `--jobs`
 * no-op jobs enqueued in batches of 1,000, and one consumer at
 * `--concurrency` in this process, through the same adapters as `npm run
 * bench` (pgq from `dist/`). Around the drain (the consumer's start until
 * every job is finished) it reads the machine's busy time (/proc/stat), this
 * process's CPU (the consumer, threads included; the sampler below is a
 * little of it) and the CPU of every PostgreSQL process (/proc/<pid>/stat of
 * the server's children, plus what children that ended during the drain
 * used in it; the measuring connection and the probe's left out), each
 * backend's CPU split between claims, completions and other work in
 * proportion to how often it was seen running each (`pg_stat_activity`,
 * sampled every 10 ms). Figures per job; medians over the rounds, and pgq's
 * ratios. Beside them, how long after the consumer's start its first
 * handler ran, and the rate of handler starts over the second half of the
 * jobs: what a drain costs to get going, and what it runs at once going.
 *
 * The server must run on this machine (its processes are read from /proc):
 * BENCH_DATABASE_URL or DATABASE_URL, else an embedded PostgreSQL. Options:
 * --systems a,b (pgq,graphile-worker-tuned), --rounds N (3), --jobs N
 * (40,000), --concurrency N (100).
 */
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { benchServer, CLAIM_STATEMENT, medians as mediansOf, rotatingRounds } from './lib/rounds.js';
import type { RunEnv } from './lib/types.js';
import { loadSystem } from './systems/index.js';

const { values } = parseArgs({
  options: {
    systems: { type: 'string', default: 'pgq,graphile-worker-tuned' },
    rounds: { type: 'string', default: '3' },
    jobs: { type: 'string', default: '40000' },
    concurrency: { type: 'string', default: '100' },
  },
});
const systemNames = values.systems.split(',').map((n) => n.trim()).filter(Boolean);
const rounds = Number(values.rounds);
const jobs = Number(values.jobs);
const concurrency = Number(values.concurrency);
if (![rounds, jobs, concurrency].every((n) => Number.isInteger(n) && n > 0)) throw new Error('--rounds, --jobs and --concurrency must be positive whole numbers');

const TICK_MS = 10; // USER_HZ is 100 on Linux

/** A process's CPU in ms (utime + stime, and cutime + cstime of its reaped children), parent and start time; null when it is gone. */
function procCpu(pid: number): { self: number; children: number; ppid: number; startTime: number; comm: string } | null {
  try {
    // The command name (field 2) may hold spaces: split after its closing parenthesis.
    const text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const comm = text.slice(text.indexOf('(') + 1, text.lastIndexOf(')'));
    const f = text.slice(text.lastIndexOf(')') + 2).split(' ').map(Number);
    // f[0] is field 3: ppid is field 4, utime/stime 14/15, cutime/cstime 16/17, starttime 22.
    return { comm, ppid: f[1]!, self: (f[11]! + f[12]!) * TICK_MS, children: (f[13]! + f[14]!) * TICK_MS, startTime: f[19]! };
  } catch {
    return null;
  }
}

/** The machine's busy and total time: user, nice, system, idle, iowait, irq, softirq, steal (guest time is already in user and nice). */
function machineBusy(): { busy: number; total: number } {
  const fields = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1, 9).map(Number);
  const total = fields.reduce((a, b) => a + b, 0);
  return { busy: total - fields[3]! - fields[4]!, total };
}

interface ServerCpu {
  /** Each live child of the postmaster, keyed by pid and start time (a reused pid is another process). */
  live: Map<string, { pid: number; cpu: number }>;
  /** What the postmaster's reaped children used, in all. */
  reaped: number;
}

/** CPU ms of the server's processes. */
function serverCpu(postmaster: number): ServerCpu {
  const live = new Map<string, { pid: number; cpu: number }>();
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const p = procCpu(Number(entry));
    if (p && p.ppid === postmaster) live.set(`${entry}:${p.startTime}`, { pid: Number(entry), cpu: p.self });
  }
  return { live, reaped: procCpu(postmaster)?.children ?? 0 };
}

/** What a backend's statement is: pgq's claim or completion, or graphile-worker's (its getJobs update, its completeJobs delete). */
function label(query: string): string {
  if (CLAIM_STATEMENT.test(query)) return 'claim';
  // pgq's completion sets `state = CASE WHEN <cancel asked> THEN 'cancelled' ELSE 'succeeded' END`.
  if (/ELSE 'succeeded' END|delete from \S+\._private_jobs/.test(query)) return 'complete';
  return 'other';
}

const server = await benchServer();
const { admin, dbUrl, dropDatabase } = server;
const backendPid = (await admin.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
// The server's processes, read from /proc: this backend and its parent must
// be PostgreSQL's here (a server in a container has pids of its own).
const backend = procCpu(backendPid);
const postmaster = backend?.ppid;
if (postmaster === undefined || backend?.comm !== 'postgres' || procCpu(postmaster)?.comm !== 'postgres') {
  throw new Error('the PostgreSQL server is not a process of this machine (its backend is not in /proc): run with an embedded one (unset BENCH_DATABASE_URL and DATABASE_URL)');
}
const others = await admin.query<{ n: number }>(
  "SELECT count(*)::int AS n FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
);
if (others.rows[0]!.n > 0) process.stderr.write(`drain-cpu: ${others.rows[0]!.n} other client connection(s) on this server: their CPU counts as "other"\n`);
const systems = await Promise.all(systemNames.map((name) => loadSystem(name)));
for (const system of systems) if (system.backend !== 'postgres') throw new Error(`${system.name} does not run on PostgreSQL`);

const FIELDS = ['jobsPerSec', 'firstJobMs', 'secondHalfPerSec', 'busy', 'worker', 'server', 'claim', 'complete', 'other'] as const;
type Drain = Record<(typeof FIELDS)[number], number>;

async function drainOnce(systemIndex: number): Promise<Drain> {
  const system = systems[systemIndex]!;
  const dbName = `bench_drain_cpu_${systemIndex}`;
  await dropDatabase(dbName);
  await admin.query(`CREATE DATABASE "${dbName}"`);
  const env: RunEnv = { databaseUrl: dbUrl(dbName), redisUrl: '', runId: `drain-cpu-${systemIndex}` };
  try {
    await system.migrate(env);
    const producer = await system.producer(env, { poolSize: 2 });
    for (let i = 0; i < jobs; i += 1000) await producer.addMany(Array.from({ length: Math.min(1000, jobs - i) }, (_, k) => ({ i: i + k })));
    await producer.close();
    // Measure nothing left over from seeding: wait until the producer's and
    // the migration's connections have gone, then note the probe's backend.
    const dbBackends = async (): Promise<number[]> =>
      (await admin.query<{ pid: number }>('SELECT pid FROM pg_stat_activity WHERE datname = $1', [dbName])).rows.map((r) => r.pid);
    for (let i = 0; i < 100 && (await dbBackends()).length > 0; i++) await new Promise((resolve) => setTimeout(resolve, 50));
    const probe = await system.probe(env);
    const probePids = new Set(await dbBackends());
    let started = 0;
    let allStarted!: () => void;
    const everyStart = new Promise<void>((resolve) => (allStarted = resolve));
    // When the first handler started, and the second half of them (the
    // rate once the start-up is behind: the worker's own start, its first
    // claims and its code's warm-up).
    let firstAt = 0;
    let halfAt = 0;
    let lastAt = 0;
    const consumer = await system.consumer(env, {
      concurrency,
      onJob: () => {
        started += 1;
        if (started === 1) firstAt = performance.now();
        if (started === Math.ceil(jobs / 2)) halfAt = performance.now();
        if (started === jobs) {
          lastAt = performance.now();
          allStarted();
        }
      },
    });
    // Which statements each backend runs: sampled during the drain; a
    // backend's CPU is split between claims, completions and the rest in
    // proportion to how often it was seen running each.
    const seen = new Map<number, Map<string, number>>();
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const { rows } = await admin.query<{ pid: number; query: string }>(
          "SELECT pid, query FROM pg_stat_activity WHERE datname = $1 AND state = 'active'",
          [dbName],
        );
        for (const r of rows) {
          const counts = seen.get(r.pid) ?? new Map<string, number>();
          counts.set(label(r.query), (counts.get(label(r.query)) ?? 0) + 1);
          seen.set(r.pid, counts);
        }
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    })();
    const m0 = machineBusy();
    const s0 = serverCpu(postmaster!);
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    await consumer.start();
    await everyStart;
    while ((await probe.finished(jobs)) < jobs) await new Promise((resolve) => setTimeout(resolve, 5));
    const ms = performance.now() - t0;
    const c = process.cpuUsage(c0);
    const s1 = serverCpu(postmaster!);
    const m1 = machineBusy();
    sampling = false;
    await sampler;
    await consumer.stop();
    await probe.close();
    // Processes that ended during the drain are in the reaped total with
    // their whole lifetime: take off what they had used before it.
    const by: Record<string, number> = { claim: 0, complete: 0, other: s1.reaped - s0.reaped };
    for (const [key, before] of s0.live) if (!s1.live.has(key)) by.other! -= before.cpu;
    for (const [key, after] of s1.live) {
      // The measuring connection and the probe's are the harness, not the system.
      if (after.pid === backendPid || probePids.has(after.pid)) continue;
      const used = after.cpu - (s0.live.get(key)?.cpu ?? 0);
      const counts = seen.get(after.pid);
      const samples = counts ? [...counts.values()].reduce((a, b) => a + b, 0) : 0;
      if (!counts || samples === 0) {
        by.other! += used;
        continue;
      }
      for (const [role, n] of counts) by[role]! += (used * n) / samples;
    }
    const perJob = (cpuMs: number): number => (cpuMs * 1000) / jobs;
    return {
      jobsPerSec: (jobs / ms) * 1000,
      firstJobMs: firstAt - t0,
      secondHalfPerSec: lastAt > halfAt ? ((jobs - Math.ceil(jobs / 2)) / (lastAt - halfAt)) * 1000 : Number.NaN,
      busy: (100 * (m1.busy - m0.busy)) / (m1.total - m0.total),
      worker: perJob((c.user + c.system) / 1000),
      server: perJob(by.claim! + by.complete! + by.other!),
      claim: perJob(by.claim!),
      complete: perJob(by.complete!),
      other: perJob(by.other!),
    };
  } finally {
    await dropDatabase(dbName);
  }
}

const row = (name: string, d: Drain): string =>
  `| ${name} | ${Math.round(d.jobsPerSec).toLocaleString('en-US')} | ${Math.round(d.firstJobMs)} | ${Math.round(d.secondHalfPerSec).toLocaleString('en-US')} | ${d.busy.toFixed(0)}% | ${d.worker.toFixed(1)} | ${d.server.toFixed(1)} | ${d.claim.toFixed(1)} | ${d.complete.toFixed(1)} | ${d.other.toFixed(1)} |\n`;
const head =
  '| system | jobs/s | first job (ms after start) | handler starts/s, second half | machine busy | worker process | PostgreSQL | claim backends | completion backends | other |\n' +
  '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n';
process.stdout.write(`${jobs} jobs, concurrency ${concurrency}, ${rounds} rounds, systems rotating; µs of CPU per job (the machine's busy share is of all its cores)\n\n${head}`);
try {
  const results = await rotatingRounds(systemNames, rounds, drainOnce, (label, d) => process.stdout.write(row(label, d)));
  process.stdout.write(`\nMedians of ${rounds} rounds:\n\n${head}`);
  const medians = new Map([...results].map(([name, ds]) => [name, mediansOf(ds, FIELDS)]));
  for (const [name, d] of medians) process.stdout.write(row(name, d));
  const pgq = medians.get('pgq');
  if (pgq) {
    for (const [name, d] of medians) {
      if (name === 'pgq') continue;
      // CPU is read in 10 ms ticks: a short drain may show 0 for a peer.
      const ratio = (a: number, b: number): string => (b > 0 ? `${(a / b).toFixed(2)}x` : 'n/a');
      process.stdout.write(
        `\npgq ÷ ${name}: drain ${ratio(pgq.jobsPerSec, d.jobsPerSec)}, its second half ${ratio(pgq.secondHalfPerSec, d.secondHalfPerSec)}; first job ${Math.round(pgq.firstJobMs)} vs ${Math.round(d.firstJobMs)} ms after start; CPU per job: worker ${ratio(pgq.worker, d.worker)}, PostgreSQL ${ratio(pgq.server, d.server)} (claims ${ratio(pgq.claim, d.claim)}, completions ${ratio(pgq.complete, d.complete)})\n`,
      );
    }
  }
} finally {
  await server.close();
}
