/**
 * The hot path: every statement that enqueues, claims, completes or rescues
 * jobs, hand-written, one fixed shape each, values always as parameters.
 * Everything else in pgq goes through Kysely.
 *
 * Invariants the statements keep:
 * - A claim counts the attempt in the same statement that marks the job
 *   running, and takes rows with FOR UPDATE SKIP LOCKED so two workers never
 *   claim the same job. It succeeds only for a worker whose lease
 *   (`workers.lease_expires_at`) is live, and locks only the rows it takes
 *   (a limited claim also its queue's row and, FOR KEY SHARE, its worker's
 *   registration: see registrationHolds).
 * - A worker's lease is written by that worker alone, from its own
 *   rescueAfterMs; the rescuer takes attempts away only from workers whose
 *   lease has passed, in the same statement that removes their row.
 * - Every write that ends an attempt (complete, fail, snooze, requeue) is
 *   guarded by `state = 'running' AND attempts = <the attempt>`: a late finish
 *   never overwrites a job that was rescued, re-claimed or cancelled since.
 * - Jobs reaching a final state send one NOTIFY per statement on the `done`
 *   channel with their ids ('*' when the list would not fit), so waiters wake.
 * - A statement that settles workflow jobs locks them first (its UPDATE),
 *   then every job their settling may change, in id order, before the row
 *   triggers change them: parents finishing together never deadlock.
 */
import { quoteIdent, statementName } from './identifiers.js';
import { CLAIM_COLUMNS, JOB_COLUMNS, type ClaimRow, type JobRow } from './rows.js';
import type { Queryable, Statement } from './queryable.js';
import { channelNames, notifyDoneSql, notifyDueSql } from '../notify/channels.js';
import { EXPIRABLE_STATES, LIVE_STATES } from '../core/types.js';
import { jsonArrayText } from '../core/json.js';

/** One job to insert. */
export interface JobInsert {
  task: string;
  queue: string;
  /** JSON text of the payload. */
  payload: string;
  priority: number;
  maxAttempts: number;
  /** Absolute run time, or null to use the statement's time + `delayMs` (in a caller's transaction, not its start). */
  runAt: Date | null;
  delayMs: number;
  uniqueKey: string | null;
  timeoutMs: number | null;
  backoffBaseMs: number | null;
  backoffMaxMs: number | null;
  /** JSON text of the job's metadata object. */
  meta: string;
  /** Per-key fairness key; omitted or null: none. */
  concurrencyKey?: string | null;
  /** Absolute expiry, or null to use `expiresInMs`; omitted: none. */
  expiresAt?: Date | null;
  /** Expiry in ms from now (database clock) where `expiresAt` is null; omitted or null: never expires. */
  expiresInMs?: number | null;
}

export interface InsertJobsParams {
  /** The jobs, in order; the statements take them column by column (`insertValues`). */
  jobs: readonly JobInsert[];
}

export interface ClaimJobsParams {
  /** One queue uses JobClaim, several JobClaimMany. */
  queues: string[];
  tasks: string[];
  limit: number;
  /** Jobs the worker could start at once (free slots); limited queues claim no more than this. Default `limit`. */
  startable?: number;
  workerId: string;
  /** The worker's registration (`Registration.registeredAt`): claims only under that row of the id. Null or absent: any row of the id. */
  registeredAt?: string | null;
}

export interface PromoteDueParams {
  queues: string[];
  /** Most jobs made available in one statement. */
  limit: number;
  /** The promoting worker's tasks, and how many it claims next: promoted jobs it will not take wake the queue's other workers. */
  tasks: string[];
  claimable: number;
  now?: Date | null;
}

/**
 * Keys an attempt recorded for `jobs.meta` (`ctx.recordMeta`), one entry per
 * job: JSON text of an object merged into the job's meta by the statement
 * that writes the outcome, or null to leave the meta as it is. Omitted (or
 * all null): the statement binds one NULL and changes no meta.
 */
export type OutcomeMetas = (string | null)[];

export interface CompleteJobsParams {
  ids: string[];
  attempts: number[];
  /** JSON text of each result. */
  results: string[];
  metas?: OutcomeMetas;
  /** Delete the jobs that succeed outside workflows instead of keeping them (retention.succeededMs: 0). */
  deleteSucceeded?: boolean;
}

export interface FailJobsParams {
  ids: string[];
  attempts: number[];
  /** JSON text of each error entry. */
  errors: string[];
  /** Delay before the next attempt when one is left. */
  delaysMs: number[];
  /** True fails the job now, whatever attempts are left. */
  permanent: boolean[];
  metas?: OutcomeMetas;
}

export interface SnoozeJobsParams {
  ids: string[];
  attempts: number[];
  delaysMs: number[];
  /** JSON text of an error entry to record, or null to record nothing. */
  notes: (string | null)[];
  metas?: OutcomeMetas;
}

export interface RescueJobsParams {
  /** Lease of workers from pgq versions that did not write `lease_expires_at`. */
  legacyRescueAfterMs: number;
  now?: Date | null;
}

export interface ReleaseOrphansParams {
  workerId: string;
  /** Gives back only while `workerId` is this registration's (a row of the same id registered since is another worker's). Null: any. */
  registeredAt?: string | null;
  heldIds: string[];
}

export interface RegisterWorkerParams {
  workerId: string;
  hostname: string;
  pid: number;
  queues: string[];
  concurrency: number;
  rescueAfterMs: number;
  /** The task names this worker can run (orphaned-job reports read them); absent: null, knows every task. */
  tasks?: string[];
}

export interface RenewLeaseParams {
  workerId: string;
  /** The registration renewed (`Registration.registeredAt`): a row of the same id registered since is another worker's. */
  registeredAt: string;
  stuckJobs: number;
  loopLagMs: number;
}

/** A worker row as registered: its lease's first expiry, and the registration's own time, which tells it from a later row of the same id. */
export interface Registration {
  leaseExpiresAt: Date;
  /** `workers.started_at`, ISO 8601 to the microsecond. */
  registeredAt: string;
}

export interface AdoptJobsParams {
  /** The id the worker registered under after losing its lease. */
  workerId: string;
  /** The ids whose lease was lost (the first, and any registered by a retry before this one). */
  formerWorkerIds: string[];
  ids: string[];
  attempts: number[];
}

export interface RescuedJob {
  id: string;
  state: string;
  worker_id: string;
}

/** What an outcome statement changed: the ids it wrote (and, for failures, the state each ended in). */
export interface WrittenOutcome {
  id: string;
  state: string;
}

export type HotStatements = ReturnType<typeof createStatements>;

/**
 * The insert statements' parameters ($1 … $15), in `JobInsert` order: one
 * array per column, but the payloads and the metas, JSON texts, each as one
 * JSON array (`jsonArrayText`).
 */
