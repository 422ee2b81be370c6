/**
 * Workflow building blocks: `step`, `chain`, `group`, `chord`, a step's
 * `after(...)` for graphs that are not a chain of groups, and `map` and
 * `chunks`, which build a group from a list. They only describe a workflow;
 * `pgq.enqueueWorkflow(flow)` validates and inserts it.
 *
 * Types carry results end to end. Every flow has, at compile time only:
 * - `In`: what it accepts from the step before it. It sits in a function
 *   parameter, so it is contravariant: a flow that accepts `unknown` (a step
 *   with its own payload) fits after anything, and `chain(a, b)` compiles only
 *   if `a`'s result is assignable to `b`'s task input.
 * - `Out`: its result — a step's handler result, a chain's last result, a
 *   group's results as a tuple (or array) in member order.
 * - `Many`: true when it ends in several jobs (a group). A group member must
 *   end in one job, so groups do not nest directly (wrap one in a chord).
 */
import { z } from 'zod';
import type { BackoffOptions } from '../core/backoff.js';
import { ValidationError } from '../core/errors.js';
import type { StepFailure } from '../core/types.js';
import type { AnyTask, TaskInput, TaskResult } from '../task.js';

/** Most steps one workflow may have. */
export const MAX_WORKFLOW_STEPS = 50_000;

declare const FLOW_TYPES: unique symbol;

/** Compile-time only: what a flow accepts and gives. */
export interface FlowTypes<In, Out, Many extends boolean> {
  input: (input: In) => void;
  output: Out;
  many: Many;
}

/** Anything a workflow is made of: a step, a chain, a group (a chord is a chain). */
export interface Flow<In, Out, Many extends boolean = boolean> {
  readonly kind: 'step' | 'chain' | 'group';
  readonly [FLOW_TYPES]?: FlowTypes<In, Out, Many>;
}

/** Any flow, whatever it accepts and gives. */
export type AnyFlow = Flow<any, any, boolean>;
/** A flow that ends in one job: a step, or a chain or chord ending in one. */
export type SingleFlow = Flow<any, any, false>;

/** The result type of a flow. */
export type FlowResult<F> = F extends Flow<any, infer O, any> ? O : never;
/** The input type a flow accepts from the step before it. */
export type FlowInput<F> = F extends Flow<infer I, any, any> ? I : never;

type Results<T extends readonly unknown[]> = { -readonly [K in keyof T]: FlowResult<T[K]> };
type Inputs<T extends readonly unknown[]> = T extends readonly [infer H, ...infer R]
  ? FlowInput<H> & Inputs<R>
  : T extends readonly (infer E)[]
    ? number extends T['length'] ? FlowInput<E> : unknown
    : unknown;

/**
 * What a step with `onParentFailure('run')` gets for each parent: the result,
 * or the failure of a parent that failed or was cancelled.
 */
export type StepOutcome<R> = { ok: true; value: R } | { ok: false; error: StepFailure };

type FromOutcome<A> = A extends { ok: true; value: infer R } ? R : never;
/** The upstream result a run-anyway step accepts, from its task input (one outcome, or a list of them). */
export type FromOutcomes<A> = unknown extends A
  ? unknown
  : A extends readonly unknown[]
    ? { -readonly [K in keyof A]: FromOutcome<A[K]> }
    : FromOutcome<A>;

/** The zod schema of a `StepFailure`. */
export const stepFailureSchema = z.object({
  step: z.string(),
  jobId: z.string(),
  task: z.string(),
  state: z.enum(['failed', 'cancelled']),
  message: z.string(),
});

/**
 * The schema of one `StepOutcome`, for the task of a step that runs even if
 * its parent fails.
 *
 * @example
 * const report = defineTask({ name: 'report', schema: z.array(stepOutcome(z.number())), handler: (outcomes) => ... });
 * chord(group(parts), step(report).onParentFailure('run'));
 */
export function stepOutcome<S extends z.ZodType>(value: S) {
  return z.discriminatedUnion('ok', [
    z.object({ ok: z.literal(true), value }),
    z.object({ ok: z.literal(false), error: stepFailureSchema }),
  ]);
}

/** What a parent's failure or cancellation does to a step: `cancel` it (default), or `run` it anyway with the failure as input. */
export type ParentFailurePolicy = 'cancel' | 'run';

/** Per-step job options; each overrides the task's own. */
export interface StepOptions {
  queue?: string | undefined;
  priority?: number | undefined;
  maxAttempts?: number | undefined;
  timeoutMs?: number | undefined;
  backoff?: Partial<BackoffOptions> | undefined;
}

