/**
 * The schedule API (save, list, pause, resume, run now, remove), bad input
 * that writes nothing, schedules declared in worker code, a real worker
 * firing a schedule as leader, and retention pruning.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { z } from 'zod';
import { ScheduleNotFoundError, ValidationError, defineTask, type ScheduleOptions } from '../src/index.js';
import { Pruner } from '../src/maintenance/pruner.js';
import { OrphanReporter } from '../src/maintenance/orphan-reporter.js';
import { Pgq } from '../src/index.js';
import { captureLogger, type Line } from './support/logger.js';
import { parseCron } from '../src/core/cron.js';
import { until, useTestSchema } from './support/harness.js';
import { jobsOf, manualClock, manualScheduler } from './support/schedules.js';

const ctx = useTestSchema('schedules');

const sendEmail = defineTask({
  name: 'send-email',
  schema: z.object({ to: z.string().email() }),
  queue: 'emails',
  priority: 3,
  maxAttempts: 5,
  handler: () => ({ sent: true }),
});
const cleanup = defineTask({ name: 'cleanup', schema: z.object({}).strict(), handler: () => 'clean' });

afterEach(async () => {
  await ctx.admin.query(`DELETE FROM "${ctx.schema}".schedules`).catch(() => undefined);
  await ctx.admin.query(`DELETE FROM "${ctx.schema}".jobs`).catch(() => undefined);
});

const count = async (table: string): Promise<number> =>
  Number((await ctx.admin.query<{ n: string }>(`SELECT count(*) AS n FROM "${ctx.schema}".${table}`)).rows[0]!.n);

describe('schedule API', () => {
  it('saves a schedule with the task defaults, and keeps its next tick when saved again unchanged', async () => {
    const clock = manualClock('2025-05-10T12:00:00Z');
    const pgq = await ctx.migrated({ tasks: [sendEmail, cleanup], clock });
    const saved = await pgq.schedule({ name: 'nightly', cron: '0 2 * * *', timezone: 'europe/rome', task: sendEmail, payload: { to: 'ops@example.com' } });
    expect(saved).toMatchObject({
      name: 'nightly',
      task: 'send-email',
      payload: { to: 'ops@example.com' },
      cron: '0 2 * * *',
      timezone: 'Europe/Rome',
      every: null,
      queue: 'emails',
      priority: 3,
      maxAttempts: 5,
      catchUp: 'skip',
      catchUpLimit: 100,
      misfireGraceMs: 60_000,
      paused: false,
      enabled: true,
      declared: false,
      nextRunAt: new Date('2025-05-11T00:00:00Z'), // 02:00 CEST
      lastRunAt: null,
      lastJobId: null,
    });

    clock.set('2025-05-10T20:00:00Z');
    const again = await pgq.schedule({ name: 'nightly', cron: '0 2 * * *', timezone: 'Europe/Rome', task: 'send-email', payload: { to: 'dev@example.com' }, priority: 9 });
    expect(again).toMatchObject({ nextRunAt: saved.nextRunAt, payload: { to: 'dev@example.com' }, priority: 9 });

    const moved = await pgq.schedule({ name: 'nightly', cron: '0 3 * * *', timezone: 'Europe/Rome', task: sendEmail, payload: { to: 'dev@example.com' } });
    expect(moved.nextRunAt).toEqual(new Date('2025-05-11T01:00:00Z'));

    const interval = await pgq.schedule({ name: 'sweep', every: '1h30m', task: cleanup });
    expect(interval).toMatchObject({ cron: null, every: '1h30m', everyMs: 5_400_000, queue: 'default', nextRunAt: new Date('2025-05-10T21:00:00Z') });
    expect((await pgq.listSchedules()).map((s) => s.name)).toEqual(['nightly', 'sweep']);
    expect(await pgq.getSchedule('nope')).toBeNull();
  });

  it('pauses, resumes from the next tick, runs now, and removes', async () => {
    const clock = manualClock('2025-05-10T12:00:00Z');
    const pgq = await ctx.migrated({ tasks: [sendEmail, cleanup], clock });
    const scheduler = manualScheduler(pgq, clock);
    await pgq.schedule({ name: 'minutely', cron: '* * * * *', task: cleanup });

    expect(await pgq.pauseSchedule('minutely')).toMatchObject({ paused: true });
    clock.set('2025-05-10T12:05:30Z');
    expect((await scheduler.runOnce()).fired).toEqual([]);

    const resumed = await pgq.resumeSchedule('minutely');
    expect(resumed).toMatchObject({ paused: false, nextRunAt: new Date('2025-05-10T12:06:00Z') });
    clock.set('2025-05-10T12:06:00Z');
    expect((await scheduler.runOnce()).fired.map((f) => f.tick.toISOString())).toEqual(['2025-05-10T12:06:00.000Z']);

    await pgq.pauseSchedule('minutely');
    const job = await pgq.runSchedule('minutely');
    expect(job).toMatchObject({ task: 'cleanup', state: 'available', payload: {}, uniqueKey: 'schedule-run:minutely:2025-05-10T12:06:00.000Z' });
    expect(await pgq.getSchedule('minutely')).toMatchObject({ lastJobId: job.id, nextRunAt: new Date('2025-05-10T12:07:00Z'), paused: true });

    // A run-now's key is not another schedule's tick key: "minutely:run" (same task) fires its own job for
    // its 12:07 tick, where it took the run-now's job made at that instant for its own.
    await pgq.schedule({ name: 'minutely:run', cron: '* * * * *', task: cleanup });
    clock.set('2025-05-10T12:07:00Z');
    const runNow = await pgq.runSchedule('minutely');
    const fired = (await scheduler.runOnce()).fired;
    expect(fired.map((f) => [f.schedule, f.tick.toISOString()])).toEqual([['minutely:run', '2025-05-10T12:07:00.000Z']]);
    expect(fired[0]!.jobId).not.toBe(runNow.id);
    expect((await pgq.getJob(fired[0]!.jobId!))!.uniqueKey).toBe('schedule:minutely:run:2025-05-10T12:07:00.000Z');
    await pgq.unschedule('minutely:run');

    expect(await pgq.unschedule('minutely')).toBe(true);
    expect(await pgq.unschedule('minutely')).toBe(false);
    expect(await pgq.getJob(job.id)).not.toBeNull();
    await expect(pgq.pauseSchedule('minutely')).rejects.toBeInstanceOf(ScheduleNotFoundError);
    await expect(pgq.resumeSchedule('minutely')).rejects.toBeInstanceOf(ScheduleNotFoundError);
    await expect(pgq.runSchedule('minutely')).rejects.toBeInstanceOf(ScheduleNotFoundError);
  });

  it('a resume or a timing change from a clock behind the last fired tick never schedules that tick again', async () => {
    const clock = manualClock('2025-05-10T09:59:00Z');
    const pgq = await ctx.migrated({ tasks: [cleanup], clock });
    const scheduler = manualScheduler(pgq, clock);
    await pgq.schedule({ name: 'five', every: '5m', task: cleanup });
    clock.set('2025-05-10T10:00:00Z');
    expect((await scheduler.runOnce()).fired.map((f) => f.tick.toISOString())).toEqual(['2025-05-10T10:00:00.000Z']);
    // A host whose clock is two minutes slow pauses and resumes it, then changes its timing to one that has 10:00 too.
    clock.set('2025-05-10T09:58:30Z');
    await pgq.pauseSchedule('five');
    expect(await pgq.resumeSchedule('five')).toMatchObject({ nextRunAt: new Date('2025-05-10T10:05:00Z') });
    expect(await pgq.schedule({ name: 'five', cron: '*/10 * * * *', task: cleanup })).toMatchObject({ nextRunAt: new Date('2025-05-10T10:10:00Z') });
    clock.set('2025-05-10T10:01:00Z');
    expect((await scheduler.runOnce()).fired).toEqual([]);
    expect((await jobsOf(ctx.admin, pgq.schema, 'five')).map((j) => j.run_at.toISOString())).toEqual(['2025-05-10T10:00:00.000Z']);
  });

  it('refuses bad cron, zone, interval, task and payload with a ValidationError naming the field, writing nothing', async () => {
    const pgq = await ctx.migrated({ tasks: [sendEmail, cleanup] });
    const good = { name: 'nightly', cron: '0 2 * * *', timezone: 'Europe/Rome', task: sendEmail, payload: { to: 'ops@example.com' } } as const;
    await pgq.schedule(good);
    const before = (await ctx.admin.query(`SELECT * FROM "${ctx.schema}".schedules`)).rows;

    const cases: [ScheduleOptions, string, RegExp][] = [
      [{ ...good, cron: '61 * * * *' }, 'cron', /not a valid cron expression/],
      [{ ...good, cron: '* * * *' }, 'cron', /4 field\(s\)/],
      [{ ...good, cron: '0 0 * * * * *' }, 'cron', /7 field\(s\)/],
      [{ ...good, cron: 'every day' }, 'cron', /2 field\(s\)/],
      [{ ...good, cron: '@fortnightly' }, 'cron', /not a known macro/],
      [{ ...good, cron: '0 0 31 2 *' }, 'cron', /not a valid cron expression/],
      // Hashed values fired at random times (parsed again, unseeded, for every tick).
      [{ ...good, cron: 'H * * * *' }, 'cron', /uses H \(H\)/],
      [{ ...good, cron: '0 H(0-5) * * *' }, 'cron', /uses H/],
      [{ ...good, cron: '0,H/15 * * * *' }, 'cron', /uses H/],
      // H as a range's end, inside a range, or as the step: random too (they passed).
      [{ ...good, cron: 'H-59 * * * *' }, 'cron', /uses H \(H-59\)/],
      [{ ...good, cron: '0/H * * * *' }, 'cron', /uses H/],
      [{ ...good, cron: 'H(0-29)/H * * * *' }, 'cron', /uses H/],
      [{ ...good, cron: '0 h-23 * * *' }, 'cron', /uses H/],
      [{ ...good, cron: '0 0 H-28 * *' }, 'cron', /uses H/],
      [{ ...good, cron: '0 0 * * MON-H' }, 'cron', /uses H/],
      // Valid, but longer than the schedules table keeps (a raw 23514 before).
      [{ ...good, cron: `${Array.from({ length: 60 }, (_, i) => i).join(',')} ${Array.from({ length: 24 }, (_, i) => i).join(',')} * * *` }, 'cron', /at most 200/],
      [{ ...good, timezone: 'Mars/Olympus' }, 'timezone', /not a known IANA time zone/],
      [{ ...good, timezone: '' }, 'timezone', /IANA time zone/],
      [{ ...good, payload: { to: 'not-an-email' } }, 'payload.to', /email/i],
      [{ ...good, payload: undefined }, 'payload.to', /./],
      [{ ...good, task: 'no-such-task' }, 'task', /no task named "no-such-task"/],
      [{ ...good, cron: undefined }, 'cron', /give cron .* or every/],
      [{ ...good, every: '5m' }, 'every', /not both/],
      [{ name: 'nightly', every: '5x', task: cleanup }, 'every', /not a duration/],
      [{ name: 'nightly', every: '500ms', task: cleanup }, 'every', /from 1000/],
      [{ name: 'nightly', every: '5m', timezone: 'Europe/Rome', task: cleanup }, 'timezone', /cron schedules only/],
      [{ ...good, catchUp: 'sometimes' as never }, 'schedule.catchUp', /./],
      [{ ...good, name: '' }, 'schedule.name', /empty/],
      // The console addresses a schedule by its name in a URL path, where ".." is no name.
      [{ ...good, name: '..' }, 'schedule.name', /must not be "\." or "\.\."/],
      [{ ...good, misfireGraceMs: 0 }, 'schedule.misfireGraceMs', /1000/],
      [{ ...good, catchUp: 'all', catchUpLimit: 5_000 }, 'schedule.catchUpLimit', /1000/],
    ];
    for (const [options, field, message] of cases) {
      const err = await pgq.schedule(options).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err, `${JSON.stringify({ ...options, task: undefined })} should be refused`).toBeInstanceOf(ValidationError);
      expect((err as ValidationError).field).toBe(field);
      expect((err as ValidationError).message).toMatch(message);
    }
    expect((await ctx.admin.query(`SELECT * FROM "${ctx.schema}".schedules`)).rows).toEqual(before);
    expect(await count('jobs')).toBe(0);
    // Day names with an H in them are not hashed values.
    expect(parseCron('0 9 * * THU,sat', 'UTC')).toBe('0 9 * * THU,sat');
    expect(parseCron('0 9 * * MON-THU', 'UTC')).toBe('0 9 * * MON-THU');
    // A macro in capitals passed pgq's check and then failed in cron-parser ("cannot resolve alias").
    expect(parseCron('@DAILY', 'UTC')).toBe('@daily');
    expect(parseCron(' @Hourly ', 'UTC')).toBe('@hourly');

    expect(() => pgq.worker({ schedules: [{ ...good, cron: '99 * * * *' }] })).toThrow(/worker\.schedules\[0\]\.cron/);
    expect(() => pgq.worker({ schedules: [good, { ...good, cron: '0 3 * * *' }] })).toThrow(/declared twice/);
    expect((await ctx.admin.query(`SELECT * FROM "${ctx.schema}".schedules`)).rows).toEqual(before);
  });
});

