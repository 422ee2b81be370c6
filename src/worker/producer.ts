/**
 * The producer claims due jobs and hands them to the executor.
 *
 * It claims with one SKIP LOCKED statement, at most `maxClaimBatch` at a
 * time. It claims again at once while claims come back full (there is more),
 * and otherwise sleeps until woken by: a NOTIFY for one of its queues, a
 * freed slot while work is known to be waiting, the listener reconnecting,
 * the next scheduled `run_at` (read when it goes to sleep, or heard of in a
 * NOTIFY of a delayed insert since), or the poll interval.
 *
 * Claims read only `available` jobs. Scheduled and retryable jobs are made
 * available ("promoted") by the producer itself when the next one is due and
 * at least every poll interval, in one statement.
 *
 * Claiming ahead: the producer keeps jobs claimed ahead of the free slots
 * in a local buffer, so the next claim's round trip overlaps the running
 * jobs and no slot waits on the database. How many it keeps ahead follows
 * measured throughput, not the slot count: four times the jobs this worker
 * started during the last claim's round trip (when the buffer ran dry
 * meanwhile, at least twice the previous figure and four times what the
 * full slots would have started in that round trip at the average job
 * time, which counts once as many jobs as there are slots have finished;
 * the first claims, before any job's time is known, take the free slots
 * only), at least `concurrency`, at most `maxClaimBatch`. It claims again
 * once the buffer is down to half of that, so one claim is in flight while
 * the buffered half runs.
 *
 * A buffered job must not wait long behind running ones while another
 * worker is idle: while recent jobs average under 50 ms that holds on its
 * own; for longer jobs the buffer is capped at what the full slots start in
 * 50 ms (concurrency ÷ average duration × 50 ms), and claiming ahead is off
 * when that is under one job. So 1,000 slots of 50 ms I/O jobs keep up to
 * 1,000 jobs ahead (each waits ~25 ms), 100 slots of 1 s jobs none.
 *
 * Buffered jobs count as held (state running, attempt counted). A job held
 * longer than `prefetchTtlMs` without starting goes back (releaseUnstarted:
 * available again, the attempt not counted), and the producer claims nothing
 * ahead until one of its jobs starts again; a stop, a cancel or a lost lease
 * gives them back or drops them too. The buffer lives in shared memory
 * (held-jobs.ts): while a handler blocks the event loop for longer than
 * `prefetchTtlMs`, the lease thread gives the buffered jobs back itself, so
 * they do not wait for the loop while other workers are idle.
 *
 * A claim whose reply is lost (connection dropped after commit) would leave
 * rows marked running for this worker that it never received; after any
 * failed claim (or failed give-back) the producer gives such orphans back
 * before claiming again.
 *
 * It claims nothing while the worker's lease is not trusted (lost, or not
 * renewed for most of rescueAfterMs) or while the completer is backlogged
 * (outcomes cannot be written): work it could not own or finish stays in
 * the queue for other workers.
 */
import type { Logger } from '../core/logger.js';
import type { Clock } from '../core/clock.js';
import { LoopService } from '../core/service.js';
import { Waker, sleep } from '../core/sleep.js';
import { errorMessage, errorSummary } from '../core/errors.js';
import type { Queryable } from '../db/queryable.js';
import type { HotStatements } from '../db/statements.js';
import { claimStartedMicros, toClaimedJob, type ClaimRow, type ClaimedJob } from '../db/rows.js';
import type { Executor } from './executor.js';
import type { Completer } from './completer.js';
import type { Lease } from './lease.js';
import type { HeldJobs } from './held-jobs.js';
import { RepeatedFailure } from '../core/repeated-failure.js';
import { isConnectFailure, isConnectionError, isTransactionConflict } from '../db/errors.js';

const PROMOTE_BATCH = 1_000;
/** About how long a job claimed ahead waits in the buffer before it starts, at most. */
const MAX_HOLD_MS = 50;
/** Jobs kept ahead per job started during one claim round trip. */
const AHEAD_PER_ROUND_TRIP = 4;

export interface ProducerConfig {
  concurrency: number;
  queues: readonly string[];
  tasks: readonly string[];
  /** Most jobs claimed in one statement, and most kept claimed ahead of the free slots. */
  maxClaimBatch: number;
  pollIntervalMs: number;
  /** A claimed job not started within this long goes back to the queue. */
  prefetchTtlMs: number;
  /** The worker's id was given (`options.id`), not made: jobs of an earlier process of that id may be running under it. */
  fixedId: boolean;
}

