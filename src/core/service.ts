import type { Logger } from './logger.js';
import { errorMessage, errorSummary } from './errors.js';

/** Anything with a lifecycle: `start()` is idempotent, `stop()` resolves when its loop has exited. */
export interface Service {
  start(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * A service whose work is one long-running `run(signal)` loop. `stop()` aborts
 * the signal and waits for the loop to return. A loop that throws is logged;
 * loops are expected to catch their own transient errors and go on.
 */
export abstract class LoopService implements Service {
  #controller: AbortController | undefined;
  #loop: Promise<void> | undefined;

  protected constructor(
    protected readonly name: string,
    protected readonly logger: Logger,
  ) {}

  get running(): boolean {
    return this.#loop !== undefined;
  }

  async start(): Promise<void> {
    if (this.#loop) return;
    const controller = new AbortController();
    this.#controller = controller;
    this.#loop = this.run(controller.signal).catch((err: unknown) => {
      this.logger.error({ err: errorSummary(err), service: this.name }, `${this.name} stopped on an error: ${errorMessage(err)}`);
    });
  }

  async stop(): Promise<void> {
    const loop = this.#loop;
    if (!loop) return;
    this.#controller?.abort();
    await loop;
    this.#loop = undefined;
    this.#controller = undefined;
  }

  protected abstract run(signal: AbortSignal): Promise<void>;
}
