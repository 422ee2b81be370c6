-- Up Migration
-- Limited claims, three fixes:
-- * a queue with a per-key limit: one claim took the slots only of the keys
--   in its window of 4 x room candidates, so a key with a deep backlog
--   ahead of the others (under its limit) took its room and left the other
--   keys' free slots empty until the next recheck, 50 ms later, one key per
--   claim. When the window leaves room while more candidates wait,
--   claim_candidates_keyed_fill takes, in claim order, each key up to what
--   it has left, scanning again without the keys it filled.
-- * the lease and the jobs' expiry are tested at the time the queue's row is
--   held, not at the statement's start: a claim that waited for the row
--   could start a job that expired meanwhile.
-- * a rate limit or period changed with plain SQL starts a full bucket, as
--   one changed by setQueue does.
CREATE FUNCTION claim_candidates_keyed_fill(p_queue text, p_tasks text[], p_room integer, p_key_limit integer, p_now timestamptz, p_running jsonb)
RETURNS SETOF bigint
LANGUAGE plpgsql STABLE
SET enable_bitmapscan = off
SET enable_sort = off
AS $$
#variable_conflict use_column
DECLARE
  -- Jobs per key: running (p_running: key -> count), then running and picked.
  used jsonb := p_running;
  full_keys text[] := ARRAY(SELECT e.key FROM jsonb_each_text(p_running) AS e WHERE e.value::integer >= p_key_limit);
  picked bigint[] := '{}';
  rec record;
  n integer;
  skipped integer;
  restarts integer := 0;
  again boolean;
BEGIN
  IF p_room <= 0 THEN
    RETURN;
  END IF;
  LOOP
    again := false;
    skipped := 0;
    FOR rec IN
      SELECT j.id, j.concurrency_key FROM jobs j
       WHERE j.state = 'available' AND j.queue = p_queue AND j.task = ANY(p_tasks)
         AND (j.expires_at IS NULL OR j.expires_at > p_now)
         AND (j.concurrency_key IS NULL OR NOT j.concurrency_key = ANY(full_keys))
       ORDER BY j.priority DESC, j.run_at, j.id
    LOOP
      -- Picked in an earlier scan of this call.
      CONTINUE WHEN restarts > 0 AND rec.id = ANY(picked);
      n := coalesce((used ->> rec.concurrency_key)::integer, 0);
      IF rec.concurrency_key IS NULL OR n < p_key_limit THEN
        picked := picked || rec.id;
        IF rec.concurrency_key IS NOT NULL THEN
          used := used || jsonb_build_object(rec.concurrency_key, n + 1);
        END IF;
        EXIT WHEN cardinality(picked) >= p_room;
        skipped := 0;
      ELSE
        -- A key filled in this scan, its backlog ahead: scan again with it
        -- left out by the index scan's filter, rather than row by row here
        -- (at most 16 times; then 32 such rows in a row end the scan).
        skipped := skipped + 1;
        IF skipped >= 32 THEN
          again := restarts < 16;
          EXIT;
        END IF;
      END IF;
    END LOOP;
    EXIT WHEN NOT again;
    restarts := restarts + 1;
    full_keys := ARRAY(SELECT e.key FROM jsonb_each_text(used) AS e WHERE e.value::integer >= p_key_limit);
  END LOOP;
  RETURN QUERY SELECT unnest(picked);
END
$$;
COMMENT ON FUNCTION claim_candidates_keyed_fill(text, text[], integer, integer, timestamptz, jsonb) IS 'The jobs a limited claim takes from a queue with a per-key limit: in claim order, each key up to what it has left (p_running: its running jobs), up to p_room.';

CREATE OR REPLACE FUNCTION claim_limited(p_queue text, p_tasks text[], p_limit integer, p_worker text)
RETURNS TABLE (job jobs, waiting boolean, token_ms integer)
LANGUAGE plpgsql VOLATILE
AS $$
#variable_conflict use_column
DECLARE
  q queues;
  t timestamptz;
  tokens float8;
  room integer;
  claimed bigint[];
  taken jobs[];
  n integer;
  left_waiting boolean;
  running jsonb;
  picked bigint[];
  seen bigint;
