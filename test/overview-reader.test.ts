/**
 * The console's overview snapshots: live states on every read; failed and
 * cancelled jobs (kept for days, so possibly millions) counted again only
 * once the time since their last count is a hundred times what its
 * statement took (at most five minutes), or after forgetFinished(); one
 * count at a time.
 */
import type { KyselyPlugin, PluginTransformQueryArgs, PluginTransformResultArgs, QueryResult, RootOperationNode, UnknownRow } from 'kysely';
import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import type { PgqDatabase } from '../src/db/tables.js';
import { OverviewReader } from '../src/inspection/queue-stats.js';
import { useTestSchema } from './support/harness.js';

const ctx = useTestSchema('overview_reader');

/**
 * A clock that answers the given times in turn (ms): the reader asks once
 * when it reads, and a count asks twice, when its statement goes out and
 * when it is answered.
 */
function scriptedClock(times: number[]): () => number {
  return () => {
    const t = times.shift();
    if (t === undefined) throw new Error('the reader asked the clock more often than scripted');
    return t;
  };
}

/** Counts the failed-and-cancelled counts sent through it, and can hold their answers back. */
class CountWatch implements KyselyPlugin {
  sent = 0;
  /** Counts the database has answered (held or not): their statement saw the table as it was then. */
  answered = 0;
  /** Counts sent and not yet answered, now and at most. */
  inFlight = 0;
  maxInFlight = 0;
  /** Answers every count with an error. */
  failing = false;
  #held: Promise<void> | null = null;
  #release: () => void = () => undefined;

  hold(): void {
    this.#held = new Promise((resolve) => (this.#release = resolve));
  }

  release(): void {
    this.#release();
    this.#held = null;
  }

  transformQuery(args: PluginTransformQueryArgs): RootOperationNode {
    if (JSON.stringify(args.node).includes("IN ('failed', 'cancelled')")) {
      this.sent += 1;
      this.inFlight += 1;
      this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    }
    return args.node;
  }