describe('schedules declared in code', () => {
  it('upserts them at worker start and disables the ones a later start no longer declares', async () => {
    const pgq = await ctx.migrated({ tasks: [sendEmail, cleanup] });
    await pgq.schedule({ name: 'by-api', every: '1m', task: cleanup });
    const daily = { name: 'daily', cron: '0 6 * * *', task: cleanup } as const;
    const hourly = { name: 'hourly', cron: '0 * * * *', task: sendEmail, payload: { to: 'a@example.com' } } as const;

    const first = pgq.worker({ leader: false, schedules: [daily, hourly] });
    await first.start();
    await first.stop();
    const afterFirst = await pgq.listSchedules();
    expect(afterFirst.map((s) => [s.name, s.declared, s.enabled])).toEqual([
      ['by-api', false, true],
      ['daily', true, true],
      ['hourly', true, true],
    ]);

    const second = pgq.worker({ leader: false, schedules: [daily] });
    await second.start();
    await second.stop();
    const afterSecond = await pgq.listSchedules();
    expect(afterSecond.map((s) => [s.name, s.enabled])).toEqual([
      ['by-api', true],
      ['daily', true],
      ['hourly', false],
    ]);
    expect(afterSecond[1]!.nextRunAt).toEqual(afterFirst[1]!.nextRunAt);

    // A disabled schedule never fires; the others do.
    const sixAm = new Date(Date.now() + 2 * 86_400_000);
    sixAm.setUTCHours(6, 0, 10, 0); // ten seconds after a tick of all three
    const clock = manualClock(sixAm);
    const fired = await manualScheduler(pgq, clock).runOnce();
    expect(new Set(fired.fired.map((f) => f.schedule))).toEqual(new Set(['by-api', 'daily']));

    // Declaring it again re-enables it, from the next tick.
    const third = pgq.worker({ leader: false, schedules: [daily, hourly] });
    await third.start();
    await third.stop();
    const hourlyAgain = await pgq.getSchedule('hourly');
    expect(hourlyAgain).toMatchObject({ enabled: true });
    expect(hourlyAgain!.nextRunAt.getTime()).toBeGreaterThan(Date.now() - 1_000);
  });

  it('workers starting together with different lists all start (no deadlock between their schedule updates)', async () => {
    const pgq = await ctx.migrated({ tasks: [cleanup] });
    const other = ctx.pgq({ tasks: [cleanup] });
    const s = (name: string) => ({ name, every: '1h', task: cleanup }) as const;
    // Each start upserts its list and disables the declared schedules missing from it: the other's.
    for (let round = 0; round < 8; round += 1) {
      const a = pgq.worker({ leader: false, schedules: [s('a'), s('x'), s('y')] });
      const b = other.worker({ leader: false, schedules: [s('b'), s('x'), s('z')] });
      const started = await Promise.allSettled([a.start(), b.start()]);
      await Promise.all([a.stop(), b.stop()]);
      expect(started.map((r) => (r.status === 'rejected' ? String((r.reason as Error).cause ?? r.reason) : 'started'))).toEqual(['started', 'started']);
    }
  });

  it('a leader worker fires a one-second schedule and runs its jobs', async () => {
    const ticks: string[] = [];
    const tick = defineTask({
      name: 'tick',
      schema: z.object({ n: z.number() }),
      handler: (p, c) => {
        ticks.push(c.job.id);
        return p.n;
      },
    });
    const pgq = await ctx.migrated({ tasks: [tick] });
    const worker = pgq.worker({
      heartbeatMs: 100,
      rescueAfterMs: 1_000,
      pollIntervalMs: 100,
      schedules: [{ name: 'every-second', every: '1s', task: tick, payload: { n: 7 } }],
    });
    await worker.start();
    await until(() => ticks.length >= 3, { what: 'three scheduled jobs to run', timeoutMs: 20_000 });
    await worker.stop();
    const jobs = await jobsOf(ctx.admin, ctx.schema, 'every-second');
    expect(jobs.length).toBeGreaterThanOrEqual(3);
    expect(new Set(jobs.map((j) => j.run_at.getTime())).size).toBe(jobs.length);
    expect(jobs.every((j) => j.run_at.getMilliseconds() === 0)).toBe(true);
    const done = await pgq.getJob(ticks[0]!);
    expect(done).toMatchObject({ state: 'succeeded', result: 7, payload: { n: 7 } });
  });
});

