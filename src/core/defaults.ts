/**
 * Every default of pgq's options, in one place: `new Pgq()`, `pgq.worker()`,
 * retention and schedules. A leaf module, so that whatever validates options
 * can read it without importing the rest.
 */
export const DEFAULTS = Object.freeze({
  schema: 'pgq',
  maxPayloadBytes: 1024 * 1024,
  poolSize: 10,
  concurrency: 10,
  heartbeatMs: 5_000,
  rescueAfterMs: 30_000,
  pollIntervalMs: 1_000,
  shutdownGraceMs: 10_000,
  abortGraceMs: 5_000,
  stallWarnMs: 5_000,
  maxClaimBatch: 500,
  prefetchTtlMs: 1_000,
  /** Sandboxed handlers: the grace between forwarding an abort and terminating the thread or process. */
  sandboxTerminateGraceMs: 2_000,
  orphanCheckMs: 60_000,
  /** Retention of finished jobs, enforced by the leader's pruner. */
  retention: Object.freeze({
    succeededMs: 86_400_000,
    failedMs: 7 * 86_400_000,
    cancelledMs: 7 * 86_400_000,
    batchSize: 1_000,
    intervalMs: 60_000,
    maxBatchesPerPass: 100,
  }),
  /** Defaults of `pgq.schedule(...)` and declared schedules. */
  schedule: Object.freeze({
    timezone: 'UTC',
    catchUp: 'skip' as const,
    catchUpLimit: 100,
    misfireGraceMs: 60_000,
    /** The scheduler sleeps at most this long when nothing is due. */
    schedulerMaxSleepMs: 5_000,
  }),
});

/** What a statement that must answer within one heartbeat is given: the heartbeat, and never less than a second (a loaded host). */
export function heartbeatLimitMs(heartbeatMs: number): number {
  return Math.max(1_000, heartbeatMs);
}