BEGIN
  SELECT * INTO q FROM queues WHERE name = p_queue FOR UPDATE;
  -- The time once the row is held (another claim may have held it a while):
  -- the lease and the jobs' expiry are tested at it, not at the statement's start.
  t := clock_timestamp();
  IF q.name IS NULL OR q.paused OR NOT EXISTS (SELECT 1 FROM workers w WHERE w.id = p_worker AND w.lease_expires_at > t) THEN
    RETURN QUERY SELECT NULL::jobs, false, NULL::integer;
    RETURN;
  END IF;
  IF q.rate_limit IS NOT NULL THEN
    tokens := least(q.rate_limit::float8,
      coalesce(q.rate_tokens, q.rate_limit) + q.rate_limit::float8 / q.rate_period_ms
        * greatest(0, extract(epoch FROM t - coalesce(q.rate_refilled_at, t)) * 1000));
  END IF;
  room := greatest(0, least(p_limit,
    coalesce(q.concurrency - (SELECT count(*) FROM jobs WHERE queue = p_queue AND state = 'running'), p_limit),
    coalesce(floor(tokens)::integer, p_limit)));

  IF room > 0 AND q.key_concurrency IS NULL THEN
    -- The queue's head in claim-index order, up to the room, locked.
    claimed := ARRAY(SELECT c.id FROM claim_candidates(p_queue, p_tasks, room) AS c(id));
  ELSIF room > 0 THEN
    -- Running jobs per key.
    running := (SELECT coalesce(jsonb_object_agg(r.k, r.n), '{}'::jsonb) FROM (
                  SELECT concurrency_key AS k, count(*) AS n FROM jobs
                   WHERE queue = p_queue AND state = 'running' AND concurrency_key IS NOT NULL
                   GROUP BY concurrency_key) AS r);
    -- First, as before: keys at their limit are left out of the scan
    -- (claim_candidates_keyed), and each other key gets the slots it has
    -- left among the first 4 x room candidates.
    WITH candidates AS MATERIALIZED (
      SELECT c.* FROM claim_candidates_keyed(p_queue, p_tasks, 4 * room,
          ARRAY(SELECT e.key FROM jsonb_each_text(running) AS e WHERE e.value::integer >= q.key_concurrency)) AS c
    ), chosen AS MATERIALIZED (
      SELECT c.id FROM (
        SELECT c.*, row_number() OVER (PARTITION BY c.concurrency_key ORDER BY c.priority DESC, c.run_at, c.id) AS nth
          FROM candidates c
      ) AS c
       WHERE c.concurrency_key IS NULL OR c.nth + coalesce((running ->> c.concurrency_key)::integer, 0) <= q.key_concurrency
       ORDER BY c.priority DESC, c.run_at, c.id
       LIMIT room
    )
    SELECT ARRAY(SELECT id FROM chosen), (SELECT count(*) FROM candidates) INTO picked, seen;
    -- Room left while more candidates wait beyond those: keys with deep
    -- backlogs filled the window. Then every key gets what it has left,
    -- however deep the backlogs ahead of it (claim_candidates_keyed_fill).
    IF cardinality(picked) < room AND seen >= 4 * room THEN
      picked := ARRAY(SELECT claim_candidates_keyed_fill(p_queue, p_tasks, room, q.key_concurrency, t, running));
    END IF;
    -- The chosen rows, locked in claim order.
    claimed := ARRAY(
      SELECT id FROM jobs
       WHERE id = ANY(picked) AND state = 'available'
       ORDER BY priority DESC, run_at, id
       FOR UPDATE SKIP LOCKED);
  END IF;

  IF cardinality(claimed) > 0 THEN
    WITH u AS (
      UPDATE jobs j SET state = 'running', attempts = j.attempts + 1, started_at = t, worker_id = p_worker
       WHERE j.id = ANY(claimed) AND (j.expires_at IS NULL OR j.expires_at > t)
      RETURNING j
    ) SELECT array_agg(u.j) INTO taken FROM u;
  END IF;
  n := coalesce(cardinality(taken), 0);
  IF tokens IS NOT NULL THEN
    UPDATE queues SET rate_tokens = tokens - n, rate_refilled_at = greatest(coalesce(q.rate_refilled_at, t), t) WHERE name = p_queue;
  END IF;

  -- Waiting for this worker: a job of one of its tasks, not expired. Jobs
  -- none of its tasks run leave nothing to look again for. (A job of a key
  -- at its per-key limit counts: its outcome's commit is what frees it.)
  left_waiting := EXISTS (
    SELECT 1 FROM jobs j
     WHERE j.state = 'available' AND j.queue = p_queue AND j.task = ANY(p_tasks)
       AND (j.expires_at IS NULL OR j.expires_at > t));
  IF n = 0 THEN
    RETURN QUERY SELECT NULL::jobs, left_waiting, ceil(q.rate_period_ms::float8 / q.rate_limit)::integer;
  ELSE
    RETURN QUERY SELECT x, left_waiting, ceil(q.rate_period_ms::float8 / q.rate_limit)::integer FROM unnest(taken) AS x;
  END IF;
END
$$;


DO $$ BEGIN
  EXECUTE format('ALTER FUNCTION claim_limited(text, text[], integer, text) SET search_path = %I, pg_temp', current_schema());
  EXECUTE format('ALTER FUNCTION claim_candidates_keyed_fill(text, text[], integer, integer, timestamptz, jsonb) SET search_path = %I, pg_temp', current_schema());
END $$;

-- A new rate limit or period starts a full bucket, also when set with plain
-- SQL (before, only pgq's own setQueue reset it).
CREATE OR REPLACE FUNCTION queues_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.updated_at := now();
  IF TG_OP = 'UPDATE' AND (NEW.rate_limit IS DISTINCT FROM OLD.rate_limit OR NEW.rate_period_ms IS DISTINCT FROM OLD.rate_period_ms) THEN
    NEW.rate_tokens := NEW.rate_limit;
    NEW.rate_refilled_at := NULL;
  END IF;
  PERFORM pg_notify('pgq:' || TG_TABLE_SCHEMA || ':queues', NEW.name);
  IF NOT NEW.paused THEN
    PERFORM pg_notify('pgq:' || TG_TABLE_SCHEMA || ':jobs', NEW.name);
  END IF;
  RETURN NEW;
END
$$;

-- Down Migration
CREATE OR REPLACE FUNCTION queues_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.updated_at := now();
  PERFORM pg_notify('pgq:' || TG_TABLE_SCHEMA || ':queues', NEW.name);
  IF NOT NEW.paused THEN
    PERFORM pg_notify('pgq:' || TG_TABLE_SCHEMA || ':jobs', NEW.name);
  END IF;
  RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION claim_limited(p_queue text, p_tasks text[], p_limit integer, p_worker text)
RETURNS TABLE (job jobs, waiting boolean, token_ms integer)
LANGUAGE plpgsql VOLATILE
AS $$
#variable_conflict use_column
DECLARE
  q queues;
  t timestamptz;
  tokens float8;
  room integer;
  claimed bigint[];
  taken jobs[];
  n integer;
  left_waiting boolean;
BEGIN
  SELECT * INTO q FROM queues WHERE name = p_queue FOR UPDATE;
  IF NOT FOUND OR q.paused OR NOT EXISTS (SELECT 1 FROM workers w WHERE w.id = p_worker AND w.lease_expires_at > now()) THEN
    RETURN QUERY SELECT NULL::jobs, false, NULL::integer;
    RETURN;
  END IF;
  t := clock_timestamp();
  IF q.rate_limit IS NOT NULL THEN
    tokens := least(q.rate_limit::float8,
      coalesce(q.rate_tokens, q.rate_limit) + q.rate_limit::float8 / q.rate_period_ms
        * greatest(0, extract(epoch FROM t - coalesce(q.rate_refilled_at, t)) * 1000));
  END IF;
  room := greatest(0, least(p_limit,
    coalesce(q.concurrency - (SELECT count(*) FROM jobs WHERE queue = p_queue AND state = 'running'), p_limit),
    coalesce(floor(tokens)::integer, p_limit)));

  IF room > 0 AND q.key_concurrency IS NULL THEN
    -- The queue's head in claim-index order, up to the room, locked.
    claimed := ARRAY(SELECT c.id FROM claim_candidates(p_queue, p_tasks, room) AS c(id));
  ELSIF room > 0 THEN
    -- Keys at their limit are left out of the scan (claim_candidates_keyed),
    -- each other key gets the slots it has left, and the chosen rows are
    -- locked in claim order (candidates not chosen are not locked).
    claimed := ARRAY(
      WITH running_keys AS MATERIALIZED (
        SELECT concurrency_key AS k, count(*) AS n FROM jobs
         WHERE queue = p_queue AND state = 'running' AND concurrency_key IS NOT NULL
         GROUP BY concurrency_key
      ),
      candidates AS MATERIALIZED (
        SELECT c.* FROM claim_candidates_keyed(p_queue, p_tasks, 4 * room,
            ARRAY(SELECT k FROM running_keys WHERE n >= q.key_concurrency)) AS c
      ),
      chosen AS MATERIALIZED (
        SELECT c.id FROM (
          SELECT c.*, row_number() OVER (PARTITION BY c.concurrency_key ORDER BY c.priority DESC, c.run_at, c.id) AS nth
            FROM candidates c
        ) AS c LEFT JOIN running_keys r ON r.k = c.concurrency_key
         WHERE c.concurrency_key IS NULL OR c.nth + coalesce(r.n, 0) <= q.key_concurrency
         ORDER BY c.priority DESC, c.run_at, c.id
         LIMIT room
      )
      SELECT id FROM jobs
       WHERE id = ANY(ARRAY(SELECT id FROM chosen)) AND state = 'available'
       ORDER BY priority DESC, run_at, id
       FOR UPDATE SKIP LOCKED);
  END IF;

  IF cardinality(claimed) > 0 THEN
    WITH u AS (
      UPDATE jobs j SET state = 'running', attempts = j.attempts + 1, started_at = t, worker_id = p_worker
       WHERE j.id = ANY(claimed)
      RETURNING j
    ) SELECT array_agg(u.j) INTO taken FROM u;
  END IF;
  n := coalesce(cardinality(taken), 0);
  IF tokens IS NOT NULL THEN
    UPDATE queues SET rate_tokens = tokens - n, rate_refilled_at = greatest(coalesce(q.rate_refilled_at, t), t) WHERE name = p_queue;
  END IF;

  -- Waiting for this worker: a job of one of its tasks, not expired. Jobs
  -- none of its tasks run leave nothing to look again for. (A job of a key
  -- at its per-key limit counts: its outcome's commit is what frees it.)
  left_waiting := EXISTS (
    SELECT 1 FROM jobs j
     WHERE j.state = 'available' AND j.queue = p_queue AND j.task = ANY(p_tasks)
       AND (j.expires_at IS NULL OR j.expires_at > now()));
  IF n = 0 THEN
    RETURN QUERY SELECT NULL::jobs, left_waiting, ceil(q.rate_period_ms::float8 / q.rate_limit)::integer;
  ELSE
    RETURN QUERY SELECT x, left_waiting, ceil(q.rate_period_ms::float8 / q.rate_limit)::integer FROM unnest(taken) AS x;
  END IF;
END
$$;


DO $$ BEGIN
  EXECUTE format('ALTER FUNCTION claim_limited(text, text[], integer, text) SET search_path = %I, pg_temp', current_schema());
END $$;

DROP FUNCTION claim_candidates_keyed_fill(text, text[], integer, integer, timestamptz, jsonb);
