/**
 * `drain`: run every due job of a Pgq's tasks to a final state, in-process,
 * and say what happened. A real worker does the running (same claim, same
 * executor, same completer as production); drain adds two things a test
 * wants: it returns once nothing is left to run, and a retry does not wait
 * for its backoff — a job that fails an attempt runs again at once, as if the
 * clock had moved to its next run time.
 *
 * Done means: no job of these queues and tasks is `available`, `running` or
 * `retryable`. Jobs scheduled for later (`runAt`, `delayMs`, a snooze) are
 * not due and stay where they are; so do the jobs of a paused queue. Jobs
 * past their expiry end `cancelled`, as the leader's expirer ends them (the
 * drain's worker is no leader).
 */
import { sql } from '../db/kysely.js';
import type { Pgq } from '../client.js';
import { PgqError, optionsArgument } from '../core/errors.js';
import { createQueueStatements } from '../db/queue-statements.js';
import { fromKysely } from '../db/queryable.js';
import { Expirer } from '../maintenance/expirer.js';
import { EXPIRER } from '../maintenance/leader-services.js';

/** Options of `drain`. */
export interface DrainOptions {
  /**
   * Queues to drain. Default: the queues of the Pgq's tasks, and every queue
   * in which a job of one of them waits when the drain starts (a job enqueued
   * with `queue`, a workflow step given one); name the queue of a job that a
   * handler enqueues into a queue of its own.
   */
  queues?: readonly string[] | undefined;
  /**
   * Run at most about this many attempts: claiming stops as the last one
   * starts; attempts already running then (at most `concurrency`) finish.
   * Default: no limit.
   */
  maxJobs?: number | undefined;
  /** Jobs run at once. Default 1, so jobs run one by one in claim order. */
  concurrency?: number | undefined;
  /**
   * Give up (with a PgqError) when jobs are still running after this long.
   * Default 30 s. Running handlers are then signalled; one that ignores its
   * signal does not hold the rejection back (its worker stops once it settles).
   */
  timeoutMs?: number | undefined;
}

/** What a drain did. */
export interface DrainResult {
  /** Attempts run (every success, retry and failure). */
  processed: number;
  /** Attempts that succeeded. */
  succeeded: number;
  /** Attempts that failed with another attempt to come (run at once by the drain). */
  retried: number;
  /** Attempts that failed for good: attempts exhausted or a permanent error. */
  failed: number;
}

/** After a timeout, how long the drain waits for its signalled handlers to settle before it rejects. */
const HARD_STOP_WAIT_MS = 1_000;
/** How often drain looks at the jobs table while jobs run. */
const CHECK_EVERY_MS = 10;

/**
 * Runs every due job of `pgq`'s tasks (in `options.queues`) to a final state
 * and resolves with counts. Retries run at once instead of after their backoff.
 *
 * @example
 * await pgq.enqueue(sendEmail, { to: 'a@b.c' });
 * const result = await drain(pgq);
 * expect(result).toMatchObject({ succeeded: 1, failed: 0 });
 */
