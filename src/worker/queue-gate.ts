/**
 * The queue gate: what the worker's producer claims through, so queue
 * control costs nothing for queues without it.
 *
 * It keeps the `queues` rows of the worker's queues in memory, re-read every
 * second and at once on a NOTIFY on the queues channel (the queues trigger
 * sends one for every change, pgq's or plain SQL's); from that NOTIFY until
 * the re-read is done the queue is not claimed, and after it the producer is
 * woken. At start it creates the rows of the
 * queues the worker serves ("a queue gets a row on first use").
 *
 * Each claim splits the worker's queues by what the cache says:
 * - paused: not claimed at all;
 * - limited (a concurrency, rate or per-key limit): one statement per
 *   queue, JobClaimLimited (see queue-statements.ts), which serialises the
 *   claims of that queue only and re-reads its settings under the lock, so
 *   a limit is never exceeded;
 * - the rest: JobClaim / JobClaimMany, exactly as without queue control
 *   (which skip a paused queue themselves, so a pause the cache has not
 *   caught up with still holds). A worker with no paused or limited queue
 *   passes every claim straight through.
 * Limited queues are claimed first (each takes at most what its limits
 * leave), taking turns at being asked first; beside several, or when the
 * claim is for the free slots only (nothing claimed ahead), the others (as
 * one) take a turn too. The others are then given the rest of the batch.
 * A limited queue is asked only for slots free now, so while one was left
 * unasked for want of them (and is not known to be at a limit or empty) the
 * others are claimed without claiming ahead, and slots free up for it:
 * otherwise the jobs claimed ahead for a busy unlimited queue fill every
 * slot as it frees.
 *
 * A limited claim that left due jobs waiting (a limit was reached) arms a
 * re-check: after one token's time for a rate limit, after RECHECK_MS for a
 * concurrency limit, and at once when outcomes of this worker's jobs are
 * committed (a job counts as running until then). Jobs ending on other
 * workers are seen at the next re-check.
 */
import type { Kysely, Selectable } from 'kysely';
import type { Logger } from '../core/logger.js';
import { LoopService } from '../core/service.js';
import { sleep } from '../core/sleep.js';
import type { Queryable } from '../db/queryable.js';
import type { ClaimJobsParams, HotStatements } from '../db/statements.js';
import type { QueueStatements } from '../db/queue-statements.js';
import type { ClaimRow } from '../db/rows.js';
import type { PgqDatabase, QueuesTable } from '../db/tables.js';
import type { Listener } from '../notify/listener.js';
import type { ChannelNames } from '../notify/channels.js';
import { RepeatedFailure } from '../core/repeated-failure.js';
import { retryConflicts } from '../db/transaction.js';

/** How often the settings are re-read without a NOTIFY. */
export const QUEUE_REFRESH_MS = 1_000;
/** How soon a limited queue at its concurrency limit, with jobs waiting, is claimed again. */
export const RECHECK_MS = 50;

interface Control {
  paused: boolean;
  limited: boolean;
}

/** What the gate reads of a queue's row. */
type QueueSettingsRow = Pick<Selectable<QueuesTable>, 'name' | 'paused' | 'concurrency' | 'rate_limit' | 'key_concurrency'>;

export interface QueueGateDeps {
  kysely: Kysely<PgqDatabase>;
  statements: HotStatements;
  queueStatements: QueueStatements;
  listener: Listener;
  channels: ChannelNames;
  logger: Logger;
  /** Wakes the producer: settings changed, or a limited queue may have room again. */
  wake: () => void;
  /** A queue was found paused that was not: the jobs of it claimed ahead and not started go back. */
  paused?: (queue: string) => void;
}

export class QueueGate extends LoopService {
  readonly #readFailures = new RepeatedFailure(this.logger, 'pgq could not read queue settings', 'pgq reads queue settings again', 'keeping the last ones');
  readonly #queues: readonly string[];
  readonly #deps: QueueGateDeps;
  #controls = new Map<string, Control>();
  /** Queues named by a NOTIFY whose new settings are being read (how many such reads): not claimed until then. */
  readonly #changing = new Map<string, number>();
  /** Refreshes started so far, and the latest one whose result is in #controls. */
  #refreshes = 0;
  #applied = 0;
  #offNotify: (() => Promise<void>) | undefined;
  #recheck: NodeJS.Timeout | undefined;
  /** When the armed recheck fires (performance.now() time). */
  #recheckAt = Infinity;
  /** The last claim left jobs of a limited queue waiting (or did not ask every one): claim again when outcomes commit. */
  #limitedWaiting = false;
  /**
   * Limited queues not worth keeping slots free for (performance.now() time):
   * the last claim found them at a limit (until their recheck) or with
   * nothing waiting for this worker (for a refresh's time).
   */
  readonly #skipUntil = new Map<string, number>();
  #turn = 0;

  constructor(queues: readonly string[], deps: QueueGateDeps) {
    super('queue-gate', deps.logger);
    this.#queues = queues;
    this.#deps = deps;
  }

