/**
 * Workflows in the database: the atomic insert (one statement: the workflow
 * row, every job, every dependency edge — so it is all there or not at all,
 * on pgq's pool or inside the caller's transaction), reading a workflow back
 * with its overall state, waiting for it, cancelling it, and the rule that
 * keeps retryJob from running a step whose inputs never arrived.
 *
 * Unblocking, failure propagation and resuming after a retry are not here:
 * the `jobs_workflow_state` trigger (migrations/…_workflows.sql) does them in
 * the transaction that changes the parent, so the worker's hot path is the
 * same for workflow and ordinary jobs.
 */
import type { Compilable, Expression, Kysely, RawBuilder, Selectable } from 'kysely';
import { sql } from '../db/kysely.js';
import { z } from 'zod';
import type { Clock } from '../core/clock.js';
import { PgqError, ValidationError, WaitTimeoutError, objectArgument } from '../core/errors.js';
import { waitUntilDone } from '../notify/wait.js';
import { parseWorkflowId } from '../core/ids.js';
import { JOB_STATES, LIVE_STATES, type JobMeta, type JobRecord, type JobState, type StepFailure } from '../core/types.js';
import type { DbHandle, Queryable } from '../db/queryable.js';
import { quoteIdent } from '../db/identifiers.js';
import { toJobRecord, type JobRow } from '../db/rows.js';
import type { JobsTable, PgqDatabase, WorkflowsTable } from '../db/tables.js';
import { doneMentions, type ChannelNames } from '../notify/channels.js';
import { cancelLockedJobs } from '../jobs/cancel-jobs.js';
import type { Listener } from '../notify/listener.js';
import { nameSchema, zodToValidationError } from '../task.js';
import { compileWorkflow, type CompiledWorkflow } from './compile.js';
import { lockInputParents, lostInputs, type LostInput } from './lost-inputs.js';
import { metaText, type MiddlewareChain, type PendingJob } from '../middleware.js';
import type { Flow } from './flow.js';
import { inTransaction } from '../db/transaction.js';
import { jsonArrayText } from '../core/json.js';

/** Options of `enqueueWorkflow`. */
export interface EnqueueWorkflowOptions {
  /** Shown in `workflows.name`; default: the task of the first step. */
  name?: string | undefined;
  /** Metadata stored in `jobs.meta` of every step (a JSON object, at most 64 KiB); middleware may add to it. */
  meta?: JobMeta | undefined;
  /** Your transaction: a `pg` client inside BEGIN or a Kysely transaction. The whole workflow commits or rolls back with it. */
  db?: DbHandle | undefined;
}

/**
 * A workflow's overall state: `running` while any job is not final, then
 * `succeeded` (every job succeeded), `failed` (some job failed) or
 * `cancelled` (none failed, some were cancelled).
 */
export type WorkflowState = 'running' | 'succeeded' | 'failed' | 'cancelled';

/** One job of a workflow. */
export interface WorkflowStepRecord extends JobRecord {
  /** The step's name, unique within the workflow. */
  step: string;
  workflowId: string;
  /** Ids of the jobs it waits on: its input parents in input order, then those that only order it. */
  dependsOn: string[];
  /** Parents not yet settled (0 once it left `blocked` by its parents' settling; a step cancelled while blocked keeps its count). */
  pendingParents: number;
  /** What a parent's failure does to it; null for a step without parents. */
  onParentFailure: 'cancel' | 'run' | null;
  /** The parent whose failure or cancellation cancelled it, if that is why it is cancelled. */
  cancelledBy: string | null;
}

/** A workflow and its jobs. */
export interface WorkflowRecord<Out = unknown> {
  id: string;
  name: string;
  state: WorkflowState;
  createdAt: Date;
  /** When its last job finished, once the workflow is no longer running. */
  finishedAt: Date | null;
  /** The workflow's result (the last step's, or the list of a final group's) once those jobs succeeded; null before. */
  result: Out | null;
  /** Jobs by state. */
  counts: Record<JobState, number>;
  /** Every job of the workflow, parents before children. */
  steps: WorkflowStepRecord[];
}

/** A workflow without its steps, as `listWorkflows` returns it. */
export interface WorkflowSummary {
  id: string;
  name: string;
  state: WorkflowState;
  createdAt: Date;
  /** Jobs by state. */
  counts: Record<JobState, number>;
  /** Jobs in all. */
  total: number;
}

