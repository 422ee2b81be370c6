/**
 * The expirer (leader only) ends jobs whose `expires_at` passed before they
 * started: `cancelled`, with an error entry saying they expired. Claims never
 * take an expired job (they test `expires_at` themselves), so the expirer only
 * decides when such a job is seen as finished: within about `intervalMs` of
 * its expiry while a leader runs. Retries due after the expiry end the same
 * way: they are `retryable`, not started.
 */
import type { Logger } from '../core/logger.js';
import { LoopService } from '../core/service.js';
import { sleep } from '../core/sleep.js';
import type { Queryable } from '../db/queryable.js';
import type { QueueStatements } from '../db/queue-statements.js';
import { RepeatedFailure } from '../core/repeated-failure.js';

export interface ExpirerConfig {
  intervalMs: number;
  /** Most jobs cancelled per statement; a full batch runs again at once. */
  batchSize: number;
}

export class Expirer extends LoopService {
  readonly #passFailures = new RepeatedFailure(this.logger, 'pgq expirer pass failed', 'pgq expirer passes again');

  constructor(
    private readonly config: ExpirerConfig,
    private readonly db: Queryable,
    private readonly statements: QueueStatements,
    logger: Logger,
  ) {
    super('expirer', logger);
  }

  /**
   * One pass; returns how many jobs expired. `now` moves the database's clock
   * for tests; `scope` keeps to those queues and tasks (drain()'s).
   */
  async expireOnce(now?: Date, scope: { queues: readonly string[]; tasks: readonly string[] } | null = null): Promise<number> {
    let total = 0;
    for (;;) {
      const expired = await this.statements.expireJobs(this.db, { limit: this.config.batchSize, now: now ?? null, ...scope });
      total += expired.length;
      if (expired.length < this.config.batchSize) break;
    }
    if (total > 0) this.logger.info({ jobs: total }, `pgq cancelled ${total} job(s) that expired before they started`);
    return total;
  }

  protected async run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      try {
        await this.expireOnce();
        this.#passFailures.succeeded();
      } catch (err) {
        this.#passFailures.failed(err);
      }
      await sleep(this.config.intervalMs, signal);
    }
  }
}
