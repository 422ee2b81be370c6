-- Up Migration
-- Limited claims, two fixes:
-- * under a default isolation of repeatable read or serializable, two
--   claims begun before either committed both counted the running jobs as
--   of their start and filled the same room: a queue limited to 1 ran 2
--   jobs of different tasks at once (one task's claims conflict on the same
--   rows and were sent again; different tasks' did not). Such a claim now
--   updates the queue's row, so that the later one fails with 40001 and is
--   sent again with a new snapshot.
-- * the time to the next token was returned whenever the queue had a rate
--   limit, also when its concurrency limit was what held jobs back: the
--   worker looked again a token's time later (36 s for 100 an hour) instead
--   of at its recheck (50 ms). Now only when the bucket ran out, and then
--   the time until it holds a whole token.
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
  token_wait integer;
BEGIN
  SELECT * INTO q FROM queues WHERE name = p_queue FOR UPDATE;
  -- Under repeatable read or serializable (a database's or role's
  -- default_transaction_isolation) every statement here reads the snapshot
  -- the claim began with: the running jobs counted below would miss claims
  -- committed while this one waited for the row. Such a claim updates the
  -- row, so that one begun before it committed fails at the FOR UPDATE
  -- above with 40001 and is sent again (with a new snapshot). Under read
  -- committed each statement sees what committed before it: nothing to do.
  IF current_setting('transaction_isolation') <> 'read committed' THEN
    UPDATE queues SET rate_refilled_at = rate_refilled_at WHERE name = p_queue;
  END IF;
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
  -- The time until the next token, only when the bucket is what ran out:
  -- a queue held back by its concurrency limit is looked at again soon
  -- (the worker's recheck), not a token's time later.
  token_wait := CASE WHEN tokens IS NOT NULL AND tokens - n < 1
                     THEN ceil((1 - (tokens - n)) * q.rate_period_ms::float8 / q.rate_limit)::integer END;
  IF n = 0 THEN
    RETURN QUERY SELECT NULL::jobs, left_waiting, token_wait;
  ELSE
    RETURN QUERY SELECT x, left_waiting, token_wait FROM unnest(taken) AS x;
  END IF;
END
$$;

DO $$ BEGIN
  EXECUTE format('ALTER FUNCTION claim_limited(text, text[], integer, text) SET search_path = %I, pg_temp', current_schema());
END $$;

-- Down Migration
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
END $$;
