-- Up Migration
-- The insert trigger also tells workers when a delayed job was inserted:
-- one NOTIFY per queue per statement, `<queue>\n<epoch ms>` with the earliest
-- `run_at` among the statement's scheduled rows due within the hour (the
-- longest poll interval: later ones are found by a poll). A worker that would sleep
-- past that time (its poll interval, or the next due time it read before the
-- insert) sets a timer for it instead: before this, a job whose delay ended
-- before the next poll waited for that poll (up to `pollIntervalMs`), and one
-- whose delay ended before the inserting transaction committed too. Workers
-- of an earlier pgq ignore the new payload (it names no queue of theirs).
CREATE OR REPLACE FUNCTION jobs_notify_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  -- pgq's own enqueuer turns this off for a transaction (and notifies after
  -- commit, once for a burst of enqueues) so concurrent enqueues do not queue
  -- up on NOTIFY's commit lock.
  IF current_setting('pgq.skip_notify', true) = 'on' THEN
    RETURN NULL;
  END IF;
  PERFORM pg_notify('pgq:' || TG_TABLE_SCHEMA || ':jobs', p.payload)
    FROM (SELECT DISTINCT queue AS payload FROM inserted WHERE state = 'available'
          UNION ALL
          SELECT queue || E'\n' || ceil(extract(epoch FROM min(run_at)) * 1000)::bigint
            FROM inserted
           WHERE state = 'scheduled' AND isfinite(run_at) AND run_at < now() + interval '1 hour'
           GROUP BY queue) AS p;
  RETURN NULL;
END
$$;
COMMENT ON FUNCTION jobs_notify_inserted() IS 'Sends pgq:<schema>:jobs at commit: the queue name when due jobs are inserted, <queue>\n<epoch ms of the earliest run_at> when delayed ones due within the hour are.';

-- Down Migration
CREATE OR REPLACE FUNCTION jobs_notify_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF current_setting('pgq.skip_notify', true) = 'on' THEN
    RETURN NULL;
  END IF;
  PERFORM pg_notify('pgq:' || TG_TABLE_SCHEMA || ':jobs', q.queue)
    FROM (SELECT DISTINCT queue FROM inserted WHERE state = 'available') AS q;
  RETURN NULL;
END
$$;
COMMENT ON FUNCTION jobs_notify_inserted() IS 'Sends pgq:<schema>:jobs with the queue name when due jobs are inserted.';
