/**
 * `pgq/testing`: helpers for an application's own tests of its tasks.
 * - `drain(pgq)` runs every due job in-process and returns counts;
 * - `assertEnqueued` / `refuteEnqueued` check what waits in the jobs table;
 * - `performJob(task, payload)` runs one handler with no database.
 */
export { drain } from './drain.js';
export type { DrainOptions, DrainResult } from './drain.js';
export { assertEnqueued, refuteEnqueued, ENQUEUED_STATES } from './assertions.js';
export type { EnqueuedFilter, PayloadMatch } from './assertions.js';
export { performJob } from './perform-job.js';
export type { PerformJobOptions } from './perform-job.js';
