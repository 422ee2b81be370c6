/**
 * The body of every benchmark handler, shared by the adapters so each system
 * runs the same work: report the job to the harness, then, for I/O-bound
 * workloads, await a timer (`ConsumerOptions.handlerDelayMs`).
 */
import { setTimeout as delay } from 'node:timers/promises';
import type { ConsumerOptions, Payload } from './types.js';

/** What a handler needs of the consumer's options. */
export type HandlerOptions = Pick<ConsumerOptions, 'onJob' | 'handlerDelayMs'>;

/**
 * Runs one job's handler body. With no delay it returns nothing and awaits
 * nothing (the no-op drains measure the queue, not a microtask); with a delay
 * it returns the promise of the timer.
 */
export function runHandler(options: HandlerOptions, payload: Payload): void | Promise<void> {
  options.onJob(payload);
  if (options.handlerDelayMs) return delay(options.handlerDelayMs);
}
