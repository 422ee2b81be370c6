/** Exponential backoff: `baseMs * 2^(attempt-1)`, capped at `maxMs`. */
export interface BackoffOptions {
  /** Delay after the first failed attempt, before jitter. */
  baseMs: number;
  /** Upper bound of any delay. */
  maxMs: number;
}

/**
 * The delay before the next attempt after `attempt` failed. Jittered into
 * [50%, 100%] of the exponential value so that jobs failing together do not
 * retry together.
 */
export function backoffDelayMs(attempt: number, options: BackoffOptions, random: () => number = Math.random): number {
  const exponent = Math.min(Math.max(attempt - 1, 0), 52);
  const exponential = Math.min(options.maxMs, options.baseMs * 2 ** exponent);
  return Math.round(exponential / 2 + (random() * exponential) / 2);
}
