-- Up Migration
-- Each worker's lease on the attempts it owns: written by the worker itself
-- at every heartbeat from its own rescueAfterMs, compared by the rescuer.

ALTER TABLE workers
  ADD COLUMN rescue_after_ms  integer CHECK (rescue_after_ms > 0),
  ADD COLUMN lease_expires_at timestamptz,
  ADD COLUMN stuck_jobs       integer NOT NULL DEFAULT 0 CHECK (stuck_jobs >= 0),
  ADD COLUMN loop_lag_ms      integer NOT NULL DEFAULT 0 CHECK (loop_lag_ms >= 0);

COMMENT ON COLUMN workers.rescue_after_ms IS 'The worker''s own rescueAfterMs: how long it may stay silent before its attempts are rescued.';
COMMENT ON COLUMN workers.lease_expires_at IS 'The worker''s lease: renewed to now() + rescue_after_ms at every heartbeat; once past, the rescuer takes its attempts away. Null only for workers of pgq versions before leases (their lease is last_heartbeat_at + the leader''s rescueAfterMs).';
COMMENT ON COLUMN workers.stuck_jobs IS 'Handlers of this worker that did not settle within their grace after their signal fired (timeout, cancel, shutdown); they keep their slot and their job.';
COMMENT ON COLUMN workers.loop_lag_ms IS 'How long the worker''s main event loop had been blocked at the last heartbeat (0 when it answers on time).';
COMMENT ON TABLE workers IS 'Live workers, one lease each. A worker whose lease_expires_at has passed is removed and its running jobs rescued.';

-- Down Migration
ALTER TABLE workers
  DROP COLUMN loop_lag_ms,
  DROP COLUMN stuck_jobs,
  DROP COLUMN lease_expires_at,
  DROP COLUMN rescue_after_ms;
