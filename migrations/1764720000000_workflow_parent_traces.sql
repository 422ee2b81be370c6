-- Up Migration
-- Workflow steps link to their parents' attempts. pgq/otel records the trace
-- context of a workflow job's `process` span in its meta, written with the
-- attempt's outcome (ctx.recordMeta): `pgq.process` = {traceparent,
-- tracestate?, attempt}. When a step unblocks, the trigger copies the
-- contexts of the parent attempts that settled it into the step's meta as
-- `pgq.parents`, and its own `process` span links to each of them.
--
-- Only the trigger's unblocking UPDATE changes (one more column set, by the
-- function below); the rest of its body is the one of
-- migrations/1764700000000_workflow_lock_order.sql. Ordinary jobs pay
-- nothing: the trigger never runs for them.

-- The meta of a step about to unblock: its own, with `pgq.parents` set to
-- the contexts its parents recorded, in parent id order (at most 128, the
-- OpenTelemetry SDK's default limit of links per span), or removed when none
-- did (a step unblocked again after a retry forgets earlier ones). A parent
-- counts when it settled through an attempt that recorded its context: it
-- succeeded, or failed (a step with onParentFailure('run')), and its
-- `pgq.process.attempt` is its last attempt (a failure the rescuer wrote,
-- or a cancellation, recorded nothing for that attempt).
CREATE FUNCTION workflow_job_meta(child_id bigint, child_meta jsonb) RETURNS jsonb LANGUAGE sql STABLE AS $$
  SELECT CASE WHEN l.parents IS NULL THEN child_meta - 'pgq.parents'
              ELSE child_meta || jsonb_build_object('pgq.parents', l.parents) END
    FROM (SELECT jsonb_agg(x.entry ORDER BY x.parent_id) AS parents
            FROM (SELECT d.parent_id,
                         (p.meta -> 'pgq.process') || jsonb_build_object('jobId', p.id::text, 'step', p.workflow_step) AS entry
                    FROM job_dependencies d JOIN jobs p ON p.id = d.parent_id
                   WHERE d.child_id = workflow_job_meta.child_id
                     AND p.state IN ('succeeded', 'failed')
                     AND jsonb_typeof(p.meta -> 'pgq.process') = 'object'
                     AND p.meta -> 'pgq.process' -> 'attempt' = to_jsonb(p.attempts)
                   ORDER BY d.parent_id
                   LIMIT 128) AS x) AS l
$$;
COMMENT ON FUNCTION workflow_job_meta(bigint, jsonb) IS 'The meta of a workflow job as it unblocks: pgq.parents set to the trace contexts (pgq.process) its parents'' settling attempts recorded.';

-- meta is no longer written at enqueue only.
COMMENT ON COLUMN jobs.meta IS 'JSON object of metadata written at enqueue (the meta option and middleware): W3C trace context (traceparent, tracestate), request or tenant ids. Not validated by the task schema; handlers read it in ctx.job.meta. An attempt may add keys with its outcome (ctx.recordMeta): tracing records pgq.process (its span context) on workflow jobs, and a step gets its parents'' as pgq.parents when it unblocks.';

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
             payload = CASE WHEN c.pass_results IN ('one', 'list') THEN workflow_job_input(c.id) ELSE c.payload END,
             meta = workflow_job_meta(c.id, c.meta)
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
  EXECUTE format('ALTER FUNCTION workflow_job_meta(bigint, jsonb) SET search_path = %I, pg_temp', current_schema());
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
  EXECUTE format('ALTER FUNCTION workflow_job_state_changed() SET search_path = %I, pg_temp', current_schema());
END
$$;
DROP FUNCTION workflow_job_meta(bigint, jsonb);
COMMENT ON COLUMN jobs.meta IS 'JSON object of metadata written at enqueue (the meta option and middleware): W3C trace context (traceparent, tracestate), request or tenant ids. Not validated by the task schema; handlers read it in ctx.job.meta.';
