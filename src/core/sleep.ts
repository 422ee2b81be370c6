/**
 * Resolves after `ms`, or as soon as `signal` aborts (never rejects): loops
 * that sleep between rounds check the signal themselves afterwards.
 */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, Math.max(0, ms));
    function done(): void {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

/**
 * Whether `work` settles within `ms` (the timer is cleared either way: it
 * does not keep the process up). A timer that fires late because the event
 * loop was blocked gets one turn of the poll phase first, so an answer that
 * arrived meanwhile (a database reply) is read before it counts as late.
 */
export async function settlesWithin(work: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const settled = work.then(
    () => true,
    () => true,
  );
  const late = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => setImmediate(() => resolve(false)), ms);
  });
  try {
    return await Promise.race([settled, late]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * A wake-up flag for a loop that sleeps: `wait(ms)` resolves after `ms` or at
 * the next `wake()`, whichever is first. A `wake()` that arrives while the
 * loop is busy is remembered, so the next `wait` returns at once.
 */
export class Waker {
  #pending = false;
  #resolve: (() => void) | undefined;

  wake(): void {
    if (this.#resolve) {
      const resolve = this.#resolve;
      this.#resolve = undefined;
      resolve();
    } else {
      this.#pending = true;
    }
  }

  wait(ms: number, signal?: AbortSignal): Promise<void> {
    if (this.#pending || signal?.aborted) {
      this.#pending = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const finish = (): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', finish);
        this.#resolve = undefined;
        this.#pending = false;
        resolve();
      };
      const timer = setTimeout(finish, Math.max(0, ms));
      signal?.addEventListener('abort', finish, { once: true });
      this.#resolve = finish;
    });
  }
}

/** The callbacks following each signal (`onAbort`), and its one listener. */
const followers = new WeakMap<AbortSignal, { listener: () => void; callbacks: Set<() => void> }>();

/**
 * Calls `callback` once `signal` aborts; returns the way to take it back.
 * However many follow one signal (a request's signal passed to many
 * `waitForJob` calls), the signal holds one listener of pgq's, removed when
 * the last follower is: Node warns of a leak past ten listeners on one signal.
 */
export function onAbort(signal: AbortSignal, callback: () => void): () => void {
  let entry = followers.get(signal);
  if (!entry) {
    const callbacks = new Set<() => void>();
    const listener = (): void => {
      followers.delete(signal);
      for (const follow of callbacks) follow();
    };
    entry = { listener, callbacks };
    followers.set(signal, entry);
    signal.addEventListener('abort', listener, { once: true });
  }
  const { listener, callbacks } = entry;
  callbacks.add(callback);
  return () => {
    if (!callbacks.delete(callback) || callbacks.size > 0 || followers.get(signal) !== entry) return;
    followers.delete(signal);
    signal.removeEventListener('abort', listener);
  };
}
