/**
 * Jobs as an operator sees them: read one, wait for one to finish, list with
 * filters and keyset paging, count, count per queue, and act on one job or on
 * every job a filter matches (retry, cancel, delete). The worker's hot path
 * is elsewhere (db/statements); everything here is Kysely.
 *
 * Bulk actions walk the matching jobs newest first in batches of
 * `BULK_BATCH`, one transaction per batch with the batch's rows locked, so a
 * million-row retry neither holds one huge transaction nor misses rows; each
 * batch applies the same rule as the single action (a running job is
 * cancelled through its signal, a workflow step is retried only where
 * `retryJob` would retry it, a running job is never deleted). They resolve to
 * how many jobs they changed.
 */
import type { ExpressionBuilder, Kysely, Transaction } from 'kysely';
import { sql } from '../db/kysely.js';
import type { Clock } from '../core/clock.js';
import { JobNotFoundError, PgqError, ValidationError, WaitTimeoutError } from '../core/errors.js';
import { FINAL_STATES, JOB_STATES, LIVE_STATES, isFinalState, type JobRecord, type JobState } from '../core/types.js';
import { toJobRecord, type JobRow } from '../db/rows.js';
import type { PgqDatabase } from '../db/tables.js';
import { doneMentions, type ChannelNames } from '../notify/channels.js';
import { cancelLockedJobs } from './cancel-jobs.js';
import type { Listener } from '../notify/listener.js';
import { waitUntilDone } from '../notify/wait.js';
import type { WorkflowStore } from '../workflow/store.js';
import { parseJobId } from '../core/ids.js';
import { inTransaction } from '../db/transaction.js';
import { jobFilterCondition, validateJobFilter, type JobFilter, type ListJobsFilter } from './job-filter.js';
import { listJobPage } from './job-list.js';

/** States `retryJob` accepts. */
export const RETRYABLE_STATES: readonly JobState[] = ['failed', 'cancelled', 'retryable', 'scheduled'];
/** States `deleteJob` accepts (a running job is cancelled first). */
export const DELETABLE_STATES: readonly JobState[] = JOB_STATES.filter((s) => s !== 'running');
/** Rows per transaction of a bulk action. */
export const BULK_BATCH = 500;

/** Candidate ids a bulk action reads per statement (and holds at once): a batch's are taken from them. */
export const BULK_CANDIDATES = 50_000;

/**
 * The ids of the jobs `matching` selects, newest first, read `chunk` at a
 * time (each read one statement, on `kysely`). Read a batch at a time (500),
 * each read walked whatever plan PostgreSQL chose for `ORDER BY id DESC LIMIT
 * 500` again: for a filter it misjudges (a queue or task on a table not
 * analyzed since, a payload containment, a text search), a scan of every job
 * below the cursor, sorted, per batch: deleting the 96,855 matching jobs of
 * 1,140,000 took 68 s that way (2.3 s once ANALYZE made it walk the primary
 * key). A chunk of 50,000 ids is read by one such scan.
 */
export async function* bulkCandidates(
  kysely: Kysely<PgqDatabase>,
  matching: (eb: ExpressionBuilder<PgqDatabase, 'jobs'>) => ReturnType<typeof jobFilterCondition>,
  chunk = BULK_CANDIDATES,
): AsyncGenerator<string[]> {
  let before: string | null = null;
  for (;;) {
    let query = kysely.selectFrom('jobs').select('id').where(matching).orderBy('id', 'desc').limit(chunk);
    if (before !== null) query = query.where('id', '<', before);
    const ids = (await query.execute()).map((r) => r.id);
    if (ids.length > 0) yield ids;
    if (ids.length < chunk) return;
    before = ids.at(-1)!;
  }
}

/**
 * The unique index refused a job made live again: an enqueue with its
 * uniqueKey committed after the check that looked for a live holder. Run
 * again, the check sees that holder.
 */
function keyTakenMeanwhile(err: unknown): boolean {
  const e = err as { code?: unknown; constraint?: unknown } | null;
  return e?.code === '23505' && e.constraint === 'jobs_unique_key_idx';
}

