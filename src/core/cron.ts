/**
 * When a schedule fires: a cron expression in an IANA time zone (through
 * cron-parser), or a fixed interval. Both become a `TickSource`, a sequence of
 * instants that the scheduler walks one tick at a time.
 *
 * Daylight saving, as cron-parser resolves it when stepping from one tick to
 * the next (the scheduler always steps from the schedule's stored next tick):
 * - Spring forward: a wall-clock time inside the skipped hour fires once, one
 *   gap later (a daily 02:30 in Europe/Rome fires at 03:30 CEST that day).
 *   Expressions that match every hour simply have no ticks in the gap.
 * - Fall back: an expression with a fixed hour fires at the first occurrence
 *   of the repeated wall-clock time only; one whose hour field matches every
 *   hour (`0 * * * *`, `*\/15 * * * *`) fires in both passes of the hour, so
 *   it keeps its real-time spacing. A resume or a timing change in the second
 *   pass does not step from the last tick; `resume` skips the same repeats.
 *
 * Intervals (`every: '5m'`) are aligned to the Unix epoch: a 5-minute
 * schedule fires at :00, :05, :10 … UTC, whenever it was created, so its ticks
 * are the same on every host and across restarts.
 */
import { createRequire } from 'node:module';
import type { CronExpression } from 'cron-parser';
import { ValidationError } from './errors.js';

type CronParser = typeof import('cron-parser').CronExpressionParser;
let cronParser: CronParser | undefined;

/**
 * cron-parser (with luxon, about 9 MiB of memory and 60 ms of loading) is
 * loaded on the first cron expression, not on `import 'pgq'`: a process
 * that never reads a cron schedule never loads it. It is CommonJS, so a
 * synchronous require serves the synchronous validators.
 */
function parser(): CronParser {
  cronParser ??= (createRequire(import.meta.url)('cron-parser') as typeof import('cron-parser')).CronExpressionParser;
  return cronParser;
}

/** The instants a schedule fires at. */
export interface TickSource {
  /** The first tick strictly after `after`. */
  next(after: Date): Date;
  /**
   * The first tick strictly after `after` (and after `lastFired`) for a
   * schedule that last fired at `lastFired`: a resume or a timing change.
   * After `lastFired` too, because a host whose clock is behind the leader's
   * must not hand out again a tick the leader already fired (the tick's
   * unique key guards only while its job is live). It does not step from
   * the last tick as `next` does, so in the repeated hour of a
   * daylight-saving fall-back it skips itself what stepping would: for an
   * expression with a fixed hour, a wall-clock time that already fired.
   */
  resume(after: Date, lastFired: Date | null): Date;
  /** Up to `count` ticks strictly before `before`, oldest first. */
  before(before: Date, count: number): Date[];
}

/** What a schedule does with ticks missed by more than its `misfireGraceMs`: drop them, fire the latest, or fire each. */
export const CATCH_UP_POLICIES = ['skip', 'once', 'all'] as const;
export type CatchUpPolicy = (typeof CATCH_UP_POLICIES)[number];

/** Most jobs one schedule makes in one scheduler pass (so also the largest `catchUpLimit`). */
export const MAX_TICKS_PER_PASS = 1_000;

export const MIN_EVERY_MS = 1_000;
export const MAX_EVERY_MS = 366 * 86_400_000;

const MACROS = new Set([
  '@yearly', '@annually', '@monthly', '@weekly', '@daily', '@hourly', '@minutely', '@secondly', '@weekdays', '@weekends',
]);

/** Milliseconds per unit of a duration written as text (`30s`, `5m`, `100/1h`). */
export const DURATION_UNITS_MS: Readonly<Record<string, number>> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * The canonical IANA name of a time zone (`europe/rome` → `Europe/Rome`), or a
 * ValidationError naming `field`.
 */