/** A job claimed and not started yet. */
export interface HeldJob {
  job: ClaimedJob;
  /** Monotonic time of the claim. */
  heldAt: number;
}

export class Producer extends LoopService {
  readonly #waker = new Waker();
  /** True while claims suggest more due jobs are waiting. */
  #moreWaiting = true;
  /**
   * Look for jobs running here that it does not hold before the next claim.
   * At start only for a worker of a fixed id: a process of that id before it
   * may have left some (an outcome it gave up on), and this registration
   * keeps the rescuer from them; a new id has none.
   */
  #needsReconcile: boolean;
  /**
   * Monotonic time a scheduled or retryable job is known to be due (heard
   * of, looked up, or more left by a full batch): promoted before the claim.
   * None at start: the first claim takes what is available, and the
   * periodic promotion (`#sweepAt`, due at once) follows it.
   */
  #promoteAt = Infinity;
  /** A claim was sent: only then can a lost reply have left jobs running here that it does not hold. */
  #claimSent = false;
  #firstClaimDone!: () => void;
  /** Resolves once the first claim has been answered (its jobs started), has failed, or the producer stops. */
  readonly firstClaim = new Promise<void>((resolve) => (this.#firstClaimDone = resolve));
  /**
   * Monotonic time of the periodic promotion (a poll interval after the
   * last), which finds what no due time announced: made after the claim, so
   * that a job announced as available does not wait a round trip for it.
   */
  #sweepAt = 0;
  /** Wakes the loop when a delayed job heard of (`dueAt`) is due, at monotonic `#dueTimerAt`. */
  #dueTimer: NodeJS.Timeout | undefined;
  #dueTimerAt = 0;
  /** The database's clock less this host's, as last read (due times are on the database's). */
  #databaseAheadMs = 0;
  /** Idle looks in a row that found the next job already due (`#idleWaitMs`). */
  #overdueLooks = 0;
  /** How many jobs to keep claimed ahead of the free slots while jobs are quick. */
  #ahead: number;
  /** Jobs started so far (the throughput the claim size follows). */
  #started = 0;
  /** Set when held jobs aged out: claim nothing ahead until a job starts. */
  #holdOff = false;
  #draining = false;
  /** The last claim's round trip, ms. */
  #claimMs = 0;
  /** No claim was sized by a known job time yet. */
  #unsized = true;
  #offSlotFree: (() => void) | undefined;
  readonly #promotions = new RepeatedFailure(
    this.logger,
    'pgq could not make due scheduled and retryable jobs available',
    'pgq makes due scheduled and retryable jobs available again',
    'it claims the jobs available meanwhile and tries again',
  );
  #promoteFailures = 0;
  readonly #orphanLooks = new RepeatedFailure(
    this.logger,
    'pgq could not look for jobs it may have claimed and does not hold (the rescuer takes any it leaves)',
    'pgq looks for jobs it claimed and does not hold again',
  );

  constructor(
    private readonly config: ProducerConfig,
    private readonly lease: Lease,
    private readonly db: Queryable,
    private readonly statements: HotStatements,
    private readonly executor: Executor,
    private readonly completer: Completer,
    private readonly clock: Clock,
    logger: Logger,
    /** Claimed jobs not yet started, oldest first; shared with the lease thread (held-jobs.ts). */
    private readonly held: HeldJobs<HeldJob>,
  ) {
    super('producer', logger);
    this.#ahead = this.#minAhead();
    this.#needsReconcile = config.fixedId;
    completer.onDrained(() => this.wake());
  }

  /** Something may be due now (a NOTIFY, a reconnect, a test). */
  wake(): void {
    this.#moreWaiting = true;
    this.#waker.wake();
  }

