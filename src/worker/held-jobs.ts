/**
 * The jobs a worker holds claimed but not started (the producer's buffer),
 * mirrored in shared memory so that the lease thread can give them back
 * while a handler blocks the main event loop: a worker whose loop is
 * blocked cannot start them, and without this they would wait for the
 * loop however long other workers sit idle.
 *
 * Layout: `control` (Int32Array) holds the lock word, the ring's head and
 * count, a generation bumped each time the lease thread takes the held
 * jobs, a flag the thread raises when it could not give them all back, and
 * two for claims: one in flight (sent, its reply not yet taken in) and the
 * thread giving back; `ids` (BigInt64Array) holds the job ids in claim
 * order, 0 for a job dropped (a cancel); `lastClaim`
 * (Float64Array) the `started_at` of the last claim taken in, epoch
 * microseconds (a whole number well below 2^53: exact).
 *
 * The invariant: a held job is either started by the main thread or given
 * back by the lease thread, never both. Both take the lock (compare and
 * swap, never held across anything but a few array reads and writes): the
 * main thread removes jobs from the ring before it starts them, and the
 * thread gives back only what it removed from the ring itself. When the
 * main thread next takes the lock and sees the generation moved, it drops
 * every job it had buffered: the thread has them.
 *
 * A claim in flight when the loop blocks has taken rows whose ids only its
 * unread reply holds. The thread gives those back too: the rows running for
 * this worker whose `started_at` is later than that of the
 * last claim taken in (claims are sequential; every row started or held was
 * claimed no later). The main thread sends no claim while the thread gives
 * back (so it cannot claim again, and start, a job the thread is about to
 * give back by id), and drops the reply of a claim sent before the
 * generation moved (then reconciles, giving back what the thread missed:
 * rows of that claim committed after the thread's statement wait for the
 * loop).
 */

/** Slots of the control array. */
export const HELD_SLOTS = Object.freeze({ lock: 0, head: 1, count: 2, generation: 3, incomplete: 4, inflight: 5, releasing: 6 });
const CONTROL_SLOTS = 7;
/** Lock word values. */
export const HELD_LOCK = Object.freeze({ free: 0, main: 1, thread: 2 });

/** What the lease thread needs to give held jobs back. */
export interface HeldJobsLayout {
  control: SharedArrayBuffer;
  ids: SharedArrayBuffer;
  lastClaim: SharedArrayBuffer;
  slots: typeof HELD_SLOTS;
  lock: typeof HELD_LOCK;
}

interface Entry<T> {
  item: T;
  id: string;
  /** Dropped (a cancel): skipped, and gone once the jobs before it are taken. */
  dropped: boolean;
}

/** The producer's buffer, with its shared mirror. Every method runs under the lock. */
export class HeldJobs<T extends { job: { id: string } }> {
  readonly #control: Int32Array;
  readonly #ids: BigInt64Array;
  readonly #lastClaim: Float64Array;
  readonly #capacity: number;
  readonly #layout: HeldJobsLayout;
  /** Local mirror of the ring: entry i sits at ring position head + i. */
  #entries: Entry<T>[] = [];
  #live = 0;
  #generation = 0;