function insertValues({ jobs }: InsertJobsParams): unknown[] {
  const column = <K extends keyof JobInsert>(key: K): (JobInsert[K] | null)[] => jobs.map((job) => job[key] ?? null);
  return [
    column('task'), column('queue'), jsonArrayText(jobs.map((job) => job.payload)), column('priority'), column('maxAttempts'), column('runAt'),
    column('delayMs'), column('uniqueKey'), column('timeoutMs'), column('backoffBaseMs'), column('backoffMaxMs'),
    jsonArrayText(jobs.map((job) => job.meta)), column('concurrencyKey'), column('expiresAt'), column('expiresInMs'),
  ];
}

/**
 * The outcome statements' meta parameter: one JSON array when some job
 * recorded keys, else NULL (read as no elements: `unnest` pads the column
 * with NULLs), so a batch of ordinary jobs binds one NULL instead of a list.
 */
function metasValue(metas: OutcomeMetas | undefined): string | null {
  return metas?.some((m) => m !== null) ? nullableJsonArrayText(metas) : null;
}

/** One JSON array of texts some of which are missing: a missing one is JSON null (read back as SQL NULL by outcomeRows' `json?`). */
function nullableJsonArrayText(texts: readonly (string | null)[]): string {
  return jsonArrayText(texts.map((text) => text ?? 'null'));
}

/**
 * A timestamptz SQL expression as UTC ISO 8601 text to the microsecond,
 * which `::timestamptz` reads back equal whatever the session's settings
 * (a registration's started_at, a leader's expires_at).
 */
