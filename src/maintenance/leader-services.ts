/**
 * The maintenance a worker runs while it leads, assembled in this one place:
 * the rescuer, the scheduler, the expirer, the orphan reporter, and the
 * pruner unless retention is off. The leader elector starts them when this
 * worker gains leadership and stops them when it loses it.
 */
import type { Kysely } from 'kysely';
import type { TaskRegistry } from '../task.js';
import type { ResolvedWorkerOptions } from '../config.js';
import type { Clock } from '../core/clock.js';
import { DEFAULTS } from '../core/defaults.js';
import type { Logger } from '../core/logger.js';
import type { Service } from '../core/service.js';
import type { Queryable } from '../db/queryable.js';
import type { QueueStatements } from '../db/queue-statements.js';
import type { HotStatements } from '../db/statements.js';
import type { PgqDatabase } from '../db/tables.js';
import type { MiddlewareChain } from '../middleware.js';
import type { Listener } from '../notify/listener.js';
import { Expirer } from './expirer.js';
import { OrphanReporter } from './orphan-reporter.js';
import { Pruner } from './pruner.js';
import { Rescuer } from './rescuer.js';
import { Scheduler } from './scheduler.js';

export interface LeaderServicesDeps {
  kysely: Kysely<PgqDatabase>;
  /**
   * The same database on a lane of the pool (db/pool.ts), for the services
   * whose passes may wait their turn: the rescuer, the expirer, the orphan
   * report and the pruner. The scheduler, which fires on time and runs the
   * enqueue middleware inside its transaction, uses `kysely`.
   */
  maintenance: { db: Queryable; kysely: Kysely<PgqDatabase> };
  statements: HotStatements;
  queueStatements: QueueStatements;
  listener: Listener;
  schema: string;
  clock: Clock;
  logger: Logger;
  /** The worker's tasks (a schedule's jobs take their task's concurrencyKey and expiresInMs). */
  tasks?: TaskRegistry;
  /** Enqueue middleware the scheduler's jobs go through. */
  middleware?: MiddlewareChain;
}

/** Expired jobs are looked for once a second, at most this many per statement. */
export const EXPIRER = { intervalMs: 1_000, batchSize: 1_000 };

/** The leader-only services of a worker with these options, the rescuer first. */
export function leaderServices(options: ResolvedWorkerOptions, deps: LeaderServicesDeps): Service[] {
  const { kysely, statements, queueStatements, clock, logger } = deps;
  const lane = deps.maintenance;
  const services: Service[] = [
    new Rescuer(
      { rescueAfterMs: options.rescueAfterMs, intervalMs: Math.max(10, Math.min(options.heartbeatMs, options.rescueAfterMs / 4)) },
      lane.db,
      statements,
      logger,
    ),
    new Scheduler(
      { maxSleepMs: DEFAULTS.schedule.schedulerMaxSleepMs },
      { kysely, statements, clock, logger, listener: deps.listener, schema: deps.schema, middleware: deps.middleware, tasks: deps.tasks },
    ),
    new Expirer(EXPIRER, lane.db, queueStatements, logger),
    new OrphanReporter(options.orphanCheckMs, lane.kysely, logger),
  ];
  if (options.retention) services.push(new Pruner(options.retention, lane.kysely, logger));
  return services;
}
