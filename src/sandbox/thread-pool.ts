/**
 * Sandbox threads: a piscina pool running thread-entry in each thread, one
 * attempt per thread at a time. Each attempt gets a MessageChannel: the
 * thread says when the handler starts and sends its log lines and progress
 * reports; the worker sends the abort and acknowledges each report once saved. Terminating an attempt aborts its piscina task, which
 * terminates the thread running it, and settles once that thread has
 * exited; piscina starts a new thread for the next task. A thread that dies (process.exit, out of memory under
 * `resourceLimits`) rejects only the task it ran; an error a handler left
 * behind does not end it (sandbox-entry.ts, `catchStrayErrors`).
 *
 * Attempts wait for a turn here, not in piscina's queue: piscina gives at
 * most `size` tasks at a time. With no minimum of threads, piscina starts
 * no thread in place of one it removed (a terminated attempt, a thread that
 * died) until its next `run()`: a task in its queue meanwhile waited for
 * another attempt to come, for ever on a quiet worker. A turn ends once the
 * attempt's thread has exited, so a thread finishing a native call after its
 * termination is never one more than `size` either.
 */
import { MessageChannel, type ResourceLimits } from 'node:worker_threads';
import { Piscina } from 'piscina';
import { SandboxCrashedError } from '../core/errors.js';
import { settlesWithin, sleep } from '../core/sleep.js';
import type { ThreadTask } from './thread-entry.js';
import {
  SandboxStopped,
  type SandboxAttempt,
  type SandboxEvent,
  type SandboxListener,
  type SandboxPool,
  type SandboxReply,
  type SandboxRequest,
  type SerializedError,
  type ToSandbox,
} from './protocol.js';
import type { JobProgress } from '../core/types.js';

/** Idle threads above none exit after this long. */
const IDLE_TIMEOUT_MS = 30_000;

/** How long an attempt aborted before its thread marked it taken waits for the mark (or the thread's exit). */
const UNREAD_START_WAIT_MS = 100;
/** How long a reply waits for its thread's end mark (sent before the reply, so only a busy main loop takes long). */
const END_WAIT_MS = 1_000;

export interface ThreadPoolOptions {
  size: number;
  resourceLimits: ResourceLimits | undefined;
}

export class ThreadPool implements SandboxPool {
  readonly #piscina: Piscina;
  readonly #size: number;
  /** Attempts given to piscina and not yet settled (their thread exited, for a terminated one). */
  #running = 0;
  /** Attempts waiting for a turn, first come first served. */
  readonly #waiting = new Set<() => void>();
  /**
   * Attempts given to piscina that no thread has taken yet, oldest first:
   * each fails with the error of a thread that died while starting (piscina
   * leaves the task it was started for in its queue, for ever).
   */
  readonly #unstarted = new Set<(err: unknown) => boolean>();
  #closed = false;