  /** The hot statements with the claim going through this gate; everything else unchanged. */
  statements(): HotStatements {
    return { ...this.#deps.statements, claimJobs: (db, p) => this.claim(db, p) };
  }

  /**
   * Listens for changes, waits for `listening` (the listener's connection:
   * subscribed before it is up, the queues channel is LISTENed on with the
   * others in one statement), then reads the settings, creating the rows of
   * this worker's queues that are missing.
   */
  override async start(listening?: () => Promise<unknown>): Promise<void> {
    if (this.running) return;
    const { kysely, listener, channels } = this.#deps;
    const queues = new Set(this.#queues);
    // The queues trigger notifies before any job NOTIFY that follows the
    // change, so a queue is held back here before a wake can claim it.
    this.#offNotify ??= await listener.subscribe(channels.queues, (queue) => {
      if (!queues.has(queue)) return;
      this.#changing.set(queue, (this.#changing.get(queue) ?? 0) + 1);
      void this.refresh().then(() => {
        const left = (this.#changing.get(queue) ?? 1) - 1;
        if (left > 0) this.#changing.set(queue, left);
        else this.#changing.delete(queue);
        this.#deps.wake();
      });
    });
    await listening?.();
    // The settings, and from them which rows are missing; only those are
    // inserted (an insert that conflicts would still fire the trigger's NOTIFY).
    let read = await this.#read();
    const missing = this.#queues.filter((name) => !read.rows.some((r) => r.name === name));
    if (missing.length > 0) {
      await kysely.insertInto('queues').values(missing.map((name) => ({ name }))).onConflict((oc) => oc.column('name').doNothing()).execute();
      read = await this.#read();
    }
    this.#apply(read);
    await super.start();
  }

  override async stop(): Promise<void> {
    // The notification handler goes first (at once, as it is called): a
    // stop that waits on a refresh under way hears no more changes.
    const unlistening = this.#offNotify?.();
    this.#offNotify = undefined;
    await super.stop();
    clearTimeout(this.#recheck);
    this.#recheck = undefined;
    this.#recheckAt = Infinity;
    await unlistening;
  }

  /** Outcomes of this worker's jobs were committed: a limited queue waiting on its limit may have room now. */
  outcomesCommitted(): void {
    if (this.#limitedWaiting) this.#deps.wake();
  }

  /**
   * Re-reads the settings; wakes the producer when anything changed. Reads
   * may overlap (the periodic one and a NOTIFY's): one that started earlier
   * and ends later may have read older settings, so it is dropped.
   */
  async refresh(): Promise<void> {
    try {
      this.#apply(await this.#read());
      this.#readFailures.succeeded();
    } catch (err) {
      this.#readFailures.failed(err);
    }
  }

  /** The settings of this worker's queues, and which read this is (reads may overlap). */
  async #read(): Promise<{ turn: number; rows: QueueSettingsRow[] }> {
    const turn = ++this.#refreshes;
    const rows = await this.#deps.kysely
      .selectFrom('queues')
      .select(['name', 'paused', 'concurrency', 'rate_limit', 'key_concurrency'])
      .where('name', 'in', [...this.#queues])
      .execute();
    return { turn, rows };
  }

  /** Keeps what `read` found, unless a read that started after it was kept already. */
  #apply({ turn, rows }: { turn: number; rows: QueueSettingsRow[] }): void {
    const next = new Map<string, Control>(
      rows.map((r) => [r.name, { paused: r.paused, limited: r.concurrency !== null || r.rate_limit !== null || r.key_concurrency !== null }]),
    );
    if (turn < this.#applied) return;
    this.#applied = turn;
    const changed = this.#queues.some((q) => !sameControl(this.#controls.get(q), next.get(q)));
    const paused = this.#queues.filter((q) => next.get(q)?.paused && !this.#controls.get(q)?.paused);
    this.#controls = next;
    for (const queue of paused) this.#deps.paused?.(queue);
    if (changed) this.#deps.wake();
  }

  /** JobClaim through the gate: paused queues skipped, limited ones one by one under their lock, the rest as usual. */
  async claim(db: Queryable, p: ClaimJobsParams): Promise<ClaimRow[]> {
    const open = p.queues.filter((q) => !this.#controls.get(q)?.paused && !this.#changing.has(q));
    const limited = open.filter((q) => this.#controls.get(q)?.limited);
    // Each statement is sent again at once if PostgreSQL ended it with 40001 or
    // 40P01 (it claimed nothing): under a default isolation of repeatable read
    // claims that meet rows, or a limited queue's row, committed after their start.
    if (open.length === p.queues.length && limited.length === 0) return retryConflicts(() => this.#deps.statements.claimJobs(db, p));
    const rows: ClaimRow[] = [];
    let recheckMs: number | null = null;
    let waiting = false;
    const unlimited = open.filter((q) => !limited.includes(q));
    // Beside several limited queues, the unlimited ones together take a turn
    // at the free slots like each of them (null in the order). Asked only
    // after them, two limited queues with backlogs took every free slot
    // between them and the others ran nothing (none is claimed ahead while
    // one is unasked): 0 of 300 while they ran 1,000. Beside one, which is
    // always asked, the others are claimed ahead after it, and a turn of
    // their own took half its share (57 of its jobs ran to 1,037, against 71-125).
    // But when nothing may be claimed ahead (the claim is for the free slots
    // only: no jobs have finished yet, or they are too long to hold any
    // ahead), nothing is left for the others after it, and beside one
    // limited queue with a backlog below its limits they ran nothing: they
    // take a turn then too.
    // A limited queue's claimed jobs count against its limits at once: take
    // no more than the worker can start now, none to hold ahead.
    const limitedMax = Math.min(p.limit, p.startable ?? p.limit);
    const turnForOthers = unlimited.length > 0 && (limited.length > 1 || p.limit <= limitedMax);
    const members: (string | null)[] = turnForOthers ? [...limited, null] : limited;
    const start = this.#turn++ % Math.max(1, members.length);
    const order = [...members.slice(start), ...members.slice(0, start)];
    let reserve = false;
    /** The unlimited queues, asked in their turn, had fewer jobs than asked for: not asked again. */
    let unlimitedDry = false;
    for (const [i, queue] of order.entries()) {
      const left = limitedMax - rows.length;
      if (left <= 0) {
        const unasked = order.slice(i).filter((q): q is string => q !== null);
        // The free slots are taken: the queues not asked may have jobs waiting (the next claim starts with them).
        waiting ||= unasked.length > 0;
        // Not asked for want of free slots, and not known to be at a limit
        // or empty: the other queues' jobs are not claimed ahead this time,
        // so that slots free up for it. (A busy unlimited queue beside it
        // kept every slot filled from the jobs it claimed ahead, and the
        // limited queue was asked only when that buffer ran dry: 6 of its
        // jobs ran while the unlimited one ran 1,000.)
        const now = performance.now();
        reserve = unasked.some((q) => (this.#skipUntil.get(q) ?? 0) <= now);
        break;
      }
      if (queue === null) {
        // Last in the order: asked below, with what may be claimed ahead.
        if (i === order.length - 1) break;
        const claimed = await retryConflicts(() => this.#deps.statements.claimJobs(db, { ...p, queues: unlimited, limit: left }));
        rows.push(...claimed);
        unlimitedDry = claimed.length < left;
        continue;
      }
      const { claimed, waitMs, more } = await this.#claimLimited(db, queue, p, left);
      rows.push(...claimed);
      if (waitMs !== null) recheckMs = Math.min(recheckMs ?? waitMs, waitMs);
      // At a limit: no room until its recheck; nothing waiting: looked at again within a refresh.
      if (waitMs !== null || !more) this.#skipUntil.set(queue, performance.now() + (waitMs ?? QUEUE_REFRESH_MS));
      else this.#skipUntil.delete(queue);
      waiting ||= more;
    }
    const left = (reserve ? limitedMax : p.limit) - rows.length;
    if (left > 0 && unlimited.length > 0 && !unlimitedDry) rows.push(...(await retryConflicts(() => this.#deps.statements.claimJobs(db, { ...p, queues: unlimited, limit: left }))));
    this.#armRecheck(recheckMs, waiting);
    return rows;
  }

  /**
   * The claim of one limited queue. `more`: jobs of the queue are left
   * waiting, so claim again when this worker's outcomes are committed (its
   * free slots, or the queue's limit, took fewer than are due); `waitMs`:
   * when to look again if a limit left them waiting (other workers' jobs
   * ending, the bucket refilling).
   */
  async #claimLimited(
    db: Queryable,
    queue: string,
    p: ClaimJobsParams,
    limit: number,
  ): Promise<{ claimed: ClaimRow[]; waitMs: number | null; more: boolean }> {
    const { claimed, waiting, tokenMs } = await retryConflicts(() =>
      this.#deps.queueStatements.claimLimited(db, { queue, tasks: p.tasks, limit, workerId: p.workerId, registeredAt: p.registeredAt }),
    );
    return { claimed, waitMs: claimed.length < limit && waiting ? Math.max(RECHECK_MS, tokenMs ?? 0) : null, more: waiting };
  }

  /**
   * Wakes the producer `waitMs` from now, or sooner if a recheck armed
   * before is due sooner. (A later one does not put off a sooner one: a
   * queue at its concurrency limit, armed for 50 ms after a rate-limited
   * queue armed for one token's time, an hour, waited the hour.)
   */
  #armRecheck(waitMs: number | null, waiting: boolean): void {
    this.#limitedWaiting = waiting;
    if (waitMs === null) return;
    const at = performance.now() + waitMs;
    if (this.#recheck && this.#recheckAt <= at) return;
    clearTimeout(this.#recheck);
    this.#recheckAt = at;
    this.#recheck = setTimeout(() => {
      this.#recheck = undefined;
      this.#recheckAt = Infinity;
      this.#deps.wake();
    }, waitMs);
    this.#recheck.unref();
  }

  protected async run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      await sleep(QUEUE_REFRESH_MS, signal);
      if (!signal.aborted) await this.refresh();
    }
  }
}

function sameControl(a: Control | undefined, b: Control | undefined): boolean {
  return (a?.paused ?? false) === (b?.paused ?? false) && (a?.limited ?? false) === (b?.limited ?? false);
}
