-- Up Migration
-- Who enqueued each job, so row-level security can let an enqueue-only role
-- read back its own jobs and nobody else's (see `pgq roles`). A regrole is 4
-- bytes; the default fills it in for every insert.
ALTER TABLE jobs ADD COLUMN created_by regrole NOT NULL DEFAULT current_user::regrole;
COMMENT ON COLUMN jobs.created_by IS 'Database role that enqueued the job; enqueue-only roles see only their own jobs.';

-- Down Migration
ALTER TABLE jobs DROP COLUMN created_by;
