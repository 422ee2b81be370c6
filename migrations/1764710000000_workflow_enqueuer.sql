-- Up Migration
-- Workflows for enqueue-only roles. `pgq roles` gives the enqueuer the
-- privileges a workflow insert needs (INSERT and SELECT on workflows and
-- job_dependencies, the jobs id sequence, blocked jobs) and narrows what it
-- sees with row-level security on these columns, as it does on
-- jobs.created_by: a role reads back its own workflows and edges, nobody
-- else's.
--
-- Row-level security cannot check that a new edge joins two of the
-- inserter's jobs of one workflow: the insert writes the workflow, its jobs
-- and its edges in one statement, and a policy sees none of that
-- statement's other rows. The two triggers below check it once the
-- statement is done, and only for roles row-level security applies to (the
-- WHEN clause), so the tables' owner pays one function call per insert
-- statement and nothing more. Without them an enqueuer could hang its own
-- blocked job under someone else's job and read that job's result as its
-- input, or add jobs to someone else's workflow.

ALTER TABLE workflows ADD COLUMN created_by regrole NOT NULL DEFAULT current_user::regrole;
COMMENT ON COLUMN workflows.created_by IS 'Database role that enqueued the workflow; enqueue-only roles see only their own workflows.';
ALTER TABLE job_dependencies ADD COLUMN created_by regrole NOT NULL DEFAULT current_user::regrole;
COMMENT ON COLUMN job_dependencies.created_by IS 'Database role that enqueued the edge (with its workflow); enqueue-only roles see only their own edges.';

-- New workflow jobs of a role under row-level security belong to a
-- workflow that role can see and created.
CREATE FUNCTION workflow_check_inserted_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
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

-- New edges of a role under row-level security join two jobs of one
-- workflow that the role can see (for an enqueuer: its own).
CREATE FUNCTION workflow_check_inserted_dependencies() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  bad record;
BEGIN
  SELECT e.child_id, e.parent_id INTO bad FROM added e
    LEFT JOIN jobs c ON c.id = e.child_id
    LEFT JOIN jobs p ON p.id = e.parent_id
   WHERE c.id IS NULL OR p.id IS NULL OR c.workflow_id IS NULL OR c.workflow_id IS DISTINCT FROM p.workflow_id
   LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'job % cannot wait on job %: a dependency joins two jobs of one workflow, both enqueued by this role', bad.child_id, bad.parent_id
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NULL;
END
$$;
COMMENT ON FUNCTION workflow_check_inserted_dependencies() IS 'Refuses new dependency edges (from a role under row-level security) that do not join two of its jobs of one workflow.';

DO $$
BEGIN
  EXECUTE format('ALTER FUNCTION workflow_check_inserted_jobs() SET search_path = %I, pg_temp', current_schema());
  EXECUTE format('ALTER FUNCTION workflow_check_inserted_dependencies() SET search_path = %I, pg_temp', current_schema());
END
$$;

-- 'jobs'::regclass is resolved here, once: the WHEN clause keeps its oid.
CREATE TRIGGER jobs_check_workflow AFTER INSERT ON jobs
  REFERENCING NEW TABLE AS inserted
  FOR EACH STATEMENT
  WHEN (row_security_active('jobs'::regclass))
  EXECUTE FUNCTION workflow_check_inserted_jobs();

CREATE TRIGGER job_dependencies_check AFTER INSERT ON job_dependencies
  REFERENCING NEW TABLE AS added
  FOR EACH STATEMENT
  WHEN (row_security_active('job_dependencies'::regclass))
  EXECUTE FUNCTION workflow_check_inserted_dependencies();

-- Down Migration
DROP TRIGGER job_dependencies_check ON job_dependencies;
DROP TRIGGER jobs_check_workflow ON jobs;
DROP FUNCTION workflow_check_inserted_dependencies();
DROP FUNCTION workflow_check_inserted_jobs();
ALTER TABLE job_dependencies DROP COLUMN created_by;
ALTER TABLE workflows DROP COLUMN created_by;
