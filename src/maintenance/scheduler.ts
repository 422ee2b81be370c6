/**
 * The scheduler (leader only) turns due schedule ticks into jobs.
 *
 * Invariant — each tick fires at most once, and a fired tick is never lost:
 * a schedule is fired in one transaction that locks its row (`FOR UPDATE
 * SKIP LOCKED`, and only while `next_run_at <= now`), inserts the jobs of its
 * due ticks (unique key `schedule:<name>:<tick ISO time>`, `run_at` = the
 * tick) and moves `next_run_at` past them. Two leaders at a failover cannot
 * both fire a tick: the second one either skips the locked row or, once the
 * first commits, no longer finds it due. A crash before the commit rolls the
 * jobs back together with the advance, so the next leader fires the tick.
 *
 * Lateness: a tick found due at most `misfire_grace_ms` after its time is on
 * time and always fires. Older ticks were missed (every worker down, or a
 * leader gap longer than the grace) and follow the schedule's `catch_up`:
 * `skip` drops them, `once` fires the latest of them, `all` fires each, at
 * most `catch_up_limit` (the latest ones).
 *
 * Loop: fire what is due, then sleep until the earliest `next_run_at` (at
 * most `maxSleepMs`), woken early by the `schedules` NOTIFY that pgq sends
 * whenever a schedule is saved, paused or resumed.
 */
import type { Kysely } from 'kysely';
import type { TaskRegistry } from '../task.js';
import type { Logger } from '../core/logger.js';
import type { Clock } from '../core/clock.js';
import { LoopService } from '../core/service.js';
import { Waker } from '../core/sleep.js';
import { errorMessage, errorSummary } from '../core/errors.js';
import { fromKysely } from '../db/queryable.js';
import type { HotStatements } from '../db/statements.js';
import type { MiddlewareChain } from '../middleware.js';
import { insertScheduleJobs } from '../schedules.js';
import type { PgqDatabase } from '../db/tables.js';
import type { Listener } from '../notify/listener.js';
import { MAX_TICKS_PER_PASS, ticksOf, type CatchUpPolicy, type TickSource } from '../core/cron.js';
import { channelNames } from '../notify/channels.js';
import { RepeatedFailure } from '../core/repeated-failure.js';

/** Most ticks walked one by one before jumping straight to the grace window. */
const WALK_LIMIT = 2_000;
/** Schedules fetched per round of a pass. */
const DUE_BATCH = 100;
/** How soon to look again at a due schedule whose row another transaction held. */
const LOCKED_RETRY_MS = 250;

/** The unique key of the job a schedule makes for one tick. */
export function tickUniqueKey(schedule: string, tick: Date): string {
  return `schedule:${schedule}:${tick.toISOString()}`;
}

export interface TickPolicy {
  nextRunAt: Date;
  catchUp: CatchUpPolicy;
  catchUpLimit: number;
  misfireGraceMs: number;
}

export interface TickPlan {
  /** Ticks to fire now, oldest first. */
  fire: Date[];
  /** The schedule's next tick: after `now`, or, when more ticks were due than one pass fires, the first one left (the next pass fires it at once). */
  next: Date;
  /** Whether ticks were missed (due before the grace window), fired by the policy or not. */
  missed: boolean;
}

