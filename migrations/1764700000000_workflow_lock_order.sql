-- Up Migration
-- Lock order for workflow settling. A parent that finishes changes jobs
-- waiting on it (its blocked children, and when it fails or is cancelled
-- their blocked descendants too). Row triggers reach them parent by parent,
-- in whatever order a plan visits them, so two statements settling parents
-- that share children could lock them in crossing orders and deadlock: the
-- batch [p1, p2] reaching c2 (a child of p1) before c1 (a child of p2), the
-- batch [p3, p4] reaching c1 before c2.
--
-- The rule from now on, for every statement that settles workflow jobs:
-- first the settling jobs themselves (the statement's own UPDATE), then
-- every job that settling may change, all at once and in id order
-- (workflow_lock_dependents). The completer's complete and fail statements,
-- the rescuer and bulk cancel call it for the whole statement after their
-- UPDATE and before the row triggers run; the trigger calls it again for its
-- own parent (rows already held cost nothing to lock again), which keeps the
-- order for single-row changes made anywhere else (cancelJob, plain SQL).

-- Locks, in id order, the blocked jobs that settling these parents may
-- change: the children of `succeeded` (their counters drop), and for
-- `failed` (failed or cancelled) the children plus, through blocked
-- children that would be cancelled with them, their descendants. Returns
-- how many it locked. Either list may be null.
--
-- Written as one lookup per level, each `= ANY (array)` on an index, so the
-- plan PL/pgSQL caches stays a few index probes however many jobs are
-- blocked (a recursive CTE joined to jobs got a generic plan that scanned
-- every blocked job on each call).
CREATE FUNCTION workflow_lock_dependents(succeeded bigint[], failed bigint[]) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
  reached bigint[];
  frontier bigint[] := failed;
  children bigint[];
  n integer;
BEGIN
  IF coalesce(cardinality(succeeded), 0) = 0 AND coalesce(cardinality(failed), 0) = 0 THEN
    RETURN 0;
  END IF;
  SELECT array_agg(d.child_id) INTO reached FROM job_dependencies d WHERE d.parent_id = ANY (succeeded);
  WHILE frontier IS NOT NULL LOOP
    SELECT array_agg(DISTINCT d.child_id) INTO children FROM job_dependencies d WHERE d.parent_id = ANY (frontier);
    EXIT WHEN children IS NULL;
    reached := reached || children;
    SELECT array_agg(c.id) INTO frontier FROM jobs c
     WHERE c.id = ANY (children) AND c.state = 'blocked' AND c.on_parent_failure = 'cancel';
  END LOOP;
  IF reached IS NULL THEN
    RETURN 0;
  END IF;
  SELECT count(*) INTO n
    FROM (SELECT c.id FROM jobs c
           WHERE c.id = ANY (reached) AND c.state = 'blocked'
           ORDER BY c.id
             FOR UPDATE OF c) AS locked;
  RETURN n;
END
$$;
COMMENT ON FUNCTION workflow_lock_dependents(bigint[], bigint[]) IS 'Locks in id order the blocked workflow jobs that settling these parents (succeeded, or failed/cancelled) may change; statements that settle several parents call it so that they never deadlock.';

CREATE OR REPLACE FUNCTION workflow_job_state_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  ready bigint[];
  cancelled bigint[];
  x record;
  bad bigint;
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
             payload = CASE WHEN c.pass_results IN ('one', 'list') THEN workflow_job_input(c.id) ELSE c.payload END
       WHERE c.id = ANY (ready) AND c.state = 'blocked';
      PERFORM pg_notify('pgq:' || TG_TABLE_SCHEMA || ':jobs', q.queue)
         FROM (SELECT DISTINCT queue FROM jobs WHERE id = ANY (ready) AND state = 'available') AS q;
    END IF;
    RETURN NULL;
  END IF;

  -- NEW left failed or cancelled for a live state.
  UPDATE jobs c
     SET pending_parents = c.pending_parents + 1
    FROM job_dependencies d
   WHERE d.parent_id = NEW.id AND c.id = d.child_id AND c.state = 'blocked' AND c.on_parent_failure = 'run';

  FOR x IN
    WITH RECURSIVE revived(id) AS (
      SELECT c.id FROM job_dependencies d JOIN jobs c ON c.id = d.child_id
       WHERE d.parent_id = NEW.id AND c.state = 'cancelled' AND c.cancelled_by = NEW.id
      UNION
      SELECT c.id FROM revived r JOIN job_dependencies d ON d.parent_id = r.id JOIN jobs c ON c.id = d.child_id
       WHERE c.state = 'cancelled' AND c.cancelled_by = r.id
    )
    SELECT id FROM revived ORDER BY id
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
  EXECUTE format('ALTER FUNCTION workflow_lock_dependents(bigint[], bigint[]) SET search_path = %I, pg_temp', current_schema());
  EXECUTE format('ALTER FUNCTION workflow_job_state_changed() SET search_path = %I, pg_temp', current_schema());
END
$$;

-- Down Migration
CREATE OR REPLACE FUNCTION workflow_job_state_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  ready bigint[];
  cancelled bigint[];
  x record;
  bad bigint;
BEGIN
  IF NEW.state IN ('succeeded', 'failed', 'cancelled') THEN
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
             payload = CASE WHEN c.pass_results IN ('one', 'list') THEN workflow_job_input(c.id) ELSE c.payload END
       WHERE c.id = ANY (ready) AND c.state = 'blocked';
      PERFORM pg_notify('pgq:' || TG_TABLE_SCHEMA || ':jobs', q.queue)
         FROM (SELECT DISTINCT queue FROM jobs WHERE id = ANY (ready) AND state = 'available') AS q;
    END IF;
    RETURN NULL;
  END IF;

  -- NEW left failed or cancelled for a live state.
  UPDATE jobs c
     SET pending_parents = c.pending_parents + 1
    FROM job_dependencies d
   WHERE d.parent_id = NEW.id AND c.id = d.child_id AND c.state = 'blocked' AND c.on_parent_failure = 'run';

  FOR x IN
    WITH RECURSIVE revived(id) AS (
      SELECT c.id FROM job_dependencies d JOIN jobs c ON c.id = d.child_id
       WHERE d.parent_id = NEW.id AND c.state = 'cancelled' AND c.cancelled_by = NEW.id
      UNION
      SELECT c.id FROM revived r JOIN job_dependencies d ON d.parent_id = r.id JOIN jobs c ON c.id = d.child_id
       WHERE c.state = 'cancelled' AND c.cancelled_by = r.id
    )
    SELECT id FROM revived ORDER BY id
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
DROP FUNCTION workflow_lock_dependents(bigint[], bigint[]);