  /**
   * A delayed job of one of its queues was inserted, due at `dueAt` (epoch
   * ms, the database's clock): promote and claim then, if that comes before
   * the next poll (which reads the next due time itself).
   */
  dueAt(dueAt: number): void {
    const inMs = dueAt - (this.clock.now().getTime() + this.#databaseAheadMs) + 1;
    if (inMs >= this.config.pollIntervalMs) return;
    const at = this.clock.monotonicMs() + Math.max(0, inMs);
    this.#promoteAt = Math.min(this.#promoteAt, at);
    if (inMs <= 0) return this.wake();
    if (this.#dueTimer && this.#dueTimerAt <= at) return;
    clearTimeout(this.#dueTimer);
    this.#dueTimerAt = at;
    this.#dueTimer = setTimeout(() => {
      this.#dueTimer = undefined;
      this.wake();
    }, inMs);
    this.#dueTimer.unref();
  }

  /**
   * The database connection was re-established (possibly after a PostgreSQL
   * restart, which can undo outcomes that were committed without a flush):
   * give back any job still marked running for this worker that it no longer
   * holds, then claim.
   */
  reconnected(): void {
    // The listener's first connection, before any claim: nothing to look for (a round trip less before the first job).
    if (this.#claimSent) this.#needsReconcile = true;
    this.wake();
  }

  override async start(): Promise<void> {
    // Slots freed in one turn of the event loop (a batch of quick jobs ends
    // together) make one claim, not one claim each.
    let pending = false;
    this.#offSlotFree ??= this.executor.onSlotFree(() => {
      this.#dispatch();
      if (!this.#moreWaiting || pending) return;
      pending = true;
      setImmediate(() => {
        pending = false;
        this.#waker.wake();
      });
    });
    await super.start();
  }

  override async stop(): Promise<void> {
    this.#firstClaimDone();
    this.#draining = true;
    clearTimeout(this.#dueTimer);
    this.#dueTimer = undefined;
    await super.stop();
    this.#offSlotFree?.();
    this.#offSlotFree = undefined;
    // Attempts waiting for an earlier attempt of their job were never started either.
    const waiting = this.executor.takeWaiting().map((job) => ({ job, heldAt: 0 }));
    await this.#release([...this.held.takeAll(), ...waiting], 'prefetched');
    // A give-back that missed rows (the lease thread's, while the loop was
    // blocked) is reconciled before a claim; with every slot taken until
    // now, none came: rows left running here for nobody go back now, not to
    // the rescuer, which would count an attempt that never ran.
    if (this.#needsReconcile) {
      await this.#releaseOrphans().then(
        () => this.#orphanLooks.succeeded(),
        (err: unknown) => this.#orphanLooks.failed(err),
      );
    }
  }

  /** Ids of claimed jobs waiting in the local buffer. */
  bufferedIds(): string[] {
    return this.held.items().map((h) => h.job.id);
  }

  /**
   * A job whose cancel was asked for, if this worker holds it without having
   * started it (buffered, or waiting behind an earlier attempt of its job):
   * taken out and given back, which ends it cancelled (cancelLockedJobs);
   * true when it was.
   */
  cancelUnstarted(id: string): boolean {
    const buffered = this.held.items().find((h) => h.job.id === id);
    if (buffered && this.held.drop(id)) {
      void this.#release([buffered], 'cancelled');
      return true;
    }
    const waiting = this.executor.takeWaitingOf(id);
    if (!waiting) return false;
    void this.#release([{ job: waiting, heldAt: 0 }], 'cancelled');
    return true;
  }

  /**
   * The queue was paused: the jobs of it claimed ahead and not started go
   * back (available, attempt not counted), rather than start after the
   * pause as they would until they aged out (prefetchTtlMs).
   */
  releasePaused(queue: string): void {
    const taken = this.held.items().filter((h) => h.job.queue === queue && this.held.drop(h.job.id));
    if (taken.length > 0) void this.#release(taken, 'paused');
  }

  /** Drops a buffered job (this `attempt` of it rescued); true when it was buffered. */
  dropBuffered(id: string, attempt?: number): boolean {
    if (attempt !== undefined && !this.held.items().some((h) => h.job.id === id && h.job.attempts === attempt)) return false;
    return this.held.drop(id);
  }

  /** Buffered jobs: [id, attempt number]. */
  bufferedAttempts(): [string, number][] {
    return this.held.items().map((h): [string, number] => [h.job.id, h.job.attempts]);
  }

  /** Starts buffered jobs while slots are free. */
  #dispatch(): void {
    // Only under a trusted lease: after a freeze (or a lost lease) a buffered
    // job may have been rescued and run elsewhere; it waits for a renewal, or
    // for the adoption to sort it out.
    if (this.#draining || !this.lease.trusted) return;
    // Out of the shared buffer first (the lease thread gives back only what
    // is still in it), then started.
    for (const held of this.held.take(this.executor.freeSlots)) {
      this.executor.run(held.job);
      this.#started += 1;
      this.#holdOff = false;
    }
  }

  #minAhead(): number {
    return Math.min(this.config.concurrency, this.config.maxClaimBatch);
  }

