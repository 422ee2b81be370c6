/**
 * Worker processes for tests: spawned with tsx, read as JSON-line events,
 * killed by pid. A process a test starts is killed when that test ends (a
 * test that failed half way would otherwise leave workers serving the file's
 * schema, and they would take the next test's jobs); one started in a
 * `beforeAll`, shared by the file's tests, when the file ends.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';
import { afterAll, afterEach, beforeEach } from 'vitest';

export interface WorkerProcess {
  child: ChildProcess;
  pid: number;
  events: Record<string, unknown>[];
  /** Resolves with the first event matching `predicate` (past or future). */
  waitFor(predicate: (e: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  exited: Promise<number | null>;
  stderr(): string;
}

const byTest = new Set<ChildProcess>();
const byFile = new Set<ChildProcess>();
let inTest = false;

async function killAll(children: Set<ChildProcess>): Promise<void> {
  const live = [...children].filter((child) => child.exitCode === null && child.signalCode === null);
  children.clear();
  await Promise.all(
    live.map((child) => {
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGKILL');
      return exited;
    }),
  );
}

beforeEach(() => {
  inTest = true;
});
afterEach(async () => {
  inTest = false;
  await killAll(byTest);
});
afterAll(() => killAll(byFile));

export const FIXTURE = path.resolve(import.meta.dirname, '../fixtures/worker-process.ts');

export function spawnWorker(env: Record<string, string>, script = FIXTURE): WorkerProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', script], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  (inTest ? byTest : byFile).add(child);
  const events: Record<string, unknown>[] = [];
  const waiters: { predicate: (e: Record<string, unknown>) => boolean; resolve: (e: Record<string, unknown>) => void }[] = [];
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  readline.createInterface({ input: child.stdout! }).on('line', (line) => {
    let event: Record<string, unknown>;
    try {
      event = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return;
    }
    events.push(event);
    for (const w of [...waiters]) {
      if (w.predicate(event)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(event);
      }
    }
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return {
    child,
    pid: child.pid!,
    events,
    exited,
    stderr: () => err,
    waitFor(predicate, timeoutMs = 90_000) {
      const found = events.find(predicate);
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`worker ${child.pid} did not report the awaited event; stderr:\n${err}`)), timeoutMs);
        waiters.push({
          predicate,
          resolve: (e) => {
            clearTimeout(timer);
            resolve(e);
          },
        });
      });
    },
  };
}

/** Whether a process with this pid exists (signal 0). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
