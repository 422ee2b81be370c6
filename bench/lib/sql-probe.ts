import pg from 'pg';
import type { Probe, RunEnv } from './types.js';

/** A probe that counts with two SQL statements on one connection. */
export async function sqlProbe(
  env: RunEnv,
  sql: { total: string; finished: string | ((expectedTotal: number) => string) },
  params: unknown[] = [],
): Promise<Probe> {
  const client = new pg.Client({ connectionString: env.databaseUrl });
  client.on('error', (err) => console.error(`bench probe connection error: ${err.message}`));
  await client.connect();
  const count = async (text: string): Promise<number> => {
    const res = await client.query<{ n: number }>(text, params);
    return res.rows[0]?.n ?? 0;
  };
  return {
    total: () => count(sql.total),
    finished: (expectedTotal) => count(typeof sql.finished === 'string' ? sql.finished : sql.finished(expectedTotal)),
    close: () => client.end(),
  };
}
