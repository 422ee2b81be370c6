/**
 * Schedules as the API and the CLI see them: validation (cron, time zone,
 * interval, payload — all before anything is written), the upsert with the
 * rules that keep a schedule's next tick stable across redeploys, pause,
 * resume, run-now, and the sync of schedules declared in worker code.
 *
 * Upsert rule: saving a schedule whose timing (cron, time zone, interval) is
 * unchanged keeps its `next_run_at`, so redeploying never shifts or repeats a
 * tick; a new timing, a new schedule, or re-enabling a disabled one starts
 * from the first tick after now. A resume also starts from the first tick
 * after now: ticks that fell in the pause are not caught up.
 */
import type { Kysely, Selectable } from 'kysely';
import { sql } from './db/kysely.js';
import { z } from 'zod';
import { DEFAULTS } from './core/defaults.js';
import type { Clock } from './core/clock.js';
import { PgqError, ValidationError, errorMessage } from './core/errors.js';
import { storedTexts, validatePayload, validatePayloads, type PayloadCheck } from './core/validate-payloads.js';
import type { JobRecord } from './core/types.js';
import { fromKysely, type Queryable } from './db/queryable.js';
import { toJobRecord, type JobRow } from './db/rows.js';
import { metaText, type MiddlewareChain, type PendingJob } from './middleware.js';
import { MAX_CALL_PAYLOAD_CHARS, jobOptionsShape, taskConcurrencyKey } from './enqueue.js';
import type { HotStatements } from './db/statements.js';
import type { PgqDatabase, SchedulesTable } from './db/tables.js';
import { CATCH_UP_POLICIES, MAX_TICKS_PER_PASS, formatEvery, parseCron, parseEvery, parseTimeZone, ticksOf, type CatchUpPolicy } from './core/cron.js';
import { channelNames } from './notify/channels.js';
import { isTask, nameSchema, zodToValidationError, type AnyTask, type TaskInput, type TaskRegistry } from './task.js';

export type { CatchUpPolicy } from './core/cron.js';

/** Options of `pgq.schedule(...)`, and of each entry of a worker's `schedules`. Give `cron` or `every`. */
export interface ScheduleOptions<T extends AnyTask = AnyTask> {
  /** Unique; saving the same name again updates that schedule. */
  name: string;
  /** The task to run: a task from defineTask, or the name of one of this Pgq's tasks. */
  task: T | string;
  /** The payload of every job, validated by the task schema now. Default `{}`. */
  payload?: TaskInput<T> | undefined;
  /** Cron expression: 5 fields, or 6 with seconds first, or a macro such as `@daily`. */
  cron?: string | undefined;
  /** IANA time zone the cron expression is read in. Default `UTC`. Cron only. */
  timezone?: string | undefined;
  /** A fixed interval instead of cron: ms, or `'30s'`, `'5m'`, `'1h30m'`, `'1d'`. Ticks are aligned to the Unix epoch. */
  every?: string | number | undefined;
  /** Queue of the jobs. Default: the task's. */
  queue?: string | undefined;
  /** Priority of the jobs. Default: the task's. */
  priority?: number | undefined;
  /** Attempts of each job. Default: the task's. */
  maxAttempts?: number | undefined;
  /** What to do with ticks missed by more than `misfireGraceMs`. Default `skip`. */
  catchUp?: CatchUpPolicy | undefined;
  /** With `catchUp: 'all'`: the most missed ticks fired (the latest). Default 100, at most 1,000. */
  catchUpLimit?: number | undefined;
  /** A tick fired at most this late still counts as on time. Default 60 s, at least 1 s. */
  misfireGraceMs?: number | undefined;
}

