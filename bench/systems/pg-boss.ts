/**
 * pg-boss through its public API: `send`, `insert` for bulk, `work`. Runs the
 * project's pg-boss 10 (a default export, `insert(jobs)`) and, under
 * `npm run bench:current`, the newest release (11 and later: a named
 * `PgBoss` export, `insert(name, jobs)`, Node.js 22.12 or newer). pg-boss
 * 10 has no LISTEN/NOTIFY across processes: each `work()` loop polls, and
 * sleeps out the rest of its polling interval after every fetch. Its
 * "concurrency" is the number of `work()` loops times the jobs each handler
 * runs at once. Two variants:
 * - `pg-boss`: defaults — `concurrency` loops of `work(name, handler)`
 *   (batchSize 1, pollingIntervalSeconds 2).
 * - `pg-boss-tuned`: 4 loops of `work(name, { batchSize: 1000,
 *   pollingIntervalSeconds: 0.5 })` (0.5 s is its minimum), each handler
 *   running its batch at most concurrency/4 at a time.
 */
import type PgBoss from 'pg-boss';
import type { Consumer, ConsumerOptions, Payload, Probe, Producer, RunEnv, System } from '../lib/types.js';
import { runHandler } from '../lib/handler.js';
import { sqlProbe } from '../lib/sql-probe.js';

const QUEUE = 'bench-noop';

type BossClass = new (options: PgBoss.ConstructorOptions) => PgBoss;
/** pg-boss 10 exports its class as the default; 11 and later as `PgBoss`, with `insert(name, jobs)`. */
const bossModule = (await import('pg-boss')) as unknown as { default?: BossClass; PgBoss?: BossClass };
const BossConstructor = (bossModule.PgBoss ?? bossModule.default)!;
const insertTakesName = bossModule.PgBoss !== undefined;

async function insertAll(boss: PgBoss, payloads: readonly Payload[]): Promise<void> {
  if (insertTakesName) {
    await (boss as unknown as { insert(name: string, jobs: { data: object }[]): Promise<unknown> }).insert(
      QUEUE,
      payloads.map((data) => ({ data })),
    );
  } else {
    await boss.insert(payloads.map((data) => ({ name: QUEUE, data })));
  }
}

async function startBoss(env: RunEnv, max: number, workerSide: boolean): Promise<PgBoss> {
  const boss = new BossConstructor({
    connectionString: env.databaseUrl,
    max,
    // Producers only send; their maintenance and cron timers are not part of the measurement.
    ...(workerSide ? {} : { supervise: false, schedule: false }),
  });
  boss.on('error', (err: unknown) => console.error('pg-boss error', err));
  await boss.start();
  return boss;
}

/** Runs `fn` over `items` with at most `limit` at once. */
async function eachLimit<T>(items: readonly T[], limit: number, fn: (item: T) => void | Promise<void>): Promise<void> {
  let next = 0;
  const lanes = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const item = items[next++]!;
      await fn(item);
    }
  });
  await Promise.all(lanes);
}

function makePgBossSystem(name: string, settings: string, tuned: boolean): System {
  return {
    name,
    settings,
    backend: 'postgres',
    packageName: 'pg-boss',
    latencyJitterMs: tuned ? 500 : 2_000,

    async migrate(env: RunEnv): Promise<void> {
      const boss = await startBoss(env, 2, false);
      try {
        await boss.createQueue(QUEUE);
      } finally {
        await boss.stop({ graceful: false, wait: true });
      }
    },

    async producer(env: RunEnv, options: { poolSize: number }): Promise<Producer> {
      const boss = await startBoss(env, options.poolSize, false);
      return {
        async add(payload) {
          await boss.send(QUEUE, payload);
        },
        async addMany(payloads) {
          await insertAll(boss, payloads);
        },
        close: () => boss.stop({ graceful: false, wait: true }),
      };
    },

    async consumer(env: RunEnv, options: ConsumerOptions): Promise<Consumer> {
      const boss = await startBoss(env, 10, true);
      const run = (job: PgBoss.Job<object>): void | Promise<void> => runHandler(options, job.data as Payload);
      return {
        async start() {
          if (tuned) {
            const loops = Math.min(4, options.concurrency);
            const perLoop = Math.max(1, Math.floor(options.concurrency / loops));
            for (let k = 0; k < loops; k += 1) {
              await boss.work<object>(QUEUE, { batchSize: 1_000, pollingIntervalSeconds: 0.5 }, async (jobs) => {
                await eachLimit(jobs, perLoop, run);
              });
            }
          } else {
            for (let k = 0; k < options.concurrency; k += 1) {
              await boss.work<object>(QUEUE, async (jobs) => {
                await Promise.all(jobs.map(run));
              });
            }
          }
        },
        async stop() {
          await boss.stop({ graceful: true, wait: true, timeout: 5_000 });
        },
      };
    },

    probe(env: RunEnv): Promise<Probe> {
      return sqlProbe(env, {
        total: `SELECT count(*)::int AS n FROM pgboss.job WHERE name = '${QUEUE}'`,
        finished: `SELECT count(*)::int AS n FROM pgboss.job WHERE name = '${QUEUE}' AND state = 'completed'`,
      });
    },
  };
}

export const pgBossSystem = makePgBossSystem(
  'pg-boss',
  'defaults: `concurrency` × work(name, handler) — batchSize 1, pollingIntervalSeconds 2',
  false,
);

export const pgBossTunedSystem = makePgBossSystem(
  'pg-boss-tuned',
  '4 × work(name, { batchSize: 1000, pollingIntervalSeconds: 0.5 }), each batch run concurrency/4 at a time',
  true,
);
