/**
 * Event-loop delay, measured by Node's own sampler
 * (`perf_hooks.monitorEventLoopDelay`): how late timers fire because
 * something kept the loop busy. Each `take()` reports the window since the
 * previous one and starts a new window.
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

  constructor(resolutionMs = 20) {
    this.#histogram = monitorEventLoopDelay({ resolution: resolutionMs });
    this.#histogram.enable();
  }

  /** The delays since the previous call (or since construction); starts a new window. */
  take(): EventLoopDelay {
    const h = this.#histogram;
    const ms = (ns: number): number => (Number.isFinite(ns) ? ns / 1e6 : 0);
    const delay = h.count === 0 ? { p50Ms: 0, p99Ms: 0, maxMs: 0 } : { p50Ms: ms(h.percentile(50)), p99Ms: ms(h.percentile(99)), maxMs: ms(h.max) };
    h.reset();
    return delay;
  }

  stop(): void {
    this.#histogram.disable();
  }
}