/** Runs `attempt` again (twice at most) when another job took a uniqueKey it was making live meanwhile. */
async function againIfKeyTaken<T>(attempt: () => Promise<T>): Promise<T> {
  for (let tries = 1; ; tries += 1) {
    try {
      return await attempt();
    } catch (err) {
      if (!keyTakenMeanwhile(err) || tries === 3) throw err;
    }
  }
}

/** The bulk actions: retryJobs, cancelJobs, deleteJobs. */
export type BulkAction = 'retry' | 'cancel' | 'delete';

const BULK_STATES: Record<BulkAction, readonly JobState[]> = { retry: RETRYABLE_STATES, cancel: LIVE_STATES, delete: DELETABLE_STATES };
/** The states a retry takes that hold no uniqueKey (the others are live). */
const FINISHED_RETRYABLE = RETRYABLE_STATES.filter((s) => FINAL_STATES.includes(s));

/**
 * The rows a bulk action changes, as SQL, so a count before it (the
 * console's confirmation) says what it will do: its states, and the rules
 * each batch applies again once its rows are locked (retryMany, cancelMany,
 * deleteMany below; a test holds the two to the same answers).
 */
function changedBy(eb: ExpressionBuilder<PgqDatabase, 'jobs'>, action: BulkAction, filter: JobFilter, workflows: Pick<WorkflowStore, 'lostInputs'>) {
  const inStates = eb('jobs.state', 'in', [...BULK_STATES[action]]);
  if (action === 'cancel') {
    // Asked once already: not counted again.
    return eb.and([inStates, eb.or([eb('jobs.state', '<>', 'running'), eb('jobs.cancel_requested_at', 'is', null)])]);
  }
  if (action === 'delete') {
    // Not a workflow step that has not finished, nor one a blocked dependent still waits on. The dependents are
    // read from the job's edges, then by id: `IS TRUE` keeps the blocked jobs' partial index out of this. Priced
    // by statistics that saw few blocked jobs, PostgreSQL walked that index for each job instead, every blocked
    // job (and every entry of one no longer blocked, until a vacuum) per job: counting the 10,000 steps of a
    // cancelled chain took 7.4 to 21.7 s (as dead entries of the index added up), 0.1 s now.
    const waitedOn = eb.exists(
      eb
        .selectFrom('job_dependencies as d')
        .innerJoin('jobs as c', 'c.id', 'd.child_id')
        .select(sql`1`.as('one'))
        .whereRef('d.parent_id', '=', 'jobs.id')
        .where(sql<boolean>`(c.state = 'blocked') IS TRUE`),
    );
    return eb.and([inStates, eb.or([eb('jobs.workflow_id', 'is', null), eb.and([eb('jobs.state', 'in', [...FINAL_STATES]), eb.not(waitedOn)])])]);
  }
  // retry: not while another live job holds its uniqueKey, nor while a newer
  // finished job sharing it is retried instead; a workflow step
  // only as prepareRetry allows (not cancelled by another step's failure,
  // its parents succeeded — or, run-anyway, finished — and no input it
  // would make, its own or a resumed dependent's, missing a deleted
  // parent's result).
  const keyHeld = eb.exists(
    eb
      .selectFrom('jobs as o')
      .select(sql`1`.as('one'))
      .whereRef('o.task', '=', 'jobs.task')
      .whereRef('o.unique_key', '=', 'jobs.unique_key')
      .whereRef('o.id', '<>', 'jobs.id')
      .where('o.state', 'in', [...LIVE_STATES]),
  );
  const parentsNotReady = eb.exists(
    eb
      .selectFrom('job_dependencies as d')
      .innerJoin('jobs as p', 'p.id', 'd.parent_id')
      .select(sql`1`.as('one'))
      .whereRef('d.child_id', '=', 'jobs.id')
      .where(sql<boolean>`CASE WHEN jobs.on_parent_failure = 'run' THEN p.state IN (${sql.join(LIVE_STATES)}) ELSE p.state <> 'succeeded' END`),
  );
  // Of finished jobs sharing a key no live job holds, the action retries the newest it matches.
  const newerTakesKey = eb.exists(
    eb
      .selectFrom('jobs as n')
      .select(sql`1`.as('one'))
      .whereRef('n.task', '=', 'jobs.task')
      .whereRef('n.unique_key', '=', 'jobs.unique_key')
      .whereRef('n.id', '>', 'jobs.id')
      .where('n.state', 'in', [...FINISHED_RETRYABLE])
      // Unqualified, the filter's columns are the newer job's (the nearest FROM).
      .where((inner) => jobFilterCondition(inner as unknown as ExpressionBuilder<PgqDatabase, 'jobs'>, filter)),
  );
  return eb.and([
    inStates,
    eb.or([eb('jobs.unique_key', 'is', null), eb.and([eb.not(keyHeld), eb.or([eb('jobs.state', 'not in', [...FINISHED_RETRYABLE]), eb.not(newerTakesKey)])])]),
    eb.or([
      eb('jobs.workflow_id', 'is', null),
      eb.and([
        eb.or([eb('jobs.pass_results', 'is', null), eb.and([eb('jobs.cancelled_by', 'is', null), eb.not(parentsNotReady)])]),
        sql<boolean>`NOT EXISTS (${workflows.lostInputs(sql.ref('jobs.id'))})`,
      ]),
    ]),
  ]);
}

