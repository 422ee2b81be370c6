/**
 * Named statements of queue control: the claim of a limited queue, the
 * queue-row lock it runs under, and the expiry of jobs that never started.
 * They keep the invariants written at the top of statements.ts (lease-gated
 * claims that lock only the rows they take, attempt counted in the claiming
 * statement, one fixed shape per name). Queues without limits never reach
 * these: they are claimed by JobClaim / JobClaimMany unchanged.
 *
 * A limited claim is one short transaction on one connection:
 *   1. QueueLock: `SELECT … FROM queues WHERE name = $1 FOR UPDATE`. Claims
 *      of this queue (and only this queue) now take turns. It also sets
 *      idle_in_transaction_session_timeout for the transaction, so a worker
 *      whose event loop blocks mid-claim holds the queue's row at most
 *      LIMITED_CLAIM_IDLE_MS.
 *   2. JobClaimLimited or JobClaimLimitedByKey. Under READ COMMITTED this
 *      statement's snapshot is taken after the lock was granted, so it sees
 *      every job the previous holder claimed: it counts the queue's running
 *      jobs (jobs_running_queue_idx), refills and spends the token bucket,
 *      and takes at most what every limit leaves. It reads the clock with
 *      clock_timestamp() once, after the lock: now() would be the start of
 *      the transaction, before the wait. (The candidates' expiry is checked
 *      against now() inside claim_candidates: a job whose expiry passes
 *      while the claim waits for the lock can still start.)
 * Two workers claiming at the same instant therefore never see the same
 * room, and the concurrency limit holds however many claim at once.
 */
import { quoteIdent } from './identifiers.js';
import { CLAIM_COLUMNS, type ClaimRow } from './rows.js';
import type { Queryable } from './queryable.js';
import { channelNames, notifyDoneSql } from '../notify/channels.js';

/** How long a limited claim's transaction may sit idle (its worker's loop blocked) before PostgreSQL ends it. */
export const LIMITED_CLAIM_IDLE_MS = 2_000;

/** A `queues` row as QueueLock returns it, plus whether due jobs wait. */
export interface LockedQueue {
  paused: boolean;
  concurrency: number | null;
  rate_limit: number | null;
  rate_period_ms: number | null;
  key_concurrency: number | null;
  /** Tokens left before this claim's refill (null: full bucket or no rate limit). */
  rate_tokens: number | null;
  /** An available job of the queue existed when the lock was granted. */
  waiting: boolean;
}

export interface ClaimLimitedParams {
  queue: string;
  tasks: string[];
  limit: number;
  workerId: string;
}

export interface ExpireJobsParams {
  /** Most jobs cancelled in one statement. */
  limit: number;
  now?: Date | null;
}

export type QueueStatements = ReturnType<typeof createQueueStatements>;