export function utcMicrosText(expr: string): string {
  return `to_char(${expr} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;
}

/**
 * SQL that holds while the row of worker `id` in `workers` (both SQL
 * expressions) is the registration `at` (its started_at; a parameter of
 * `Registration.registeredAt`), or always when `at` is null. Uncorrelated,
 * so a statement tests it once, before reading anything else: a process
 * that froze past its lease with a fixed id acts on nothing under the row
 * another process has registered under that id since.
 *
 * With `lock`, the row is locked (FOR KEY SHARE), not only read, for the
 * give-backs, which take running rows by worker id: read from the
 * statement's snapshot, a registration removed by a takeover of the id
 * still in progress passed, the statement then waited on a job row the
 * takeover had claimed again under the same id, and once that committed the
 * row, read again, matched: a give-back took the other process's running
 * attempt. Locked, the test waits for the takeover and finds the row gone,
 * and the rescuer's removal of the row waits for the statement (a
 * heartbeat's UPDATE of the row does not wait on this lock). The limited
 * claim locks it too (queue-statements.ts: it waits on its queue's row and
 * then tests the lease by id alone). The other claims read it without the
 * lock (a lock writes the row, and they are the hot path): they never wait
 * on a row (SKIP LOCKED), take only available rows, which a takeover's claim
 * leaves running, and test the lease at the statement's start, under the
 * registration, with at least a heartbeat of it left (a trusted lease).
 */
export function registrationHolds(workers: string, id: string, at: string, lock: 'lock' | 'read' = 'read'): string {
  return `(${at}::timestamptz IS NULL OR EXISTS (SELECT 1 FROM ${workers} w WHERE w.id = ${id} AND w.started_at = ${at}::timestamptz${lock === 'lock' ? ' FOR KEY SHARE' : ''}))`;
}

/**
 * The SET list that ends a job whose `expires_at` passed before it started
 * (`j` the jobs row): cancelled, with an error entry saying so. Used by the
 * expirer and by an enqueue whose unique key an expired job still holds.
 */
export const EXPIRED_SET = `state = 'cancelled', finished_at = now(),
             errors = j.errors || jsonb_build_array(jsonb_build_object(
               'attempt', j.attempts,
               'message', CASE WHEN j.attempts > 0 THEN 'expired: its retry was not started by its expiry time '
                               ELSE 'expired: not started by its expiry time ' END || to_char(j.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
               'at', now()))`;

/** EXPIRABLE_STATES as an SQL list. */
export const EXPIRABLE_STATES_SQL = `(${EXPIRABLE_STATES.map((state) => `'${state}'`).join(', ')})`;

/** The named statements for one schema. Built once per `Pgq`. */
/** The name of the leadership row the maintenance runs under (`<schema>.leader.name`). */
export const MAINTENANCE_LEASE = 'maintenance';

/** Give-back notes (`requeued`) a job's `errors` keeps, the latest. */
export const REQUEUED_NOTES_KEPT = 20;

export function createStatements(schema: string) {
  const s = quoteIdent(schema);
  const jobs = `${s}.jobs`;
  const workers = `${s}.workers`;
  const queues = `${s}.queues`;
  const channels = channelNames(schema);
  const cols = JOB_COLUMNS.join(', ');
  const jcols = JOB_COLUMNS.map((c) => `j.${c}`).join(', ');
  const name = (n: string, text: string): string => statementName(schema, n, text);
  const liveStates = `(${LIVE_STATES.map((state) => `'${state}'`).join(', ')})`;
  const notifyDone = (from: string): string => notifyDoneSql(channels.done, from);
  // Retried, snoozed and rescued jobs wake the workers of their queues as
  // inserted ones do: another worker may be idle while this one is busy.
  const notifyDue = (from: string): string => notifyDueSql(channels.jobs, from);
  // The rows an outcome (or a give-back, an adoption) names, one per job, to
  // be joined with jobs by id. Each array goes through a sub-select so that
  // the planner does not size the rows from the values (a custom plan sees
  // 500 of them): it then drives the join from them, one primary-key probe
  // each (on a small table, only with the guard as one test of the join:
  // stillRunning). Sized from the values, with statistics taken while no
  // job ran (so "state = 'running'" looks like one row), it read the whole
  // table and compared every row with every value:
  // 100 ms for 500 outcomes on a table of 20,000 jobs, in the first five
  // executions on each connection (before the plan cache goes generic).
  const byRow = (...arrays: string[]): string => `unnest(${arrays.map((a) => `(SELECT ${a})`).join(', ')})`;
  // The same, for outcomes, whose JSON columns (a result, an error, a note,
  // a meta) each come as one JSON array (jsonArrayText), split by
  // json_array_elements, not as a jsonb[] parameter: pg escapes every `"`
  // and `\` of every element of an array parameter, and a result of 1 MB of
  // quotes held the worker's event loop for 270–370 ms. Each JSON array is
  // gathered back into an array (json[]) before the rows are unnested, so
  // the planner counts the rows as it counts an array's (10), not as a
  // set-returning function's (100): counting on 100 outcomes it read a
  // table of 20,000 jobs whole (see byRow). `column` is a name and the
  // parameter, with `json` (cast to jsonb) or `json?` (and a JSON null read
  // as SQL NULL: no meta recorded, no note) for the JSON ones.
  const outcomeRows = (...columns: (readonly [name: string, param: string, json?: 'json' | 'json?'])[]): string => {
    const from = columns.map(([, param, json]) =>
      json ? `(SELECT array_agg(e.value ORDER BY e.n) FROM json_array_elements(${param}::json) WITH ORDINALITY AS e(value, n))` : `(SELECT ${param})`,
    );
    const select = columns.map(([column, , json]) =>
      json === 'json' ? `r.${column}::jsonb AS ${column}` : json === 'json?' ? `nullif(r.${column}::jsonb, 'null') AS ${column}` : `r.${column}`,
    );
    return `(SELECT ${select.join(', ')} FROM unnest(${from.join(', ')}) AS r(${columns.map(([column]) => column).join(', ')}))`;
  };
  // The guard of a write that ends (or moves) an attempt: the job still
  // runs that attempt (and, given `also`, that holds too). See the claim's
  // comment below for why it is one test.
  const stillRunning = (j: string, v: string, also?: string): string =>
    `(${j}.state = 'running' AND ${j}.attempts = ${v}.attempt${also ? ` AND ${also}` : ''}) IS TRUE`;

  // A CTE named `locked`: after the statement's UPDATE has taken the rows
  // it settles, and before their row triggers run, the workflow jobs those
  // triggers may change are locked all at once in id order (see
  // migrations/…_workflow_lock_order.sql), so batches whose parents share
  // children never lock them in crossing orders. A batch with no workflow
  // job does not call the function at all: its first call on a connection
  // compiles it (7 ms of the database's time on each new connection).
  const lockDependents = (succeeded: string, failed: string): string => `locked AS (
      SELECT ${s}.workflow_lock_dependents(x.succeeded, x.failed) AS n
        FROM (SELECT (${succeeded})::bigint[] AS succeeded, (${failed})::bigint[] AS failed) AS x
       WHERE coalesce(cardinality(x.succeeded), 0) + coalesce(cardinality(x.failed), 0) > 0)`;

  // One row per job: ROWS FROM zips the columns' lists as unnest of several
  // arrays does, and the payloads and metas come from their JSON arrays.
  const insertSelect = (where: string): string => `
    INSERT INTO ${jobs} (task, queue, payload, priority, max_attempts, run_at, state, unique_key,
                         timeout_ms, backoff_base_ms, backoff_max_ms, meta, concurrency_key, expires_at)
    SELECT t.task, t.queue, t.payload::jsonb, t.priority, t.max_attempts, t.at,
           CASE WHEN t.at <= statement_timestamp() THEN 'available' ELSE 'scheduled' END,
           t.unique_key, t.timeout_ms, t.backoff_base_ms, t.backoff_max_ms, t.meta::jsonb, t.concurrency_key,
           coalesce(t.expires_at, statement_timestamp() + t.expires_in_ms * interval '1 millisecond')
      FROM (SELECT u.*, coalesce(u.run_at, statement_timestamp() + u.delay_ms * interval '1 millisecond') AS at
              FROM ROWS FROM (unnest($1::text[]), unnest($2::text[]), json_array_elements($3::json), unnest($4::int[]),
                              unnest($5::int[]), unnest($6::timestamptz[]), unnest($7::float8[]), unnest($8::text[]),
                              unnest($9::int[]), unnest($10::int[]), unnest($11::int[]), json_array_elements($12::json),
                              unnest($13::text[]), unnest($14::timestamptz[]), unnest($15::float8[]))
                AS u(task, queue, payload, priority, max_attempts, run_at, delay_ms, unique_key,
                     timeout_ms, backoff_base_ms, backoff_max_ms, meta, concurrency_key, expires_at, expires_in_ms)) AS t
    ${where}
    ON CONFLICT (task, unique_key) WHERE unique_key IS NOT NULL AND state IN ${liveStates} DO NOTHING`;

  // The insert trigger sends NOTIFY at commit for due jobs.
  const insertJobs = `${insertSelect('')}
    RETURNING ${cols}`;

  // The same insert with the trigger's NOTIFY switched off for this
  // transaction: NOTIFY takes a database-wide lock at commit, so concurrent
  // enqueues that each notify commit one at a time. The enqueuer sends one
  // NOTIFY for a burst of these after they commit.
  const insertJobsQuiet = `
    WITH quiet AS (SELECT set_config('pgq.skip_notify', 'on', true)),
    ins AS (${insertSelect('WHERE (SELECT count(*) FROM quiet) = 1')}
      RETURNING ${cols})
    SELECT * FROM ins`;

  const notifyQueues = `SELECT pg_notify('${channels.jobs}', q) FROM unnest($1::text[]) AS q`;

  // An expired job that no expirer has ended yet (none runs without a
  // leader) still holds its unique key: ended here, as the expirer would,
  // so that an enqueue of that key inserts a job that can run. Through a
  // function of the schema's owner (migration 1764890000000): an
  // enqueue-only role may not update jobs.
  const expireUniqueHolder = `SELECT e::text AS id FROM ${s}.expire_unique_holder($1, $2) AS e`;

  const getLiveByUniqueKey = `
    SELECT ${jcols}, j.cancel_requested_at
      FROM ${jobs} j JOIN unnest($1::text[], $2::text[]) AS k(task, unique_key)
        ON j.task = k.task AND j.unique_key = k.unique_key
     WHERE j.state IN ${liveStates}`;

  // The claim reads only `available` rows in index order, so its cost does
  // not grow with the jobs waiting. It takes rows only while the claiming
  // worker's lease is live (one InitPlan: a lost lease scans nothing). The
  // update finds the picked rows by `id = ANY(ARRAY(...))`: a join there can
  // turn, under a generic plan, into a hash join over the whole table.
  //
  // Writes that end an attempt test `(state = 'running' AND attempts = n)
  // IS TRUE` (stillRunning), which no partial index matches, so the planner
  // cannot prefer an index over running rows (full of dead entries between
  // vacuums) to the primary key. The attempt in the same test makes it a
  // test of the join, not of the jobs alone (a test of the worker's id too,
  // where there is one): as a test of the jobs alone, statistics taken
  // while none ran made it look like one row, and on a table of 1,000 jobs
  // the planner read the table once and, for each row, every outcome (a
  // batch of 1,000 took 500 ms, comparing a million pairs). Counted as the
  // whole table, the jobs are read by primary key, one probe per outcome,
  // or (a small table) hashed against the outcomes once.
  // A job past its expires_at is never claimed (the claim functions skip
  // it; the expirer cancels it).
  // The live lease must be the claiming worker's own registration ($5, as
  // in registrationHolds, tested in the same primary-key lookup).
  const leaseLive = `EXISTS (SELECT 1 FROM ${workers} w
                              WHERE w.id = $4 AND w.lease_expires_at > now() AND ($5::timestamptz IS NULL OR w.started_at = $5::timestamptz))`;
  // A paused queue is skipped by the claim itself (one primary-key lookup per
  // queue and claim), so a pause holds for every claim whose statement starts
  // after it commits, whether or not the worker's cached settings have it yet.
  const notPaused = (queue: string): string => `NOT EXISTS (SELECT 1 FROM ${queues} WHERE name = ${queue} AND paused)`;
  const claimUpdate = `
    UPDATE ${jobs} j
       SET state = 'running', attempts = j.attempts + 1, started_at = now(), worker_id = $4, cancel_requested_at = NULL
     WHERE j.id = ANY(ARRAY(SELECT id FROM picked))
    RETURNING ${CLAIM_COLUMNS}`;

  // One queue: lock straight off the claim index, exactly the rows taken.
  // claim_candidates (migration 1764730000000) is that SELECT ... FOR UPDATE
  // SKIP LOCKED, planned with bitmap scans and sorts off so that a table
  // without statistics is still read in index order; the lease and pause
  // checks gate it (one-time filters: nothing is locked without a live lease
  // or in a paused queue).
  const claimJobs = `
    WITH picked AS MATERIALIZED (
      SELECT c.id FROM ${s}.claim_candidates($1, $2::text[], $3) AS c(id)
       WHERE ${leaseLive} AND ${notPaused('$1')}
    )${claimUpdate}`;

  // Several queues: read each queue's head in index order without locking
  // (claim_candidates_many, migration 1764740000000: a LATERAL scan per
  // queue, planned like claim_candidates), then lock in global order and
  // stop at the limit, so rows of other queues that this claim will not
  // take stay claimable by every other worker. Paused queues are left out
  // of the list; the lease check gates the read.
  const claimJobsMany = `
    WITH candidates AS MATERIALIZED (
      SELECT c.id FROM ${s}.claim_candidates_many(
          ARRAY(SELECT queue FROM unnest($1::text[]) AS u(queue) WHERE ${notPaused('u.queue')}), $2::text[], $3) AS c(id)
       WHERE ${leaseLive}
    ), picked AS MATERIALIZED (
      SELECT id FROM ${jobs}
       WHERE id = ANY(ARRAY(SELECT id FROM candidates)) AND state = 'available'
       ORDER BY priority DESC, run_at, id
       LIMIT $3
       FOR UPDATE SKIP LOCKED
    )${claimUpdate}`;

  // Scheduled and retryable jobs whose time has come become available. A
  // worker promotes every task's jobs of its queues and then claims up to
  // $5 of its tasks' ($4). The queues are told when it promoted jobs of a
  // task it does not run, or more than it claims: the workers that would
  // take them may have looked, found nothing and gone to sleep before this
  // commits. Otherwise a NOTIFY would only wake each of them to claim nothing.
  //
  // A due row this statement saw and did not promote (`seen`) was skipped
  // locked, or another promotion made it available after this one's
  // snapshot: the FOR UPDATE then locks the new version before its recheck
  // fails, and holds that lock to commit. A claim meanwhile skips the row
  // (SKIP LOCKED), and the worker that promoted it, which claims its own
  // tasks' jobs without a NOTIFY, may have found nothing and slept. So the
  // worker of this statement claims next (it is told how many it saw), and
  // the queues are told, after this commits and lets the rows go, when it
  // will not take them itself: rows of a task it does not run, or more
  // than it claims. (A NOTIFY for every such row woke every idle worker of
  // the queue again at each due time: claims per delayed job doubled.)
  const dueFirst = `state IN ('scheduled', 'retryable') AND run_at <= coalesce($2::timestamptz, now()) AND queue = ANY($1::text[])
                     ORDER BY run_at
                     LIMIT $3`;
  // Jobs in `rel` (with `task`) that the promoting worker will not claim next itself.
  const notAllOurs = (rel: string): string => `((SELECT count(*) FROM ${rel}) > $5 OR EXISTS (SELECT 1 FROM ${rel} WHERE task <> ALL($4::text[])))`;
  const promoteDue = `
    WITH promoted AS (
      UPDATE ${jobs} SET state = 'available'
       WHERE id IN (SELECT id FROM ${jobs} WHERE ${dueFirst} FOR UPDATE SKIP LOCKED)
      RETURNING id, queue, state, run_at, task
    ), woken AS (${notifyDueSql(channels.jobs, 'promoted', notAllOurs('promoted'))}),
    seen AS (
      SELECT d.queue, d.task FROM (SELECT id, queue, task FROM ${jobs} WHERE ${dueFirst}) AS d
       WHERE d.id NOT IN (SELECT id FROM promoted)
    ), missed AS (
      SELECT pg_notify('${channels.jobs}', m.queue) FROM (SELECT DISTINCT queue FROM seen) AS m
       WHERE ${notAllOurs('seen')}
    )
    SELECT (SELECT count(*)::int FROM promoted) AS n, (SELECT count(*)::int FROM seen) AS seen,
           (SELECT count(*) FROM woken) AS w, (SELECT count(*) FROM missed) AS m`;

  // The next due time and the database's clock, both in epoch ms: a
  // worker measures the wait on the database's clock (its own may differ).
  const nextRunAt = `
    SELECT (extract(epoch FROM (SELECT run_at FROM ${jobs}
                                 WHERE state IN ('scheduled', 'retryable') AND queue = ANY($1::text[]) AND task = ANY($2::text[])
                                 ORDER BY run_at LIMIT 1)) * 1000)::float8 AS run_at_ms,
           (extract(epoch FROM clock_timestamp()) * 1000)::float8 AS now_ms`;

  // Outcomes commit without waiting for the WAL flush (synchronous_commit
  // off for this statement's transaction only): if PostgreSQL crashes before
  // the flush, the job is still running for a worker that believes it done;
  // that worker gives it back (releaseOrphans) and it runs again —
  // at-least-once, as promised. Claims and enqueues stay durable.
  //
  // Each outcome statement also merges the keys the attempt recorded
  // (ctx.recordMeta) into `meta`; a job that recorded none keeps its meta
  // datum as it is (no new value built, nothing more written).
  const mergeMeta = `meta = CASE WHEN v.meta IS NULL THEN j.meta ELSE j.meta || v.meta END`;
  // A job whose cancel was asked for while it ran (cancel_requested_at, see
  // cancelLockedJobs) ends `cancelled` whatever its attempt ended with: every
  // statement that ends an attempt says so, and clears the request.
  const cancelAsked = `j.cancel_requested_at IS NOT NULL`;
  // What a completion writes, and the workflow jobs it locks first: the same
  // whether the statement keeps the rows (completeJobs) or deletes some.
  const completedSet = `state = CASE WHEN ${cancelAsked} THEN 'cancelled' ELSE 'succeeded' END, cancel_requested_at = NULL,
             finished_at = now(), result = v.result, ${mergeMeta}`;
  const completedLocks = lockDependents(
    `ARRAY(SELECT id FROM done WHERE workflow_id IS NOT NULL AND state = 'succeeded')`,
    `ARRAY(SELECT id FROM done WHERE workflow_id IS NOT NULL AND state = 'cancelled')`,
  );
  const completeJobs = `
    WITH async AS (SELECT set_config('synchronous_commit', 'off', true)),
    done AS (
      UPDATE ${jobs} j
         SET ${completedSet}
        FROM ${outcomeRows(['id', '$1::bigint[]'], ['attempt', '$2::int[]'], ['result', '$3', 'json'], ['meta', '$4', 'json?'])} AS v
       WHERE j.id = v.id AND ${stillRunning('j', 'v')}
        AND (SELECT count(*) FROM async) = 1
      RETURNING j.id, j.workflow_id, j.state
    ), ${completedLocks},
    notified AS (${notifyDone('done')})
    SELECT ARRAY(SELECT u.n FROM unnest($1::bigint[]) WITH ORDINALITY AS u(id, n) WHERE u.id NOT IN (SELECT id FROM done))::int[] AS skipped,
           ARRAY(SELECT u.n FROM unnest($1::bigint[]) WITH ORDINALITY AS u(id, n)
                  WHERE u.id IN (SELECT id FROM done WHERE state = 'cancelled'))::int[] AS cancelled
      FROM (SELECT count(*) FROM notified) AS n, (SELECT count(*) FROM locked) AS l`;

  // The same, for a worker whose retention keeps succeeded jobs 0 ms
  // (\`retention.succeededMs: 0\`): a job outside any workflow that succeeds,
  // with no cancel asked, is deleted by the statement that settles its
  // attempt (one write, where the UPDATE and the pruner's later DELETE made
  // two). The UPDATE takes the rest (workflow steps keep their row for their
  // dependents; a cancel asked for ends \`cancelled\`), never a row the DELETE
  // took: \`mine\` has locked and sorted them all first.
  const completeDeletingJobs = `
    WITH async AS (SELECT set_config('synchronous_commit', 'off', true)),
    v AS MATERIALIZED (
      SELECT * FROM ${outcomeRows(['id', '$1::bigint[]'], ['attempt', '$2::int[]'], ['result', '$3', 'json'], ['meta', '$4', 'json?'])} AS v
    ),
    -- Every row the statement settles, locked first in id order (as every
    -- statement that locks several jobs does: a bulk cancel crossing a
    -- batch locked in two passes deadlocked), read as locked.
    mine AS MATERIALIZED (
      SELECT j.id, (j.workflow_id IS NULL AND j.cancel_requested_at IS NULL) AS deletable
        FROM ${jobs} j JOIN v ON v.id = j.id
       WHERE ${stillRunning('j', 'v')}
         AND (SELECT count(*) FROM async) = 1
       ORDER BY j.id
         FOR UPDATE OF j
    ),
    gone AS (
      DELETE FROM ${jobs} j WHERE j.id IN (SELECT id FROM mine WHERE deletable)
      RETURNING j.id
    ),
    done AS (
      UPDATE ${jobs} j
         SET ${completedSet}
        FROM v
       WHERE j.id = v.id AND j.id IN (SELECT id FROM mine WHERE NOT deletable)
      RETURNING j.id, j.workflow_id, j.state
    ), ${completedLocks},
    notified AS (${notifyDone('(SELECT id FROM done UNION ALL SELECT id FROM gone) AS ended')})
    SELECT ARRAY(SELECT u.n FROM unnest($1::bigint[]) WITH ORDINALITY AS u(id, n)
                  WHERE u.id NOT IN (SELECT id FROM done) AND u.id NOT IN (SELECT id FROM gone))::int[] AS skipped,
           ARRAY(SELECT u.n FROM unnest($1::bigint[]) WITH ORDINALITY AS u(id, n)
                  WHERE u.id IN (SELECT id FROM done WHERE state = 'cancelled'))::int[] AS cancelled
      FROM (SELECT count(*) FROM notified) AS n, (SELECT count(*) FROM locked) AS l`;

  const failJobs = `
    WITH done AS (
      UPDATE ${jobs} j
         SET state = CASE WHEN ${cancelAsked} THEN 'cancelled'
                          WHEN v.permanent OR j.attempts >= j.max_attempts THEN 'failed' ELSE 'retryable' END,
             run_at = CASE WHEN ${cancelAsked} OR v.permanent OR j.attempts >= j.max_attempts THEN j.run_at
                           ELSE now() + v.delay_ms * interval '1 millisecond' END,
             finished_at = CASE WHEN ${cancelAsked} OR v.permanent OR j.attempts >= j.max_attempts THEN now() END,
             cancel_requested_at = NULL,
             errors = j.errors || jsonb_build_array(v.error),
             ${mergeMeta}
        FROM ${outcomeRows(['id', '$1::bigint[]'], ['attempt', '$2::int[]'], ['error', '$3', 'json'], ['delay_ms', '$4::float8[]'],
                           ['permanent', '$5::bool[]'], ['meta', '$6', 'json?'])} AS v
       WHERE j.id = v.id AND ${stillRunning('j', 'v')}
      RETURNING j.id, j.state, j.workflow_id, j.queue, j.run_at
    ), ${lockDependents('NULL', `ARRAY(SELECT id FROM done WHERE state IN ('failed', 'cancelled') AND workflow_id IS NOT NULL)`)},
    notified AS (${notifyDone(`(SELECT id FROM done WHERE state IN ('failed', 'cancelled')) AS f`)}),
    woken AS (${notifyDue('done')})
    SELECT id::text AS id, state FROM done, (SELECT count(*) FROM notified) AS n, (SELECT count(*) FROM locked) AS l,
           (SELECT count(*) FROM woken) AS w`;

  // A give-back at a worker's stop notes it in `errors` (`requeued`); a job
  // longer than the time between its workers' restarts is given back at
  // every one. It keeps the newest REQUEUED_NOTES_KEPT notes, the one added
  // included (a history grown longer by an older pgq is cut back at its
  // next give-back): `errors` comes back with every claim of the job.
  // Failures, which the backoff counts, and other notes stay, in order.
  const noteGiveBack = `CASE WHEN jsonb_typeof(j.errors) <> 'array' THEN j.errors ELSE coalesce((
      SELECT jsonb_agg(k.entry ORDER BY k.n) FROM (
        SELECT e.entry, e.n, count(*) FILTER (WHERE e.entry @> '{"requeued": true}') OVER (ORDER BY e.n DESC) AS newer
          FROM jsonb_array_elements(j.errors) WITH ORDINALITY AS e(entry, n)) AS k
       WHERE NOT (k.entry @> '{"requeued": true}' AND k.newer >= ${REQUEUED_NOTES_KEPT})), '[]') END || jsonb_build_array(v.note)`;

  // A snooze (and a requeue at shutdown) gives the attempt back by raising
  // max_attempts instead of lowering attempts, so attempt numbers only grow
  // and the guard above stays a sound fence.
  const snoozeJobs = `
    WITH done AS (
      UPDATE ${jobs} j
         SET state = CASE WHEN ${cancelAsked} THEN 'cancelled' WHEN v.delay_ms <= 0 THEN 'available' ELSE 'scheduled' END,
             run_at = CASE WHEN ${cancelAsked} THEN j.run_at ELSE now() + v.delay_ms * interval '1 millisecond' END,
             max_attempts = CASE WHEN ${cancelAsked} THEN j.max_attempts ELSE j.max_attempts + 1 END,
             finished_at = CASE WHEN ${cancelAsked} THEN now() END,
             cancel_requested_at = NULL,
             errors = CASE WHEN v.note IS NULL THEN j.errors ELSE ${noteGiveBack} END,
             ${mergeMeta}
        FROM ${outcomeRows(['id', '$1::bigint[]'], ['attempt', '$2::int[]'], ['delay_ms', '$3::float8[]'], ['note', '$4', 'json?'], ['meta', '$5', 'json?'])} AS v
       WHERE j.id = v.id AND ${stillRunning('j', 'v')}
      RETURNING j.id, j.state, j.workflow_id, j.queue, j.run_at
    ), ${lockDependents('NULL', `ARRAY(SELECT id FROM done WHERE state = 'cancelled' AND workflow_id IS NOT NULL)`)},
    notified AS (${notifyDone(`(SELECT id FROM done WHERE state = 'cancelled') AS f`)}),
    woken AS (${notifyDue('done')})
    SELECT id::text AS id, state FROM done, (SELECT count(*) FROM notified) AS n, (SELECT count(*) FROM locked) AS l,
           (SELECT count(*) FROM woken) AS w`;

  // Jobs of workers whose lease has passed: retried (the attempt they were
  // in is counted) or failed when none is left. Each lease was written by
  // its worker from its own rescueAfterMs; the rescuer's settings play no
  // part (except for rows of pgq versions before leases: $1). The dead
  // workers' rows go in the same statement, so a heartbeat either renews a
  // lease before this runs or finds the row gone after. A running job whose
  // worker row is missing altogether is rescued too.
  const rescueJobs = `
    WITH dead AS (
      DELETE FROM ${workers}
       WHERE coalesce(lease_expires_at, last_heartbeat_at + $1 * interval '1 millisecond') < coalesce($2::timestamptz, now())
      RETURNING id, coalesce(rescue_after_ms, $1) AS rescue_after_ms
    ), rescued AS (
      UPDATE ${jobs} j
         SET state = CASE WHEN ${cancelAsked} THEN 'cancelled' WHEN j.attempts >= j.max_attempts THEN 'failed' ELSE 'available' END,
             run_at = now(),
             finished_at = CASE WHEN ${cancelAsked} OR j.attempts >= j.max_attempts THEN now() END,
             cancel_requested_at = NULL,
             errors = j.errors || jsonb_build_array(jsonb_build_object(
               'attempt', j.attempts,
               'message', 'rescued: the lease of worker ' || coalesce(j.worker_id, '(none)') || ' expired (no heartbeat for '
                          || coalesce((SELECT d.rescue_after_ms FROM dead d WHERE d.id = j.worker_id)::text || ' ms, its rescueAfterMs',
                                      'a while: its row is gone')
                          || ') while it ran this job',
               'at', now()))
       WHERE j.state = 'running'
         AND (j.worker_id IS NULL
              OR j.worker_id IN (SELECT id FROM dead)
              OR NOT EXISTS (SELECT 1 FROM ${workers} w WHERE w.id = j.worker_id))
         -- Only attempts started before this statement. A row this statement
         -- waited for is checked again at its newest version, but the
         -- workers above are read as they stood when it began: a claim by a
         -- worker registered since (a live lease) would look ownerless.
         AND coalesce(j.started_at, '-infinity') < statement_timestamp()
      RETURNING j.id, j.state, j.worker_id, j.workflow_id, j.queue, j.run_at
    ), ${lockDependents('NULL', `ARRAY(SELECT id FROM rescued WHERE state IN ('failed', 'cancelled') AND workflow_id IS NOT NULL)`)},
    notified AS (
      ${notifyDone(`(SELECT id FROM rescued WHERE state IN ('failed', 'cancelled')) AS f`)}
    ),
    woken AS (${notifyDue('rescued')})
    SELECT id::text AS id, state, worker_id FROM rescued, (SELECT count(*) FROM notified) AS n, (SELECT count(*) FROM locked) AS l,
           (SELECT count(*) FROM woken) AS w`;

  // A claimed job whose handler never ran goes back: available, due at once,
  // the attempt not counted; or, when its cancel was asked for meanwhile,
  // cancelled.
  const giveBack = `state = CASE WHEN cancel_requested_at IS NULL THEN 'available' ELSE 'cancelled' END,
    attempts = attempts - 1, run_at = now(),
    finished_at = CASE WHEN cancel_requested_at IS NULL THEN NULL ELSE now() END, cancel_requested_at = NULL`;

  // A give-back that ended jobs cancelled settles them like any outcome:
  // their workflow dependents locked first, their waiters told.
  const settleCancelled = (from: string): string => `${lockDependents('NULL', `ARRAY(SELECT id FROM ${from} WHERE state = 'cancelled' AND workflow_id IS NOT NULL)`)},
    notified AS (${notifyDone(`(SELECT id FROM ${from} WHERE state = 'cancelled') AS c`)})`;

  // Rows marked running for this worker that it does not hold: a claim whose
  // reply was lost with the connection. The handler never ran, so the attempt
  // is given back and the job is due again at once. Only while the id is
  // still this worker's registration ($3): rows under a row of the id that
  // another process registered since are that process's.
  const releaseOrphans = `
    WITH released AS (
      UPDATE ${jobs}
         SET ${giveBack}
       WHERE state = 'running' AND worker_id = $1 AND id <> ALL($2::bigint[])
         AND ${registrationHolds(workers, '$1', '$3', 'lock')}
      RETURNING id, state, workflow_id
    ), ${settleCancelled('released')}
    SELECT id FROM released, (SELECT count(*) FROM notified) AS n, (SELECT count(*) FROM locked) AS l`;

  // Prefetched jobs a stopping worker never started: available again, the
  // attempt given back (no handler ran). The attempts ($2 ids, $3 attempt
  // numbers) under any id this worker has registered under ($1): during the
  // adoption after a lost lease a held attempt may still be under the lost
  // id, or already under the new one.
  const releaseUnstarted = `
    WITH released AS (
      UPDATE ${jobs} j
         SET ${giveBack}
        FROM ${byRow('$2::bigint[]', '$3::int[]')} AS h(id, attempt)
       WHERE j.id = h.id AND ${stillRunning('j', 'h', 'j.worker_id = ANY($1::text[])')}
      RETURNING j.id, j.state, j.workflow_id
    ), ${settleCancelled('released')}
    SELECT (SELECT count(*) FROM released)::int AS released, (SELECT count(*) FROM notified) AS n, (SELECT count(*) FROM locked) AS l`;

  // The same give-back, run by the lease thread while the worker's event
  // loop is blocked (held-jobs.ts): the held ids ($2), and with $3 (a claim
  // was in flight; the last claim taken in, epoch microseconds) the rows of
  // that claim, which started later than every claim the worker took in.
  // It also wakes the queues' workers, and says how many went back.
  const releaseHeld = `
    WITH released AS (
      UPDATE ${jobs}
         SET ${giveBack}
       WHERE worker_id = $1 AND state = 'running'
         AND (id = ANY($2::bigint[])
              OR ($3::int8 IS NOT NULL AND started_at > 'epoch'::timestamptz + $3::int8 * interval '1 microsecond'))
         AND ${registrationHolds(workers, '$1', '$4', 'lock')}
      RETURNING id, queue, state, workflow_id
    ), woken AS (
      SELECT pg_notify('${channels.jobs}', q.queue) FROM (SELECT DISTINCT queue FROM released WHERE state = 'available') AS q
    ), ${settleCancelled('released')}
    SELECT (SELECT count(*)::int FROM released) AS n,
           (SELECT count(*)::int FROM released WHERE id = ANY($2::bigint[])) AS held,
           (SELECT count(*)::int FROM woken) AS queues,
           (SELECT count(*) FROM notified) AS done, (SELECT count(*) FROM locked) AS l`;

  // A worker registers once per lease; an id whose row exists is refused
  // (two live workers never share an id, and a lost lease is never quietly
  // re-taken: the worker registers under a new id and adopts what is still
  // its own). Renewing and removing the row name the registration too (its
  // started_at, to the microsecond): a process that froze past its lease
  // with a fixed id must not renew, or remove, the row another process
  // registered under that id since; it finds its lease lost instead.
  const registerWorker = `
    INSERT INTO ${workers} (id, hostname, pid, queues, concurrency, rescue_after_ms, tasks, lease_expires_at)
    VALUES ($1, $2, $3, $4::text[], $5, $6::int, $7::text[], now() + $6::int * interval '1 millisecond')
    ON CONFLICT (id) DO NOTHING
    RETURNING lease_expires_at, ${utcMicrosText('started_at')} AS registered_at`;

  const deregisterWorker = `DELETE FROM ${workers} WHERE id = $1 AND started_at = $2::timestamptz`;
  // The lease of the row registered under an id: ms left ($2 the rescueAfterMs of rows of older versions, which wrote
  // no lease), and the lease as text, which a renewal changes.
  const workerLease = `
    SELECT (extract(epoch FROM coalesce(lease_expires_at, last_heartbeat_at + coalesce(rescue_after_ms, $2) * interval '1 millisecond') - now()) * 1000)::float8 AS left_ms,
           coalesce(lease_expires_at, last_heartbeat_at)::text AS lease
      FROM ${workers} WHERE id = $1`;
  // Not when another process has registered the id since ($2: the
  // registration it was held under): a fixed id restarted elsewhere may lead
  // under it now. Only the lease this worker last wrote ($3, its
  // expires_at): the registration is read from the statement's snapshot, so
  // a takeover that committed while the DELETE waited on the leader row
  // passed that test; its renewal of the lease did not pass this one (the
  // row is tested again, as it stands, once the wait ends).
  const releaseLeadership = `
    DELETE FROM ${s}.leader
     WHERE name = '${MAINTENANCE_LEASE}' AND leader_id = $1 AND expires_at = $3::timestamptz
       AND NOT EXISTS (SELECT 1 FROM ${workers} w WHERE w.id = $1 AND w.started_at <> $2::timestamptz)`;

  // The jobs this worker holds whose cancel was asked for: read when the
  // cancel channel may have been missed (listen: false, LISTEN down).
  const cancelRequested = `
    SELECT id::text AS id FROM ${jobs}
     WHERE state = 'running' AND worker_id = $1 AND cancel_requested_at IS NOT NULL`;

  // Renews the lease from the worker's own rescueAfterMs. No row: the lease
  // was lost (the rescuer removed it, and perhaps another process has
  // registered the same id since: $4, the registration, tells them apart).
  const renewLease = `
    UPDATE ${workers}
       SET last_heartbeat_at = now(), lease_expires_at = now() + rescue_after_ms * interval '1 millisecond',
           stuck_jobs = $2, loop_lag_ms = $3
     WHERE id = $1 AND started_at = $4::timestamptz
    RETURNING lease_expires_at`;

  // After a lost lease: the attempts still running under an old id ($2: the
  // lost one, and any a failed retry registered), in the same attempt, move
  // to the new id ($1); one already under it counts as kept too. The others
  // were rescued.
  const adoptJobs = `
    UPDATE ${jobs} j SET worker_id = $1
      FROM ${byRow('$3::bigint[]', '$4::int[]')} AS v(id, attempt)
     WHERE j.id = v.id AND ${stillRunning('j', 'v', '(j.worker_id = $1 OR j.worker_id = ANY($2::text[]))')}
    RETURNING j.id::text AS id, j.attempts`;

  return {
    /** JobInsertMany: inserts jobs, skipping those whose unique key matches a live job. */
    insertJobs(db: Queryable, p: InsertJobsParams): Promise<JobRow[]> {
      return db.query<JobRow>({ name: name('insert_jobs', insertJobs), text: insertJobs, values: insertValues(p) });
    },

    /** JobInsertManyQuiet: as insertJobs, without the NOTIFY (the caller notifies after commit). */
    insertJobsQuiet(db: Queryable, p: InsertJobsParams): Promise<JobRow[]> {
      return db.query<JobRow>({ name: name('insert_jobs_quiet', insertJobsQuiet), text: insertJobsQuiet, values: insertValues(p) });
    },

    /** JobsNotify: wakes the workers of these queues. */
    async notifyQueues(db: Queryable, queues: string[]): Promise<void> {
      await db.query({ name: name('notify_queues', notifyQueues), text: notifyQueues, values: [queues] });
    },

    /** JobGetLiveByUniqueKey: the live jobs holding these (task, unique_key) pairs. */
    getLiveByUniqueKey(db: Queryable, p: { tasks: string[]; uniqueKeys: string[] }): Promise<JobRow[]> {
      return db.query<JobRow>({ name: name('live_by_key', getLiveByUniqueKey), text: getLiveByUniqueKey, values: [p.tasks, p.uniqueKeys] });
    },

    /** JobExpireUniqueHolder: ends (cancelled, as the expirer does) a job not started by its expiry that holds `uniqueKey`; returns its id, or nothing. */
    expireUniqueHolder(db: Queryable, p: { task: string; uniqueKey: string }): Promise<{ id: string }[]> {
      return db.query<{ id: string }>({ name: name('expire_key_holder', expireUniqueHolder), text: expireUniqueHolder, values: [p.task, p.uniqueKey] });
    },

    /**
     * JobClaim / JobClaimMany: marks up to `limit` due jobs running for this
     * worker and counts the attempt, while the worker's lease is live.
     */
    claimJobs(db: Queryable, p: ClaimJobsParams): Promise<ClaimRow[]> {
      if (p.queues.length === 1) {
        return db.query<ClaimRow>({ name: name('claim', claimJobs), text: claimJobs, values: [p.queues[0], p.tasks, p.limit, p.workerId, p.registeredAt ?? null] });
      }
      return db.query<ClaimRow>({ name: name('claim_many', claimJobsMany), text: claimJobsMany, values: [p.queues, p.tasks, p.limit, p.workerId, p.registeredAt ?? null] });
    },

    /**
     * JobPromoteDue: scheduled and retryable jobs that are due become
     * available; returns how many, and how many due ones it saw and did not
     * promote (another promotion's, or locked: the caller claims next).
     */
    async promoteDue(db: Queryable, p: PromoteDueParams): Promise<{ promoted: number; seen: number }> {
      const rows = await db.query<{ n: number; seen: number }>({ name: name('promote_due', promoteDue), text: promoteDue, values: [p.queues, p.now ?? null, p.limit, p.tasks, p.claimable] });
      return { promoted: rows[0]?.n ?? 0, seen: rows[0]?.seen ?? 0 };
    },

    /**
     * JobNextRunAt: when the earliest scheduled or retryable job of these
     * queues becomes due (null when none waits), and the database's clock,
     * both epoch ms.
     */
    async nextRunAt(db: Queryable, p: { queues: string[]; tasks: string[] }): Promise<{ runAtMs: number | null; nowMs: number }> {
      const [row] = await db.query<{ run_at_ms: number | null; now_ms: number }>({ name: name('next_run_at', nextRunAt), text: nextRunAt, values: [p.queues, p.tasks] });
      // Numbers as pg reads float8 (an application's pool may read them as text).
      return { runAtMs: row?.run_at_ms == null ? null : Number(row.run_at_ms), nowMs: row ? Number(row.now_ms) : Date.now() };
    },

    /**
     * JobCompleteMany: succeeded, with the result, for jobs still running in
     * that attempt. Returns the positions in `ids` (from 1) of those it
     * skipped (the guard found them no longer running in that attempt), not
     * the ones it wrote: those are nearly all of them, and sending each back
     * cost more than the rest.
     */
    async completeJobs(db: Queryable, p: CompleteJobsParams): Promise<{ skipped: number[]; cancelled: number[] }> {
      const rows = await db.query<{ skipped: number[]; cancelled: number[] }>({
        ...(p.deleteSucceeded
          ? { name: name('complete_deleting', completeDeletingJobs), text: completeDeletingJobs }
          : { name: name('complete', completeJobs), text: completeJobs }),
        values: [p.ids, p.attempts, jsonArrayText(p.results), metasValue(p.metas)],
      });
      return { skipped: rows[0]?.skipped ?? [], cancelled: rows[0]?.cancelled ?? [] };
    },

    /** JobFailMany: retryable after the delay, or failed when permanent or out of attempts. */
    failJobs(db: Queryable, p: FailJobsParams): Promise<WrittenOutcome[]> {
      return db.query<WrittenOutcome>({
        name: name('fail', failJobs),
        text: failJobs,
        values: [p.ids, p.attempts, jsonArrayText(p.errors), p.delaysMs, p.permanent, metasValue(p.metas)],
      });
    },

    /** JobSnoozeMany: due again after the delay; the attempt does not count. */
    snoozeJobs(db: Queryable, p: SnoozeJobsParams): Promise<WrittenOutcome[]> {
      return db.query<WrittenOutcome>({ name: name('snooze', snoozeJobs), text: snoozeJobs, values: [p.ids, p.attempts, p.delaysMs, nullableJsonArrayText(p.notes), metasValue(p.metas)] });
    },

    /** JobRescue: retries or fails the running jobs of workers whose lease has passed. */
    rescueJobs(db: Queryable, p: RescueJobsParams): Promise<RescuedJob[]> {
      return db.query<RescuedJob>({ name: name('rescue', rescueJobs), text: rescueJobs, values: [p.legacyRescueAfterMs, p.now ?? null] });
    },

    /** JobReleaseOrphans: gives back running rows of this worker that it does not hold. */
    releaseOrphans(db: Queryable, p: ReleaseOrphansParams): Promise<{ id: string }[]> {
      return db.query({ name: name('release_orphans', releaseOrphans), text: releaseOrphans, values: [p.workerId, p.heldIds, p.registeredAt ?? null] });
    },

    /** JobReleaseUnstarted: gives back held attempts this worker never started; returns how many (the others were no longer running in that attempt). */
    async releaseUnstarted(db: Queryable, p: { workerIds: readonly string[]; attempts: readonly (readonly [string, number])[] }): Promise<number> {
      const rows = await db.query<{ released: number }>({
        name: name('release_unstarted', releaseUnstarted),
        text: releaseUnstarted,
        values: [p.workerIds, p.attempts.map(([id]) => id), p.attempts.map(([, attempt]) => attempt)],
      });
      return rows[0]?.released ?? 0;
    },

    /** WorkerRegister: a new lease for this id; null when the id is already registered. */
    async registerWorker(db: Queryable, p: RegisterWorkerParams): Promise<Registration | null> {
      const rows = await db.query<{ lease_expires_at: Date; registered_at: string }>({
        name: name('register_worker', registerWorker),
        text: registerWorker,
        values: [p.workerId, p.hostname, p.pid, p.queues, p.concurrency, p.rescueAfterMs, p.tasks ?? null],
      });
      const row = rows[0];
      return row ? { leaseExpiresAt: row.lease_expires_at, registeredAt: row.registered_at } : null;
    },

    /** WorkerLease: how long the lease of the row under `workerId` has left, and the lease as text (a renewal changes it); null without a row. */
    async workerLease(db: Queryable, p: { workerId: string; legacyRescueAfterMs: number }): Promise<{ leftMs: number; lease: string } | null> {
      const rows = await db.query<{ left_ms: number; lease: string }>({ text: workerLease, values: [p.workerId, p.legacyRescueAfterMs] });
      const row = rows[0];
      return row ? { leftMs: Number(row.left_ms), lease: row.lease } : null;
    },

    /** WorkerDeregister: removes the worker's row (that registration's only) at the end of a stop, waiting at most `timeoutMs` for the answer. */
    async deregisterWorker(db: Queryable, p: { workerId: string; registeredAt: string; timeoutMs: number }): Promise<void> {
      await db.query({ text: deregisterWorker, values: [p.workerId, p.registeredAt], timeoutMs: p.timeoutMs });
    },

    /** LeaderRelease: a stopping leader deletes the maintenance lease it holds under `leaderId` (registered at `registeredAt`), so a successor need not wait it out. */
    async releaseLeadership(db: Queryable, p: { leaderId: string; registeredAt: string; expiresAt: string; timeoutMs: number }): Promise<void> {
      await db.query({ text: releaseLeadership, values: [p.leaderId, p.registeredAt, p.expiresAt], timeoutMs: p.timeoutMs });
    },

    /** JobReleaseHeld's text (run by the lease thread): $1 the worker id, $2 the ids, $3 the last claim taken in (epoch µs) when one is in flight, $4 the registration (`Registration.registeredAt`: nothing is given back under a row of the id registered since by another process); one row: `n` given back, `held` of them from $2. */
    releaseHeldText: releaseHeld,

    /** Ids of the running jobs of `workerId` whose cancel was asked for. */
    async cancelRequested(db: Queryable, p: { workerId: string }): Promise<string[]> {
      const rows = await db.query<{ id: string }>({ name: name('cancel_requested', cancelRequested), text: cancelRequested, values: [p.workerId] });
      return rows.map((r) => r.id);
    },

    /** WorkerRenewLease: pushes the lease out by the worker's rescueAfterMs; null when the lease was lost. */
    renewLeaseStatement(p: RenewLeaseParams): Statement {
      return { text: renewLease, values: [p.workerId, p.stuckJobs, p.loopLagMs, p.registeredAt] };
    },

    /** JobAdopt: moves still-owned attempts from a lost lease's id to the new one; returns those moved (id, attempt). */
    adoptJobs(db: Queryable, p: AdoptJobsParams): Promise<{ id: string; attempts: number }[]> {
      return db.query<{ id: string; attempts: number }>({
        name: name('adopt_jobs', adoptJobs),
        text: adoptJobs,
        values: [p.workerId, p.formerWorkerIds, p.ids, p.attempts],
      });
    },
  };
}
