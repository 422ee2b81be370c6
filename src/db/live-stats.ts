/**
 * The database-read metrics: live jobs per queue and state, and the oldest
 * due job still waiting. Computed at most once per `maxAgeMs` for the whole
 * schema, however many workers are scraped: the reading is kept in
 * `stats_cache`; a reader that finds it stale computes it again only if it
 * wins a transaction-level advisory lock, otherwise it serves the stale
 * reading (someone else is refreshing it).
 *
 * The query reads live states only, through partial indexes that leave
 * finished jobs out (nearly all rows of a busy table): waiting jobs through
 * the claim index, running and delayed ones through jobs_state_queue_idx
 * (which holds their queue and state), blocked ones through theirs, and
 * for the oldest due delayed job, the rows of the delayed jobs already due
 * through the future index. Counted through the future index, each delayed
 * job was a read of its row (50,000 spread over a million-row table: 617 ms
 * of the query's 667; now 124 in all, most of it counting 200,000 waiting). Every
 * queue of the `queues` table is in the reading too, with no live jobs
 * when it has none: a queue a worker serves or someone configured has its
 * series from the first scrape, also right after a restart.
 */
import type { Kysely } from 'kysely';
import { sql } from './kysely.js';
import type { JobState } from '../core/types.js';
import { quoteIdent } from './identifiers.js';
import type { PgqDatabase } from './tables.js';

/** Live jobs of one queue. */
export interface LiveQueueStats {
  queue: string;
  counts: Partial<Record<JobState, number>>;
  /** ISO time: `run_at` of the oldest job that is due and not yet claimed. */
  oldestWaitingRunAt: string | null;
}

/** One reading, shared by every reader of the schema until it is `maxAgeMs` old. */
export interface LiveStats {
  computedAt: Date;
  queues: LiveQueueStats[];
}

interface CountRow {
  queue: string;
  /** Null: a row of the queues table (the queue exists; its jobs are counted by the other arms). */
  state: JobState | null;
  n: number;
  oldest: Date | null;
}

/** The live-state query, one fixed text per schema (EXPLAIN-tested). */
export function liveStatsQuery(schema: string): string {
  const jobs = `${quoteIdent(schema)}.jobs`;
  return `
    SELECT queue, 'available' AS state, count(*)::int AS n, min(run_at) AS oldest
      FROM ${jobs} WHERE state = 'available' GROUP BY queue
    UNION ALL
    SELECT c.queue, c.state, c.n, d.oldest
      FROM (SELECT queue, state, count(*)::int AS n FROM ${jobs} WHERE state IN ('scheduled', 'retryable') GROUP BY queue, state) AS c
      LEFT JOIN (SELECT queue, state, min(run_at) AS oldest FROM ${jobs}
                  WHERE state IN ('scheduled', 'retryable') AND run_at <= now() GROUP BY queue, state) AS d
        ON d.queue = c.queue AND d.state = c.state
    UNION ALL
    SELECT queue, 'running', count(*)::int, NULL FROM ${jobs} WHERE state = 'running' GROUP BY queue
    UNION ALL
    SELECT queue, 'blocked', count(*)::int, NULL FROM ${jobs} WHERE state = 'blocked' GROUP BY queue
    UNION ALL
    SELECT name, NULL, 0, NULL FROM ${quoteIdent(schema)}.queues`;
}

export class LiveStatsReader {
  readonly #query: string;
  readonly #lockKey: string;

  constructor(
    private readonly kysely: Kysely<PgqDatabase>,
    private readonly schema: string,
    private readonly maxAgeMs: number,
  ) {
    this.#query = liveStatsQuery(schema);
    this.#lockKey = `pgq:${schema}:stats`;
  }

  /** The shared reading, refreshed first if it is older than `maxAgeMs` and no other reader is refreshing it. */
  async read(): Promise<LiveStats> {
    const cached = await this.#cached(this.kysely);
    if (cached?.fresh) return cached.stats;
    return this.kysely.transaction().execute(async (trx) => {
      const { rows } = await sql<{ locked: boolean }>`SELECT pg_try_advisory_xact_lock(hashtext(${this.#lockKey})) AS locked`.execute(trx);
      if (!rows[0]?.locked) return cached?.stats ?? { computedAt: new Date(), queues: await this.#compute(trx) };
      const again = await this.#cached(trx);
      if (again?.fresh) return again.stats;
      const queues = await this.#compute(trx);
      const { rows: saved } = await sql<{ computed_at: Date }>`
        INSERT INTO ${sql.id(this.schema, 'stats_cache')} (name, computed_at, data)
        VALUES ('queues', now(), ${JSON.stringify(queues)}::jsonb)
        ON CONFLICT (name) DO UPDATE SET computed_at = EXCLUDED.computed_at, data = EXCLUDED.data
        RETURNING computed_at`.execute(trx);
      return { computedAt: saved[0]!.computed_at, queues };
    });
  }

  async #cached(db: Kysely<PgqDatabase>): Promise<{ stats: LiveStats; fresh: boolean } | undefined> {
    const { rows } = await sql<{ computed_at: Date; data: LiveQueueStats[]; fresh: boolean }>`
      SELECT computed_at, data, computed_at > now() - ${this.maxAgeMs} * interval '1 millisecond' AS fresh
        FROM ${sql.id(this.schema, 'stats_cache')} WHERE name = 'queues'`.execute(db);
    const row = rows[0];
    return row && { stats: { computedAt: row.computed_at, queues: row.data }, fresh: row.fresh };
  }

  async #compute(db: Kysely<PgqDatabase>): Promise<LiveQueueStats[]> {
    const { rows } = await sql<CountRow>`${sql.raw(this.#query)}`.execute(db);
    const byQueue = new Map<string, LiveQueueStats>();
    for (const row of rows) {
      let q = byQueue.get(row.queue);
      if (!q) byQueue.set(row.queue, (q = { queue: row.queue, counts: {}, oldestWaitingRunAt: null }));
      if (row.state === null) continue;
      q.counts[row.state] = row.n;
      const oldest = row.oldest?.toISOString() ?? null;
      if (oldest && (!q.oldestWaitingRunAt || oldest < q.oldestWaitingRunAt)) q.oldestWaitingRunAt = oldest;
    }
    return [...byQueue.values()].sort((a, b) => (a.queue < b.queue ? -1 : a.queue > b.queue ? 1 : 0));
  }
}
