/**
 * graphile-worker 0.17 through its public API: `makeWorkerUtils().addJob`,
 * `addJobs` for bulk, `run({ taskList, concurrency })`. Two variants:
 * - `graphile-worker`: its defaults (no local queue, no batched completion).
 * - `graphile-worker-tuned`: the settings of its own "Performance" page
 *   (localQueue size 500, completeJobBatchDelay 0, failJobBatchDelay 0,
 *   maxPoolSize 25).
 * graphile-worker deletes a job when it completes, so "finished" is the
 * number of jobs no longer in its table.
 */
import { Logger, makeWorkerUtils, run, runMigrations } from 'graphile-worker';
import type { Runner, RunnerOptions } from 'graphile-worker';
import type { Consumer, ConsumerOptions, Payload, Probe, Producer, RunEnv, System } from '../lib/types.js';
import { runHandler } from '../lib/handler.js';
import { sqlProbe } from '../lib/sql-probe.js';

const TASK = 'bench_noop';

const logger = new Logger(() => (level, message) => {
  if (level === 'error') console.error(`graphile-worker: ${message}`);
});

function graphileSystem(name: string, settings: string, tuned: boolean): System {
  const workerOptions = (env: RunEnv, concurrency: number): RunnerOptions => ({
    connectionString: env.databaseUrl,
    concurrency,
    noHandleSignals: true,
    logger,
    crontab: '',
    ...(tuned
      ? {
          maxPoolSize: 25,
          preset: { worker: { localQueue: { size: 500 }, completeJobBatchDelay: 0, failJobBatchDelay: 0 } },
        }
      : {}),
  });

  return {
    name,
    settings,
    backend: 'postgres',
    packageName: 'graphile-worker',

    async migrate(env: RunEnv): Promise<void> {
      await runMigrations({ connectionString: env.databaseUrl, logger });
    },

    async producer(env: RunEnv, options: { poolSize: number }): Promise<Producer> {
      const utils = await makeWorkerUtils({ connectionString: env.databaseUrl, maxPoolSize: options.poolSize, logger });
      return {
        async add(payload) {
          await utils.addJob(TASK, payload);
        },
        async addMany(payloads) {
          await utils.addJobs(payloads.map((payload) => ({ identifier: TASK, payload })));
        },
        async close() {
          await utils.release();
        },
      };
    },

    async consumer(env: RunEnv, options: ConsumerOptions): Promise<Consumer> {
      let runner: Runner | undefined;
      return {
        async start() {
          runner = await run({
            ...workerOptions(env, options.concurrency),
            taskList: {
              [TASK]: async (payload) => runHandler(options, payload as Payload),
            },
          });
        },
        async stop() {
          await runner?.stop();
        },
      };
    },

    probe(env: RunEnv): Promise<Probe> {
      return sqlProbe(env, {
        total: `SELECT count(*)::int AS n FROM graphile_worker._private_jobs`,
        finished: (expected) => `SELECT (${Number(expected)} - count(*))::int AS n FROM graphile_worker._private_jobs`,
      });
    },
  };
}

export const graphileWorkerSystem = graphileSystem(
  'graphile-worker',
  'defaults: run({ concurrency }) — no local queue, unbatched completion, maxPoolSize 10',
  false,
);

export const graphileWorkerTunedSystem = graphileSystem(
  'graphile-worker-tuned',
  'its Performance page: localQueue.size 500, completeJobBatchDelay 0, failJobBatchDelay 0, maxPoolSize 25',
  true,
);
