-- Up Migration
-- The current definitions of two functions whose migrations were changed
-- after they were first committed (node-pg-migrate records a migration by
-- name, so a database that ran an earlier text of one kept it):
--
-- - workflow_job_state_changed(), from 1764820000000_workflow_revive_lock_order
--   (its lock pass was corrected three times for deadlocks between retries
--   and completions; a database migrated before kept the first text and
--   still deadlocked, which pgq retried after deadlock_timeout);
-- - claim_candidates_keyed(), from 1764790000000_claim_candidates_plpgsql
--   (made PL/pgSQL there after the migration's first text, so its plan is
--   cached per session before PostgreSQL 18).
--
-- On a database that ran the final texts this changes nothing. Migrations
-- are not edited once committed any more: test/migrate.test.ts pins each
-- file's checksum.
CREATE OR REPLACE FUNCTION workflow_job_state_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  ready bigint[];
  cancelled bigint[];
  x record;
  bad bigint;
  revivable bigint[];
  y record;
BEGIN
  IF NEW.state IN ('succeeded', 'failed', 'cancelled') THEN
    -- Everything this settling may change, locked first and in id order.
    PERFORM workflow_lock_dependents(CASE WHEN NEW.state = 'succeeded' THEN ARRAY[NEW.id] END,
                                     CASE WHEN NEW.state <> 'succeeded' THEN ARRAY[NEW.id] END);
    IF NEW.state <> 'succeeded' THEN
      WITH RECURSIVE doomed(id, by) AS (
        SELECT d.child_id, d.parent_id
          FROM job_dependencies d JOIN jobs c ON c.id = d.child_id
         WHERE d.parent_id = NEW.id AND c.state = 'blocked' AND c.on_parent_failure = 'cancel'
        UNION
        SELECT d.child_id, d.parent_id
          FROM doomed JOIN job_dependencies d ON d.parent_id = doomed.id JOIN jobs c ON c.id = d.child_id
         WHERE c.state = 'blocked' AND c.on_parent_failure = 'cancel'
      ), done AS (
        UPDATE jobs c
           SET state = 'cancelled', finished_at = now(), cancelled_by = doomed.by,
               errors = c.errors || jsonb_build_array(workflow_cancel_entry(NEW, c.attempts))
          FROM doomed
         WHERE c.id = doomed.id AND c.state = 'blocked' AND c.on_parent_failure = 'cancel'
        RETURNING c.id
      )
      SELECT array_agg(id) INTO cancelled FROM done;
      IF cancelled IS NOT NULL THEN
        PERFORM pg_notify('pgq:' || TG_TABLE_SCHEMA || ':done',
                          CASE WHEN length(array_to_string(cancelled, ',')) <= 7000 THEN array_to_string(cancelled, ',') ELSE '*' END);
      END IF;
    END IF;

    WITH counted AS (
      UPDATE jobs c
         SET pending_parents = c.pending_parents - 1
        FROM job_dependencies d
       WHERE d.parent_id = NEW.id AND c.id = d.child_id AND c.state = 'blocked'
         AND (NEW.state = 'succeeded' OR c.on_parent_failure = 'run')
      RETURNING c.id, c.pending_parents
    )
    SELECT array_agg(id) INTO ready FROM counted WHERE pending_parents = 0;

    IF ready IS NOT NULL THEN
      UPDATE jobs c
         SET state = 'available', run_at = now(),
             payload = CASE WHEN c.pass_results IN ('one', 'list') THEN workflow_job_input(c.id) ELSE c.payload END,
             meta = workflow_job_meta(c.id, c.meta)
       WHERE c.id = ANY (ready) AND c.state = 'blocked';
      PERFORM pg_notify('pgq:' || TG_TABLE_SCHEMA || ':jobs', q.queue)
         FROM (SELECT DISTINCT queue FROM jobs WHERE id = ANY (ready) AND state = 'available') AS q;
    END IF;
    RETURN NULL;
  END IF;

  -- NEW left failed or cancelled for a live state.
  -- The jobs it may revive (cancelled because of it), read without locks:
  -- the loop below locks each and checks again.
  WITH RECURSIVE revived(id) AS (
    SELECT c.id FROM job_dependencies d JOIN jobs c ON c.id = d.child_id
     WHERE d.parent_id = NEW.id AND c.state = 'cancelled' AND c.cancelled_by = NEW.id
    UNION
    SELECT c.id FROM revived r JOIN job_dependencies d ON d.parent_id = r.id JOIN jobs c ON c.id = d.child_id
     WHERE c.state = 'cancelled' AND c.cancelled_by = r.id
  )
  SELECT array_agg(id ORDER BY id) INTO revivable FROM revived;
  -- Everything the rest of this branch locks, locked first in one pass in
  -- id order, each row in the mode it will need: the jobs it revives (FOR
  -- UPDATE), the blocked run-anyway children of NEW and of those jobs,
  -- whose counts it raises (FOR NO KEY UPDATE), and the other parents of
  -- the revived jobs, which it reads (FOR SHARE). Workers settling a parent
  -- (then its blocked children), cancelWorkflow and the pruner lock in id
  -- order too. Locked as the statements below reach them (children first,
  -- parents one child at a time), a retry crossed them: it held a run-anyway
  -- child it had counted while it waited on a sibling parent whose
  -- completion waited on that child, and PostgreSQL aborted one (40P01).
  -- Only NEW itself, held by the statement that changed it, is out of order.
  FOR y IN
    SELECT c.id,
           c.id = ANY (coalesce(revivable, '{}')) AS revive,
           c.state = 'blocked' AND c.on_parent_failure = 'run'
             AND EXISTS (SELECT 1 FROM job_dependencies e
                          WHERE e.child_id = c.id AND (e.parent_id = NEW.id OR e.parent_id = ANY (coalesce(revivable, '{}')))) AS counted
      FROM jobs c
     WHERE c.id <> NEW.id
       AND (c.id IN (SELECT d.child_id FROM job_dependencies d WHERE d.parent_id = NEW.id OR d.parent_id = ANY (coalesce(revivable, '{}')))
            OR c.id IN (SELECT d.parent_id FROM job_dependencies d WHERE d.child_id = ANY (coalesce(revivable, '{}'))))
     ORDER BY c.id
  LOOP
    IF y.revive THEN
      PERFORM 1 FROM jobs c WHERE c.id = y.id FOR UPDATE;
    ELSIF y.counted THEN
      PERFORM 1 FROM jobs c WHERE c.id = y.id FOR NO KEY UPDATE;
    ELSIF y.id IN (SELECT d.parent_id FROM job_dependencies d WHERE d.child_id = ANY (coalesce(revivable, '{}'))) THEN
      PERFORM 1 FROM jobs c WHERE c.id = y.id FOR SHARE;
    END IF;
  END LOOP;

  UPDATE jobs c
     SET pending_parents = c.pending_parents + 1
    FROM job_dependencies d
   WHERE d.parent_id = NEW.id AND c.id = d.child_id AND c.state = 'blocked' AND c.on_parent_failure = 'run';

  FOR x IN SELECT r.id FROM unnest(revivable) AS r(id) ORDER BY r.id
  LOOP
    PERFORM 1 FROM jobs c WHERE c.id = x.id AND c.state = 'cancelled' FOR UPDATE;
    CONTINUE WHEN NOT FOUND;
    PERFORM 1 FROM job_dependencies d JOIN jobs p ON p.id = d.parent_id
     WHERE d.child_id = x.id ORDER BY p.id FOR SHARE OF p;
    SELECT p.id INTO bad FROM job_dependencies d JOIN jobs p ON p.id = d.parent_id
     WHERE d.child_id = x.id AND p.state IN ('failed', 'cancelled') ORDER BY p.id LIMIT 1;
    IF bad IS NOT NULL THEN
      UPDATE jobs c
         SET cancelled_by = bad,
             errors = c.errors || jsonb_build_array(workflow_cancel_entry(p, c.attempts))
        FROM jobs p
       WHERE c.id = x.id AND p.id = bad AND c.cancelled_by IS DISTINCT FROM bad;
    ELSE
      UPDATE jobs c
         SET state = 'blocked', finished_at = NULL, cancelled_by = NULL,
             pending_parents = (SELECT count(*) FROM job_dependencies d JOIN jobs p ON p.id = d.parent_id
                                 WHERE d.child_id = c.id AND p.state <> 'succeeded')
       WHERE c.id = x.id;
      UPDATE jobs c
         SET pending_parents = c.pending_parents + 1
        FROM job_dependencies d
       WHERE d.parent_id = x.id AND c.id = d.child_id AND c.state = 'blocked' AND c.on_parent_failure = 'run';
    END IF;
  END LOOP;
  RETURN NULL;
END
$$;
DO $$
BEGIN
  EXECUTE format('ALTER FUNCTION workflow_job_state_changed() SET search_path = %I, pg_temp', current_schema());
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
  EXECUTE format('ALTER FUNCTION claim_candidates_keyed(text, text[], integer, text[]) SET search_path = %I, pg_temp', current_schema());
END $$;

-- Down Migration
-- Nothing to undo: the definitions above are those of the migrations they repeat.