export function parseTimeZone(timezone: unknown, field = 'timezone'): string {
  if (typeof timezone !== 'string' || timezone.trim() === '') {
    throw new ValidationError(field, 'must be an IANA time zone name such as "Europe/Rome" or "UTC"');
  }
  let canonical: string;
  try {
    canonical = new Intl.DateTimeFormat('en-US', { timeZone: timezone }).resolvedOptions().timeZone;
  } catch {
    throw new ValidationError(field, `${JSON.stringify(timezone)} is not a known IANA time zone (e.g. "Europe/Rome", "America/New_York", "UTC")`);
  }
  try {
    parser().parse('0 0 * * *', { tz: canonical, currentDate: new Date(0) }).next();
  } catch {
    throw new ValidationError(field, `${JSON.stringify(timezone)} is not a time zone cron schedules support; use an IANA name such as "Europe/Rome"`);
  }
  return canonical;
}

/**
 * Checks a cron expression: 5 fields (minute precision), 6 fields (the first
 * is seconds) or a macro such as `@daily`. Returns it trimmed, with single
 * spaces between fields.
 */
export function parseCron(expression: unknown, timezone: string, field = 'cron'): string {
  if (typeof expression !== 'string') throw new ValidationError(field, 'must be a cron expression string such as "0 2 * * *"');
  const fields = expression.trim().split(/\s+/).filter(Boolean);
  // A macro in any case (`@DAILY`) as cron-parser reads it, in lower case.
  const macro = fields.length === 1 && fields[0]!.startsWith('@');
  const normalised = macro ? fields[0]!.toLowerCase() : fields.join(' ');
  if (macro) {
    if (!MACROS.has(normalised)) {
      throw new ValidationError(field, `${JSON.stringify(expression)} is not a known macro (${[...MACROS].join(', ')})`);
    }
  } else if (fields.length !== 5 && fields.length !== 6) {
    throw new ValidationError(
      field,
      `${JSON.stringify(expression)} has ${fields.length} field(s); give 5 (minute hour day-of-month month day-of-week) or 6 (with seconds first)`,
    );
  }
  // cron-parser's hashed values (`H`, `H(0-29)`, `H/5`, and H as a range's
  // end or a step: `H-59`, `0/H`) are random unless seeded, and pgq parses
  // the expression again for every tick: refused rather than fired at
  // random times. An H that is not part of a name (THU) is one.
  const hashed = fields.find((f) => /(^|[^a-z])h(?![a-z])/i.test(f));
  if (hashed !== undefined) {
    throw new ValidationError(field, `${JSON.stringify(expression)} uses H (${hashed}), a hashed value pgq does not support: write the minute, hour or day itself`);
  }
  try {
    parser().parse(normalised, { tz: timezone, currentDate: new Date(0) }).next();
  } catch (err) {
    throw new ValidationError(field, `${JSON.stringify(expression)} is not a valid cron expression: ${err instanceof Error ? err.message : String(err)}`);
  }
  // The schedules table keeps at most 200 characters.
  if (normalised.length > MAX_CRON_LENGTH) {
    throw new ValidationError(field, `is ${normalised.length} characters long; at most ${MAX_CRON_LENGTH} (use ranges and steps, e.g. "0-59/5")`);
  }
  return normalised;
}

const MAX_CRON_LENGTH = 200;

/** A duration such as `30s`, `5m`, `1h30m`, `1d` in milliseconds, of any length; null: not one. */
export function durationMs(text: string): number | null {
  // Units in lower case only: "6M" read as six minutes deleted the jobs of the last six minutes for six months'.
  if (!/^\s*(\d+\s*(ms|s|m|h|d)\s*)+$/.test(text)) return null;
  let ms = 0;
  for (const [, amount, unit] of text.matchAll(/(\d+)\s*(ms|s|m|h|d)/g)) ms += Number(amount) * DURATION_UNITS_MS[unit!]!;
  return ms;
}

/** Parses `every`: milliseconds, or a duration such as `30s`, `5m`, `1h30m`, `1d`. At least 1 s. */
export function parseEvery(every: unknown, field = 'every'): number {
  // Digits alone are milliseconds, as a number is (the CLI's --every 5000).
  const ms = typeof every === 'number' ? every : typeof every === 'string' ? (/^\s*\d+\s*$/.test(every) ? Number(every) : durationMs(every)) : null;
  if (ms === null) {
    throw new ValidationError(field, `${JSON.stringify(every)} is not a duration; use milliseconds or e.g. "30s", "5m", "1h30m", "1d" (units ms, s, m for minutes, h, d, in lower case)`);
  }
  if (!Number.isSafeInteger(ms) || ms < MIN_EVERY_MS || ms > MAX_EVERY_MS) {
    throw new ValidationError(field, `must be a whole number of milliseconds from ${MIN_EVERY_MS} (1s) to ${MAX_EVERY_MS} (366d), got ${String(every)}`);
  }
  return ms;
}

