/**
 * Registered workers as an operator sees them: the `workers` rows, how many jobs
 * each holds now (read through jobs_state_queue_idx), and which one holds the
 * maintenance lease.
 */
import type { Kysely } from 'kysely';
import { sql } from '../db/kysely.js';
import type { PgqDatabase } from '../db/tables.js';
import { DEFAULTS } from '../core/defaults.js';

/** One registered worker. */
export interface WorkerInfo {
  id: string;
  hostname: string;
  pid: number;
  queues: string[];
  concurrency: number;
  startedAt: Date;
  lastHeartbeatAt: Date;
  /** Seconds since the last heartbeat, by the database's clock. */
  heartbeatAgeSeconds: number;
  /** Jobs in state `running` held by this worker. */
  runningJobs: number;
  /** Whether it holds the maintenance lease (rescuer, scheduler, pruner) now. */
  isLeader: boolean;
  /**
   * Whether its lease is live. A row whose lease expired is a worker that
   * died (or froze) and whose jobs the leader's rescuer takes back; the row
   * goes with that rescue, and stays while no leader runs.
   */
  live: boolean;
}

/** Every registered worker, longest-running first. */
export async function listWorkers(kysely: Kysely<PgqDatabase>): Promise<WorkerInfo[]> {
  const [workers, running, leader] = await Promise.all([
    kysely
      .selectFrom('workers')
      .selectAll()
      .select(sql<number>`extract(epoch from now() - last_heartbeat_at)::float8`.as('age'))
      // A row of a pgq version before leases has neither lease nor rescue_after_ms: judged by its heartbeat and
      // the default rescueAfterMs, as a leader with default options judges it (the sum was null: listed as dead).
      .select(
        sql<boolean>`coalesce(lease_expires_at, last_heartbeat_at + coalesce(rescue_after_ms, ${DEFAULTS.rescueAfterMs}) * interval '1 millisecond') > now()`.as('live'),
      )
      .orderBy('started_at')
      .orderBy('id')
      .execute(),
    kysely
      .selectFrom('jobs')
      .select((eb) => ['worker_id', eb.fn.countAll<string>().as('n')])
      .where('state', '=', 'running')
      .groupBy('worker_id')
      .execute(),
    kysely.selectFrom('leader').select('leader_id').where('name', '=', 'maintenance').where('expires_at', '>', sql<Date>`now()`).executeTakeFirst(),
  ]);
  const byWorker = new Map(running.map((r) => [r.worker_id, Number(r.n)]));
  return workers.map((w) => ({
    id: w.id,
    hostname: w.hostname,
    pid: w.pid,
    queues: w.queues,
    concurrency: w.concurrency,
    startedAt: w.started_at as unknown as Date,
    lastHeartbeatAt: w.last_heartbeat_at as unknown as Date,
    heartbeatAgeSeconds: Math.max(0, Number(w.age)),
    runningJobs: byWorker.get(w.id) ?? 0,
    isLeader: leader?.leader_id === w.id,
    live: w.live === true,
  }));
}
