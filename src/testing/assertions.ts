/**
 * `assertEnqueued` / `refuteEnqueued`: does a job of this task wait to run
 * with a payload like this one? A job counts as enqueued while it waits:
 * `scheduled`, `available`, `retryable` or `blocked`. A payload matches when
 * every key of `payloadMatch` is there with an equal value (deeply; arrays
 * must be equal), so a test names only the fields it cares about.
 * `payloadMatch` is compared as it would be stored: through JSON (a Date
 * matches its ISO string, an undefined key is no key), as the payloads are.
 */
import { AssertionError } from 'node:assert';
import { isDeepStrictEqual } from 'node:util';
import type { Pgq } from '../client.js';
import type { JobRecord, JobState } from '../core/types.js';
import { toJobRecord, type JobRow } from '../db/rows.js';
import { toJsonText } from '../core/json.js';
import type { AnyTask, PayloadOf } from '../task.js';
import type { Jsonified } from '../core/json.js';

/** States in which a job counts as enqueued. */
export const ENQUEUED_STATES: readonly JobState[] = ['scheduled', 'available', 'retryable', 'blocked'];

/**
 * A part of a task's payload as it is stored (its schema's output, which is
 * what the jobs are compared with): any of its keys, deeply (arrays whole, as
 * they are compared), so a misspelt key is a compile error rather than a
 * `refuteEnqueued` that always passes. A value with a `toJSON()` (a `Date`, a
 * `URL`) may be given as itself or as its JSON (the ISO text), in lists too.
 */
export type PayloadMatch<P> = P extends { toJSON(...args: never[]): infer J }
  ? P | Jsonified<J>
  : P extends readonly unknown[]
    ? { [K in keyof P]: WholeMatch<P[K]> }
    : P extends object
      ? { [K in keyof P]?: PayloadMatch<P[K]> }
      : P;

/** An element of a list in a `PayloadMatch`: whole (lists are compared whole), or as its JSON. */
type WholeMatch<P> = P extends { toJSON(...args: never[]): infer J } ? P | Jsonified<J> : P extends object ? { [K in keyof P]: WholeMatch<P[K]> } : P;

/** The stored payload of task `T`: its schema's output. */
type StoredPayload<T> = T extends { readonly schema: infer S } ? PayloadOf<S> : unknown;

/** Narrows which jobs `assertEnqueued` and `refuteEnqueued` look at. */
export interface EnqueuedFilter {
  /** Only jobs in this queue. */
  queue?: string | undefined;
}

/**
 * Resolves with the oldest waiting job of `task` whose payload matches
 * `payloadMatch`; throws an AssertionError listing the waiting jobs of the
 * task, with a diff against the closest, when there is none.
 *
 * @example
 * await signUp(pgq, 'a@b.c');
 * await assertEnqueued(pgq, sendEmail, { to: 'a@b.c' });
 */
export async function assertEnqueued<T extends AnyTask>(pgq: Pgq, task: T, payloadMatch?: PayloadMatch<StoredPayload<T>>, filter?: EnqueuedFilter): Promise<JobRecord>;
/** The same, for a task known by its name (a string, or a value that may be one): its payload is not known. */
export async function assertEnqueued<T extends AnyTask | string>(pgq: Pgq, task: [T] extends [string] ? T : string extends T ? T : never, payloadMatch?: unknown, filter?: EnqueuedFilter): Promise<JobRecord>;
export async function assertEnqueued(pgq: Pgq, task: AnyTask | string, payloadMatch?: unknown, filter: EnqueuedFilter = {}): Promise<JobRecord> {
  const name = typeof task === 'string' ? task : task.name;
  payloadMatch = asStored(payloadMatch);
  const jobs = await waitingJobs(pgq, name, filter);
  const found = jobs.find((job) => matchesIfGiven(job.payload, payloadMatch));
  if (found) return found;
  const where = filter.queue === undefined ? '' : ` in queue ${JSON.stringify(filter.queue)}`;
  const closest = closestPayload(jobs.map((j) => j.payload), payloadMatch);
  const listed = jobs.slice(0, 10).map((j) => `  job ${j.id} (${j.state}, queue ${j.queue}): ${JSON.stringify(j.payload)}`);
  const message = jobs.length === 0
    ? `expected a job of task ${name}${where}${withPayload(payloadMatch)}; no job of task ${name} is enqueued${where}`
    : `expected a job of task ${name}${where}${withPayload(payloadMatch)}; the ${jobs.length} enqueued job(s) of task ${name}${where} differ:\n${listed.join('\n')}${jobs.length > 10 ? '\n  …' : ''}`;
  throw new AssertionError({ message, actual: closest, expected: payloadMatch === ANY_PAYLOAD ? undefined : payloadMatch, operator: 'assertEnqueued' });
}