/** Which of a schedule's due ticks fire at `now`, and its next tick. Pure. */
export function planTicks(ticks: TickSource, policy: TickPolicy, now: Date): TickPlan {
  const nowMs = now.getTime();
  const lateBefore = nowMs - policy.misfireGraceMs;
  const due: Date[] = [];
  let t = policy.nextRunAt;
  while (t.getTime() <= nowMs && due.length < WALK_LIMIT) {
    due.push(t);
    t = ticks.next(t);
  }
  let missed: Date[];
  let onTime: Date[];
  let next: Date;
  let walkedAll: boolean;
  if (t.getTime() <= nowMs) {
    // Too many due ticks to walk (a long outage of a frequent schedule): take
    // the missed ticks the policy wants from just before the grace window,
    // then walk the window itself.
    const wanted = policy.catchUp === 'all' ? policy.catchUpLimit : policy.catchUp === 'once' ? 1 : 0;
    missed = wanted > 0 ? ticks.before(new Date(lateBefore), wanted).filter((d) => d.getTime() >= policy.nextRunAt.getTime()) : [];
    onTime = [];
    // Never a tick before nextRunAt: those were fired (a pass cut short by MAX_TICKS_PER_PASS left off at nextRunAt).
    const from = Math.max(lateBefore, policy.nextRunAt.getTime()) - 1;
    let u = ticks.next(new Date(from));
    for (; u.getTime() <= nowMs && onTime.length < WALK_LIMIT; u = ticks.next(u)) onTime.push(u);
    // Stepped from the window's last tick, as every other next tick is (a
    // fresh look from now, in the second pass of a fall-back's repeated
    // hour, would hand out again the wall-clock times the window fired).
    next = u.getTime() > nowMs ? u : ticks.next(now);
    walkedAll = false;
  } else {
    missed = due.filter((d) => d.getTime() < lateBefore);
    onTime = due.filter((d) => d.getTime() >= lateBefore);
    next = t;
    walkedAll = true;
  }
  const chosen = policy.catchUp === 'all' ? missed.slice(-policy.catchUpLimit) : policy.catchUp === 'once' ? missed.slice(-1) : [];
  const fire = [...chosen, ...onTime];
  const late = !walkedAll || missed.length > 0;
  // More than one pass makes: the oldest now, the rest from the next pass on (none is lost).
  if (fire.length > MAX_TICKS_PER_PASS) return { fire: fire.slice(0, MAX_TICKS_PER_PASS), next: fire[MAX_TICKS_PER_PASS]!, missed: late };
  return { fire, next, missed: late };
}

export interface SchedulerConfig {
  /** Longest sleep when nothing is due: how late a schedule edited with plain SQL is noticed. */
  maxSleepMs: number;
}

export interface SchedulerDeps {
  kysely: Kysely<PgqDatabase>;
  statements: HotStatements;
  clock: Clock;
  logger: Logger;
  /** When given, NOTIFYs on the schema's `schedules` channel wake the loop early. */
  listener?: Listener;
  schema: string;
  /** Enqueue middleware: each tick's jobs go through it (kind `schedule`). */
  middleware?: MiddlewareChain;
  /** This process's tasks: a tick's jobs take their task's concurrencyKey and expiresInMs. */
  tasks?: TaskRegistry;
}

/** One tick turned into a job. */
export interface FiredTick {
  schedule: string;
  tick: Date;
  /** The job made for the tick (or the live job that already held its key). */
  jobId: string | null;
}

export interface SchedulerPass {
  fired: FiredTick[];
  /** Schedules whose firing failed this pass (logged; retried next pass). */
  failed: number;
  /** Due schedules left alone because another transaction held their row (another leader firing, an edit, a run-now). */
  skipped: number;
  /** The earliest next tick of an active schedule, or null when there is none. */
  nextAt: Date | null;
}

export class Scheduler extends LoopService {
  readonly #waker = new Waker();
  readonly #passFailures = new RepeatedFailure(this.logger, 'pgq scheduler pass failed', 'pgq scheduler passes again');
  /** The subscription to schedule changes: its LISTEN may still be on its way. */
  #subscription: Promise<() => Promise<void>> | undefined;

  constructor(
    private readonly config: SchedulerConfig,
    private readonly deps: SchedulerDeps,
  ) {
    super('scheduler', deps.logger);
  }

  override async start(): Promise<void> {
    if (this.running) return;
    await super.start();
    if (this.deps.listener && !this.#subscription) {
      // Not awaited: its LISTEN waits on a connection that may not answer
      // (up to the listener's statement limit), and the leader's start must
      // not wait on it (the election renews meanwhile). Until it is heard,
      // the loop's own sleeps find what changed.
      this.#subscription = this.deps.listener.subscribe(channelNames(this.deps.schema).schedules, () => this.#waker.wake());
    }
  }

  override async stop(): Promise<void> {
    await super.stop();
    const subscription = this.#subscription;
    this.#subscription = undefined;
    if (subscription) await (await subscription)();
  }

