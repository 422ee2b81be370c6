-- Up Migration
-- Job progress (ctx.progress) and the index the operations console lists jobs by.

ALTER TABLE jobs
  ADD COLUMN progress    jsonb,
  ADD COLUMN progress_at timestamptz;
COMMENT ON COLUMN jobs.progress IS 'Last value a handler reported with ctx.progress: a number 0-100 or a small JSON object; null if never reported.';
COMMENT ON COLUMN jobs.progress_at IS 'When progress was last written; a value older than started_at belongs to an earlier attempt.';

-- The console and `pgq jobs list`: jobs of a state (and queue), newest first,
-- paged by id. Succeeded jobs, the bulk of the table, are left out: they are
-- the common case a backward walk of the primary key finds at once, and
-- keeping them out keeps this index small and off the completion path.
CREATE INDEX jobs_state_queue_idx ON jobs (state, queue, id) WHERE state <> 'succeeded';

-- Down Migration
DROP INDEX jobs_state_queue_idx;
ALTER TABLE jobs DROP COLUMN progress_at, DROP COLUMN progress;
