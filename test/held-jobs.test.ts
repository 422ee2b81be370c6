/**
 * The held-jobs ring's main-thread side, driven by hand the way the lease
 * thread drives it (lease-thread.ts takes the lock, empties the ring, bumps
 * the generation). The whole path, with a handler blocking a worker's loop,
 * is in ownership.test.ts.
 */
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { HeldJobs, takeHeldJobs } from '../src/worker/held-jobs.js';
import { createStatements } from '../src/db/statements.js';
import { fromPg } from '../src/db/queryable.js';
import { claimStartedMicros } from '../src/db/rows.js';
import { channelNames } from '../src/notify/channels.js';
import { useTestSchema } from './support/harness.js';

const ctx = useTestSchema('held_jobs');

interface Item {
  job: { id: string };
}

const item = (id: number): Item => ({ job: { id: String(id) } });
const ids = (items: Item[]): string[] => items.map((i) => i.job.id);

/** The lease thread's statement is done: claims may go out again. */
function threadDone(ring: HeldJobs<Item>): void {
  Atomics.store(new Int32Array(ring.layout.control), ring.layout.slots.releasing, 0);
}

/** What the lease thread does (the same function runs there), checking whether a claim was in flight. */
function threadTakes(ring: HeldJobs<Item>, claimInFlight = false): ReturnType<typeof takeHeldJobs> {
  const inflight = Atomics.load(new Int32Array(ring.layout.control), ring.layout.slots.inflight) !== 0;
  expect(inflight).toBe(claimInFlight);
  return takeHeldJobs(ring.layout);
}

describe('held jobs shared with the lease thread', () => {
  it('what the thread took is never handed out again, and the producer hears of it once', () => {
    const taken: boolean[] = [];
    const ring = new HeldJobs<Item>(4, (incomplete) => taken.push(incomplete));
    const claim = ring.beginClaim()!;
    expect(ring.endClaim(claim, [1, 2, 3, 4, 5].map(item), 1_000)).toBe(true);
    expect(ids(ring.take(2))).toEqual(['1', '2']); // started: out of the ring before they run
    expect(ring.drop('4')).toBe(true); // cancelled in the middle: a hole the thread skips
    expect(threadTakes(ring)).toEqual({ ids: ['3', '5'], claimedAfterUs: null });
    expect(ring.length).toBe(0);
    expect(ids(ring.take(10))).toEqual([]);
    expect(taken).toEqual([false]);
    // No claim goes out while the thread gives back by id: it could re-take, and start, one of them.
    expect(ring.beginClaim()).toBeNull();
    threadDone(ring);
    // The ring goes on working after the thread emptied it.
    const next = ring.beginClaim()!;
    expect(ring.endClaim(next, [6, 7].map(item), 1_001)).toBe(true);
    expect(ids(ring.items())).toEqual(['6', '7']);
    expect(taken).toEqual([false]);
  });

  it('a claim in flight when the thread gives back is dropped on arrival, and no claim goes out until the give-back ends', () => {
    const taken: boolean[] = [];
    const ring = new HeldJobs<Item>(4, (incomplete) => taken.push(incomplete));
    const first = ring.beginClaim()!;
    ring.endClaim(first, [1, 2].map(item), 5_000);
    const inFlight = ring.beginClaim()!;
    expect(threadTakes(ring, true)).toEqual({ ids: ['1', '2'], claimedAfterUs: 5_000 });
    // Its rows may be among what the thread gave back: none of them starts here.
    expect(ring.endClaim(inFlight, [3, 4].map(item), 5_007)).toBe(false);
    expect(ring.length).toBe(0);
    expect(taken).toEqual([false]);
    expect(ring.beginClaim()).toBeNull(); // the thread is still giving back
    threadDone(ring);
    expect(ring.beginClaim()).not.toBeNull();
  });

  it('the thread cannot take the ring while the main thread holds it', () => {
    const ring = new HeldJobs<Item>(2, () => undefined);
    ring.endClaim(ring.beginClaim()!, [1, 2].map(item), 1);
    const control = new Int32Array(ring.layout.control);
    Atomics.store(control, ring.layout.slots.lock, ring.layout.lock.main);
    expect(threadTakes(ring)).toBeNull();
    Atomics.store(control, ring.layout.slots.lock, ring.layout.lock.free);
    expect(ids(ring.items())).toEqual(['1', '2']);
    expect(threadTakes(ring)?.ids).toEqual(['1', '2']);
    threadDone(ring);
  });

  it('keeps the order of claims across the ring\'s end, with holes compacted away', () => {
    const ring = new HeldJobs<Item>(2, () => undefined); // room for 4 entries
    let n = 0;
    for (let round = 0; round < 5; round += 1) {
      const claim = ring.beginClaim()!;
      expect(ring.endClaim(claim, [++n, ++n, ++n].map(item), n)).toBe(true);
      expect(ring.drop(String(n - 1))).toBe(true);
      expect(ids(ring.take(1))).toEqual([String(n - 2)]);
      expect(ids(ring.items())).toEqual([String(n)]);
      expect(ids(ring.takeAll())).toEqual([String(n)]);
    }
    threadDone(ring);
    const claim = ring.beginClaim()!;
    ring.endClaim(claim, [100, 101, 102].map(item), 200);
    ring.drop('101');
    ring.endClaim(ring.beginClaim()!, [103, 104].map(item), 201); // 5 entries with the hole: compacted to 4
    expect(threadTakes(ring)?.ids).toEqual(['100', '102', '103', '104']);
  });
});

