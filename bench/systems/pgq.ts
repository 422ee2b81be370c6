/**
 * pgq through its public API, with its defaults: `enqueue` / `enqueueMany`,
 * and `pgq.worker({ concurrency })` with nothing else set.
 */
import { z } from 'zod';
import { Pgq, defineTask } from '../../src/index.js';
import type { Consumer, ConsumerOptions, Payload, Probe, Producer, RunEnv, System } from '../lib/types.js';
import { sqlProbe } from '../lib/sql-probe.js';

const payloadSchema = z.object({ i: z.number().int(), t: z.number().optional() });

function noopTask(onJob: (payload: Payload) => void) {
  return defineTask({
    name: 'bench-noop',
    schema: payloadSchema,
    handler(payload) {
      onJob(payload);
      return null;
    },
  });
}


export const pgqSystem: System = {
  name: 'pgq',
  settings: 'defaults: new Pgq({ connectionString }), pgq.worker({ concurrency })',
  backend: 'postgres',
  packageName: null,

  async migrate(env: RunEnv): Promise<void> {
    const pgq = new Pgq({ connectionString: env.databaseUrl });
    try {
      await pgq.migrate();
    } finally {
      await pgq.close();
    }
  },

  async producer(env: RunEnv, options: { poolSize: number }): Promise<Producer> {
    const task = noopTask(() => undefined);
    const pgq = new Pgq({ connectionString: env.databaseUrl, tasks: [task], poolSize: options.poolSize });
    // Its pool's connections open before the first enqueue (workers do this in start()).
    await pgq.warmUp();
    return {
      async add(payload) {
        await pgq.enqueue(task, payload);
      },
      async addMany(payloads) {
        await pgq.enqueueMany(task, payloads);
      },
      close: () => pgq.close(),
    };
  },

  async consumer(env: RunEnv, options: ConsumerOptions): Promise<Consumer> {
    const task = noopTask(options.onJob);
    const pgq = new Pgq({ connectionString: env.databaseUrl, tasks: [task] });
    const worker = pgq.worker({ concurrency: options.concurrency });
    return {
      start: () => worker.start(),
      async stop() {
        await worker.stop();
        await pgq.close();
      },
    };
  },

  async probe(env: RunEnv): Promise<Probe> {
    return sqlProbe(env, {
      total: `SELECT count(*)::int AS n FROM pgq.jobs`,
      finished: `SELECT count(*)::int AS n FROM pgq.jobs WHERE state = 'succeeded'`,
    });
  },
};
