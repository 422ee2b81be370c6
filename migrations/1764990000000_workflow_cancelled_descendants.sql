-- Up Migration
-- The cascade of a failed or cancelled workflow job finds the blocked
-- descendants it cancels in a function of its own,
-- workflow_cancelled_descendants, with one plan per session
-- (force_generic_plan) and no sequential scans, as workflow_has_blocked_child
-- (1764980000000). The walk is the one the trigger ran inline (level by
-- level, each lookup by id); inline, PostgreSQL planned its two statements
-- afresh at every level, each planning the jobs table with its ten indexes:
-- cancelling the first step of a 10,000-step chain ran 10,000 levels in
-- 8.9-15.7 s (2,500 steps 1.2-1.5 s, 5,000 3.1-3.9 s); with one plan, 2.7-5.1 s
-- against 11.7-13.3 s in the same minutes, on a host loaded with other
-- work. A step failing above a group of 20,000 and its chord's callback
-- (20,001 cancelled) took 1.3-2.2 s, as before (1.3-2.0 s).
--
-- OR REPLACE: run again (its pgq_migrations row deleted), it succeeds.
CREATE OR REPLACE FUNCTION workflow_cancelled_descendants(parent bigint, OUT ids bigint[], OUT bys bigint[]) LANGUAGE plpgsql AS $$
DECLARE
  frontier bigint[] := ARRAY[parent];
  children bigint[];
  child_bys bigint[];
  level_ids bigint[];
  level_bys bigint[];
BEGIN
  LOOP
    -- The level's children, each with the smallest of its parents on the
    -- level (the one it is cancelled by), the edges read once, one parent
    -- at a time (OFFSET 0 keeps each lookup apart): as
    -- `d.parent_id = ANY (frontier)`, the plan made when the session first
    -- called this on a table of no more than ten edges read all of
    -- job_dependencies through its primary key at every level once the
    -- table had grown (a 5,000-step chain: 25 million rows read, 6.5 s,
    -- until the next ANALYZE); and a lookup of each child's parents on the
    -- level, `d.parent_id = ANY (frontier)` as a filter of the generic
    -- plan, checked every parent of a chord's callback against the whole
    -- level (20,000 x 20,000).
    SELECT array_agg(x.child_id ORDER BY x.child_id), array_agg(x.by ORDER BY x.child_id) INTO children, child_bys
      FROM (SELECT e.child_id, min(f.id) AS by
              FROM unnest(frontier) AS f(id)
              CROSS JOIN LATERAL (SELECT d.child_id FROM job_dependencies d WHERE d.parent_id = f.id OFFSET 0) e
             GROUP BY e.child_id) x;
    EXIT WHEN children IS NULL;
    -- Those blocked in cancel mode and not found before, each read by id.
    SELECT array_agg(j.id ORDER BY j.id), array_agg(ch.by ORDER BY j.id) INTO level_ids, level_bys
      FROM unnest(children, child_bys) AS ch(id, by)
      CROSS JOIN LATERAL (SELECT c.id FROM jobs c
                           WHERE c.id = ch.id AND (c.state = 'blocked') IS TRUE AND c.on_parent_failure = 'cancel'
                           OFFSET 0) j
     WHERE NOT ch.id = ANY (coalesce(ids, '{}'));
    EXIT WHEN level_ids IS NULL;
    ids := ids || level_ids;
    bys := bys || level_bys;
    frontier := level_ids;
  END LOOP;
END
$$;
DO $$
BEGIN
  EXECUTE format('ALTER FUNCTION workflow_cancelled_descendants(bigint) SET search_path = %I, pg_temp', current_schema());
END
$$;
ALTER FUNCTION workflow_cancelled_descendants(bigint) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION workflow_cancelled_descendants(bigint) SET enable_seqscan = off;
COMMENT ON FUNCTION workflow_cancelled_descendants(bigint) IS 'The blocked cancel-mode descendants a failed or cancelled workflow job cancels, level by level, each with the parent it is cancelled by (the smallest of its parents on the level before).';

CREATE OR REPLACE FUNCTION workflow_job_state_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  ready bigint[];
  cancelled bigint[];
  frontier bigint[];
  children bigint[];
  level_ids bigint[];
  level_bys bigint[];
  doomed_ids bigint[];
  doomed_bys bigint[];
  kids bigint[];
  their_parents bigint[];
  x record;
  bad bigint;
  revivable bigint[];
  y record;
