/**
 * pgq: a background job queue for Node.js that needs nothing but PostgreSQL.
 * This file is the public surface; everything else is internal.
 */
export { Pgq } from './client.js';
export type { WaitForJobOptions } from './client.js';
export type { BulkAction, QueueStats } from './jobs/job-store.js';
export type { JobFilter, JsonMatch, ListJobsFilter } from './jobs/job-filter.js';
export type { WorkerInfo } from './inspection/workers.js';
export { defineTask } from './task.js';
export type { AnyTask, JobContext, SandboxTaskOptions, Task, TaskBaseOptions, TaskInput, TaskOptions, TaskResult } from './task.js';
export type { Jsonified } from './core/json.js';
export type { StandardSchemaV1 } from './core/standard-schema.js';
export { defineSandboxHandler, sandboxed } from './sandbox/handler.js';
export type { SandboxContext, SandboxHandler, SandboxKind, SandboxOptions } from './sandbox/handler.js';
export type { EnqueueManyOptions, EnqueueOptions } from './enqueue.js';
export type { PgqOptions, WorkerOptions, RetentionOptions, SandboxWorkerOptions } from './config.js';
export type { QueueRecord, QueueSettings, RateLimit } from './queues.js';
export { ScheduleNotFoundError, defineSchedule } from './schedules.js';
export type { CatchUpPolicy, ScheduleOptions, ScheduleRecord } from './schedules.js';
export { chain, chord, chunks, group, map, step, stepOutcome, stepFailureSchema } from './workflow/flow.js';
export type {
  AnyFlow,
  Chain,
  ChunkItem,
  Flow,
  FlowInput,
  FlowResult,
  FromOutcomes,
  Group,
  ParentFailurePolicy,
  SingleFlow,
  Step,
  StepOptions,
  StepOutcome,
} from './workflow/flow.js';
export { WorkflowNotFoundError } from './workflow/store.js';
export type {
  EnqueueWorkflowOptions,
  ListWorkflowsFilter,
  WorkflowRecord,
  WorkflowState,
  WorkflowStepRecord,
  WorkflowSummary,
} from './workflow/store.js';
export { MAX_WORKFLOW_STEPS } from './workflow/flow.js';
export { DEFAULTS } from './core/defaults.js';
export { Worker } from './worker/worker.js';
export type { HealthCheck, HealthOptions, WorkerHealth, WorkerLiveness } from './worker/health.js';
export type { AttemptNext, EnqueueCall, EnqueueNext, Middleware, PendingJob } from './middleware.js';
export { MAX_META_BYTES } from './middleware.js';
export type { WorkerEvents } from './worker/executor.js';
export type { JobErrorEntry, JobMeta, JobProgress, JobRecord, JobState, Json, LiveState, StepFailure } from './core/types.js';
export { JOB_STATES, FINAL_STATES } from './core/types.js';
export type { BackoffOptions } from './core/backoff.js';
export type { Logger } from './core/logger.js';
export type { Clock } from './core/clock.js';
export type { DbHandle, KyselyQueryable, PgQueryable } from './db/queryable.js';
export type {
  PgqDatabase,
  JobsTable,
  WorkersTable,
  LeaderTable,
  SchedulesTable,
  WorkflowsTable,
  JobDependenciesTable,
  StatsCacheTable,
  QueuesTable,
} from './db/tables.js';
export type { MigrateResult } from './db/migrate.js';
export type { OrphanedTask } from './db/worker-tasks.js';
export type { RolesOptions } from './roles.js';
export { rolesSql } from './roles.js';
export {
  PgqError,
  ValidationError,
  JobNotFoundError,
  WaitTimeoutError,
  PermanentError,
  SnoozeError,
  JobTimeoutError,
  JobCancelledError,
  WorkerShutdownError,
  LeaseLostError,
  SandboxCrashedError,
  WorkerStartError,
} from './core/errors.js';
export type { PgqErrorCode } from './core/errors.js';
