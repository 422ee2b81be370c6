-- Up Migration
-- One index entry fewer for every enqueue: jobs_state_queue_idx (state,
-- queue, id) leaves out `available` rows as well as `succeeded` ones.
--
-- An enqueued job went into three indexes: the primary key, the claim index
-- (queue, priority DESC, run_at, id over `available` rows) and this one. The
-- claim index already holds exactly the waiting rows, by queue: the queue
-- counts and the oldest waiting job read it, and a page of waiting jobs
-- (newest first) reads either it or a backward walk of the primary key,
-- whichever the planner finds cheaper. A million jobs inserted in one
-- statement wrote 316 MiB of WAL instead of 406 and left 228 MiB of table
-- and indexes instead of 276 (PostgreSQL 15). Running rows stay in this
-- index: every query of running jobs reads it (migration 1764770000000).
--
-- On a large existing table, building the index takes a lock that holds back
-- writes to pgq.jobs (enqueues, claims, outcomes) until it is built; run
-- `pgq migrate` when a pause of that length is acceptable.
CREATE INDEX jobs_state_queue_idx_new ON jobs (state, queue, id) WHERE state NOT IN ('succeeded', 'available');
DROP INDEX jobs_state_queue_idx;
ALTER INDEX jobs_state_queue_idx_new RENAME TO jobs_state_queue_idx;

-- Down Migration
CREATE INDEX jobs_state_queue_idx_old ON jobs (state, queue, id) WHERE state <> 'succeeded';
DROP INDEX jobs_state_queue_idx;
ALTER INDEX jobs_state_queue_idx_old RENAME TO jobs_state_queue_idx;
