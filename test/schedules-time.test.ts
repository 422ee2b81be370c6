/**
 * Schedules against time, with a clock the test moves: daylight-saving days
 * in Europe/Rome and America/New_York, each catch-up policy, two leaders
 * firing at once, and a failure between the insert and the advance.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { defineTask, type Pgq } from '../src/index.js';
import { planTicks, tickUniqueKey } from '../src/maintenance/scheduler.js';
import { cronTicks } from '../src/core/cron.js';
import { until, useTestSchema } from './support/harness.js';
import { captureLogger, type Line } from './support/logger.js';
import { jobsOf, localTime, manualClock, manualScheduler, runUntil } from './support/schedules.js';

const ctx = useTestSchema('schedules_time');

const report = defineTask({ name: 'report', schema: z.object({ kind: z.string() }), handler: () => undefined });

afterEach(async () => {
  await ctx.admin.query(`DELETE FROM "${ctx.schema}".schedules`).catch(() => undefined);
  await ctx.admin.query(`DELETE FROM "${ctx.schema}".jobs`).catch(() => undefined);
});

async function setup(start: string) {
  const clock = manualClock(start);
  const pgq = await ctx.migrated({ tasks: [report], clock });
  return { clock, pgq, scheduler: manualScheduler(pgq, clock) };
}

async function localTicks(pgq: Pgq, schedule: string, timeZone: string): Promise<string[]> {
  return (await jobsOf(ctx.admin, pgq.schema, schedule)).map((j) => localTime(j.run_at, timeZone));
}

/** Hours between consecutive jobs. */
function gapsInHours(runAts: Date[]): number[] {
  return runAts.slice(1).map((d, i) => (d.getTime() - runAts[i]!.getTime()) / 3_600_000);
}

