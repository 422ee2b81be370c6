-- Up Migration
-- Deleting workflow jobs (retention, deleteJobs, by hand) cleaned up row by
-- row: each deleted job's trigger asked whether its workflow had any job
-- left, an index probe that walked past every job of that workflow the same
-- statement had already deleted, so deleting an N-job workflow in one
-- statement cost N² index entries (a 20,000-job workflow: minutes). One
-- statement-level trigger now does the same work once per statement, from
-- the statement's deleted rows: their dependency rows, then each workflow
-- that has no job left.
CREATE FUNCTION workflow_jobs_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM gone WHERE workflow_id IS NOT NULL) THEN
    RETURN NULL;
  END IF;
  DELETE FROM job_dependencies d
   USING (SELECT id FROM gone WHERE workflow_id IS NOT NULL) AS g
   WHERE d.child_id = g.id;
  DELETE FROM workflows w
   WHERE w.id IN (SELECT DISTINCT workflow_id FROM gone WHERE workflow_id IS NOT NULL)
     AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.workflow_id = w.id);
  RETURN NULL;
END
$$;
COMMENT ON FUNCTION workflow_jobs_deleted() IS 'Removes the dependency rows of the workflow jobs a statement deleted, and each workflow left with no job.';
DO $$
BEGIN
  EXECUTE format('ALTER FUNCTION workflow_jobs_deleted() SET search_path = %I, pg_temp', current_schema());
END
$$;

DROP TRIGGER jobs_workflow_deleted ON jobs;
DROP FUNCTION workflow_job_deleted();
CREATE TRIGGER jobs_workflow_deleted AFTER DELETE ON jobs
  REFERENCING OLD TABLE AS gone
  FOR EACH STATEMENT
  EXECUTE FUNCTION workflow_jobs_deleted();

-- Down Migration
DROP TRIGGER jobs_workflow_deleted ON jobs;
DROP FUNCTION workflow_jobs_deleted();
CREATE FUNCTION workflow_job_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM job_dependencies WHERE child_id = OLD.id;
  DELETE FROM workflows w WHERE w.id = OLD.workflow_id
     AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.workflow_id = OLD.workflow_id);
  RETURN NULL;
END
$$;
COMMENT ON FUNCTION workflow_job_deleted() IS 'Removes the dependency rows of a deleted workflow job, and its workflow with the last job.';
DO $$
BEGIN
  EXECUTE format('ALTER FUNCTION workflow_job_deleted() SET search_path = %I, pg_temp', current_schema());
END
$$;
CREATE TRIGGER jobs_workflow_deleted AFTER DELETE ON jobs
  FOR EACH ROW
  WHEN (OLD.workflow_id IS NOT NULL)
  EXECUTE FUNCTION workflow_job_deleted();
