/**
 * Which tasks the live workers know, and the jobs that wait for a task no
 * live worker can run ("orphaned": a typo in a task name, or a worker not
 * deployed yet). A worker writes its task names into `workers.tasks` when it
 * registers. A worker is live while its lease (`lease_expires_at`) has not
 * passed. A worker row with `tasks` null (one that did not say) counts as
 * knowing every task, so such jobs are never reported by mistake.
 */
import type { Kysely } from 'kysely';
import { sql } from './kysely.js';
import type { PgqDatabase } from './tables.js';

/** Jobs of one task and queue that wait while no live worker runs that task on that queue. */
export interface OrphanedTask {
  task: string;
  queue: string;
  /** Jobs waiting (available, scheduled or retryable). */
  jobs: number;
  /** Why: no live worker knows the task at all, or those that know it serve other queues. */
  reason: 'unknown-task' | 'queue-not-served';
}

/**
 * Tasks whose waiting jobs no live worker will run, by task and queue
 * (optionally only `tasks`). Empty when no worker is registered at all
 * (then every job waits, and that is not news about one task) unless
 * `evenWithNoWorkers`.
 */
export async function findOrphanedTasks(
  kysely: Kysely<PgqDatabase>,
  options: { tasks?: readonly string[]; evenWithNoWorkers?: boolean } = {},
): Promise<OrphanedTask[]> {
  const rows = await orphanedTasksQuery(kysely, options).execute();
  return rows.map((r) => ({ task: r.task, queue: r.queue, jobs: Number(r.jobs), reason: r.known ? 'queue-not-served' : 'unknown-task' }));
}

/** The statement of `findOrphanedTasks` (EXPLAIN-tested). */
export function orphanedTasksQuery(kysely: Kysely<PgqDatabase>, options: { tasks?: readonly string[]; evenWithNoWorkers?: boolean } = {}) {
  // Subqueries through the builder, not raw SQL, so `workers` gets pgq's schema.
  const live = sql<boolean>`(w.lease_expires_at IS NULL OR w.lease_expires_at > now())`;
  const knows = sql<boolean>`(w.tasks IS NULL OR j.task = ANY(w.tasks))`;
  // Waiting jobs counted by task and queue first, then each pair checked
  // against the workers: checked job by job, a table of 250,000 waiting
  // jobs took 0.7–1.5 s (the leader asks every orphanCheckMs).
  let waiting = kysely
    .selectFrom('jobs')
    .select(['task', 'queue', (eb) => eb.fn.countAll<string>().as('jobs')])
    .where('state', 'in', ['available', 'scheduled', 'retryable'])
    .groupBy(['task', 'queue']);
  if (options.tasks) waiting = waiting.where('task', 'in', options.tasks.length > 0 ? [...options.tasks] : ['']);
  let query = kysely
    .selectFrom(waiting.as('j'))
    .select(['j.task', 'j.queue', 'j.jobs'])
    .select((eb) => eb.exists(eb.selectFrom('workers as w').select(sql`1`.as('one')).where(live).where(knows)).as('known'))
    .where((eb) =>
      eb.not(eb.exists(eb.selectFrom('workers as w').select(sql`1`.as('one')).where(live).where(knows).where(sql<boolean>`j.queue = ANY(w.queues)`))),
    )
    .orderBy('j.task')
    .orderBy('j.queue');
  if (!options.evenWithNoWorkers) query = query.where((eb) => eb.exists(eb.selectFrom('workers as w').select(sql`1`.as('one')).where(live)));
  return query;
}

/** The sentence pgq logs and prints about an orphaned task. */
export function describeOrphan(o: OrphanedTask): string {
  const jobs = `${o.jobs} job${o.jobs === 1 ? '' : 's'} of task ${o.task} wait${o.jobs === 1 ? 's' : ''} in queue ${o.queue}`;
  return o.reason === 'unknown-task'
    ? `${jobs}; no live worker knows task ${o.task}`
    : `${jobs}; the live workers that know task ${o.task} do not serve queue ${o.queue}`;
}
