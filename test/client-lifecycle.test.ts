/**
 * Starting and closing: what `worker.start()` rejects with, and what a Pgq
 * leaves behind on a pool it was given.
 */
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { defineTask, Pgq, PgqError, WorkerStartError } from '../src/index.js';
import { useTestSchema } from './support/harness.js';

const ctx = useTestSchema('client_lifecycle');
const noop = defineTask({ name: 'noop', schema: z.object({}), handler: () => undefined });

describe('worker.start()', () => {
  it('rejects with a WorkerStartError carrying the cause when the database cannot be reached', async () => {
    const pgq = new Pgq({ connectionString: 'postgres://postgres@127.0.0.1:1/postgres', tasks: [noop], listen: false });
    try {
      const worker = pgq.worker({ heartbeatMs: 200, rescueAfterMs: 1_000 });
      const err = await worker.start().then(() => null, (e: unknown) => e);
      expect(err).toBeInstanceOf(WorkerStartError);
      expect(err).toBeInstanceOf(PgqError);
      expect((err as PgqError).code).toBe('PGQ_WORKER_START');
      expect((err as Error).message).toMatch(/^the worker could not start: /);
      expect((err as Error).cause).toBeInstanceOf(Error);
      expect(worker.state).toBe('idle');
    } finally {
      await pgq.close();
    }
  });

  it('rejects with its own PgqError as it is (schema not migrated), and PGQ_WORKER_STOPPED once stopped', async () => {
    const unmigrated = ctx.pgq({ tasks: [noop], schema: `${ctx.schema}_none` });
    const err = await unmigrated.worker().start().then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(PgqError);
    expect((err as PgqError).code).toBe('PGQ_SCHEMA_NOT_READY');

    const pgq = await ctx.migrated({ tasks: [noop] });
    const worker = pgq.worker();
    await worker.start();
    await worker.stop();
    await expect(worker.start()).rejects.toMatchObject({ code: 'PGQ_WORKER_STOPPED' });
  });
});