describe('daylight saving', () => {
  it('Europe/Rome spring forward: 02:30 fires once at 03:30 CEST; the day has 23 hourly ticks', async () => {
    const { clock, pgq, scheduler } = await setup('2025-03-28T22:00:00Z');
    await pgq.schedule({ name: 'rome-0230', cron: '30 2 * * *', timezone: 'Europe/Rome', task: report, payload: { kind: 'daily' } });
    await pgq.schedule({ name: 'rome-hourly', cron: '0 * * * *', timezone: 'Europe/Rome', task: report, payload: { kind: 'hourly' } });
    await runUntil(scheduler, clock, '2025-03-31T21:59:59Z');

    expect(await localTicks(pgq, 'rome-0230', 'Europe/Rome')).toEqual(['2025-03-29 02:30', '2025-03-30 03:30', '2025-03-31 02:30']);
    expect((await jobsOf(ctx.admin, pgq.schema, 'rome-0230')).map((j) => j.run_at.toISOString())).toEqual([
      '2025-03-29T01:30:00.000Z',
      '2025-03-30T01:30:00.000Z',
      '2025-03-31T00:30:00.000Z',
    ]);
    const hourly = await localTicks(pgq, 'rome-hourly', 'Europe/Rome');
    const onTheDay = hourly.filter((t) => t.startsWith('2025-03-30'));
    expect(onTheDay).toHaveLength(23);
    expect(onTheDay.some((t) => t.startsWith('2025-03-30 02:'))).toBe(false);
    expect(new Set(hourly).size).toBe(hourly.length);
  });

  it('Europe/Rome and New York spring forward: every match inside the skipped hour fires one hour later, not the first alone', () => {
    const ticks = (expression: string, timezone: string, from: string, n: number): string[] => {
      const source = cronTicks(expression, timezone);
      const out: string[] = [];
      let at = new Date(from);
      for (let i = 0; i < n; i += 1) out.push(localTime((at = source.next(at)), timezone));
      return out;
    };
    // cron-parser gave 03:15, then the next day's 02:15: 02:45's job was not made.
    expect(ticks('15,45 2 * * *', 'Europe/Rome', '2025-03-29T12:00:00Z', 4)).toEqual(['2025-03-30 03:15', '2025-03-30 03:45', '2025-03-31 02:15', '2025-03-31 02:45']);
    expect(ticks('*/20 2 * * *', 'America/New_York', '2026-03-07T12:00:00Z', 4)).toEqual(['2026-03-08 03:00', '2026-03-08 03:20', '2026-03-08 03:40', '2026-03-09 02:00']);
    // A match that is also a real time after the gap fires once.
    expect(ticks('15,45 2,3 * * *', 'Europe/Rome', '2025-03-29T12:00:00Z', 3)).toEqual(['2025-03-30 03:15', '2025-03-30 03:45', '2025-03-31 02:15']);
    // Antarctica/Troll's two-hour gap, where cron-parser moves a match one hour: once, not again a gap later.
    expect(ticks('30 2 * * *', 'Antarctica/Troll', '2025-03-29T12:00:00Z', 2)).toEqual(['2025-03-30 03:30', '2025-03-31 02:30']);
    expect(ticks('0 2 * * 0', 'Antarctica/Troll', '2025-03-25T12:00:00Z', 2)).toEqual(['2025-03-30 03:00', '2025-04-06 02:00']);
    // America/Nuuk springs forward at 23:00: cron-parser went from the day before's 22:00 to the change itself.
    expect(ticks('0 */2 * * *', 'America/Nuuk', '2025-03-28T23:30:00Z', 3)).toEqual(['2025-03-28 22:00', '2025-03-29 00:00', '2025-03-29 02:00']);
  });

  it('never steps back or finds no tick next to a change where cron-parser does (Pacific/Chatham, Australia/Lord_Howe)', () => {
    // cron-parser gave 12:15Z after 13:00Z: a schedule would have fired that tick again and again.
    const chatham = cronTicks('*/15 * * * *', 'Pacific/Chatham').next(new Date('2025-04-05T13:00:00Z'));
    expect(chatham.toISOString()).toBe('2025-04-05T13:15:00.000Z');
    // A week before Lord Howe's fall-back cron-parser finds no next Sunday 02:00 ("loop limit exceeded").
    expect(localTime(cronTicks('0 2 * * 0', 'Australia/Lord_Howe').next(new Date('2025-03-29T15:00:00Z')), 'Australia/Lord_Howe')).toBe('2025-04-06 02:00');
  });

  it('Europe/Rome fall back: 02:30 fires once (first pass); hourly fires in both passes of the repeated hour', async () => {
    const { clock, pgq, scheduler } = await setup('2025-10-24T22:00:00Z');
    await pgq.schedule({ name: 'rome-0230', cron: '30 2 * * *', timezone: 'Europe/Rome', task: report, payload: { kind: 'daily' } });
    await pgq.schedule({ name: 'rome-hourly', cron: '0 * * * *', timezone: 'Europe/Rome', task: report, payload: { kind: 'hourly' } });
    await runUntil(scheduler, clock, '2025-10-27T22:59:59Z');

    expect((await jobsOf(ctx.admin, pgq.schema, 'rome-0230')).map((j) => j.run_at.toISOString())).toEqual([
      '2025-10-25T00:30:00.000Z', // 02:30 CEST
      '2025-10-26T00:30:00.000Z', // 02:30 CEST, the first of the two 02:30s
      '2025-10-27T01:30:00.000Z', // 02:30 CET
    ]);
    const hourly = await jobsOf(ctx.admin, pgq.schema, 'rome-hourly');
    const onTheDay = hourly.filter((j) => localTime(j.run_at, 'Europe/Rome').startsWith('2025-10-26'));
    expect(onTheDay).toHaveLength(25);
    expect(onTheDay.filter((j) => localTime(j.run_at, 'Europe/Rome') === '2025-10-26 02:00')).toHaveLength(2);
    expect(new Set(gapsInHours(hourly.map((j) => j.run_at)))).toEqual(new Set([1]));
  });

  it('America/New_York spring forward: 02:30 fires once at 03:30 EDT', async () => {
    const { clock, pgq, scheduler } = await setup('2025-03-08T04:00:00Z');
    await pgq.schedule({ name: 'ny-0230', cron: '30 2 * * *', timezone: 'America/New_York', task: report, payload: { kind: 'daily' } });
    await pgq.schedule({ name: 'ny-hourly', cron: '0 * * * *', timezone: 'America/New_York', task: report, payload: { kind: 'hourly' } });
    await runUntil(scheduler, clock, '2025-03-11T03:59:59Z');

    expect(await localTicks(pgq, 'ny-0230', 'America/New_York')).toEqual(['2025-03-08 02:30', '2025-03-09 03:30', '2025-03-10 02:30']);
    const onTheDay = (await localTicks(pgq, 'ny-hourly', 'America/New_York')).filter((t) => t.startsWith('2025-03-09'));
    expect(onTheDay).toHaveLength(23);
  });

  it('Australia/Lord_Howe half-hour fall back: a daily 02:00 fires every day across it (cron-parser alone cannot step there), saved that day too', async () => {
    // 5 April 2026, 02:00 LHDT (+11) goes back to 01:30 LHST (+10:30). From
    // the fifteen hours before it cron-parser's next() throws "loop limit
    // exceeded" for this expression.
    expect(cronTicks('0 2 * * *', 'Australia/Lord_Howe').next(new Date('2026-04-04T10:00:00Z')).toISOString()).toBe('2026-04-04T15:30:00.000Z');
    expect(cronTicks('0 * * * *', 'Australia/Lord_Howe').next(new Date('2026-04-04T14:00:00Z')).toISOString()).toBe('2026-04-04T15:30:00.000Z');
    const { clock, pgq, scheduler } = await setup('2026-04-02T13:00:00Z');
    await pgq.schedule({ name: 'lh-0200', cron: '0 2 * * *', timezone: 'Australia/Lord_Howe', task: report, payload: { kind: 'daily' } });
    await runUntil(scheduler, clock, '2026-04-04T11:00:00Z');
    // Saved (and so its next tick computed) inside the window cron-parser cannot step from.
    await pgq.schedule({ name: 'lh-0200-late', cron: '0 2 * * *', timezone: 'Australia/Lord_Howe', task: report, payload: { kind: 'late' } });
    await runUntil(scheduler, clock, '2026-04-05T16:00:00Z');

    expect((await jobsOf(ctx.admin, pgq.schema, 'lh-0200')).map((j) => j.run_at.toISOString())).toEqual([
      '2026-04-02T15:00:00.000Z', // 02:00 LHDT, 3 April
      '2026-04-03T15:00:00.000Z', // 02:00 LHDT, 4 April
      '2026-04-04T15:30:00.000Z', // 02:00 LHST, 5 April: the day the clock went back
      '2026-04-05T15:30:00.000Z',
    ]);
    expect(await localTicks(pgq, 'lh-0200-late', 'Australia/Lord_Howe')).toEqual(['2026-04-05 02:00', '2026-04-06 02:00']);
  });

  it('Australia/Lord_Howe half-hour spring forward: a time inside the gap fires once that day, half an hour later (cron-parser skipped the day: no job)', async () => {
    // 5 October 2025, 02:00 LHST (+10:30) goes forward to 02:30 LHDT (+11).
    const { clock, pgq, scheduler } = await setup('2025-10-03T10:00:00Z');
    await pgq.schedule({ name: 'lh-0215', cron: '15 2 * * *', timezone: 'Australia/Lord_Howe', task: report, payload: { kind: 'daily' } });
    await pgq.schedule({ name: 'lh-sunday-0200', cron: '0 2 * * 0', timezone: 'Australia/Lord_Howe', task: report, payload: { kind: 'weekly' } });
    await pgq.schedule({ name: 'lh-every-20m', cron: '*/20 * * * *', timezone: 'Australia/Lord_Howe', task: report, payload: { kind: 'often' } });
    await runUntil(scheduler, clock, '2025-10-06T16:00:00Z');
    expect(await localTicks(pgq, 'lh-0215', 'Australia/Lord_Howe')).toEqual(['2025-10-04 02:15', '2025-10-05 02:45', '2025-10-06 02:15', '2025-10-07 02:15']);
    expect(await localTicks(pgq, 'lh-sunday-0200', 'Australia/Lord_Howe')).toEqual(['2025-10-05 02:30']);
    // An expression matching every hour has no ticks in the missing half hour, and none added.
    const often = await localTicks(pgq, 'lh-every-20m', 'Australia/Lord_Howe');
    expect(often.filter((t) => t.startsWith('2025-10-05 0'))).toContain('2025-10-05 01:40');
    expect(often.filter((t) => /^2025-10-05 0[1-3]:/.test(t))).toEqual(['2025-10-05 01:00', '2025-10-05 01:20', '2025-10-05 01:40', '2025-10-05 03:00', '2025-10-05 03:20', '2025-10-05 03:40']);
    // Weekly and yearly ticks come days after the one before: the change is looked for near the time matched, not near the last tick.
    const first = (expression: string, from: string): string => localTime(cronTicks(expression, 'Australia/Lord_Howe').next(new Date(from)), 'Australia/Lord_Howe');
    expect(first('15 2 * * 0', '2025-09-27T15:45:00Z')).toBe('2025-10-05 02:45');
    expect(first('0 2 * * 0', '2025-09-27T15:30:00Z')).toBe('2025-10-05 02:30');
    expect(first('15 2 5 10 *', '2024-10-10T00:00:00Z')).toBe('2025-10-05 02:45');
    expect(first('15 2 * * *', '2025-10-01T12:00:00Z')).toBe('2025-10-02 02:15');
    // America/Nuuk's change (28 March 2026, 23:00 -02 to 00:00 -01): a daily 23:00 fires at 00:00 -01, once.
    const nuuk = cronTicks('0 23 * * *', 'America/Nuuk');
    const fired: string[] = [];
    for (let at = new Date('2026-03-27T12:00:00Z'), i = 0; i < 3; i += 1) fired.push((at = nuuk.next(at)).toISOString());
    expect(fired).toEqual(['2026-03-28T01:00:00.000Z', '2026-03-29T01:00:00.000Z', '2026-03-30T00:00:00.000Z']);
    // The hour before that change: cron-parser went from the day before's 22:30 to the day after's, no job that day.
    const late = cronTicks('30 22 * * *', 'America/Nuuk');
    const lateFired: string[] = [];
    for (let at = new Date('2026-03-27T12:00:00Z'), i = 0; i < 3; i += 1) lateFired.push(localTime((at = late.next(at)), 'America/Nuuk'));
    expect(lateFired).toEqual(['2026-03-27 22:30', '2026-03-28 22:30', '2026-03-29 22:30']);
    expect(localTime(cronTicks('0 22 * * 6', 'America/Nuuk').next(new Date('2026-03-22T12:00:00Z')), 'America/Nuuk')).toBe('2026-03-28 22:00');
  });

  it('Antarctica/Troll two-hour fall back: a daily 02:00 fires once that day, at its first pass (cron-parser alone gives both)', () => {
    // 25 October 2026, 03:00 +02 goes back to 01:00 +00: 02:00 comes at 00:00Z and again at 02:00Z.
    const ticks = cronTicks('0 2 * * *', 'Antarctica/Troll');
    const fired: string[] = [];
    for (let at = new Date('2026-10-23T12:00:00Z'), i = 0; i < 4; i += 1) fired.push((at = ticks.next(at)).toISOString());
    expect(fired).toEqual(['2026-10-24T00:00:00.000Z', '2026-10-25T00:00:00.000Z', '2026-10-26T02:00:00.000Z', '2026-10-27T02:00:00.000Z']);
  });

  it('America/New_York fall back: 01:30 fires once, at 01:30 EDT; the day has 25 hourly ticks an hour apart', async () => {
    const { clock, pgq, scheduler } = await setup('2025-11-01T04:00:00Z');
    await pgq.schedule({ name: 'ny-0130', cron: '30 1 * * *', timezone: 'America/New_York', task: report, payload: { kind: 'daily' } });
    await pgq.schedule({ name: 'ny-hourly', cron: '0 * * * *', timezone: 'America/New_York', task: report, payload: { kind: 'hourly' } });
    await runUntil(scheduler, clock, '2025-11-04T04:59:59Z');

    expect((await jobsOf(ctx.admin, pgq.schema, 'ny-0130')).map((j) => j.run_at.toISOString())).toEqual([
      '2025-11-01T05:30:00.000Z',
      '2025-11-02T05:30:00.000Z', // 01:30 EDT; not again at 01:30 EST (06:30Z)
      '2025-11-03T06:30:00.000Z',
    ]);
    const hourly = await jobsOf(ctx.admin, pgq.schema, 'ny-hourly');
    expect(hourly.filter((j) => localTime(j.run_at, 'America/New_York').startsWith('2025-11-02'))).toHaveLength(25);
    expect(new Set(gapsInHours(hourly.map((j) => j.run_at)))).toEqual(new Set([1]));
  });

  it('a resume or a timing change during the second pass of the repeated hour does not fire a fixed-hour tick again; an every-hour one keeps both passes', async () => {
    const { clock, pgq, scheduler } = await setup('2025-11-02T04:59:00Z'); // 00:59 EDT
    await pgq.schedule({ name: 'ny-0130', cron: '30 1 * * *', timezone: 'America/New_York', task: report, payload: { kind: 'daily' } });
    await pgq.schedule({ name: 'ny-every-20', cron: '*/20 1 * * *', timezone: 'America/New_York', task: report, payload: { kind: 'fixed hour, every 20 min' } });
    await pgq.schedule({ name: 'ny-half-hourly', cron: '*/30 * * * *', timezone: 'America/New_York', task: report, payload: { kind: 'half-hourly' } });
    await runUntil(scheduler, clock, '2025-11-02T05:45:00Z'); // 01:45 EDT: 01:30 EDT fired, 01:20 and 01:40 EDT too
    for (const name of ['ny-0130', 'ny-every-20', 'ny-half-hourly']) await pgq.pauseSchedule(name);
    clock.set('2025-11-02T06:10:00Z'); // 01:10 EST, the second pass
    for (const name of ['ny-0130', 'ny-every-20', 'ny-half-hourly']) await pgq.resumeSchedule(name);
    expect((await pgq.getSchedule('ny-0130'))!.nextRunAt.toISOString()).toBe('2025-11-03T06:30:00.000Z');
    // A timing change saved in the second pass is recomputed the same way (same ticks, new text).
    await pgq.schedule({ name: 'ny-0130', cron: '30 1 * * 0-6', timezone: 'America/New_York', task: report, payload: { kind: 'daily' } });
    expect((await pgq.getSchedule('ny-0130'))!.nextRunAt.toISOString()).toBe('2025-11-03T06:30:00.000Z');
    expect((await pgq.getSchedule('ny-every-20'))!.nextRunAt.toISOString()).toBe('2025-11-03T06:00:00.000Z');
    expect((await pgq.getSchedule('ny-half-hourly'))!.nextRunAt.toISOString()).toBe('2025-11-02T06:30:00.000Z');
    await runUntil(scheduler, clock, '2025-11-03T06:59:59Z');
    expect(await localTicks(pgq, 'ny-0130', 'America/New_York')).toEqual(['2025-11-02 01:30', '2025-11-03 01:30']);
    expect((await jobsOf(ctx.admin, pgq.schema, 'ny-0130')).map((j) => j.run_at.toISOString())).toEqual(['2025-11-02T05:30:00.000Z', '2025-11-03T06:30:00.000Z']);
    expect(await localTicks(pgq, 'ny-every-20', 'America/New_York')).toEqual(['2025-11-02 01:00', '2025-11-02 01:20', '2025-11-02 01:40', '2025-11-03 01:00', '2025-11-03 01:20', '2025-11-03 01:40']);
    const halfHourly = (await jobsOf(ctx.admin, pgq.schema, 'ny-half-hourly')).map((j) => j.run_at.toISOString());
    expect(halfHourly.slice(0, 4)).toEqual(['2025-11-02T05:00:00.000Z', '2025-11-02T05:30:00.000Z', '2025-11-02T06:30:00.000Z', '2025-11-02T07:00:00.000Z']);
  });

  it('after a long outage ending in the second pass, the next tick is stepped from the grace window, not looked up from now (no repeat of what the window fired)', () => {
    // Every second of 01:30 in New York, down since September, back at 01:30:30 EST with a 2 h grace.
    const plan = planTicks(
      cronTicks('* 30 1 * * *', 'America/New_York'),
      { nextRunAt: new Date('2025-09-20T05:30:00Z'), catchUp: 'skip', catchUpLimit: 1, misfireGraceMs: 2 * 3_600_000 },
      new Date('2025-11-02T06:30:30Z'),
    );
    expect(plan.fire).toHaveLength(60);
    expect([plan.fire[0]!.toISOString(), plan.fire.at(-1)!.toISOString()]).toEqual(['2025-11-02T05:30:00.000Z', '2025-11-02T05:30:59.000Z']); // 01:30 EDT
    expect(plan.next.toISOString()).toBe('2025-11-03T06:30:00.000Z'); // not 01:30:31 EST, a wall-clock time the window fired
  });

  it('intervals ignore daylight saving: every 1h stays an hour apart across the Rome change', async () => {
    const { clock, pgq, scheduler } = await setup('2025-03-29T21:30:00Z');
    await pgq.schedule({ name: 'hourly-interval', every: '1h', task: report, payload: { kind: 'interval' } });
    await runUntil(scheduler, clock, '2025-03-30T21:59:59Z');
    const jobs = await jobsOf(ctx.admin, pgq.schema, 'hourly-interval');
    expect(jobs).toHaveLength(24);
    expect(new Set(gapsInHours(jobs.map((j) => j.run_at)))).toEqual(new Set([1]));
    expect(jobs.every((j) => j.run_at.getUTCMinutes() === 0 && j.run_at.getUTCSeconds() === 0)).toBe(true);
  });
});