/** The queue-control statements for one schema. Built once per `Pgq`. */
export function createQueueStatements(schema: string) {
  const s = quoteIdent(schema);
  const jobs = `${s}.jobs`;
  const queues = `${s}.queues`;
  const workers = `${s}.workers`;
  const channels = channelNames(schema);
  const name = (n: string): string => `pgq_${schema}_${n}`;

  // The transaction that holds the queue's row gives it up if its worker
  // stops talking for LIMITED_CLAIM_IDLE_MS (a handler blocking the worker's
  // event loop between the claim's statements): PostgreSQL ends the session,
  // the claim rolls back, and the other workers' claims of the queue go on.
  const lockQueue = `
    WITH guard AS (SELECT set_config('idle_in_transaction_session_timeout', '${LIMITED_CLAIM_IDLE_MS}', true))
    SELECT paused, concurrency, rate_limit, rate_period_ms, key_concurrency, rate_tokens,
           EXISTS (SELECT 1 FROM ${jobs} WHERE state = 'available' AND queue = $1) AS waiting
      FROM ${queues} WHERE name = $1 AND (SELECT count(*) FROM guard) = 1
       FOR UPDATE`;

  // The settings as seen after the lock, the clock, the refilled bucket and
  // the room every limit leaves. No row (paused, gone, or the lease lost)
  // means room 0.
  const limitedHead = `
    WITH t AS MATERIALIZED (SELECT clock_timestamp() AS now),
    q AS MATERIALIZED (
      SELECT q.concurrency, q.key_concurrency, q.rate_limit,
             CASE WHEN q.rate_limit IS NOT NULL THEN least(q.rate_limit::float8,
               coalesce(q.rate_tokens, q.rate_limit) + q.rate_limit::float8 / q.rate_period_ms
                 * greatest(0, extract(epoch FROM t.now - coalesce(q.rate_refilled_at, t.now)) * 1000)) END AS tokens,
             greatest(coalesce(q.rate_refilled_at, t.now), t.now) AS refilled_at
        FROM ${queues} q, t
       WHERE q.name = $1 AND NOT q.paused
         AND EXISTS (SELECT 1 FROM ${workers} WHERE id = $4 AND lease_expires_at > now())
    ),
    room AS MATERIALIZED (
      SELECT greatest(0, least($3::int,
               coalesce(q.concurrency - (SELECT count(*) FROM ${jobs} WHERE queue = $1 AND state = 'running'), $3::int),
               coalesce(floor(q.tokens)::int, $3::int)))::int AS n
        FROM q
    )`;

  // Marks the picked rows running and spends one token per job started.
  const limitedTail = `,
    claimed AS (
      UPDATE ${jobs} j
         SET state = 'running', attempts = j.attempts + 1, started_at = (SELECT now FROM t), worker_id = $4
       WHERE j.id = ANY(ARRAY(SELECT id FROM picked))
      RETURNING ${CLAIM_COLUMNS}
    ),
    spent AS (
      UPDATE ${queues} qq SET rate_tokens = q.tokens - (SELECT count(*) FROM claimed), rate_refilled_at = q.refilled_at
        FROM q
       WHERE qq.name = $1 AND q.tokens IS NOT NULL
      RETURNING 1
    )
    SELECT * FROM claimed`;

  // Concurrency and rate: the queue's head in claim-index order, up to the
  // room, locked by claim_candidates (migration 1764730000000, planned to
  // read jobs_claim_idx in order whatever the statistics say).
  const claimLimited = `${limitedHead},
    picked AS MATERIALIZED (
      SELECT c.id FROM ${s}.claim_candidates($1, $2::text[], coalesce((SELECT n FROM room), 0)) AS c(id)
    )${limitedTail}`;

  // With a per-key limit: keys already at their limit are filtered out of the
  // scan (claim_candidates_keyed, migration 1764750000000, planned like
  // claim_candidates), so their backlog never fills the candidates; among the candidates
  // each key gets only the slots it has left; the chosen rows are then locked
  // in claim order, up to the room (candidates not chosen are not locked).
  const claimLimitedByKey = `${limitedHead},
    running_keys AS MATERIALIZED (
      SELECT concurrency_key AS k, count(*) AS n FROM ${jobs}
       WHERE queue = $1 AND state = 'running' AND concurrency_key IS NOT NULL
       GROUP BY concurrency_key
    ),
    candidates AS MATERIALIZED (
      SELECT c.* FROM ${s}.claim_candidates_keyed($1, $2::text[], 4 * coalesce((SELECT n FROM room), 0),
          ARRAY(SELECT k FROM running_keys WHERE n >= (SELECT key_concurrency FROM q))) AS c
    ),
    chosen AS MATERIALIZED (
      SELECT c.id FROM (
        SELECT c.*, row_number() OVER (PARTITION BY c.concurrency_key ORDER BY c.priority DESC, c.run_at, c.id) AS nth
          FROM candidates c
      ) AS c LEFT JOIN running_keys r ON r.k = c.concurrency_key
       WHERE c.concurrency_key IS NULL OR c.nth + coalesce(r.n, 0) <= (SELECT key_concurrency FROM q)
       ORDER BY c.priority DESC, c.run_at, c.id
       LIMIT coalesce((SELECT n FROM room), 0)
    ),
    picked AS MATERIALIZED (
      SELECT id FROM ${jobs}
       WHERE id = ANY(ARRAY(SELECT id FROM chosen)) AND state = 'available'
       ORDER BY priority DESC, run_at, id
       FOR UPDATE SKIP LOCKED
    )${limitedTail}`;

  // Jobs whose expiry passed before they started: cancelled with an error
  // entry, one NOTIFY on the done channel for waiters. Retries due after the
  // expiry are cancelled too (they are retryable, not started).
  const expireJobs = `
    WITH expired AS (
      UPDATE ${jobs} j
         SET state = 'cancelled', finished_at = now(),
             errors = j.errors || jsonb_build_array(jsonb_build_object(
               'attempt', j.attempts,
               'message', 'expired: not started by its expiry time ' || to_char(j.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
               'at', now()))
       WHERE j.id IN (SELECT id FROM ${jobs}
                       WHERE expires_at IS NOT NULL AND expires_at <= coalesce($2::timestamptz, now())
                         AND state IN ('scheduled', 'available', 'retryable')
                       ORDER BY expires_at
                       LIMIT $1
                       FOR UPDATE SKIP LOCKED)
         AND j.state IN ('scheduled', 'available', 'retryable')
      RETURNING j.id
    ), notified AS (
      ${notifyDoneSql(channels.done, 'expired')}
    )
    SELECT id::text AS id FROM expired, (SELECT count(*) FROM notified) AS n`;

  const values = (p: ClaimLimitedParams): unknown[] => [p.queue, p.tasks, p.limit, p.workerId];

  return {
    /** QueueLock: locks the queue's row for this transaction; its settings, or undefined without a row. */
    async lockQueue(db: Queryable, queue: string): Promise<LockedQueue | undefined> {
      const rows = await db.query<LockedQueue>({ name: name('queue_lock'), text: lockQueue, values: [queue] });
      return rows[0];
    },

    /** JobClaimLimited: claims within the queue's concurrency and rate limits (run after lockQueue, same transaction). */
    claimLimited(db: Queryable, p: ClaimLimitedParams): Promise<ClaimRow[]> {
      return db.query<ClaimRow>({ name: name('claim_limited'), text: claimLimited, values: values(p) });
    },

    /** JobClaimLimitedByKey: as claimLimited, and at most key_concurrency running jobs per concurrency key. */
    claimLimitedByKey(db: Queryable, p: ClaimLimitedParams): Promise<ClaimRow[]> {
      return db.query<ClaimRow>({ name: name('claim_limited_by_key'), text: claimLimitedByKey, values: values(p) });
    },

    /** JobExpire: cancels jobs whose expiry passed before they started; returns their ids. */
    expireJobs(db: Queryable, p: ExpireJobsParams): Promise<{ id: string }[]> {
      return db.query<{ id: string }>({ name: name('expire_jobs'), text: expireJobs, values: [p.limit, p.now ?? null] });
    },
  };
}
