/**
 * Runs one attempt inside a sandbox (thread or child process): loads the
 * handler module once per sandbox, builds the handler's context, calls it,
 * and turns whatever happens into a reply. Nothing here throws: every
 * failure becomes `{ ok: false }`, so only a dying sandbox rejects; an
 * error a handler leaves behind is caught too (`catchStrayErrors`).
 */
import fs from 'node:fs';
import { AsyncLocalStorage } from 'node:async_hooks';
import { fileURLToPath } from 'node:url';
import { PermanentError, SnoozeError, UnstorableResultError } from '../core/errors.js';
import { toJsonText } from '../core/json.js';
import { importModule } from '../core/import-module.js';
import type { Logger } from '../core/logger.js';
import type { JobProgress } from '../core/types.js';
import { progressText } from '../worker/progress.js';
import type { SandboxContext, SandboxHandler } from './handler.js';
import { serializeError, type LogLevel, type SandboxEvent, type SandboxReply, type SandboxRequest } from './protocol.js';

type AnyHandler = SandboxHandler<unknown, unknown>;

const handlers = new Map<string, Promise<AnyHandler>>();
/** Loads of a module that failed in this sandbox, by module: the next load evaluates it anew. */
const failedLoads = new Map<string, number>();
/**
 * At most this many fresh loads of one module in one sandbox: each leaves the
 * failed module's record behind, so a module that always fails at load (a
 * missing variable at its top) keeps failing with its last error after these.
 */
const MAX_RELOADS = 20;

/** The handler `exportName` (default: `default`, else `handler`) of `module`, loaded once per thread or process. */
export function loadSandboxHandler(module: string, exportName: string | null): Promise<AnyHandler> {
  const key = `${module}#${exportName ?? ''}`;
  let loading = handlers.get(key);
  if (!loading) {
    // A load that failed (a config file replaced mid-deploy, a connection at the module's top that timed out)
    // is tried again by the next attempt: it failed every attempt of this sandbox for good before. The
    // module itself is loaded anew under another URL; a failure in a module it imports stays in this
    // sandbox's module map, so a process sandbox is replaced after such a reply (process-pool.ts), and a
    // thread keeps it until the pool lets the thread go (idle for 30 s).
    loading = importHandler(module, exportName, Math.min(failedLoads.get(module) ?? 0, MAX_RELOADS));
    handlers.set(key, loading);
    loading.catch((err: unknown) => {
      handlers.delete(key);
      // A module that loaded but lacks the handler is not evaluated again.
      if (!(err instanceof PermanentError)) failedLoads.set(module, (failedLoads.get(module) ?? 0) + 1);
    });
  }
  return loading;
}

