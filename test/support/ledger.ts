import type pg from 'pg';

/**
 * The table the fixture's `ledger` task writes one row per run of its handler
 * into, under an id of the run's own (`run`: a retried write adds no row).
 */
export async function createLedger(admin: pg.Pool, schema: string): Promise<void> {
  await admin.query(`CREATE TABLE IF NOT EXISTS "${schema}".ledger (
    run uuid NOT NULL DEFAULT gen_random_uuid() UNIQUE, job_id bigint NOT NULL, attempt int NOT NULL, pid int NOT NULL,
    started_at timestamptz NOT NULL, finished_at timestamptz)`);
}

/**
 * Pairs of ledger rows of the same job whose run intervals overlap (an
 * unfinished row runs forever), each pair once (by run id): two runs of one
 * attempt number in one process are two rows too.
 */
export async function overlappingRuns(admin: pg.Pool, schema: string): Promise<number> {
  const { rows } = await admin.query<{ n: string }>(`
    SELECT count(*) AS n FROM "${schema}".ledger a JOIN "${schema}".ledger b
      ON a.job_id = b.job_id AND a.run < b.run
     WHERE a.started_at < coalesce(b.finished_at, 'infinity') AND b.started_at < coalesce(a.finished_at, 'infinity')`);
  return Number(rows[0]!.n);
}
