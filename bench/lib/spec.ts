/** What the orchestrator asks one child process to do, and what the child answers. */
import type { RunEnv } from './types.js';

export type ChildSpec =
  | { role: 'migrate'; system: string; env: RunEnv }
  /** An idle process under the same loader, for the RSS every worker process starts from. */
  | { role: 'baseline'; system: string }
  | { role: 'enqueue'; system: string; env: RunEnv; connections: number; durationMs: number; warmup: number }
  | { role: 'enqueue-bulk'; system: string; env: RunEnv; batch: number; durationMs: number; maxCalls: number; warmupCalls: number }
  | {
      role: 'drain';
      system: string;
      env: RunEnv;
      /** Jobs timed: the run ends when this many have finished. */
      jobs: number;
      /** Jobs waiting at the start (default `jobs`): more than `jobs` measures the cost of a large backlog. */
      seedJobs?: number;
      /** Finished jobs written into the table before the drain (systems with `seedFinished`). */
      finishedJobs?: number;
      /** After seeding, VACUUM ANALYZE and CHECKPOINT the database before the timed drain. */
      settle?: boolean;
      /** Keep another session idle in a REPEATABLE READ transaction (opened before seeding) for the whole run. */
      idleTransaction?: boolean;
      concurrency: number;
      processes: number;
      capMs: number;
      /** I/O-bound jobs: each handler awaits a timer this long (ConsumerOptions.handlerDelayMs); unset: no-op jobs. */
      handlerDelayMs?: number;
    }
  | {
      role: 'steady';
      system: string;
      env: RunEnv;
      durationMs: number;
      /** Jobs counted only after this warm-up. */
      warmupMs: number;
      producers: number;
      batch: number;
      /** Producers wait while enqueued − processed is at least this. */
      maxBacklog: number;
      concurrency: number;
    }
  | {
      role: 'latency';
      system: string;
      env: RunEnv;
      samples: number;
      warmup: number;
      budgetMs: number;
      gapMs: number;
      sampleTimeoutMs: number;
      /**
       * First enqueues after start: no warm-up and no settling time; the
       * producer is created once the worker's start() has resolved and its
       * first call is sample 0. The first `coldSamples` are reported apart
       * from the steady state (the second half of the run).
       */
      coldSamples?: number;
    }
  | { role: 'worker'; system: string; env: RunEnv; concurrency: number; report: 'count' | 'latency'; handlerDelayMs?: number };

/** The child's answer: metrics (numbers) plus checks that must hold for the run to count. */
export interface ChildResult {
  ok: boolean;
  metrics: Record<string, number | null>;
  checks: Record<string, boolean | number | string>;
  notes?: string[];
  error?: string;
}

/** Messages between a drain/latency child and its worker processes. */
export type WorkerMessage =
  | { type: 'ready'; rss: number }
  /** The consumer's start() resolved. */
  | { type: 'started' }
  | { type: 'progress'; count: number }
  | { type: 'job'; i: number; latencyMs: number }
  | { type: 'done'; count: number; seen: number[]; rssPeak: number; rssStart: number };

export type ParentMessage = { type: 'go' } | { type: 'stop' };
