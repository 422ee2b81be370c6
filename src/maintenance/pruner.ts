/**
 * The pruner (leader only) enforces retention: it deletes `succeeded`,
 * `failed` and `cancelled` jobs whose `finished_at` is older than their
 * state's retention. A batch is one statement per state for jobs outside
 * workflows (a range of the (state, finished_at) index, oldest first, at
 * most `batchSize` rows taken with SKIP LOCKED) and one for whole workflows
 * (named by at most `batchSize` expired workflow jobs; each goes whole),
 * each in its own short transaction, so it never holds many locks or bloats
 * one transaction, and a backlog of one state does not hold back the
 * others. Jobs in any other state are never touched, however old. A
 * workflow's jobs are pruned only once all of them have expired, and then
 * together, in one statement. One pass runs batches until none comes back
 * full or `maxBatchesPerPass` is reached; passes run every `intervalMs`, the
 * first one when leadership is gained. */
import type { Kysely, RawBuilder, SqlBool } from 'kysely';
import type { Logger } from '../core/logger.js';
import { LoopService } from '../core/service.js';
import { sleep } from '../core/sleep.js';
import { RepeatedFailure } from '../core/repeated-failure.js';
import type { JobState } from '../core/types.js';
import type { PgqDatabase } from '../db/tables.js';
import { sql } from '../db/kysely.js';

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
  readonly #passes = new RepeatedFailure(this.logger, 'pgq pruner pass failed', 'pgq pruner passes work again');

  constructor(
    private readonly config: PrunerConfig,
    private readonly db: Kysely<PgqDatabase>,
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
   * The jobs row `alias` finished before its state's cutoff, by a rule in
   * force. As a filter, SQL's unknown (a NULL finished_at) drops the row
   * already; `known` makes it false, for where the test is negated or kept.
   */
  #expired(alias: string, rules: [JobState, number][], known = false): RawBuilder<SqlBool> {
    const state = sql.ref(`${alias}.state`);
    const finishedAt = sql.ref(`${alias}.finished_at`);
    const any = sql.join(
      rules.map(([s, age]) => sql`(${state} = ${s} AND ${finishedAt} < ${cutoff(age)})`),
      sql` OR `,
    );
    return known ? sql<SqlBool>`coalesce(${any}, false)` : sql<SqlBool>`(${any})`;
  }

  /**
   * The DELETE of at most `limit` jobs of one state, outside any workflow,
   * finished before the state's cutoff: a range of `jobs_state_finished_idx`
   * (state, finished_at) read in order and stopped at the limit, so its cost
   * follows what it deletes, not the table's size.
   */
  batchQuery(state: JobState, limit: number) {
    const ms = this.#rules().find(([s]) => s === state)?.[1];
    if (ms === undefined) throw new Error(`pgq pruner: no retention rule for state ${state}`);
    return this.db.deleteFrom('jobs').where('id', 'in', (eb) =>
      eb
        .selectFrom('jobs as j')
        .select('j.id')
        .where('j.state', '=', state)
        .where('j.finished_at', '<', cutoff(ms))
        .where('j.workflow_id', 'is', null)
        .orderBy('j.finished_at')
        .limit(limit)
        .forUpdate()
        .skipLocked(),
    );
  }

  /**
   * The DELETE of whole workflows whose jobs have all expired (each by its
   * own state's rule): until then a retry may still resume the workflow
   * from the results it kept. Up to `limit` workflows with an expired job
   * and none unexpired are the candidates; every job of those is then
   * locked, in id order, and the expiry decided again on what the locks
   * return, so a retry that commits meanwhile keeps its whole workflow
   * (never a workflow in part).
   */
  workflowBatchQuery(limit: number) {
    const rules = this.#rules();
    return this.db
      // Each workflow with an expired job, once: the check that none of its
      // jobs is left unexpired is made per workflow. Made per expired job (a
      // NOT EXISTS correlated with each), a workflow of 20,000 steps kept by
      // one live step was read whole for each of its expired steps, 400
      // million rows a pass (every minute, over 3 minutes each).
      .with('expired_workflows', (db) =>
        db
          .selectFrom('jobs as o')
          .select('o.workflow_id')
          .distinct()
          .where('o.workflow_id', 'is not', null)
          .where(this.#expired('o', rules)),
      )
      .with('candidates', (db) =>
        db
          .selectFrom('expired_workflows as e')
          .select('e.workflow_id')
          .where((w) =>
            w.not(
              w.exists(
                w
                  .selectFrom('jobs as s')
                  .select('s.id')
                  .whereRef('s.workflow_id', '=', 'e.workflow_id')
                  .where((x) => x.not(this.#expired('s', rules, true))),
              ),
            ),
          )
          .limit(limit),
      )
      .with('locked', (db) =>
        db
          .selectFrom('jobs as o')
          .select(['o.id', 'o.workflow_id', this.#expired('o', rules, true).as('expired')])
          .where('o.workflow_id', 'in', (eb) => eb.selectFrom('candidates').select('candidates.workflow_id'))
          .orderBy('o.id')
          .forUpdate(),
      )
      .with('whole', (db) =>
        db
          .selectFrom('locked')
          .select('locked.workflow_id')
          .groupBy('locked.workflow_id')
          .having((eb) => eb.fn<boolean>('bool_and', ['locked.expired']), '=', true),
      )
      .deleteFrom('jobs')
      .where('jobs.id', 'in', (eb) =>
        eb
          .selectFrom('locked')
          .select('locked.id')
          .where('locked.workflow_id', 'in', (w) => w.selectFrom('whole').select('whole.workflow_id')),
      );
  }

  /** One batch: each state's jobs outside workflows, then whole workflows; each statement deletes up to `batchSize` (a workflow goes whole). */
  async #batch(): Promise<{ deleted: number; more: boolean }> {
    const { batchSize } = this.config;
    let deleted = 0;
    let more = false;
    const rules = this.#rules();
    if (rules.length === 0) return { deleted, more };
    for (const [state] of rules) {
      const n = Number((await this.batchQuery(state, batchSize).executeTakeFirst()).numDeletedRows);
      deleted += n;
      more ||= n >= batchSize;
    }
    const n = Number((await this.workflowBatchQuery(batchSize).executeTakeFirst()).numDeletedRows);
    deleted += n;
    more ||= n >= batchSize;
    return { deleted, more };
  }

  /** One batch (see #batch); returns the rows deleted. */
  async pruneBatch(): Promise<number> {
    return (await this.#batch()).deleted;
  }

  /** One pass: batches until every statement of one comes back short (or the pass limit). Returns the rows deleted. */
  async pruneOnce(signal?: AbortSignal): Promise<number> {
    let total = 0;
    for (let batch = 0; batch < this.config.maxBatchesPerPass && !signal?.aborted; batch += 1) {
      const { deleted, more } = await this.#batch();
      total += deleted;
      if (!more) break;
    }
    if (total > 0) this.logger.info({ deleted: total }, `pgq pruned ${total} finished job(s) past retention`);
    return total;
  }

  protected async run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      try {
        await this.pruneOnce(signal);
        this.#passes.succeeded();
      } catch (err) {
        this.#passes.failed(err);
      }
      await sleep(this.config.intervalMs, signal);
    }
  }
}

/**
 * The time before which a job finished `ageMs` ago, on the database clock
 * (`finished_at` is written with it), not this host's: a leader whose clock
 * runs ahead would otherwise delete jobs early.
 */
function cutoff(ageMs: number): RawBuilder<Date> {
  return sql<Date>`(now() - ${ageMs}::float8 * interval '1 millisecond')`;
}