  /** How many jobs to keep claimed ahead of the free slots now. */
  #aheadTarget(): number {
    const avg = this.executor.averageDurationMs;
    if (this.#holdOff || avg === null) return 0;
    // The first claims went out before any job's time was known, so they
    // took the free slots only: the first ahead sizes itself by it, once as
    // many jobs as there are slots have finished. The first to finish is the
    // quickest: sized by it alone, a queue of a few quick jobs among long
    // ones had up to `maxClaimBatch` long jobs claimed and held behind the
    // running ones until they aged out, while other workers sat idle.
    const settled = this.#unsized ? this.#settledAverageMs() : null;
    if (settled !== null) {
      this.#unsized = false;
      this.#ahead = this.#bounded(this.#couldStart(settled, this.#claimMs));
    }
    if (avg < MAX_HOLD_MS) return this.#ahead;
    // What the full slots start within MAX_HOLD_MS: more would wait longer.
    const cap = Math.floor((this.config.concurrency / avg) * MAX_HOLD_MS);
    return Math.min(this.#ahead, cap);
  }

  /**
   * After a claim: keep ahead what covers a few round trips at the rate just
   * seen. When the buffer ran dry meanwhile, the rate seen was bounded by
   * what was held, not by the slots: then at least what the full slots
   * start in a few such round trips (concurrency ÷ average job time × the
   * claim's time), so a worker of quick jobs reaches its full claim size
   * within a few claims instead of doubling its way there.
   */
  #resize(startedDuringClaim: number, ranDry: boolean): void {
    const seen = AHEAD_PER_ROUND_TRIP * startedDuringClaim;
    let next = Math.ceil(0.7 * this.#ahead + 0.3 * seen);
    const avg = this.#settledAverageMs();
    if (ranDry) next = Math.max(2 * this.#ahead, seen, avg === null ? 0 : this.#couldStart(avg, this.#claimMs));
    this.#ahead = this.#bounded(next);
  }

  /**
   * The average job time once as many jobs as there are slots have
   * finished (null before): what the claim size may follow. The first jobs
   * to finish are the quickest of the first claim.
   */
  #settledAverageMs(): number | null {
    return this.executor.finishedCount >= this.#minAhead() ? this.executor.averageDurationMs : null;
  }

  /** Jobs kept ahead for a few round trips of `claimMs` with every slot starting jobs of `avgMs`. */
  #couldStart(avgMs: number, claimMs: number): number {
    return Math.ceil(AHEAD_PER_ROUND_TRIP * (this.config.concurrency / Math.max(avgMs, 0.001)) * claimMs);
  }

  #bounded(ahead: number): number {
    return Math.max(this.#minAhead(), Math.min(this.config.maxClaimBatch, ahead));
  }

  /**
   * The lease thread gave back the jobs held here while the event loop was
   * blocked (`incomplete`: some of them it could not, so reconcile): claim
   * nothing ahead until a job starts again.
   */
  heldTaken(incomplete: boolean): void {
    this.#holdOff = true;
    this.#ahead = this.#minAhead();
    if (incomplete) this.#needsReconcile = true;
    this.wake();
  }