/** A step's description, read by the compiler. */
export interface StepSpec {
  readonly task: AnyTask;
  readonly hasPayload: boolean;
  readonly payload: unknown;
  readonly name: string | undefined;
  readonly options: StepOptions;
  readonly onParentFailure: ParentFailurePolicy;
  readonly after: readonly AnyFlow[];
}

/** One job of a workflow. Made by `step()`; every method returns a new step. */
export class Step<In, Out> implements Flow<In, Out, false> {
  readonly kind = 'step' as const;
  declare readonly [FLOW_TYPES]?: FlowTypes<In, Out, false>;
  /** @internal Use `step()`. */
  constructor(readonly spec: StepSpec) {
    Object.freeze(this);
  }

  /** Names the step (unique within its workflow); the default is its task's name, `#n` when the task has several steps. */
  named(name: string): Step<In, Out> {
    return new Step({ ...this.spec, name });
  }

  /** Job options for this step (queue, priority, maxAttempts, timeoutMs, backoff). */
  with(options: StepOptions): Step<In, Out> {
    return new Step({ ...this.spec, options: { ...this.spec.options, ...options } });
  }

  /**
   * What a parent's permanent failure (or cancellation) does: `cancel` this
   * step, with an error naming the failed step (the default), or `run` it
   * anyway. With `run`, it gets a `StepOutcome` per parent instead of the bare
   * result (its task schema: `stepOutcome(...)`, or `z.array(stepOutcome(...))`
   * after a group).
   */
  onParentFailure(policy: 'cancel'): Step<In, Out>;
  onParentFailure(policy: 'run'): Step<FromOutcomes<In>, Out>;
  onParentFailure(policy: ParentFailurePolicy): Step<unknown, Out> {
    return new Step({ ...this.spec, onParentFailure: policy });
  }

  /**
   * Runs this step after `deps` (the general form: any graph). Without a
   * payload of its own it gets the list of their results in this order; a
   * step placed before it in a chain then only orders it. A dependency
   * placed nowhere else in the workflow is added to it.
   *
   * @example
   * const a = step(fetchA, { id: 1 }), b = step(fetchB, { id: 2 });
   * const merged = step(merge).after(a, b);          // merge's input: [A, B]
   * await pgq.enqueueWorkflow(group([chain(a, step(useA)), merged]));
   */
  after<const D extends readonly SingleFlow[]>(this: Step<Results<D>, Out>, ...deps: D): Step<unknown, Out> {
    return new Step({ ...this.spec, after: [...this.spec.after, ...deps] });
  }
}

/** Steps in sequence; each gets the result of the one before. Made by `chain()` and `chord()`. */
export class Chain<In, Out, Many extends boolean> implements Flow<In, Out, Many> {
  readonly kind = 'chain' as const;
  declare readonly [FLOW_TYPES]?: FlowTypes<In, Out, Many>;
  /** @internal Use `chain()`. */
  constructor(readonly parts: readonly AnyFlow[]) {
    Object.freeze(this);
  }
}

/** Flows run in parallel; its result is their results in order. Made by `group()`. */
export class Group<In, Out> implements Flow<In, Out, true> {
  readonly kind = 'group' as const;
  declare readonly [FLOW_TYPES]?: FlowTypes<In, Out, true>;
  /** @internal Use `group()`. */
  constructor(readonly members: readonly AnyFlow[]) {
    Object.freeze(this);
  }
}

/**
 * One job of `task`. With a payload, the job runs with it (Celery's
 * immutable signature, `.si()`); without one, it gets the result of what runs
 * before it (`.s()`): the previous step's result, or a list after a group.
 *
 * @example
 * chain(step(fetchUser, { id: 1 }), step(renderEmail), step(sendEmail));
 */
export function step<T extends AnyTask>(task: T): Step<TaskInput<T>, TaskResult<T>>;
export function step<T extends AnyTask>(task: T, payload: TaskInput<T>): Step<unknown, TaskResult<T>>;
export function step(task: AnyTask, ...rest: unknown[]): Step<unknown, unknown> {
  return new Step({
    task,
    hasPayload: rest.length > 0,
    payload: rest[0],
    name: undefined,
    options: {},
    onParentFailure: 'cancel',
    after: [],
  });
}

/**
 * Flows in sequence: each starts once the one before succeeded, and gets its
 * result. Type-checked: each flow's input must accept the previous result.
 *
 * @example
 * const wf = chain(step(add, { a: 2, b: 2 }), step(double), step(format));
 */
