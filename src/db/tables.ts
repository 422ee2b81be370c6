import type { ColumnType, Generated } from 'kysely';
import type { JobErrorEntry, JobMeta, JobState } from '../core/types.js';

/**
 * Kysely table types for pgq's tables, so applications can query them
 * type-safely:
 *
 * @example
 * const db = new Kysely<PgqDatabase>({ dialect }).withSchema('pgq');
 * const failed = await db.selectFrom('jobs').selectAll().where('state', '=', 'failed').execute();
 */
export interface PgqDatabase {
  jobs: JobsTable;
  workers: WorkersTable;
  leader: LeaderTable;
  schedules: SchedulesTable;
  workflows: WorkflowsTable;
  job_dependencies: JobDependenciesTable;
  stats_cache: StatsCacheTable;
  queues: QueuesTable;
}

type Timestamp = ColumnType<Date, Date | string, Date | string>;

export interface JobsTable {
  /** int8; pg returns it as a string. */
  id: ColumnType<string, string | number | bigint | undefined, never>;
  task: string;
  queue: Generated<string>;
  state: Generated<JobState>;
  payload: ColumnType<unknown, string, string>;
  priority: Generated<number>;
  attempts: Generated<number>;
  max_attempts: Generated<number>;
  run_at: Generated<Timestamp>;
  created_at: Generated<Timestamp>;
  started_at: Timestamp | null;
  finished_at: Timestamp | null;
  result: ColumnType<unknown, string | null, string | null>;
  errors: ColumnType<JobErrorEntry[], string | undefined, string>;
  unique_key: string | null;
  worker_id: string | null;
  timeout_ms: number | null;
  backoff_base_ms: number | null;
  backoff_max_ms: number | null;
  /** Metadata written at enqueue (JSON object). */
  meta: ColumnType<JobMeta, string | undefined, string>;
  /** Per-key fairness: at most queues.key_concurrency running jobs of the queue share it. */
  concurrency_key: string | null;
  /** Not started by then: the job ends cancelled as expired. */
  expires_at: Timestamp | null;
  /** regrole of the role that enqueued the job (text form in queries). */
  created_by: ColumnType<string, never, never>;
  /** Workflows: the workflow's id (int8, as a string); null outside workflows. */
  workflow_id: ColumnType<string | null, string | number | null | undefined, string | number | null>;
  /** Workflows: the step's name, unique within its workflow. */
  workflow_step: string | null;
  /** Workflows: parents not yet settled; the job leaves `blocked` at 0. */
  pending_parents: number | null;
  /** Workflows: what a parent's failure does to this job. */
  on_parent_failure: 'cancel' | 'run' | null;
  /** Workflows: how the payload is made from the parents when the job unblocks. */
  pass_results: 'none' | 'one' | 'list' | null;
  /** Workflows: the parent (int8, as a string) whose failure or cancellation cancelled this job. */
  cancelled_by: ColumnType<string | null, string | number | null | undefined, string | number | null>;
  /** Last `ctx.progress` value: a number 0–100 or a small JSON object. */
  progress: ColumnType<unknown, string | null | undefined, string | null>;
  /** When progress was last written. */
  progress_at: Timestamp | null;
  cancel_requested_at: Timestamp | null;
}

export interface WorkersTable {
  id: string;
  hostname: string;
  pid: number;
  queues: string[];
  /** Task names the worker can run; null when it did not say. */
  tasks: string[] | null;
  concurrency: number;
  started_at: Generated<Timestamp>;
  last_heartbeat_at: Generated<Timestamp>;
  /** The worker's own rescueAfterMs. */
  rescue_after_ms: number | null;
  /** The worker's lease: renewed at every heartbeat; once past, its attempts are rescued. */
  lease_expires_at: Timestamp | null;
  /** Handlers that did not settle within their grace after their signal fired. */
  stuck_jobs: Generated<number>;
  /** How long the main event loop had been blocked at the last heartbeat. */
  loop_lag_ms: Generated<number>;
}

export interface LeaderTable {
  name: string;
  leader_id: string;
  term: ColumnType<string, string | number, string | number>;
  elected_at: Timestamp;
  expires_at: Timestamp;
}

export interface SchedulesTable {
  name: string;
  task: string;
  payload: ColumnType<unknown, string, string>;
  cron: string | null;
  timezone: Generated<string>;
  /** int8; pg returns it as a string. */
  every_ms: ColumnType<string | null, number | string | null, number | string | null>;
  queue: Generated<string>;
  priority: Generated<number>;
  max_attempts: Generated<number>;
  catch_up: Generated<'skip' | 'once' | 'all'>;
  catch_up_limit: Generated<number>;
  misfire_grace_ms: Generated<number>;
  paused: Generated<boolean>;
  enabled: Generated<boolean>;
  declared: Generated<boolean>;
  next_run_at: Timestamp;
  last_run_at: Timestamp | null;
  /** int8; pg returns it as a string. */
  last_job_id: ColumnType<string | null, string | number | null, string | number | null>;
  created_at: ColumnType<Date, Date | string | undefined, Date | string>;
  updated_at: ColumnType<Date, Date | string | undefined, Date | string>;
}

export interface WorkflowsTable {
  /** int8; pg returns it as a string. */
  id: ColumnType<string, string | number | bigint | undefined, never>;
  name: string;
  /** int8[]; pg returns the ids as strings. */
  output_job_ids: ColumnType<string[], (string | number)[], (string | number)[]>;
  output_is_list: boolean;
  created_at: ColumnType<Date, Date | string | undefined, Date | string>;
  /** Database role that enqueued the workflow (regrole, read as its name); filled in by the default. */
  created_by: ColumnType<string, never, never>;
}

export interface JobDependenciesTable {
  /** int8; pg returns it as a string. */
  child_id: ColumnType<string, string | number, string | number>;
  /** int8; pg returns it as a string. */
  parent_id: ColumnType<string, string | number, string | number>;
  /** Index of the parent's result in the child's input; null when the parent only orders the child. */
  position: number | null;
  /** Database role that enqueued the edge's workflow (regrole, read as its name); filled in by the default. */
  created_by: ColumnType<string, never, never>;
}

export interface StatsCacheTable {
  name: string;
  computed_at: Timestamp;
  data: ColumnType<unknown, string, string>;
}

export interface QueuesTable {
  name: string;
  paused: Generated<boolean>;
  /** Most running jobs of the queue across all workers; null: no limit. */
  concurrency: number | null;
  /** Token bucket: starts per rate_period_ms (bursts up to this many); null: no rate limit. */
  rate_limit: number | null;
  rate_period_ms: number | null;
  /** Token bucket state (tokens left at rate_refilled_at); null: full. */
  rate_tokens: number | null;
  rate_refilled_at: Timestamp | null;
  /** Most running jobs sharing a concurrency_key; null: no per-key limit. */
  key_concurrency: number | null;
  created_at: ColumnType<Date, Date | string | undefined, Date | string>;
  updated_at: ColumnType<Date, Date | string | undefined, Date | string>;
}
