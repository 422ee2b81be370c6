import type { JobErrorEntry, JobMeta, JobProgress, JobRecord, JobState } from '../core/types.js';

/** A `jobs` row as pg returns it. */
export interface JobRow {
  id: string;
  task: string;
  queue: string;
  state: JobState;
  payload: unknown;
  priority: number;
  attempts: number;
  max_attempts: number;
  run_at: Date;
  created_at: Date;
  started_at: Date | null;
  finished_at: Date | null;
  result: unknown;
  errors: JobErrorEntry[];
  unique_key: string | null;
  worker_id: string | null;
  timeout_ms: number | null;
  backoff_base_ms: number | null;
  backoff_max_ms: number | null;
  meta: JobMeta | null;
  /** Not in JOB_COLUMNS (the hot path does not read them): absent on claimed jobs. */
  progress?: unknown;
  progress_at?: Date | null;
  cancel_requested_at?: Date | null;
  workflow_id?: string | null;
  workflow_step?: string | null;
  concurrency_key: string | null;
  expires_at: Date | null;
}

/** The column list every statement that returns whole jobs selects, in one place. */
export const JOB_COLUMNS = [
  'id',
  'task',
  'queue',
  'state',
  'payload',
  'priority',
  'attempts',
  'max_attempts',
  'run_at',
  'created_at',
  'started_at',
  'finished_at',
  'result',
  'errors',
  'unique_key',
  'worker_id',
  'timeout_ms',
  'backoff_base_ms',
  'backoff_max_ms',
  'meta',
  'concurrency_key',
  'expires_at',
  // A handler sees its workflow and step on ctx.job: two small columns, read on claim too.
  'workflow_id',
  'workflow_step',
] as const;

/** The timestamps a claim returns as epoch milliseconds (see CLAIM_COLUMNS). */
const CLAIM_TIMESTAMPS = ['run_at', 'created_at', 'started_at', 'expires_at'] as const;
type ClaimTimestamp = (typeof CLAIM_TIMESTAMPS)[number];

/**
 * Columns a claim does not return, because the claim itself decides them: it
 * sets `state` to running and `worker_id` to the claiming worker, and a row
 * pgq lets a worker claim has neither `finished_at` nor `result` (no path of
 * pgq's makes a job claimable with an outcome: a success is final, and a
 * failure, a rescue, a snooze or `retryJob` leave both empty). Not sending
 * them made a claim of 500 about a tenth cheaper.
 */
const CLAIM_DECIDED = ['state', 'worker_id', 'finished_at', 'result'] as const;
type ClaimDecided = (typeof CLAIM_DECIDED)[number];

/**
 * A claim's row: a job row whose timestamps are epoch milliseconds, without
 * the columns the claim decides (CLAIM_DECIDED), and with `errors` and `meta`
 * null when empty.
 * Parsing timestamptz text (pg's default, a regular expression per value)
 * was the largest piece of a worker's own work per claimed job; a float8
 * becomes a Date with `new Date(ms)`.
 */
export type ClaimRow = Omit<JobRow, ClaimTimestamp | ClaimDecided | 'errors'> & {
  run_at: number;
  created_at: number;
  started_at: number | null;
  /** `started_at`'s microseconds within its millisecond (0–999): the lease thread tells a claim in flight from the last one taken in by it. */
  started_us: number | null;
  expires_at: number | null;
  errors: JobErrorEntry[] | null;
};

/**
 * The columns every claim returns, `j` being the jobs table: JOB_COLUMNS
 * less the ones the claim decides, with the timestamps as epoch
 * milliseconds, truncated to the millisecond
 * in SQL (as pg's own parsing truncates) and read with `date_part`, a
 * float8: for the server about what printing the timestamp costs and less
 * than `extract`'s numeric, and the client is spared parsing the text. A
 * float8 of epoch seconds with microseconds is coarser than a microsecond
 * far from 1970 (an expiry 1e13 ms ahead), so truncating on the client could
 * round up a millisecond; a whole number of milliseconds prints exactly (15
 * digits suffice), and `Math.round` only removes the product's rounding.
 * Empty `errors` and `meta` (most jobs' first attempt) come back as null,
 * neither printed by the server nor parsed by the client.
 */
