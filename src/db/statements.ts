/**
 * The hot path: every statement that enqueues, claims, completes or rescues
 * jobs, hand-written, one fixed shape each, values always as parameters.
 * Everything else in pgq goes through Kysely.
 *
 * Invariants the statements keep:
 * - A claim counts the attempt in the same statement that marks the job
 *   running, and takes rows with FOR UPDATE SKIP LOCKED so two workers never
 *   claim the same job.
 * - Every write that ends an attempt (complete, fail, snooze, requeue) is
 *   guarded by `state = 'running' AND attempts = <the attempt>`: a late finish
 *   never overwrites a job that was rescued, re-claimed or cancelled since.
 * - Jobs reaching a final state send one NOTIFY per statement on the `done`
 *   channel with their ids ('*' when the list would not fit), so waiters wake.
 */
import { quoteIdent } from './identifiers.js';
import { JOB_COLUMNS, type JobRow } from './rows.js';
import type { SqlExecutor } from './executor.js';
import { channelNames } from '../notify/channels.js';

export interface InsertJobsParams {
  tasks: string[];
  queues: string[];
  /** JSON text of each payload. */
  payloads: string[];
  priorities: number[];
  maxAttempts: number[];
  /** Absolute run time, or null to use `now() + delayMs`. */
  runAts: (Date | null)[];
  delaysMs: number[];
  uniqueKeys: (string | null)[];
  timeoutsMs: (number | null)[];
  backoffBasesMs: (number | null)[];
  backoffMaxesMs: (number | null)[];
}

export interface ClaimJobsParams {
  queues: string[];
  tasks: string[];
  limit: number;
  workerId: string;
}

export interface PromoteDueParams {
  queues: string[];
  /** Most jobs made available in one statement. */
  limit: number;
  now?: Date | null;
}

export interface CompleteJobsParams {
  ids: string[];
  attempts: number[];
  /** JSON text of each result. */
  results: string[];
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
}

export interface SnoozeJobsParams {
  ids: string[];
  attempts: number[];
  delaysMs: number[];
  /** JSON text of an error entry to record, or null to record nothing. */
  notes: (string | null)[];
}

export interface RescueJobsParams {
  rescueAfterMs: number;
  now?: Date | null;
}

export interface ReleaseOrphansParams {
  workerId: string;
  heldIds: string[];
}

export interface HeartbeatParams {
  workerId: string;
  hostname: string;
  pid: number;
  queues: string[];
  concurrency: number;
}

export interface RescuedJob {
  id: string;
  state: string;
  worker_id: string;
}

export type HotStatements = ReturnType<typeof createStatements>;

function insertValues(p: InsertJobsParams): unknown[] {
  return [
    p.tasks, p.queues, p.payloads, p.priorities, p.maxAttempts, p.runAts, p.delaysMs,
    p.uniqueKeys, p.timeoutsMs, p.backoffBasesMs, p.backoffMaxesMs,
  ];
}

