/**
 * Enqueue: validate every payload and option first, then insert all jobs in
 * one statement on the caller's database handle (their transaction, or pgq's pool).
 * A bad payload anywhere in a batch throws before anything is written. The
 * payloads are checked without a pause unless the task's validator answers
 * with a promise (then they are awaited, still before anything is written).
 */
import { dateProblem } from './core/dates.js';
import { z } from 'zod';
import type { AnyTask, Task, TaskInput } from './task.js';
import { maxAttemptsSchema, nameSchema, zodToValidationError } from './task.js';
import { int32 } from './core/int32.js';
import { PgqError, ValidationError } from './core/errors.js';
import { hasLoneSurrogate, LONE_SURROGATE_MESSAGE } from './core/json.js';
import { isStandardSchema, storedTexts, validatePayloads } from './core/validate-payloads.js';
import { EXPIRABLE_STATES, type JobMeta, type JobRecord } from './core/types.js';
import type { BackoffOptions } from './core/backoff.js';
import type { DbHandle, Queryable } from './db/queryable.js';
import type { HotStatements, InsertJobsParams, JobInsert } from './db/statements.js';
import { toJobRecord, type JobRow } from './db/rows.js';
import type { BulkInsertParams, BulkInsertStatements, BulkInserted } from './db/bulk-insert.js';
import { metaText, type EnqueueCall, type MiddlewareChain, type PendingJob } from './middleware.js';
import { retryConflicts } from './db/transaction.js';
import { SCHEDULED_NOTIFY_AHEAD_MS, scheduledPayload } from './notify/channels.js';

/** Per-job options of `enqueue`; each overrides the task's own. */
export interface EnqueueOptions {
  /** Earliest run time. Mutually exclusive with `delayMs`. */
  runAt?: Date | undefined;
  /** Run no sooner than this many ms from now (database clock). */
  delayMs?: number | undefined;
  priority?: number | undefined;
  queue?: string | undefined;
  maxAttempts?: number | undefined;
  /** With the task, unique among live jobs: a second enqueue returns the live job instead. */
  uniqueKey?: string | undefined;
  timeoutMs?: number | undefined;
  backoff?: Partial<BackoffOptions> | undefined;
  /**
   * Metadata stored in `jobs.meta` (a JSON object, at most 64 KiB) and read
   * back in `ctx.job.meta` and `getJob`: request ids, tenant ids. Middleware
   * may add to it (tracing stores the trace context here).
   */
  meta?: JobMeta | undefined;
  /** Per-key fairness: at most the queue's `keyConcurrency` jobs with this key run at once. Overrides the task's `concurrencyKey`. */
  concurrencyKey?: string | undefined;
  /** The job never starts after this time: it ends `cancelled` as expired. Mutually exclusive with `expiresInMs`. */
  expiresAt?: Date | undefined;
  /** As `expiresAt`, this many ms from now (database clock). Overrides the task's `expiresInMs`. */
  expiresInMs?: number | undefined;
  /** Your transaction: a `pg` client inside BEGIN or a Kysely transaction. The job commits or rolls back with it. */
  db?: DbHandle | undefined;
}

/** Options of `enqueueMany`: the same for every job of the batch. */
export type EnqueueManyOptions = EnqueueOptions;

const concurrencyKeySchema = z
  .string({ error: 'must be a string' })
  .min(1, 'must not be empty')
  .max(200, 'must be at most 200 characters')
  .refine((s) => !s.includes('\u0000'), 'must not contain \\u0000')
  .refine((s) => !hasLoneSurrogate(s), LONE_SURROGATE_MESSAGE);

/** Per-job options shared by enqueue and workflow steps. */
export const jobOptionsShape = {
  queue: nameSchema.optional(),
  priority: int32().optional(),
  maxAttempts: maxAttemptsSchema.optional(),
  timeoutMs: int32(1).optional(),
  backoff: z
    .strictObject({
      baseMs: int32(0).optional(),
      maxMs: int32(0).optional(),
    })
    .optional(),
};