  /**
   * @param capacity most jobs held at once (live ones; room is kept for dropped ones)
   * @param onTaken called (outside the lock) once the main thread finds that the lease thread took what was held, or could not give some of it back (`incomplete`: reconcile)
   */
  constructor(
    capacity: number,
    private readonly onTaken: (incomplete: boolean) => void,
  ) {
    this.#capacity = 2 * Math.max(1, capacity);
    const control = new SharedArrayBuffer(CONTROL_SLOTS * Int32Array.BYTES_PER_ELEMENT);
    const ids = new SharedArrayBuffer(this.#capacity * BigInt64Array.BYTES_PER_ELEMENT);
    const lastClaim = new SharedArrayBuffer(Float64Array.BYTES_PER_ELEMENT);
    this.#control = new Int32Array(control);
    this.#ids = new BigInt64Array(ids);
    this.#lastClaim = new Float64Array(lastClaim);
    this.#layout = { control, ids, lastClaim, slots: HELD_SLOTS, lock: HELD_LOCK };
  }

  get layout(): HeldJobsLayout {
    return this.#layout;
  }

  /** Jobs held now (not counting dropped ones). */
  get length(): number {
    this.#locked(() => undefined);
    return this.#live;
  }

  /** The oldest job held, if any. */
  oldest(): T | undefined {
    return this.#locked(() => this.#entries.find((e) => !e.dropped)?.item);
  }

  /** Every job held, oldest first. */
  items(): T[] {
    return this.#locked(() => this.#entries.filter((e) => !e.dropped).map((e) => e.item));
  }

  /**
   * Before a claim is sent: marks it in flight and returns the generation to
   * hand to `endClaim`; null while the lease thread gives jobs back (send
   * nothing then).
   */
  beginClaim(): number | null {
    return this.#locked(() => {
      const c = this.#control;
      if (Atomics.load(c, HELD_SLOTS.releasing) !== 0) return null;
      Atomics.store(c, HELD_SLOTS.inflight, 1);
      return this.#generation;
    });
  }

  /**
   * The claim's reply (none if it failed): its jobs are added at the end,
   * unless the lease thread gave jobs back since the claim was sent, which
   * may have included these; then they are dropped unstarted and false is
   * returned (reconcile: give back what is still running here).
   * `startedAtUs` is the claim's `started_at`, epoch microseconds.
   */
  endClaim(generation: number, items: readonly T[], startedAtUs: number | null): boolean {
    return this.#locked(() => {
      Atomics.store(this.#control, HELD_SLOTS.inflight, 0);
      if (this.#generation !== generation) return false;
      this.#pushLocked(items);
      if (startedAtUs !== null && startedAtUs > this.#lastClaim[0]!) this.#lastClaim[0] = startedAtUs;
      return true;
    });
  }

  #pushLocked(items: readonly T[]): void {
    if (items.length === 0) return;
    const c = this.#control;
    if (c[HELD_SLOTS.count]! + items.length > this.#capacity) this.#compact();
    if (c[HELD_SLOTS.count]! + items.length > this.#capacity) {
      throw new Error(`pgq holds ${this.#live + items.length} claimed jobs, more than its buffer's ${this.#capacity / 2}`);
    }
    const head = c[HELD_SLOTS.head]!;
    let count = c[HELD_SLOTS.count]!;
    for (const item of items) {
      this.#ids[(head + count) % this.#capacity] = BigInt(item.job.id);
      this.#entries.push({ item, id: item.job.id, dropped: false });
      count += 1;
    }
    c[HELD_SLOTS.count] = count;
    this.#live += items.length;
  }

  /** Takes up to `n` of the oldest jobs (to start them, or to give them back). */
  take(n: number): T[] {
    if (n <= 0) return [];
    return this.#locked(() => this.#shiftWhile((_, taken) => taken < n));
  }

  /** Takes the oldest jobs while `keep(item)` says so. */
  takeWhile(keep: (item: T) => boolean): T[] {
    return this.#locked(() => this.#shiftWhile((item) => keep(item)));
  }

  /** Takes every job held. */
  takeAll(): T[] {
    return this.#locked(() => this.#shiftWhile(() => true));
  }

  /** Drops one job (it was cancelled); true when it was held. */
  drop(id: string): boolean {
    return this.#locked(() => {
      const i = this.#entries.findIndex((e) => !e.dropped && e.id === id);
      if (i < 0) return false;
      this.#entries[i]!.dropped = true;
      this.#ids[(this.#control[HELD_SLOTS.head]! + i) % this.#capacity] = 0n;
      this.#live -= 1;
      return true;
    });
  }

  /** Removes entries from the front while `more` says so; returns the live ones (dropped ones at the front go too). */
  #shiftWhile(more: (item: T, taken: number) => boolean): T[] {
    const out: T[] = [];
    let n = 0;
    while (n < this.#entries.length) {
      const e = this.#entries[n]!;
      if (!e.dropped && !more(e.item, out.length)) break;
      if (!e.dropped) out.push(e.item);
      n += 1;
    }
    if (n === 0) return out;
    this.#entries.splice(0, n);
    const c = this.#control;
    c[HELD_SLOTS.head] = (c[HELD_SLOTS.head]! + n) % this.#capacity;
    c[HELD_SLOTS.count] = c[HELD_SLOTS.count]! - n;
    this.#live -= out.length;
    return out;
  }

  /** Rewrites the ring without the dropped entries. */
  #compact(): void {
    this.#entries = this.#entries.filter((e) => !e.dropped);
    this.#entries.forEach((e, i) => (this.#ids[i] = BigInt(e.id)));
    this.#control[HELD_SLOTS.head] = 0;
    this.#control[HELD_SLOTS.count] = this.#entries.length;
  }

  /**
   * Runs `fn` holding the lock. If the lease thread took the held jobs since
   * the last call, the local buffer is emptied first (the thread gives them
   * back) and onTaken runs after the lock is released.
   */
  #locked<R>(fn: () => R): R {
    const c = this.#control;
    // The thread holds the lock only while it copies the ids out.
    while (Atomics.compareExchange(c, HELD_SLOTS.lock, HELD_LOCK.free, HELD_LOCK.main) !== HELD_LOCK.free);
    let taken: { incomplete: boolean } | null = null;
    let result: R;
    try {
      const generation = Atomics.load(c, HELD_SLOTS.generation);
      if (generation !== this.#generation) {
        this.#generation = generation;
        taken = { incomplete: false };
        this.#entries = [];
        this.#live = 0;
      }
      if (Atomics.load(c, HELD_SLOTS.incomplete) !== 0) {
        Atomics.store(c, HELD_SLOTS.incomplete, 0);
        taken = { incomplete: true };
      }
      result = fn();
    } finally {
      Atomics.store(c, HELD_SLOTS.lock, HELD_LOCK.free);
    }
    if (taken) this.onTaken(taken.incomplete);
    return result;
  }
}

