/**
 * The heartbeat registers the worker and renews its row every `heartbeatMs`;
 * that row is the lease on every job the worker holds. If a renewal finds the
 * row gone, the rescuer has already given this worker's jobs to others: the
 * running handlers are told (`onLeaseLost`) and their outcomes are discarded.
 */
import os from 'node:os';
import type { Logger } from '../core/logger.js';
import { LoopService } from '../core/service.js';
import { sleep } from '../core/sleep.js';
import { errorMessage, errorSummary } from '../core/errors.js';
import type { SqlExecutor } from '../db/executor.js';
import type { HotStatements } from '../db/statements.js';

export interface HeartbeatConfig {
  workerId: string;
  queues: readonly string[];
  concurrency: number;
  heartbeatMs: number;
}

export class Heartbeat extends LoopService {
  constructor(
    private readonly config: HeartbeatConfig,
    private readonly db: SqlExecutor,
    private readonly statements: HotStatements,
    private readonly onLeaseLost: () => void,
    logger: Logger,
  ) {
    super('heartbeat', logger);
  }

  /** Registers the worker row; the first beat, done before the worker claims anything. */
  async register(): Promise<void> {
    await this.#beat();
  }

  protected async run(signal: AbortSignal): Promise<void> {
    let failing = false;
    while (!signal.aborted) {
      await sleep(this.config.heartbeatMs, signal);
      if (signal.aborted) break;
      try {
        const { inserted } = await this.#beat();
        if (failing) this.logger.info({}, 'pgq heartbeat recovered');
        failing = false;
        if (inserted) {
          this.logger.warn({}, 'pgq worker missed its heartbeat deadline; its running jobs were rescued elsewhere');
          this.onLeaseLost();
        }
      } catch (err) {
        if (!failing) this.logger.warn({ err: errorSummary(err) }, `pgq heartbeat failed: ${errorMessage(err)}`);
        failing = true;
      }
    }
  }

  #beat(): Promise<{ inserted: boolean }> {
    return this.statements.heartbeat(this.db, {
      workerId: this.config.workerId,
      hostname: os.hostname(),
      pid: process.pid,
      queues: [...this.config.queues],
      concurrency: this.config.concurrency,
    });
  }
}