/**
 * Resolves when no waiting job of `task` has a payload matching
 * `payloadMatch` (with no `payloadMatch`: no waiting job of the task at all);
 * otherwise throws an AssertionError naming the job found.
 *
 * @example
 * await refuteEnqueued(pgq, sendEmail, { to: 'blocked@b.c' });
 */
export async function refuteEnqueued<T extends AnyTask>(pgq: Pgq, task: T, payloadMatch?: PayloadMatch<StoredPayload<T>>, filter?: EnqueuedFilter): Promise<void>;
/** The same, for a task known by its name (a string, or a value that may be one): its payload is not known. */
export async function refuteEnqueued<T extends AnyTask | string>(pgq: Pgq, task: [T] extends [string] ? T : string extends T ? T : never, payloadMatch?: unknown, filter?: EnqueuedFilter): Promise<void>;
export async function refuteEnqueued(pgq: Pgq, task: AnyTask | string, payloadMatch?: unknown, filter: EnqueuedFilter = {}): Promise<void> {
  const name = typeof task === 'string' ? task : task.name;
  payloadMatch = asStored(payloadMatch);
  const found = (await waitingJobs(pgq, name, filter)).find((job) => matchesIfGiven(job.payload, payloadMatch));
  if (!found) return;
  const where = filter.queue === undefined ? '' : ` in queue ${JSON.stringify(filter.queue)}`;
  throw new AssertionError({
    message: `expected no job of task ${name}${where}${withPayload(payloadMatch)}; job ${found.id} (${found.state}, queue ${found.queue}) has ${JSON.stringify(found.payload)}`,
    actual: found.payload,
    expected: payloadMatch === ANY_PAYLOAD ? undefined : payloadMatch,
    operator: 'refuteEnqueued',
  });
}

/** `payloadMatch` as a payload is stored: through JSON; a ValidationError naming it when it is not JSON. Left out (undefined): any payload. */
function asStored(payloadMatch: unknown): unknown {
  if (payloadMatch === undefined) return ANY_PAYLOAD;
  return JSON.parse(toJsonText(payloadMatch, 'payloadMatch', Number.MAX_SAFE_INTEGER)) as unknown;
}

/**
 * No `payloadMatch`: every waiting job of the task matches. (It was `{}`,
 * which matches only object payloads: a job of a task whose payload is a
 * number or an array was never found, so refuteEnqueued passed while it waited.)
 */
const ANY_PAYLOAD = Symbol('any payload');

function matchesIfGiven(actual: unknown, expected: unknown): boolean {
  return expected === ANY_PAYLOAD || matches(actual, expected);
}

function withPayload(payloadMatch: unknown): string {
  return payloadMatch === ANY_PAYLOAD ? '' : ` with a payload matching ${JSON.stringify(payloadMatch)}`;
}

async function waitingJobs(pgq: Pgq, task: string, filter: EnqueuedFilter): Promise<JobRecord[]> {
  let query = pgq.kysely.selectFrom('jobs').selectAll().where('task', '=', task).where('state', 'in', [...ENQUEUED_STATES]);
  if (filter.queue !== undefined) query = query.where('queue', '=', filter.queue);
  const rows = await query.orderBy('id').execute();
  return rows.map((r) => toJobRecord(r as unknown as JobRow));
}

/** Whether `actual` contains `expected`: objects by the keys of `expected`, everything else by deep equality. */
export function matches(actual: unknown, expected: unknown): boolean {
  if (isPlainObject(expected)) {
    if (!isPlainObject(actual)) return false;
    return Object.entries(expected).every(([key, value]) => key in actual && matches(actual[key], value));
  }
  return isDeepStrictEqual(actual, expected);
}

/** The payload sharing the most top-level values with `expected`, cut down to the keys of `expected` so a diff shows only what differs. */
function closestPayload(payloads: unknown[], expected: unknown): unknown {
  if (payloads.length === 0) return undefined;
  if (!isPlainObject(expected)) return payloads[0];
  const score = (p: unknown): number =>
    isPlainObject(p) ? Object.entries(expected).filter(([k, v]) => k in p && matches(p[k], v)).length : -1;
  const best = payloads.reduce((a, b) => (score(b) > score(a) ? b : a));
  if (!isPlainObject(best)) return best;
  return Object.fromEntries(Object.keys(expected).filter((k) => k in best).map((k) => [k, best[k]]));
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}