/**
 * The lease thread's side: takes every held job out of the ring, and the
 * claim in flight if there is one, under the ring's lock; the main thread
 * will start none of them. Returns the ids, and for a claim in flight the
 * last claim taken in (that claim's rows are those started later). The
 * main thread's claims are held back until the caller clears `releasing`:
 * none may re-claim, and start, a job the caller is about to give back. Null
 * when there is nothing to take, or the main thread holds the lock (it is
 * running then). Shipped to the thread as source text: it uses nothing from
 * this module's scope.
 */
export function takeHeldJobs(layout: HeldJobsLayout): { ids: string[]; claimedAfterUs: number | null } | null {
  const { slots, lock } = layout;
  const control = new Int32Array(layout.control);
  if (Atomics.load(control, slots.count) === 0 && Atomics.load(control, slots.inflight) === 0) return null;
  if (Atomics.compareExchange(control, slots.lock, lock.free, lock.thread) !== lock.free) return null;
  try {
    const ids = new BigInt64Array(layout.ids);
    const head = control[slots.head]!;
    const count = control[slots.count]!;
    const inflight = control[slots.inflight] !== 0;
    if (count === 0 && !inflight) return null;
    const out: string[] = [];
    for (let i = 0; i < count; i += 1) {
      const id = ids[(head + i) % ids.length]!;
      if (id !== 0n) out.push(id.toString());
    }
    control[slots.head] = (head + count) % ids.length;
    control[slots.count] = 0;
    Atomics.store(control, slots.releasing, 1);
    Atomics.add(control, slots.generation, 1);
    return { ids: out, claimedAfterUs: inflight ? new Float64Array(layout.lastClaim)[0]! : null };
  } finally {
    Atomics.store(control, slots.lock, lock.free);
  }
}
