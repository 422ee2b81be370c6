-- Up Migration
-- claim_candidates, claim_candidates_many and claim_candidates_keyed in
-- PL/pgSQL, same queries, same settings.
--
-- Before PostgreSQL 18, a set-returning SQL function that cannot be inlined
-- (these cannot: they carry SET clauses) plans its query again on every
-- call. PL/pgSQL keeps its query's plan for the session. A claim of one job
-- with one waiting (an idle worker woken by an enqueue) took 494-761 us on
-- PostgreSQL 15 through the SQL function and 318-393 through this one (3
-- rounds of 1,500); claims of 500 were no slower (14.0-14.4 against
-- 14.1-17.9 us a job); on PostgreSQL 18, which caches SQL functions' plans,
-- the two were level.
CREATE OR REPLACE FUNCTION claim_candidates(p_queue text, p_tasks text[], p_limit integer) RETURNS SETOF bigint
LANGUAGE plpgsql VOLATILE
SET enable_bitmapscan = off
SET enable_sort = off
AS $$
BEGIN
  RETURN QUERY
  SELECT id FROM jobs
   WHERE state = 'available' AND queue = p_queue AND task = ANY(p_tasks)
     AND (expires_at IS NULL OR expires_at > now())
   ORDER BY priority DESC, run_at, id
   LIMIT p_limit
   FOR UPDATE SKIP LOCKED;
END
$$;

CREATE OR REPLACE FUNCTION claim_candidates_many(p_queues text[], p_tasks text[], p_limit integer) RETURNS SETOF bigint
LANGUAGE plpgsql STABLE
SET enable_bitmapscan = off
SET enable_sort = off
AS $$
BEGIN
  RETURN QUERY
  SELECT c.id FROM unnest(p_queues) AS q(queue)
  CROSS JOIN LATERAL (
    SELECT id FROM jobs
     WHERE state = 'available' AND queue = q.queue AND task = ANY(p_tasks)
       AND (expires_at IS NULL OR expires_at > now())
     ORDER BY priority DESC, run_at, id
     LIMIT p_limit
  ) AS c;
END
$$;

CREATE OR REPLACE FUNCTION claim_candidates_keyed(p_queue text, p_tasks text[], p_limit integer, p_full_keys text[])
RETURNS TABLE (id bigint, concurrency_key text, priority integer, run_at timestamptz)
LANGUAGE plpgsql STABLE
SET enable_bitmapscan = off
SET enable_sort = off
AS $$
#variable_conflict use_column
BEGIN
  RETURN QUERY
  SELECT j.id, j.concurrency_key, j.priority, j.run_at FROM jobs j
   WHERE j.state = 'available' AND j.queue = p_queue AND j.task = ANY(p_tasks)
     AND (j.expires_at IS NULL OR j.expires_at > now())
     AND (j.concurrency_key IS NULL OR NOT j.concurrency_key = ANY(p_full_keys))
   ORDER BY j.priority DESC, j.run_at, j.id
   LIMIT p_limit;
END
$$;

DO $$ BEGIN
  EXECUTE format('ALTER FUNCTION claim_candidates(text, text[], integer) SET search_path = %I, pg_temp', current_schema());
  EXECUTE format('ALTER FUNCTION claim_candidates_many(text[], text[], integer) SET search_path = %I, pg_temp', current_schema());
  EXECUTE format('ALTER FUNCTION claim_candidates_keyed(text, text[], integer, text[]) SET search_path = %I, pg_temp', current_schema());
END $$;

-- Down Migration
CREATE OR REPLACE FUNCTION claim_candidates(p_queue text, p_tasks text[], p_limit integer) RETURNS SETOF bigint
LANGUAGE sql VOLATILE
SET enable_bitmapscan = off
SET enable_sort = off
AS $$
  SELECT id FROM jobs
   WHERE state = 'available' AND queue = p_queue AND task = ANY(p_tasks)
     AND (expires_at IS NULL OR expires_at > now())
   ORDER BY priority DESC, run_at, id
   LIMIT p_limit
   FOR UPDATE SKIP LOCKED
$$;

CREATE OR REPLACE FUNCTION claim_candidates_many(p_queues text[], p_tasks text[], p_limit integer) RETURNS SETOF bigint
LANGUAGE sql STABLE
SET enable_bitmapscan = off
SET enable_sort = off
AS $$
  SELECT c.id FROM unnest(p_queues) AS q(queue)
  CROSS JOIN LATERAL (
    SELECT id FROM jobs
     WHERE state = 'available' AND queue = q.queue AND task = ANY(p_tasks)
       AND (expires_at IS NULL OR expires_at > now())
     ORDER BY priority DESC, run_at, id
     LIMIT p_limit
  ) AS c
$$;

CREATE OR REPLACE FUNCTION claim_candidates_keyed(p_queue text, p_tasks text[], p_limit integer, p_full_keys text[])
RETURNS TABLE (id bigint, concurrency_key text, priority integer, run_at timestamptz)
LANGUAGE sql STABLE
SET enable_bitmapscan = off
SET enable_sort = off
AS $$
  SELECT j.id, j.concurrency_key, j.priority, j.run_at FROM jobs j
   WHERE j.state = 'available' AND j.queue = p_queue AND j.task = ANY(p_tasks)
     AND (j.expires_at IS NULL OR j.expires_at > now())
     AND (j.concurrency_key IS NULL OR NOT j.concurrency_key = ANY(p_full_keys))
   ORDER BY j.priority DESC, j.run_at, j.id
   LIMIT p_limit
$$;

DO $$ BEGIN
  EXECUTE format('ALTER FUNCTION claim_candidates(text, text[], integer) SET search_path = %I, pg_temp', current_schema());
  EXECUTE format('ALTER FUNCTION claim_candidates_many(text[], text[], integer) SET search_path = %I, pg_temp', current_schema());
  EXECUTE format('ALTER FUNCTION claim_candidates_keyed(text, text[], integer, text[]) SET search_path = %I, pg_temp', current_schema());
END $$;
