/**
 * Named statements of queue control: the claim of a limited queue and the
 * expiry of jobs that never started. They keep the invariants written at
 * the top of statements.ts (lease-gated claims that lock only the rows they
 * take, and the queue's row and the worker's registration, attempt counted
 * in the claiming statement, one fixed shape per
 * name). Queues without limits never reach these: they are claimed by
 * JobClaim / JobClaimMany unchanged.
 *
 * A limited claim is one statement, JobClaimLimited, around
 * `claim_limited()` (migration 1764760000000): it locks the queue's row, so
 * claims of this queue (and only this queue) take turns; its later
 * statements take fresh snapshots, so each sees every job the previous
 * holder claimed: it counts the queue's running jobs (and per key), refills
 * and spends the token bucket, and takes at most what every limit leaves.
 * Two workers claiming at the same instant therefore never see the same
 * room, and the concurrency limit holds however many claim at once. The
 * lock lasts as long as the server runs the statement: a worker whose event
 * loop blocks never holds it.
 */
import { quoteIdent, statementName } from './identifiers.js';
import { CLAIM_COLUMNS, type ClaimRow } from './rows.js';
import { EXPIRABLE_STATES_SQL, EXPIRED_SET, registrationHolds } from './statements.js';
import type { Queryable } from './queryable.js';
import { channelNames, notifyDoneSql } from '../notify/channels.js';

/** A limited claim: the jobs taken, and whether to look again. */
export interface LimitedClaim {
  claimed: ClaimRow[];
  /** An available job of the queue is left after the claim. */
  waiting: boolean;
  /** One token's time for a rate-limited queue; null without a rate limit. */
  tokenMs: number | null;
}

type LimitedClaimRow = ClaimRow & { waiting: boolean; token_ms: number | null };

export interface ClaimLimitedParams {
  queue: string;
  tasks: string[];
  limit: number;
  workerId: string;
  /** The worker's registration (`Registration.registeredAt`); null or absent: any row of the id. */
  registeredAt?: string | null;
}

export interface ExpireJobsParams {
  /** Most jobs cancelled in one statement. */
  limit: number;
  now?: Date | null;
  /** Only jobs of these queues and tasks (drain's); null or absent: every job. */
  queues?: readonly string[] | null;
  tasks?: readonly string[] | null;
}

export type QueueStatements = ReturnType<typeof createQueueStatements>;

/** The queue-control statements for one schema. Built once per `Pgq`. */
export function createQueueStatements(schema: string) {
  const s = quoteIdent(schema);
  const jobs = `${s}.jobs`;
  const channels = channelNames(schema);
  const name = (n: string, text: string): string => statementName(schema, n, text);

  // claim_limited returns whole rows (or one row without a job); the
  // columns every claim returns are made from them here. The function runs
  // only under the worker's own registration ($5: a one-time filter, checked
  // before the function scan), as the other claims check it. Unlike theirs,
  // the registration's row is locked (FOR KEY SHARE), not only read: the
  // function waits for the queue's row, then tests the lease by id alone, at
  // that time; a registration read from the statement's snapshot let through
  // a claim that waited while its lease ran out and another process took the
  // id over, and it claimed under that process's live lease. Locked, the row
  // stays this registration's until the claim commits (a rescuer's removal
  // waits), and its lease, run out, lets nothing be claimed.
  const claimLimited = `
    SELECT ${CLAIM_COLUMNS}, c.waiting, c.token_ms
      FROM ${s}.claim_limited($1, $2::text[], $3, $4) AS c
     CROSS JOIN LATERAL (SELECT (c.job).*) AS j
     WHERE ${registrationHolds(`${s}.workers`, '$4', '$5', 'lock')}`;

  // Jobs whose expiry passed before they started: cancelled with an error
  // entry, one NOTIFY on the done channel for waiters. Retries due after the
  // expiry are cancelled too (they are retryable, not started).
  const expireJobs = `
    WITH expired AS (
      UPDATE ${jobs} j
         SET ${EXPIRED_SET}
       WHERE j.id IN (SELECT id FROM ${jobs}
                       WHERE expires_at IS NOT NULL AND expires_at <= coalesce($2::timestamptz, now())
                         AND state IN ${EXPIRABLE_STATES_SQL}
                         AND ($3::text[] IS NULL OR queue = ANY($3::text[])) AND ($4::text[] IS NULL OR task = ANY($4::text[]))
                       ORDER BY expires_at
                       LIMIT $1
                       FOR UPDATE SKIP LOCKED)
         AND j.state IN ${EXPIRABLE_STATES_SQL}
      RETURNING j.id
    ), notified AS (
      ${notifyDoneSql(channels.done, 'expired')}
    )
    SELECT id::text AS id FROM expired, (SELECT count(*) FROM notified) AS n`;

  const values = (p: ClaimLimitedParams): unknown[] => [p.queue, p.tasks, p.limit, p.workerId, p.registeredAt ?? null];

  return {
    /** JobClaimLimited: claims within the queue's concurrency, rate and per-key limits, in one statement. */
    async claimLimited(db: Queryable, p: ClaimLimitedParams): Promise<LimitedClaim> {
      const rows = await db.query<LimitedClaimRow>({ name: name('claim_limited', claimLimited), text: claimLimited, values: values(p) });
      const first = rows[0];
      return {
        claimed: rows.filter((r) => r.id !== null),
        waiting: first?.waiting ?? false,
        tokenMs: first?.token_ms ?? null,
      };
    },

    /** JobExpire: cancels jobs whose expiry passed before they started; returns their ids. */
    expireJobs(db: Queryable, p: ExpireJobsParams): Promise<{ id: string }[]> {
      return db.query<{ id: string }>({
        name: name('expire_jobs', expireJobs),
        text: expireJobs,
        values: [p.limit, p.now ?? null, p.queues ?? null, p.tasks ?? null],
      });
    },
  };
}
