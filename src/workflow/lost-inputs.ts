/**
 * The inputs a retry would build without a parent's result, because that
 * parent was deleted: one rule, as one SQL fragment, for `retryJob` (which
 * refuses, see WorkflowStore.prepareRetry) and for `countJobs(filter, {
 * action: 'retry' })` (which leaves such a step out), so the count before
 * a bulk retry says what the retry does.
 *
 * A step's input is made from its parents' results once: by the trigger
 * when its last parent settles and it leaves blocked, or by prepareRetry
 * for a step cancelled while it was still blocked. `pending_parents` tells
 * the two apart: 0 once the input is made, above 0 on a step cancelled
 * while blocked (parents that settle later count down blocked steps only).
 * A step whose input is made lost nothing when a parent went; one still
 * without it would get it without that parent's result.
 */
import type { Expression, RawBuilder } from 'kysely';
import { sql } from '../db/kysely.js';

/** A step whose input would be made without a deleted parent's result. */
export interface LostInput {
  /** The step (the job retried, or a dependent its success resumes). */
  child: string;
  step: string | null;
  /** The deleted parent. */
  parent: string;
}

/**
 * The steps a retry of job `jobId` would make inputs for without a deleted
 * parent's result: its own (made now, if it never left blocked), and those
 * of the dependents its success resumes (cancelled because it failed, and
 * theirs in turn). A query with no ORDER BY; no rows when nothing is lost.
 * The tables are named in `schema` (in raw SQL, Kysely's withSchema does
 * not qualify a table its query does not select from).
 */
export function lostInputs(schema: string, jobId: Expression<unknown>): RawBuilder<LostInput> {
  const jobs = sql.id(schema, 'jobs');
  const dependencies = sql.id(schema, 'job_dependencies');
  return sql<LostInput>`${resumedSteps(schema, jobId)}
    SELECT c.id::text AS child, c.workflow_step AS step, d.parent_id::text AS parent
      FROM resumed r
      JOIN ${jobs} c ON c.id = r.id
      JOIN ${dependencies} d ON d.child_id = c.id
     WHERE c.attempts = 0 AND c.pending_parents > 0 AND c.pass_results <> 'none'
       -- A parent that only orders the step (no position) gives nothing to its input.
       AND d.position IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM ${jobs} p WHERE p.id = d.parent_id)`;
}

/**
 * Locks the parents of the steps a retry of job `jobId` resumes (as
 * lostInputs reads them) against their deletion, in id order, for the rest
 * of the retry's transaction: FOR KEY SHARE, which a delete waits on and
 * claims and outcome writes do not. A concurrent `deleteJob` of one either
 * committed first (lostInputs, asked after this, finds it gone) or waits
 * for the retry (and then finds its dependent blocked on it and refuses):
 * before, each checked while the other had not committed, the delete found
 * the dependent cancelled, the retry found the parent there, and the
 * dependent ran without that parent's result.
 */
export function lockInputParents(schema: string, jobId: Expression<unknown>): RawBuilder<unknown> {
  const jobs = sql.id(schema, 'jobs');
  const dependencies = sql.id(schema, 'job_dependencies');
  return sql`${resumedSteps(schema, jobId)}
    SELECT 1 FROM ${jobs} p
     WHERE p.id IN (SELECT d.parent_id FROM resumed r JOIN ${dependencies} d ON d.child_id = r.id)
     ORDER BY p.id
       FOR KEY SHARE OF p`;
}

/**
 * `resumed(id)`: job `jobId` and the dependents its success resumes (cancelled because it failed, and theirs
 * in turn), found level by level through the edges (migrations/…_workflow_resumed_jobs.sql): a recursive CTE
 * joining jobs on `cancelled_by` read every cancelled job once per level, and a bulk retry's filter once per
 * step it matched (20 s to count 2,000 failed steps beside 6,000 cancelled jobs).
 */
function resumedSteps(schema: string, jobId: Expression<unknown>): RawBuilder<unknown> {
  return sql`WITH resumed(id) AS (SELECT r FROM ${sql.id(schema, 'workflow_resumed_jobs')}(${jobId}::bigint) AS r)`;
}
