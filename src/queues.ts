/**
 * Queue control, the store: pause switches and limits in `<schema>.queues`,
 * and live counts from `<schema>.jobs`. Every change goes through one upsert,
 * so a queue gets its row on its first pause, resume or setQueue (workers
 * also create the rows of the queues they serve). The queues trigger stamps
 * updated_at and notifies the workers; they apply a change within about a
 * second (at once while LISTEN is up). Enforcement lives in the worker's
 * QueueGate and the limited claim statements.
 */
import type { Kysely, Selectable } from 'kysely';
import { sql } from './db/kysely.js';
import { z } from 'zod';
import { ValidationError } from './core/errors.js';
import { LIVE_STATES, type LiveState } from './core/types.js';
import { DURATION_UNITS_MS } from './core/cron.js';
import { INT32_MAX, isInt32 } from './core/int32.js';
import type { PgqDatabase, QueuesTable } from './db/tables.js';
import { nameSchema, zodToValidationError } from './task.js';
import { retryConflicts } from './db/transaction.js';

/** A rate limit: at most `limit` job starts per `periodMs` (token bucket; bursts up to `limit`). */
export interface RateLimit {
  limit: number;
  periodMs: number;
}

/** The limits `setQueue` changes; a field left out stays as it is, `null` removes the limit. */
export interface QueueSettings {
  /** Most jobs of the queue running at once across all workers. */
  concurrency?: number | null;
  /** Job starts per period across all workers (token bucket: bursts up to `limit`). */
  rateLimit?: RateLimit | null;
  /** Most running jobs of the queue sharing one `concurrencyKey`. */
  keyConcurrency?: number | null;
}

/** A queue's settings and its live jobs. */
export interface QueueRecord {
  name: string;
  paused: boolean;
  concurrency: number | null;
  rateLimit: RateLimit | null;
  keyConcurrency: number | null;
  /** Live jobs of the queue by state (finished jobs are not counted). */
  counts: Record<LiveState, number>;
  /** Jobs of the queue running now, on every worker. */
  running: number;
  /** When the queue's row was made; null when it has none (unlimited, not paused). */
  createdAt: Date | null;
  /** When the pause switch or a limit last changed; null without a row. */
  updatedAt: Date | null;
}

const limit = z.number({ error: 'must be a number' }).int('must be a whole number').min(1, 'must be at least 1').max(INT32_MAX, `must be at most ${INT32_MAX}`);

const settingsSchema = z.strictObject({
  concurrency: limit.nullable().optional(),
  rateLimit: z
    .strictObject({
      limit,
      periodMs: z
        .number({ error: 'must be a number' })
        .int('must be a whole number of milliseconds')
        .min(1, 'must be at least 1 ms')
        .max(INT32_MAX, `must be at most ${INT32_MAX} ms (about 24.8 days)`),
    }, { error: 'must be { limit, periodMs } or null' })
    .nullable()
    .optional(),
  keyConcurrency: limit.nullable().optional(),
});

/** The queue name, checked like every queue name (1–200 characters, no control characters). */
export function parseQueueName(name: unknown): string {
  const parsed = nameSchema.safeParse(name);
  if (!parsed.success) throw zodToValidationError(parsed.error, 'queue');
  return parsed.data;
}

/**
 * A rate limit written as text, as the CLI and the console take it: `100/1m`,
 * `20/s`, `5/250ms` (jobs per period; units ms, s, m, h, d).
 */
export function parseRateText(value: string, field = 'rateLimit'): RateLimit {
  // Units in lower case only, as every duration pgq reads: 100/1M is not read as a minute.
  const m = /^(\d+)\/(\d*)(ms|s|m|h|d)$/.exec(value.trim());
  const periodMs = m ? Number(m[2] || '1') * DURATION_UNITS_MS[m[3]!]! : NaN;
  if (!m || !isInt32(Number(m[1]), 1) || !isInt32(periodMs, 1)) {
    throw new ValidationError(field, `must look like 100/1m, 20/s or 5/250ms (units ms, s, m for minutes, h, d, in lower case; at least 1 job per at least 1 ms); got ${JSON.stringify(value)}`);
  }
  return { limit: Number(m[1]), periodMs };
}

/** A rate limit as text that `parseRateText` reads back: `100/1m`, `5/250ms`. */
export function formatRateText(rate: RateLimit): string {
  for (const [unit, size] of [['d', 86_400_000], ['h', 3_600_000], ['m', 60_000], ['s', 1_000]] as const) {
    if (rate.periodMs % size === 0) return `${rate.limit}/${rate.periodMs / size}${unit}`;
  }
  return `${rate.limit}/${rate.periodMs}ms`;
}

/** Validated settings; throws a ValidationError naming the bad field. */
export function parseQueueSettings(settings: unknown): QueueSettings {
  if (settings === null || typeof settings !== 'object') throw new ValidationError('settings', 'must be an object');
  const parsed = settingsSchema.safeParse(settings);
  if (!parsed.success) throw zodToValidationError(parsed.error, 'settings');
  if (Object.values(parsed.data).every((v) => v === undefined)) {
    throw new ValidationError('settings', 'give at least one of concurrency, rateLimit, keyConcurrency (null removes a limit)');
  }
  return parsed.data;
}

type QueueRow = Selectable<QueuesTable>;
type QueueChanges = Partial<Omit<QueueRow, 'name' | 'created_at' | 'updated_at'>>;

export class QueueStore {
  constructor(
    private readonly kysely: Kysely<PgqDatabase>,
    private readonly schema: string,
  ) {}

