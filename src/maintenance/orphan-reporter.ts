/**
 * The orphan reporter (leader only): once per interval it looks for jobs
 * that wait for a task no live worker runs on their queue and logs one
 * warning per task and queue — "3 jobs of task send-emial wait in queue
 * default; no live worker knows task send-emial". The first look comes one
 * interval after leadership is gained, so workers starting together have
 * registered by then.
 */
import type { Kysely } from 'kysely';
import type { Logger } from '../core/logger.js';
import { LoopService } from '../core/service.js';
import { sleep } from '../core/sleep.js';
import { RepeatedFailure } from '../core/repeated-failure.js';
import type { PgqDatabase } from '../db/tables.js';
import { describeOrphan, findOrphanedTasks } from '../db/worker-tasks.js';

export class OrphanReporter extends LoopService {
  readonly #looks = new RepeatedFailure(this.logger, 'pgq could not look for jobs no worker runs', 'pgq looks for jobs no worker runs again');

  constructor(
    private readonly intervalMs: number,
    private readonly db: Kysely<PgqDatabase>,
    logger: Logger,
  ) {
    super('orphan reporter', logger);
  }

  protected async run(signal: AbortSignal): Promise<void> {
    for (;;) {
      await sleep(this.intervalMs, signal);
      if (signal.aborted) return;
      try {
        const orphans = await findOrphanedTasks(this.db);
        this.#looks.succeeded();
        for (const orphan of orphans) this.logger.warn({ task: orphan.task, queue: orphan.queue, jobs: orphan.jobs }, describeOrphan(orphan));
      } catch (err) {
        this.#looks.failed(err);
      }
    }
  }
}
