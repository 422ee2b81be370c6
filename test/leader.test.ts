/**
 * The leader election on its own (LeaderElector over a worker row this file
 * writes), where the worker-level tests cannot hold one part of it up: a
 * leader-only service slow to start, an election statement that does not
 * answer. In both, a second worker may take the lease once it lapses, so the
 * first must renew on, or step down in time.
 */
import { describe, expect, it } from 'vitest';
import type { Service } from '../src/core/service.js';
import { systemClock } from '../src/core/clock.js';
import { LeaderElector } from '../src/maintenance/leader.js';
import { until, useTestSchema } from './support/harness.js';

const ctx = useTestSchema('leader');

/** A registered worker row to run the election under; its registration as the text PostgreSQL gives (microseconds kept). */
async function registered(id: string): Promise<string> {
  const { rows } = await ctx.admin.query<{ started_at: string }>(
    `INSERT INTO "${ctx.schema}".workers (id, hostname, pid, queues, concurrency, rescue_after_ms, lease_expires_at)
     VALUES ($1, 'here', 1, '{q}', 1, 1000, now() + interval '1 hour') RETURNING started_at::text`,
    [id],
  );
  return rows[0]!.started_at;
}

async function electorOf(id: string, services: Service[]): Promise<LeaderElector> {
  const pgq = await ctx.migrated({ tasks: [] });
  const registeredAt = await registered(id);
  return new LeaderElector(
    { identity: () => ({ workerId: id, registeredAt }), heartbeatMs: 100, rescueAfterMs: 1_000 },
    pgq.kysely,
    async () => undefined,
    services,
    systemClock,
    pgq.logger,
  );
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('leader election', () => {
  it('renews its lease while a leader-only service is still starting (it stopped renewing, and its lease lapsed while it still led)', async () => {
    let release: (() => void) | undefined;
    const slow: Service = { start: () => new Promise<void>((resolve) => (release = resolve)), stop: async () => undefined };
    const elector = await electorOf('slow-start', [slow]);
    await elector.start();
    try {
      await until(() => elector.isLeader, { what: 'the elector to lead' });
      await sleep(2_500); // two and a half lease lengths
      const { rows } = await ctx.admin.query<{ leader_id: string; live: boolean }>(`SELECT leader_id, expires_at > now() AS live FROM "${ctx.schema}".leader`);
      expect(rows).toEqual([{ leader_id: 'slow-start', live: true }]);
      expect(elector.isLeader).toBe(true);
    } finally {
      release?.();
      await elector.stop();
    }
  });

  it('steps down when its lease may have passed even while its renewal is held up, and leads again only once its services have stopped', async () => {
    const events: string[] = [];
    const service: Service = {
      start: async () => void events.push('start'),
      // A slow stop (a maintenance pass giving up): no leadership may be taken up again meanwhile.
      stop: async () => {
        events.push('stop');
        await sleep(1_500);
        events.push('stopped');
      },
    };
    const elector = await electorOf('held-renewal', [service]);
    await elector.start();
    const holder = await ctx.admin.connect();
    let watching = true;
    const ledWhileStopping: string[] = [];
    const watch = (async () => {
      while (watching) {
        if (elector.isLeader && events.at(-1) === 'stop') ledWhileStopping.push(`leader after ${events.join(',')}`);
        await sleep(5);
      }
    })();
    try {
      await until(() => elector.isLeader, { what: 'the elector to lead' });
      // The leader row locked: the renewal waits (on pgq's pool it would be given up after a heartbeat).
      await holder.query('BEGIN');
      await holder.query(`SELECT 1 FROM "${ctx.schema}".leader FOR UPDATE`);
      // Its trust window is 900 ms from the last renewal sent: it must not lead past it while the lock is held.
      await until(() => !elector.isLeader, { what: 'the elector to step down while its renewal waits', timeoutMs: 2_500 });
      expect(events).toEqual(['start', 'stop']);
      // The held renewal now answers "won" while the services are still stopping.
      await holder.query('COMMIT');
      await until(() => elector.isLeader, { what: 'the elector to lead again' });
      expect(events).toEqual(['start', 'stop', 'stopped', 'start']);
      expect(ledWhileStopping).toEqual([]);
    } finally {
      watching = false;
      await watch;
      await holder.query('ROLLBACK').catch(() => undefined);
      holder.release();
      await elector.stop();
    }
  });
});