describe('a schedule of a task with a concurrencyKey and expiresInMs', () => {
  it('makes jobs that carry both, fired by the leader or run now (they had neither), and refuses a payload the key function refuses', async () => {
    const keyed = defineTask({
      name: 'tenant-report',
      queue: 'tenant-reports',
      // The key function takes what the schema returns: a Date where the stored JSON holds a string.
      schema: z.object({ tenant: z.string(), since: z.coerce.date().default(new Date('2026-01-01T00:00:00Z')) }),
      concurrencyKey: ({ tenant, since }) => {
        if (tenant === '') throw new Error('no tenant');
        return `tenant:${tenant}:${since.toISOString().slice(0, 10)}`;
      },
      expiresInMs: 3_600_000,
      handler: () => null,
    });
    const pgq = await ctx.migrated({ tasks: [keyed, cleanup] });
    await expect(pgq.schedule({ name: 'no-tenant', every: '1h', task: keyed, payload: { tenant: '' } })).rejects.toThrow(/^task tenant-report\.concurrencyKey: threw for payload: no tenant/);
    expect(await count('schedules')).toBe(0);
    await pgq.schedule({ name: 'acme-report', every: '1h', task: keyed, payload: { tenant: 'acme' } });
    const now = await pgq.runSchedule('acme-report');
    // A worker whose leader fires the tick and that does not serve the task's queue, so the job stays to be read.
    const worker = pgq.worker({ queues: ['elsewhere'], heartbeatMs: 100, rescueAfterMs: 1_000, pollIntervalMs: 100, schedules: [{ name: 'acme-each-second', every: '1s', task: keyed, payload: { tenant: 'acme' } }] });
    await worker.start();
    try {
      await until(async () => (await jobsOf(ctx.admin, ctx.schema, 'acme-each-second')).length > 0, { what: 'the leader to fire a tick', timeoutMs: 20_000 });
    } finally {
      await worker.stop();
    }
    const fired = (await jobsOf(ctx.admin, ctx.schema, 'acme-each-second'))[0]!;
    const { rows } = await ctx.admin.query<{ id: string; concurrency_key: string | null; expires_at: Date | null; created_at: Date }>(
      `SELECT id::text, concurrency_key, expires_at, created_at FROM "${ctx.schema}".jobs WHERE id = ANY($1::bigint[]) ORDER BY id`,
      [[now.id, fired.id]],
    );
    expect(rows).toHaveLength(2);
    for (const row of rows) {
      expect(row.concurrency_key).toBe('tenant:acme:2026-01-01');
      expect(row.expires_at!.getTime() - row.created_at.getTime()).toBeGreaterThan(3_500_000);
    }
    // Saved by code whose task had no key function, with a payload this one's refuses: the job still fires, without a key.
    const plain = defineTask({ name: 'tenant-report', queue: 'tenant-reports', schema: z.object({ tenant: z.string() }), handler: () => null });
    const older = ctx.pgq({ tasks: [plain] });
    await older.schedule({ name: 'no-tenant-yet', every: '1h', task: plain, payload: { tenant: '' } });
    const unkeyed = await pgq.runSchedule('no-tenant-yet');
    const { rows: [stored] } = await ctx.admin.query<{ concurrency_key: string | null }>(`SELECT concurrency_key FROM "${ctx.schema}".jobs WHERE id = $1`, [unkeyed.id]);
    expect(stored).toEqual({ concurrency_key: null });
  });
});

