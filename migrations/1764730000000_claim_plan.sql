-- Up Migration
-- The claim's candidates, planned the same way whatever the statistics say.
--
-- On a jobs table that has never been analysed (a new installation's first
-- burst, before autovacuum's first analyse; for good with autovacuum off)
-- the planner's default selectivities put `queue = $1 AND state =
-- 'available'` at a handful of rows, and it reads them with a bitmap scan
-- and sorts them: with a million waiting, a claim of 500 sorted all of them
-- (about 600 ms instead of 10). Planned inside this function with bitmap
-- scans and sorts off, the claim reads jobs_claim_idx in its order and
-- stops at the limit, which is the right plan for every backlog size.
CREATE FUNCTION claim_candidates(p_queue text, p_tasks text[], p_limit integer) RETURNS SETOF bigint
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

DO $$ BEGIN
  EXECUTE format('ALTER FUNCTION claim_candidates(text, text[], integer) SET search_path = %I, pg_temp', current_schema());
END $$;

-- Down Migration
DROP FUNCTION claim_candidates(text, text[], integer);
