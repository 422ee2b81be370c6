-- Up Migration
-- claim_candidates and claim_candidates_many in PL/pgSQL, same queries, same
-- settings.
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

DO $$ BEGIN
  EXECUTE format('ALTER FUNCTION claim_candidates(text, text[], integer) SET search_path = %I, pg_temp', current_schema());
  EXECUTE format('ALTER FUNCTION claim_candidates_many(text[], text[], integer) SET search_path = %I, pg_temp', current_schema());
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

DO $$ BEGIN
  EXECUTE format('ALTER FUNCTION claim_candidates(text, text[], integer) SET search_path = %I, pg_temp', current_schema());
  EXECUTE format('ALTER FUNCTION claim_candidates_many(text[], text[], integer) SET search_path = %I, pg_temp', current_schema());
END $$;