/** The jobs matching `filter` (those `action` would change, if given; at most `max`), counted: JobStore.count's query, checked already. */
export function countQuery(kysely: Kysely<PgqDatabase>, workflows: Pick<WorkflowStore, 'lostInputs'>, filter: JobFilter, max?: number, action?: BulkAction) {
  const matching = kysely
    .selectFrom('jobs')
    .select(sql<number>`1`.as('one'))
    .where((eb) => (action === undefined ? jobFilterCondition(eb, filter) : eb.and([jobFilterCondition(eb, filter), changedBy(eb, action, filter, workflows)])));
  return kysely.selectFrom((max === undefined ? matching : matching.limit(max)).as('m')).select((eb) => eb.fn.countAll<string>().as('n'));
}

/** Of these jobs, those whose uniqueKey another live job holds (made live again, they would break the key's uniqueness): id → that job's id. */
export async function uniqueKeyHolders(trx: Kysely<PgqDatabase>, ids: string[]): Promise<Map<string, string>> {
  if (ids.length === 0) return new Map();
  // The holder is looked up for each of these jobs (a subquery per row, through the index of live keys). As a
  // join, PostgreSQL, which counts the live jobs holding a key from statistics taken before the retry began,
  // walked every key made live so far against the whole batch: a bulk retry of 20,000 keyed jobs slowed down
  // batch by batch.
  const rows = await trx
    .selectFrom('jobs as j')
    .select((eb) => [
      sql<string>`j.id::text`.as('id'),
      eb
        .selectFrom('jobs as o')
        .select(sql<string>`o.id::text`.as('holder'))
        .whereRef('o.task', '=', 'j.task')
        .whereRef('o.unique_key', '=', 'j.unique_key')
        .whereRef('o.id', '<>', 'j.id')
        .where('o.state', 'in', [...LIVE_STATES])
        .limit(1)
        .as('holder'),
    ])
    .where(sql<boolean>`j.id = ANY(${ids}::bigint[])`)
    .where('j.unique_key', 'is not', null)
    .execute();
  return new Map(rows.flatMap((r) => (r.holder === null ? [] : [[r.id, r.holder] as const])));
}

/**
 * The dependents of these jobs (parent id, dependent's state), locked FOR KEY
 * SHARE in id order, in two statements: each job's edges through the parent
 * index (OFFSET 0 keeps each lookup its own, whatever the statistics say),
 * then the dependents by id. As one join, PostgreSQL priced the edges of 500
 * jobs by an unanalyzed job_dependencies at 53,000 rows and hashed the whole
 * jobs table for each batch of a bulk delete: deleting the 10,000 steps of a
 * cancelled chain beside 850,000 other jobs took 8.3 s (0.4 s a batch).
 */