  /** Pauses the queue (creating its row if it has none). */
  pause(name: string): Promise<QueueRecord> {
    return this.#upsert(parseQueueName(name), { paused: true });
  }

  /** Resumes the queue (creating its row if it has none); the trigger wakes its workers. */
  resume(name: string): Promise<QueueRecord> {
    return this.#upsert(parseQueueName(name), { paused: false });
  }

  /** Changes the given limits; a new rate limit starts with a full bucket (the same limit saved again keeps its bucket). */
  set(name: string, settings: QueueSettings): Promise<QueueRecord> {
    const queue = parseQueueName(name);
    const s = parseQueueSettings(settings);
    const changes: QueueChanges = {};
    if (s.concurrency !== undefined) changes.concurrency = s.concurrency;
    if (s.keyConcurrency !== undefined) changes.key_concurrency = s.keyConcurrency;
    if (s.rateLimit !== undefined) {
      changes.rate_limit = s.rateLimit?.limit ?? null;
      changes.rate_period_ms = s.rateLimit?.periodMs ?? null;
      changes.rate_tokens = s.rateLimit?.limit ?? null;
      changes.rate_refilled_at = null;
    }
    return this.#upsert(queue, changes);
  }

  /** The queue's settings and counts; a queue without a row reads as unlimited and not paused. */
  async get(name: string): Promise<QueueRecord> {
    const queue = parseQueueName(name);
    const row = await this.kysely.selectFrom('queues').selectAll().where('name', '=', queue).executeTakeFirst();
    const counts = await this.#counts(queue);
    return toQueueRecord(queue, row, counts.get(queue));
  }

  /** Every queue with a row or with live jobs, by name. */
  async list(): Promise<QueueRecord[]> {
    const rows = await this.kysely.selectFrom('queues').selectAll().execute();
    const counts = await this.#counts(null);
    const byName = new Map(rows.map((r) => [r.name, r]));
    const names = [...new Set([...byName.keys(), ...counts.keys()])].sort();
    return names.map((n) => toQueueRecord(n, byName.get(n), counts.get(n)));
  }

  async #upsert(name: string, changes: QueueChanges): Promise<QueueRecord> {
    const { rate_tokens: _tokens, rate_refilled_at: _refilled, ...rest } = changes;
    // The bucket starts full only for a limit or period that changed: the same
    // limit saved again (a settings form, a setQueue at every boot) would
    // otherwise refill it, and the rate be exceeded.
    const changed = sql<boolean>`(queues.rate_limit IS DISTINCT FROM excluded.rate_limit OR queues.rate_period_ms IS DISTINCT FROM excluded.rate_period_ms)`;
    const bucket =
      'rate_tokens' in changes
        ? {
            rate_tokens: sql<number | null>`CASE WHEN ${changed} THEN excluded.rate_tokens ELSE queues.rate_tokens END`,
            rate_refilled_at: sql<Date | null>`CASE WHEN ${changed} THEN excluded.rate_refilled_at ELSE queues.rate_refilled_at END`,
          }
        : {};
    await retryConflicts(() =>
      this.kysely
        .insertInto('queues')
        .values({ name, ...changes })
        .onConflict((oc) => oc.column('name').doUpdateSet({ ...rest, ...bucket }))
        .execute(),
    );
    return this.get(name);
  }

  /**
   * Live jobs per queue and state, one part per state, none reading
   * finished rows: each can be read from jobs_state_queue_idx (every state
   * but succeeded), and from the claim index (available), the future index
   * (scheduled and retryable) or jobs_blocked_idx (blocked).
   */
  async #counts(queue: string | null): Promise<Map<string, Record<LiveState, number>>> {
    const jobs = sql.id(this.schema, 'jobs');
    const only = queue === null ? sql`true` : sql`queue = ${queue}`;
    const { rows } = await sql<{ queue: string; state: LiveState; n: number }>`
      SELECT queue, state, count(*)::int AS n FROM ${jobs} WHERE state = 'available' AND ${only} GROUP BY queue, state
      UNION ALL
      SELECT queue, state, count(*)::int FROM ${jobs} WHERE state = 'running' AND ${only} GROUP BY queue, state
      UNION ALL
      SELECT queue, state, count(*)::int FROM ${jobs} WHERE state IN ('scheduled', 'retryable') AND ${only} GROUP BY queue, state
      UNION ALL
      SELECT queue, state, count(*)::int FROM ${jobs} WHERE state = 'blocked' AND workflow_id IS NOT NULL AND ${only} GROUP BY queue, state
    `.execute(this.kysely);
    const out = new Map<string, Record<LiveState, number>>();
    for (const r of rows) {
      let counts = out.get(r.queue);
      if (!counts) out.set(r.queue, (counts = emptyCounts()));
      counts[r.state] = r.n;
    }
    return out;
  }
}

function emptyCounts(): Record<LiveState, number> {
  return Object.fromEntries(LIVE_STATES.map((s) => [s, 0])) as Record<LiveState, number>;
}

function toQueueRecord(name: string, row: QueueRow | undefined, counts = emptyCounts()): QueueRecord {
  return {
    name,
    paused: row?.paused ?? false,
    concurrency: row?.concurrency ?? null,
    rateLimit: row?.rate_limit != null && row.rate_period_ms != null ? { limit: row.rate_limit, periodMs: row.rate_period_ms } : null,
    keyConcurrency: row?.key_concurrency ?? null,
    counts,
    running: counts.running,
    createdAt: row ? new Date(row.created_at) : null,
    updatedAt: row ? new Date(row.updated_at) : null,
  };
}
