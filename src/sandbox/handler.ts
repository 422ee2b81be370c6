/**
 * The public side of sandboxed handlers: the `sandbox` option of a task, the
 * context a handler gets inside its thread or process, and the two typing
 * helpers that carry payload and result types across the module boundary
 * (a function cannot cross a thread boundary, so the handler lives in a
 * module of its own and the task names that module).
 *
 * This file is what a handler module imports (through `pgq/sandbox`): it
 * must stay free of runtime weight.
 */
import type { StandardSchemaV1 } from '../core/standard-schema.js';
import type { JobProgress, JobRecord } from '../core/types.js';
import type { Logger } from '../core/logger.js';

export { PermanentError } from '../core/errors.js';

/** Where a sandboxed handler runs: a worker thread (cheap, shares the process) or a child process (full isolation). */
export type SandboxKind = 'thread' | 'process';

/**
 * The context a sandboxed handler gets: the same names as a main-thread
 * handler's `JobContext`, but for `recordMeta` (attempt middleware, which
 * runs on the worker's main thread around a sandboxed handler too, has it).
 */
export interface SandboxContext<Payload = unknown> {
  /** The job as claimed (state `running`, attempts already counted), payload validated. */
  job: JobRecord<Payload>;
  /** 1 for the first attempt. */
  attempt: number;
  /**
   * Aborts on timeout, cancelJob, worker shutdown or a lost lease (the abort
   * is forwarded from the worker). A handler that does not settle within the
   * worker's `sandbox.terminateGraceMs` after it has its thread or process
   * terminated. A synchronous loop never sees the abort: it is terminated.
   */
  signal: AbortSignal;
  /** Logger bound to this job; its lines go to the worker's logger. */
  logger: Logger;
  /** Ends this attempt and runs the job again after `delayMs`, without counting a failure. */
  snooze(delayMs: number): never;
  /**
   * Reports how far the handler got, as on the main thread: a number from 0
   * to 100 or a small JSON object, saved to `jobs.progress` by the worker
   * (throttled). Resolves once saved; a bad value throws a ValidationError.
   */
  progress(value: JobProgress): Promise<void>;
}

/** A sandboxed handler: the default export (or the export named `handler`) of a sandbox module. */
export type SandboxHandler<Payload = never, Result = unknown> = (
  payload: Payload,
  ctx: SandboxContext<Payload>,
) => Promise<Result> | Result;

declare const handlerType: unique symbol;

/** The `sandbox` option of `defineTask`. */
export interface SandboxOptions<Payload = never, Result = unknown> {
  /**
   * The handler module, as a file URL or an absolute path: write
   * `new URL('./resize.job.js', import.meta.url)`. A `.js` name whose file is
   * missing falls back to the `.ts` beside it, so the same line works from
   * TypeScript sources (run through tsx) and from compiled output.
   */
  module: URL | string;
  /** `thread` (default) or `process`. */
  kind?: SandboxKind | undefined;
  /** The export holding the handler. Default: the default export, else the export named `handler`. */
  export?: string | undefined;
  /** Type only, never set: the handler's type, from `sandboxed<typeof handler>(...)`. */
  readonly [handlerType]?: (payload: Payload) => Result;
}

/** A task's sandbox, validated: the module as a file URL. */
export interface ResolvedSandbox {
  readonly module: string;
  readonly kind: SandboxKind;
  readonly export: string | null;
}

/**
 * Types a handler module's handler. Give the task's schema to type the
 * payload from it, or annotate the payload parameter yourself.
 *
 * @example
 * // resize.job.ts
 * import { defineSandboxHandler } from 'pgq/sandbox';
 * import { resizeSchema } from './schemas.js';
 * export default defineSandboxHandler(resizeSchema, async (payload, ctx) => {
 *   ctx.logger.info({ width: payload.width }, 'resizing');
 *   return { bytes: await resize(payload, ctx.signal) };
 * });
 */
export function defineSandboxHandler<Schema extends StandardSchemaV1, Result>(
  schema: Schema,
  handler: SandboxHandler<StandardSchemaV1.InferOutput<Schema>, Result>,
): SandboxHandler<StandardSchemaV1.InferOutput<Schema>, Result>;
export function defineSandboxHandler<Payload, Result>(handler: SandboxHandler<Payload, Result>): SandboxHandler<Payload, Result>;
export function defineSandboxHandler(...args: unknown[]): unknown {
  const handler = args.length > 1 ? args[1] : args[0];
  if (typeof handler !== 'function') throw new TypeError('defineSandboxHandler: the handler must be a function');
  return handler;
}

/**
 * The `sandbox` option with the handler's types attached, so the task's
 * result type is the handler's and its schema is checked against the
 * handler's payload. Import the handler's type only (`import type`): the
 * task module must not load the handler module.
 *
 * @example
 * import type resizeHandler from './resize.job.js';
 * export const resize = defineTask({
 *   name: 'resize',
 *   schema: resizeSchema,
 *   timeoutMs: 60_000,
 *   sandbox: sandboxed<typeof resizeHandler>({ module: new URL('./resize.job.js', import.meta.url), kind: 'thread' }),
 * });
 */
export function sandboxed<Handler extends (payload: never, ctx: never) => unknown>(
  options: SandboxOptions,
): SandboxOptions<Parameters<Handler>[0], Awaited<ReturnType<Handler>>> {
  return options as SandboxOptions<Parameters<Handler>[0], Awaited<ReturnType<Handler>>>;
}
