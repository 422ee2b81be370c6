/**
 * The one way pgq cancels jobs outside a worker (cancelJob, cancelJobs,
 * cancelWorkflow): in the caller's transaction, on rows it has locked.
 */
import type { Kysely } from 'kysely';
import { sql } from '../db/kysely.js';
import type { JobState } from '../core/types.js';
import type { PgqDatabase } from '../db/tables.js';
import { donePayloads, type ChannelNames } from '../notify/channels.js';

/**
 * Cancels jobs that are locked by the caller's transaction and not final,
 * and tells their waiters, at commit. A running job is asked to stop
 * instead: its worker is told (the handler's signal aborts), and the job
 * stays running, held by that worker, until the attempt ends; whatever it
 * ends with, it ends cancelled (the statements that end attempts read
 * `cancel_requested_at`; so does the rescuer, should the worker's lease
 * lapse first). Until then it still counts against its queue's limits, and
 * retryJob, deleteJob and a new job with its uniqueKey wait for it like for
 * any running job: one attempt of a job at a time.
 */
export async function cancelLockedJobs(
  trx: Kysely<PgqDatabase>,
  channels: ChannelNames,
  jobs: readonly { id: string; state: JobState }[],
): Promise<void> {
  if (jobs.length === 0) return;
  const running = jobs.filter((job) => job.state === 'running').map((job) => job.id);
  const waiting = jobs.filter((job) => job.state !== 'running').map((job) => job.id);
  if (waiting.length > 0) {
    await trx
      .updateTable('jobs')
      .set({ state: 'cancelled', finished_at: sql`now()` })
      .where(sql<boolean>`id = ANY(${waiting}::bigint[])`)
      .execute();
    for (const payload of donePayloads(waiting)) await sql`SELECT pg_notify(${channels.done}, ${payload})`.execute(trx);
  }
  if (running.length > 0) {
    await trx
      .updateTable('jobs')
      .set({ cancel_requested_at: sql`coalesce(cancel_requested_at, now())` })
      .where(sql<boolean>`id = ANY(${running}::bigint[])`)
      .execute();
    for (const id of running) await sql`SELECT pg_notify(${channels.cancel}, ${id})`.execute(trx);
  }
}
