/**
 * Runs sandboxed handlers for one worker: the executor calls `run` where it
 * would call `task.handler`. The pools (threads, processes) are the
 * worker's, made on the first sandboxed job and closed by `close()` when the
 * worker stops.
 *
 * One attempt: queued in its pool (its executor slot stays taken meanwhile)
 * → runs in a thread or process (its time limit starts now) → settles with
 * the handler's result or error. When `ctx.signal` aborts (timeout, cancel, shutdown, lost lease) the
 * abort is forwarded into the sandbox; a handler that has not settled
 * `terminateGraceMs` later has its thread or process terminated, and the
 * attempt rejects with a JobTimeoutError saying so (for a timeout) or the
 * signal's own reason. So the promise `run` returns always settles, and only
 * once the handler has stopped running.
 */
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { importOptional } from '../core/optional-packages.js';
import { JobTimeoutError, PermanentError, SandboxCrashedError, ValidationError, errorMessage } from '../core/errors.js';
import type { ResolvedSandboxOptions } from '../config.js';
import type { JobContext, TaskRegistry } from '../task.js';
import type { ResolvedSandbox } from './handler.js';
import { RemoteError, SandboxStopped, serializeError, type SandboxPool, type SandboxReply, type SerializedError } from './protocol.js';
import { sourceFile } from './sandbox-entry.js';

/**
 * The thread pool's module, loaded on first need: it imports piscina, an
 * optional dependency, which `import 'pgq'` must not load.
 */
function importThreadPool(): Promise<typeof import('./thread-pool.js')> {
  return importOptional(['piscina'], () => import('./thread-pool.js'));
}

export class SandboxRunner {
  readonly #options: ResolvedSandboxOptions;
  readonly #maxResultBytes: number;
  readonly #kinds = new Set<ResolvedSandbox['kind']>();
  #threads: Promise<SandboxPool> | undefined;
  #processes: Promise<SandboxPool> | undefined;
  #closed = false;

  /**
   * Throws a ValidationError naming the first sandboxed task whose module
   * file does not exist. `maxResultBytes` is the worker's `maxPayloadBytes`:
   * the same limit holds for results in a sandbox as on the main thread.
   */
  constructor(options: ResolvedSandboxOptions, tasks: TaskRegistry, maxResultBytes: number) {
    this.#options = options;
    this.#maxResultBytes = maxResultBytes;
    for (const name of tasks.names()) {
      const sandbox = tasks.get(name)?.sandbox;
      if (!sandbox) continue;
      if (!fs.existsSync(sourceFile(fileURLToPath(sandbox.module)))) {
        throw new ValidationError(`task ${name}.sandbox.module`, `${fileURLToPath(sandbox.module)} does not exist`);
      }
      this.#kinds.add(sandbox.kind);
    }
  }

