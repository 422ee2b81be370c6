/**
 * Event-loop delay, measured by Node's own sampler
 * (`perf_hooks.monitorEventLoopDelay`): how late timers fire because
 * something kept the loop busy. Each `take()` reports the window since the
 * previous one and starts a new window.
 *
 * The sampler records the time between two of its timer's firings, which
 * includes the timer's own interval (`resolution`): an idle loop reads as
 * about `resolution` ms. The figures here are that time minus `resolution`
 * (never below 0), the lateness alone.
 */
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';

/** Delay of the event loop over one window, in milliseconds. */
export interface EventLoopDelay {
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

export class EventLoopMonitor {
  readonly #histogram: IntervalHistogram;
  readonly #resolutionMs: number;

  constructor(resolutionMs = 20) {
    this.#resolutionMs = resolutionMs;
    this.#histogram = monitorEventLoopDelay({ resolution: resolutionMs });
    this.#histogram.enable();
  }

  /** The delays since the previous call (or since construction); starts a new window. */
  take(): EventLoopDelay {
    const h = this.#histogram;
    const ms = (ns: number): number => (Number.isFinite(ns) ? Math.max(0, ns / 1e6 - this.#resolutionMs) : 0);
    const delay = h.count === 0 ? { p50Ms: 0, p99Ms: 0, maxMs: 0 } : { p50Ms: ms(h.percentile(50)), p99Ms: ms(h.percentile(99)), maxMs: ms(h.max) };
    h.reset();
    return delay;
  }

  stop(): void {
    this.#histogram.disable();
  }
}