/** A row of `<schema>.schedules`. */
export interface ScheduleRecord {
  name: string;
  task: string;
  payload: unknown;
  cron: string | null;
  timezone: string;
  /** The interval as text (`5m`), or null for a cron schedule. */
  every: string | null;
  everyMs: number | null;
  queue: string;
  priority: number;
  maxAttempts: number;
  catchUp: CatchUpPolicy;
  catchUpLimit: number;
  misfireGraceMs: number;
  /** Paused by an operator. */
  paused: boolean;
  /** False when it was declared in worker code and no longer is. */
  enabled: boolean;
  /** Declared in a worker's `schedules` option (rather than saved with `schedule()`). */
  declared: boolean;
  nextRunAt: Date;
  lastRunAt: Date | null;
  lastJobId: string | null;
  createdAt: Date;
  updatedAt: Date;
}

/** No schedule has this name. */
export class ScheduleNotFoundError extends PgqError {
  constructor(name: string) {
    super('PGQ_SCHEDULE_NOT_FOUND', `schedule ${JSON.stringify(name)} does not exist; see pgq.listSchedules() or \`pgq schedules list\``);
    this.name = 'ScheduleNotFoundError';
  }
}

/** A schedule that passed validation: what gets written. */
export interface ResolvedSchedule {
  readonly name: string;
  readonly task: string;
  readonly payloadText: string;
  readonly cron: string | null;
  readonly timezone: string;
  readonly everyMs: number | null;
  readonly queue: string;
  readonly priority: number;
  readonly maxAttempts: number;
  readonly catchUp: CatchUpPolicy;
  readonly catchUpLimit: number;
  readonly misfireGraceMs: number;
}

/**
 * A declared schedule's payload: required unless the task takes the default,
 * `{}` (optional, it compiled for a task whose schema wants `{ to }` and
 * failed at run time with the schema's message).
 */
type DeclaredPayload<T extends AnyTask> = {} extends TaskInput<T> ? { payload?: TaskInput<T> | undefined } : { payload: TaskInput<T> };

/**
 * A schedule for a worker's `schedules` option, its payload checked by the
 * compiler against the task's schema. The option takes schedules of any
 * task, so a payload written inline there is checked only by `pgq.worker()`,
 * at run time; through this function the compiler checks it too. Returns
 * its argument.
 *
 * @example
 * const nightly = defineSchedule({ name: 'nightly', cron: '0 2 * * *', task: sendEmail,
 *   payload: { to: 'ops@example.com', subject: 'Nightly report' } });
 * pgq.worker({ schedules: [nightly] });
 */
export function defineSchedule<T extends AnyTask>(options: Omit<ScheduleOptions<T>, 'task' | 'payload'> & { task: T } & DeclaredPayload<T>): ScheduleOptions<T> {
  return options;
}

/** The range of `misfireGraceMs`: at least a second (a scheduler pass is always a few ms late, and a tick must not count as missed for that), at most a week. */
export const MISFIRE_GRACE_MS = Object.freeze({ min: 1_000, max: 7 * 86_400_000 });

const optionsSchema = z.strictObject({
  name: nameSchema,
  // Checked on their own below; listed so that a misspelt key (timeZone) is refused, not ignored.
  task: z.unknown().optional(),
  payload: z.unknown().optional(),
  cron: z.unknown().optional(),
  timezone: z.unknown().optional(),
  every: z.unknown().optional(),
  queue: jobOptionsShape.queue,
  priority: jobOptionsShape.priority,
  maxAttempts: jobOptionsShape.maxAttempts,
  catchUp: z.enum(CATCH_UP_POLICIES).default(DEFAULTS.schedule.catchUp),
  catchUpLimit: z.number().int().min(1).max(MAX_TICKS_PER_PASS).default(DEFAULTS.schedule.catchUpLimit),
  misfireGraceMs: z.number().int().min(MISFIRE_GRACE_MS.min).max(MISFIRE_GRACE_MS.max).default(DEFAULTS.schedule.misfireGraceMs),
});

/** A schedule's options, checked but for its payload. */
interface ScheduleDraft {
  readonly schedule: Omit<ResolvedSchedule, 'payloadText'>;
  readonly payload: PayloadCheck;
  readonly task: AnyTask;
}

/**
 * Validates schedule options; rejects with a ValidationError naming the
 * field and writes nothing.
 */
