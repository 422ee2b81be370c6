/**
 * BullMQ through its public API: `Queue.add`, `Queue.addBulk`,
 * `new Worker(name, processor, { concurrency })`, all defaults (completed
 * jobs are kept, as pgq keeps its rows). Two backends:
 * - `bullmq`: Redis (the local server), each run under its own key prefix.
 * - `bullmq-pg`: BullMQ 6's PostgreSQL backend (`createPostgresBackend`),
 *   each run in its own fresh database like the other PostgreSQL systems.
 */
import { Queue, Worker, createPostgresBackend } from 'bullmq';
import type { ConnectionOptions, JobType, QueueOptions, WorkerOptions } from 'bullmq';
import type { Consumer, ConsumerOptions, Payload, Probe, Producer, RunEnv, System } from '../lib/types.js';
import { runHandler } from '../lib/handler.js';

const QUEUE = 'bench-noop';
const COUNTED: JobType[] = ['waiting', 'active', 'completed', 'failed', 'delayed', 'prioritized', 'waiting-children'];

function redisConnection(env: RunEnv): ConnectionOptions {
  const url = new URL(env.redisUrl);
  return { host: url.hostname, port: Number(url.port || 6379) };
}

/** What the harness uses of a Queue and a Worker, whichever backend's generic types they carry. */
interface QueueLike {
  waitUntilReady(): Promise<unknown>;
  add(name: string, data: Payload): Promise<unknown>;
  addBulk(jobs: { name: string; data: Payload }[]): Promise<unknown>;
  getJobCounts(...types: JobType[]): Promise<Record<string, number>>;
  close(): Promise<void>;
}
interface WorkerLike {
  on(event: 'error', listener: (err: Error) => void): unknown;
  waitUntilReady(): Promise<unknown>;
  run(): Promise<unknown>;
  close(): Promise<void>;
}

/** Builds a queue or worker on the chosen backend; the two backends take different constructor arguments. */
interface Backend {
  queue(env: RunEnv, migrate?: boolean): QueueLike;
  worker(env: RunEnv, processor: (data: Payload) => void | Promise<void>, concurrency: number): WorkerLike;
}

const redisBackend: Backend = {
  queue: (env) => new Queue(QUEUE, { connection: redisConnection(env), prefix: `bench-${env.runId}` }),
  worker: (env, processor, concurrency) =>
    new Worker(QUEUE, async (job) => processor(job.data as Payload), {
      connection: redisConnection(env),
      prefix: `bench-${env.runId}`,
      concurrency,
      autorun: false,
    }),
};

const postgresBackend: Backend = {
  queue: (env, migrate = false) =>
    new Queue(
      QUEUE,
      { connection: { connectionString: env.databaseUrl, ...(migrate ? { migrate: true } : {}) } } as QueueOptions<never>,
      createPostgresBackend,
    ),
  worker: (env, processor, concurrency) =>
    new Worker(
      QUEUE,
      async (job) => processor(job.data as Payload),
      { connection: { connectionString: env.databaseUrl }, concurrency, autorun: false } as WorkerOptions<never>,
      createPostgresBackend,
    ),
};

function bullSystem(name: string, settings: string, backendKind: 'redis' | 'postgres', backend: Backend): System {
  return {
    name,
    settings,
    backend: backendKind,
    packageName: 'bullmq',

    async migrate(env: RunEnv): Promise<void> {
      if (backendKind === 'redis') return;
      const queue = backend.queue(env, true);
      await queue.waitUntilReady();
      await queue.close();
    },

    async producer(env: RunEnv): Promise<Producer> {
      const queue = backend.queue(env);
      await queue.waitUntilReady();
      return {
        async add(payload) {
          await queue.add('noop', payload);
        },
        async addMany(payloads) {
          await queue.addBulk(payloads.map((data) => ({ name: 'noop', data })));
        },
        close: () => queue.close(),
      };
    },

    async consumer(env: RunEnv, options: ConsumerOptions): Promise<Consumer> {
      const worker = backend.worker(env, (data) => runHandler(options, data), options.concurrency);
      worker.on('error', (err) => console.error(`${name} worker error`, err));
      await worker.waitUntilReady();
      let running: Promise<void> | undefined;
      return {
        async start() {
          running = worker.run().then(
            () => undefined,
            (err: unknown) => console.error(`${name} worker.run failed`, err),
          );
        },
        async stop() {
          await worker.close();
          await running;
        },
      };
    },

    async probe(env: RunEnv): Promise<Probe> {
      const queue = backend.queue(env);
      await queue.waitUntilReady();
      return {
        async total() {
          const counts = await queue.getJobCounts(...COUNTED);
          return Object.values(counts).reduce((a, b) => a + b, 0);
        },
        async finished() {
          return (await queue.getJobCounts('completed')).completed ?? 0;
        },
        close: () => queue.close(),
      };
    },
  };
}

export const bullmqSystem = bullSystem('bullmq', 'Redis backend, defaults: Worker({ concurrency }), completed jobs kept', 'redis', redisBackend);

export const bullmqPgSystem = bullSystem(
  'bullmq-pg',
  'PostgreSQL backend (createPostgresBackend), defaults: Worker({ concurrency })',
  'postgres',
  postgresBackend,
);
