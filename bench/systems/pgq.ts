/**
 * pgq through its public API, with its defaults: `enqueue` / `enqueueMany`,
 * and `pgq.worker({ concurrency })` with nothing else set. The handler is
 * synchronous for no-op jobs and `async` (awaiting the timer) for I/O-bound
 * ones.
 */
import { z } from 'zod';
import { Pgq, defineTask, tracing, type Middleware } from '../lib/pgq.js';
import type { Consumer, ConsumerOptions, Probe, Producer, RunEnv, System } from '../lib/types.js';
import { runHandler, type HandlerOptions } from '../lib/handler.js';
import pg from 'pg';
import { sqlProbe } from '../lib/sql-probe.js';

const payloadSchema = z.object({ i: z.number().int(), t: z.number().optional() });

function noopTask(options: HandlerOptions) {
  return defineTask({
    name: 'bench-noop',
    schema: payloadSchema,
    handler: options.handlerDelayMs
      ? async (payload) => {
          await runHandler(options, payload);
          return null;
        }
      : (payload) => {
          options.onJob(payload);
          return null;
        },
  });
}

/** pgq's adapter; `middleware` makes every Pgq of the run with it (the traced variant). */
function pgqAdapter(name: string, settings: string, middleware: () => Promise<Middleware[]>, keepNone = false): System {
  return {
    name,
    settings,
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
      const task = noopTask({ onJob: () => undefined });
      const pgq = new Pgq({ connectionString: env.databaseUrl, tasks: [task], poolSize: options.poolSize, middleware: await middleware() });
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
      const task = noopTask(options);
      const pgq = new Pgq({ connectionString: env.databaseUrl, tasks: [task], middleware: await middleware() });
      const worker = pgq.worker({ concurrency: options.concurrency, ...(keepNone ? { retention: { succeededMs: 0 } } : {}) });
      return {
        start: () => worker.start(),
        async stop() {
          await worker.stop();
          await pgq.close();
        },
      };
    },

    probe: (env) => probe(env, keepNone),

    async seedFinished(env: RunEnv, n: number): Promise<void> {
      const client = new pg.Client({ connectionString: env.setupDatabaseUrl ?? env.databaseUrl });
      await client.connect();
      try {
        // Spread over the last day, as a day of retention would leave them;
        // negative ids keep them apart from the run's own jobs (see probe()).
        await client.query(
          `INSERT INTO pgq.jobs (id, task, queue, payload, state, attempts, run_at, created_at, started_at, finished_at)
           SELECT -g, 'bench-finished', 'default', jsonb_build_object('i', g), 'succeeded', 1, t, t, t, t
             FROM generate_series(1, $1::int) AS g, LATERAL (SELECT now() - (g::float8 / $1) * interval '1 day' AS t) AS at`,
          [n],
        );
        await client.query('VACUUM ANALYZE pgq.jobs');
      } finally {
        await client.end();
      }
    },
  };
}

export const pgqSystem: System = pgqAdapter('pgq', 'its build (dist/); defaults: new Pgq({ connectionString }), pgq.worker({ concurrency })', async () => []);

/**
 * Opt-in (`--systems pgq,pgq-traced`): the same with the OpenTelemetry
 * middleware and no SDK registered, as an application that ships tracing
 * but has it switched off: what the spans cost when nobody records them.
 */
export const pgqTracedSystem: System = pgqAdapter(
  'pgq-traced',
  "defaults plus middleware: [await tracing()] (pgq/otel), no OpenTelemetry SDK registered",
  async () => [await tracing()],
);

/**
 * Opt-in (`--systems pgq,pgq-keep-none`): `retention: { succeededMs: 0 }`, so
 * a job that succeeds is deleted by the statement that records it (as
 * graphile-worker deletes its jobs), instead of kept for a day.
 */
export const pgqKeepNoneSystem: System = pgqAdapter(
  'pgq-keep-none',
  'defaults plus pgq.worker({ concurrency, retention: { succeededMs: 0 } }): a job that succeeds is deleted as it completes',
  async () => [],
  true,
);

function probe(env: RunEnv, keepNone: boolean): Promise<Probe> {
  if (keepNone) {
    // Succeeded jobs are deleted: what is left of the run's own jobs (positive ids) is what has not finished.
    return sqlProbe(env, {
      total: `SELECT count(*)::int AS n FROM pgq.jobs WHERE id > 0`,
      finished: (expected) => `SELECT (${Number(expected)} - count(*))::int AS n FROM pgq.jobs WHERE id > 0`,
    });
  }
  return sqlProbe(env, {
    // The run's own jobs: those seeded as finished (drain-finished) have
    // negative ids, so both counts read the primary key's positive range.
    // `finished_at IS NOT NULL` lets the finished count read
    // jobs_state_finished_idx where that is the smaller range: with a
    // million jobs waiting (drain-backlog) the count was otherwise a
    // parallel sequential scan of the table (180 ms and three backends on
    // two cores, asked in a loop while the drain was timed); with a million
    // finished ones kept (drain-finished) it still reads the positive ids.
    total: `SELECT count(*)::int AS n FROM pgq.jobs WHERE id > 0`,
    finished: `SELECT count(*)::int AS n FROM pgq.jobs WHERE state = 'succeeded' AND finished_at IS NOT NULL AND id > 0`,
  });
}
