/**
 * What travels between a worker and its sandboxes, the same for threads
 * (a MessagePort per attempt) and child processes (IPC with structured
 * clone): one request in, events while the handler runs (started, log
 * lines, progress reports), one reply out; the other way, the abort and the
 * acknowledgement of each progress report once it was saved. Errors travel as plain
 * objects and keep their `code`, so `PermanentError` and `ctx.snooze()`
 * mean the same inside a sandbox as outside.
 */
import type { JobProgress, JobRecord } from '../core/types.js';
import { errorMessage, readableError } from '../core/errors.js';

/** One attempt to run in a sandbox. */
export interface SandboxRequest {
  /** The handler module, a file URL. */
  module: string;
  /** The export holding the handler; null: default, else `handler`. */
  exportName: string | null;
  /** Validated payload. */
  payload: unknown;
  job: JobRecord;
  attempt: number;
  /** Most JSON the handler's result may be: the worker's `maxPayloadBytes`, checked in the sandbox so a result over it is not sent back. */
  maxResultBytes: number;
}

/** How an attempt ended inside its sandbox. The result is JSON text, already checked. */
/**
 * `moduleFailed`: the handler's module (or one it imports) failed to load
 * here. Node keeps a module whose evaluation threw and throws its error
 * again on every import: a process sandbox that replies so is replaced.
 */
export type SandboxReply = { ok: true; resultJson: string } | { ok: false; error: SerializedError; moduleFailed?: true };

/** An error as it crosses the boundary. */
export interface SerializedError {
  name: string;
  message: string;
  stack?: string;
  code?: string;
  delayMs?: number;
}

export type LogLevel = 'error' | 'warn' | 'info' | 'debug';

/**
 * Sandbox → worker while the handler runs. `progress` carries a value already
 * checked, as JSON text; `seq` pairs it with its acknowledgement. `stray`: an
 * error the attempt's own code left behind (a timer that threw) fails the
 * attempt, and its signal fired; the reply waits for the handler to settle,
 * and the worker terminates the sandbox if it does not within
 * `terminateGraceMs`, as after an abort of its own.
 */
export type SandboxEvent =
  | { type: 'started' }
  | { type: 'log'; level: LogLevel; obj: Record<string, unknown>; msg?: string }
  | { type: 'progress'; seq: number; valueJson: string }
  | { type: 'stray'; error: SerializedError }
  /** A thread's last message on the attempt's port: its events before it are all read once this is. */
  | { type: 'end' };

/** Worker → sandbox while the handler runs: the abort, and `progress-saved` once report `seq` was written (or given up). */
export type ToSandbox = { type: 'abort'; reason: SerializedError } | { type: 'progress-saved'; seq: number };

/** Child process protocol: the request, the abort and progress acknowledgements in, events and the reply out. */
export type ToChild = { type: 'run'; request: SandboxRequest } | ToSandbox;
export type FromChild = SandboxEvent | { type: 'done'; reply: SandboxReply };

/**
 * How a child process wraps what it sends, on the IPC channel it shares with
 * the handler's own code: a message the handler sends with `process.send`
 * (a library's `process.send('ready')`) lacks the wrapper and is ignored, so
 * it is never taken for the attempt's reply.
 */
export interface FromChildEnvelope {
  pgqSandbox: FromChild;
}

/** The sandbox's message in an IPC message, or null for one that is not pgq's. */
export function unwrapFromChild(message: unknown): FromChild | null {
  if (typeof message !== 'object' || message === null || !('pgqSandbox' in message)) return null;
  const inner = (message as FromChildEnvelope).pgqSandbox;
  return typeof inner === 'object' && inner !== null ? inner : null;
}

/** What a pool hands back for one attempt. */
export interface SandboxAttempt {
  /** The reply; rejects with SandboxCrashedError or SandboxStopped. */
  readonly done: Promise<SandboxReply>;
  /** Forwards an abort into the running handler; an attempt still queued is dropped at once (SandboxStopped, not started). */
  abort(reason: SerializedError): void;
  /** Terminates the thread or process running this attempt (SandboxStopped, started). */
  terminate(): void;
}

/** Event callbacks of one attempt. */
export interface SandboxListener {
  /** The handler is about to run in its thread or process (the attempt left the pool's queue). */
  started(): void;
  log(level: LogLevel, obj: Record<string, unknown>, msg: string | undefined): void;
  /** A progress report; resolves once it was saved or given up (never rejects). */
  progress(value: JobProgress): Promise<void>;
  /** An error the attempt's own code left behind failed it (its signal fired inside); the handler may still run. */
  stray(error: SerializedError): void;
}

/** A pool of threads or processes. */
export interface SandboxPool {
  run(request: SandboxRequest, listener: SandboxListener): SandboxAttempt;
  /** Terminates every sandbox; queued attempts reject. */
  close(): Promise<void>;
}

/** An attempt ended because the worker ended it: dropped from the queue, or its sandbox terminated. */
export class SandboxStopped extends Error {
  constructor(readonly started: boolean) {
    super(started ? 'the sandbox was terminated' : 'the attempt was dropped before it started');
    this.name = 'SandboxStopped';
  }
}

/** An error thrown inside a sandbox, as seen by the worker (or an abort reason, as seen inside). */
export class RemoteError extends Error {
  readonly code: string | undefined;
  readonly delayMs: number | undefined;

  constructor(serialized: SerializedError) {
    super(serialized.message);
    this.name = serialized.name;
    this.code = serialized.code;
    this.delayMs = serialized.delayMs;
    if (serialized.stack) this.stack = serialized.stack;
  }
}

/**
 * What crosses back from a sandbox for any thrown value: plain strings and
 * numbers only, so that sending it never fails (a getter that throws, a
 * null-prototype object, a Symbol as a message were a "crash" of the thread,
 * and killed a process sandbox).
 */
export function serializeError(thrown: unknown): SerializedError {
  const err = readableError(thrown);
  if (!(err instanceof Error)) return { name: 'Error', message: errorMessage(err) };
  const { code, delayMs, stack } = err as { code?: unknown; delayMs?: unknown; stack?: unknown };
  return {
    name: typeof err.name === 'string' ? err.name : 'Error',
    message: errorMessage(err),
    ...(typeof stack === 'string' && stack ? { stack } : {}),
    ...(typeof code === 'string' ? { code } : {}),
    ...(typeof delayMs === 'number' ? { delayMs } : {}),
  };
}
