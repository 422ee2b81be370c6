-- Up Migration
-- The candidates of a limited queue's claim (concurrency, rate or per-key
-- limits), planned the same way whatever the statistics say, as
-- claim_candidates (migration 1764730000000) does for the plain claim.
--
-- On a jobs table that has never been analysed, a limited queue's head was
-- read with a bitmap scan and a sort of the whole backlog: with a million
-- jobs waiting, a limited claim of 500 took about 530 ms instead of 10.
-- A queue limited by concurrency or rate takes its rows straight through
-- claim_candidates; a queue with a per-key limit reads its candidates here,
-- without locking: the keys already at their limit are left out of the
-- scan, and the claim locks the candidates it chooses.
CREATE FUNCTION claim_candidates_keyed(p_queue text, p_tasks text[], p_limit integer, p_full_keys text[])
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
  EXECUTE format('ALTER FUNCTION claim_candidates_keyed(text, text[], integer, text[]) SET search_path = %I, pg_temp', current_schema());
END $$;

-- Down Migration
DROP FUNCTION claim_candidates_keyed(text, text[], integer, text[]);
