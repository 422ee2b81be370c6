/**
 * What the console's page of one workflow reads: the workflow, its steps
 * counted by state, and its first steps (in id order) without their
 * payloads, results and errors before the last — the page shows none of
 * them, draws and lists at most a few hundred steps, and is read again at
 * every tick while the workflow runs. Through `pgq.getWorkflow` it read
 * every column of every step (up to 50,000, each payload and result up to
 * 1 MiB) each time.
 */
import type { Kysely } from 'kysely';
import { parseWorkflowId } from '../core/ids.js';
import { JOB_STATES, type JobState } from '../core/types.js';
import type { PgqDatabase } from '../db/tables.js';
import { DEPENDS_ON, toStepRecord, workflowStateOf, type StepRow, type WorkflowState, type WorkflowStepRecord } from '../workflow/store.js';
import { SUMMARY_COLUMNS, SUMMARY_EXTRAS } from '../jobs/job-list.js';

/** A workflow as its page shows it. */
export interface WorkflowView {
  id: string;
  name: string;
  state: WorkflowState;
  /** Jobs by state, of all its steps. */
  counts: Record<JobState, number>;
  /** Steps in all. */
  total: number;
  /** The first `maxSteps` steps, parents before children (id order), with `payload` and `result` null and `errors` holding the last entry only. */
  steps: WorkflowStepRecord[];
}

/** The workflow as its page shows it, or null when there is none with this id. */
export async function workflowView(kysely: Kysely<PgqDatabase>, id: string, maxSteps: number): Promise<WorkflowView | null> {
  const workflowId = parseWorkflowId(id);
  const [workflow, byState, rows] = await Promise.all([
    kysely.selectFrom('workflows').select(['id', 'name']).where('id', '=', workflowId).executeTakeFirst(),
    kysely
      .selectFrom('jobs')
      .select((eb) => ['state', eb.fn.countAll<string>().as('n')])
      .where('workflow_id', '=', workflowId)
      .groupBy('state')
      .execute(),
    kysely
      .selectFrom('jobs as j')
      .leftJoin('job_dependencies as d', 'd.child_id', 'j.id')
      .select(SUMMARY_COLUMNS.map((c) => `j.${c}` as const))
      .select(['j.pending_parents', 'j.on_parent_failure', 'j.cancelled_by'])
      .select(SUMMARY_EXTRAS)
      .select(DEPENDS_ON)
      .where('j.workflow_id', '=', workflowId)
      .groupBy('j.id')
      .orderBy('j.id')
      .limit(maxSteps)
      .execute(),
  ]);
  if (!workflow) return null;
  const counts = Object.fromEntries(JOB_STATES.map((s) => [s, 0])) as Record<JobState, number>;
  for (const row of byState) counts[row.state] = Number(row.n);
  const total = JOB_STATES.reduce((sum, s) => sum + counts[s], 0);
  const state = workflowStateOf(counts);
  const steps = rows.map((row) => toStepRecord(row as unknown as StepRow));
  return { id: String(workflow.id), name: workflow.name, state, counts, total, steps };
}