/** Filters of `listWorkflows`. */
export interface ListWorkflowsFilter {
  /** Only workflows with a smaller id (the last id of the previous page). */
  before?: string | undefined;
  /** At most this many, newest first. Default 50, at most 500. */
  limit?: number | undefined;
}

/** No workflow has this id (it may have been pruned with its last job). */
export class WorkflowNotFoundError extends PgqError {
  constructor(id: string) {
    super('PGQ_WORKFLOW_NOT_FOUND', `workflow ${id} does not exist (it may have been pruned with its last job)`);
    this.name = 'WorkflowNotFoundError';
  }
}

export interface WorkflowStoreDeps {
  kysely: Kysely<PgqDatabase>;
  schema: string;
  listener: Listener;
  channels: ChannelNames;
  clock: Clock;
  maxPayloadBytes: number;
  middleware: MiddlewareChain;
  queryableFor(db: DbHandle | undefined): Queryable;
}

export type StepRow = Selectable<JobsTable> & { depends_on: string[] };

/** A step's parents in its input's order (then ordering-only ones), over `jobs as j` left-joined to `job_dependencies as d`, grouped by j.id. */
export const DEPENDS_ON = sql<string[]>`coalesce(array_agg(d.parent_id::text ORDER BY d.position NULLS LAST, d.parent_id)
                                        FILTER (WHERE d.parent_id IS NOT NULL), '{}')`.as('depends_on');

const enqueueOptionsSchema = z.object({ name: nameSchema.optional() }).strict();

/** Behind Pgq's workflow methods. */
export class WorkflowStore {
  constructor(private readonly deps: WorkflowStoreDeps) {}