/** A Date PostgreSQL can store (core/dates.ts). */
const storableDate = z.date({ error: 'must be a Date' }).refine((d) => dateProblem(d) === null, { error: (issue) => dateProblem(issue.input) ?? 'must be a valid Date' });

const optionsSchema = z.strictObject({
  ...jobOptionsShape,
  runAt: storableDate.optional(),
  delayMs: z.number().finite().min(0).max(1e13).optional(),
  uniqueKey: z
    .string()
    .min(1)
    .max(1_000)
    .refine((s) => !s.includes('\u0000'), 'must not contain \\u0000')
    .refine((s) => !hasLoneSurrogate(s), LONE_SURROGATE_MESSAGE)
    // An index entry holds at most about 2,700 bytes: 1,000 characters of some scripts are more.
    .refine((s) => Buffer.byteLength(s, 'utf8') <= 2_000, 'must be at most 2,000 bytes of UTF-8')
    .optional(),
  concurrencyKey: concurrencyKeySchema.optional(),
  expiresAt: storableDate.optional(),
  expiresInMs: z.number().int('must be a whole number of milliseconds').min(1, 'must be at least 1').max(1e13).optional(),
});

type ParsedOptions = z.output<typeof optionsSchema>;

/**
 * NOTIFY at commit takes a database-wide lock, so enqueues that each notify
 * commit one after another. An enqueue on pgq's pool that starts while no
 * other is in flight notifies in its own statement (lowest latency); one that
 * overlaps others inserts quietly, and after it commits a single NOTIFY per
 * burst wakes the workers (`#notifyAfterCommit`). Enqueues in the caller's
 * transaction always notify in-statement, delivered at the caller's commit.
 */
export class Enqueuer {
  #inFlight = 0;
  /** Queues owed a NOTIFY after commit: due jobs (null) or only delayed ones (the first's run_at). */
  readonly #toNotify = new Map<string, Date | null>();
  #notifying: Promise<void> | undefined;

  constructor(
    private readonly statements: HotStatements,
    private readonly queryableFor: (db: DbHandle | undefined, uniqueKey: boolean) => Queryable,
    private readonly maxPayloadBytes: number,
    private readonly middleware: MiddlewareChain,
    private readonly onNotifyError: (err: unknown) => void = () => undefined,
    private readonly bulk?: BulkInsertStatements,
  ) {}