describe('missed ticks', () => {
  it('applies each catch-up policy after an outage, and fires late-but-in-grace ticks under every policy', async () => {
    const clock = manualClock('2025-01-01T00:00:00Z');
    const lines: Line[] = [];
    const pgq = await ctx.migrated({ tasks: [report], clock, logger: captureLogger(lines) });
    const scheduler = manualScheduler(pgq, clock);
    /** The schedules whose missed ticks the pass logged: every catch-up, also one that fires them all (`all`) or the only missed tick. */
    const warned = () => lines.splice(0).filter((l) => l.level === 'warn' && /missed ticks/.test(l.msg ?? '')).map((l) => l.obj.schedule).sort();
    const base = { cron: '0 * * * *', task: report, payload: { kind: 'catch-up' } };
    await pgq.schedule({ ...base, name: 'skip' });
    await pgq.schedule({ ...base, name: 'once', catchUp: 'once' });
    await pgq.schedule({ ...base, name: 'all-3', catchUp: 'all', catchUpLimit: 3 });
    await pgq.schedule({ name: 'all', every: '1h', task: report, payload: { kind: 'catch-up' }, catchUp: 'all' });

    // Every worker down from 00:00 to 10:30: ticks 01:00 … 10:00 were missed.
    clock.set('2025-01-01T10:30:00Z');
    await scheduler.runOnce();
    const hours = async (name: string) => (await jobsOf(ctx.admin, pgq.schema, name)).map((j) => j.run_at.getUTCHours());
    expect(await hours('skip')).toEqual([]);
    expect(await hours('once')).toEqual([10]);
    expect(await hours('all-3')).toEqual([8, 9, 10]);
    expect(await hours('all')).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    for (const s of await pgq.listSchedules()) expect(s.nextRunAt.toISOString()).toBe('2025-01-01T11:00:00.000Z');
    expect(warned()).toEqual(['all', 'all-3', 'once', 'skip']);

    // 30 s late is within the default 60 s grace: on time for every policy.
    clock.set('2025-01-01T11:00:30Z');
    await scheduler.runOnce();
    expect(await hours('skip')).toEqual([11]);
    expect(await hours('once')).toEqual([10, 11]);
    expect(await hours('all-3')).toEqual([8, 9, 10, 11]);
    expect(warned()).toEqual([]);

    // A missed tick next to an on-time one: `once` fires both, `skip` only the on-time one.
    clock.set('2025-01-01T13:00:10Z');
    await scheduler.runOnce();
    expect(await hours('skip')).toEqual([11, 13]);
    expect(await hours('once')).toEqual([10, 11, 12, 13]);
    expect(warned()).toEqual(['all', 'all-3', 'once', 'skip']);
    const skip = await pgq.getSchedule('skip');
    expect(skip).toMatchObject({ lastRunAt: new Date('2025-01-01T13:00:00Z'), nextRunAt: new Date('2025-01-01T14:00:00Z') });
    const last = (await jobsOf(ctx.admin, pgq.schema, 'skip')).at(-1)!;
    expect(skip!.lastJobId).toBe(last.id);
    expect(last.unique_key).toBe(tickUniqueKey('skip', new Date('2025-01-01T13:00:00Z')));
  });

  it('a long outage of a one-second schedule fires the grace window plus the bounded catch-up, without walking every tick', async () => {
    const { clock, pgq, scheduler } = await setup('2025-01-01T00:00:00.500Z');
    await pgq.schedule({ name: 'secondly', cron: '* * * * * *', task: report, payload: { kind: 's' }, catchUp: 'all', catchUpLimit: 5 });
    await pgq.schedule({ name: 'secondly-skip', every: '1s', task: report, payload: { kind: 's' }, misfireGraceMs: 10_000 });
    clock.set('2025-01-03T00:00:00.500Z'); // two days, 172,800 ticks
    const pass = await scheduler.runOnce();
    const all = await jobsOf(ctx.admin, pgq.schema, 'secondly');
    expect(all).toHaveLength(5 + 60);
    expect(all[0]!.run_at.toISOString()).toBe('2025-01-02T23:58:56.000Z');
    expect(all.at(-1)!.run_at.toISOString()).toBe('2025-01-03T00:00:00.000Z');
    expect(await jobsOf(ctx.admin, pgq.schema, 'secondly-skip')).toHaveLength(10);
    expect(pass.nextAt?.toISOString()).toBe('2025-01-03T00:00:01.000Z');
  });
});