  async enqueue<Out>(flow: Flow<unknown, Out, boolean>, options: EnqueueWorkflowOptions = {}): Promise<WorkflowRecord<Out>> {
    if (options === null || typeof options !== 'object') throw new ValidationError('options', 'must be an object');
    const { db: handle, meta: rawMeta, ...rest } = options;
    const parsed = enqueueOptionsSchema.safeParse(rest);
    if (!parsed.success) throw zodToValidationError(parsed.error, 'options');
    const meta = rawMeta === undefined ? '{}' : metaText(rawMeta, 'options.meta');
    const compiled = await compileWorkflow(flow, { name: parsed.data.name, maxPayloadBytes: this.deps.maxPayloadBytes });
    const db = this.deps.queryableFor(handle);
    const { middleware } = this.deps;
    const jobs: PendingJob[] = compiled.steps.map((s) => pendingStep(s, JSON.parse(meta) as JobMeta));
    let record: WorkflowRecord | null = null;
    await middleware.enqueue({ kind: 'workflow', jobs, db: handle }, async () => {
      const metas = middleware.wrapsEnqueues ? jobs.map((j, i) => metaText(j.meta, `steps[${i}].meta`)) : jobs.map(() => meta);
      const [row] = await run(db, this.#insert(compiled, metas));
      record = await this.#load(db, row!.id);
      const ids = new Map(record!.steps.map((s) => [s.step, s.id]));
      return compiled.steps.map((s) => ids.get(s.name)!);
    });
    return record as unknown as WorkflowRecord<Out>;
  }

  async list(filter: ListWorkflowsFilter = {}): Promise<WorkflowSummary[]> {
    for (const [key, value] of Object.entries(objectArgument(filter, 'filter'))) {
      if (value !== undefined && key !== 'before' && key !== 'limit') throw new ValidationError(key, 'is not a workflow list field; the fields are before, limit');
    }
    const limit = filter.limit ?? 50;
    if (!Number.isInteger(limit) || limit < 1 || limit > 500) throw new ValidationError('limit', 'must be an integer from 1 to 500');
    let query = this.deps.kysely
      .selectFrom('workflows as w')
      .select(['w.id', 'w.name', 'w.created_at'])
      .select(
        sql<Record<string, string> | null>`(SELECT jsonb_object_agg(s.state, s.n) FROM (
            SELECT state, count(*) AS n FROM ${sql.id(this.deps.schema, 'jobs')} WHERE workflow_id = w.id GROUP BY state) s)`.as('counts'),
      )
      .orderBy('w.id', 'desc')
      .limit(limit);
    if (filter.before !== undefined) query = query.where('w.id', '<', parseWorkflowId(filter.before, 'before'));
    const rows = await query.execute();
    return rows.map((row) => {
      const counts = Object.fromEntries(JOB_STATES.map((s) => [s, Number(row.counts?.[s] ?? 0)])) as Record<JobState, number>;
      return {
        id: String(row.id),
        name: row.name,
        state: workflowStateOf(counts),
        createdAt: row.created_at,
        counts,
        total: Object.values(counts).reduce((a, b) => a + b, 0),
      };
    });
  }

  async get<Out>(id: unknown): Promise<WorkflowRecord<Out> | null> {
    return (await this.#load(this.deps.queryableFor(undefined), parseWorkflowId(id))) as WorkflowRecord<Out> | null;
  }

  /** Resolves once the workflow is no longer running; NOTIFY on the `done` channel wakes it. */
  async wait<Out>(id: unknown, options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<WorkflowRecord<Out>> {
    const workflowId = parseWorkflowId(id);
    const { listener, channels, clock } = this.deps;
    const first = await this.get<Out>(workflowId);
    if (!first) throw new WorkflowNotFoundError(workflowId);
    const jobIds = new Set(first.steps.map((s) => s.id));
    return waitUntilDone(
      { listener, clock },
      {
        channel: channels.done,
        wakesOn: (payload) => doneMentions(payload, (jobId) => jobIds.has(jobId)),
        // A cheap look first: a big workflow wakes us once per completed batch.
        look: async () => {
          if (await this.#hasLiveJobs(workflowId)) return { done: false, state: 'running' };
          const workflow = await this.get<Out>(workflowId);
          if (!workflow) throw new WorkflowNotFoundError(workflowId);
          return workflow.state === 'running' ? { done: false, state: 'running' } : { done: true, value: workflow };
        },
        timeoutMs: options.timeoutMs,
        signal: options.signal,
        timeoutError: (state) => new WaitTimeoutError(workflowId, options.timeoutMs ?? 0, state, 'workflow'),
      },
    );
  }

  async #hasLiveJobs(workflowId: string): Promise<boolean> {
    const row = await this.deps.kysely
      .selectFrom('jobs')
      .select('id')
      .where('workflow_id', '=', workflowId)
      .where('state', 'in', [...LIVE_STATES])
      .limit(1)
      .executeTakeFirst();
    return row !== undefined;
  }

  /**
   * Cancels every job of the workflow that is not final, in one transaction
   * (rows locked in id order); running handlers' signals abort.
   */
  async cancel(id: unknown): Promise<WorkflowRecord> {
    const workflowId = parseWorkflowId(id);
    await inTransaction(this.deps.kysely, async (trx) => {
      const workflow = await trx.selectFrom('workflows').select('id').where('id', '=', workflowId).executeTakeFirst();
      if (!workflow) throw new WorkflowNotFoundError(workflowId);
      const live = await trx
        .selectFrom('jobs')
        .select(['id', 'state'])
        .where('workflow_id', '=', workflowId)
        .where('state', 'in', [...LIVE_STATES])
        .orderBy('id')
        .forUpdate()
        .execute();
      await cancelLockedJobs(trx, this.deps.channels, live);
    });
    return (await this.get(workflowId))!;
  }

  /**
   * The steps a retry of job `jobId` would make an input for without a
   * deleted parent's result, as a query (lost-inputs.ts): prepareRetry
   * refuses such a retry, and a count for a bulk retry leaves it out.
   */
  lostInputs(jobId: Expression<unknown>): RawBuilder<LostInput> {
    return lostInputs(this.deps.schema, jobId);
  }

  /**
   * Runs inside retryJob's transaction, before the job is made available.
   * Refuses (PGQ_NOT_RETRYABLE, naming the step to retry instead) a workflow
   * job cancelled because a step it depends on failed — retrying that step
   * resumes the workflow — and one whose parents have not all succeeded (or,
   * for a run-anyway step, finished), since its input does not exist yet,
   * and one whose retry would make an input without a deleted parent's
   * result (lost-inputs.ts). A job cancelled while it was still blocked
   * gets its input built from its parents now; one that left blocked has
   * it already.
   */
  async prepareRetry(trx: Kysely<PgqDatabase>, jobId: string): Promise<void> {
    const job = await trx
      .selectFrom('jobs')
      .select(['workflow_id', 'workflow_step', 'cancelled_by', 'errors', 'on_parent_failure', 'pass_results', 'attempts', 'pending_parents'])
      .where('id', '=', jobId)
      .executeTakeFirst();
    if (!job || job.workflow_id === null) return;
    const me = `job ${jobId} (step ${JSON.stringify(job.workflow_step)})`;
    if (job.cancelled_by !== null) {
      const failed: StepFailure | undefined = job.errors.at(-1)?.failedStep;
      const cause = failed ?? { step: '?', jobId: String(job.cancelled_by), state: 'failed' };
      const causeLeft = await trx.selectFrom('jobs').select('id').where('id', '=', String(job.cancelled_by)).executeTakeFirst();
      if (!causeLeft) {
        throw new PgqError(
          'PGQ_NOT_RETRYABLE',
          `${me} was cancelled because step ${JSON.stringify(cause.step)} (job ${cause.jobId}) ${cause.state === 'failed' ? 'failed' : 'was cancelled'}, and job ${cause.jobId} has been deleted: the workflow cannot resume from there`,
        );
      }
      throw new PgqError(
        'PGQ_NOT_RETRYABLE',
        `${me} was cancelled because step ${JSON.stringify(cause.step)} (job ${cause.jobId}) ${cause.state === 'failed' ? 'failed' : 'was cancelled'}; retry job ${cause.jobId} and the workflow resumes from there`,
      );
    }
    // Inputs made from results that were deleted would be made without
    // them, silently: this job's own (cancelled while blocked, it has none
    // yet), or those of the dependents its success would resume (cancelled
    // because it failed, and theirs in turn). A step whose input was made
    // when it left blocked lost nothing (see lost-inputs.ts).
    await lockInputParents(this.deps.schema, sql`${jobId}`).execute(trx);
    const lost = await sql<LostInput>`SELECT * FROM (${this.lostInputs(sql`${jobId}`)}) AS lost ORDER BY child::bigint, parent::bigint LIMIT 1`.execute(trx);
    const gone = lost.rows[0];
    if (gone) {
      const whose = gone.child === jobId ? `its input` : `the input of step ${JSON.stringify(gone.step)} (job ${gone.child}), which it would resume,`;
      throw new PgqError('PGQ_NOT_RETRYABLE', `${me} cannot be retried: ${whose} includes the result of job ${gone.parent}, which has been deleted`);
    }
    if (job.pass_results === null) return;
    const waiting = await trx
      .selectFrom('job_dependencies as d')
      .innerJoin('jobs as p', 'p.id', 'd.parent_id')
      .select(['p.id', 'p.workflow_step', 'p.state'])
      .where('d.child_id', '=', jobId)
      .where((eb) => (job.on_parent_failure === 'run' ? eb('p.state', 'in', [...LIVE_STATES]) : eb('p.state', '<>', 'succeeded')))
      .orderBy('p.id')
      .execute();
    if (waiting.length > 0) {
      const list = waiting.map((p) => `${JSON.stringify(p.workflow_step)} (job ${p.id}, ${p.state})`).join(', ');
      const verb = job.on_parent_failure === 'run' ? 'finished' : 'succeeded';
      throw new PgqError('PGQ_NOT_RETRYABLE', `${me} waits on steps that have not ${verb}: ${list}; it can be retried once they have`);
    }
    if (job.attempts === 0 && job.pending_parents !== null && job.pending_parents > 0 && job.pass_results !== 'none') {
      // Its parents have all settled (checked above); a count of 0 says so, and that its input is made (lost-inputs.ts).
      await trx
        .updateTable('jobs')
        .set({ payload: sql`${sql.id(this.deps.schema, 'workflow_job_input')}(${jobId}::bigint)`, pending_parents: 0 })
        .where('id', '=', jobId)
        .execute();
    }
  }

  /**
   * Runs inside a transaction that holds these jobs locked and is about to
   * cancel them: locks, in id order, the blocked workflow jobs the
   * cancellation will change, so it cannot deadlock with workers settling
   * other parents of the same jobs (see migrations/…_workflow_lock_order.sql).
   */
  async lockDependents(trx: Kysely<PgqDatabase>, cancelling: readonly string[]): Promise<void> {
    if (cancelling.length === 0) return;
    await sql`SELECT ${sql.id(this.deps.schema, 'workflow_lock_dependents')}(NULL, ${[...cancelling]}::bigint[])`.execute(trx);
  }

  /**
   * Runs inside a transaction that holds jobs of these workflows locked and
   * is about to delete them: writes the workflows' rows (a no-op update, in
   * id order). The delete trigger drops a workflow's row once no job of it
   * is left, asking so in the deleting statement's snapshot; two
   * transactions deleting the last jobs of one workflow each saw the other's
   * job still there, and the workflow row stayed with no job (listed as
   * succeeded, with no step, and never pruned). Written here, the second
   * waits for the first to commit, and its statement sees that job gone (or,
   * under repeatable read, fails with 40001 and is run again).
   */
  async lockForDelete(trx: Kysely<PgqDatabase>, workflowIds: readonly (string | null)[]): Promise<void> {
    const ids = [...new Set(workflowIds.filter((id): id is string => id !== null))];
    if (ids.length === 0) return;
    // Written, not only locked: under repeatable read a row only locked let the second go on in its older
    // snapshot, the first one's job still there in it.
    const workflows = sql.id(this.deps.schema, 'workflows');
    await sql`UPDATE ${workflows} SET id = id
               WHERE id IN (SELECT id FROM ${workflows} WHERE id = ANY(${ids}::bigint[]) ORDER BY id FOR UPDATE)`.execute(trx);
  }

  /** The workflow row, its jobs and its dependency edges, in one statement. */
  #insert(c: CompiledWorkflow, metas: string[]): Compilable<{ id: string }> {
    const { schema } = this.deps;
    const jobs = sql.id(schema, 'jobs');
    const steps = c.steps;
    const col = <V>(pick: (s: (typeof steps)[number]) => V): V[] => steps.map(pick);
    const edges = steps.flatMap((s, child) => s.parents.map((p) => ({ child: child + 1, parent: p.index + 1, position: p.position })));
    // Payloads and metas go as JSON arrays, as enqueueMany's do (jsonArrayText says why).
    // Ids are drawn first and handed out in ascending order along the
    // topological order of the steps, so a parent's id is always smaller than
    // its children's: the trigger relies on it when it revives a workflow.
    const query = sql<{ id: string }>`
      WITH ids AS MATERIALIZED (
        SELECT row_number() OVER (ORDER BY s.id) AS ord, s.id
          FROM (SELECT nextval(pg_get_serial_sequence(${`${quoteIdent(schema)}.jobs`}, 'id')) AS id
                  FROM generate_series(1, ${steps.length}::int)) AS s
      ), wf AS (
        INSERT INTO ${sql.id(schema, 'workflows')} (name, output_job_ids, output_is_list)
        SELECT ${c.name}::text,
               ARRAY(SELECT ids.id FROM unnest(${c.outputs.map((i) => i + 1)}::int[]) WITH ORDINALITY AS o(ord, k)
                       JOIN ids ON ids.ord = o.ord ORDER BY o.k),
               ${c.outputIsList}::boolean
        RETURNING id
      ), inserted AS (
        INSERT INTO ${jobs} (id, task, queue, payload, priority, max_attempts, state, timeout_ms, backoff_base_ms,
                             backoff_max_ms, workflow_id, workflow_step, pending_parents, on_parent_failure, pass_results, meta)
        SELECT ids.id, u.task, u.queue, u.payload::jsonb, u.priority, u.max_attempts,
               CASE WHEN u.pending > 0 THEN 'blocked' ELSE 'available' END,
               u.timeout_ms, u.backoff_base_ms, u.backoff_max_ms, wf.id, u.step, u.pending, u.on_parent_failure, u.pass_results, u.meta::jsonb
          FROM ROWS FROM (unnest(${col((s) => s.name)}::text[]), unnest(${col((s) => s.task)}::text[]), unnest(${col((s) => s.queue)}::text[]),
                          json_array_elements(${jsonArrayText(col((s) => s.payloadText))}::json), unnest(${col((s) => s.priority)}::int[]),
                          unnest(${col((s) => s.maxAttempts)}::int[]), unnest(${col((s) => s.timeoutMs)}::int[]),
                          unnest(${col((s) => s.backoffBaseMs)}::int[]), unnest(${col((s) => s.backoffMaxMs)}::int[]),
                          unnest(${col((s) => s.parents.length)}::int[]), unnest(${col((s) => s.onParentFailure)}::text[]),
                          unnest(${col((s) => s.passResults)}::text[]), json_array_elements(${jsonArrayText(metas)}::json))
               WITH ORDINALITY AS u(step, task, queue, payload, priority, max_attempts, timeout_ms, backoff_base_ms,
                                    backoff_max_ms, pending, on_parent_failure, pass_results, meta, ord)
          JOIN ids ON ids.ord = u.ord
         CROSS JOIN wf
         ORDER BY u.ord
        RETURNING 1
      ), linked AS (
        INSERT INTO ${sql.id(schema, 'job_dependencies')} (child_id, parent_id, position)
        SELECT c.id, p.id, e.position
          FROM unnest(${edges.map((e) => e.child)}::int[], ${edges.map((e) => e.parent)}::int[], ${edges.map((e) => e.position)}::int[])
               AS e(child, parent, position)
          JOIN ids c ON c.ord = e.child
          JOIN ids p ON p.ord = e.parent
        RETURNING 1
      )
      SELECT wf.id::text AS id, (SELECT count(*) FROM inserted) AS jobs, (SELECT count(*) FROM linked) AS edges FROM wf`;
    return { compile: () => query.compile(this.deps.kysely) };
  }

  async #load(db: Queryable, id: string): Promise<WorkflowRecord | null> {
    const { kysely } = this.deps;
    const [workflow] = await run(db, kysely.selectFrom('workflows').selectAll().where('id', '=', id));
    if (!workflow) return null;
    const rows = await run(
      db,
      kysely
        .selectFrom('jobs as j')
        .leftJoin('job_dependencies as d', 'd.child_id', 'j.id')
        .selectAll('j')
        .select(DEPENDS_ON)
        .where('j.workflow_id', '=', id)
        .groupBy('j.id')
        .orderBy('j.id'),
    );
    return toWorkflowRecord(workflow, rows as StepRow[]);
  }
}

function run<R>(db: Queryable, query: Compilable<R>): Promise<R[]> {
  const compiled = query.compile();
  return db.query<R>({ text: compiled.sql, values: [...compiled.parameters] });
}

/** A workflow's state from its jobs' states: running while any is live, then failed, cancelled or succeeded. */
export function workflowStateOf(counts: Record<JobState, number>): WorkflowState {
  const live = LIVE_STATES.some((s) => counts[s] > 0);
  return live ? 'running' : counts.failed > 0 ? 'failed' : counts.cancelled > 0 ? 'cancelled' : 'succeeded';
}

function toWorkflowRecord(workflow: Selectable<WorkflowsTable>, rows: StepRow[]): WorkflowRecord {
  const steps = rows.map(toStepRecord);
  const counts = Object.fromEntries(JOB_STATES.map((s) => [s, 0])) as Record<JobState, number>;
  for (const s of steps) counts[s.state] += 1;
  const state = workflowStateOf(counts);
  const byId = new Map(steps.map((s) => [s.id, s]));
  const outputs = workflow.output_job_ids.map((jobId) => byId.get(String(jobId)));
  const done = outputs.every((s) => s?.state === 'succeeded');
  const results = outputs.map((s) => s?.result ?? null);
  const finished = steps.map((s) => s.finishedAt?.getTime() ?? 0);
  return {
    id: String(workflow.id),
    name: workflow.name,
    state,
    createdAt: workflow.created_at,
    finishedAt: state === 'running' || steps.length === 0 ? null : new Date(Math.max(...finished)),
    result: done ? (workflow.output_is_list ? results : results[0] ?? null) : null,
    counts,
    steps,
  };
}

export function toStepRecord(row: StepRow): WorkflowStepRecord {
  return {
    ...toJobRecord(row as unknown as JobRow),
    step: row.workflow_step ?? '',
    workflowId: String(row.workflow_id),
    dependsOn: row.depends_on,
    pendingParents: row.pending_parents ?? 0,
    onParentFailure: row.on_parent_failure,
    cancelledBy: row.cancelled_by === null ? null : String(row.cancelled_by),
  };
}

/** A workflow step as enqueue middleware sees it; the payload is parsed only if a middleware reads it. */
function pendingStep(step: CompiledWorkflow['steps'][number], meta: JobMeta): PendingJob {
  let payload: unknown;
  let parsed = false;
  return {
    task: step.task,
    queue: step.queue,
    step: step.name,
    meta,
    get payload(): unknown {
      if (!parsed) {
        payload = JSON.parse(step.payloadText);
        parsed = true;
      }
      return payload;
    },
  };
}