describe('retention', () => {
  it('prunes finished jobs past their retention in bounded batches and keeps everything else', async () => {
    const pgq = await ctx.migrated({ tasks: [cleanup] });
    const now = new Date();
    const day = 86_400_000;
    const rows: [string, number | null, boolean][] = [
      // state, finished days ago (null: not finished), expected to be pruned
      ['succeeded', 2, true],
      ['succeeded', 1.5, true],
      ['succeeded', 1.1, true],
      ['succeeded', 0.5, false],
      ['failed', 8, true],
      ['failed', 6, false],
      ['cancelled', 10, true],
      ['cancelled', 1, false],
      ['available', null, false],
      ['scheduled', null, false],
      ['running', null, false],
      ['retryable', null, false],
    ];
    for (const [state, daysAgo] of rows) {
      await ctx.admin.query(
        `INSERT INTO "${ctx.schema}".jobs (task, state, created_at, run_at, finished_at)
         VALUES ('cleanup', $1, $2, $2, $3)`,
        [state, new Date(now.getTime() - 30 * day), daysAgo === null ? null : new Date(now.getTime() - daysAgo * day)],
      );
    }
    const pruner = new Pruner(
      { succeededMs: day, failedMs: 7 * day, cancelledMs: 7 * day, batchSize: 2, intervalMs: 60_000, maxBatchesPerPass: 100 },
      pgq.kysely,
      pgq.logger,
    );
    // One batch: up to batchSize of each state (the succeeded backlog does not starve the others).
    expect(await pruner.pruneBatch()).toBe(4);
    expect(await count('jobs')).toBe(rows.length - 4);
    expect(await pruner.pruneOnce()).toBe(1);
    const left = (await ctx.admin.query<{ state: string }>(`SELECT state FROM "${ctx.schema}".jobs ORDER BY id`)).rows.map((r) => r.state);
    expect(left).toEqual(rows.filter(([, , pruned]) => !pruned).map(([state]) => state));
    expect(await pruner.pruneOnce()).toBe(0);

    const keepFailed = new Pruner(
      { succeededMs: 0, failedMs: null, cancelledMs: null, batchSize: 100, intervalMs: 60_000, maxBatchesPerPass: 1 },
      pgq.kysely,
      pgq.logger,
    );
    expect(await keepFailed.pruneOnce()).toBe(1);
    expect(await count('jobs')).toBe(6);
  });

  it('logs a pass that keeps failing (the database away) once, then every 20th, not at each pass; the orphan reporter too', async () => {
    const lines: Line[] = [];
    const away = new Pgq({ connectionString: 'postgres://postgres@127.0.0.1:1/postgres', tasks: [], logger: captureLogger(lines) });
    const pruner = new Pruner({ succeededMs: 1, failedMs: null, cancelledMs: null, batchSize: 10, intervalMs: 5, maxBatchesPerPass: 1 }, away.kysely, away.logger);
    const orphans = new OrphanReporter(5, away.kysely, away.logger);
    const failures = (what: RegExp) => lines.filter((l) => what.test(l.msg ?? ''));
    try {
      await pruner.start();
      await orphans.start();
      await until(async () => failures(/pruner pass failed/).length >= 25 && failures(/could not look for jobs no worker runs/).length >= 25, { what: '25 failed passes of each' });
    } finally {
      await pruner.stop();
      await orphans.stop();
      await away.close();
    }
    expect(failures(/pruner pass failed/).filter((l) => l.level === 'warn').length).toBeLessThanOrEqual(2);
    expect(failures(/could not look for jobs no worker runs/).filter((l) => l.level === 'warn').length).toBeLessThanOrEqual(2);
  });

  it("counts retention on the database clock: a leader whose clock runs two hours ahead keeps a job finished a minute ago under a one-hour retention", async () => {
    const ahead = manualClock(new Date(Date.now() + 2 * 3_600_000));
    const pgq = await ctx.migrated({ tasks: [cleanup], clock: ahead });
    const insert = async (finishedAgo: string): Promise<string> =>
      (
        await ctx.admin.query<{ id: string }>(
          `INSERT INTO "${ctx.schema}".jobs (task, state, finished_at) VALUES ('cleanup', 'succeeded', now() - $1::interval) RETURNING id::text`,
          [finishedAgo],
        )
      ).rows[0]!.id;
    const recent = await insert('1 minute');
    const old = await insert('2 hours');
    const worker = pgq.worker({ retention: { succeededMs: 3_600_000, intervalMs: 50 }, leader: true });
    await worker.start();
    try {
      await vi.waitFor(async () => expect(await pgq.getJob(old)).toBeNull(), { timeout: 10_000, interval: 50 });
      expect(await pgq.getJob(recent)).not.toBeNull();
    } finally {
      await worker.stop();
    }
  });

  it('retention options are validated', async () => {
    const pgq = await ctx.migrated({ tasks: [cleanup] });
    expect(() => pgq.worker({ retention: { succeededMs: -1 } })).toThrow(ValidationError);
    expect(() => pgq.worker({ retention: { batchSize: 0 } })).toThrow(/batchSize/);
    // A misspelt key would keep the default it meant to change (cancelled jobs deleted after 7 days).
    expect(() => pgq.worker({ retention: { cancelledMS: null } as never })).toThrow(/retention.*cancelledMS/);
    expect(pgq.worker({ retention: false }).options.retention).toBeNull();
    expect(pgq.worker({ retention: { failedMs: null } }).options.retention).toMatchObject({ succeededMs: 86_400_000, failedMs: null });
  });
});