  /** Loads the pool code the worker's sandboxed tasks need (pools start on first use); rejects naming a missing package. */
  async ready(): Promise<void> {
    if (this.#kinds.has('thread')) await importThreadPool();
  }

  /**
   * Runs a sandboxed task's handler in its pool; resolves with the handler's
   * result. `started` is called when the handler leaves the pool's queue and
   * starts in its thread or process (its time limit counts from there).
   */
  async run(sandbox: ResolvedSandbox, payload: unknown, ctx: JobContext, started: () => void = () => {}): Promise<unknown> {
    const { signal } = ctx;
    if (signal.aborted) throw signal.reason;
    let killTimer: NodeJS.Timeout | undefined;
    /** The error the attempt's own code left behind (it failed the attempt inside the sandbox). */
    let stray: SerializedError | undefined;
    const terminateLater = (): void => {
      killTimer ??= setTimeout(() => attempt.terminate(), this.#options.terminateGraceMs);
    };
    const attempt = (await this.#pool(sandbox.kind)).run(
      { module: sandbox.module, exportName: sandbox.export, payload, job: ctx.job, attempt: ctx.attempt, maxResultBytes: this.#maxResultBytes },
      {
        started,
        log: (level, obj, msg) => ctx.logger[level](obj, msg),
        // ctx.progress throws (synchronously) only for a bad value, which the
        // sandbox checked already; never let one escape into a message handler.
        progress: async (value) => {
          try {
            await ctx.progress(value);
          } catch {
            // already refused inside the sandbox
          }
        },
        // The handler heard it through its signal; one that runs on is ended as after an abort.
        stray: (error) => {
          stray ??= error;
          terminateLater();
        },
      },
    );
    const onAbort = (): void => {
      attempt.abort(serializeError(signal.reason));
      terminateLater();
    };
    signal.addEventListener('abort', onAbort, { once: true });
    // Aborted while the pool was being made (the first attempt's await above): the event has fired already.
    if (signal.aborted) onAbort();
    let reply: SandboxReply;
    try {
      reply = await attempt.done;
    } catch (err) {
      if (!(err instanceof SandboxStopped)) throw this.#cannotSend(payload, ctx) ?? err;
      if (!err.started) throw signal.aborted ? signal.reason : new SandboxCrashedError('the sandbox pool closed before the attempt started');
      // A stray error's: the attempt fails with it, as had the handler settled.
      if (stray && !signal.aborted) throw new RemoteError({ ...stray, message: `${stray.message} (${this.#terminatedWhat(sandbox.kind)} after that error)` });
      throw this.#terminated(sandbox.kind, signal.reason);
    } finally {
      clearTimeout(killTimer);
      signal.removeEventListener('abort', onAbort);
    }
    if (!reply.ok) throw new RemoteError(reply.error);
    return JSON.parse(reply.resultJson) as unknown;
  }

  /**
   * Why this attempt's payload could not be sent into a sandbox (a schema
   * that puts functions or symbols into it), as a
   * PermanentError: every attempt would fail the same way. Looked for only
   * once an attempt has failed, so a sent payload is not copied twice.
   */
  #cannotSend(payload: unknown, ctx: JobContext): PermanentError | null {
    try {
      structuredClone({ payload, job: ctx.job });
      return null;
    } catch (err) {
      return new PermanentError(`the payload of job ${ctx.job.id} cannot be sent into its sandbox (sandboxed handlers take plain data: what the task's schema returns must be cloneable, without functions or symbols): ${errorMessage(err)}`, { cause: err });
    }
  }

  /** Terminates every sandbox of this worker. Call after the executor has settled. */
  async close(): Promise<void> {
    this.#closed = true;
    const pools = [this.#threads, this.#processes];
    this.#threads = undefined;
    this.#processes = undefined;
    await Promise.all(pools.map((pool) => pool?.then((p) => p.close(), () => undefined)));
  }

  async #pool(kind: ResolvedSandbox['kind']): Promise<SandboxPool> {
    if (this.#closed) throw new SandboxCrashedError('the worker is stopping: its sandboxes are closed');
    const { threads, processes, resourceLimits } = this.#options;
    if (kind === 'thread') {
      return (this.#threads ??= importThreadPool().then(({ ThreadPool }) => new ThreadPool({ size: threads, resourceLimits })));
    }
    return (this.#processes ??= import('./process-pool.js').then(
      ({ ProcessPool }) => new ProcessPool({ size: processes, maxOldGenerationSizeMb: resourceLimits?.maxOldGenerationSizeMb }),
    ));
  }

  #terminatedWhat(kind: ResolvedSandbox['kind']): string {
    return `the handler did not stop within ${this.#options.terminateGraceMs} ms, so its ${kind} was terminated`;
  }

  #terminated(kind: ResolvedSandbox['kind'], reason: unknown): unknown {
    const what = this.#terminatedWhat(kind);
    if (reason instanceof JobTimeoutError) return new JobTimeoutError(reason.timeoutMs, what);
    if (reason !== undefined) return reason;
    return new SandboxCrashedError(`the worker stopped: ${what}`);
  }
}
