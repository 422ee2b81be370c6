/**
 * `npm run bench:drain-cpu`: where a drain's CPU goes. One worker (in this
 * process, pgq from `dist/`) drains `--jobs` no-op jobs at `--concurrency`;
 * around the drain it reads the machine's busy time (/proc/stat), this
 * process's CPU (the worker, its lease thread included) and the CPU of every
 * PostgreSQL process (/proc/<pid>/stat of the server's children, plus what
 * exited children left in the postmaster's counters), each backend labelled
 * by the statement it was most often seen running (`pg_stat_activity`,
 * sampled every 10 ms during the drain by one more connection): the claim,
 * the completion, or other. Figures per job, per round.
 *
 * The server must run on this machine (its processes are read from /proc):
 * BENCH_DATABASE_URL or DATABASE_URL, else an embedded PostgreSQL. Options:
 * --rounds N (3), --jobs N (40,000), --concurrency N (100).
 */
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { z } from 'zod';
import { Pgq, defineTask } from './lib/pgq.js';
import { answers, startEmbedded, type EmbeddedServer } from './lib/embedded.js';

const { values } = parseArgs({
  options: { rounds: { type: 'string', default: '3' }, jobs: { type: 'string', default: '40000' }, concurrency: { type: 'string', default: '100' } },
});
const rounds = Number(values.rounds);
const jobs = Number(values.jobs);
const concurrency = Number(values.concurrency);
if (![rounds, jobs, concurrency].every((n) => Number.isInteger(n) && n > 0)) throw new Error('--rounds, --jobs and --concurrency must be positive whole numbers');

const TICK_MS = 10; // USER_HZ is 100 on Linux

/** utime + stime (and cutime + cstime) of a process, in ms; null when it is gone. */
function procCpu(pid: number): { self: number; children: number; ppid: number } | null {
  try {
    // The command name (field 2) may hold spaces: split after its closing parenthesis.
    const text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = text.slice(text.lastIndexOf(')') + 2).split(' ').map(Number);
    return { ppid: f[1]!, self: (f[11]! + f[12]!) * TICK_MS, children: (f[13]! + f[14]!) * TICK_MS };
  } catch {
    return null;
  }
}

function machineBusy(): { busy: number; total: number } {
  const fields = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = fields.reduce((a, b) => a + b, 0);
  return { busy: total - fields[3]! - fields[4]!, total };
}

/** CPU ms of the server's processes: each live child by pid, and the exited ones together. */
function serverCpu(postmaster: number): { byPid: Map<number, number>; exited: number } {
  const byPid = new Map<number, number>();
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const p = procCpu(Number(entry));
    if (p && (p.ppid === postmaster || Number(entry) === postmaster)) byPid.set(Number(entry), p.self);
  }
  return { byPid, exited: procCpu(postmaster)?.children ?? 0 };
}

function label(query: string): string {
  if (/claim_candidates|claim_limited/.test(query)) return 'claim';
  if (/SET state = 'succeeded'/.test(query)) return 'complete';
  return 'other';
}

let embedded: EmbeddedServer | null = null;
let url = process.env.BENCH_DATABASE_URL ?? process.env.DATABASE_URL;
if (!url || !(await answers(url))) {
  embedded = await startEmbedded();
  url = embedded.url;
}
const admin = new pg.Client({ connectionString: url });
await admin.connect();
const backendPid = (await admin.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
const postmaster = procCpu(backendPid)?.ppid;
if (postmaster === undefined) throw new Error('the PostgreSQL server is not on this machine (its backend is not in /proc): run with an embedded one (unset DATABASE_URL)');

const schema = 'pgq_drain_cpu';
const task = defineTask({ name: 'noop', schema: z.object({ i: z.number().int() }), handler: () => null });
process.stdout.write(`${jobs} jobs, concurrency ${concurrency}, ${rounds} rounds; µs of CPU per job (the machine's busy share is of all its cores)\n`);
process.stdout.write('| round | jobs/s | machine busy | worker process | PostgreSQL | claim backends | completion backends | other |\n|---|---:|---:|---:|---:|---:|---:|---:|\n');
try {
  for (let round = 1; round <= rounds; round++) {
    await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    const pgq = new Pgq({ connectionString: url, schema, tasks: [task] });
    await pgq.migrate();
    for (let i = 0; i < jobs; i += 1000) await pgq.enqueueMany(task, Array.from({ length: Math.min(1000, jobs - i) }, (_, k) => ({ i: i + k })));
    let done = 0;
    let drained!: () => void;
    const all = new Promise<void>((resolve) => (drained = resolve));
    const worker = pgq.worker({ concurrency });
    worker.on('job:success', () => {
      if (++done === jobs) drained();
    });
    // Which statement each backend runs: sampled while the drain runs (a
    // pool connection runs several kinds; its most frequent active one names it).
    const seen = new Map<number, Map<string, number>>();
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const { rows } = await admin.query<{ pid: number; query: string }>(
          "SELECT pid, query FROM pg_stat_activity WHERE datname = current_database() AND state = 'active' AND pid <> pg_backend_pid()",
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
    const s0 = serverCpu(postmaster);
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    await worker.start();
    await all;
    const ms = performance.now() - t0;
    const c = process.cpuUsage(c0);
    const s1 = serverCpu(postmaster);
    const m1 = machineBusy();
    sampling = false;
    await sampler;
    const roles = new Map([...seen].map(([pid, counts]) => [pid, [...counts].sort((a, b) => b[1] - a[1])[0]![0]]));
    const by: Record<string, number> = { claim: 0, complete: 0, other: s1.exited - s0.exited };
    for (const [pid, cpu] of s1.byPid) by[roles.get(pid) ?? 'other']! += cpu - (s0.byPid.get(pid) ?? 0);
    const perJob = (cpuMs: number): string => ((cpuMs * 1000) / jobs).toFixed(1);
    const server = by.claim! + by.complete! + by.other!;
    process.stdout.write(
      `| ${round} | ${Math.round((jobs / ms) * 1000).toLocaleString('en-US')} | ${((100 * (m1.busy - m0.busy)) / (m1.total - m0.total)).toFixed(0)}% | ` +
        `${perJob((c.user + c.system) / 1000)} | ${perJob(server)} | ${perJob(by.claim!)} | ${perJob(by.complete!)} | ${perJob(by.other!)} |\n`,
    );
    await worker.stop();
    await pgq.close();
  }
} finally {
  await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  await admin.end();
  await embedded?.stop();
}
