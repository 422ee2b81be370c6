-- Up Migration
-- The jobs a retry of a workflow step resumes (the step, the dependents
-- cancelled because it failed, and theirs in turn), found level by level
-- through the dependency edges, each lookup by id, as the state trigger
-- finds them (1764910000000).
--
-- retryJob, retryJobs and countJobs(filter, { action: 'retry' }) found them
-- with a recursive CTE joining jobs on cancelled_by, which no index covers:
-- PostgreSQL read every cancelled job of the table once per level, and a
-- bulk retry did that once per workflow step it matched. Counting the 2,000
-- failed first steps of 2,000 four-step chains (6,000 cancelled jobs) took
-- 9–20 s; retrying the first step of a 3,000-step chain spent 1.7–3.7 s
-- there. A level's children come from job_dependencies' parent index and
-- the jobs' primary key; `(c.state = 'cancelled') IS TRUE` keeps the index
-- of unfinished jobs by state out of the plan (the whole table's cancelled
-- jobs, without fresh statistics).
--
-- A job is cancelled_by one of its parents, so each resumed job is reached
-- once, from that parent's level: the levels need no visited set.
--
-- ROWS 10: a bulk retry's filter calls it once per job it matches, and the
-- default estimate (1,000 rows a call) priced a count of a few thousand
-- failed steps past jit_above_cost: 1.5–1.8 s of JIT compiling each time.
--
-- OR REPLACE: run again (its pgq_migrations row deleted), it succeeds.
CREATE OR REPLACE FUNCTION workflow_resumed_jobs(p_job bigint) RETURNS SETOF bigint LANGUAGE plpgsql STABLE ROWS 10 AS $$
DECLARE
  frontier bigint[] := ARRAY[p_job];
  resumed bigint;
BEGIN
  RETURN NEXT p_job;
  LOOP
    SELECT array_agg(c.id) INTO frontier FROM jobs c
     WHERE c.id = ANY (ARRAY(SELECT d.child_id FROM job_dependencies d WHERE d.parent_id = ANY (frontier)))
       AND (c.state = 'cancelled') IS TRUE AND c.cancelled_by = ANY (frontier);
    EXIT WHEN frontier IS NULL;
    FOREACH resumed IN ARRAY frontier LOOP
      RETURN NEXT resumed;
    END LOOP;
  END LOOP;
END
$$;
COMMENT ON FUNCTION workflow_resumed_jobs(bigint) IS 'The job and the jobs its success resumes: those cancelled because it failed (cancelled_by), and theirs in turn. What a retry of it revives.';

DO $$
BEGIN
  EXECUTE format('ALTER FUNCTION workflow_resumed_jobs(bigint) SET search_path = %I, pg_temp', current_schema());
END
$$;

-- Down Migration
DROP FUNCTION workflow_resumed_jobs(bigint);
