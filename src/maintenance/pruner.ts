/**
 * The pruner (leader only) enforces retention: it deletes `succeeded`,
 * `failed` and `cancelled` jobs whose `finished_at` is older than their
 * state's retention, in batches of at most `batchSize` rows (one statement
 * per state, each reading its range of the (state, finished_at) index, each
 * its own short transaction, rows taken with SKIP LOCKED), so it never
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

  /** The retention rules in force: [state, age in ms] for each state that is not kept forever. */
  #rules(): [JobState, number][] {
    return (
      [
        ['succeeded', this.config.succeededMs],
        ['failed', this.config.failedMs],
        ['cancelled', this.config.cancelledMs],
      ] as [JobState, number | null][]
    ).filter((rule): rule is [JobState, number] => rule[1] !== null);
  }

  /**
   * The DELETE of at most `limit` jobs of one state finished before its
   * cutoff: a range of `jobs_state_finished_idx` (state, finished_at), read
   * in order and stopped at the limit, so a pass costs what it deletes, not
   * the table's size. A workflow job goes only once every job of its
   * workflow has expired (each by its own state's rule).
   */
  batchQuery(state: JobState, limit: number, now: number = this.clock.now().getTime()) {
    const rules = this.#rules();
    const ms = rules.find(([s]) => s === state)?.[1];
    if (ms === undefined) throw new Error(`pgq pruner: no retention rule for state ${state}`);
    return this.db.deleteFrom('jobs').where('id', 'in', (eb) =>
      eb
        .selectFrom('jobs as j')
        .select('j.id')
        .where('j.state', '=', state)
        .where('j.finished_at', '<', new Date(now - ms))
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
                  .where((x) => x.not(x.or(rules.map(([s, age]) => x.and([x('o.state', '=', s), x('o.finished_at', '<', new Date(now - age))]))))),
              ),
            ),
          ]),
        )
        .limit(limit)
        .forUpdate()
        .skipLocked(),
    );
  }

  /** Deletes at most `batchSize` expired jobs, state by state; returns how many. */
  async pruneBatch(): Promise<number> {
    const now = this.clock.now().getTime();
    let deleted = 0;
    for (const [state] of this.#rules()) {
      const left = this.config.batchSize - deleted;
      if (left <= 0) break;
      const result = await this.batchQuery(state, left, now).executeTakeFirst();
      deleted += Number(result.numDeletedRows);
    }
    return deleted;
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