describe('more on-time ticks than one pass fires', () => {
  it('fires them all, 1,000 a pass, oldest first, each once', async () => {
    const { clock, pgq, scheduler } = await setup('2025-01-01T00:00:00.500Z');
    // Every second with an hour of grace: after 20 minutes away, 1,200 ticks are on time.
    await pgq.schedule({ name: 'dense', every: '1s', task: report, payload: { kind: 'd' }, misfireGraceMs: 3_600_000 });
    clock.set('2025-01-01T00:20:00.500Z');
    const first = await scheduler.runOnce();
    expect(first.fired).toHaveLength(1_000);
    expect(first.fired[0]!.tick.toISOString()).toBe('2025-01-01T00:00:01.000Z');
    expect(first.nextAt!.toISOString()).toBe('2025-01-01T00:16:41.000Z'); // due at once: the loop passes again without sleeping
    const second = await scheduler.runOnce();
    expect(second.fired).toHaveLength(200);
    expect(second.nextAt!.toISOString()).toBe('2025-01-01T00:20:01.000Z');
    const jobs = await jobsOf(ctx.admin, pgq.schema, 'dense');
    expect(jobs).toHaveLength(1_200);
    expect(new Set(jobs.map((j) => j.run_at.getTime())).size).toBe(1_200);
    expect(jobs[0]!.run_at.toISOString()).toBe('2025-01-01T00:00:01.000Z');
    expect(jobs.at(-1)!.run_at.toISOString()).toBe('2025-01-01T00:20:00.000Z');
  });
});

