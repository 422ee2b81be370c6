/**
 * The one interface every benchmarked system implements. A system is a job
 * queue (pgq, a peer, or the SQL floor) driven only through its public API:
 * a producer that enqueues, a consumer that runs no-op jobs, and a probe that
 * counts rows so the harness can check that every job was processed.
 */

/** The payload of every benchmark job. `t` is the enqueue time (epoch ms, sub-ms precision) in latency runs. */
export interface Payload {
  i: number;
  t?: number;
}

/** Where a run's system lives: its own fresh database (and, for Redis, its own key prefix). */
export interface RunEnv {
  /** Connection string of the run's fresh database, as the system under test reaches it (through the delay proxy under --rtt-ms). */
  databaseUrl: string;
  /**
   * The same database reached directly, for what the harness does around the
   * measurement (seeding, probes, an idle transaction). Unset: databaseUrl.
   */
  setupDatabaseUrl?: string;
  redisUrl: string;
  /** Unique per run: Redis key prefix / queue name suffix. */
  runId: string;
}

export interface Producer {
  /** Enqueues one job (one call of the system's single-enqueue API). */
  add(payload: Payload): Promise<void>;
  /** Enqueues a batch with the system's bulk API in one call. */
  addMany(payloads: Payload[]): Promise<void>;
  close(): Promise<void>;
}

export interface ConsumerOptions {
  concurrency: number;
  /** Called at the start of each job's handler. */
  onJob(payload: Payload): void;
  /**
   * I/O-bound jobs: after `onJob`, the handler awaits a timer of this many
   * milliseconds before it returns (the job holds its slot meanwhile, as a
   * handler awaiting a remote call would). 0 or unset: a no-op handler that
   * returns at once, without an `await`. Adapters run the handler body with
   * `runHandler` (lib/handler.ts), so every system does the same work.
   */
  handlerDelayMs?: number;
}

export interface Consumer {
  /** Starts claiming; everything slow (connecting, registering tasks) happened before. */
  start(): Promise<void>;
  /** Stops gracefully: waits for running handlers, writes their completions, closes connections. */
  stop(): Promise<void>;
}

export interface Probe {
  /** Jobs present in any state (enqueue checks). */
  total(): Promise<number>;
  /** Jobs that finished successfully (or were removed on success, for systems that delete). */
  finished(expectedTotal: number): Promise<number>;
  close(): Promise<void>;
}

export interface System {
  /** Key used in reports and ratios, e.g. `graphile-worker-tuned`. */
  readonly name: string;
  /** One line on the settings, for the report. */
  readonly settings: string;
  readonly backend: 'postgres' | 'redis';
  /**
   * For systems that only poll: latency samples wait a random extra time up
   * to this (their polling interval) so they do not phase-lock with the poller.
   */
  readonly latencyJitterMs?: number;
  /** npm package whose version the report lists. */
  readonly packageName: string | null;
  /** Creates the system's schema in a fresh database (run once, into a template database). */
  migrate(env: RunEnv): Promise<void>;
  producer(env: RunEnv, options: { poolSize: number }): Promise<Producer>;
  consumer(env: RunEnv, options: ConsumerOptions): Promise<Consumer>;
  probe(env: RunEnv): Promise<Probe>;
  /**
   * Writes `n` finished (succeeded) jobs straight into the system's table, as
   * a long-running deployment keeps them until retention removes them. Only
   * for systems that keep finished jobs in the table they claim from.
   */
  seedFinished?(env: RunEnv, n: number): Promise<void>;
}