export async function drain(pgq: Pgq, options: DrainOptions = {}): Promise<DrainResult> {
  // `{ queue: 'emails' }` for `queues` would drain every queue, in silence.
  optionsArgument(options, 'options', ['queues', 'maxJobs', 'concurrency', 'timeoutMs']);
  const timeoutMs = options.timeoutMs ?? 30_000;
  if (typeof timeoutMs !== 'number' || !Number.isFinite(timeoutMs) || timeoutMs < 0) {
    throw new PgqError('PGQ_BAD_OPTION', `drain: timeoutMs must be a number of milliseconds >= 0, got ${String(options.timeoutMs)}`);
  }
  const maxJobs = options.maxJobs ?? Infinity;
  if (maxJobs !== Infinity && (!Number.isInteger(maxJobs) || maxJobs < 1)) {
    throw new PgqError('PGQ_BAD_OPTION', `drain: maxJobs must be a whole number >= 1, got ${String(options.maxJobs)}`);
  }
  const tasks = pgq.tasks.names();
  const worker = pgq.worker({
    queues: options.queues ? [...options.queues] : await queuesOf(pgq, tasks),
    concurrency: options.concurrency ?? 1,
    leader: false,
    pollIntervalMs: CHECK_EVERY_MS,
  });
  const queues = [...worker.options.queues];
  const result: DrainResult = { processed: 0, succeeded: 0, retried: 0, failed: 0 };
  let wake: () => void = () => undefined;
  let stopping: Promise<void> | undefined;
  let started = 0;
  const count = (key: keyof DrainResult): void => {
    result[key] += 1;
    result.processed += 1;
    wake();
  };
  // Stop claiming as the last allowed attempt starts (not at the loop's next
  // turn: fast jobs outrun it); the stop lets that attempt finish.
  worker.on('job:start', () => {
    started += 1;
    if (started >= maxJobs) stopping ??= worker.stop();
  });
  worker.on('job:success', () => count('succeeded'));
  worker.on('job:failure', (_job, _err, _ms, retry) => count(retry ? 'retried' : 'failed'));

  const deadline = Date.now() + timeoutMs;
  // The leader's expirer, kept to these queues and tasks.
  const expirer = new Expirer(EXPIRER, fromKysely(pgq.kysely), createQueueStatements(pgq.schema), pgq.logger);
  let timedOut = false;
  await worker.start();
  try {
    for (;;) {
      if (stopping) break;
      // Expired before they started: cancelled by the leader's expirer's own
      // statement (its NOTIFY wakes waitForJob), for these queues and tasks
      // (claims never take them; they were "still to run" until the timeout).
      await expirer.expireOnce(undefined, { queues, tasks });
      // A retry is due at once under drain: make retryable jobs available now.
      await pgq.kysely
        .updateTable('jobs')
        .set({ state: 'available', run_at: sql`now()` })
        .where('state', '=', 'retryable')
        .where('queue', 'in', queues)
        .where('task', 'in', tasks)
        .execute();
      // A paused queue's jobs are not due (they waited out the whole timeout, then "still to run").
      const left = await pgq.kysely
        .selectFrom('jobs')
        .select((eb) => eb.fn.countAll<string>().as('n'))
        .where('state', 'in', ['available', 'running', 'retryable'])
        .where('queue', 'in', queues)
        .where('task', 'in', tasks)
        .where(({ eb, or, not, exists, selectFrom }) =>
          or([
            eb('state', '=', 'running'),
            not(exists(selectFrom('queues').select('name').whereRef('queues.name', '=', 'jobs.queue').where('queues.paused', '=', true))),
          ]),
        )
        .executeTakeFirstOrThrow();
      if (Number(left.n) === 0) break;
      if (Date.now() > deadline) {
        timedOut = true;
        // A rate limit holds drain's claims as a worker's: say so, it is the likely cause.
        const limited = await pgq.kysely.selectFrom('queues').select('name').where('name', 'in', queues).where('rate_limit', 'is not', null).execute();
        const hint = limited.length === 0 ? '' : ` (rate-limited, as under a worker: ${limited.map((q) => `queue ${q.name}`).join(', ')}; lift the limit in the test with setQueue(name, { rateLimit: null }))`;
        throw new PgqError('PGQ_DRAIN_TIMEOUT', `drain: ${left.n} job(s) still to run after ${timeoutMs} ms${hint}`);
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, CHECK_EVERY_MS);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  } finally {
    if (timedOut) {
      // Signal every running handler at once, and do not let one that
      // ignores its signal hold the timeout back: the worker stops when it
      // settles.
      const stopped = worker.hardStop();
      await Promise.race([stopped, new Promise((resolve) => setTimeout(resolve, HARD_STOP_WAIT_MS).unref())]);
    } else {
      await (stopping ?? worker.stop());
    }
  }
  return result;
}

/** The queues of the tasks, and those where a job of one of them waits (not yet finished). */
async function queuesOf(pgq: Pgq, tasks: string[]): Promise<string[]> {
  const own = tasks.map((name) => pgq.tasks.get(name)!.queue);
  if (tasks.length === 0) return ['default'];
  const rows = await pgq.kysely
    .selectFrom('jobs')
    .select('queue')
    .distinct()
    .where('task', 'in', tasks)
    .where('state', 'in', ['scheduled', 'available', 'running', 'retryable', 'blocked'])
    .execute();
  return [...new Set([...own, ...rows.map((r) => r.queue)])];
}
