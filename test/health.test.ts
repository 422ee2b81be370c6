/**
 * Health checks: worker.health() and the /healthz and /readyz endpoints of
 * `pgq worker --metrics-port`, across a PostgreSQL outage (on a server of
 * this file's own, so stopping it affects no other test).
 */
import type { AddressInfo } from 'node:net';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { Pgq, defineTask, type WorkerHealth, type WorkerLiveness } from '../src/index.js';
import { serveWorkerEndpoints } from '../src/cli/worker-server.js';
import { until, withAppName } from './support/harness.js';
import { startEmbedded, type EmbeddedServer } from './support/embedded.js';

const noop = defineTask({ name: 'noop', schema: z.object({}), handler: () => null });

describe('health checks', () => {
  let server: EmbeddedServer | undefined;
  afterAll(async () => {
    await server?.stop();
  });

  it('/readyz turns 503 within two heartbeats of PostgreSQL stopping and 200 after it returns; /healthz stays 200', async () => {
    server = await startEmbedded('health');
    const heartbeatMs = 1_000;
    const pgq = new Pgq({ connectionString: withAppName(server.url, 'pgq_health'), tasks: [noop] });
    await pgq.migrate();
    const worker = pgq.worker({ heartbeatMs, rescueAfterMs: 60_000, pollIntervalMs: 100 });
    await worker.start();
    const endpoints = await serveWorkerEndpoints(pgq, worker, '127.0.0.1', 0);
    const base = `http://127.0.0.1:${(endpoints.server.address() as AddressInfo).port}`;
    const get = async (path: string): Promise<{ status: number; body: WorkerHealth }> => {
      const res = await fetch(`${base}${path}`);
      return { status: res.status, body: (await res.json()) as WorkerHealth };
    };
    try {
      // Ready once the worker runs and its LISTEN connection is up.
      const ready = await until(async () => {
        const r = await get('/readyz');
        return r.status === 200 ? r : null;
      }, { timeoutMs: 30_000, everyMs: 100, what: '/readyz to turn 200 after start' });
      expect(ready.body.ready).toBe(true);
      expect(ready.body.checks).toMatchObject({ database: { ok: true }, lease: { ok: true }, listener: { ok: true }, worker: { ok: true } });
      const live = await get('/healthz');
      expect(live.status, JSON.stringify(live.body)).toBe(200);
      expect((await fetch(`${base}/metrics`)).status).toBe(200);

      await server.halt();
      const down = await until(async () => {
        const r = await get('/readyz');
        return r.status === 503 ? r : null;
      }, { timeoutMs: 2 * heartbeatMs, everyMs: 50, what: '/readyz to turn 503' });
      expect(down.body.ready).toBe(false);
      expect(down.body.checks.database.ok).toBe(false);
      expect(down.body.checks.database.message).toMatch(/database unreachable/);
      const stillLive = await get('/healthz');
      expect(stillLive.status, JSON.stringify(stillLive.body)).toBe(200);
      // Liveness does not ask the database: its body has the event-loop check alone.
      expect(stillLive.body as unknown as WorkerLiveness).toEqual({ live: true, checks: { eventLoop: { ok: true } } });

      await server.resume();
      const up = await until(async () => {
        const r = await get('/readyz');
        return r.status === 200 ? r : null;
      }, { timeoutMs: 30_000, everyMs: 100, what: '/readyz to turn 200 again' });
      expect(up.body.checks.listener.ok).toBe(true);
    } finally {
      await endpoints.close();
      await worker.stop();
      await pgq.close();
    }
    const stopped = await worker.health();
    expect(stopped.ready).toBe(false);
    expect(stopped.checks.worker.message).toBe('worker is stopped');
  }, 90_000);

  it('liveness() and health() each see a stall of the event loop: one probe does not use up the other\'s window', async () => {
    server ??= await startEmbedded('health');
    const pgq = new Pgq({ connectionString: withAppName(server.url, 'pgq_health'), tasks: [noop] });
    await pgq.migrate();
    const worker = pgq.worker({ leader: false });
    await worker.start();
    try {
      // Both windows start here.
      worker.liveness();
      await worker.health();
      // The event loop blocked for 400 ms, a while after the checks (Node's
      // sampler measures between two of its own ticks, and a check's reset
      // forgets the tick before it).
      await new Promise((resolve) => setTimeout(resolve, 100));
      const until = Date.now() + 400;
      while (Date.now() < until) {
        // blocked
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
      const ready = await worker.health({ maxEventLoopDelayMs: 200 });
      expect(ready.live).toBe(false);
      expect(ready.checks.eventLoop.message).toMatch(/event loop stalled for \d+ ms \(limit 200 ms\)/);
      const live = worker.liveness({ maxEventLoopDelayMs: 200 });
      expect(live.live).toBe(false);
      expect(live.checks.eventLoop.message).toMatch(/event loop stalled/);
      // Each window starts again after its own check.
      expect(worker.liveness({ maxEventLoopDelayMs: 200 }).live).toBe(true);
      // A limit that could never hold is refused, not a worker that is never live.
      for (const bad of [-1, Number.NaN, '5000' as unknown as number]) {
        expect(() => worker.liveness({ maxEventLoopDelayMs: bad })).toThrow(/maxEventLoopDelayMs: must be a finite number of milliseconds, 0 or more/);
        await expect(worker.health({ maxEventLoopDelayMs: bad })).rejects.toMatchObject({ name: 'ValidationError' });
      }
    } finally {
      await worker.stop();
      await pgq.close();
    }
  }, 60_000);

  it('health() answers within its databaseTimeoutMs when the database does not answer (900 ms by default, not a heartbeat), and refuses bad options', async () => {
    server ??= await startEmbedded('health');
    const pgq = new Pgq({ connectionString: withAppName(server.url, 'pgq_health'), tasks: [noop] });
    await pgq.migrate();
    const worker = pgq.worker({ leader: false, heartbeatMs: 5_000, rescueAfterMs: 60_000 });
    await worker.start();
    const locker = new pg.Client({ connectionString: server.url });
    await locker.connect();
    try {
      expect((await worker.health()).checks.database).toEqual({ ok: true });
      // The probe's read waits behind this lock as it would on a database that does not answer.
      await locker.query(`BEGIN; LOCK TABLE ${pgq.schema}.workers IN ACCESS EXCLUSIVE MODE`);
      // It waited max(1 s, heartbeatMs), 5 s here: longer than Kubernetes' default probe timeout of 1 s.
      const hung = await worker.health();
      expect(hung.ready).toBe(false);
      expect(hung.checks.database.message).toBe('database unreachable: no answer within 900 ms');
      const shorter = await worker.health({ databaseTimeoutMs: 200 });
      expect(shorter.checks.database.message).toBe('database unreachable: no answer within 200 ms');
      // Probes while the first read still waits join it: one connection waits, not one per probe (each held a pool connection).
      for (let i = 0; i < 3; i += 1) expect((await worker.health({ databaseTimeoutMs: 100 })).ready).toBe(false);
      const { rows: waiting } = await locker.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'pgq_health' AND wait_event_type = 'Lock' AND query LIKE '%left_ms%'`,
      );
      expect(waiting[0]!.n).toBe(1);
      await locker.query('ROLLBACK');
      await until(async () => (await worker.health()).ready || null, { timeoutMs: 20_000, everyMs: 100, what: 'ready again' });
      for (const bad of [0, -5, Number.NaN, '900' as unknown as number]) {
        await expect(worker.health({ databaseTimeoutMs: bad })).rejects.toThrow(/databaseTimeoutMs: must be a finite number of milliseconds, 1 or more/);
      }
      await expect(worker.health({ timeoutMs: 100 } as never)).rejects.toThrow(/options\.timeoutMs: is not an option here/);
      expect(() => worker.liveness({ databaseTimeoutMs: 100 } as never)).toThrow(/options\.databaseTimeoutMs: is not an option here \(options: maxEventLoopDelayMs\)/);
    } finally {
      await locker.end();
      await worker.stop();
      await pgq.close();
    }
  }, 60_000);
});