export function chain<I, A, M extends boolean>(a: Flow<I, A, M>): Chain<I, A, M>;
export function chain<I, A, B, M extends boolean>(a: Flow<I, A, boolean>, b: Flow<A, B, M>): Chain<I, B, M>;
export function chain<I, A, B, C, M extends boolean>(a: Flow<I, A, boolean>, b: Flow<A, B, boolean>, c: Flow<B, C, M>): Chain<I, C, M>;
export function chain<I, A, B, C, D, M extends boolean>(
  a: Flow<I, A, boolean>, b: Flow<A, B, boolean>, c: Flow<B, C, boolean>, d: Flow<C, D, M>,
): Chain<I, D, M>;
export function chain<I, A, B, C, D, E, M extends boolean>(
  a: Flow<I, A, boolean>, b: Flow<A, B, boolean>, c: Flow<B, C, boolean>, d: Flow<C, D, boolean>, e: Flow<D, E, M>,
): Chain<I, E, M>;
export function chain<I, A, B, C, D, E, F, M extends boolean>(
  a: Flow<I, A, boolean>, b: Flow<A, B, boolean>, c: Flow<B, C, boolean>, d: Flow<C, D, boolean>, e: Flow<D, E, boolean>,
  f: Flow<E, F, M>,
): Chain<I, F, M>;
export function chain<I, A, B, C, D, E, F, G, M extends boolean>(
  a: Flow<I, A, boolean>, b: Flow<A, B, boolean>, c: Flow<B, C, boolean>, d: Flow<C, D, boolean>, e: Flow<D, E, boolean>,
  f: Flow<E, F, boolean>, g: Flow<F, G, M>,
): Chain<I, G, M>;
export function chain<I, A, B, C, D, E, F, G, H, M extends boolean>(
  a: Flow<I, A, boolean>, b: Flow<A, B, boolean>, c: Flow<B, C, boolean>, d: Flow<C, D, boolean>, e: Flow<D, E, boolean>,
  f: Flow<E, F, boolean>, g: Flow<F, G, boolean>, h: Flow<G, H, M>,
): Chain<I, H, M>;
/** Longer chains: nest them, `chain(chain(a, …, h), i, …)`; each link is still checked. */
export function chain(...parts: AnyFlow[]): Chain<unknown, unknown, boolean> {
  return new Chain(parts);
}

/**
 * Flows that run in parallel, each getting the same input; the group's
 * result is the list of their results, in this order.
 *
 * @example
 * group(urls.map((url) => step(fetchPage, { url })));
 */
export function group<const T extends readonly SingleFlow[]>(members: T): Group<Inputs<T>, Results<T>> {
  return new Group([...(members as readonly AnyFlow[])]);
}

/**
 * A group and a callback that runs once, after every member succeeded, with
 * their results in member order. `chord(g, cb)` is `chain(g, cb)`.
 *
 * @example
 * chord(group(ids.map((id) => step(resize, { id }))), step(zipAll));
 */
export function chord<I, R, O, M extends boolean>(header: Flow<I, R, true>, callback: Flow<R, O, M>): Chain<I, O, M>;
export function chord<const T extends readonly SingleFlow[], O, M extends boolean>(
  header: T,
  callback: Flow<Results<T>, O, M>,
): Chain<Inputs<T>, O, M>;
export function chord(header: AnyFlow | readonly AnyFlow[], callback: AnyFlow): Chain<unknown, unknown, boolean> {
  return new Chain([Array.isArray(header) ? new Group([...(header as readonly AnyFlow[])]) : (header as AnyFlow), callback]);
}

/**
 * One job per payload, run in parallel: `group(payloads.map((p) => step(task, p)))`.
 * The result is the list of the jobs' results, in payload order, so a chord
 * callback gets them as an array. `options` apply to every job.
 *
 * Next to Celery: this is `group(task.s(p) for p in payloads)`. Celery's
 * `task.map(items)` is different: one task message that calls the function
 * for each item in turn. In pgq that is one job whose task takes the whole
 * list, `step(batchTask, items)`, or `chunks` for several such jobs. Celery's
 * `starmap` has no counterpart: it unpacks argument tuples into positional
 * arguments, and a pgq payload is one value, so a tuple is just a payload
 * (a task with `z.tuple([...])` as its schema) and `map` covers it.
 *
 * Throws a ValidationError, before anything is written, when `payloads` is
 * not an array, is empty, or has more entries than a workflow may have steps
 * (`MAX_WORKFLOW_STEPS`). Each payload is checked against the task's schema
 * at enqueue, the error naming its step (`resize#3`).
 *
 * @example
 * const wf = await pgq.enqueueWorkflow(chord(map(resize, ids.map((id) => ({ id }))), step(zipAll)));
 */