  /** One pass at `clock.now()`: fires every due schedule. */
  async runOnce(): Promise<SchedulerPass> {
    const { kysely, clock } = this.deps;
    const now = clock.now();
    const fired: FiredTick[] = [];
    const seen = new Set<string>();
    let failed = 0;
    let skipped = 0;
    for (;;) {
      let listing = kysely
        .selectFrom('schedules')
        .select('name')
        .where('enabled', '=', true)
        .where('paused', '=', false)
        .where('next_run_at', '<=', now)
        .orderBy('next_run_at')
        .limit(DUE_BATCH);
      // Not again this pass: one fired but still due (more ticks than a pass
      // fires) would otherwise fill the listing and hold the others back.
      if (seen.size > 0) listing = listing.where('name', 'not in', [...seen]);
      const due = await listing.execute();
      for (const { name } of due) {
        seen.add(name);
        try {
          const ticks = await this.#fire(name, now);
          if (ticks === null) skipped += 1;
          else fired.push(...ticks);
        } catch (err) {
          failed += 1;
          this.logger.warn({ err: errorSummary(err), schedule: name }, `pgq could not fire schedule ${name}: ${errorMessage(err)}`);
        }
      }
      if (due.length < DUE_BATCH) break;
    }
    const next = await kysely
      .selectFrom('schedules')
      .select((eb) => eb.fn.min('next_run_at').as('next'))
      .where('enabled', '=', true)
      .where('paused', '=', false)
      .executeTakeFirst();
    const nextAt = (next?.next as Date | null | undefined) ?? null;
    return { fired, failed, skipped, nextAt };
  }

  protected async run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      let waitMs = this.config.maxSleepMs;
      try {
        const pass = await this.runOnce();
        if (pass.nextAt) waitMs = Math.min(waitMs, Math.max(0, pass.nextAt.getTime() - this.deps.clock.now().getTime()));
        // A schedule that cannot fire stays due; do not spin on it. Nor on
        // one whose row another transaction holds: it is due still, and
        // looking again at once would loop until that transaction ends.
        if (pass.failed > 0) waitMs = Math.max(waitMs, Math.min(1_000, this.config.maxSleepMs));
        else if (pass.skipped > 0) waitMs = Math.max(waitMs, Math.min(LOCKED_RETRY_MS, this.config.maxSleepMs));
        this.#passFailures.succeeded();
      } catch (err) {
        this.#passFailures.failed(err);
        waitMs = Math.min(1_000, this.config.maxSleepMs);
      }
      await this.#waker.wait(waitMs, signal);
    }
  }

  /** Fires one schedule's due ticks and advances it, in one transaction; null when another transaction holds its row. */
  async #fire(name: string, now: Date): Promise<FiredTick[] | null> {
    const { kysely, statements } = this.deps;
    return kysely.transaction().execute(async (trx) => {
      const row = await trx
        .selectFrom('schedules')
        .selectAll()
        .where('name', '=', name)
        .where('enabled', '=', true)
        .where('paused', '=', false)
        .where('next_run_at', '<=', now)
        .forUpdate()
        .skipLocked()
        .executeTakeFirst();
      if (!row) {
        // Held by another transaction (SKIP LOCKED), or no longer due since the listing.
        const still = await trx
          .selectFrom('schedules')
          .select('name')
          .where('name', '=', name)
          .where('enabled', '=', true)
          .where('paused', '=', false)
          .where('next_run_at', '<=', now)
          .executeTakeFirst();
        return still ? null : [];
      }
      const plan = planTicks(
        ticksOf(row),
        { nextRunAt: row.next_run_at, catchUp: row.catch_up, catchUpLimit: row.catch_up_limit, misfireGraceMs: row.misfire_grace_ms },
        now,
      );
      // Every catch-up, whether the policy fires the missed ticks or drops them.
      if (plan.missed) {
        this.logger.warn(
          { schedule: name, catchUp: row.catch_up, from: row.next_run_at, next: plan.next },
          `pgq schedule ${name} missed ticks; catch-up policy ${row.catch_up} fires ${plan.fire.length} job(s) now`,
        );
      }
      const fired: FiredTick[] = [];
      if (plan.fire.length > 0) {
        const firings = plan.fire.map((tick) => ({ tick, runAt: tick, uniqueKey: tickUniqueKey(name, tick) }));
        const jobs = await insertScheduleJobs(fromKysely(trx), statements, this.deps.middleware, row, firings, this.deps.tasks, (message) => this.logger.warn({ schedule: name }, message));
        plan.fire.forEach((tick, i) => fired.push({ schedule: name, tick, jobId: jobs[i] ? String(jobs[i].id) : null }));
      }
      const last = fired.at(-1);
      await trx
        .updateTable('schedules')
        .set({
          next_run_at: plan.next,
          ...(last ? { last_run_at: last.tick, last_job_id: last.jobId } : {}),
        })
        .where('name', '=', name)
        .execute();
      return fired;
    });
  }
}