export async function resolveSchedule(options: ScheduleOptions, tasks: TaskRegistry, maxPayloadBytes: number): Promise<ResolvedSchedule> {
  const draft = draftSchedule(options, tasks, '');
  const [text] = await storedTexts([draft.payload], [await validatePayload(draft.payload)], maxPayloadBytes);
  const resolved = withPayload(draft, text!);
  await storedPayloadKey(draft.task, JSON.parse(resolved.payloadText), draft.payload.field);
  return resolved;
}

/** Checks everything but the payload; throws a ValidationError naming the field (under `prefix`, e.g. `schedules[2].`). */
function draftSchedule(options: ScheduleOptions, tasks: TaskRegistry, prefix: string): ScheduleDraft {
  if (options === null || typeof options !== 'object') throw new ValidationError(prefix ? prefix.replace(/\.$/, '') : 'schedule', 'must be an object');
  const parsed = optionsSchema.safeParse(options);
  if (!parsed.success) throw zodToValidationError(parsed.error, prefix.replace(/\.$/, '') || 'schedule');
  const o = parsed.data;
  const field = (name: string): string => `${prefix}${name}`;
  const task = resolveTask(options.task, tasks, field('task'));
  let cron: string | null = null;
  let everyMs: number | null = null;
  let timezone: string = DEFAULTS.schedule.timezone;
  if (options.cron !== undefined && options.every !== undefined) throw new ValidationError(field('every'), 'give cron or every, not both');
  if (options.cron !== undefined) {
    timezone = parseTimeZone(options.timezone ?? DEFAULTS.schedule.timezone, field('timezone'));
    cron = parseCron(options.cron, timezone, field('cron'));
  } else if (options.every !== undefined) {
    if (options.timezone !== undefined) throw new ValidationError(field('timezone'), 'applies to cron schedules only; intervals are aligned to UTC');
    everyMs = parseEvery(options.every, field('every'));
  } else {
    throw new ValidationError(field('cron'), 'give cron (e.g. "0 2 * * *") or every (e.g. "5m")');
  }
  const payload: PayloadCheck = { schema: task.schema, value: options.payload === undefined ? {} : options.payload, field: field('payload') };
  const schedule = {
    name: o.name,
    task: task.name,
    cron,
    timezone,
    everyMs,
    queue: o.queue ?? task.queue,
    priority: o.priority ?? task.priority,
    maxAttempts: o.maxAttempts ?? task.maxAttempts,
    catchUp: o.catchUp,
    catchUpLimit: o.catchUpLimit,
    misfireGraceMs: o.misfireGraceMs,
  };
  return { schedule, payload, task };
}

function withPayload(draft: ScheduleDraft, payloadText: string): ResolvedSchedule {
  return Object.freeze({ ...draft.schedule, payloadText });
}

/**
 * The task's concurrencyKey of a schedule's payload as stored, read through
 * the task's schema first as a worker reads it (the key function takes what
 * the schema returns: a Date, say, where the JSON holds a string). Computed
 * when a schedule is saved, so that a key function that refuses its payload
 * is refused then, and again for each tick's jobs.
 */
async function storedPayloadKey(task: AnyTask, stored: unknown, field: string): Promise<string | null> {
  if (!task.concurrencyKey) return null;
  return taskConcurrencyKey(task, await validatePayload({ schema: task.schema, value: stored, field }), field);
}

/**
 * Validates a worker's declared schedules; names must be unique. Throws a
 * ValidationError naming the field; a promise only when a task's validator
 * answers with one (its rejection then names the field).
 */
