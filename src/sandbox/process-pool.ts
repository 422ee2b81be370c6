/**
 * Sandbox child processes: up to `size` children forked from
 * process-entry, each running one attempt at a time, started on demand and
 * kept until the pool closes. A child that dies fails only the attempt it
 * ran, with how it died (exit code or signal, and its last stderr line);
 * the next attempt forks a new child. Terminating an attempt kills its
 * child with SIGKILL. A child exits by itself when its IPC channel closes,
 * so none outlives the worker even if the worker is killed.
 *
 * Why not a library: piscina is threads only. workerpool has process
 * workers, but cancels a task by rejecting it at once and then keeps or
 * kills the process on timers of its own, and has no way to send a running
 * task anything else. pgq needs the abort forwarded into the handler while
 * the attempt stays pending (the job is held until it settles), the grace
 * before a kill decided per attempt by the worker, and to know whether the
 * handler settled or its process was killed. That takes a small pool.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { SandboxCrashedError, errorMessage } from '../core/errors.js';
import {
  SandboxStopped,
  type FromChild,
  type SandboxAttempt,
  type SandboxListener,
  type SandboxPool,
  type SandboxReply,
  type SandboxRequest,
  type SerializedError,
  type ToChild,
  unwrapFromChild,
} from './protocol.js';
import type { JobProgress } from '../core/types.js';

export interface ProcessPoolOptions {
  size: number;
  /** V8 old-generation limit of each child (`--max-old-space-size`). */
  maxOldGenerationSizeMb: number | undefined;
}

interface Pending {
  request: SandboxRequest;
  listener: SandboxListener;
  resolve(reply: SandboxReply): void;
  reject(err: Error): void;
  child: Child | null;
  started: boolean;
  terminating: boolean;
}

interface Child {
  process: ChildProcess;
  pending: Pending | null;
  /** Sent SIGKILL: it takes no attempt, even if its last one's reply comes in before it exits. */
  dying: boolean;
  stderrTail: string;
  /** V8's `FATAL ERROR` line, kept apart: the native stack printed after it can push it out of the tail. */
  fatal: string | null;
}

const STDERR_TAIL = 2_000;

export class ProcessPool implements SandboxPool {
  readonly #options: ProcessPoolOptions;
  readonly #children = new Set<Child>();
  readonly #queue: Pending[] = [];
  readonly #entry: string;
  readonly #execArgv: string[];
  #closed = false;

  constructor(options: ProcessPoolOptions) {
    this.#options = options;
    const fromSource = import.meta.url.endsWith('.ts');
    this.#entry = fileURLToPath(new URL(fromSource ? './process-entry.ts' : './process-entry.js', import.meta.url));
    // Inherit the worker's flags except a debugger port (two processes cannot
    // share it) and code to run (`node -e`/`-p`: the child would run that code
    // instead of the sandbox's entry).
    const execArgv = inheritedExecArgv(process.execArgv);
    if (fromSource && !execArgv.some((arg) => arg.includes('tsx'))) {
      execArgv.push('--import', pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href);
    }
    if (options.maxOldGenerationSizeMb) execArgv.push(`--max-old-space-size=${options.maxOldGenerationSizeMb}`);
    this.#execArgv = execArgv;
  }

  run(request: SandboxRequest, listener: SandboxListener): SandboxAttempt {
    let pending!: Pending;
    const done = new Promise<SandboxReply>((resolve, reject) => {
      pending = { request, listener, resolve, reject, child: null, started: false, terminating: false };
    });
    if (this.#closed) pending.reject(new SandboxStopped(false));
    else {
      this.#queue.push(pending);
      this.#dispatch();
    }
    return {
      done,
      abort: (reason: SerializedError) => {
        if (pending.child) send(pending.child, { type: 'abort', reason });
        else this.#drop(pending);
      },
      terminate: () => {
        if (!pending.child) return this.#drop(pending);
        pending.terminating = true;
        pending.child.dying = true;
        pending.child.process.kill('SIGKILL');
      },
    };
  }

  async close(): Promise<void> {
    this.#closed = true;
    for (const pending of this.#queue.splice(0)) pending.reject(new SandboxStopped(false));
    await Promise.all(
      [...this.#children].map((child) => {
        if (child.pending) child.pending.terminating = true;
        const exited = new Promise<void>((resolve) => {
          if (child.process.exitCode !== null || child.process.signalCode !== null) resolve();
          else child.process.once('exit', () => resolve());
        });
        child.process.kill('SIGKILL');
        return exited;
      }),
    );
  }

  #drop(pending: Pending): void {
    const at = this.#queue.indexOf(pending);
    if (at >= 0) this.#queue.splice(at, 1);
    pending.reject(new SandboxStopped(false));
  }