BEGIN
  IF NEW.state IN ('succeeded', 'failed', 'cancelled') THEN
    -- Settling changes blocked children only (and, through them, their
    -- blocked descendants): with none, nothing below would lock or change
    -- anything. A cancelWorkflow cancels every live job of its workflow in
    -- one statement, so this runs for each of them with their children
    -- already cancelled.
    IF NOT workflow_has_blocked_child(NEW.id) THEN
      RETURN NULL;
    END IF;
    -- Everything this settling may change, locked first and in id order.
    PERFORM workflow_lock_dependents(CASE WHEN NEW.state = 'succeeded' THEN ARRAY[NEW.id] END,
                                     CASE WHEN NEW.state <> 'succeeded' THEN ARRAY[NEW.id] END);
    IF NEW.state <> 'succeeded' THEN
      -- The blocked cancel-mode descendants (workflow_cancelled_descendants),
      -- then cancelled in one statement (so that the row triggers it fires
      -- find their own descendants settled).
      SELECT d.ids, d.bys INTO doomed_ids, doomed_bys FROM workflow_cancelled_descendants(NEW.id) AS d;
      IF doomed_ids IS NOT NULL THEN
        WITH doomed AS (
          SELECT t.id, t.by FROM unnest(doomed_ids, doomed_bys) AS t(id, by)
        ), done AS (
          UPDATE jobs c
             SET state = 'cancelled', finished_at = now(), cancelled_by = doomed.by,
                 errors = c.errors || jsonb_build_array(workflow_cancel_entry(NEW, c.attempts))
            FROM doomed
           WHERE c.id = doomed.id AND (c.state = 'blocked') IS TRUE AND c.on_parent_failure = 'cancel'
          RETURNING c.id
        )
        SELECT array_agg(id) INTO cancelled FROM done;
      END IF;
      IF cancelled IS NOT NULL THEN
        PERFORM pg_notify('pgq:' || TG_TABLE_SCHEMA || ':done',
                          CASE WHEN length(array_to_string(cancelled, ',')) <= 7000 THEN array_to_string(cancelled, ',') ELSE '*' END);
      END IF;
    END IF;

    WITH counted AS (
      UPDATE jobs c
         SET pending_parents = c.pending_parents - 1
       WHERE c.id = ANY (ARRAY(SELECT d.child_id FROM job_dependencies d WHERE d.parent_id = NEW.id))
         AND (c.state = 'blocked') IS TRUE
         AND (NEW.state = 'succeeded' OR c.on_parent_failure = 'run')
      RETURNING c.id, c.pending_parents
    )
    SELECT array_agg(id) INTO ready FROM counted WHERE pending_parents = 0;

    IF ready IS NOT NULL THEN
      UPDATE jobs c
         SET state = 'available', run_at = now(),
             payload = CASE WHEN c.pass_results IN ('one', 'list') THEN workflow_job_input(c.id) ELSE c.payload END,
             meta = workflow_job_meta(c.id, c.meta)
       WHERE c.id = ANY (ready) AND (c.state = 'blocked') IS TRUE;
      PERFORM pg_notify('pgq:' || TG_TABLE_SCHEMA || ':jobs', q.queue)
         FROM (SELECT DISTINCT queue FROM jobs WHERE id = ANY (ready) AND (state = 'available') IS TRUE) AS q;
    END IF;
    RETURN NULL;
  END IF;

  -- NEW left failed or cancelled for a live state.
  -- The jobs it may revive (cancelled because of it), read without locks:
  -- the loop below locks each and checks again. Found level by level, each
  -- lookup by id (a recursive CTE read every cancelled job once per level).
  frontier := ARRAY[NEW.id];
  LOOP
    SELECT array_agg(DISTINCT c.id) INTO level_ids FROM jobs c
     WHERE c.id = ANY (ARRAY(SELECT d.child_id FROM job_dependencies d WHERE d.parent_id = ANY (frontier)))
       AND (c.state = 'cancelled') IS TRUE AND c.cancelled_by = ANY (frontier)
       AND EXISTS (SELECT 1 FROM job_dependencies e WHERE e.child_id = c.id AND e.parent_id = c.cancelled_by)
       AND NOT c.id = ANY (coalesce(revivable, '{}'));
    EXIT WHEN level_ids IS NULL;
    revivable := revivable || level_ids;
    frontier := level_ids;
  END LOOP;
  SELECT array_agg(r.id ORDER BY r.id) INTO revivable FROM unnest(revivable) AS r(id);
  -- Everything the rest of this branch locks, locked first in one pass in
  -- id order, each row in the mode it will need: the jobs it revives (FOR
  -- UPDATE), the blocked run-anyway children of NEW and of those jobs,
  -- whose counts it raises (FOR NO KEY UPDATE), and the other parents of
  -- the revived jobs, which it reads (FOR SHARE) and, those that have not
  -- succeeded, may write (FOR NO KEY UPDATE). Workers settling a parent
  -- (then its blocked children), cancelWorkflow and the pruner lock in id
  -- order too. Locked as the statements below reach them (children first,
  -- parents one child at a time), a retry crossed them: it held a run-anyway
  -- child it had counted while it waited on a sibling parent whose
  -- completion waited on that child, and PostgreSQL aborted one (40P01).
  -- Only NEW itself, held by the statement that changed it, is out of order.
  -- The children of NEW and of those jobs, and the parents of those jobs,
  -- read once (a lookup of the parents for every row read them all again).
  kids := ARRAY(SELECT d.child_id FROM job_dependencies d WHERE d.parent_id = ANY (array_prepend(NEW.id, coalesce(revivable, '{}'))));
  their_parents := ARRAY(SELECT d.parent_id FROM job_dependencies d WHERE d.child_id = ANY (coalesce(revivable, '{}')));
  FOR y IN
    SELECT c.id,
           c.id = ANY (coalesce(revivable, '{}')) AS revive,
           c.state = 'blocked' AND c.on_parent_failure = 'run'
             AND EXISTS (SELECT 1 FROM job_dependencies e
                          WHERE e.child_id = c.id AND (e.parent_id = NEW.id OR e.parent_id = ANY (coalesce(revivable, '{}')))) AS counted,
           c.id = ANY (their_parents) AS shared,
           c.state = 'succeeded' AS succeeded
      FROM jobs c
     WHERE c.id <> NEW.id AND c.id = ANY (kids || their_parents)
     ORDER BY c.id
  LOOP
    IF y.revive THEN
      PERFORM 1 FROM jobs c WHERE c.id = y.id FOR UPDATE;
    ELSIF y.counted OR (y.shared AND NOT y.succeeded) THEN
      PERFORM 1 FROM jobs c WHERE c.id = y.id FOR NO KEY UPDATE;
    ELSIF y.shared THEN
      PERFORM 1 FROM jobs c WHERE c.id = y.id FOR SHARE;
    END IF;
  END LOOP;

  UPDATE jobs c
     SET pending_parents = c.pending_parents + 1
   WHERE c.id = ANY (ARRAY(SELECT d.child_id FROM job_dependencies d WHERE d.parent_id = NEW.id))
     AND (c.state = 'blocked') IS TRUE AND c.on_parent_failure = 'run';

  FOR x IN SELECT r.id FROM unnest(revivable) AS r(id) ORDER BY r.id
  LOOP
    PERFORM 1 FROM jobs c WHERE c.id = x.id AND c.state = 'cancelled' FOR UPDATE;
    CONTINUE WHEN NOT FOUND;
    PERFORM 1 FROM job_dependencies d JOIN jobs p ON p.id = d.parent_id
     WHERE d.child_id = x.id ORDER BY p.id FOR SHARE OF p;
    SELECT p.id INTO bad FROM job_dependencies d JOIN jobs p ON p.id = d.parent_id
     WHERE d.child_id = x.id AND (p.state IN ('failed', 'cancelled')) IS TRUE ORDER BY p.id DESC LIMIT 1;
    IF bad IS NOT NULL THEN
      UPDATE jobs c
         SET cancelled_by = bad,
             errors = c.errors || jsonb_build_array(workflow_cancel_entry(p, c.attempts))
        FROM jobs p
       WHERE c.id = x.id AND p.id = bad AND c.cancelled_by IS DISTINCT FROM bad;
      IF FOUND THEN
        -- Written, not only locked (a no-op update): a retry of that parent
        -- which began meanwhile and waited for this transaction, under a
        -- default isolation of repeatable read, went on in its older
        -- snapshot, where the dependent did not name it yet, and left it
        -- cancelled with every parent live. Written, its lock ends in
        -- 40001 and it runs again, and revives the dependent.
        UPDATE jobs p SET id = p.id WHERE p.id = bad;
      END IF;
    ELSE
      UPDATE jobs c
         SET state = 'blocked', finished_at = NULL, cancelled_by = NULL,
             pending_parents = (SELECT count(*) FROM job_dependencies d JOIN jobs p ON p.id = d.parent_id
                                 WHERE d.child_id = c.id AND (p.state <> 'succeeded') IS TRUE)
       WHERE c.id = x.id;
      -- The parents it now waits for, written, not only locked (a no-op
      -- update; NEW and the jobs revived here are written already): a
      -- worker's outcome for one of them which began meanwhile and waited
      -- for this transaction, under a default isolation of repeatable read,
      -- went on in its older snapshot, where this job was still cancelled:
      -- a failure did not cancel it, a success did not count it down, and
      -- it stayed blocked for good. Written, its lock ends in 40001 and the
      -- outcome is written again, from a snapshot in which this job waits.
      UPDATE jobs p SET id = p.id
       WHERE p.id = ANY (ARRAY(SELECT d.parent_id FROM job_dependencies d WHERE d.child_id = x.id))
         AND p.id <> NEW.id AND NOT p.id = ANY (revivable) AND (p.state <> 'succeeded') IS TRUE;
      UPDATE jobs c
         SET pending_parents = c.pending_parents + 1
       WHERE c.id = ANY (ARRAY(SELECT d.child_id FROM job_dependencies d WHERE d.parent_id = x.id))
         AND (c.state = 'blocked') IS TRUE AND c.on_parent_failure = 'run';
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

