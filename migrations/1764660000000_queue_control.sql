-- Up Migration
-- Queue control: one row per queue with its pause switch and limits, and on
-- jobs the per-key concurrency key and the expiry. Queues without a row, or
-- with a row and no limit, are claimed exactly as before.

CREATE TABLE queues (
  name             text             PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 200),
  paused           boolean          NOT NULL DEFAULT false,
  concurrency      integer          CHECK (concurrency >= 1),
  rate_limit       integer          CHECK (rate_limit >= 1),
  rate_period_ms   integer          CHECK (rate_period_ms >= 1),
  rate_tokens      double precision,
  rate_refilled_at timestamptz,
  key_concurrency  integer          CHECK (key_concurrency >= 1),
  created_at       timestamptz      NOT NULL DEFAULT now(),
  updated_at       timestamptz      NOT NULL DEFAULT now(),
  CONSTRAINT queues_rate_limit_and_period CHECK ((rate_limit IS NULL) = (rate_period_ms IS NULL))
);

COMMENT ON TABLE queues IS 'Queue control: pause switch and limits per queue, enforced across every worker. A row appears when a worker first serves the queue or when it is first paused or set; a queue without a row is unlimited and not paused.';
COMMENT ON COLUMN queues.name IS 'Queue name, as in jobs.queue.';
COMMENT ON COLUMN queues.paused IS 'True: no worker claims this queue''s jobs; running ones finish. Setting it false wakes the workers at once.';
COMMENT ON COLUMN queues.concurrency IS 'Most jobs of this queue running at once across all workers; null: no limit.';
COMMENT ON COLUMN queues.rate_limit IS 'Token bucket: at most this many job starts per rate_period_ms on average, bursts up to rate_limit; null: no rate limit.';
COMMENT ON COLUMN queues.rate_period_ms IS 'Period of rate_limit in milliseconds (the bucket refills rate_limit tokens per period); null exactly when rate_limit is.';
COMMENT ON COLUMN queues.rate_tokens IS 'Token bucket state: tokens left at rate_refilled_at (each job start takes one; at most rate_limit). Written by claims; null means a full bucket.';
COMMENT ON COLUMN queues.rate_refilled_at IS 'Token bucket state: the time rate_tokens was computed for (database clock).';
COMMENT ON COLUMN queues.key_concurrency IS 'Most running jobs with the same jobs.concurrency_key in this queue; null: no per-key limit. Jobs without a key are not limited by it.';
COMMENT ON COLUMN queues.created_at IS 'When the row was made.';
COMMENT ON COLUMN queues.updated_at IS 'When the pause switch or a limit last changed (set by a trigger, also for plain SQL updates).';

-- Changing the pause switch or a limit, with pgq or with plain SQL, stamps
-- updated_at and tells every worker at commit: on the queues channel (they
-- re-read the row) and, unless paused, on the jobs channel (resume wakes them).
CREATE FUNCTION queues_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.updated_at := now();
  PERFORM pg_notify('pgq:' || TG_TABLE_SCHEMA || ':queues', NEW.name);
  IF NOT NEW.paused THEN
    PERFORM pg_notify('pgq:' || TG_TABLE_SCHEMA || ':jobs', NEW.name);
  END IF;
  RETURN NEW;
END
$$;
COMMENT ON FUNCTION queues_changed() IS 'Stamps queues.updated_at and sends pgq:<schema>:queues (and pgq:<schema>:jobs when not paused) with the queue name.';

-- Only the settings columns: claims that spend rate tokens do not fire it.
CREATE TRIGGER queues_changed BEFORE INSERT OR UPDATE OF paused, concurrency, rate_limit, rate_period_ms, key_concurrency
  ON queues FOR EACH ROW EXECUTE FUNCTION queues_changed();

ALTER TABLE jobs
  ADD COLUMN concurrency_key text CHECK (length(concurrency_key) BETWEEN 1 AND 200),
  ADD COLUMN expires_at      timestamptz;

COMMENT ON COLUMN jobs.concurrency_key IS 'Per-key fairness: at most queues.key_concurrency running jobs of the queue share this key; null: no key.';
COMMENT ON COLUMN jobs.expires_at IS 'A job not started by this time never runs: it ends cancelled with an error saying it expired (retries due later included); null: never expires.';

-- Limited queues count their running jobs (and running jobs per key) here.
CREATE INDEX jobs_running_queue_idx ON jobs (queue, concurrency_key) WHERE state = 'running';

-- The expirer finds jobs that expired before they started; jobs without an
-- expiry are not in it.
CREATE INDEX jobs_expiry_idx ON jobs (expires_at)
  WHERE expires_at IS NOT NULL AND state IN ('scheduled', 'available', 'retryable');

-- Down Migration
DROP INDEX jobs_expiry_idx;
DROP INDEX jobs_running_queue_idx;
ALTER TABLE jobs DROP COLUMN expires_at, DROP COLUMN concurrency_key;
DROP TABLE queues;
DROP FUNCTION queues_changed();