export async function readDependentsLocked(trx: Kysely<PgqDatabase>, ids: string[]): Promise<{ id: string; state: JobState }[]> {
  // (A function returning a scalar names its column after its alias: p.)
  const edges = await trx
    .selectFrom(sql<{ p: string }>`unnest(${ids}::bigint[])`.as('p'))
    .innerJoinLateral(
      (eb) => eb.selectFrom('job_dependencies as d').select('d.child_id').whereRef('d.parent_id', '=', 'p.p').offset(0).as('e'),
      (join) => join.onTrue(),
    )
    .select([sql<string>`p.p::text`.as('parent'), sql<string>`e.child_id::text`.as('child')])
    .execute();
  if (edges.length === 0) return [];
  const children = [...new Set(edges.map((e) => e.child))];
  const locked = await trx
    .selectFrom('jobs')
    .select(['id', 'state'])
    .where(sql<boolean>`id = ANY(${children}::bigint[])`)
    .orderBy('id')
    .forKeyShare()
    .execute();
  const states = new Map(locked.map((r) => [r.id, r.state]));
  return edges.flatMap((e) => (states.has(e.child) ? [{ id: e.parent, state: states.get(e.child)! }] : []));
}

/** Per queue: jobs by state, and the oldest due job still waiting. */
export interface QueueStats {
  queue: string;
  counts: Record<JobState, number>;
  /** `run_at` of the oldest job that is due and not yet claimed. */
  oldestWaitingRunAt: Date | null;
}

export interface JobStoreDeps {
  kysely: Kysely<PgqDatabase>;
  channels: ChannelNames;
  /** Wakes `wait` on the `done` channel. */
  listener: Listener;
  clock: Clock;
  workflows: WorkflowStore;
}

type Trx = Transaction<PgqDatabase>;

/** Behind Pgq's job inspection and job actions. */
export class JobStore {
  constructor(private readonly deps: JobStoreDeps) {}

  async get<Payload = unknown, Result = unknown>(id: string): Promise<JobRecord<Payload, Result> | null> {
    const row = await this.deps.kysely.selectFrom('jobs').selectAll().where('id', '=', parseJobId(id)).executeTakeFirst();
    return row ? toJobRecord<Payload, Result>(row as unknown as JobRow) : null;
  }

  /** Resolves when the job reaches a final state, woken by NOTIFY on the `done` channel. */
  async wait<Payload = unknown, Result = unknown>(
    id: string,
    options: { timeoutMs?: number; signal?: AbortSignal } = {},
  ): Promise<JobRecord<Payload, Result>> {
    const jobId = parseJobId(id);
    let seen: string | undefined;
    return waitUntilDone(
      { listener: this.deps.listener, clock: this.deps.clock },
      {
        channel: this.deps.channels.done,
        wakesOn: (payload) => doneMentions(payload, (id) => id === jobId),
        look: async () => {
          const job = await this.get<Payload, Result>(jobId);
          if (!job) {
            // Gone while waited for: deleted (a worker whose retention keeps succeeded jobs 0 ms deletes one as it
            // succeeds; deleteJob; retention).
            throw seen === undefined
              ? new JobNotFoundError(jobId)
              : new JobNotFoundError(
                  jobId,
                  `it was ${seen} when last seen and was deleted since: by deleteJob or deleteJobs, by retention or by hand, or, had it ` +
                    'succeeded, by a worker with retention.succeededMs 0, which deletes a job as it succeeds',
                );
          }
          seen = job.state;
          return isFinalState(job.state) ? { done: true, value: job } : { done: false, state: job.state };
        },
        timeoutMs: options.timeoutMs,
        signal: options.signal,
        timeoutError: (state) => new WaitTimeoutError(jobId, options.timeoutMs ?? 0, state),
      },
    );
  }

  async list(filter: ListJobsFilter = {}): Promise<JobRecord[]> {
    return listJobPage(this.deps.kysely, filter, false);
  }

  /**
   * How many jobs match; with `max`, counting stops there (the answer is then
   * at most `max`); with `action`, how many of them that bulk action would
   * change (as the rows stand now).
   */
  async count(filter: JobFilter = {}, max?: number, action?: BulkAction): Promise<number> {
    validateJobFilter(filter);
    if (max !== undefined && (!Number.isInteger(max) || max < 1)) throw new ValidationError('max', 'must be a positive integer');
    if (action !== undefined && !Object.hasOwn(BULK_STATES, action)) throw new ValidationError('action', `must be retry, cancel or delete, got ${JSON.stringify(action)}`);
    if (action === undefined) return Number((await countQuery(this.deps.kysely, this.deps.workflows, filter, max).executeTakeFirstOrThrow()).n);
    // A bulk action's count asks a few questions of each matching job, subqueries PostgreSQL prices by its row
    // estimate: past jit_above_cost it compiled them first, 0.8 s of JIT to count 20,000 failed jobs that take
    // 35 ms to count without it (PostgreSQL 15; jit is on by default).
    return inTransaction(this.deps.kysely, async (trx) => {
      await sql`SET LOCAL jit = off`.execute(trx);
      return Number((await countQuery(trx, this.deps.workflows, filter, max, action).executeTakeFirstOrThrow()).n);
    });
  }

