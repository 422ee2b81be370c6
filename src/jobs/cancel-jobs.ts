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
 * Cancels jobs that are locked by the caller's transaction and not final;
 * tells the workers of the running ones (their signals abort) and the
 * waiters of all of them, at commit.
 */
export async function cancelLockedJobs(
  trx: Kysely<PgqDatabase>,
  channels: ChannelNames,
  jobs: readonly { id: string; state: JobState }[],
): Promise<void> {
  if (jobs.length === 0) return;
  const ids = jobs.map((job) => job.id);
  await trx
    .updateTable('jobs')
    .set({ state: 'cancelled', finished_at: sql`now()` })
    .where(sql<boolean>`id = ANY(${ids}::bigint[])`)
    .execute();
  for (const job of jobs) if (job.state === 'running') await sql`SELECT pg_notify(${channels.cancel}, ${job.id})`.execute(trx);
  for (const payload of donePayloads(ids)) await sql`SELECT pg_notify(${channels.done}, ${payload})`.execute(trx);
}