describe('the give-back statement the lease thread runs', () => {
  it('gives back the held ids and the rows of the claim in flight; nothing started before, nothing of another worker', async () => {
    await ctx.migrated();
    const jobs = `"${ctx.schema}".jobs`;
    const lastClaim = '2026-12-03T10:00:00.500Z';
    // name → worker, state, started_at as microseconds after the last claim taken in
    const rows: [string, string, string, number][] = [
      ['held', 'w', 'running', 0], // taken in with the last claim, still held: given back by id
      ['same-claim', 'w', 'running', 0], // taken in with the last claim and started
      ['earlier', 'w', 'running', -100_000], // an older claim's, started
      ['in-flight', 'w', 'running', 1], // a microsecond later, in the same millisecond: the claim whose reply was not read
      ['in-flight-2', 'w', 'running', 1_200], // the same claim's rows in a later millisecond (a gate's claim of two queues)
      ['other', 'x', 'running', 5_000], // another worker's
      ['done', 'w', 'succeeded', 0], // finished meanwhile
    ];
    const ids = new Map<string, string>();
    for (const [name, worker, state, us] of rows) {
      const { rows: [r] } = await ctx.admin.query<{ id: string }>(
        `INSERT INTO ${jobs} (task, queue, payload, state, attempts, worker_id, started_at)
         VALUES ($1, 'q', '{}', $2, 1, $3, $4::timestamptz + $5 * interval '1 microsecond') RETURNING id::text`,
        [name, state, worker, lastClaim, us],
      );
      ids.set(name, r!.id);
    }
    const text = createStatements(ctx.schema).releaseHeldText;
    const listener = new pg.Client({ connectionString: ctx.url });
    await listener.connect();
    try {
      const woke = new Promise<string | undefined>((resolve) => listener.once('notification', (n) => resolve(n.payload)));
      await listener.query(`LISTEN "${channelNames(ctx.schema).jobs}"`);
      // Without a claim in flight: the held ids only, and of those only what is still running here.
      const first = await ctx.admin.query(text, ['w', [ids.get('held'), ids.get('done')], null, null]);
      expect(first.rows[0]).toMatchObject({ n: 1, held: 1 });
      expect(await woke).toBe('q');
      // With one: the rows started later than the last claim taken in (epoch microseconds).
      const second = await ctx.admin.query(text, ['w', [], Date.parse(lastClaim) * 1000, null]);
      expect(second.rows[0]).toMatchObject({ n: 2, held: 0 });
    } finally {
      await listener.end();
    }
    const { rows: after } = await ctx.admin.query<{ task: string; state: string; attempts: number }>(
      `SELECT task, state, attempts FROM ${jobs} ORDER BY id`,
    );
    expect(after).toEqual([
      { task: 'held', state: 'available', attempts: 0 },
      { task: 'same-claim', state: 'running', attempts: 1 },
      { task: 'earlier', state: 'running', attempts: 1 },
      { task: 'in-flight', state: 'available', attempts: 0 },
      { task: 'in-flight-2', state: 'available', attempts: 0 },
      { task: 'other', state: 'running', attempts: 1 },
      { task: 'done', state: 'succeeded', attempts: 1 },
    ]);
  });
});

describe("a claim's started_at", () => {
  it('comes back to the microsecond, so that a later claim is told from it within one millisecond', async () => {
    await ctx.migrated();
    const jobs = `"${ctx.schema}".jobs`;
    await ctx.admin.query(`INSERT INTO ${jobs} (task, queue, payload) SELECT 'micro', 'q', '{}' FROM generate_series(1, 5)`);
    const statements = createStatements(ctx.schema);
    const db = fromPg(ctx.admin);
    await statements.registerWorker(db, { workerId: 'micro', hostname: 'h', pid: 1, queues: ['q'], concurrency: 5, rescueAfterMs: 60_000 });
    const seen = new Set<number>();
    for (let i = 0; i < 5; i += 1) {
      const [row] = await statements.claimJobs(db, { queues: ['q'], tasks: ['micro'], limit: 1, workerId: 'micro' });
      const {
        rows: [exact],
      } = await ctx.admin.query<{ us: string }>(
        `SELECT ((date_part('epoch', date_trunc('second', started_at)))::int8 * 1000000 + date_part('microseconds', started_at)::int8 % 1000000)::text AS us
           FROM ${jobs} WHERE id = $1`,
        [row!.id],
      );
      expect(claimStartedMicros(row!)).toBe(Number(exact!.us));
      seen.add(claimStartedMicros(row!)!);
    }
    expect(seen.size).toBe(5);
  });
});