  /** Resolves once every NOTIFY owed for committed enqueues has been sent. */
  async flush(): Promise<void> {
    while (this.#notifying) await this.#notifying;
  }

  async enqueue<T extends AnyTask>(task: T, payload: TaskInput<T>, options: EnqueueOptions = {}): Promise<JobRecord> {
    const [job] = await this.#insert(task, [payload], options, 'payload');
    return job!;
  }

  async enqueueMany<T extends AnyTask>(
    task: T,
    payloads: readonly TaskInput<T>[],
    options: EnqueueManyOptions = {},
  ): Promise<JobRecord[]> {
    if (!Array.isArray(payloads)) throw new ValidationError('payloads', 'must be an array');
    // A hole (new Array(n) filled in part) is no payload: refused, not skipped or sent as undefined.
    for (let i = 0; i < payloads.length; i += 1) {
      if (!(i in payloads)) throw new ValidationError(`payload[${i}]`, 'is a hole in a sparse array; give every payload');
    }
    if (payloads.length === 0) {
      // Nothing to insert, but a wrong task or option is wrong all the same (it would show with the first batch that is not empty).
      assertTask(task);
      checkForTask(task, parseOptions(options));
      if (options !== null && typeof options === 'object' && options.meta !== undefined) metaText(options.meta, 'options.meta');
      return [];
    }
    if (payloads.length > 1 && options !== null && typeof options === 'object' && options.uniqueKey !== undefined) {
      // One key for every payload would keep the first and drop the rest without a word.
      throw new ValidationError('options.uniqueKey', `is shared by every payload of enqueueMany, so only one of these ${payloads.length} jobs could be live: enqueue each payload with a key of its own, or give one payload`);
    }
    return this.#insert(task, payloads, options, null);
  }

  async #insert(task: AnyTask, payloads: readonly unknown[], rawOptions: EnqueueOptions, single: string | null): Promise<JobRecord[]> {
    assertTask(task);
    const options = parseOptions(rawOptions);
    // Before any payload is validated or any middleware runs, as every other option check.
    checkForTask(task, options);
    const meta = rawOptions.meta === undefined ? '{}' : metaText(rawOptions.meta, 'options.meta');
    const queue = options.queue ?? task.queue;
    const fieldOf = (i: number): string => single ?? `payload[${i}]`;
    const checks = payloads.map((value, i) => ({ schema: task.schema, value, field: fieldOf(i) }));
    const checked = validatePayloads(checks);
    const values = Array.isArray(checked) ? checked : await checked;
    const keys: (string | null)[] = [];
    const jobs: PendingJob[] = values.map((payload, i) => {
      keys.push(options.concurrencyKey ?? taskConcurrencyKey(task, payload, fieldOf(i)));
      return { task: task.name, queue, payload, meta: JSON.parse(meta) as JobMeta };
    });
    const stored = storedTexts(checks, values, this.maxPayloadBytes);
    const texts = Array.isArray(stored) ? stored : await stored;
    checkCallSize(texts);
    const call: EnqueueCall = { kind: single === null ? 'enqueueMany' : 'enqueue', jobs, db: rawOptions.db };
    let records: JobRecord[] | undefined;
    await this.middleware.enqueue(call, async () => {
      const metas = this.middleware.wrapsEnqueues
        ? jobs.map((job, i) => metaText(job.meta, single === null ? `meta[${i}]` : 'meta'))
        : jobs.map(() => meta);
      const db = this.queryableFor(rawOptions.db, options.uniqueKey !== undefined);
      if (this.bulk && options.uniqueKey === undefined && keys.every((k) => k === null) && metas.every((m) => m === metas[0])) {
        const bulk = (): Promise<JobRecord[]> => this.#insertBulk(db, task, texts, metas[0]!, jobs, options, rawOptions.db === undefined);
        records = rawOptions.db === undefined ? await retryConflicts(bulk) : await bulk();
        return records.map((r) => r.id);
      }
      const params = buildParams(task, texts, metas, keys, options);
      const write = async (): Promise<JobRecord[]> => {
        const rows = await this.#insertRows(db, params, rawOptions.db === undefined);
        return options.uniqueKey === undefined
          ? rows.sort(byId).map((r) => toJobRecord(r))
          : await this.#resolveUnique(db, task, params, rows, options.uniqueKey);
      };
      // On pgq's pool each statement commits alone: one ended by a serialization conflict (a
      // database defaulting to repeatable read, two enqueues of one key) wrote nothing, and runs
      // again. In your transaction the conflict is your transaction's to retry.
      records = rawOptions.db === undefined ? await retryConflicts(write) : await write();
      return records.map((r) => r.id);
    });
    if (!records) throw new PgqError('PGQ_MIDDLEWARE', 'enqueue middleware returned without writing the jobs');
    return records;
  }

