/**
 * What the tools that measure one system at a time in this process share
 * (`bench:drain-cpu`, `bench:latency-stages`): a PostgreSQL to run on
 * (BENCH_DATABASE_URL or DATABASE_URL, else an embedded one), a fresh
 * database per run, rounds with the systems' order rotating, and each
 * system's medians over them.
 */
import pg from 'pg';
import { answers, startEmbedded, type EmbeddedServer } from './embedded.js';
import { median } from './stats.js';

/** The claim statement of pgq (its claim functions) and of graphile-worker (its getJobs update). */
export const CLAIM_STATEMENT = /claim_candidates|claim_limited|update \S+\._private_jobs as jobs/;

export interface BenchServer {
  url: string;
  /** A connection of the tool's own, to the server's default database. */
  admin: pg.Client;
  /** The server's URL with database `name`. */
  dbUrl(name: string): string;
  /** Drops database `name` once the connections of the run before have gone (forcing it could make them emit errors nobody listens to). */
  dropDatabase(name: string): Promise<void>;
  close(): Promise<void>;
}

export async function benchServer(): Promise<BenchServer> {
  let embedded: EmbeddedServer | null = null;
  let url = process.env.BENCH_DATABASE_URL ?? process.env.DATABASE_URL;
  if (!url || !(await answers(url))) {
    embedded = await startEmbedded();
    url = embedded.url;
  }
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  return {
    url,
    admin,
    dbUrl(name) {
      const u = new URL(url);
      u.pathname = `/${name}`;
      return u.toString();
    },
    async dropDatabase(name) {
      for (let attempt = 0; ; attempt++) {
        try {
          await admin.query(`DROP DATABASE IF EXISTS "${name}"`);
          return;
        } catch (err) {
          if (attempt >= 100) throw err;
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      }
    },
    async close() {
      await admin.end();
      await embedded?.stop();
    },
  };
}

/**
 * `rounds` rounds of one run of each system (`once(index)`, index into
 * `names`), the order rotating each round; each run is reported as it ends.
 * Returns each system's runs.
 */
export async function rotatingRounds<R>(
  names: readonly string[],
  rounds: number,
  once: (index: number) => Promise<R>,
  report: (label: string, run: R) => void,
): Promise<Map<string, R[]>> {
  const results = new Map<string, R[]>(names.map((n) => [n, []]));
  for (let round = 0; round < rounds; round++) {
    for (let k = 0; k < names.length; k++) {
      const index = (k + round) % names.length;
      const run = await once(index);
      results.get(names[index]!)!.push(run);
      report(`${names[index]} (round ${round + 1})`, run);
    }
  }
  return results;
}

/** Each field's median over the runs (NaN where there is none). */
export function medians<K extends string>(runs: readonly Record<K, number>[], fields: readonly K[]): Record<K, number> {
  return Object.fromEntries(fields.map((f) => [f, median(runs.map((r) => r[f])) ?? Number.NaN])) as Record<K, number>;
}

/**
 * Writes each system's medians of `fields` over its runs (a row each, by
 * `row`, under `head`), then pgq's ratio to every other system for each of
 * `ratioFields` (called by `names`). Returns the medians.
 */
export function writeMediansAndRatios<K extends string>(
  results: Map<string, Record<K, number>[]>,
  rounds: number,
  head: string,
  fields: readonly K[],
  row: (name: string, m: Record<K, number>) => string,
  ratioFields: readonly K[],
  names: Partial<Record<K, string>>,
): Map<string, Record<K, number>> {
  process.stdout.write(`\nMedians of ${rounds} rounds:\n\n${head}`);
  const all = new Map<string, Record<K, number>>();
  for (const [name, runs] of results) {
    const m = medians(runs, fields);
    all.set(name, m);
    process.stdout.write(row(name, m));
  }
  const pgq = all.get('pgq');
  if (pgq) {
    for (const [name, m] of all) {
      if (name === 'pgq') continue;
      process.stdout.write(`\npgq ÷ ${name}: ${ratioFields.map((f) => `${names[f] ?? f} ${(pgq[f] / m[f]).toFixed(2)}x`).join(', ')}\n`);
    }
  }
  return all;
}
