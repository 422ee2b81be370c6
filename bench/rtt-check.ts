/**
 * Checks the delay proxy (bench/lib/delay-proxy.ts) against a real
 * PostgreSQL before trusting a `--rtt-ms` run: the round trip of `SELECT 1`
 * direct and through the proxy, bytes intact in both directions (a 16 MiB
 * result and a 16 MiB parameter, so backpressure is exercised), and a NOTIFY
 * that crosses it. Prints the proxy's own hold statistics.
 *
 *   node --import tsx bench/rtt-check.ts [--rtt-ms 2] [--samples 300]
 *
 * Environment: BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres).
 */
import { createHash } from 'node:crypto';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { spawnDelayProxy } from './lib/delay-proxy.js';
import { percentile, sleep } from './lib/stats.js';

const { values: args } = parseArgs({ options: { 'rtt-ms': { type: 'string', default: '2' }, samples: { type: 'string', default: '300' } } });
const rttMs = Number(args['rtt-ms']);
const samples = Number(args.samples);
const url = new URL(process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres');

async function roundTrips(connectionString: string): Promise<{ connectMs: number; p50: number; p95: number; mean: number }> {
  const client = new pg.Client({ connectionString });
  const t0 = performance.now();
  await client.connect();
  const connectMs = performance.now() - t0;
  const times: number[] = [];
  try {
    for (let k = 0; k < samples; k += 1) {
      const t = performance.now();
      await client.query('SELECT 1');
      times.push(performance.now() - t);
      await sleep(Math.random() * 3);
    }
  } finally {
    await client.end();
  }
  return { connectMs, p50: percentile(times, 50)!, p95: percentile(times, 95)!, mean: times.reduce((a, b) => a + b, 0) / times.length };
}

async function integrity(connectionString: string): Promise<void> {
  const client = new pg.Client({ connectionString });
  await client.connect();
  try {
    const size = 16 * 2 ** 20;
    const down = await client.query<{ body: string; digest: string }>(
      `SELECT repeat(md5(g::text), $1 / 32) AS body, NULL AS digest FROM generate_series(1, 1) g`,
      [size],
    );
    const body = down.rows[0]!.body;
    const expected = await client.query<{ digest: string }>(`SELECT md5(repeat(md5('1'), $1 / 32)) AS digest`, [size]);
    const got = createHash('md5').update(body).digest('hex');
    if (got !== expected.rows[0]!.digest) throw new Error('server → client: 16 MiB result arrived altered');
    const payload = Array.from({ length: size / 64 }, (_, k) => createHash('sha256').update(String(k)).digest('hex')).join('');
    const up = await client.query<{ digest: string }>('SELECT md5($1::text) AS digest', [payload]);
    if (up.rows[0]!.digest !== createHash('md5').update(payload).digest('hex')) throw new Error('client → server: 16 MiB parameter arrived altered');
  } finally {
    await client.end();
  }
}

async function notifyCrosses(connectionString: string): Promise<number> {
  const listener = new pg.Client({ connectionString });
  const sender = new pg.Client({ connectionString });
  await listener.connect();
  await sender.connect();
  try {
    await listener.query('LISTEN rtt_check');
    const heard = new Promise<number>((resolve) => listener.once('notification', () => resolve(performance.now())));
    const t0 = performance.now();
    await sender.query(`NOTIFY rtt_check, 'x'`);
    const at = await Promise.race([heard, sleep(5_000).then(() => null)]);
    if (at === null) throw new Error('NOTIFY did not arrive through the proxy within 5 s');
    return at - t0;
  } finally {
    await listener.end();
    await sender.end();
  }
}

async function main(): Promise<void> {
  const proxy = await spawnDelayProxy(`${url.hostname}:${url.port || '5432'}`, rttMs / 2);
  try {
    const proxied = new URL(url);
    proxied.hostname = '127.0.0.1';
    proxied.port = String(proxy.port);
    const direct = await roundTrips(url.toString());
    const through = await roundTrips(proxied.toString());
    console.log(`SELECT 1 direct:        p50 ${direct.p50.toFixed(3)} ms, p95 ${direct.p95.toFixed(3)} ms, mean ${direct.mean.toFixed(3)} ms; connect ${direct.connectMs.toFixed(1)} ms`);
    console.log(`SELECT 1 through proxy: p50 ${through.p50.toFixed(3)} ms, p95 ${through.p95.toFixed(3)} ms, mean ${through.mean.toFixed(3)} ms; connect ${through.connectMs.toFixed(1)} ms`);
    console.log(`added round trip, p50: ${(through.p50 - direct.p50).toFixed(3)} ms (asked for ${rttMs} ms)`);
    console.log(`proxy (${proxy.scheduling}) during the round trips:`, await proxy.stats());
    await integrity(proxied.toString());
    console.log('16 MiB each way: intact');
    console.log(`NOTIFY through the proxy: heard after ${(await notifyCrosses(proxied.toString())).toFixed(2)} ms`);
  } finally {
    await proxy.stop();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
