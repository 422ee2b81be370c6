/**
 * The pruner (leader only) enforces retention: it deletes `succeeded`,
 * `failed` and `cancelled` jobs whose `finished_at` is older than their
 * state's retention, in batches of at most `batchSize` rows per statement
 * (each its own short transaction, rows taken with SKIP LOCKED), so it never
 * holds many locks or bloats one transaction. Jobs in any other state are
 * never touched, however old. A workflow's jobs are pruned only once all of
 * them have expired, and then together. One pass deletes until a batch comes
 * back short or `maxBatchesPerPass` is reached; passes run every
 * `intervalMs`, the first one when leadership is gained.
 */
import type { Kysely } from 'kysely';
import type { Logger } from '../core/logger.js';
import type { Clock } from '../core/clock.js';
import { LoopService } from '../core/service.js';
import { sleep } from '../core/sleep.js';
import { errorMessage, errorSummary } from '../core/errors.js';
import type { JobState } from '../core/types.js';
import type { PgqDatabase } from '../db/tables.js';

export interface PrunerConfig {
  /** Keep succeeded jobs this long after they finished; null keeps them forever. */
  succeededMs: number | null;
  /** Keep failed jobs (the dead-letter set) this long; null keeps them forever. */
  failedMs: number | null;
  /** Keep cancelled jobs this long; null keeps them forever. */
  cancelledMs: number | null;
  /** Most rows one DELETE removes. */
  batchSize: number;
  /** Pause between passes. */
  intervalMs: number;
  /** Most batches in one pass; the rest waits for the next pass. */
  maxBatchesPerPass: number;
}

export class Pruner extends LoopService {
  constructor(
    private readonly config: PrunerConfig,
    private readonly db: Kysely<PgqDatabase>,
    private readonly clock: Clock,
    logger: Logger,
  ) {
    super('pruner', logger);
  }

  /** Deletes at most `batchSize` expired jobs; returns how many. */
  async pruneBatch(): Promise<number> {
    const now = this.clock.now().getTime();
    const rules = (
      [
        ['succeeded', this.config.succeededMs],
        ['failed', this.config.failedMs],
        ['cancelled', this.config.cancelledMs],
      ] as [JobState, number | null][]
    ).filter((rule): rule is [JobState, number] => rule[1] !== null);
    if (rules.length === 0) return 0;
    const result = await this.db
      .deleteFrom('jobs')
      .where('id', 'in', (eb) =>
        eb
          .selectFrom('jobs as j')
          .select('j.id')
          .where((w) => w.or(rules.map(([state, ms]) => w.and([w('j.state', '=', state), w('j.finished_at', '<', new Date(now - ms))]))))
          // A workflow's jobs go together, once every one of them has expired:
          // until then a retry may still resume it from the results it kept.
          .where((w) =>
            w.or([
              w('j.workflow_id', 'is', null),
              w.not(
                w.exists(
                  w
                    .selectFrom('jobs as o')
                    .select('o.id')
                    .whereRef('o.workflow_id', '=', 'j.workflow_id')
                    .where((x) =>
                      x.not(x.or(rules.map(([state, ms]) => x.and([x('o.state', '=', state), x('o.finished_at', '<', new Date(now - ms))])))),
                    ),
                ),
              ),
            ]),
          )
          .limit(this.config.batchSize)
          .forUpdate()
          .skipLocked(),
      )
      .executeTakeFirst();
    return Number(result.numDeletedRows);
  }

  /** One pass: batches until one comes back short (or the pass limit). Returns the rows deleted. */
  async pruneOnce(signal?: AbortSignal): Promise<number> {
    let total = 0;
    for (let batch = 0; batch < this.config.maxBatchesPerPass && !signal?.aborted; batch += 1) {
      const deleted = await this.pruneBatch();
      total += deleted;
      if (deleted < this.config.batchSize) break;
    }
    if (total > 0) this.logger.info({ deleted: total }, `pgq pruned ${total} finished job(s) past retention`);
    return total;
  }

  protected async run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      try {
        await this.pruneOnce(signal);
      } catch (err) {
        this.logger.warn({ err: errorSummary(err) }, `pgq pruner pass failed: ${errorMessage(err)}`);
      }
      await sleep(this.config.intervalMs, signal);
    }
  }
}
