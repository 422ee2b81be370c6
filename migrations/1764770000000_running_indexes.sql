-- Up Migration
-- Two fewer index entries written by every claim. A claimed row's new
-- version (a job without a unique key or workflow) went into four indexes:
-- the primary key, jobs_state_queue_idx (every state but succeeded),
-- jobs_running_idx (worker_id) and jobs_running_queue_idx (queue,
-- concurrency_key), the last two over running rows only. jobs_state_queue_idx (state, queue, id) already reads exactly
-- the running rows (a range on its first column) and a queue's running rows
-- (its first two), which is what every query of running jobs asks: the
-- rescue, a worker's give-backs, the limited claims' counts, the counts by
-- worker and by queue. Those plans, checked with and without statistics on
-- a million finished rows: each reads jobs_state_queue_idx, in well under a
-- millisecond for a few thousand running jobs. Drains of no-op jobs gained
-- about 6% (bench/results and docs/benchmarks.md, 2026-12-03).
DROP INDEX jobs_running_idx;
DROP INDEX jobs_running_queue_idx;

-- Down Migration
CREATE INDEX jobs_running_idx ON jobs (worker_id) WHERE state = 'running';
CREATE INDEX jobs_running_queue_idx ON jobs (queue, concurrency_key) WHERE state = 'running';
