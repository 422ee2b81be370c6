/**
 * Leader election by a lease row (`<schema>.leader`, name 'maintenance').
 *
 * States: follower ⇄ leader.
 * - A follower tries every `heartbeatMs` to take the lease: it succeeds when
 *   no row exists or the row's `expires_at` has passed (database clock).
 * - The leader renews every `heartbeatMs`, pushing `expires_at` to
 *   now + `rescueAfterMs`. Each change of hands bumps `term`.
 * - Trust window: the lease the leader last renewed cannot end before
 *   (local time just before that renewal was sent) + `rescueAfterMs`. The
 *   leader steps down locally one `heartbeatMs` before that instant if no
 *   renewal has succeeded since, so it never acts on a lease that may have
 *   passed to another worker. Only the row decides; no session-level locks,
 *   so it works behind a transaction-pooling PgBouncer.
 * - A worker runs under its current id and registration (`workers.id`,
 *   `workers.started_at`): it takes or renews the lease only while that
 *   row is still its own, so a process that froze past its lease with a
 *   fixed id, and thawed after another process took the id, neither renews
 *   the other's leadership nor takes a lapsed one under the other's id;
 *   after a lost lease it runs as `<id>~2`.
 * - Both hold under concurrent change: an election locks the worker's own
 *   row (FOR KEY SHARE) rather than reading it from its snapshot, so a
 *   takeover of the id committed while it waited stops it; and the release
 *   at stop deletes only the lease this worker last wrote (its `expires_at`),
 *   not one renewed under the same id while the release waited on the row.
 * - On stop the leader deletes its row so a successor need not wait.
 *
 * Leader-only services start when leadership is gained and stop when it is
 * lost; they never ask "am I leader?" on each tick.
 */
import type { Kysely } from 'kysely';
import { sql } from '../db/kysely.js';
import type { Logger } from '../core/logger.js';
import type { Clock } from '../core/clock.js';
import { LoopService, type Service } from '../core/service.js';
import { Waker } from '../core/sleep.js';
import { errorMessage, errorSummary } from '../core/errors.js';
import { heartbeatLimitMs } from '../core/defaults.js';
import type { PgqDatabase } from '../db/tables.js';
import { MAINTENANCE_LEASE, utcMicrosText } from '../db/statements.js';
import { RepeatedFailure } from '../core/repeated-failure.js';

export interface LeaderConfig {
  /** The worker's current id and registration (`workers.started_at`, ISO 8601); an empty registration: not registered now. */
  identity: () => { workerId: string; registeredAt: string };
  heartbeatMs: number;
  /** Lease length. */
  rescueAfterMs: number;
  /**
   * Resolves when the first election may go out: a worker's first claim is
   * answered before its leader's election and first maintenance pass take
   * the event loop and connections (they are not what a starting worker is
   * waited on for).
   */
  firstAfter?: () => Promise<unknown>;
}

export class LeaderElector extends LoopService {
  #leader = false;
  #term: string | null = null;
  /** The id this worker last won or renewed the lease under, and that id's registration (`workers.started_at`). */
  #heldAs = '';
  #heldUnder = '';
  /** The `expires_at` this worker last wrote (ISO 8601 to the microsecond): its release deletes only that lease. */
  #heldUntil = '';
  /** Local monotonic instant after which the lease may have passed elsewhere. */
  #trustUntil = 0;
  /** Steps down at `#trustUntil` even while an election statement is still out. */
  #trustTimer: NodeJS.Timeout | undefined;
  /** Starts and stops of the leader-only services, one after another (a start never overtakes the stop before it). */
  #transition: Promise<void> = Promise.resolve();
  /** A step-down whose services are still stopping: until it ends, this worker neither renews nor takes the lease. */
  #steppingDown: Promise<void> | undefined;
  readonly #waker = new Waker();
  readonly #electionFailures = new RepeatedFailure(this.logger, 'pgq leader election failed', 'pgq leader election answers again');

