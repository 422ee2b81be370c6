-- Up Migration
-- Finished jobs are found through a btree on (state, finished_at) instead
-- of the BRIN index on finished_at.
--
-- A BRIN range's summary only ever widens: once retention has deleted a
-- range's old rows and new ones have filled the space, its minimum is still
-- the oldest finished_at it ever held and its maximum the newest. After one
-- retention cycle every reused range matches both "finished before the
-- cutoff" (the pruner) and "finished in the last hour" (the console's
-- throughput), so each pruner pass read the whole table: 4,082 of 4,082
-- heap blocks, 34 ms, for 200,000 rows with nothing to prune (0.14 ms through
-- this index). Ranges not yet summarized (rows written since the last
-- vacuum, say a backlog of a million waiting jobs) always match as well: a
-- pruner pass at a worker's start read 267 MB and wrote 56 MB of WAL while
-- the worker drained. This index holds finished rows only, so a claim
-- writes nothing to it; a job's last outcome writes one entry.
--
-- On a large existing table, building it takes a lock that holds back
-- writes to pgq.jobs (enqueues, claims, outcomes) until it is built; run
-- `pgq migrate` when a pause of that length is acceptable.
CREATE INDEX jobs_state_finished_idx ON jobs (state, finished_at) WHERE finished_at IS NOT NULL;
DROP INDEX jobs_finished_idx;

-- Down Migration
CREATE INDEX jobs_finished_idx ON jobs USING brin (finished_at) WHERE finished_at IS NOT NULL;
DROP INDEX jobs_state_finished_idx;
