-- Up Migration
-- An enqueue-only role could insert jobs (and workflows) with ids of its
-- choosing ahead of the sequence, so that everyone's next enqueues failed
-- on the primary key. A role under row-level security now inserts only ids
-- its own session drew from the table's sequence (at most the sequence's
-- currval() in that session): what pgq's enqueues, workflows included, do.

-- currval() of the jobs or workflows id sequence in this session, null when
-- this session drew none. SECURITY DEFINER: an enqueuer has no privilege on
-- the workflows identity sequence (its inserts draw from it all the same),
-- and currval() reads only what this session drew itself.
CREATE FUNCTION session_last_id(p_table text) RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
  IF p_table NOT IN ('jobs', 'workflows') THEN
    RAISE EXCEPTION 'session_last_id: no id sequence of %', p_table;
  END IF;
  RETURN currval(pg_get_serial_sequence(format('%I.%I', current_schema(), p_table), 'id')::regclass);
EXCEPTION WHEN object_not_in_prerequisite_state THEN
  RETURN NULL;
END
$$;
COMMENT ON FUNCTION session_last_id(text) IS 'The last id this session drew from the jobs or workflows id sequence (currval), or null.';

CREATE OR REPLACE FUNCTION workflow_check_inserted_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  bad record;
  drawn bigint;
BEGIN
  drawn := session_last_id('jobs');
  SELECT i.id INTO bad FROM inserted i WHERE drawn IS NULL OR i.id > drawn LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'job id % was not drawn by this session from the jobs id sequence: leave id out (a role under row-level security inserts only ids it drew)', bad.id
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  SELECT i.id, i.workflow_id INTO bad FROM inserted i
   WHERE i.workflow_id IS NOT NULL
     AND NOT EXISTS (SELECT 1 FROM workflows w WHERE w.id = i.workflow_id AND w.created_by = i.created_by)
   LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'job % cannot join workflow %: a role adds jobs only to workflows it enqueued', bad.id, bad.workflow_id
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NULL;
END
$$;
COMMENT ON FUNCTION workflow_check_inserted_jobs() IS 'Refuses, for a role under row-level security, new jobs whose id this session did not draw from the sequence, and new workflow jobs whose workflow the role did not create.';

CREATE FUNCTION workflow_check_inserted_workflows() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  bad bigint;
  drawn bigint;
BEGIN
  drawn := session_last_id('workflows');
  SELECT i.id INTO bad FROM inserted i WHERE drawn IS NULL OR i.id > drawn LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'workflow id % was not drawn by this session from the workflows id sequence: leave id out (a role under row-level security inserts only ids it drew)', bad
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NULL;
END
$$;
COMMENT ON FUNCTION workflow_check_inserted_workflows() IS 'Refuses, for a role under row-level security, new workflows whose id this session did not draw from the sequence.';

DO $$
BEGIN
  EXECUTE format('ALTER FUNCTION session_last_id(text) SET search_path = %I, pg_temp', current_schema());
  EXECUTE format('ALTER FUNCTION workflow_check_inserted_jobs() SET search_path = %I, pg_temp', current_schema());
  EXECUTE format('ALTER FUNCTION workflow_check_inserted_workflows() SET search_path = %I, pg_temp', current_schema());
END
$$;

CREATE TRIGGER workflows_check_inserted AFTER INSERT ON workflows
  REFERENCING NEW TABLE AS inserted
  FOR EACH STATEMENT
  WHEN (row_security_active('workflows'::regclass))
  EXECUTE FUNCTION workflow_check_inserted_workflows();

-- Down Migration
DROP TRIGGER workflows_check_inserted ON workflows;
DROP FUNCTION workflow_check_inserted_workflows();
CREATE OR REPLACE FUNCTION workflow_check_inserted_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  bad record;
BEGIN
  SELECT i.id, i.workflow_id INTO bad FROM inserted i
   WHERE i.workflow_id IS NOT NULL
     AND NOT EXISTS (SELECT 1 FROM workflows w WHERE w.id = i.workflow_id AND w.created_by = i.created_by)
   LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'job % cannot join workflow %: a role adds jobs only to workflows it enqueued', bad.id, bad.workflow_id
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NULL;
END
$$;
COMMENT ON FUNCTION workflow_check_inserted_jobs() IS 'Refuses new workflow jobs whose workflow the inserting role (under row-level security) did not create.';
DROP FUNCTION session_last_id(text);