  async #insertRows(db: Queryable, params: InsertJobsParams, autocommit: boolean): Promise<JobRow[]> {
    if (!autocommit) return this.statements.insertJobs(db, params);
    const quiet = this.#inFlight > 0;
    this.#inFlight += 1;
    try {
      if (!quiet) return await this.statements.insertJobs(db, params);
      const rows = await this.statements.insertJobsQuiet(db, params);
      this.#notifyAfterCommit(db, rows);
      return rows;
    } finally {
      this.#inFlight -= 1;
    }
  }

  /**
   * enqueue, or enqueueMany with options shared by every job: scalars in, one row out
   * (ids in payload order and what the database decided), records built here.
   */
  async #insertBulk(
    db: Queryable,
    task: AnyTask,
    texts: string[],
    meta: string,
    jobs: PendingJob[],
    o: ParsedOptions,
    autocommit: boolean,
  ): Promise<JobRecord[]> {
    const bulk = this.bulk!;
    const { uniqueKey: _none, ...shared } = sharedColumns(task, o);
    const params: BulkInsertParams = { ...shared, payloads: texts, meta };
    let inserted: BulkInserted;
    if (!autocommit) {
      inserted = await bulk.insert(db, params);
    } else {
      const quiet = this.#inFlight > 0;
      this.#inFlight += 1;
      try {
        inserted = quiet ? await bulk.insertQuiet(db, params) : await bulk.insert(db, params);
      } finally {
        this.#inFlight -= 1;
      }
      if (quiet) this.#notifyAfterCommit(db, [{ state: inserted.state, queue: params.queue, run_at: inserted.run_at }]);
    }
    return inserted.ids.map((id, i) => ({
      id: String(id),
      task: params.task,
      queue: params.queue,
      state: inserted.state,
      payload: JSON.parse(texts[i]!) as unknown,
      priority: params.priority,
      attempts: 0,
      maxAttempts: params.maxAttempts,
      runAt: inserted.run_at,
      createdAt: inserted.created_at,
      startedAt: null,
      finishedAt: null,
      result: null,
      errors: [],
      uniqueKey: null,
      workerId: null,
      timeoutMs: params.timeoutMs,
      // As stored (a middleware's Date is its ISO text, an undefined key none), and one object per record.
      meta: JSON.parse(meta) as JobMeta,
      progress: null,
      progressAt: null,
      cancelRequestedAt: null,
      workflowId: null,
      workflowStep: null,
      concurrencyKey: null,
      expiresAt: inserted.expires_at,
    }));
  }

  /** As the insert trigger would have (it is off for quiet inserts): due jobs' queues, and delayed jobs' due within the hour with the first one's run_at. */
  #notifyAfterCommit(db: Queryable, rows: Pick<JobRow, 'state' | 'queue' | 'run_at'>[]): void {
    for (const row of rows) {
      const owed = this.#toNotify.get(row.queue);
      if (row.state === 'available') this.#toNotify.set(row.queue, null);
      else if (row.state === 'scheduled' && owed !== null) {
        // A pool of the application's may read timestamps as text.
        const dueAt = new Date(row.run_at);
        const soon = dueAt.getTime() < Date.now() + SCHEDULED_NOTIFY_AHEAD_MS;
        if (soon && (owed === undefined || dueAt < owed)) this.#toNotify.set(row.queue, dueAt);
      }
    }
    if (this.#toNotify.size === 0 || this.#notifying) return;
    this.#notifying = (async () => {
      while (this.#toNotify.size > 0) {
        const payloads = [...this.#toNotify].map(([queue, dueAt]) => (dueAt ? scheduledPayload(queue, dueAt) : queue));
        this.#toNotify.clear();
        await this.statements.notifyQueues(db, payloads).catch(this.onNotifyError);
      }
    })().finally(() => (this.#notifying = undefined));
  }

  /**
   * With a unique key (one payload: enqueueMany refuses a key shared by
   * several), the call yields one live job: the inserted one, or the one
   * that already held the key. If that one finished between the insert and
   * the lookup, insert again. One that holds the key past its expiry,
   * never started (no expirer has ended it yet: none runs without a
   * leader), would never run: it is ended as the expirer would end it, and
   * the job inserted again.
   */
  async #resolveUnique(db: Queryable, task: AnyTask, params: InsertJobsParams, rows: JobRow[], key: string): Promise<JobRecord[]> {
    for (let round = 0; round < 5; round += 1) {
      let row = rows[0];
      if (!row) {
        const live = (): Promise<JobRow | undefined> => this.statements.getLiveByUniqueKey(db, { tasks: [task.name], uniqueKeys: [key] }).then((r) => r[0]);
        row = await live();
        if (row?.expires_at && EXPIRABLE_STATES.includes(row.state)) {
          const holder = row;
          const expired = (await this.statements.expireUniqueHolder(db, { task: task.name, uniqueKey: key })).length > 0;
          // Not ended here: it has not expired yet, or another enqueue (or the
          // expirer) ended it meanwhile; then it is no live holder to return.
          row = expired ? undefined : await live();
          if (row && row.id !== holder.id) row = undefined; // another job holds the key now: the insert below finds it
        }
      }
      if (row) return params.jobs.map(() => toJobRecord(row));
      rows = await this.statements.insertJobs(db, { jobs: params.jobs.slice(0, 1) });
    }
    // Five times a live job held the key and could not be read: it finished each time in between, or
    // (far likelier) row-level security hides it: a job of another role (pgq roles) holds the key.
    throw new ValidationError(
      'uniqueKey',
      `could not settle a live job for ${JSON.stringify(key)}: a live job holds the key but this connection cannot read it (a job enqueued by another role, hidden by row-level security: keys are shared by every role), or it kept finishing meanwhile; try again`,
    );
  }
}

