-- Up Migration
-- claim_limited's `waiting` counted every available job of the queue, so
-- workers looked again every 50 ms (taking the queue's row lock, and
-- rewriting the row when rate-limited) while the queue held only jobs none
-- of them could take: of tasks the worker does not run, or expired. It now
-- counts only jobs of the claiming worker's tasks that have not expired.
-- The rest of the function is unchanged.
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

  left_waiting := EXISTS (SELECT 1 FROM jobs WHERE state = 'available' AND queue = p_queue);
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