describe('exactly once per tick', () => {
  it('two leaders passing at the same instants never double a tick', async () => {
    const clock = manualClock('2025-06-01T00:00:00Z');
    const a = await ctx.migrated({ tasks: [report], clock });
    const b = ctx.pgq({ tasks: [report], clock });
    await a.schedule({ name: 'race', every: '1s', task: report, payload: { kind: 'race' }, catchUp: 'all' });
    await a.schedule({ name: 'race-cron', cron: '*/2 * * * * *', task: report, payload: { kind: 'race' } });
    const one = manualScheduler(a, clock);
    const two = manualScheduler(b, clock);
    for (let i = 0; i < 40; i += 1) {
      clock.advance(250 + ((i * 7919) % 1_000)); // irregular steps, sometimes several ticks at once
      await Promise.all([one.runOnce(), two.runOnce(), one.runOnce()]);
    }
    const end = clock.now().getTime();
    const jobs = await jobsOf(ctx.admin, a.schema, 'race');
    const expected = Math.floor(end / 1000) - Math.floor(new Date('2025-06-01T00:00:00Z').getTime() / 1000);
    expect(jobs).toHaveLength(expected);
    expect(new Set(jobs.map((j) => j.unique_key)).size).toBe(jobs.length);
    const cron = await jobsOf(ctx.admin, a.schema, 'race-cron');
    expect(new Set(cron.map((j) => j.run_at.getTime())).size).toBe(cron.length);
    expect(cron.length).toBe(Math.floor(expected / 2));
  });

  it('a due schedule whose row another transaction holds is skipped and looked at again shortly, not in a tight loop; it fires once released', async () => {
    const { clock, pgq, scheduler } = await setup('2025-02-01T00:00:00Z');
    await pgq.schedule({ name: 'held', every: '1m', task: report, payload: { kind: 'h' } });
    clock.set('2025-02-01T00:01:00Z');
    const holder = await ctx.admin.connect();
    let passes = 0;
    const runOnce = scheduler.runOnce.bind(scheduler);
    scheduler.runOnce = async () => {
      passes += 1;
      return runOnce();
    };
    try {
      await holder.query('BEGIN');
      await holder.query(`SELECT 1 FROM "${ctx.schema}".schedules WHERE name = 'held' FOR UPDATE`);
      expect(await runOnce()).toMatchObject({ fired: [], failed: 0, skipped: 1 });
      await scheduler.start();
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      // Every 250 ms while held: a handful of passes in a second, where a loop that looked again at once made thousands.
      expect(passes).toBeGreaterThan(0);
      expect(passes).toBeLessThan(20);
      await holder.query('COMMIT');
      await until(async () => (await jobsOf(ctx.admin, pgq.schema, 'held')).length === 1, { timeoutMs: 5_000 });
    } finally {
      await holder.query('ROLLBACK').catch(() => undefined);
      holder.release();
      await scheduler.stop();
    }
    expect((await jobsOf(ctx.admin, pgq.schema, 'held')).map((j) => j.run_at.toISOString())).toEqual(['2025-02-01T00:01:00.000Z']);
  });

  it('a failure after the insert rolls the tick back with the advance; the next pass fires it once', async () => {
    const { clock, pgq, scheduler } = await setup('2025-02-01T00:00:00Z');
    await pgq.schedule({ name: 'fragile', every: '1m', task: report, payload: { kind: 'f' } });
    await ctx.admin.query(`
      CREATE FUNCTION "${ctx.schema}".fail_advance() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN RAISE EXCEPTION 'injected failure while advancing %', NEW.name; END $$;
      CREATE TRIGGER fail_advance BEFORE UPDATE OF next_run_at ON "${ctx.schema}".schedules
        FOR EACH ROW EXECUTE FUNCTION "${ctx.schema}".fail_advance();`);
    try {
      clock.set('2025-02-01T00:01:00Z');
      const failed = await scheduler.runOnce();
      expect(failed).toMatchObject({ failed: 1, fired: [] });
      expect(await jobsOf(ctx.admin, pgq.schema, 'fragile')).toHaveLength(0);
      expect((await pgq.getSchedule('fragile'))!.nextRunAt.toISOString()).toBe('2025-02-01T00:01:00.000Z');
    } finally {
      await ctx.admin.query(`DROP TRIGGER fail_advance ON "${ctx.schema}".schedules; DROP FUNCTION "${ctx.schema}".fail_advance()`);
    }
    const ok = await scheduler.runOnce();
    expect(ok.fired.map((f) => f.tick.toISOString())).toEqual(['2025-02-01T00:01:00.000Z']);
    expect(await jobsOf(ctx.admin, pgq.schema, 'fragile')).toHaveLength(1);
    expect((await pgq.getSchedule('fragile'))!.nextRunAt.toISOString()).toBe('2025-02-01T00:02:00.000Z');
  });
});