/** The named statements for one schema. Built once per `Pgq`. */
export function createStatements(schema: string) {
  const s = quoteIdent(schema);
  const jobs = `${s}.jobs`;
  const workers = `${s}.workers`;
  const channels = channelNames(schema);
  const cols = JOB_COLUMNS.join(', ');
  const jcols = JOB_COLUMNS.map((c) => `j.${c}`).join(', ');
  const name = (n: string): string => `pgq_${schema}_${n}`;
  const liveStates = `('scheduled', 'available', 'running', 'retryable', 'blocked')`;
  const notifyDone = (from: string): string =>
    `SELECT pg_notify('${channels.done}', CASE WHEN sum(length(id::text) + 1) <= 7000
        THEN string_agg(id::text, ',') ELSE '*' END) FROM ${from} HAVING count(*) > 0`;

  const insertSelect = (where: string): string => `
    INSERT INTO ${jobs} (task, queue, payload, priority, max_attempts, run_at, state, unique_key,
                         timeout_ms, backoff_base_ms, backoff_max_ms)
    SELECT t.task, t.queue, t.payload, t.priority, t.max_attempts, t.at,
           CASE WHEN t.at <= now() THEN 'available' ELSE 'scheduled' END,
           t.unique_key, t.timeout_ms, t.backoff_base_ms, t.backoff_max_ms
      FROM (SELECT u.*, coalesce(u.run_at, now() + u.delay_ms * interval '1 millisecond') AS at
              FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::int[], $5::int[], $6::timestamptz[],
                          $7::float8[], $8::text[], $9::int[], $10::int[], $11::int[])
                AS u(task, queue, payload, priority, max_attempts, run_at, delay_ms, unique_key,
                     timeout_ms, backoff_base_ms, backoff_max_ms)) AS t
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

  const getLiveByUniqueKey = `
    SELECT ${jcols}
      FROM ${jobs} j JOIN unnest($1::text[], $2::text[]) AS k(task, unique_key)
        ON j.task = k.task AND j.unique_key = k.unique_key
     WHERE j.state IN ${liveStates}`;

  // The claim reads only `available` rows, per queue in index order (a
  // LATERAL scan per queue keeps `ORDER BY ... LIMIT` on the index even for
  // several queues), so its cost does not grow with the jobs waiting. The
  // update finds the picked rows by `id = ANY(ARRAY(...))`: a join there can
  // turn, under a generic plan, into a hash join over the whole table.
  //
  // Writes that end an attempt test `(state = 'running') IS TRUE`, which no
  // partial index matches, so the planner cannot prefer the running-jobs
  // index (full of dead entries between vacuums) over the primary key.
  const claimJobs = `
    WITH picked AS MATERIALIZED (
      SELECT c.id FROM unnest($1::text[]) AS q(queue)
      CROSS JOIN LATERAL (
        SELECT id, priority, run_at FROM ${jobs}
         WHERE state = 'available' AND queue = q.queue AND task = ANY($2::text[])
         ORDER BY priority DESC, run_at, id
         LIMIT $3
         FOR UPDATE SKIP LOCKED
      ) AS c
      ORDER BY c.priority DESC, c.run_at, c.id
      LIMIT $3
    )
    UPDATE ${jobs} j
       SET state = 'running', attempts = j.attempts + 1, started_at = now(), worker_id = $4
     WHERE j.id = ANY(ARRAY(SELECT id FROM picked))
    RETURNING ${jcols}`;

  // Scheduled and retryable jobs whose time has come become available.
  const promoteDue = `
    WITH promoted AS (
      UPDATE ${jobs} SET state = 'available'
       WHERE id IN (SELECT id FROM ${jobs}
                     WHERE state IN ('scheduled', 'retryable') AND run_at <= coalesce($2::timestamptz, now())
                       AND queue = ANY($1::text[])
                     ORDER BY run_at
                     LIMIT $3
                     FOR UPDATE SKIP LOCKED)
      RETURNING 1
    )
    SELECT count(*)::int AS n FROM promoted`;

  const nextRunAt = `
    SELECT run_at FROM ${jobs}
     WHERE state IN ('scheduled', 'retryable') AND queue = ANY($1::text[]) AND task = ANY($2::text[])
     ORDER BY run_at LIMIT 1`;

  // Outcomes commit without waiting for the WAL flush (synchronous_commit
  // off for this statement's transaction only): if PostgreSQL crashes before
  // the flush, the job is still running for a worker that believes it done;
  // that worker gives it back (releaseOrphans) and it runs again —
  // at-least-once, as promised. Claims and enqueues stay durable.
  const completeJobs = `
    WITH async AS (SELECT set_config('synchronous_commit', 'off', true)),
    done AS (
      UPDATE ${jobs} j
         SET state = 'succeeded', finished_at = now(), result = v.result
        FROM unnest($1::bigint[], $2::int[], $3::jsonb[]) AS v(id, attempt, result)
       WHERE j.id = v.id AND (j.state = 'running') IS TRUE AND j.attempts = v.attempt
        AND (SELECT count(*) FROM async) = 1
      RETURNING j.id
    )
    ${notifyDone('done')}`;

  const failJobs = `
    WITH done AS (
      UPDATE ${jobs} j
         SET state = CASE WHEN v.permanent OR j.attempts >= j.max_attempts THEN 'failed' ELSE 'retryable' END,
             run_at = CASE WHEN v.permanent OR j.attempts >= j.max_attempts THEN j.run_at
                           ELSE now() + v.delay_ms * interval '1 millisecond' END,
             finished_at = CASE WHEN v.permanent OR j.attempts >= j.max_attempts THEN now() END,
             errors = j.errors || jsonb_build_array(v.error)
        FROM unnest($1::bigint[], $2::int[], $3::jsonb[], $4::float8[], $5::bool[])
          AS v(id, attempt, error, delay_ms, permanent)
       WHERE j.id = v.id AND (j.state = 'running') IS TRUE AND j.attempts = v.attempt
      RETURNING j.id, j.state
    ), final AS (SELECT id FROM done WHERE state = 'failed')
    ${notifyDone('final')}`;

  // A snooze (and a requeue at shutdown) gives the attempt back by raising
  // max_attempts instead of lowering attempts, so attempt numbers only grow
  // and the guard above stays a sound fence.
  const snoozeJobs = `
    UPDATE ${jobs} j
       SET state = CASE WHEN v.delay_ms <= 0 THEN 'available' ELSE 'scheduled' END,
           run_at = now() + v.delay_ms * interval '1 millisecond',
           max_attempts = j.max_attempts + 1,
           errors = CASE WHEN v.note IS NULL THEN j.errors ELSE j.errors || jsonb_build_array(v.note) END
      FROM unnest($1::bigint[], $2::int[], $3::float8[], $4::jsonb[]) AS v(id, attempt, delay_ms, note)
     WHERE j.id = v.id AND (j.state = 'running') IS TRUE AND j.attempts = v.attempt
    RETURNING j.id`;

  // Jobs of workers silent for rescueAfterMs: retried (the attempt they were
  // in is counted) or failed when none is left. The dead workers' rows go in
  // the same statement. A running job whose worker row is missing altogether
  // is rescued too.
  const rescueJobs = `
    WITH dead AS (
      DELETE FROM ${workers}
       WHERE last_heartbeat_at < coalesce($2::timestamptz, now()) - $1 * interval '1 millisecond'
      RETURNING id
    ), rescued AS (
      UPDATE ${jobs} j
         SET state = CASE WHEN j.attempts >= j.max_attempts THEN 'failed' ELSE 'available' END,
             run_at = now(),
             finished_at = CASE WHEN j.attempts >= j.max_attempts THEN now() END,
             errors = j.errors || jsonb_build_array(jsonb_build_object(
               'attempt', j.attempts,
               'message', 'rescued: worker ' || coalesce(j.worker_id, '(none)') || ' stopped heartbeating for '
                          || $1 || ' ms while running this job',
               'at', now()))
       WHERE j.state = 'running'
         AND (j.worker_id IS NULL
              OR j.worker_id IN (SELECT id FROM dead)
              OR NOT EXISTS (SELECT 1 FROM ${workers} w WHERE w.id = j.worker_id))
      RETURNING j.id, j.state, j.worker_id
    ), notified AS (
      ${notifyDone(`(SELECT id FROM rescued WHERE state = 'failed') AS f`)}
    )
    SELECT id::text AS id, state, worker_id FROM rescued, (SELECT count(*) FROM notified) AS n`;

  // Rows marked running for this worker that it does not hold: a claim whose
  // reply was lost with the connection. The handler never ran, so the attempt
  // is given back and the job is due again at once.
  const releaseOrphans = `
    UPDATE ${jobs}
       SET state = 'available', attempts = attempts - 1, run_at = now()
     WHERE state = 'running' AND worker_id = $1 AND id <> ALL($2::bigint[])
    RETURNING id`;

  // Prefetched jobs a stopping worker never started: available again, the
  // attempt given back (no handler ran).
  const releaseUnstarted = `
    UPDATE ${jobs}
       SET state = 'available', attempts = attempts - 1, run_at = now()
     WHERE id = ANY($2::bigint[]) AND state = 'running' AND worker_id = $1`;

  const heartbeat = `
    INSERT INTO ${workers} (id, hostname, pid, queues, concurrency)
    VALUES ($1, $2, $3, $4::text[], $5)
    ON CONFLICT (id) DO UPDATE SET last_heartbeat_at = now(), queues = EXCLUDED.queues,
                                   concurrency = EXCLUDED.concurrency
    RETURNING (xmax = 0) AS inserted`;

  return {
    /** JobInsertMany: inserts jobs, skipping those whose unique key matches a live job. */
    insertJobs(db: SqlExecutor, p: InsertJobsParams): Promise<JobRow[]> {
      return db.query<JobRow>({ name: name('insert_jobs'), text: insertJobs, values: insertValues(p) });
    },

    /** JobInsertManyQuiet: as insertJobs, without the NOTIFY (the caller notifies after commit). */
    insertJobsQuiet(db: SqlExecutor, p: InsertJobsParams): Promise<JobRow[]> {
      return db.query<JobRow>({ name: name('insert_jobs_quiet'), text: insertJobsQuiet, values: insertValues(p) });
    },

    /** JobsNotify: wakes the workers of these queues. */
    async notifyQueues(db: SqlExecutor, queues: string[]): Promise<void> {
      await db.query({ name: name('notify_queues'), text: notifyQueues, values: [queues] });
    },

    /** JobGetLiveByUniqueKey: the live jobs holding these (task, unique_key) pairs. */
    getLiveByUniqueKey(db: SqlExecutor, p: { tasks: string[]; uniqueKeys: string[] }): Promise<JobRow[]> {
      return db.query<JobRow>({ name: name('live_by_key'), text: getLiveByUniqueKey, values: [p.tasks, p.uniqueKeys] });
    },

    /** JobClaim: marks up to `limit` due jobs running for this worker and counts the attempt. */
    claimJobs(db: SqlExecutor, p: ClaimJobsParams): Promise<JobRow[]> {
      return db.query<JobRow>({
        name: name('claim'),
        text: claimJobs,
        values: [p.queues, p.tasks, p.limit, p.workerId],
      });
    },

    /** JobPromoteDue: scheduled and retryable jobs that are due become available; returns how many. */
    async promoteDue(db: SqlExecutor, p: PromoteDueParams): Promise<number> {
      const rows = await db.query<{ n: number }>({ name: name('promote_due'), text: promoteDue, values: [p.queues, p.now ?? null, p.limit] });
      return rows[0]?.n ?? 0;
    },

    /** JobNextRunAt: when the earliest scheduled or retryable job of these queues becomes due. */
    async nextRunAt(db: SqlExecutor, p: { queues: string[]; tasks: string[] }): Promise<Date | null> {
      const rows = await db.query<{ run_at: Date }>({ name: name('next_run_at'), text: nextRunAt, values: [p.queues, p.tasks] });
      return rows[0]?.run_at ?? null;
    },

    /** JobCompleteMany: succeeded, with the result, for jobs still running in that attempt. */
    async completeJobs(db: SqlExecutor, p: CompleteJobsParams): Promise<void> {
      await db.query({ name: name('complete'), text: completeJobs, values: [p.ids, p.attempts, p.results] });
    },

    /** JobFailMany: retryable after the delay, or failed when permanent or out of attempts. */
    async failJobs(db: SqlExecutor, p: FailJobsParams): Promise<void> {
      await db.query({
        name: name('fail'),
        text: failJobs,
        values: [p.ids, p.attempts, p.errors, p.delaysMs, p.permanent],
      });
    },

    /** JobSnoozeMany: due again after the delay; the attempt does not count. */
    async snoozeJobs(db: SqlExecutor, p: SnoozeJobsParams): Promise<void> {
      await db.query({ name: name('snooze'), text: snoozeJobs, values: [p.ids, p.attempts, p.delaysMs, p.notes] });
    },

    /** JobRescue: retries or fails the running jobs of workers silent for rescueAfterMs. */
    rescueJobs(db: SqlExecutor, p: RescueJobsParams): Promise<RescuedJob[]> {
      return db.query<RescuedJob>({ name: name('rescue'), text: rescueJobs, values: [p.rescueAfterMs, p.now ?? null] });
    },

    /** JobReleaseOrphans: gives back running rows of this worker that it does not hold. */
    releaseOrphans(db: SqlExecutor, p: ReleaseOrphansParams): Promise<{ id: string }[]> {
      return db.query({ name: name('release_orphans'), text: releaseOrphans, values: [p.workerId, p.heldIds] });
    },

    /** JobReleaseUnstarted: gives back prefetched jobs this worker never started. */
    async releaseUnstarted(db: SqlExecutor, p: { workerId: string; ids: string[] }): Promise<void> {
      await db.query({ name: name('release_unstarted'), text: releaseUnstarted, values: [p.workerId, p.ids] });
    },

    /** WorkerHeartbeat: registers the worker or renews its lease; `inserted` is true when the row was missing. */
    async heartbeat(db: SqlExecutor, p: HeartbeatParams): Promise<{ inserted: boolean }> {
      const rows = await db.query<{ inserted: boolean }>({
        name: name('heartbeat'),
        text: heartbeat,
        values: [p.workerId, p.hostname, p.pid, p.queues, p.concurrency],
      });
      return rows[0] ?? { inserted: false };
    },
  };
}