function assertTask(task: unknown): asserts task is Task {
  if (task === null || typeof task !== 'object' || typeof (task as Task).name !== 'string' || !isStandardSchema((task as Task).schema)) {
    throw new ValidationError('task', 'must be a task made by defineTask');
  }
}

function parseOptions(options: EnqueueOptions): ParsedOptions {
  if (options === null || typeof options !== 'object') throw new ValidationError('options', 'must be an object');
  const { db: _db, meta: _meta, ...rest } = options;
  const parsed = optionsSchema.safeParse(rest);
  if (!parsed.success) throw zodToValidationError(parsed.error, 'options');
  const o = parsed.data;
  if (o.runAt !== undefined && o.delayMs !== undefined) {
    throw new ValidationError('options', 'give runAt or delayMs, not both');
  }
  if (o.expiresAt !== undefined && o.expiresInMs !== undefined) {
    throw new ValidationError('options', 'give expiresAt or expiresInMs, not both');
  }
  if (o.expiresAt !== undefined && o.runAt !== undefined && o.expiresAt <= o.runAt) {
    throw new ValidationError('options.expiresAt', 'must be after runAt (the job could never run)');
  }
  if (o.expiresInMs !== undefined && o.delayMs !== undefined && o.expiresInMs <= o.delayMs) {
    throw new ValidationError('options.expiresInMs', 'must be more than delayMs (the job could never run)');
  }
  return o;
}

/** The rows of one enqueue call: the options shared, a payload, meta and fairness key each. */
function buildParams(task: AnyTask, payloads: string[], metas: string[], keys: (string | null)[], o: ParsedOptions): InsertJobsParams {
  const shared = sharedColumns(task, o);
  return { jobs: payloads.map((payload, i) => ({ ...shared, payload, meta: metas[i]!, concurrencyKey: keys[i] ?? null })) };
}

/** The columns every job of an enqueue call shares: the options given, else the task's. */
function sharedColumns(task: AnyTask, o: ParsedOptions): Required<Omit<JobInsert, 'payload' | 'meta' | 'concurrencyKey'>> {
  return {
    task: task.name,
    queue: o.queue ?? task.queue,
    priority: o.priority ?? task.priority,
    maxAttempts: o.maxAttempts ?? task.maxAttempts,
    runAt: o.runAt ?? null,
    delayMs: o.delayMs ?? 0,
    uniqueKey: o.uniqueKey ?? null,
    timeoutMs: o.timeoutMs ?? null,
    backoffBaseMs: o.backoff?.baseMs ?? null,
    backoffMaxMs: o.backoff?.maxMs ?? null,
    expiresAt: o.expiresAt ?? null,
    expiresInMs: o.expiresAt !== undefined ? null : (o.expiresInMs ?? task.expiresInMs ?? null),
  };
}

/**
 * Most characters of payload JSON one call (an enqueueMany, a workflow)
 * sends. Several payloads go as one parameter, the JSON array of their texts
 * (`jsonArrayText`), which must fit one JavaScript string (about 512 MiB;
 * past it the driver failed with a bare "RangeError: Invalid string length")
 * and, at up to 3 bytes of UTF-8 a character, one parameter of PostgreSQL's
 * (1 GB; past it the server closed the connection).
 */
export const MAX_CALL_PAYLOAD_CHARS = 200 * 1024 * 1024;