  #dispatch(): void {
    while (this.#queue.length > 0) {
      let child = [...this.#children].find((c) => c.pending === null && !c.dying);
      // A dying child is replaced at once rather than waited for.
      const live = [...this.#children].filter((c) => !c.dying).length;
      if (!child && live < this.#options.size) child = this.#fork();
      if (!child) return;
      const pending = this.#queue.shift()!;
      child.pending = pending;
      pending.child = child;
      try {
        send(child, { type: 'run', request: pending.request });
      } catch (err) {
        // A request that cannot be copied (a function or a symbol in the payload or the job): this attempt fails, the child stays free.
        child.pending = null;
        pending.child = null;
        pending.reject(new SandboxCrashedError(`job ${pending.request.job.id}'s attempt could not be sent to a sandbox process: ${errorMessage(err)} (its payload and job must be plain data)`));
      }
    }
  }

  #fork(): Child {
    const proc = fork(this.#entry, [], {
      execArgv: this.#execArgv,
      serialization: 'advanced',
      stdio: ['ignore', 'inherit', 'pipe', 'ipc'],
    });
    const child: Child = { process: proc, pending: null, dying: false, stderrTail: '', fatal: null };
    this.#children.add(child);
    proc.stderr?.on('data', (chunk: Buffer) => {
      process.stderr.write(chunk);
      const text = chunk.toString();
      // A whole line only: one split across chunks is found with the next one.
      child.fatal ??= /FATAL ERROR[^\n]*(?=\n)/.exec(child.stderrTail.slice(-300) + text)?.[0] ?? null;
      child.stderrTail = (child.stderrTail + text).slice(-STDERR_TAIL);
    });
    proc.on('message', (raw: unknown) => {
      const pending = child.pending;
      // What the handler sends on the channel itself is not pgq's: ignored.
      const message = unwrapFromChild(raw);
      if (!pending || !message) return;
      if (message.type === 'started') {
        pending.started = true;
        pending.listener.started();
      } else if (message.type === 'log') pending.listener.log(message.level, message.obj, message.msg);
      else if (message.type === 'progress') {
        const { seq } = message;
        void pending.listener.progress(JSON.parse(message.valueJson) as JobProgress).then(() => {
          if (child.pending === pending) send(child, { type: 'progress-saved', seq });
        });
      } else if (message.type === 'stray') pending.listener.stray(message.error);
      else if (message.type === 'done') {
        child.pending = null;
        // A module that failed to load stays failed in this process's module map: replaced, not given the next attempt.
        if (!message.reply.ok && message.reply.moduleFailed) {
          child.dying = true;
          proc.kill('SIGKILL');
        }
        pending.resolve(message.reply);
        this.#dispatch();
      }
    });
    proc.on('error', () => proc.kill('SIGKILL'));
    proc.on('exit', (code, signal) => {
      this.#children.delete(child);
      const pending = child.pending;
      child.pending = null;
      if (pending) {
        if (pending.terminating) pending.reject(new SandboxStopped(true));
        else pending.reject(new SandboxCrashedError(describeDeath(proc.pid, pending.request, code, signal, child.stderrTail, child.fatal)));
      }
      if (!this.#closed) this.#dispatch();
    });
    return child;
  }
}

function send(child: Child, message: ToChild): void {
  if (child.process.connected) child.process.send(message, (err) => err && child.process.kill('SIGKILL'));
}

function describeDeath(
  pid: number | undefined,
  request: SandboxRequest,
  code: number | null,
  signal: NodeJS.Signals | null,
  stderr: string,
  fatal: string | null,
): string {
  const how = signal ? `was killed by ${signal}` : `exited with code ${code ?? 'unknown'}`;
  const lines = stderr.trim().split('\n').filter(Boolean);
  const lastLine = fatal ?? lines.find((line) => /FATAL ERROR/.test(line)) ?? lines.at(-1);
  const hint = deathHint(code, signal, fatal ?? stderr);
  return `the sandbox process ${pid ?? '?'} running job ${request.job.id} ${how}${hint}${lastLine ? `; its stderr: ${lastLine.slice(0, 500)}` : ''}`;
}

/** What a sandbox process's end most likely was, for its error message. */
function deathHint(code: number | null, signal: NodeJS.Signals | null, stderr: string): string {
  if (/heap out of memory/i.test(stderr)) return ' (out of memory: raise the worker\'s sandbox.resourceLimits.maxOldGenerationSizeMb)';
  if (signal === 'SIGKILL') return ' (killed from outside, e.g. by the kernel\'s out-of-memory killer)';
  // V8's fatal errors end the process so; a heap too small to start in says no more than "#" on stderr
  // (Node.js 20: SIGTRAP), or nothing (Node.js 24: SIGSEGV, as a native addon's crash would).
  if (signal === 'SIGTRAP' || signal === 'SIGABRT' || signal === 'SIGSEGV') {
    return ' (a fatal error of Node.js or V8, such as a heap too small under the worker\'s sandbox.resourceLimits.maxOldGenerationSizeMb, or a native addon\'s crash)';
  }
  if (code !== null) return ' (process.exit() in the handler?)';
  return '';
}

/** Node.js flags a sandbox process inherits: all but `--inspect*` and the code of `-e`/`--eval`/`-p`/`--print` (with its argument). */
export function inheritedExecArgv(argv: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i]!;
    if (arg.startsWith('--inspect')) continue;
    if (['-e', '--eval', '-p', '--print', '-pe'].includes(arg)) {
      i += 1; // its code
      continue;
    }
    if (/^--(eval|print)=/.test(arg)) continue;
    out.push(arg);
  }
  return out;
}