  /**
   * `db` answers the election within a heartbeat (or gives up); `release`
   * deletes the row held under `leaderId` at stop, within the time the stop
   * gives it, unless another process has registered that id since. (Given
   * up after one heartbeat, a release held up by load left the row, and a
   * successor waited out the whole lease.)
   */
  constructor(
    private readonly config: LeaderConfig,
    private readonly db: Kysely<PgqDatabase>,
    private readonly release: (held: { leaderId: string; registeredAt: string; expiresAt: string }, timeoutMs: number) => Promise<void>,
    private readonly services: readonly Service[],
    private readonly clock: Clock,
    logger: Logger,
  ) {
    super('leader', logger);
  }

  get isLeader(): boolean {
    return this.#leader;
  }

  /** Stops; a leader then releases its row, the statement given `releaseWithinMs()` (by default one heartbeat, at least 1 s). */
  override async stop(releaseWithinMs: () => number = () => heartbeatLimitMs(this.config.heartbeatMs)): Promise<void> {
    await super.stop();
    clearTimeout(this.#trustTimer);
    await this.#steppingDown; // one the trust timer began: its services stop before the stop returns
    if (this.#leader) {
      await this.#stepDown('stopping');
      await this.release({ leaderId: this.#heldAs, registeredAt: this.#heldUnder, expiresAt: this.#heldUntil }, releaseWithinMs()).catch((err: unknown) =>
        this.logger.warn({ err: errorSummary(err) }, `pgq could not release leadership: ${errorMessage(err)}`),
      );
    }
  }

  protected async run(signal: AbortSignal): Promise<void> {
    if (this.config.firstAfter) {
      await Promise.race([this.config.firstAfter(), new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }))]);
    }
    while (!signal.aborted) {
      // After a step-down (by the trust timer, say) the lease is left alone
      // until the services have stopped: renewed meanwhile, it would keep
      // every other worker from taking over while nothing runs here.
      if (this.#steppingDown) await this.#steppingDown;
      if (signal.aborted) break;
      const sentAt = this.clock.monotonicMs();
      try {
        const won = await this.#attempt();
        if (won !== null) this.#electionFailures.succeeded();
        if (won === null) {
          // Registering again (a lost lease): no attempt; the trust window decides meanwhile.
        } else if (won) {
          this.#trustUntil = sentAt + this.config.rescueAfterMs - this.config.heartbeatMs;
          // An answer that came too late to trust is no leadership (it would be
          // given up at once), nor one that came while a step-down is stopping
          // the services (the next round takes the lease again).
          if (!this.#leader && !this.#steppingDown && this.clock.monotonicMs() < this.#trustUntil) this.#becomeLeader();
          if (this.#leader) this.#armTrustTimer();
        } else if (this.#leader) {
          await this.#stepDown('lease held by another worker');
        }
      } catch (err) {
        this.#electionFailures.failed(err);
      }
      if (this.#leader && this.clock.monotonicMs() >= this.#trustUntil) {
        await this.#stepDown('could not renew the lease in time');
      }
      const untilDeadline = this.#leader ? this.#trustUntil - this.clock.monotonicMs() : Infinity;
      await this.#waker.wait(Math.max(0, Math.min(this.config.heartbeatMs, untilDeadline)), signal);
    }
  }

  /** Takes or renews the lease; true when this worker holds it afterwards, null when it is not registered now. */
  async #attempt(): Promise<boolean | null> {
    const { workerId: me, registeredAt } = this.config.identity();
    if (!registeredAt) return null;
    const expires = sql<Date>`now() + ${this.config.rescueAfterMs} * interval '1 millisecond'`;
    const row = await this.db
      .insertInto('leader')
      .columns(['name', 'leader_id', 'term', 'elected_at', 'expires_at'])
      // One row to insert (or to update the lease with) only while its own
      // registration holds the id: not under the row of the id another
      // process registered since, whether or not a leader row exists. The
      // row is locked, not only read: read from the statement's snapshot, it
      // let through a round that then waited on the leader row for a
      // takeover of the id (the row deleted and registered again, the lease
      // renewed under it) and, once that committed, renewed the lease as its
      // own. Locked, the round waits for the takeover and finds the row gone.
      // (KEY SHARE: the heartbeat's UPDATE of the row does not wait on it.)
      .expression((eb) =>
        eb
          .selectFrom('workers')
          .select([sql<string>`${MAINTENANCE_LEASE}::text`.as('name'), sql<string>`${me}::text`.as('leader_id'), sql<number>`1`.as('term'), sql<Date>`now()`.as('elected_at'), expires.as('expires_at')])
          .where('workers.id', '=', me)
          .where(sql<boolean>`workers.started_at = ${registeredAt}::timestamptz`)
          .forKeyShare(),
      )
      .onConflict((oc) =>
        oc
          .column('name')
          .doUpdateSet({
            leader_id: me,
            term: sql`CASE WHEN leader.leader_id = ${me} THEN leader.term ELSE leader.term + 1 END`,
            elected_at: sql`CASE WHEN leader.leader_id = ${me} THEN leader.elected_at ELSE now() END`,
            expires_at: expires,
          })
          .where((eb) => eb.or([eb('leader.leader_id', '=', me), eb('leader.expires_at', '<', sql<Date>`now()`)])),
      )
      .returning(['term', sql<string>`${sql.raw(utcMicrosText('expires_at'))}`.as('expires_at_text')])
      .executeTakeFirst();
    if (row) {
      this.#term = String(row.term);
      this.#heldAs = me;
      this.#heldUnder = registeredAt;
      this.#heldUntil = row.expires_at_text;
    }
    return row !== undefined;
  }

  /**
   * Starts the leader-only services, not awaited: the election goes on
   * renewing (or gives up on time) while they start.
   */
  #becomeLeader(): void {
    this.#leader = true;
    this.logger.info({ term: this.#term }, 'pgq worker became leader');
    this.#transition = this.#transition.then(async () => {
      for (const service of this.services) {
        if (!this.#leader) return; // stepped down meanwhile: the stop queued behind this start stops what started
        await service.start().catch((err: unknown) => this.logger.error({ err: errorSummary(err) }, `pgq leader service failed to start: ${errorMessage(err)}`));
      }
    });
  }

  /**
   * A leader whose renewals stopped answering steps down when its lease may
   * have passed to another worker, by a timer of its own: the election loop
   * may be waiting on a statement meanwhile (up to a heartbeat, and the
   * pool's cancel grace after it), past that instant.
   */
  #armTrustTimer(): void {
    clearTimeout(this.#trustTimer);
    const left = this.#trustUntil - this.clock.monotonicMs();
    this.#trustTimer = setTimeout(() => {
      if (!this.#leader) return;
      // A timer may fire a little before its time by the monotonic clock: then it waits out the rest.
      if (this.clock.monotonicMs() < this.#trustUntil) this.#armTrustTimer();
      else void this.#stepDown('could not renew the lease in time');
    }, Math.max(0, Math.ceil(left)));
    this.#trustTimer.unref();
  }

  async #stepDown(why: string): Promise<void> {
    if (!this.#leader) return;
    this.#leader = false;
    clearTimeout(this.#trustTimer);
    this.logger.info({ why }, `pgq worker stepped down as leader: ${why}`);
    // All told at once, then awaited together: one by one, each waited for
    // the pass of the one before (a statement on a database that does not
    // answer: max(60 s, rescueAfterMs)), and those not told yet kept running.
    const stopOne = (service: Service): Promise<void> =>
      service.stop().catch((err: unknown) => this.logger.error({ err: errorSummary(err) }, `pgq leader service failed to stop: ${errorMessage(err)}`));
    const stopping = this.#transition.then(() => Promise.all([...this.services].reverse().map(stopOne))).then(() => undefined);
    this.#transition = stopping;
    const tracked = stopping.finally(() => {
      if (this.#steppingDown === tracked) this.#steppingDown = undefined;
    });
    this.#steppingDown = tracked;
    await tracked;
  }
}