  /** Per queue: counts by state and the oldest waiting due job. */
  async stats(): Promise<QueueStats[]> {
    const rows = await this.deps.kysely
      .selectFrom('jobs')
      .select((eb) => [
        'queue',
        'state',
        eb.fn.countAll<string>().as('count'),
        eb.fn
          .min<Date | null>(sql<Date>`CASE WHEN state IN ('available', 'scheduled', 'retryable') AND run_at <= now() THEN run_at END`)
          .as('oldest'),
      ])
      .groupBy(['queue', 'state'])
      .orderBy('queue')
      .execute();
    const byQueue = new Map<string, QueueStats>();
    for (const row of rows) {
      let stats = byQueue.get(row.queue);
      if (!stats) {
        stats = {
          queue: row.queue,
          counts: Object.fromEntries(JOB_STATES.map((s) => [s, 0])) as Record<JobState, number>,
          oldestWaitingRunAt: null,
        };
        byQueue.set(row.queue, stats);
      }
      stats.counts[row.state] = Number(row.count);
      const oldest = row.oldest as Date | null;
      if (oldest && (!stats.oldestWaitingRunAt || oldest < stats.oldestWaitingRunAt)) stats.oldestWaitingRunAt = oldest;
    }
    return [...byQueue.values()];
  }

  async cancel(id: string): Promise<JobRecord> {
    const jobId = parseJobId(id);
    const row = await inTransaction(this.deps.kysely, async (trx) => {
      const before = await trx.selectFrom('jobs').select(['state']).where('id', '=', jobId).forUpdate().executeTakeFirst();
      if (!before) return undefined;
      if (!isFinalState(before.state)) {
        await this.deps.workflows.lockDependents(trx, [jobId]);
        await cancelLockedJobs(trx, this.deps.channels, [{ id: jobId, state: before.state }]);
      }
      return trx.selectFrom('jobs').selectAll().where('id', '=', jobId).executeTakeFirstOrThrow();
    });
    if (!row) throw new JobNotFoundError(jobId);
    return toJobRecord(row as unknown as JobRow);
  }

  async retry(id: string): Promise<JobRecord> {
    const jobId = parseJobId(id);
    const row = await againIfKeyTaken(() => inTransaction(this.deps.kysely, async (trx) => {
      // FOR NO KEY UPDATE, not FOR UPDATE: a retry changes no key, and a
      // delete of its parent reads it FOR KEY SHARE (#waitedOn). Held FOR
      // UPDATE, the job made that delete wait for the retry while the retry
      // waited to lock the parent the delete held (lockInputParents): a
      // deadlock (40P01), one side run again.
      const before = await trx.selectFrom('jobs').select(['state', 'queue', 'cancel_requested_at']).where('id', '=', jobId).forNoKeyUpdate().executeTakeFirst();
      if (!before) throw new JobNotFoundError(jobId);
      if (!RETRYABLE_STATES.includes(before.state)) {
        const cancelling = before.state === 'running' && before.cancel_requested_at !== null ? ` (cancelled: it ends cancelled once its handler has settled, and can be retried then)` : '';
        throw new PgqError('PGQ_NOT_RETRYABLE', `job ${jobId} is ${before.state}${cancelling}; only failed, cancelled, retryable or scheduled jobs can be retried`);
      }
      const holder = (await uniqueKeyHolders(trx, [jobId])).get(jobId);
      if (holder !== undefined) {
        throw new PgqError('PGQ_NOT_RETRYABLE', `job ${jobId} cannot run again while job ${holder} holds its uniqueKey (one live job per task and key); retry it once that one has finished`);
      }
      await this.deps.workflows.prepareRetry(trx, jobId);
      await this.#makeAvailable(trx, [jobId], [before.queue]);
      return trx.selectFrom('jobs').selectAll().where('id', '=', jobId).executeTakeFirstOrThrow();
    }));
    return toJobRecord(row as unknown as JobRow);
  }

