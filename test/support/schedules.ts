/**
 * Helpers for schedule tests: a clock the test moves by hand, a scheduler
 * driven pass by pass on that clock, and queries over the jobs it made.
 */
import type pg from 'pg';
import type { Clock, Pgq } from '../../src/index.js';
import { createStatements } from '../../src/db/statements.js';
import { Scheduler, type FiredTick } from '../../src/maintenance/scheduler.js';

export interface ManualClock extends Clock {
  set(at: Date | string): void;
  advance(ms: number): void;
}

export function manualClock(start: Date | string): ManualClock {
  let now = new Date(start).getTime();
  return {
    now: () => new Date(now),
    monotonicMs: () => performance.now(),
    set: (at) => void (now = new Date(at).getTime()),
    advance: (ms) => void (now += ms),
  };
}

/** A scheduler on `pgq`'s schema and clock, run by hand with `runOnce()`. */
export function manualScheduler(pgq: Pgq, clock: Clock): Scheduler {
  return new Scheduler(
    { maxSleepMs: 1_000 },
    { kysely: pgq.kysely, statements: createStatements(pgq.schema), clock, logger: pgq.logger, schema: pgq.schema },
  );
}

/**
 * A punctual leader: passes at exactly each next tick until `until`.
 * Returns every tick fired.
 */
export async function runUntil(scheduler: Scheduler, clock: ManualClock, until: Date | string): Promise<FiredTick[]> {
  const end = new Date(until).getTime();
  const fired: FiredTick[] = [];
  for (;;) {
    const pass = await scheduler.runOnce();
    fired.push(...pass.fired);
    if (!pass.nextAt || pass.nextAt.getTime() > end) return fired;
    clock.set(pass.nextAt);
  }
}

export interface TickJob {
  id: string;
  unique_key: string;
  run_at: Date;
  state: string;
}

/** Jobs a schedule made, by tick. */
export async function jobsOf(admin: pg.Pool, schema: string, schedule: string): Promise<TickJob[]> {
  const { rows } = await admin.query<TickJob>(
    `SELECT id::text, unique_key, run_at, state FROM "${schema}".jobs WHERE unique_key LIKE $1 ORDER BY run_at, id`,
    [`schedule:${schedule}:%`],
  );
  return rows;
}

/** `2025-03-30 03:30` in `timeZone`. */
export function localTime(at: Date, timeZone: string): string {
  const parts = Object.fromEntries(
    new Intl.DateTimeFormat('en-CA', {
      timeZone,
      year: 'numeric',
      month: '2-digit',
      day: '2-digit',
      hour: '2-digit',
      minute: '2-digit',
      hourCycle: 'h23',
    })
      .formatToParts(at)
      .map((p) => [p.type, p.value]),
  );
  return `${parts.year}-${parts.month}-${parts.day} ${parts.hour}:${parts.minute}`;
}