  constructor(options: ThreadPoolOptions) {
    // From compiled output the entry is plain JS; from TypeScript sources a bootstrap loads it through tsx.
    const fromSource = import.meta.url.endsWith('.ts');
    this.#size = options.size;
    this.#piscina = new Piscina({
      filename: new URL(fromSource ? './thread-bootstrap.mjs' : './thread-entry.js', import.meta.url).href,
      minThreads: 0,
      maxThreads: options.size,
      idleTimeout: IDLE_TIMEOUT_MS,
      concurrentTasksPerWorker: 1,
      ...(options.resourceLimits ? { resourceLimits: options.resourceLimits } : {}),
    });
    // A thread that dies before it takes a task (out of memory under a small
    // resourceLimits while loading): piscina emits it on the pool, where
    // Node would throw it, ending the worker's process.
    this.#piscina.on('error', (err: unknown) => {
      for (const failStart of this.#unstarted) if (failStart(err)) return;
    });
  }

  run(request: SandboxRequest, listener: SandboxListener): SandboxAttempt {
    const { port1, port2 } = new MessageChannel();
    const kill = new AbortController();
    let started = false;
    let sawEnd!: () => void;
    const ended = new Promise<void>((resolve) => (sawEnd = resolve));
    port1.on('message', (event: SandboxEvent) => {
      if (event.type === 'end') sawEnd();
      else if (event.type === 'started') {
        started = true;
        this.#unstarted.delete(failStart);
        listener.started();
      } else if (event.type === 'log') listener.log(event.level, event.obj, event.msg);
      else if (event.type === 'stray') listener.stray(event.error);
      else void listener.progress(JSON.parse(event.valueJson) as JobProgress).then(() => port1.postMessage({ type: 'progress-saved', seq: event.seq } satisfies ToSandbox));
    });
    // The thread's end of the channel closes when the thread has exited.
    const exited = new Promise<void>((resolve) => port1.once('close', () => resolve()));
    const taken = new Int32Array(new SharedArrayBuffer(4));
    const task: ThreadTask = { request, port: port2, taken };
    let dispatched = false;
    let startError: { err: unknown } | null = null;
    /** Fails this attempt with a starting thread's death, unless a thread took it: says whether it did. */
    const failStart = (err: unknown): boolean => {
      this.#unstarted.delete(failStart);
      if (started || Atomics.load(taken, 0) === 1) return false;
      startError = { err };
      kill.abort();
      return true;
    };
    const done = this.#turn(kill.signal)
      .then(async () => {
        dispatched = true;
        this.#unstarted.add(failStart);
        const reply = (await this.#piscina.run(task, { transferList: [port2], signal: kill.signal })) as SandboxReply;
        // The thread's last events (a log line, an unawaited progress report made just before the handler
        // returned) are read before the port closes: they were lost when the reply came first.
        await settlesWithin(Promise.race([ended, exited]), END_WAIT_MS);
        return reply;
      })
      .catch(async (err: unknown) => {
        if (startError) {
          // A thread took it just as it was failed: its handler ends with that thread, before the retry runs.
          if (Atomics.load(taken, 0) === 1) await exited;
          throw crashError(startError.err, request);
        }
        if (kill.signal.aborted) {
          // The thread marks the attempt taken (shared memory) before its
          // handler runs, and only then says `started`: a loop that was busy
          // (or blocked by a handler) when the abort came has not read that
          // message, and may not for a while. The mark decides; a thread about
          // to take it when piscina terminated it is given a moment to.
          // Given back as unstarted while its handler ran, the job would run
          // elsewhere beside this thread.
          if (dispatched && !started && Atomics.load(taken, 0) === 0) await Promise.race([exited, sleep(UNREAD_START_WAIT_MS)]);
          if (Atomics.load(taken, 0) === 1) started = true;
          // piscina rejects at once and terminates the thread without
          // waiting; a handler in a synchronous native call (a *Sync crypto
          // or zlib call, a child process waited for) runs on until that
          // call returns. Settled only once its thread has exited, so the
          // job's next attempt never runs beside it.
          if (started) await exited;
          throw new SandboxStopped(started);
        }
        if (err instanceof SandboxStopped) throw err;
        throw crashError(err, request);
      })
      .finally(() => {
        this.#unstarted.delete(failStart);
        port1.close();
        if (dispatched) this.#release();
      });
    return {
      done,
      abort(reason: SerializedError): void {
        // Taken, its `started` perhaps not read yet: the handler hears the abort (the port keeps it until it listens).
        if (started || Atomics.load(taken, 0) === 1) port1.postMessage({ type: 'abort', reason } satisfies ToSandbox);
        else kill.abort();
      },
      terminate(): void {
        kill.abort();
      },
    };
  }

  async close(): Promise<void> {
    this.#closed = true;
    for (const wake of [...this.#waiting]) wake();
    await this.#piscina.destroy();
  }

  /**
   * Resolves once this attempt may run (fewer than `size` running); rejects
   * with SandboxStopped(false) when it is aborted or the pool closes first.
   * A turn given is ended by one `#release()`.
   */
  #turn(signal: AbortSignal): Promise<void> {
    if (this.#closed || signal.aborted) return Promise.reject(new SandboxStopped(false));
    if (this.#running < this.#size && this.#waiting.size === 0) {
      this.#running += 1;
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const wake = (): void => {
        this.#waiting.delete(wake);
        signal.removeEventListener('abort', wake);
        if (this.#closed || signal.aborted) return reject(new SandboxStopped(false));
        this.#running += 1;
        resolve();
      };
      this.#waiting.add(wake);
      signal.addEventListener('abort', wake, { once: true });
    });
  }

  /** An attempt has settled: the next waiting one runs. */
  #release(): void {
    this.#running -= 1;
    const [next] = this.#waiting;
    if (next && this.#running < this.#size) next();
  }
}

function crashError(err: unknown, request: SandboxRequest): SandboxCrashedError {
  const message = err instanceof Error ? err.message : String(err);
  const code = (err as { code?: unknown } | null)?.code;
  const where = `the sandbox thread running job ${request.job.id}`;
  if (code === 'ERR_WORKER_OUT_OF_MEMORY') {
    return new SandboxCrashedError(`${where} ran out of memory (${message}); raise the worker's sandbox.resourceLimits`, { cause: err });
  }
  if (code === 'ERR_WORKER_INIT_FAILED') {
    return new SandboxCrashedError(`${where} could not start (${message}): the system's limit of threads or memory, or the worker's sandbox.resourceLimits`, { cause: err });
  }
  if (/exited with code/.test(message)) return new SandboxCrashedError(`${where} ${message.replace(/^worker /, '')} (process.exit() in the handler?)`, { cause: err });
  return new SandboxCrashedError(`${where} crashed: ${message}`, { cause: err });
}