export function resolveDeclaredSchedules(
  list: readonly ScheduleOptions[],
  tasks: TaskRegistry,
  maxPayloadBytes: number,
): ResolvedSchedule[] | Promise<ResolvedSchedule[]> {
  if (!Array.isArray(list)) throw new ValidationError('worker.schedules', 'must be an array of schedule options');
  const drafts = list.map((options, i) => draftSchedule(options, tasks, `worker.schedules[${i}].`));
  const names = new Set<string>();
  drafts.forEach(({ schedule }, i) => {
    if (names.has(schedule.name)) throw new ValidationError(`worker.schedules[${i}].name`, `${JSON.stringify(schedule.name)} is declared twice`);
    names.add(schedule.name);
  });
  const build = (texts: string[]): ResolvedSchedule[] => drafts.map((draft, i) => withPayload(draft, texts[i]!));
  const resolve = (payloads: unknown[]): ResolvedSchedule[] | Promise<ResolvedSchedule[]> => {
    const texts = storedTexts(drafts.map((draft) => draft.payload), payloads, maxPayloadBytes);
    return Array.isArray(texts) ? build(texts) : texts.then(build);
  };
  const checked = validatePayloads(drafts.map((draft) => draft.payload));
  const resolved = Array.isArray(checked) ? resolve(checked) : checked.then(resolve);
  if (!drafts.some((draft) => draft.task.concurrencyKey)) return resolved;
  return (async () => {
    const list = await resolved;
    for (const [i, schedule] of list.entries()) await storedPayloadKey(drafts[i]!.task, JSON.parse(schedule.payloadText), drafts[i]!.payload.field);
    return list;
  })();
}

function resolveTask(task: unknown, tasks: TaskRegistry, field: string): AnyTask {
  if (typeof task === 'string') {
    const found = tasks.get(task);
    if (!found) throw new ValidationError(field, `no task named ${JSON.stringify(task)} in this Pgq; pass the task object, or add it to tasks: [...]`);
    return found;
  }
  if (!isTask(task)) throw new ValidationError(field, 'must be a task made by defineTask, or the name of one');
  return task;
}

