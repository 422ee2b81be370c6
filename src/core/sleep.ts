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

/** Whether `work` settles within `ms` (the timer is cleared either way: it does not keep the process up). */
export async function settlesWithin(work: Promise<unknown>, ms: number): Promise<boolean> {
  const timer = new AbortController();
  const settled = work.then(
    () => true,
    () => true,
  );
  try {
    return await Promise.race([settled, sleep(ms, timer.signal).then(() => false)]);
  } finally {
    timer.abort();
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