/** Refuses a call whose payloads together are too large for one statement. */
function checkCallSize(texts: readonly string[]): void {
  if (texts.length < 2) return;
  const total = payloadCharsOver(texts);
  if (total !== undefined) {
    throw new ValidationError(
      'payloads',
      `are ${total} characters of JSON in all, over the ${MAX_CALL_PAYLOAD_CHARS} (200 MiB) one call sends in its statement: split them into several calls`,
    );
  }
}

/** The characters of these payload texts in all, where that is over MAX_CALL_PAYLOAD_CHARS. */
export function payloadCharsOver(texts: readonly string[]): number | undefined {
  let total = 0;
  for (const text of texts) total += text.length;
  return total > MAX_CALL_PAYLOAD_CHARS ? total : undefined;
}

/**
 * The unique index holds the task name beside the key, and an index entry
 * at most about 2,700 bytes: a key within its own limit could still make an
 * entry too large with a long task name (a raw PostgreSQL error, which also
 * aborted the caller's transaction).
 */
const UNIQUE_ENTRY_BYTES = 2_600;

/** What enqueue checks of the options against the task, before any payload or middleware: the unique key's index entry, and that the job could ever run. */
function checkForTask(task: AnyTask, o: ParsedOptions): void {
  if (o.uniqueKey !== undefined) {
    const bytes = Buffer.byteLength(o.uniqueKey, 'utf8') + Buffer.byteLength(task.name, 'utf8');
    if (bytes > UNIQUE_ENTRY_BYTES) {
      throw new ValidationError('options.uniqueKey', `with the task name ${JSON.stringify(task.name)} is ${bytes} bytes of UTF-8, over the ${UNIQUE_ENTRY_BYTES} an entry of the unique index holds: use a shorter key (a hash of it, say)`);
    }
  }
  checkRunnable(task, o);
}

/**
 * A job must be able to start before it expires: its expiry (the call's, else
 * the task's `expiresInMs`) after its first run time. Mixed absolute and
 * relative times are compared on this host's clock.
 */
function checkRunnable(task: AnyTask, o: ParsedOptions): void {
  // A runAt in the past runs now.
  const runsAt = Math.max(o.runAt?.getTime() ?? Date.now() + (o.delayMs ?? 0), Date.now());
  if (o.expiresAt !== undefined) {
    if (o.expiresAt.getTime() <= runsAt) {
      throw new ValidationError('options.expiresAt', `is ${o.expiresAt.toISOString()}, not after the job's first run time${o.runAt || o.delayMs ? '' : ' (now)'}: the job could never run`);
    }
    return;
  }
  const expiresInMs = o.expiresInMs ?? task.expiresInMs;
  if (expiresInMs === undefined || expiresInMs === null) return;
  const waitMs = o.runAt !== undefined ? o.runAt.getTime() - Date.now() : (o.delayMs ?? 0);
  if (expiresInMs <= waitMs) {
    const field = o.expiresInMs !== undefined ? 'options.expiresInMs' : `task ${task.name}'s expiresInMs`;
    throw new ValidationError(field, `is ${expiresInMs} ms, not more than the job's wait before its first run (${Math.round(waitMs)} ms): the job could never run`);
  }
}

/** The task's `concurrencyKey(payload)`, checked like the enqueue option. */
export function taskConcurrencyKey(task: AnyTask, payload: unknown, field: string): string | null {
  if (!task.concurrencyKey) return null;
  let key: unknown;
  try {
    key = task.concurrencyKey(payload);
  } catch (err) {
    throw new ValidationError(`task ${task.name}.concurrencyKey`, `threw for ${field}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  const parsed = concurrencyKeySchema.safeParse(key);
  if (!parsed.success) throw zodToValidationError(parsed.error, `task ${task.name}.concurrencyKey(${field})`);
  return parsed.data;
}

function byId(a: JobRow, b: JobRow): number {
  const x = BigInt(a.id);
  const y = BigInt(b.id);
  return x < y ? -1 : x > y ? 1 : 0;
}
