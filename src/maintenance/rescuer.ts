/**
 * The rescuer (leader only) retries the running jobs of workers whose lease
 * has passed, however long the jobs themselves may run, and removes those
 * workers' rows. Each worker writes its own lease from its own
 * rescueAfterMs; this leader's `rescueAfterMs` applies only to workers of pgq
 * versions that wrote no lease. Runs every `min(heartbeatMs, rescueAfterMs / 4)`.
 */
import type { Logger } from '../core/logger.js';
import { LoopService } from '../core/service.js';
import { sleep } from '../core/sleep.js';
import type { Queryable } from '../db/queryable.js';
import type { HotStatements } from '../db/statements.js';
import { RepeatedFailure } from '../core/repeated-failure.js';

export interface RescuerConfig {
  rescueAfterMs: number;
  intervalMs: number;
}

export class Rescuer extends LoopService {
  readonly #passFailures = new RepeatedFailure(this.logger, 'pgq rescuer pass failed', 'pgq rescuer passes again');

  constructor(
    private readonly config: RescuerConfig,
    private readonly db: Queryable,
    private readonly statements: HotStatements,
    logger: Logger,
  ) {
    super('rescuer', logger);
  }

  /** One pass; returns the rescued jobs. `now` moves the database's clock for tests. */
  async rescueOnce(now?: Date): Promise<{ id: string; state: string; worker_id: string }[]> {
    const rescued = await this.statements.rescueJobs(this.db, { legacyRescueAfterMs: this.config.rescueAfterMs, now: now ?? null });
    if (rescued.length > 0) {
      const workers = [...new Set(rescued.map((r) => r.worker_id))];
      this.logger.warn({ jobs: rescued.map((r) => r.id), workers }, `pgq rescued ${rescued.length} job(s) of silent worker(s)`);
    }
    return rescued;
  }

  protected async run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      try {
        await this.rescueOnce();
        this.#passFailures.succeeded();
      } catch (err) {
        this.#passFailures.failed(err);
      }
      await sleep(this.config.intervalMs, signal);
    }
  }
}