export const CLAIM_COLUMNS = [
  ...JOB_COLUMNS.filter((c) => !(CLAIM_DECIDED as readonly string[]).includes(c)).map((c) =>
    (CLAIM_TIMESTAMPS as readonly string[]).includes(c)
      ? `date_part('epoch', date_trunc('milliseconds', j.${c})) * 1000 AS ${c}`
      : c === 'errors'
        ? `nullif(j.errors, '[]') AS errors`
        : c === 'meta'
          ? `nullif(j.meta, '{}') AS meta`
          : `j.${c}`,
  ),
  // The seconds field in microseconds, a whole float8: exact.
  `date_part('microseconds', j.started_at)::int % 1000 AS started_us`,
].join(', ');

/** A claimed row's `started_at` as epoch microseconds (exact: well below 2^53), or null. */
export function claimStartedMicros(row: ClaimRow): number | null {
  return row.started_at === null ? null : Math.round(row.started_at) * 1000 + (row.started_us ?? 0);
}

/** A claim's epoch milliseconds as the Date pg would have parsed. */
function claimDate(ms: number | null): Date | null {
  return ms === null ? null : new Date(Math.round(ms));
}

export function toJobRecord<Payload = unknown, Result = unknown>(row: JobRow): JobRecord<Payload, Result> {
  return buildRecord(row, {
    state: row.state,
    workerId: row.worker_id,
    result: row.result,
    runAt: row.run_at,
    createdAt: row.created_at,
    startedAt: row.started_at,
    finishedAt: row.finished_at,
    expiresAt: row.expires_at,
  });
}

/** What a record takes from elsewhere than the row's own columns: its timestamps (parsed by pg, or made from a claim's epoch ms) and what a claim decides. */
type RecordParts = Pick<JobRecord, 'state' | 'workerId' | 'runAt' | 'createdAt' | 'startedAt' | 'finishedAt' | 'expiresAt'> & { result: unknown };

/** The record of a row whose timestamps and claim-decided fields are given apart. */
function buildRecord<Payload, Result>(row: Omit<ClaimRow, ClaimTimestamp | 'started_us'>, parts: RecordParts): JobRecord<Payload, Result> {
  return {
    id: String(row.id),
    task: row.task,
    queue: row.queue,
    state: parts.state,
    payload: row.payload as Payload,
    priority: row.priority,
    attempts: row.attempts,
    maxAttempts: row.max_attempts,
    runAt: parts.runAt,
    createdAt: parts.createdAt,
    startedAt: parts.startedAt,
    finishedAt: parts.finishedAt,
    result: (parts.result ?? null) as Result | null,
    errors: row.errors ?? [],
    uniqueKey: row.unique_key,
    workerId: parts.workerId,
    timeoutMs: row.timeout_ms,
    meta: row.meta ?? {},
    progress: (row.progress ?? null) as JobProgress | null,
    progressAt: row.progress_at ?? null,
    cancelRequestedAt: row.cancel_requested_at ?? null,
    workflowId: row.workflow_id == null ? null : String(row.workflow_id),
    workflowStep: row.workflow_step ?? null,
    concurrencyKey: row.concurrency_key ?? null,
    expiresAt: parts.expiresAt ?? null,
  };
}

/** A job as a worker claimed it: the record plus the per-job backoff the executor needs. */
export interface ClaimedJob extends JobRecord {
  backoffBaseMs: number | null;
  backoffMaxMs: number | null;
}

/**
 * A claim's row as a job: the record, its timestamps made from epoch ms, the
 * fields the claim decides filled in (running, for `workerId`), with
 * the backoff fields added in place rather than by a spread copy (this runs
 * for every job a worker claims; the copy was a tenth of a worker's
 * allocations in a no-op drain).
 */
export function toClaimedJob(row: ClaimRow, workerId: string): ClaimedJob {
  const job = buildRecord(row, {
    state: 'running',
    workerId,
    result: null,
    runAt: claimDate(row.run_at)!,
    createdAt: claimDate(row.created_at)!,
    startedAt: claimDate(row.started_at),
    finishedAt: null,
    expiresAt: claimDate(row.expires_at),
  }) as ClaimedJob;
  job.backoffBaseMs = row.backoff_base_ms;
  job.backoffMaxMs = row.backoff_max_ms;
  return job;
}
