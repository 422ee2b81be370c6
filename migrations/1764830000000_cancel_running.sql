-- Up Migration
-- cancelJob of a running job asks its attempt to stop instead of ending it.
--
-- Until now a cancel set a running job's row to `cancelled` at once, while
-- its handler still ran (it is told through ctx.signal and may take a while
-- to stop, or ignore it). The row no longer said so: retryJob took the
-- cancelled job and another worker ran it beside the first attempt; a new
-- job with the same uniqueKey did the same; and a queue's concurrency limits
-- no longer counted the attempt, so the next job started beside it. That
-- broke the attempt's ownership: it ends only with its owner's outcome or
-- with the owner's lease.
--
-- Now the row stays `running`, held by its worker, with the time of the
-- request here; the worker's signal aborts as before, and whatever outcome
-- the owner then writes (a success, a failure, a snooze, a give-back) ends
-- the job `cancelled`, as does the rescuer once that worker's lease lapsed.
ALTER TABLE jobs ADD COLUMN cancel_requested_at timestamptz;
COMMENT ON COLUMN jobs.cancel_requested_at IS 'When cancelJob asked the running attempt to stop (its ctx.signal aborts): the job stays running, held by its worker, until the attempt ends; then it is cancelled and this is null again.';

-- Down Migration
ALTER TABLE jobs DROP COLUMN cancel_requested_at;
