/**
 * Steady load with retention on, for a long time: do the jobs table and its
 * indexes stay flat once retention has started deleting? `npm run bench:steady`.
 *
 * Starts an embedded PostgreSQL with production defaults (autovacuum on,
 * fsync on), one worker process (concurrency 20, retention of succeeded jobs
 * `--keep-minutes`, pruning every minute) and, in this process, a producer
 * enqueueing `--rate` jobs per second in batches every 100 ms. Every
 * `--sample-seconds` it records the jobs table's heap and index sizes, its
 * live and dead tuples, the jobs processed and autovacuum's runs. At the end
 * it writes a Markdown report with every sample and the verdict: the total
 * size (heap + indexes + TOAST) at the end against the largest size seen in
 * the window that starts one retention period after the first prune (by
 * then the table holds one retention period of rows and PostgreSQL has
 * reused their space at least once).
 *
 * Options: --minutes N (default 60), --rate N jobs/s (default 300),
 * --keep-minutes N (default 5), --sample-seconds N (default 60), --out DIR
 * (default bench/results).
 */
import { fork, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { z } from 'zod';
import { Pgq, defineTask } from './lib/pgq.js';
import { startEmbedded } from './lib/embedded.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const noop = defineTask({ name: 'steady-noop', schema: z.object({ n: z.number() }), handler: () => undefined });

interface Sample {
  atS: number;
  heapMiB: number;
  indexMiB: number;
  totalMiB: number;
  liveRows: number;
  deadRows: number;
  waiting: number;
  processed: number;
  autovacuums: number;
  pruned: boolean;
}

if (process.argv[2] === '--worker') {
  await runWorker(process.argv[3]!, Number(process.argv[4]));
} else {
  await main();
}

async function runWorker(url: string, keepMs: number): Promise<void> {
  const pgq = new Pgq({ connectionString: url, tasks: [noop] });
  const worker = pgq.worker({ concurrency: 20, retention: { succeededMs: keepMs, intervalMs: 60_000 } });
  await worker.start();
  process.on('message', async () => {
    await worker.stop();
    await pgq.close();
    process.exit(0);
  });
  process.send?.('ready');
}

async function main(): Promise<void> {
  const { values: args } = parseArgs({
    options: {
      minutes: { type: 'string', default: '60' },
      rate: { type: 'string', default: '300' },
      'keep-minutes': { type: 'string', default: '5' },
      'sample-seconds': { type: 'string', default: '60' },
      out: { type: 'string', default: path.join(HERE, 'results') },
    },
  });
  const minutes = positive(args.minutes, '--minutes');
  const rate = positive(args.rate, '--rate');
  const keepMs = positive(args['keep-minutes'], '--keep-minutes') * 60_000;
  const sampleMs = positive(args['sample-seconds'], '--sample-seconds') * 1000;

  const server = await startEmbedded();
  let worker: ChildProcess | undefined;
  const pgq = new Pgq({ connectionString: server.url, tasks: [noop] });
  const probe = new pg.Client({ connectionString: server.url });
  try {
    await pgq.migrate();
    await probe.connect();
    const settings = await probe.query<{ name: string; setting: string }>(
      `SELECT name, setting FROM pg_settings WHERE name IN ('autovacuum', 'fsync', 'shared_buffers', 'autovacuum_naptime', 'server_version')`,
    );
    worker = fork(fileURLToPath(import.meta.url), ['--worker', server.url, String(keepMs)], { execArgv: process.execArgv });
    await new Promise<void>((resolve, reject) => {
      worker!.once('message', () => resolve());
      worker!.once('exit', (code) => reject(new Error(`worker exited with ${code} before it was ready`)));
    });

    const started = Date.now();
    const endAt = started + minutes * 60_000;
    let enqueued = 0;
    let n = 0;
    const perTick = rate / 10;
    const producing = (async () => {
      let owed = 0;
      for (let tick = started; Date.now() < endAt; tick += 100) {
        owed += perTick;
        const count = Math.floor(owed);
        owed -= count;
        if (count > 0) {
          await pgq.enqueueMany(noop, Array.from({ length: count }, () => ({ n: n++ })));
          enqueued += count;
        }
        const wait = tick + 100 - Date.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      }
    })();

    const samples: Sample[] = [];
    const sample = async (): Promise<Sample> => {
      const { rows } = await probe.query<Record<string, string>>(`
        SELECT pg_relation_size('pgq.jobs') AS heap,
               pg_indexes_size('pgq.jobs') AS indexes,
               pg_total_relation_size('pgq.jobs') AS total,
               s.n_live_tup AS live, s.n_dead_tup AS dead, s.autovacuum_count AS autovacuums,
               (SELECT count(*) FROM pgq.jobs WHERE state IN ('available', 'scheduled', 'running')) AS waiting,
               (SELECT count(*) FROM pgq.jobs WHERE state = 'succeeded') AS kept
          FROM pg_stat_user_tables s WHERE s.relid = 'pgq.jobs'::regclass`);
      const r = rows[0]!;
      const mib = (v: string | undefined): number => Number(v) / 1024 / 1024;
      const waiting = Number(r.waiting);
      return {
        atS: Math.round((Date.now() - started) / 1000),
        heapMiB: mib(r.heap),
        indexMiB: mib(r.indexes),
        totalMiB: mib(r.total),
        liveRows: Number(r.live),
        deadRows: Number(r.dead),
        waiting,
        processed: enqueued - waiting,
        autovacuums: Number(r.autovacuums),
        // Retention has deleted rows once the table keeps fewer succeeded rows than were processed.
        pruned: Number(r.kept) < enqueued - waiting - rate,
      };
    };
    while (Date.now() < endAt) {
      await new Promise((r) => setTimeout(r, Math.min(sampleMs, Math.max(0, endAt - Date.now()))));
      const s = await sample();
      samples.push(s);
      process.stdout.write(
        `${s.atS}s total ${s.totalMiB.toFixed(1)} MiB (heap ${s.heapMiB.toFixed(1)}, indexes ${s.indexMiB.toFixed(1)}), live ${s.liveRows}, dead ${s.deadRows}, waiting ${s.waiting}, processed ${s.processed}, autovacuums ${s.autovacuums}${s.pruned ? ', pruned' : ''}\n`,
      );
    }
    await producing;
    writeReport(args.out, { minutes, rate, keepMs, sampleMs, settings: settings.rows, samples });
  } finally {
    if (worker && worker.exitCode === null) {
      worker.send('stop');
      await new Promise((r) => worker!.once('exit', r));
    }
    await probe.end().catch(() => undefined);
    await pgq.close();
    await server.stop();
  }
}

function writeReport(
  dir: string,
  run: { minutes: number; rate: number; keepMs: number; sampleMs: number; settings: { name: string; setting: string }[]; samples: Sample[] },
): void {
  const { samples } = run;
  const firstPrune = samples.find((s) => s.pruned);
  const settledAt = firstPrune ? firstPrune.atS + run.keepMs / 1000 : Infinity;
  const settled = samples.filter((s) => s.atS >= settledAt);
  const last = samples.at(-1);
  const maxSettled = settled.length > 0 ? Math.max(...settled.map((s) => s.totalMiB)) : NaN;
  const firstSettled = settled[0];
  const growth = firstSettled && last ? last.totalMiB / firstSettled.totalMiB : NaN;
  const stamp = new Date().toISOString().replace(/:/g, '-').replace(/\.\d+Z$/, 'Z');
  const lines = [
    `# Steady load with retention: ${run.minutes} min at ${run.rate} jobs/s`,
    '',
    `\`npm run bench:steady -- --minutes ${run.minutes} --rate ${run.rate} --keep-minutes ${run.keepMs / 60_000} --sample-seconds ${run.sampleMs / 1000}\`, ${new Date().toISOString()}.`,
    'An embedded PostgreSQL with production defaults (' + run.settings.map((s) => `${s.name} ${s.setting}`).join(', ') + '); one worker process (concurrency 20), retention of succeeded jobs ' +
      `${run.keepMs / 60_000} min pruned every minute; the producer enqueues in batches every 100 ms.`,
    '',
    firstPrune
      ? `First prune seen at ${firstPrune.atS} s; the settled window starts one retention period later, at ${settledAt} s. ` +
        `Total size (heap + indexes + TOAST) at its start ${firstSettled?.totalMiB.toFixed(1) ?? '–'} MiB, largest in it ${maxSettled.toFixed(1)} MiB, at the end ${last?.totalMiB.toFixed(1)} MiB: ` +
        `end ÷ start of the settled window = ${growth.toFixed(3)}.`
      : 'Retention never pruned during the run: no verdict.',
    '',
    '| s | total MiB | heap MiB | indexes MiB | live rows | dead rows | waiting | processed | autovacuums |',
    '|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...samples.map(
      (s) =>
        `| ${s.atS} | ${s.totalMiB.toFixed(1)} | ${s.heapMiB.toFixed(1)} | ${s.indexMiB.toFixed(1)} | ${s.liveRows} | ${s.deadRows} | ${s.waiting} | ${s.processed} | ${s.autovacuums} |`,
    ),
    '',
  ];
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${stamp}-steady-growth.md`);
  fs.writeFileSync(file, lines.join('\n'));
  process.stdout.write(`report: ${file}\n`);
}

function positive(text: string | undefined, name: string): number {
  const n = Number(text);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} must be a positive number, got ${JSON.stringify(text)}`);
  return n;
}
