/**
 * The states of a job, the same words in the API and in the `state` column.
 *
 * - `scheduled`: waits for `run_at`.
 * - `available`: may be claimed now.
 * - `running`: claimed by a worker.
 * - `retryable`: failed an attempt, waits for its backoff (`run_at`).
 * - `succeeded`, `failed`, `cancelled`: final.
 * - `blocked`: waits on other jobs.
 */
export type JobState =
  | 'scheduled'
  | 'available'
  | 'running'
  | 'retryable'
  | 'succeeded'
  | 'failed'
  | 'cancelled'
  | 'blocked';

export const JOB_STATES: readonly JobState[] = [
  'scheduled',
  'available',
  'running',
  'retryable',
  'succeeded',
  'failed',
  'cancelled',
  'blocked',
];

export const FINAL_STATES: readonly JobState[] = ['succeeded', 'failed', 'cancelled'];

/** A state that is not final: the job may still run (the states a `uniqueKey` is unique among, and that a cancel ends). */
export type LiveState = Exclude<JobState, 'succeeded' | 'failed' | 'cancelled'>;

/** Every live state, in `JOB_STATES` order. */
export const LIVE_STATES: readonly LiveState[] = JOB_STATES.filter((s): s is LiveState => !FINAL_STATES.includes(s));

/** The states of a job that has not started (waiting for its time, its turn, or its retry): those its expiry ends. */
export const EXPIRABLE_STATES: readonly JobState[] = ['scheduled', 'available', 'retryable'];

/** A JSON value as stored in a `jsonb` column. */
export type Json = string | number | boolean | null | Json[] | { [key: string]: Json };

/** Metadata of a job (`jobs.meta`): a JSON object written at enqueue by the `meta` option and by middleware. */
export type JobMeta = { [key: string]: Json };

/** One entry per failed attempt. */
export interface JobErrorEntry {
  attempt: number;
  message: string;
  stack?: string;
  /** ISO-8601 time of the failure. */
  at: string;
  /** Workflows: on a job cancelled because a step it depends on failed or was cancelled, the step that failed first. */
  failedStep?: StepFailure;
  /**
   * On the note of an attempt given back when its worker stopped (its
   * handler stopped on the signal): `true`. Not a failure: the job runs
   * again, the attempt not used up, and the note does not count towards
   * the retry backoff.
   */
  requeued?: true;
}

/** A workflow step that failed or was cancelled, as its dependents see it. */
export interface StepFailure {
  /** The step's name within its workflow. */
  step: string;
  jobId: string;
  task: string;
  state: 'failed' | 'cancelled';
  /** The step's last error message. */
  message: string;
}

/** A job as stored in `<schema>.jobs`. */
export interface JobRecord<Payload = unknown, Result = unknown> {
  id: string;
  task: string;
  queue: string;
  state: JobState;
  payload: Payload;
  priority: number;
  attempts: number;
  maxAttempts: number;
  runAt: Date;
  createdAt: Date;
  startedAt: Date | null;
  finishedAt: Date | null;
  result: Result | null;
  errors: JobErrorEntry[];
  uniqueKey: string | null;
  workerId: string | null;
  timeoutMs: number | null;
  /** Metadata written at enqueue (the `meta` option and middleware, e.g. trace context); `{}` when none. */
  meta: JobMeta;
  /** Last value the handler reported with `ctx.progress`; null if never. */
  progress: JobProgress | null;
  /** When `progress` was written; older than `startedAt` means an earlier attempt reported it. */
  progressAt: Date | null;
  /**
   * When `cancelJob` asked this running job to stop: its handler's signal
   * aborted, and the job stays `running` until the attempt ends, then ends
   * `cancelled`. Null otherwise.
   */
  cancelRequestedAt: Date | null;
  /** The workflow the job belongs to; null outside workflows. */
  workflowId: string | null;
  /** Its step name within that workflow. */
  workflowStep: string | null;
  /** Per-key fairness key (`concurrencyKey`), or null. */
  concurrencyKey: string | null;
  /** The job never starts after this time (`expiresAt`/`expiresInMs`), or null. */
  expiresAt: Date | null;
}

/** What `ctx.progress` takes: a percentage from 0 to 100, or a small JSON object (e.g. `{ done: 3, of: 10 }`). */
export type JobProgress = number | { [key: string]: Json };

export function isFinalState(state: JobState): boolean {
  return FINAL_STATES.includes(state);
}