  /** Gives held, never started jobs back: available again, attempt not counted. */
  async #release(held: HeldJob[], what: string): Promise<void> {
    if (held.length === 0) return;
    try {
      await this.statements.releaseUnstarted(this.db, { workerIds: this.lease.ids, attempts: held.map((h) => [h.job.id, h.job.attempts]) });
    } catch (err) {
      // Not held any more: the next reconcile gives them back (or, after a stop, the rescuer).
      this.#needsReconcile = true;
      this.logger.warn({ err: errorSummary(err), jobs: held.length }, `pgq could not give back ${what} jobs; they will be released later: ${errorMessage(err)}`);
    }
  }

  /** Held jobs past prefetchTtlMs go back; claim nothing ahead until a job starts. */
  async #expireHeld(): Promise<void> {
    const cutoff = this.clock.monotonicMs() - this.config.prefetchTtlMs;
    const expired = this.held.takeWhile((h) => h.heldAt <= cutoff);
    if (expired.length === 0) return;
    this.#holdOff = true;
    this.#ahead = this.#minAhead();
    await this.#release(expired, 'unstarted');
  }

  /** Milliseconds until the oldest held job ages out (the poll interval when none is held). */
  #untilExpiry(): number {
    const oldest = this.held.oldest();
    if (!oldest) return this.config.pollIntervalMs;
    return Math.max(0, Math.min(this.config.pollIntervalMs, oldest.heldAt + this.config.prefetchTtlMs - this.clock.monotonicMs()));
  }

  protected async run(signal: AbortSignal): Promise<void> {
    let failures = 0;
    while (!signal.aborted) {
      this.#dispatch();
      if (this.held.length > 0) await this.#expireHeld();
      const ahead = this.#aheadTarget();
      const want = this.executor.freeSlots + ahead - this.held.length;
      if (!this.lease.trusted || this.completer.backlogged) {
        await this.#waker.wait(Math.min(this.#untilExpiry(), 250), signal);
        continue;
      }
      // Claim once the buffer is down to half of what is kept ahead.
      const due = want > 0 && this.held.length <= ahead / 2;
      if (!due || !this.#moreWaiting) {
        await this.#waker.wait(!due ? this.#untilExpiry() : Math.min(this.#untilExpiry(), await this.#idleWaitMs()), signal);
        if (want > 0) this.#moreWaiting = true; // a poll, a timer or a wake: look again
        continue;
      }
      try {
        if (this.#needsReconcile) await this.#releaseOrphans();
        const limit = Math.min(want, this.config.maxClaimBatch);
        if (this.clock.monotonicMs() >= this.#promoteAt) await this.#promoteOrLater(limit);
        const startedBefore = this.#started;
        // The lease may have been lost while the statements above ran: a
        // claim goes out only under a trusted lease, with the id read now.
        if (!this.lease.trusted) continue;
        const workerId = this.lease.workerId;
        const registeredAt = this.lease.registeredAt || null;
        // The lease thread is giving back what a blocked loop held: claim once it is done.
        const claim = this.held.beginClaim();
        if (claim === null) {
          await sleep(10, signal);
          continue;
        }
        let rows: ClaimRow[];
        this.#claimSent = true;
        const sentAt = this.clock.monotonicMs();
        try {
          rows = await this.statements.claimJobs(this.db, {
            queues: [...this.config.queues],
            tasks: [...this.config.tasks],
            limit,
            startable: this.executor.freeSlots,
            workerId,
            registeredAt,
          });
        } catch (err) {
          this.held.endClaim(claim, [], null);
          throw err;
        }
        failures = 0;
        if (this.lease.workerId !== workerId) {
          // Claimed under a lease lost since. A rescue that began before this
          // claim committed missed its rows (they were not running yet when
          // it looked) and removed the lease: they run for nobody. Given back
          // under the lost id, uncounted; rows a rescue did take are no
          // longer that id's, and stay as it left them.
          this.held.endClaim(claim, [], null);
          if (rows.length > 0) {
            const jobs = rows.map((row) => toClaimedJob(row, workerId));
            const ids = jobs.map((job) => job.id);
            const attempts = jobs.map((job): [string, number] => [job.id, job.attempts]);
            try {
              const given = await this.statements.releaseUnstarted(this.db, { workerIds: [workerId], attempts });
              this.logger.warn({ jobs: ids }, `pgq claimed ${rows.length} job(s) under its lost lease and gave ${given} back (a rescue took the rest)`);
            } catch (err) {
              this.logger.warn({ err: errorSummary(err), jobs: ids }, `pgq could not give back the jobs claimed under its lost lease; the rescuer will: ${errorMessage(err)}`);
            }
          }
          continue;
        }
        const ranDry = this.held.length === 0 && this.executor.freeSlots > 0;
        this.#claimMs = this.clock.monotonicMs() - sentAt;
        if (ahead > 0) this.#resize(this.#started - startedBefore, ranDry);
        const heldAt = this.clock.monotonicMs();
        // The claim's started_at (a gate's claim of several queues may have several: the latest).
        let startedAt: number | null = null;
        for (const row of rows) {
          const us = claimStartedMicros(row);
          if (us !== null) startedAt = Math.max(startedAt ?? us, us);
        }
        const jobs = rows.map((row) => ({ job: toClaimedJob(row, workerId), heldAt }));
        if (!this.held.endClaim(claim, jobs, startedAt)) {
          // Sent before the lease thread gave back what the blocked loop held (perhaps these too): start none of them.
          this.#needsReconcile = true;
          continue;
        }
        this.#dispatch();
        this.#firstClaimDone();
        if (rows.length < limit) this.#moreWaiting = false;
        if (this.clock.monotonicMs() >= this.#sweepAt) await this.#promoteOrLater(limit - rows.length);
      } catch (err) {
        this.#firstClaimDone();
        failures += 1;
        // A claim that may have been made (its statement sent) is looked for later; one refused at connect was not.
        if (!isConnectFailure(err)) this.#needsReconcile = true;
        if (failures === 1 || failures % 20 === 0) {
          this.logger.warn({ err: errorSummary(err) }, `pgq could not claim jobs, retrying: ${errorMessage(err)}`);
        }
        await sleep(Math.min(this.config.pollIntervalMs, 50 * 2 ** Math.min(failures, 6)), signal);
      }
    }
  }

  /**
   * How long to sleep when idle: until the next scheduled job is due, at
   * most the poll interval. Measured on the database's clock, which due
   * times are written with (this host's may be ahead or behind).
   */
  async #idleWaitMs(): Promise<number> {
    // After the turn that started the jobs just claimed: sent before, this
    // look's statement would delay their handlers' start by its checkout and
    // its write, on the path of an idle worker's latency.
    await new Promise<void>((resolve) => setImmediate(resolve));
    try {
      const { runAtMs, nowMs } = await this.statements.nextRunAt(this.db, { queues: [...this.config.queues], tasks: [...this.config.tasks] });
      // Half the round trip short at most: `dueAt` may wake that much early, and a look again is one more round.
      this.#databaseAheadMs = nowMs - this.clock.now().getTime();
      if (runAtMs === null) {
        this.#overdueLooks = 0;
        return this.config.pollIntervalMs;
      }
      let inMs = runAtMs - nowMs + 1;
      if (inMs > 0) this.#overdueLooks = 0;
      else {
        // Due, and still waiting after a promotion (a row another
        // transaction holds locked): look again at once the first time,
        // then back off.
        this.#overdueLooks += 1;
        inMs = this.#overdueLooks === 1 ? 0 : Math.min(this.config.pollIntervalMs, 10 * 2 ** Math.min(this.#overdueLooks - 2, 10));
      }
      this.#promoteAt = Math.min(this.#promoteAt, this.clock.monotonicMs() + inMs);
      return Math.min(this.config.pollIntervalMs, inMs);
    } catch {
      return this.config.pollIntervalMs;
    }
  }

  /**
   * #promote, a failure logged apart from the claim's and tried again later,
   * backing off: the claim goes on with the jobs already available, and its
   * own errors (a claim that may have been made) are not mistaken for it. A
   * connection error is the claim loop's, as before (it backs off, and says
   * the database is away once).
   */
  async #promoteOrLater(claimable: number): Promise<void> {
    try {
      await this.#promote(claimable);
      this.#promoteFailures = 0;
      this.#promotions.succeeded();
    } catch (err) {
      // The connection, not the promotion: the claim would fail the same way (its loop retries and logs it).
      if (isConnectionError(err) && !isTransactionConflict(err)) throw err;
      this.#promoteFailures += 1;
      this.#promotions.failed(err);
      const retryAt = this.clock.monotonicMs() + Math.min(this.config.pollIntervalMs, 50 * 2 ** Math.min(this.#promoteFailures, 6));
      this.#promoteAt = Math.max(this.#promoteAt, retryAt);
      this.#sweepAt = Math.max(this.#sweepAt, retryAt);
    }
  }

  /** Makes due scheduled and retryable jobs available; `claimable`: how many this worker claims next. */
  async #promote(claimable: number): Promise<void> {
    const { promoted, seen } = await this.statements.promoteDue(this.db, { queues: [...this.config.queues], limit: PROMOTE_BATCH, tasks: [...this.config.tasks], claimable });
    // Due jobs it saw and did not promote (another promotion's, whose worker's claim may have skipped them): claimed next here.
    if (seen > 0) this.#moreWaiting = true;
    // A full batch means more are due: promote again before the next claim.
    this.#promoteAt = promoted >= PROMOTE_BATCH ? 0 : Infinity;
    this.#sweepAt = this.clock.monotonicMs() + this.config.pollIntervalMs;
    if (promoted > 0) {
      this.#moreWaiting = true;
      this.#overdueLooks = 0;
    }
  }

  async #releaseOrphans(): Promise<void> {
    const released = await this.statements.releaseOrphans(this.db, {
      workerId: this.lease.workerId,
      registeredAt: this.lease.registeredAt || null,
      // Outcomes given up stay for the rescuer (executor.ts: #unrecorded).
      heldIds: [...this.executor.heldIds(), ...this.bufferedIds(), ...this.executor.unrecordedIds()],
    });
    this.#needsReconcile = false;
    if (released.length > 0) {
      this.logger.warn({ jobs: released.map((r) => r.id) }, `pgq gave back ${released.length} job(s) whose claim reply was lost`);
    }
  }
}