  async transformResult(args: PluginTransformResultArgs): Promise<QueryResult<UnknownRow>> {
    const row = args.result.rows[0];
    if (row && 'at' in row && 'n' in row) {
      this.answered += 1;
      if (this.#held) await this.#held;
      this.inFlight -= 1;
      if (this.failing) throw new Error('the count failed');
    }
    return args.result;
  }
}

/** Empties the schema's jobs (the tests of this file share it). */
const emptyJobs = (): Promise<unknown> => ctx.admin.query(`DELETE FROM "${ctx.schema}".jobs`);
/** One failed job in queue 'q'. */
const addFailed = (): Promise<unknown> =>
  ctx.admin.query(`INSERT INTO "${ctx.schema}".jobs (task, queue, state, attempts, finished_at) VALUES ('t', 'q', 'failed', 1, now())`);

const failedOf = (snapshot: Awaited<ReturnType<OverviewReader['read']>>, state: 'failed' | 'cancelled' | 'available' = 'failed'): number =>
  snapshot.queues.find((q) => q.queue === 'q')?.counts[state] ?? 0;

describe('OverviewReader', () => {
  it('counts failed and cancelled jobs again once a hundred times their last count has passed, or after forgetFinished(); live states every read', async () => {
    const pgq = await ctx.migrated();
    const s = `"${ctx.schema}"`;
    await emptyJobs();
    const add = (state: string, n: number): Promise<unknown> =>
      ctx.admin.query(
        `INSERT INTO ${s}.jobs (task, queue, state, attempts, started_at, finished_at)
         SELECT 't', 'q', $1, 1, CASE WHEN $1 <> 'available' THEN now() END, CASE WHEN $1 IN ('failed', 'cancelled') THEN now() END
           FROM generate_series(1, $2::int)`,
        [state, n],
      );
    await add('failed', 2);
    await add('available', 1);
    const reader = new OverviewReader(
      pgq.kysely,
      ctx.schema,
      undefined,
      scriptedClock([0, 0, 300, 10_000, 29_999, 30_000, 30_000, 30_001, 30_002, 30_003, 30_003, 30_004]),
    );
    // Read at 0: counted (nothing counted yet); the statement "took" 300 ms, so the next count is due at 30,000.
    const first = await reader.read();
    expect(first.queues.find((q) => q.queue === 'q')?.counts).toMatchObject({ failed: 2, cancelled: 0, available: 1 });
    expect(Math.abs(first.finishedCountedAt.getTime() - first.at.getTime())).toBeLessThan(1_000);

    await add('failed', 3);
    await add('cancelled', 1);
    await add('available', 4);
    // At 10,000 and 29,999: the live states are read again, the finished counts are the first read's.
    for (let i = 0; i < 2; i += 1) {
      const reused = await reader.read();
      expect(reused.queues.find((q) => q.queue === 'q')?.counts).toMatchObject({ failed: 2, cancelled: 0, available: 5 });
      expect(reused.finishedCountedAt).toEqual(first.finishedCountedAt);
    }
    // At 30,000: due; this statement "took" 1 ms, so the next count is due at 30,100.
    const counted = await reader.read();
    expect(counted.queues.find((q) => q.queue === 'q')?.counts).toMatchObject({ failed: 5, cancelled: 1, available: 5 });
    expect(counted.finishedCountedAt.getTime()).toBeGreaterThan(first.finishedCountedAt.getTime());

    await add('failed', 1);
    // At 30,002: not due; at 30,003, not due either, but forgotten (the console changed something): counted.
    expect(failedOf(await reader.read())).toBe(5);
    reader.forgetFinished();
    expect(failedOf(await reader.read())).toBe(6);
  });

  it('counts them again within five minutes however long the last count took', async () => {
    const pgq = await ctx.migrated();
    const s = `"${ctx.schema}"`;
    await emptyJobs();
    // The first count "took" 10 s (a hundred times that would be 1,000 s): not counted at 299,999, counted at 300,000.
    const reader = new OverviewReader(pgq.kysely, ctx.schema, undefined, scriptedClock([0, 0, 10_000, 299_999, 300_000, 300_000, 300_001]));
    await reader.read();
    await ctx.admin.query(`INSERT INTO ${s}.jobs (task, queue, state, attempts, finished_at) VALUES ('t', 'q', 'cancelled', 1, now())`);
    expect(failedOf(await reader.read(), 'cancelled')).toBe(0);
    expect(failedOf(await reader.read(), 'cancelled')).toBe(1);
  });

  it('does not keep a count that was out when forgetFinished() was called: the next read counts again', async () => {
    const pgq = await ctx.migrated();
    await emptyJobs();
    await addFailed();
    // Every count "takes" 1,000 ms: kept, the first would serve the second read (at 1,001).
    const reader = new OverviewReader(pgq.kysely, ctx.schema, undefined, scriptedClock([0, 0, 1_000, 1_001, 1_001, 1_002]));
    const out = reader.read();
    reader.forgetFinished();
    // The count that was out saw the failed job; the console's change (here, a delete) came after.
    expect(failedOf(await out)).toBe(1);
    await emptyJobs();
    expect(failedOf(await reader.read())).toBe(0);
  });

  it('sends one count at a time: reads while it is out wait for it (none before) or show the last; a failed count leaves the last in place', async () => {
    const pgq = await ctx.migrated();
    await emptyJobs();
    await addFailed();
    const watch = new CountWatch();
    const errors: unknown[] = [];
    // Every statement "takes" 0 ms: without the rule of one at a time, every read would send a count.
    const reader = new OverviewReader(pgq.kysely.withPlugin(watch), ctx.schema, (err) => errors.push(err), () => 0);
    watch.hold();
    const reads = [reader.read(), reader.read(), reader.read()];
    await expect.poll(() => watch.sent).toBe(1);
    watch.release();
    expect((await Promise.all(reads)).map((r) => failedOf(r))).toEqual([1, 1, 1]);
    expect(watch.sent).toBe(1);

    // Due again (0 ms spacing): a count is sent and held; reads meanwhile show the last count and send none.
    await addFailed();
    watch.hold();
    const due = reader.read();
    await expect.poll(() => watch.sent).toBe(2);
    expect(failedOf(await reader.read())).toBe(1);
    expect(failedOf(await reader.read())).toBe(1);
    expect(watch.sent).toBe(2);
    watch.release();
    expect(failedOf(await due)).toBe(2);
    expect(failedOf(await reader.read())).toBe(2);

    // A count that fails: the snapshot keeps the last count and says so to onCountError.
    watch.failing = true;
    const kept = await reader.read();
    expect(failedOf(kept)).toBe(2);
    expect(errors.map((e) => String(e))).toEqual(['Error: the count failed']);
    watch.failing = false;
    expect(failedOf(await reader.read())).toBe(2);
    // With no count to keep (forgotten), the snapshot fails.
    reader.forgetFinished();
    watch.failing = true;
    await expect(reader.read()).rejects.toThrow('the count failed');
  });
  it('tries a count that failed, with no count to show, again no sooner than one that took as long: the snapshots between fail at once', async () => {
    const pgq = await ctx.migrated();
    await ctx.admin.query(`DELETE FROM "${ctx.schema}".jobs`);
    const watch = new CountWatch();
    watch.failing = true;
    // The failed count "took" 1,000 ms: not sent again at 1,001 or 99,999, sent at 100,000.
    const reader = new OverviewReader(pgq.kysely.withPlugin(watch), ctx.schema, undefined, scriptedClock([0, 0, 1_000, 1_001, 99_999, 100_000, 100_000, 100_001]));
    await expect(reader.read()).rejects.toThrow('the count failed');
    await expect(reader.read()).rejects.toThrow('the count failed');
    await expect(reader.read()).rejects.toThrow('the count failed');
    expect(watch.sent).toBe(1);
    watch.failing = false;
    expect(failedOf(await reader.read())).toBe(0);
    expect(watch.sent).toBe(2);
  });

  it('after forgetFinished() with a count still out, sends the next once that one has ended, one statement at a time; one forgotten while waiting its turn is not sent', async () => {
    const pgq = await ctx.migrated();
    await emptyJobs();
    await addFailed();
    const watch = new CountWatch();
    const reader = new OverviewReader(pgq.kysely.withPlugin(watch), ctx.schema, undefined, () => 0);
    watch.hold();
    const before = reader.read();
    await expect.poll(() => watch.answered).toBe(1); // answered by the database, and held, before the changes below
    // Two changes through the console while the count is out, a read after each.
    await addFailed();
    reader.forgetFinished();
    const afterOne = reader.read();
    await new Promise((resolve) => setTimeout(resolve, 100));
    await addFailed();
    reader.forgetFinished();
    const afterTwo = reader.read();
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(watch.sent).toBe(1);
    watch.release();
    const [b, one, two] = await Promise.all([before, afterOne, afterTwo]);
    expect(failedOf(b)).toBe(1);
    // The reads after the changes show them: the count waiting its turn at the second change was not sent, its read asked again.
    expect(failedOf(one)).toBe(3);
    expect(failedOf(two)).toBe(3);
    expect(watch.sent).toBe(2);
    expect(watch.maxInFlight).toBe(1);
  });

  it('times the count statement alone, not the wait for a connection', async () => {
    await ctx.migrated();
    const pool = new pg.Pool({ connectionString: ctx.url, max: 1 });
    const kysely = new Kysely<PgqDatabase>({ dialect: new PostgresDialect({ pool }) }).withSchema(ctx.schema);
    try {
      const calls: number[] = [];
      // Each call's real time is kept; the statement "took" 300 ms by the script, which is not what is checked here.
      const times = [0, 0, 300];
      const reader = new OverviewReader(kysely, ctx.schema, undefined, () => {
        calls.push(performance.now());
        return times.shift() ?? 0;
      });
      const held = await pool.connect();
      const read = reader.read();
      await new Promise((resolve) => setTimeout(resolve, 300));
      const releasedAt = performance.now();
      held.release();
      await read;
      // The clock is asked when the read begins, then when the count's statement goes out: after the connection was free.
      expect(calls).toHaveLength(3);
      expect(calls[0]!).toBeLessThan(releasedAt);
      expect(calls[1]!).toBeGreaterThanOrEqual(releasedAt);
    } finally {
      await kysely.destroy();
    }
  });
  it('abandons a count out for five minutes: the next goes out without waiting for it', async () => {
    const pgq = await ctx.migrated();
    const watch = new CountWatch();
    // Asked for at 0 and held; at 299,999 the next read waits for it, at 300,000 a new one goes out beside it.
    let now = 0;
    const reader = new OverviewReader(pgq.kysely.withPlugin(watch), ctx.schema, undefined, () => now);
    watch.hold();
    const stuck = reader.read();
    await expect.poll(() => watch.sent).toBe(1);
    now = 299_999;
    const waiting = reader.read();
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(watch.sent).toBe(1);
    now = 300_000;
    const fresh = reader.read();
    await expect.poll(() => watch.sent).toBe(2);
    watch.release();
    await Promise.all([stuck, waiting, fresh]);
  });
});