  /** Deletes a job that is not running; false when there is none. */
  async delete(id: string): Promise<boolean> {
    const jobId = parseJobId(id);
    return inTransaction(this.deps.kysely, async (trx) => {
      const before = await trx.selectFrom('jobs').select(['state', 'workflow_id']).where('id', '=', jobId).forUpdate().executeTakeFirst();
      if (!before) return false;
      if (before.state === 'running') {
        throw new PgqError('PGQ_JOB_RUNNING', `job ${jobId} is running; cancel it first (its handler is told through ctx.signal), then delete it once it has ended cancelled`);
      }
      if (before.workflow_id !== null && !FINAL_STATES.includes(before.state)) {
        // Its dependents wait for it to finish: deleted, it would never finish.
        throw new PgqError('PGQ_WORKFLOW_STEP_LIVE', `job ${jobId} is a step of workflow ${before.workflow_id} that has not finished; cancel it first (its dependents are then cancelled or run, as their onParentFailure says), then delete it`);
      }
      if (before.workflow_id !== null && (await this.#waitedOn(trx, [jobId])).size > 0) {
        // Its result (or error) is part of the input a blocked dependent gets when its other parents finish.
        throw new PgqError('PGQ_WORKFLOW_STEP_LIVE', `job ${jobId} is a step of workflow ${before.workflow_id} whose dependents still wait (blocked) for their other parents, and its result is part of their input; delete it once they have left blocked`);
      }
      await this.deps.workflows.lockForDelete(trx, [before.workflow_id]);
      await trx.deleteFrom('jobs').where('id', '=', jobId).execute();
      return true;
    });
  }

  /** Retries every matching failed, cancelled, retryable or scheduled job; workflow steps that retryJob would refuse are skipped. */
  async retryMany(filter: JobFilter): Promise<number> {
    // Locked FOR NO KEY UPDATE, as retry() locks its job.
    return this.#bulk(filter, RETRYABLE_STATES, 'no key update', async (trx, rows) => {
      const ids: string[] = [];
      const held = await uniqueKeyHolders(trx, rows.map((row) => row.id));
      // Newest first. A live one (retryable, scheduled) holds its key
      // already, so a finished one sharing it is held (above); of finished
      // ones sharing a key that is free (it was used again after the first
      // finished), the newest runs again and the others stay.
      const taken = new Set<string>();
      for (const row of [...rows].reverse()) {
        if (held.has(row.id)) continue; // retryJob would refuse it: another live job holds its uniqueKey
        const key = row.unique_key === null ? null : JSON.stringify([row.task, row.unique_key]);
        if (key !== null && taken.has(key)) continue;
        if (row.workflow_id !== null) {
          try {
            await this.deps.workflows.prepareRetry(trx, row.id);
          } catch (err) {
            if (err instanceof PgqError && err.code === 'PGQ_NOT_RETRYABLE') continue;
            throw err;
          }
        }
        if (key !== null) taken.add(key);
        ids.push(row.id);
      }
      const retried = new Set(ids);
      await this.#makeAvailable(trx, ids, rows.filter((r) => retried.has(r.id)).map((r) => r.queue));
      return ids.length;
    });
  }

  /** Cancels every matching job that is not final; running handlers see their signal abort. */
  async cancelMany(filter: JobFilter): Promise<number> {
    return this.#bulk(filter, LIVE_STATES, 'update', async (trx, all) => {
      // A running job whose cancel was asked for already is not counted again.
      const rows = all.filter((row) => !(row.state === 'running' && row.cancel_requested_at !== null));
      await this.deps.workflows.lockDependents(trx, rows.map((row) => row.id));
      await cancelLockedJobs(trx, this.deps.channels, rows);
      return rows.length;
    });
  }

  /** Deletes every matching job that is not running; workflow steps that have not finished, or that a blocked dependent still waits on, are skipped (delete would refuse them). */
  async deleteMany(filter: JobFilter): Promise<number> {
    return this.#bulk(filter, DELETABLE_STATES, 'update', async (trx, rows) => {
      const steps = rows.filter((r) => r.workflow_id !== null && FINAL_STATES.includes(r.state)).map((r) => r.id);
      const waitedOn = await this.#waitedOn(trx, steps);
      const ids = rows.filter((r) => (r.workflow_id === null || FINAL_STATES.includes(r.state)) && !waitedOn.has(r.id)).map((r) => r.id);
      if (ids.length === 0) return 0;
      const deleting = new Set(ids);
      await this.deps.workflows.lockForDelete(trx, rows.filter((r) => deleting.has(r.id)).map((r) => r.workflow_id));
      await trx.deleteFrom('jobs').where(sql<boolean>`id = ANY(${ids}::bigint[])`).execute();
      return ids.length;
    });
  }

  /** Walks the matching jobs in `states` newest first, a batch locked in `mode` per transaction, and sums what `apply` changed. */
  async #bulk(
    filter: JobFilter,
    states: readonly JobState[],
    mode: 'update' | 'no key update',
    apply: (trx: Trx, rows: { id: string; state: JobState; queue: string; task: string; unique_key: string | null; workflow_id: string | null; cancel_requested_at: Date | null }[]) => Promise<number>,
  ): Promise<number> {
    validateJobFilter(filter);
    const wanted = filter.state === undefined ? states : (Array.isArray(filter.state) ? filter.state : [filter.state]).filter((s) => states.includes(s));
    if (wanted.length === 0) return 0;
    const matching = (eb: ExpressionBuilder<PgqDatabase, 'jobs'>) => jobFilterCondition(eb, { ...filter, state: wanted });
    let total = 0;
    for await (const candidates of bulkCandidates(this.deps.kysely, matching)) {
      for (let i = 0; i < candidates.length; i += BULK_BATCH) {
        const batch = candidates.slice(i, i + BULK_BATCH);
        total += await againIfKeyTaken(() => inTransaction(this.deps.kysely, async (trx) => {
          // Locked in id order, as every other statement that locks several
          // jobs does (workers settling workflow steps, cancelWorkflow, the
          // pruner): newest first, a bulk cancel could deadlock with them.
          // The filter is checked again on each row as it is locked: the
          // candidates were read before, and a row may have changed since.
          const rows = await trx
            .selectFrom('jobs')
            .select(['id', 'state', 'queue', 'task', 'unique_key', 'workflow_id', 'cancel_requested_at'])
            .where(sql<boolean>`id = ANY(${batch}::bigint[])`)
            .where(matching)
            .orderBy('id')
            .$call((q) => (mode === 'update' ? q.forUpdate() : q.forNoKeyUpdate()))
            .execute();
          return rows.length ? apply(trx, rows) : 0;
        }));
      }
    }
    return total;
  }

  /**
   * Of these finished workflow jobs, those a blocked dependent still waits on
   * (their results are part of its input). Every dependent is locked (FOR KEY
   * SHARE, in id order) and its state read as locked, whatever it was in the
   * transaction's snapshot: under a default isolation of repeatable read, a
   * delete that waited for a retry (which revived a dependent to blocked)
   * read that dependent as cancelled in its older snapshot, deleted the
   * parent, and the dependent ran without its result. Locked, a dependent
   * changed since the snapshot ends the statement with 40001 and the delete
   * runs again.
   */
  async #waitedOn(trx: Trx, ids: string[]): Promise<Set<string>> {
    if (ids.length === 0) return new Set();
    const rows = await readDependentsLocked(trx, ids);
    return new Set(rows.filter((r) => r.state === 'blocked').map((r) => r.id));
  }

  /** Makes locked jobs available now with at least one more attempt, and wakes their queues' workers. */
  async #makeAvailable(trx: Trx, ids: string[], queues: string[]): Promise<void> {
    if (ids.length === 0) return;
    await trx
      .updateTable('jobs')
      .set({
        state: 'available',
        run_at: sql`now()`,
        finished_at: null,
        max_attempts: sql`greatest(max_attempts, attempts + 1)`,
        cancel_requested_at: null,
        // "Runs again now": an expiry already past (the job was cancelled as expired) no longer holds it back.
        expires_at: sql`CASE WHEN expires_at <= now() THEN NULL ELSE expires_at END`,
      })
      .where(sql<boolean>`id = ANY(${ids}::bigint[])`)
      .execute();
    for (const queue of new Set(queues)) await sql`SELECT pg_notify(${this.deps.channels.jobs}, ${queue})`.execute(trx);
  }

}
