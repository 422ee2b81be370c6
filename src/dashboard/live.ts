/**
 * The console's live data, shared by every viewer: one snapshot query per
 * interval however many pages are open. While at least one event stream is
 * subscribed, a timer reads the snapshot every `intervalMs` and pushes it to
 * all of them; API reads in between get the cached one. Chart series are
 * cached the same way, for longer.
 */
import type { OverviewSnapshot, SeriesRange, ThroughputReading, ThroughputSeries } from '../inspection/queue-stats.js';

type Listener = (snapshot: OverviewSnapshot) => void;

export class LiveFeed {
  readonly #listeners = new Set<Listener>();
  #cached: { at: number; value: Promise<OverviewSnapshot> } | null = null;
  /** The newest snapshot read so far (by when its read began), and that read's number. */
  #latest: { read: number; snapshot: OverviewSnapshot } | null = null;
  #reads = 0;
  readonly #series = new Map<string, { at: number; value: Promise<ThroughputReading>; done: ThroughputReading | null }>();
  #timer: NodeJS.Timeout | null = null;
  #closed = false;

  constructor(
    private readonly loadSnapshot: () => Promise<OverviewSnapshot>,
    private readonly loadSeries: (range: SeriesRange, queue: string | null, previous: ThroughputReading | null) => Promise<ThroughputReading>,
    private readonly intervalMs: number,
    private readonly onError: (err: unknown) => void,
  ) {}

  /** The latest snapshot, read now only if the cached one is older than the interval. */
  snapshot(): Promise<OverviewSnapshot> {
    const now = performance.now();
    if (!this.#cached || now - this.#cached.at >= this.intervalMs) {
      const read = ++this.#reads;
      const value = this.loadSnapshot();
      value.then(
        (snapshot) => {
          if (!this.#latest || this.#latest.read < read) this.#latest = { read, snapshot };
        },
        () => {
          if (this.#cached?.value === value) this.#cached = null;
        },
      );
      this.#cached = { at: now, value };
    }
    return this.#cached.value;
  }

  /** The newest snapshot read so far, however old; null before the first. Never waits. */
  latest(): OverviewSnapshot | null {
    return this.#latest?.snapshot ?? null;
  }

  /** Throughput series, cached for ten intervals (at least 10 s); a new reading reuses the previous one's buckets that had closed before it (`throughputReading`). */
  series(range: SeriesRange, queue?: string): Promise<ThroughputSeries> {
    const key = `${range}\u0000${queue ?? ''}`;
    const now = performance.now();
    const hit = this.#series.get(key);
    if (hit && now - hit.at < Math.max(10_000, this.intervalMs * 10)) return hit.value.then((r) => r.series);
    const entry = { at: now, value: this.loadSeries(range, queue ?? null, hit?.done ?? null), done: hit?.done ?? null };
    entry.value.then(
      (reading) => (entry.done = reading),
      () => this.#series.get(key) === entry && this.#series.delete(key),
    );
    if (this.#series.size > 100) this.#series.clear();
    this.#series.set(key, entry);
    return entry.value.then((r) => r.series);
  }

  /**
   * Forgets the series read so far: a change made through the console (a
   * retry takes a failed job out of the bucket it finished in, a delete
   * takes jobs out of theirs) is on the next chart, read whole. Changes made
   * elsewhere show once the closed buckets are read again (ten minutes).
   */
  forgetSeries(): void {
    this.#series.clear();
  }

  /** Calls `listener` with every new snapshot until the returned function is called. */
  subscribe(listener: Listener): () => void {
    this.#listeners.add(listener);
    if (!this.#timer && !this.#closed) this.#timer = setInterval(() => void this.#tick(), this.intervalMs);
    return () => {
      this.#listeners.delete(listener);
      if (this.#listeners.size === 0 && this.#timer) {
        clearInterval(this.#timer);
        this.#timer = null;
      }
    };
  }

  /** close() was called: no more snapshots are pushed. */
  get closed(): boolean {
    return this.#closed;
  }

  close(): void {
    this.#closed = true;
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
    this.#listeners.clear();
  }

  async #tick(): Promise<void> {
    try {
      const snapshot = await this.snapshot();
      for (const listener of this.#listeners) listener(snapshot);
    } catch (err) {
      this.onError(err);
    }
  }
}