/** `300000` → `5m`, `5400000` → `1h30m`: the shortest duration text for an interval. */
export function formatEvery(ms: number): string {
  let left = ms;
  let out = '';
  for (const [unit, size] of [['d', 86_400_000], ['h', 3_600_000], ['m', 60_000], ['s', 1_000], ['ms', 1]] as const) {
    if (left >= size) {
      out += `${Math.floor(left / size)}${unit}`;
      left %= size;
    }
  }
  return out || '0ms';
}

/** Most ticks `resume` steps over in a fall-back's repeated hour (one a second for an hour is 3,600). */
const MAX_REPEATED_TICKS = 10_000;

/** How far after a time cron-parser cannot step from pgq looks for the time zone's transition (two days). */
const TRANSITION_WITHIN_MS = 2 * 86_400_000;
/** How far ahead a change is looked for when cron-parser fails far from one (a yearly expression: a year and a day). */
const FAR_TRANSITION_MS = 367 * 86_400_000;
/** The longest spring-forward any zone has had (two hours: Antarctica/Troll's summer), with room. */
const MAX_GAP_MS = 3 * 3_600_000;
/** Most ticks walked back from the first one found past a transition. */
const MAX_WALK_BACK = 1_000;

/** Ticks of a cron expression in a time zone. */
export function cronTicks(expression: string, timezone: string): TickSource {
  const at = (date: Date): CronExpression => parser().parse(expression, { tz: timezone, currentDate: date });
  /**
   * The first tick after `after`. cron-parser cannot step from some times
   * before a DST transition (from the fifteen hours before Australia/
   * Lord_Howe's half-hour fall-back, a daily "0 2 * * *" fails with "loop
   * limit exceeded", each try costing it hundreds of milliseconds): then it
   * steps from the transition itself (found from the zone's UTC offset),
   * and the ticks between `after` and the one found are walked back with
   * `prev()`.
   */
  const step = (after: Date): Date => {
    let tick: Date;
    try {
      tick = at(after).next().toDate();
    } catch (err) {
      return stepAround(after, err);
    }
    // Next to some changes cron-parser steps back (Pacific/Chatham's fall-back: a `*/15` gave a tick 45
    // minutes before the time stepped from, and a schedule would have fired it again and again).
    return tick.getTime() > after.getTime() ? tick : stepAround(after, new Error(`cron-parser stepped back to ${tick.toISOString()}`));
  };
  let fixedHour: boolean | undefined;
  /**
   * `step`, and an hour field matching fewer than 24 hours fires in the
   * first pass of a repeated hour only: cron-parser steps so in most zones,
   * not in all (Antarctica/Troll's two-hour fall-back gave a daily 02:00
   * twice), so a tick whose wall-clock time is not later than `after`'s is
   * passed over.
   */
  const next = (after: Date): Date => {
    let tick = step(after);
    fixedHour ??= at(after).fields.hour.values.length < 24;
    if (!fixedHour) return tick;
    const from = wall(after);
    for (let i = 0; i < MAX_REPEATED_TICKS && wall(tick) <= from; i += 1) tick = step(tick);
    return inGap(after, tick) ?? tick;
  };
  /**
   * A wall-clock time the expression matches inside a spring-forward gap
   * between `after` and `tick`, moved one gap later (the rule of
   * docs/schedules.md); null when there is none. cron-parser moves it so
   * for a one-hour gap, not for Australia/Lord_Howe's half-hour one, where a
   * daily 02:15 had no job on the day of the change.
   */
  const inGap = (after: Date, tick: Date): Date | null => {
    const sinceRecent = inRecentGap(after, tick);
    if (sinceRecent) return sinceRecent;
    // The same offset at both ends of a span no longer than the search below: no change between them (the common case, two readings).
    if (tick.getTime() - after.getTime() <= TRANSITION_WITHIN_MS && offsetAt(after.getTime()) === offsetAt(tick.getTime())) return null;
    // The transition is searched for near the first wall-clock time the expression matches after `after` (a weekly or yearly tick is days past it).
    const first = parser().parse(expression, { tz: 'UTC', currentDate: new Date(Date.parse(`${wall(after)}Z`)) }).next().toDate().getTime();
    const near = Math.max(after.getTime(), first - offsetAt(after.getTime()) - TRANSITION_WITHIN_MS / 2);
    const change = nextTransition(near);
    if (change === null) return null;
    // A match still before the change that cron-parser stepped over (America/Nuuk springs forward at 23:00:
    // from the day before, a daily 22:30 went on to the day after the change, an hourly one to the change itself).
    const beforeChange = first - offsetAt(change - 1);
    if (beforeChange > after.getTime() && beforeChange < change && beforeChange < tick.getTime()) return new Date(beforeChange);
    if (change >= tick.getTime()) return null;
    const gap = offsetAt(change) - offsetAt(change - 1);
    if (gap <= 0) return null;
    // Wall-clock times as UTC milliseconds: the first one skipped, and the first the expression matches from it.
    const skipped = Date.parse(`${wall(new Date(change - 1))}Z`) + 1;
    const matched = parser().parse(expression, { tz: 'UTC', currentDate: new Date(skipped - 1) }).next().toDate().getTime();
    if (matched >= skipped + gap) return null;
    const moved = new Date(change + (matched - skipped));
    return moved.getTime() > after.getTime() && moved.getTime() < tick.getTime() ? moved : null;
  };
  /**
   * A later match inside a gap that `after` is itself one gap past: the
   * tick moved from the gap's first match fired (cron-parser's 03:15 for a
   * `15,45 2` in Europe/Rome), and its 02:45 fires at 03:45 (cron-parser
   * went on to the next day). One more reading per tick: the offset a gap
   * back, the same as now but within a gap of a change.
   */
  const inRecentGap = (after: Date, tick: Date): Date | null => {
    if (offsetAt(after.getTime() - MAX_GAP_MS) === offsetAt(after.getTime())) return null;
    const change = nextTransition(after.getTime() - MAX_GAP_MS);
    if (change === null || change > after.getTime()) return null;
    const gap = offsetAt(change) - offsetAt(change - 1);
    if (gap <= 0 || after.getTime() >= change + gap) return null;
    // Wall-clock times as UTC milliseconds: the first one skipped, the match `after` fired for, and the next
    // match from there. cron-parser moves a match one hour (Antarctica/Troll's two-hour gap too), pgq's
    // inGap one gap (Lord Howe's half hour): the shorter of the two is how far `after` was moved.
    const skipped = Date.parse(`${wall(new Date(change - 1))}Z`) + 1;
    const from = after.getTime() + offsetAt(after.getTime()) - Math.min(gap, 3_600_000);
    const matched = parser().parse(expression, { tz: 'UTC', currentDate: new Date(from) }).next().toDate().getTime();
    if (matched >= skipped + gap) return null;
    const moved = new Date(change + (matched - skipped));
    return moved.getTime() > after.getTime() && moved.getTime() < tick.getTime() ? moved : null;
  };
  const stepAround = (after: Date, cause: unknown): Date => {
    // A tick not after the time stepped from is cron-parser stepping wrong there too.
    const from = (ms: number): Date | null => {
      try {
        const tick = at(new Date(ms)).next().toDate();
        return tick.getTime() > ms ? tick : null;
      } catch {
        return null;
      }
    };
    // The change is usually within two days; a weekly or yearly expression may fail from further before it.
    const transition = nextTransition(after.getTime()) ?? nextTransition(after.getTime(), FAR_TRANSITION_MS);
    let found: Date | null = null;
    if (transition !== null) {
      for (const late of [0, 60_000, 3_600_000, 86_400_000]) {
        found = from(transition + late);
        if (found) break;
      }
    }
    if (!found) {
      throw new ValidationError('cron', `${JSON.stringify(expression)} in ${timezone} has no tick cron-parser can find after ${after.toISOString()} (${cause instanceof Error ? cause.message : String(cause)})`);
    }
    let tick: Date = found;
    try {
      const back = at(tick);
      for (let i = 0; i < MAX_WALK_BACK; i += 1) {
        const earlier = back.prev().toDate();
        if (earlier.getTime() <= after.getTime()) break;
        tick = earlier;
      }
    } catch {
      // cron-parser cannot step back from here either: the tick found stands.
    }
    return tick;
  };
  /** The first instant after `ms` (within `withinMs`, two days by default) at which the zone's UTC offset changes, to the millisecond; null: none. */
  const nextTransition = (ms: number, withinMs = TRANSITION_WITHIN_MS): number | null => {
    const offset = offsetAt(ms);
    let before = ms;
    while (before + 3_600_000 <= ms + withinMs && offsetAt(before + 3_600_000) === offset) before += 3_600_000;
    if (before + 3_600_000 > ms + withinMs) return null;
    let after = before + 3_600_000;
    while (after - before > 1) {
      const middle = before + Math.floor((after - before) / 2);
      if (offsetAt(middle) === offset) before = middle;
      else after = middle;
    }
    return after;
  };
  /** The zone's offset from UTC at `ms`, in ms (from its wall-clock reading). */
  const offsetAt = (ms: number): number => {
    const date = new Date(ms);
    return Date.parse(`${wall(date)}Z`) - ms;
  };
  let wallClock: Intl.DateTimeFormat | undefined;
  const wall = (date: Date): string => {
    wallClock ??= new Intl.DateTimeFormat('en-CA', {
      timeZone: timezone, hourCycle: 'h23', year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit',
    });
    const p = Object.fromEntries(wallClock.formatToParts(date).map((part) => [part.type, part.value]));
    return `${p.year}-${p.month}-${p.day}T${p.hour}:${p.minute}:${p.second}.${String(date.getUTCMilliseconds()).padStart(3, '0')}`;
  };
  return {
    next,
    resume(after, lastFired) {
      const from = lastFired && lastFired.getTime() > after.getTime() ? lastFired : after;
      let tick = next(from);
      // An hour field matching fewer than 24 hours: cron-parser's stepping
      // fires such an expression in the first pass of a repeated hour only.
      if (!lastFired || at(from).fields.hour.values.length === 24) return tick;
      // Past a fall-back the wall clock runs again through times that
      // already fired: a tick whose wall-clock time is not later than the
      // last fired one's repeats it (the second pass of the hour).
      const fired = wall(lastFired);
      for (let i = 0; i < MAX_REPEATED_TICKS && wall(tick) <= fired; i += 1) tick = next(tick);
      return tick;
    },
    before(before, count) {
      const iterator = at(before);
      const out: Date[] = [];
      try {
        for (let i = 0; i < count; i += 1) out.push(iterator.prev().toDate());
      } catch {
        // cron-parser cannot step back past a DST transition here: the latest ticks found are the ones caught up.
      }
      return out.reverse();
    },
  };
}

/** Ticks every `everyMs`, aligned to the Unix epoch. */
export function intervalTicks(everyMs: number): TickSource {
  const next = (after: Date): Date => new Date((Math.floor(after.getTime() / everyMs) + 1) * everyMs);
  return {
    next,
    resume: (after, lastFired) => next(lastFired && lastFired.getTime() > after.getTime() ? lastFired : after),
    before(before, count) {
      const last = Math.ceil(before.getTime() / everyMs) - 1;
      const out: Date[] = [];
      for (let k = Math.max(0, last - count + 1); k <= last; k += 1) out.push(new Date(k * everyMs));
      return out;
    },
  };
}

/** The tick source of a stored schedule: `cron` + `timezone`, or `every_ms`. */
export function ticksOf(timing: { cron: string | null; timezone: string; every_ms: string | number | null }): TickSource {
  if (timing.cron !== null) return cronTicks(timing.cron, timing.timezone);
  if (timing.every_ms !== null) return intervalTicks(Number(timing.every_ms));
  throw new ValidationError('schedule', 'has neither cron nor every');
}
