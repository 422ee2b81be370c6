-- Up Migration
-- Failed and cancelled jobs with a unique key, by task and key: what a bulk
-- retry (`retryJobs`, `countJobs(filter, { action: 'retry' })`, the
-- console's "Retry all matching") asks of each keyed job it matches — is
-- a newer finished job sharing its key retried instead? — is answered by
-- one index probe. The index of live keys (jobs_unique_key_idx) holds only
-- live jobs, so PostgreSQL read every failed (or cancelled) job for each
-- one: counting 20,000 failed keyed jobs took 273 s, 5,000 took 2–3 s.
--
-- Only jobs with a key that end failed or cancelled have an entry: a job
-- that succeeds, or has no key, writes nothing to it.
--
-- On a large existing table, building it takes a lock that holds back
-- writes to pgq.jobs (enqueues, claims, outcomes) while it reads the table;
-- run `pgq migrate` when a pause of that length is acceptable. IF NOT EXISTS:
-- run again (its pgq_migrations row deleted), it succeeds.
CREATE INDEX IF NOT EXISTS jobs_finished_unique_key_idx ON jobs (task, unique_key, id)
  WHERE unique_key IS NOT NULL AND state IN ('failed', 'cancelled');

-- Down Migration
DROP INDEX jobs_finished_unique_key_idx;