export function map<T extends AnyTask>(task: T, payloads: readonly TaskInput<T>[], options: StepOptions = {}): Group<unknown, TaskResult<T>[]> {
  const list = listOf(payloads, 'map.payloads', 'payloads');
  jobCountWithinLimit(list.length, 'map.payloads', `${list.length} payloads make ${list.length} jobs`, 'use chunks() to give each job several payloads');
  return new Group(list.map((payload) => step(task, payload as TaskInput<T>).with(options)));
}

/** The item type of a task whose input is a list (`z.array(item)`); `never` for any other task. */
export type ChunkItem<T> = TaskInput<T> extends readonly (infer E)[] ? E : never;

/** A compile-time error for `chunks()` given a task whose input is not a list. */
type ListTask<T> = TaskInput<T> extends readonly unknown[]
  ? unknown
  : { readonly 'chunks() needs a task whose schema is a list of items, z.array(item)': never };

/**
 * Splits `items` into lists of `size` (the last one shorter) and runs one job
 * of `task` per list, in parallel. The task takes the list (its schema is
 * `z.array(item)`), so it can handle a batch at once: one query, one API
 * call. The result is the list of the jobs' results, one per chunk, in
 * order, so a chord callback gets them as an array (an array of arrays when
 * each job returns one result per item). `options` apply to every job.
 *
 * Next to Celery: `task.chunks(items, n).group()`, with one difference —
 * Celery calls a per-item function n times inside each chunk's task; here
 * the task gets the chunk and decides. Every chunk is an ordinary job with
 * its own retries: a failed chunk is retried alone.
 *
 * Throws a ValidationError, before anything is written, when `size` is not a
 * positive integer, `items` is not an array or is empty, or the chunks would
 * be more jobs than a workflow may have steps (`MAX_WORKFLOW_STEPS`). Each
 * chunk is checked against the task's schema at enqueue (so a `.max(n)` on
 * the array refuses chunks bigger than n), the error naming its step.
 *
 * @example
 * const importRows = defineTask({ name: 'import-rows', schema: z.array(rowSchema), handler: async (rows) => insertAll(rows) });
 * const wf = await pgq.enqueueWorkflow(chord(chunks(importRows, rows, 500), step(summarize)));
 */
export function chunks<T extends AnyTask>(
  task: T & ListTask<T>,
  items: readonly ChunkItem<T>[],
  size: number,
  options: StepOptions = {},
): Group<unknown, TaskResult<T>[]> {
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 1) {
    throw new ValidationError('chunks.size', `must be a positive integer, got ${describeValue(size)}`);
  }
  const list = listOf(items, 'chunks.items', 'items');
  const count = Math.ceil(list.length / size);
  jobCountWithinLimit(count, 'chunks.items', `${list.length} items in chunks of ${size} make ${count} jobs`, 'use bigger chunks');
  const members: Step<unknown, TaskResult<T>>[] = [];
  for (let start = 0; start < list.length; start += size) {
    members.push(step(task as AnyTask, list.slice(start, start + size)).with(options) as Step<unknown, TaskResult<T>>);
  }
  return new Group(members);
}

function listOf(value: unknown, field: string, what: string): readonly unknown[] {
  if (!Array.isArray(value)) throw new ValidationError(field, `must be an array of ${what}, got ${describeValue(value)}`);
  if (value.length === 0) throw new ValidationError(field, `is empty; a group needs at least one job`);
  // A hole (new Array(n) filled in part) would be skipped, and the results would no longer line up with the list.
  for (let i = 0; i < value.length; i += 1) {
    if (!(i in value)) throw new ValidationError(`${field}[${i}]`, `is a hole in a sparse array; give every ${what.replace(/s$/, '')}`);
  }
  return value;
}

function jobCountWithinLimit(jobs: number, field: string, counted: string, instead: string): void {
  if (jobs > MAX_WORKFLOW_STEPS) {
    throw new ValidationError(
      field,
      `${counted}, more than the ${MAX_WORKFLOW_STEPS} steps a workflow may have (MAX_WORKFLOW_STEPS); ${instead}, or split the list over several workflows`,
    );
  }
}

function describeValue(value: unknown): string {
  if (Array.isArray(value)) return 'an array';
  if (value === null) return 'null';
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
  return typeof value;
}