export function toScheduleRecord(row: Selectable<SchedulesTable>): ScheduleRecord {
  const everyMs = row.every_ms === null ? null : Number(row.every_ms);
  return {
    name: row.name,
    task: row.task,
    payload: row.payload,
    cron: row.cron,
    timezone: row.timezone,
    every: everyMs === null ? null : formatEvery(everyMs),
    everyMs,
    queue: row.queue,
    priority: row.priority,
    maxAttempts: row.max_attempts,
    catchUp: row.catch_up,
    catchUpLimit: row.catch_up_limit,
    misfireGraceMs: row.misfire_grace_ms,
    paused: row.paused,
    enabled: row.enabled,
    declared: row.declared,
    nextRunAt: row.next_run_at,
    lastRunAt: row.last_run_at,
    lastJobId: row.last_job_id === null ? null : String(row.last_job_id),
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}

/** One job a schedule makes: for `tick`, due at `runAt` (null: now), unique among live jobs by `uniqueKey`. */
export interface ScheduleFiring {
  tick: Date;
  runAt: Date | null;
  uniqueKey: string;
  /** Asked for by `runSchedule()` (inside whatever request made the call), not a tick the leader fired. */
  runNow?: boolean;
}

/**
 * Inserts a schedule's jobs, one per firing, through the enqueue middleware
 * (kind `schedule`), on `db` (the caller's transaction). A firing whose key a
 * live job already holds gets that job. Resolves to each firing's job, in
 * order; undefined where the live job finished before it could be read.
 */
export async function insertScheduleJobs(
  db: Queryable,
  statements: HotStatements,
  middleware: MiddlewareChain | undefined,
  schedule: Selectable<SchedulesTable>,
  firings: readonly ScheduleFiring[],
  tasks: TaskRegistry | undefined,
  warn: (message: string) => void = () => undefined,
): Promise<(JobRow | undefined)[]> {
  const { name, task, queue } = schedule;
  // The task's own concurrencyKey and expiresInMs, as an enqueue applies
  // them, where this process knows the task (a leader without it writes neither).
  const definition = tasks?.get(task);
  const concurrencyKey = definition ? await tickConcurrencyKey(definition, schedule, warn) : null;
  const expiresInMs = definition?.expiresInMs ?? null;
  const pending: PendingJob[] = firings.map((f) => ({ task, queue, payload: schedule.payload, meta: {}, schedule: { name, tick: f.tick, runNow: f.runNow === true } }));
  let inserted: JobRow[] = [];
  const payload = JSON.stringify(schedule.payload);
  // A catch-up of up to catchUpLimit (1,000) firings of a payload of up to
  // maxPayloadBytes goes in several statements, each carrying at most what
  // one enqueueMany call does: one statement with 600 payloads of 1 MB
  // failed to be built (RangeError) at every pass, and the schedule never
  // fired again.
  const perStatement = Math.max(1, Math.floor(MAX_CALL_PAYLOAD_CHARS / Math.max(1, payload.length)));
  const insertFirings = (from: number, some: readonly ScheduleFiring[]): Promise<JobRow[]> =>
    statements.insertJobs(db, {
      jobs: some.map((f, k) => ({
        task,
        queue,
        payload,
        priority: schedule.priority,
        maxAttempts: schedule.max_attempts,
        runAt: f.runAt,
        delayMs: 0,
        uniqueKey: f.uniqueKey,
        timeoutMs: null,
        backoffBaseMs: null,
        backoffMaxMs: null,
        meta: metaText(pending[from + k]!.meta, firings.length === 1 ? 'meta' : `meta[${from + k}]`),
        concurrencyKey,
        expiresInMs,
      })),
    });
  const write = async (): Promise<string[]> => {
    inserted = [];
    for (let from = 0; from < firings.length; from += perStatement) inserted.push(...(await insertFirings(from, firings.slice(from, from + perStatement))));
    return inserted.map((job) => String(job.id));
  };
  await (middleware ? middleware.enqueue({ kind: 'schedule', jobs: pending }, write) : write());
  const byKey = new Map(inserted.map((job) => [job.unique_key, job]));
  const missing = firings.map((f) => f.uniqueKey).filter((key) => !byKey.has(key));
  if (missing.length > 0) {
    // A live job already held the key (enqueued by hand with it): that job stands for the firing.
    const live = await statements.getLiveByUniqueKey(db, { tasks: missing.map(() => task), uniqueKeys: missing });
    for (const job of live) byKey.set(job.unique_key, job);
  }
  return firings.map((f) => byKey.get(f.uniqueKey));
}

/**
 * A tick's storedPayloadKey. One that cannot be computed (a schedule saved
 * before its task had this key function, or by other code) is left out,
 * said, and the job still fires.
 */
async function tickConcurrencyKey(definition: AnyTask, schedule: Selectable<SchedulesTable>, warn: (message: string) => void): Promise<string | null> {
  try {
    return await storedPayloadKey(definition, schedule.payload, `schedule ${JSON.stringify(schedule.name)}'s payload`);
  } catch (err) {
    warn(`pgq schedule ${schedule.name}: its job fires without its task's concurrencyKey: ${errorMessage(err)}`);
    return null;
  }
}

export interface ScheduleStoreDeps {
  kysely: Kysely<PgqDatabase>;
  statements: HotStatements;
  clock: Clock;
  schema: string;
  /** Enqueue middleware: a run-now job goes through it (kind `schedule`). */
  middleware: MiddlewareChain;
  /** This process's tasks: a schedule's jobs take their task's concurrencyKey and expiresInMs. */
  tasks?: TaskRegistry;
}

type Trx = Kysely<PgqDatabase>;

/** The schedules table behind Pgq's schedule methods. */
export class ScheduleStore {
  readonly #channel: string;

  constructor(private readonly deps: ScheduleStoreDeps) {
    this.#channel = channelNames(deps.schema).schedules;
  }

  /** The same store, its statements sent through `kysely` (a worker's, whose statements have a time limit). */
  on(kysely: Kysely<PgqDatabase>): ScheduleStore {
    return new ScheduleStore({ ...this.deps, kysely });
  }

  /** Inserts or updates one schedule. */
  async upsert(schedule: ResolvedSchedule): Promise<ScheduleRecord> {
    return this.deps.kysely.transaction().execute(async (trx) => {
      const row = await this.#upsert(trx, schedule, false);
      await this.#notify(trx, schedule.name);
      return row;
    });
  }

  /**
   * Upserts a worker's declared schedules and disables the declared ones
   * missing from the list, in one transaction (rows locked in name order).
   */
  async syncDeclared(list: readonly ResolvedSchedule[]): Promise<void> {
    await this.deps.kysely.transaction().execute(async (trx) => {
      // Every existing row this changes, locked at once in name order (the
      // upserts' and the ones to disable): two workers starting with
      // different lists cannot lock them in crossing orders.
      await trx
        .selectFrom('schedules')
        .select('name')
        .where((eb) => {
          const declaredLive = eb.and([eb('declared', '=', true), eb('enabled', '=', true)]);
          return list.length > 0 ? eb.or([declaredLive, eb('name', 'in', list.map((x) => x.name))]) : declaredLive;
        })
        .orderBy('name')
        .forUpdate()
        .execute();
      for (const schedule of [...list].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
        await this.#upsert(trx, schedule, true);
      }
      let disable = trx
        .updateTable('schedules')
        .set({ enabled: false, updated_at: sql`now()` })
        .where('declared', '=', true)
        .where('enabled', '=', true);
      if (list.length > 0) disable = disable.where('name', 'not in', list.map((s) => s.name));
      await disable.execute();
      await this.#notify(trx, '*');
    });
  }

  /** Deletes a schedule; true when it existed. Jobs it already made stay. */
  async remove(name: string): Promise<boolean> {
    name = parseScheduleName(name);
    const row = await this.deps.kysely.deleteFrom('schedules').where('name', '=', name).returning('name').executeTakeFirst();
    return row !== undefined;
  }

  async get(name: string): Promise<ScheduleRecord | null> {
    name = parseScheduleName(name);
    const row = await this.deps.kysely.selectFrom('schedules').selectAll().where('name', '=', name).executeTakeFirst();
    return row ? toScheduleRecord(row) : null;
  }

  async list(): Promise<ScheduleRecord[]> {
    const rows = await this.deps.kysely.selectFrom('schedules').selectAll().orderBy('name').execute();
    return rows.map(toScheduleRecord);
  }

  async pause(name: string): Promise<ScheduleRecord> {
    name = parseScheduleName(name);
    return this.deps.kysely.transaction().execute(async (trx) => {
      const row = await trx
        .updateTable('schedules')
        .set({ paused: true, updated_at: sql`now()` })
        .where('name', '=', name)
        .returningAll()
        .executeTakeFirst();
      if (!row) throw new ScheduleNotFoundError(name);
      await this.#notify(trx, name);
      return toScheduleRecord(row);
    });
  }

  /** Unpauses; the next tick is the first one after now (ticks inside the pause are not caught up). */
  async resume(name: string): Promise<ScheduleRecord> {
    name = parseScheduleName(name);
    return this.deps.kysely.transaction().execute(async (trx) => {
      const row = await trx.selectFrom('schedules').selectAll().where('name', '=', name).forUpdate().executeTakeFirst();
      if (!row) throw new ScheduleNotFoundError(name);
      if (!row.paused) return toScheduleRecord(row);
      const updated = await trx
        .updateTable('schedules')
        .set({ paused: false, next_run_at: ticksOf(row).resume(this.deps.clock.now(), row.last_run_at), updated_at: sql`now()` })
        .where('name', '=', name)
        .returningAll()
        .executeTakeFirstOrThrow();
      await this.#notify(trx, name);
      return toScheduleRecord(updated);
    });
  }

  /**
   * Inserts one job for the schedule now, whatever its state (paused or
   * disabled included), without moving its next tick.
   */
  async runNow(name: string): Promise<JobRecord> {
    name = parseScheduleName(name);
    return this.deps.kysely.transaction().execute(async (trx) => {
      const row = await trx.selectFrom('schedules').selectAll().where('name', '=', name).forUpdate().executeTakeFirst();
      if (!row) throw new ScheduleNotFoundError(name);
      const now = this.deps.clock.now();
      const [job] = await insertScheduleJobs(fromKysely(trx), this.deps.statements, this.deps.middleware, row, [
        { tick: now, runAt: null, uniqueKey: runNowUniqueKey(name, now), runNow: true },
      ], this.deps.tasks);
      if (!job) throw new PgqError('PGQ_SCHEDULE_RUN', `could not run schedule ${JSON.stringify(name)} now: its job finished at once; try again`);
      await trx.updateTable('schedules').set({ last_run_at: now, last_job_id: job.id }).where('name', '=', name).execute();
      return toJobRecord(job);
    });
  }

  async #upsert(trx: Trx, s: ResolvedSchedule, declared: boolean): Promise<ScheduleRecord> {
    // The row first (locked), so the next tick is computed from what it holds
    // now, not from before a leader's fire that commits meanwhile.
    const existing = await trx.selectFrom('schedules').select('last_run_at').where('name', '=', s.name).forUpdate().executeTakeFirst();
    const next = ticksOf({ cron: s.cron, timezone: s.timezone, every_ms: s.everyMs }).resume(this.deps.clock.now(), existing?.last_run_at ?? null);
    const row = await trx
      .insertInto('schedules')
      .values({
        name: s.name,
        task: s.task,
        payload: s.payloadText,
        cron: s.cron,
        timezone: s.timezone,
        every_ms: s.everyMs,
        queue: s.queue,
        priority: s.priority,
        max_attempts: s.maxAttempts,
        catch_up: s.catchUp,
        catch_up_limit: s.catchUpLimit,
        misfire_grace_ms: s.misfireGraceMs,
        declared,
        enabled: true,
        next_run_at: next,
      })
      .onConflict((oc) =>
        oc.column('name').doUpdateSet((eb) => ({
          task: eb.ref('excluded.task'),
          payload: eb.ref('excluded.payload'),
          cron: eb.ref('excluded.cron'),
          timezone: eb.ref('excluded.timezone'),
          every_ms: eb.ref('excluded.every_ms'),
          queue: eb.ref('excluded.queue'),
          priority: eb.ref('excluded.priority'),
          max_attempts: eb.ref('excluded.max_attempts'),
          catch_up: eb.ref('excluded.catch_up'),
          catch_up_limit: eb.ref('excluded.catch_up_limit'),
          misfire_grace_ms: eb.ref('excluded.misfire_grace_ms'),
          declared: eb.ref('excluded.declared'),
          enabled: true,
          next_run_at: sql<Date>`CASE WHEN schedules.enabled
                                       AND schedules.cron IS NOT DISTINCT FROM excluded.cron
                                       AND schedules.timezone = excluded.timezone
                                       AND schedules.every_ms IS NOT DISTINCT FROM excluded.every_ms
                                  THEN schedules.next_run_at ELSE excluded.next_run_at END`,
          updated_at: sql`now()`,
        })),
      )
      .returningAll()
      .executeTakeFirstOrThrow();
    return toScheduleRecord(row);
  }

  async #notify(trx: Trx, name: string): Promise<void> {
    await sql`SELECT pg_notify(${this.#channel}, ${name})`.execute(trx);
  }
}

/**
 * A schedule name given to a lookup (get, remove, pause, resume, run): a
 * string PostgreSQL can compare. Not the rules for new names: a schedule an
 * older pgq made under older rules ("..") must stay reachable.
 */
/**
 * A run-now job's unique key. Its own prefix: `schedule:<name>:run:<time>`, as it
 * was, is also the tick key of a schedule named `<name>:run` (of the same task),
 * whose tick at that instant then found the run-now's job and took it for its own.
 */
export function runNowUniqueKey(schedule: string, at: Date): string {
  return `schedule-run:${schedule}:${at.toISOString()}`;
}

function parseScheduleName(name: unknown): string {
  if (typeof name !== 'string') throw new ValidationError('schedule', `must be a schedule name (a string), got ${typeof name}`);
  if (name.includes('\u0000')) throw new ValidationError('schedule', 'must not contain a NUL character: no schedule name can hold one');
  return name;
}
