/**
 * The log of a loop that fails again and again while the database is away
 * (the queue settings read each second, a maintenance pass, the leader's
 * election): the first failure at warn with its stack, then one warn line
 * every `every` failures with the count and no stack (the rest at debug),
 * and one info line when it works again. Before, each such loop wrote a
 * warning with a full stack at each try: over a hundred lines in a 30 s
 * outage, and one a second for as long as it lasted.
 */
import { errorMessage, errorSummary } from './errors.js';
import type { Logger } from './logger.js';

export class RepeatedFailure {
  #failures = 0;

  constructor(
    private readonly logger: Logger,
    /** What failed, as the start of a sentence: `pgq could not read queue settings`. */
    private readonly what: string,
    /** Said once it works again: `pgq reads queue settings again`. */
    private readonly again: string,
    /** What goes on meanwhile, added to the first line: `keeping the last ones`. */
    private readonly meanwhile = '',
    private readonly every = 20,
  ) {}

  /** Whether the last try failed. */
  get failing(): boolean {
    return this.#failures > 0;
  }

  /** Records one failure; logs the first and every `every`th. */
  failed(err: unknown): void {
    this.#failures += 1;
    const n = this.#failures;
    if (n === 1) {
      this.logger.warn({ err: errorSummary(err) }, `${this.what}${this.meanwhile ? ` (${this.meanwhile})` : ''}: ${errorMessage(err)}`);
    } else if (n % this.every === 0) {
      const { stack: _stack, ...err2 } = errorSummary(err);
      this.logger.warn({ err: err2, failures: n }, `${this.what}, ${n} times in a row: ${errorMessage(err)}`);
    } else {
      this.logger.debug({ err: errorSummary(err), failures: n }, `${this.what}: ${errorMessage(err)}`);
    }
  }

  /** Records a success; after failures, says so once. */
  succeeded(): void {
    if (this.#failures === 0) return;
    this.logger.info({ failures: this.#failures }, `${this.again}, after ${this.#failures} failure(s)`);
    this.#failures = 0;
  }
}