async function importHandler(module: string, exportName: string | null, reload: number): Promise<AnyHandler> {
  const file = sourceFile(fileURLToPath(module));
  let mod: Record<string, unknown>;
  try {
    mod = await importModule(file, { reload });
  } catch (err) {
    throw new ModuleLoadError(`could not load sandbox module ${module}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  const found = exportName ? mod[exportName] : typeof mod.default === 'function' ? mod.default : mod.handler;
  if (typeof found !== 'function') {
    const wanted = exportName ? `an export named ${JSON.stringify(exportName)}` : 'a default export or an export named "handler"';
    // The same on every attempt: failed for good, not loaded again and again.
    throw new PermanentError(`sandbox module ${module} has no handler: it needs ${wanted} that is a function`);
  }
  return found as AnyHandler;
}

/** A module that failed to load (not one that loaded without the handler). */
class ModuleLoadError extends Error {
  constructor(message: string, options: { cause: unknown }) {
    super(message, options);
    this.name = 'Error'; // as the job's errors named it before
  }
}

/** `x.js` that does not exist but whose `x.ts` does (a TypeScript source run through tsx): the `.ts`. */
export function sourceFile(file: string): string {
  if (fs.existsSync(file)) return file;
  const ts = file.replace(/\.(m|c)?js$/, '.$1ts');
  return ts !== file && fs.existsSync(ts) ? ts : file;
}

/**
 * The progress reports of one attempt: each is checked here (a bad value
 * throws in the handler, as on the main thread), sent to the worker, and
 * resolves when the worker says it was saved. Once the attempt has ended,
 * reports are dropped and every one still waiting resolves.
 */
export class ProgressChannel {
  #seq = 0;
  #closed = false;
  readonly #waiting = new Map<number, () => void>();

  constructor(private readonly send: (event: SandboxEvent) => void) {}

  report(value: JobProgress): Promise<void> {
    const valueJson = progressText(value);
    if (this.#closed) return Promise.resolve();
    const seq = ++this.#seq;
    return new Promise<void>((resolve) => {
      this.#waiting.set(seq, resolve);
      this.send({ type: 'progress', seq, valueJson });
    });
  }

  /** The worker saved report `seq` (or gave up on it). */
  saved(seq: number): void {
    this.#waiting.get(seq)?.();
    this.#waiting.delete(seq);
  }

  close(): void {
    this.#closed = true;
    for (const resolve of this.#waiting.values()) resolve();
    this.#waiting.clear();
  }
}

/** The attempt a piece of code belongs to, followed through the timers and promises it creates. */
interface AttemptScope {
  jobId: string;
  /** Fails the attempt with an error that escaped its handler while it ran. */
  fail(err: unknown): void;
  ended: boolean;
}

const attemptScope = new AsyncLocalStorage<AttemptScope>();
/** The attempt running in this sandbox now (one at a time), through which a stray error is reported. */
let running: { jobId: string; send: (event: SandboxEvent) => void } | null = null;
let catching = false;

/**
 * Catches the errors that escape a handler's await (a timer that throws, a
 * promise nobody awaits that rejects): left to Node, they end the sandbox,
 * and with it whichever attempt runs there then, often not the one that
 * left the error behind. Each is traced to the attempt whose code raised
 * it: while that attempt runs, it fails with the error (and its signal
 * fires); once it has ended, the error is logged (through the attempt
 * running now, else on stderr) and fails nothing. An error of no attempt's
 * ends the sandbox, as Node would. Called once by each sandbox thread and
 * process.
 */
export function catchStrayErrors(): void {
  if (catching) return;
  catching = true;
  const onStray = (err: unknown): void => {
    const owner = attemptScope.getStore();
    if (owner && !owner.ended) {
      owner.fail(err);
      return;
    }
    if (!owner) {
      // Not a handler's (the pool's own machinery, a module's top level):
      // as Node would, the sandbox ends, failing what runs in it, and is replaced.
      const msg = 'pgq sandbox ends on an error thrown outside any handler';
      process.stderr.write(`${JSON.stringify({ level: 50, time: Date.now(), pid: process.pid, name: 'pgq', err: serializeError(err), msg })}\n`);
      process.exit(1);
    }
    const msg = `pgq sandbox caught an error thrown job ${owner.jobId}'s handler after it ended (a timer or promise left behind?); it fails no job`;
    const obj = { err: serializeError(err), leftByJob: owner.jobId };
    if (running) running.send({ type: 'log', level: 'error', obj, msg });
    else process.stderr.write(`${JSON.stringify({ level: 50, time: Date.now(), pid: process.pid, name: 'pgq', ...obj, msg })}\n`);
  };
  process.on('uncaughtException', onStray);
  process.on('unhandledRejection', onStray);
}

/** Runs the request's handler under `signal`, sending log lines and progress reports through `send`. */
export async function runAttempt(
  request: SandboxRequest,
  signal: AbortSignal,
  send: (event: SandboxEvent) => void,
  progress: ProgressChannel,
): Promise<SandboxReply> {
  let reject!: (err: unknown) => void;
  const escaped = new Promise<never>((_, r) => (reject = r));
  escaped.catch(() => undefined);
  // The handler's signal: the worker's, and fired too when a stray error of
  // its own fails the attempt, so a handler that watches it stops instead of
  // running on beside the job's next attempt.
  const stop = new AbortController();
  const onAbort = (): void => stop.abort(signal.reason);
  if (signal.aborted) onAbort();
  else signal.addEventListener('abort', onAbort, { once: true });
  // A stray error of the attempt's own fails it: the first is its error, the
  // worker hears of it (and terminates the sandbox if the handler does not
  // settle within its grace), and the reply waits for the handler to settle:
  // until then the attempt still runs here, and its retry must not run beside it.
  let strayed = false;
  const fail = (err: unknown): void => {
    if (!strayed) send({ type: 'stray', error: serializeError(err) });
    strayed = true;
    reject(err);
    if (!stop.signal.aborted) stop.abort(err);
  };
  const scope: AttemptScope = { jobId: request.job.id, fail, ended: false };
  const current = { jobId: request.job.id, send };
  running = current;
  try {
    const handler = await loadSandboxHandler(request.module, request.exportName);
    const ctx: SandboxContext = {
      job: { ...request.job, payload: request.payload },
      attempt: request.attempt,
      signal: stop.signal,
      logger: forwardingLogger(send, {}),
      snooze(delayMs: number): never {
        throw new SnoozeError(delayMs);
      },
      progress: (value) => progress.report(value),
    };
    const running = attemptScope.run(scope, async () => handler(request.payload, ctx));
    let result: unknown;
    try {
      result = await Promise.race([running, escaped]);
    } catch (err) {
      if (strayed) await running.then(ignore, ignore);
      throw err;
    }
    // The worker's own limit (maxPayloadBytes), as on the main thread: a
    // result over it is refused here, before it is copied to the worker.
    try {
      return { ok: true, resultJson: toJsonText(result, 'result', request.maxResultBytes) };
    } catch (err) {
      // The handler did its work: another attempt would do it again and
      // return the same. Failed for good, as on the main thread.
      // Named as the main thread's: the worker fails it for good even when a stop asked meanwhile (the handler returned).
      throw new UnstorableResultError(`the handler succeeded, but its result cannot be stored: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
  } catch (err) {
    return err instanceof ModuleLoadError ? { ok: false, error: serializeError(err), moduleFailed: true } : { ok: false, error: serializeError(err) };
  } finally {
    scope.ended = true;
    signal.removeEventListener('abort', onAbort);
    if (running === current) running = null;
    progress.close();
  }
}

function ignore(): void {}

/** A Logger whose lines go to the worker, which writes them with the job's own logger. Not a logger of its own. */
function forwardingLogger(send: (event: SandboxEvent) => void, bindings: Record<string, unknown>): Logger {
  const at =
    (level: LogLevel) =>
    (obj: object, msg?: string): void => {
      send({ type: 'log', level, obj: plain({ ...bindings, ...obj }), ...(msg === undefined ? {} : { msg }) });
    };
  return {
    error: at('error'),
    warn: at('warn'),
    info: at('info'),
    debug: at('debug'),
    child: (more) => forwardingLogger(send, { ...bindings, ...more }),
  };
}

/** A log object as JSON data (errors as their message and stack), so it can cross any boundary. */
function plain(obj: Record<string, unknown>): Record<string, unknown> {
  try {
    return JSON.parse(
      JSON.stringify(obj, (_key, value: unknown) => (value instanceof Error ? serializeError(value) : typeof value === 'bigint' ? String(value) : value)),
    ) as Record<string, unknown>;
  } catch (err) {
    return { logObjectDropped: `not serialisable: ${err instanceof Error ? err.message : String(err)}` };
  }
}
