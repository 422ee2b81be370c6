/**
 * Runs one attempt inside a sandbox (thread or child process): loads the
 * handler module once per sandbox, builds the handler's context, calls it,
 * and turns whatever happens into a reply. Nothing here throws: every
 * failure becomes `{ ok: false }`, so only a dying sandbox rejects.
 */
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { SnoozeError } from '../core/errors.js';
import { toJsonText } from '../core/json.js';
import { importModule } from '../core/import-module.js';
import type { Logger } from '../core/logger.js';
import type { JobProgress } from '../core/types.js';
import { progressText } from '../worker/progress.js';
import type { SandboxContext, SandboxHandler } from './handler.js';
import { serializeError, type LogLevel, type SandboxEvent, type SandboxReply, type SandboxRequest } from './protocol.js';

type AnyHandler = SandboxHandler<unknown, unknown>;

const handlers = new Map<string, Promise<AnyHandler>>();

/** The handler `exportName` (default: `default`, else `handler`) of `module`, loaded once per thread or process. */
/** Most JSON a sandboxed result may be (the worker's `maxPayloadBytes` is checked again when it arrives). */
const SANDBOX_RESULT_BYTES = 64 * 1024 * 1024;

export function loadSandboxHandler(module: string, exportName: string | null): Promise<AnyHandler> {
  const key = `${module}#${exportName ?? ''}`;
  let loading = handlers.get(key);
  if (!loading) {
    loading = importHandler(module, exportName);
    handlers.set(key, loading);
    loading.catch(() => handlers.delete(key));
  }
  return loading;
}

async function importHandler(module: string, exportName: string | null): Promise<AnyHandler> {
  const file = sourceFile(fileURLToPath(module));
  let mod: Record<string, unknown>;
  try {
    mod = await importModule(file);
  } catch (err) {
    throw new Error(`could not load sandbox module ${module}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  const found = exportName ? mod[exportName] : typeof mod.default === 'function' ? mod.default : mod.handler;
  if (typeof found !== 'function') {
    const wanted = exportName ? `an export named ${JSON.stringify(exportName)}` : 'a default export or an export named "handler"';
    throw new Error(`sandbox module ${module} has no handler: it needs ${wanted} that is a function`);
  }
  return found as AnyHandler;
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

/** Runs the request's handler under `signal`, sending log lines and progress reports through `send`. */
export async function runAttempt(
  request: SandboxRequest,
  signal: AbortSignal,
  send: (event: SandboxEvent) => void,
  progress: ProgressChannel,
): Promise<SandboxReply> {
  try {
    const handler = await loadSandboxHandler(request.module, request.exportName);
    const ctx: SandboxContext = {
      job: { ...request.job, payload: request.payload },
      attempt: request.attempt,
      signal,
      logger: forwardingLogger(send, {}),
      snooze(delayMs: number): never {
        throw new SnoozeError(delayMs);
      },
      progress: (value) => progress.report(value),
    };
    const result = await handler(request.payload, ctx);
    // The worker checks the result against its own limit; this bound only
    // keeps a value shared many times over from walking for long here.
    return { ok: true, resultJson: toJsonText(result, 'result', SANDBOX_RESULT_BYTES) };
  } catch (err) {
    return { ok: false, error: serializeError(err) };
  } finally {
    progress.close();
  }
}

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
