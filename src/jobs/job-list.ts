/**
 * A page of jobs, newest first: `pgq.listJobs` reads every column, the
 * console's Jobs page reads summaries, without what it never shows. A
 * payload and a result may each be up to `maxPayloadBytes` (1 MiB by
 * default), and a page lists up to 1,000 jobs and is read again at every
 * live refresh: read whole, one page of large jobs was gigabytes held in the
 * console's process for a table of ids, states and the first line of the
 * last error.
 */
import type { Kysely } from 'kysely';
import { ValidationError } from '../core/errors.js';
import { parseJobId } from '../core/ids.js';
import type { JobRecord } from '../core/types.js';
import { sql } from '../db/kysely.js';
import { JOB_COLUMNS, toJobRecord, type JobRow } from '../db/rows.js';
import type { PgqDatabase } from '../db/tables.js';
import { jobFilterCondition, validateJobFilter, type ListJobsFilter } from './job-filter.js';

/** Every column a record is made from but payload, result and errors (the summaries' `errors` hold the last entry only). */
export const SUMMARY_COLUMNS = [
  ...JOB_COLUMNS.filter((c): c is Exclude<(typeof JOB_COLUMNS)[number], 'payload' | 'result' | 'errors'> => c !== 'payload' && c !== 'result' && c !== 'errors'),
  'progress',
  'progress_at',
  'cancel_requested_at',
] as const;

/** What stands for payload, result and errors in a summary. */
export const SUMMARY_EXTRAS = [
  sql<unknown>`NULL::jsonb`.as('payload'),
  sql<unknown>`NULL::jsonb`.as('result'),
  sql<unknown>`CASE WHEN jsonb_array_length(errors) > 0 THEN jsonb_build_array(errors -> -1) ELSE '[]'::jsonb END`.as('errors'),
];

/**
 * The jobs matching the filter, newest first, a page of `limit` (default 50,
 * at most 1,000) before `before`. As `summaries`, `payload` and `result` are
 * null and `errors` holds the last entry only.
 */
export async function listJobPage(kysely: Kysely<PgqDatabase>, filter: ListJobsFilter, summaries: boolean): Promise<JobRecord[]> {
  validateJobFilter(filter, true);
  const limit = filter.limit ?? 50;
  if (!Number.isInteger(limit) || limit < 1 || limit > 1_000) throw new ValidationError('limit', 'must be an integer from 1 to 1000');
  const jobs = kysely.selectFrom('jobs');
  // Every column of the record but the three replaced, named (selectAll would read them, whatever replaced them).
  let query = (summaries ? jobs.select(SUMMARY_COLUMNS).select(SUMMARY_EXTRAS) : jobs.selectAll())
    .where((eb) => jobFilterCondition(eb, filter))
    .orderBy('id', 'desc')
    .limit(limit);
  if (filter.before !== undefined) query = query.where('id', '<', parseJobId(filter.before, 'before'));
  const rows = await query.execute();
  return rows.map((r) => toJobRecord(r as unknown as JobRow));
}