-- Down Migration
CREATE OR REPLACE FUNCTION workflow_job_state_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  ready bigint[];
  cancelled bigint[];
  frontier bigint[];
  children bigint[];
  level_ids bigint[];
  level_bys bigint[];
  doomed_ids bigint[];
  doomed_bys bigint[];
  kids bigint[];
  their_parents bigint[];
  x record;
  bad bigint;
  revivable bigint[];
  y record;
BEGIN
  IF NEW.state IN ('succeeded', 'failed', 'cancelled') THEN
    -- Settling changes blocked children only (and, through them, their
    -- blocked descendants): with none, nothing below would lock or change
    -- anything. A cancelWorkflow cancels every live job of its workflow in
    -- one statement, so this runs for each of them with their children
    -- already cancelled.
    IF NOT workflow_has_blocked_child(NEW.id) THEN
      RETURN NULL;
    END IF;
    -- Everything this settling may change, locked first and in id order.
    PERFORM workflow_lock_dependents(CASE WHEN NEW.state = 'succeeded' THEN ARRAY[NEW.id] END,
                                     CASE WHEN NEW.state <> 'succeeded' THEN ARRAY[NEW.id] END);
    IF NEW.state <> 'succeeded' THEN
      -- The blocked cancel-mode descendants, found level by level, each lookup
      -- `= ANY (array)` on an index, then cancelled in one statement (so that
      -- the row triggers it fires find their own descendants settled). A
      -- recursive CTE joined to jobs was planned to read every blocked job
      -- once per level: a chain's cascade took time growing with the square
      -- of its length (14 s for 3,000 steps, minutes for 10,000).
      frontier := ARRAY[NEW.id];
      LOOP
        SELECT array_agg(DISTINCT d.child_id) INTO children FROM job_dependencies d WHERE d.parent_id = ANY (frontier);
        EXIT WHEN children IS NULL;
        SELECT array_agg(c.id ORDER BY c.id), array_agg(p.by ORDER BY c.id) INTO level_ids, level_bys
          FROM jobs c
          CROSS JOIN LATERAL (SELECT min(d.parent_id) AS by FROM job_dependencies d
                               WHERE d.child_id = c.id AND d.parent_id = ANY (frontier)) p
         WHERE c.id = ANY (children) AND (c.state = 'blocked') IS TRUE AND c.on_parent_failure = 'cancel'
           AND NOT c.id = ANY (coalesce(doomed_ids, '{}'));
        EXIT WHEN level_ids IS NULL;
        doomed_ids := doomed_ids || level_ids;
        doomed_bys := doomed_bys || level_bys;
        frontier := level_ids;
      END LOOP;
      IF doomed_ids IS NOT NULL THEN
        WITH doomed AS (
          SELECT t.id, t.by FROM unnest(doomed_ids, doomed_bys) AS t(id, by)
        ), done AS (
          UPDATE jobs c
             SET state = 'cancelled', finished_at = now(), cancelled_by = doomed.by,
                 errors = c.errors || jsonb_build_array(workflow_cancel_entry(NEW, c.attempts))
            FROM doomed
           WHERE c.id = doomed.id AND (c.state = 'blocked') IS TRUE AND c.on_parent_failure = 'cancel'
          RETURNING c.id
        )
        SELECT array_agg(id) INTO cancelled FROM done;
      END IF;
      IF cancelled IS NOT NULL THEN
        PERFORM pg_notify('pgq:' || TG_TABLE_SCHEMA || ':done',
                          CASE WHEN length(array_to_string(cancelled, ',')) <= 7000 THEN array_to_string(cancelled, ',') ELSE '*' END);
      END IF;
    END IF;

    WITH counted AS (
      UPDATE jobs c
         SET pending_parents = c.pending_parents - 1
       WHERE c.id = ANY (ARRAY(SELECT d.child_id FROM job_dependencies d WHERE d.parent_id = NEW.id))
         AND (c.state = 'blocked') IS TRUE
         AND (NEW.state = 'succeeded' OR c.on_parent_failure = 'run')
      RETURNING c.id, c.pending_parents
    )
    SELECT array_agg(id) INTO ready FROM counted WHERE pending_parents = 0;

    IF ready IS NOT NULL THEN
      UPDATE jobs c
         SET state = 'available', run_at = now(),
             payload = CASE WHEN c.pass_results IN ('one', 'list') THEN workflow_job_input(c.id) ELSE c.payload END,
             meta = workflow_job_meta(c.id, c.meta)
       WHERE c.id = ANY (ready) AND (c.state = 'blocked') IS TRUE;
      PERFORM pg_notify('pgq:' || TG_TABLE_SCHEMA || ':jobs', q.queue)
         FROM (SELECT DISTINCT queue FROM jobs WHERE id = ANY (ready) AND (state = 'available') IS TRUE) AS q;
    END IF;
    RETURN NULL;
  END IF;

  -- NEW left failed or cancelled for a live state.
  -- The jobs it may revive (cancelled because of it), read without locks:
  -- the loop below locks each and checks again. Found level by level, each
  -- lookup by id (a recursive CTE read every cancelled job once per level).
  frontier := ARRAY[NEW.id];
  LOOP
    SELECT array_agg(DISTINCT c.id) INTO level_ids FROM jobs c
     WHERE c.id = ANY (ARRAY(SELECT d.child_id FROM job_dependencies d WHERE d.parent_id = ANY (frontier)))
       AND (c.state = 'cancelled') IS TRUE AND c.cancelled_by = ANY (frontier)
       AND EXISTS (SELECT 1 FROM job_dependencies e WHERE e.child_id = c.id AND e.parent_id = c.cancelled_by)
       AND NOT c.id = ANY (coalesce(revivable, '{}'));
    EXIT WHEN level_ids IS NULL;
    revivable := revivable || level_ids;
    frontier := level_ids;
  END LOOP;
  SELECT array_agg(r.id ORDER BY r.id) INTO revivable FROM unnest(revivable) AS r(id);
  -- Everything the rest of this branch locks, locked first in one pass in
  -- id order, each row in the mode it will need: the jobs it revives (FOR
  -- UPDATE), the blocked run-anyway children of NEW and of those jobs,
  -- whose counts it raises (FOR NO KEY UPDATE), and the other parents of
  -- the revived jobs, which it reads (FOR SHARE) and, those that have not
  -- succeeded, may write (FOR NO KEY UPDATE). Workers settling a parent
  -- (then its blocked children), cancelWorkflow and the pruner lock in id
  -- order too. Locked as the statements below reach them (children first,
  -- parents one child at a time), a retry crossed them: it held a run-anyway
  -- child it had counted while it waited on a sibling parent whose
  -- completion waited on that child, and PostgreSQL aborted one (40P01).
  -- Only NEW itself, held by the statement that changed it, is out of order.
  -- The children of NEW and of those jobs, and the parents of those jobs,
  -- read once (a lookup of the parents for every row read them all again).
  kids := ARRAY(SELECT d.child_id FROM job_dependencies d WHERE d.parent_id = ANY (array_prepend(NEW.id, coalesce(revivable, '{}'))));
  their_parents := ARRAY(SELECT d.parent_id FROM job_dependencies d WHERE d.child_id = ANY (coalesce(revivable, '{}')));
  FOR y IN
    SELECT c.id,
           c.id = ANY (coalesce(revivable, '{}')) AS revive,
           c.state = 'blocked' AND c.on_parent_failure = 'run'
             AND EXISTS (SELECT 1 FROM job_dependencies e
                          WHERE e.child_id = c.id AND (e.parent_id = NEW.id OR e.parent_id = ANY (coalesce(revivable, '{}')))) AS counted,
           c.id = ANY (their_parents) AS shared,
           c.state = 'succeeded' AS succeeded
      FROM jobs c
     WHERE c.id <> NEW.id AND c.id = ANY (kids || their_parents)
     ORDER BY c.id
  LOOP
    IF y.revive THEN
      PERFORM 1 FROM jobs c WHERE c.id = y.id FOR UPDATE;
    ELSIF y.counted OR (y.shared AND NOT y.succeeded) THEN
      PERFORM 1 FROM jobs c WHERE c.id = y.id FOR NO KEY UPDATE;
    ELSIF y.shared THEN
      PERFORM 1 FROM jobs c WHERE c.id = y.id FOR SHARE;
    END IF;
  END LOOP;

  UPDATE jobs c
     SET pending_parents = c.pending_parents + 1
   WHERE c.id = ANY (ARRAY(SELECT d.child_id FROM job_dependencies d WHERE d.parent_id = NEW.id))
     AND (c.state = 'blocked') IS TRUE AND c.on_parent_failure = 'run';

  FOR x IN SELECT r.id FROM unnest(revivable) AS r(id) ORDER BY r.id
  LOOP
    PERFORM 1 FROM jobs c WHERE c.id = x.id AND c.state = 'cancelled' FOR UPDATE;
    CONTINUE WHEN NOT FOUND;
    PERFORM 1 FROM job_dependencies d JOIN jobs p ON p.id = d.parent_id
     WHERE d.child_id = x.id ORDER BY p.id FOR SHARE OF p;
    SELECT p.id INTO bad FROM job_dependencies d JOIN jobs p ON p.id = d.parent_id
     WHERE d.child_id = x.id AND (p.state IN ('failed', 'cancelled')) IS TRUE ORDER BY p.id DESC LIMIT 1;
    IF bad IS NOT NULL THEN
      UPDATE jobs c
         SET cancelled_by = bad,
             errors = c.errors || jsonb_build_array(workflow_cancel_entry(p, c.attempts))
        FROM jobs p
       WHERE c.id = x.id AND p.id = bad AND c.cancelled_by IS DISTINCT FROM bad;
      IF FOUND THEN
        -- Written, not only locked (a no-op update): a retry of that parent
        -- which began meanwhile and waited for this transaction, under a
        -- default isolation of repeatable read, went on in its older
        -- snapshot, where the dependent did not name it yet, and left it
        -- cancelled with every parent live. Written, its lock ends in
        -- 40001 and it runs again, and revives the dependent.
        UPDATE jobs p SET id = p.id WHERE p.id = bad;
      END IF;
    ELSE
      UPDATE jobs c
         SET state = 'blocked', finished_at = NULL, cancelled_by = NULL,
             pending_parents = (SELECT count(*) FROM job_dependencies d JOIN jobs p ON p.id = d.parent_id
                                 WHERE d.child_id = c.id AND (p.state <> 'succeeded') IS TRUE)
       WHERE c.id = x.id;
      -- The parents it now waits for, written, not only locked (a no-op
      -- update; NEW and the jobs revived here are written already): a
      -- worker's outcome for one of them which began meanwhile and waited
      -- for this transaction, under a default isolation of repeatable read,
      -- went on in its older snapshot, where this job was still cancelled:
      -- a failure did not cancel it, a success did not count it down, and
      -- it stayed blocked for good. Written, its lock ends in 40001 and the
      -- outcome is written again, from a snapshot in which this job waits.
      UPDATE jobs p SET id = p.id
       WHERE p.id = ANY (ARRAY(SELECT d.parent_id FROM job_dependencies d WHERE d.child_id = x.id))
         AND p.id <> NEW.id AND NOT p.id = ANY (revivable) AND (p.state <> 'succeeded') IS TRUE;
      UPDATE jobs c
         SET pending_parents = c.pending_parents + 1
       WHERE c.id = ANY (ARRAY(SELECT d.child_id FROM job_dependencies d WHERE d.parent_id = x.id))
         AND (c.state = 'blocked') IS TRUE AND c.on_parent_failure = 'run';
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

DROP FUNCTION workflow_cancelled_descendants(bigint);
