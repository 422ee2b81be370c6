/**
 * The job operations behind the console and the CLI: filters (payload,
 * result and error by containment or text, time, workflow), keyset paging,
 * counts, delete, bulk retry/cancel/delete with their counts, ctx.progress
 * (stored, throttled, attempt-guarded), listWorkers and listWorkflows; and
 * the index the jobs page relies on at a million rows.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import pg from 'pg';
import { chain, chord, defineTask, group, JobNotFoundError, PermanentError, step, ValidationError, type Pgq } from '../src/index.js';
import { ProgressWriter } from '../src/worker/progress.js';
import { Pruner } from '../src/maintenance/pruner.js';
import { systemClock } from '../src/core/clock.js';
import { fromPg } from '../src/db/queryable.js';
import { createStatements } from '../src/db/statements.js';
import { sql, type Expression } from 'kysely';
import { BULK_BATCH, bulkCandidates, countQuery, readDependentsLocked, uniqueKeyHolders } from '../src/jobs/job-store.js';
import { jobFilterCondition } from '../src/jobs/job-filter.js';
import { lostInputs } from '../src/workflow/lost-inputs.js';
import { deferred, jobRowsRead, until, useTestSchema } from './support/harness.js';
import { boom } from './fixtures/mail-tasks.js';

const ctx = useTestSchema('jobstore');

const mail = defineTask({ name: 'mail', queue: 'emails', maxAttempts: 1, schema: z.object({ to: z.string(), n: z.number().optional() }), handler: ({ to }) => ({ sent: to }) });
const release = deferred();
const steps: number[] = [];
const slow = defineTask({
  name: 'slow',
  schema: z.object({}),
  handler: async (_p, c) => {
    for (const n of [10, 20, 30, 40, 50]) {
      await c.progress(n);
      steps.push(n);
    }
    void c.progress({ done: 5, of: 10 });
    await release.promise;
    return 'ok';
  },
});

let pgq: Pgq;
beforeAll(async () => {
  pgq = await ctx.migrated({ tasks: [mail, boom, slow] });
});

describe('listing and counting', () => {
  it('filters by payload containment and text, result, error, time and state, and pages by id', async () => {
    const a = await pgq.enqueue(mail, { to: 'ada@example.com', n: 1 });
    const b = await pgq.enqueue(mail, { to: 'bob@example.com', n: 2 });
    const c = await pgq.enqueue(mail, { to: 'ada@example.com', n: 3 }, { queue: 'other' });
    expect((await pgq.listJobs({ payload: { contains: { to: 'ada@example.com' } } })).map((j) => j.id)).toEqual([c.id, a.id]);
    expect((await pgq.listJobs({ payload: { text: 'BOB@' } })).map((j) => j.id)).toEqual([b.id]);
    expect((await pgq.listJobs({ payload: { contains: { to: 'ada@example.com' } }, queue: 'emails' })).map((j) => j.id)).toEqual([a.id]);
    expect((await pgq.listJobs({ since: new Date(Date.now() + 60_000) })).length).toBe(0);
    expect((await pgq.listJobs({ until: new Date(Date.now() + 60_000), task: 'mail' })).length).toBe(3);

    const page1 = await pgq.listJobs({ task: 'mail', limit: 2 });
    const page2 = await pgq.listJobs({ task: 'mail', limit: 2, before: page1.at(-1)!.id });
    expect([...page1, ...page2].map((j) => j.id)).toEqual([c.id, b.id, a.id]);
    expect(await pgq.countJobs({ task: 'mail' })).toBe(3);
    expect(await pgq.countJobs({ task: 'mail' }, { max: 2 })).toBe(2);
    expect(await pgq.countJobs({ state: ['available', 'failed'], task: 'mail' })).toBe(3);

    await pgq.enqueue(boom, { to: 'zed@example.com' });
    const worker = pgq.worker({ queues: ['emails', 'other'] });
    await worker.start();
    await until(async () => (await pgq.countJobs({ state: ['succeeded', 'failed'] })) === 4, { what: 'jobs done' });
    await worker.stop();
    const failed = await pgq.listJobs({ error: { text: 'mailbox zed' } });
    expect(failed).toHaveLength(1);
    expect(failed[0]!.errors[0]!.stack).toMatch(/PermanentError: mailbox zed@example.com is full/);
    expect(await pgq.listJobs({ error: { contains: [{ attempt: 1 }] } })).toHaveLength(1);
    // An object is looked for as one error entry (errors is a list).
    expect((await pgq.listJobs({ error: { contains: { message: 'mailbox zed@example.com is full' } } })).map((j) => j.id)).toEqual([failed[0]!.id]);
    expect(await pgq.listJobs({ error: { contains: { message: 'no such message' } } })).toHaveLength(0);
    expect((await pgq.listJobs({ result: { contains: { sent: 'bob@example.com' } } })).map((j) => j.id)).toEqual([b.id]);
  });

  it('rejects bad filters with the field named, and reads nothing', async () => {
    await expect(pgq.listJobs({ state: 'done' as never })).rejects.toThrow(/state: must be one of/);
    const all = await pgq.countJobs();
    await expect(pgq.deleteJobs({ state: [] })).rejects.toThrow(/state: must name at least one state/);
    expect(await pgq.countJobs()).toBe(all);
    await expect(pgq.listJobs({ before: 'x' })).rejects.toThrow(/before: "x" is not a job id/);
    await expect(pgq.listWorkflows({ before: 'x' })).rejects.toThrow(/before: "x" is not a workflow id/);
    await expect(pgq.listJobs({ payload: { text: '' } })).rejects.toThrow(ValidationError);
    await expect(pgq.countJobs({ since: new Date('nope') })).rejects.toThrow(/since: must be a valid Date/);
    await expect(pgq.listJobs({ until: new Date(-8.64e15) })).rejects.toThrow(/until: must be a date PostgreSQL can store/);
    // A day after the earliest PostgreSQL holds is accepted (in any time zone pg may send it in).
    expect(await pgq.countJobs({ until: new Date(Date.UTC(-4713, 10, 25)) })).toBe(0);
    await expect(pgq.retryJobs({ payload: {} as never })).rejects.toThrow(/payload: must be \{ contains/);
  });

  it('refuses an empty {} or [] containment, naming the field: errors @> [] held for every job, and a bulk cancel with it cancelled them all', async () => {
    const waiting = await pgq.enqueue(mail, { to: 'empty@example.com' }, { delayMs: 3_600_000 });
    for (const [key, contains] of [['error', []], ['error', {}], ['payload', {}], ['payload', []], ['result', {}]] as const) {
      await expect(pgq.countJobs({ [key]: { contains } })).rejects.toMatchObject({ name: 'ValidationError', field: `${key}.contains`, message: expect.stringMatching(/is empty: it looks for nothing, so it would match every job/) });
    }
    await expect(pgq.cancelJobs({ error: { contains: [] } })).rejects.toThrow(ValidationError);
    expect((await pgq.getJob(waiting.id))?.state).toBe('scheduled');
    // A match with something in it is searched as before.
    expect(await pgq.countJobs({ payload: { contains: { to: 'empty@example.com' } } })).toBe(1);
    await pgq.deleteJob(waiting.id);
  });

  it('searches text in values, not in the JSON text: a quote or backslash is found, a key name is not', async () => {
    const noted = defineTask({ name: 'text-search', queue: 'text-search', schema: z.unknown(), handler: () => 1 });
    const pgq = await ctx.migrated({ tasks: [noted] });
    const quoted = await pgq.enqueue(noted, { note: 'say "hi"\\there', n: 1234, tags: ['Urgent'] }, { delayMs: 3_600_000 });
    const bare = await pgq.enqueue(noted, 'a bare "string"', { delayMs: 3_600_000 });
    const entry = { attempt: 1, message: 'file "C:\\temp\\x.txt" missing', stack: 'PermanentError: file "C:\\temp\\x.txt" missing\n    at handler (task.ts:1:1)', at: new Date().toISOString() };
    await ctx.admin.query(`UPDATE "${ctx.schema}".jobs SET state = 'failed', attempts = 1, finished_at = now(), result = $2, errors = $3 WHERE id = $1`, [
      quoted.id,
      JSON.stringify({ path: 'C:\\temp', ok: false }),
      JSON.stringify([entry]),
    ]);
    const found = async (filter: Parameters<Pgq['listJobs']>[0]) => (await pgq.listJobs({ task: 'text-search', ...filter })).map((j) => j.id);

    // Stored as JSON text these read \" and \\, and matched nothing.
    expect(await found({ error: { text: '"C:\\temp' } })).toEqual([quoted.id]);
    expect(await found({ error: { text: 'at HANDLER (task.ts' } })).toEqual([quoted.id]);
    expect(await found({ payload: { text: 'say "hi"\\there' } })).toEqual([quoted.id]);
    expect(await found({ payload: { text: 'a bare "string"' } })).toEqual([bare.id]);
    expect(await found({ result: { text: 'c:\\TEMP' } })).toEqual([quoted.id]);
    // Numbers, booleans and strings in a list are values too.
    expect(await found({ payload: { text: '1234' } })).toEqual([quoted.id]);
    expect(await found({ payload: { text: 'urgent' } })).toEqual([quoted.id]);
    expect(await found({ result: { text: 'false' } })).toEqual([quoted.id]);
    // Key names matched every job that had the key.
    for (const text of ['message', 'attempt', 'stack']) expect(await found({ error: { text } })).toEqual([]);
    for (const text of ['note', '"n"', 'tags']) expect(await found({ payload: { text } })).toEqual([]);
    expect(await found({ result: { text: 'path' } })).toEqual([]);
    // Literal: LIKE's wildcards are plain characters.
    expect(await found({ payload: { text: 'say_%' } })).toEqual([]);
    expect(await pgq.countJobs({ task: 'text-search', error: { text: 'missing' } })).toBe(1);
  });
});

describe('actions', () => {
  it('retryJob refuses a job whose uniqueKey another live job holds, naming it; retryJobs skips it and retries the rest', async () => {
    const first = await pgq.enqueue(mail, { to: 'key@example.com' }, { uniqueKey: 'retry-key', queue: 'rk', delayMs: 60_000 });
    await pgq.cancelJob(first.id);
    const holder = await pgq.enqueue(mail, { to: 'key@example.com' }, { uniqueKey: 'retry-key', queue: 'rk', delayMs: 60_000 });
    const other = await pgq.enqueue(mail, { to: 'other@example.com' }, { queue: 'rk', delayMs: 60_000 });
    await pgq.cancelJob(other.id);
    await expect(pgq.retryJob(first.id)).rejects.toMatchObject({ code: 'PGQ_NOT_RETRYABLE', message: expect.stringContaining(`job ${holder.id} holds its uniqueKey`) });
    expect(await pgq.retryJobs({ queue: 'rk', state: 'cancelled' })).toBe(1);
    expect((await pgq.getJob(first.id))!.state).toBe('cancelled');
    expect((await pgq.getJob(other.id))!.state).toBe('available');
    await pgq.cancelJobs({ queue: 'rk' });
  });

  it('retryJob runs a job cancelled as expired: its expiry, already past, no longer holds it back', async () => {
    const job = await pgq.enqueue(mail, { to: 'late@example.com' }, { queue: 'expired-retry', expiresInMs: 60_000 });
    await ctx.admin.query(`UPDATE "${ctx.schema}".jobs SET state = 'cancelled', finished_at = now(), expires_at = now() - interval '1 second' WHERE id = $1`, [job.id]);
    expect(await pgq.retryJob(job.id)).toMatchObject({ state: 'available', expiresAt: null });
    const worker = ctx.pgq({ tasks: [mail] }).worker({ queues: ['expired-retry'], pollIntervalMs: 50 });
    await worker.start();
    try {
      expect((await pgq.waitForJob(job.id, { timeoutMs: 10_000 })).state).toBe('succeeded');
    } finally {
      await worker.stop();
    }
  });

  it('deletes one job, refuses a running one, and reports a missing one', async () => {
    const job = await pgq.enqueue(mail, { to: 'gone@example.com' }, { delayMs: 60_000 });
    expect(await pgq.deleteJob(job.id)).toBe(true);
    expect(await pgq.getJob(job.id)).toBeNull();
    expect(await pgq.deleteJob(job.id)).toBe(false);
    const running = await pgq.enqueue(mail, { to: 'busy@example.com' }, { queue: 'held' });
    await ctx.admin.query(`UPDATE "${ctx.schema}".jobs SET state = 'running', attempts = 1 WHERE id = $1`, [running.id]);
    await expect(pgq.deleteJob(running.id)).rejects.toThrow(/is running; cancel it first/);
    expect(await pgq.getJob(running.id)).not.toBeNull();
    await pgq.cancelJob(running.id);
    await expect(pgq.retryJob('999999999')).rejects.toThrow(JobNotFoundError);
  });

  it('retries, cancels and deletes in bulk by filter, in batches, and says how many', async () => {
    const queue = 'bulk';
    await pgq.enqueueMany(mail, Array.from({ length: 1_203 }, (_, i) => ({ to: `u${i}@x.y`, n: i })), { queue });
    await ctx.admin.query(`UPDATE "${ctx.schema}".jobs SET state = 'failed', finished_at = now(), attempts = 1 WHERE queue = $1`, [queue]);
    await ctx.admin.query(`UPDATE "${ctx.schema}".jobs SET state = 'succeeded' WHERE queue = $1 AND (payload->>'n')::int < 3`, [queue]);
    expect(await pgq.retryJobs({ state: 'succeeded', queue })).toBe(0); // succeeded jobs are not retried
    expect(await pgq.retryJobs({ state: 'failed', queue })).toBe(1_200);
    const { rows } = await ctx.admin.query(`SELECT state, count(*)::int AS n, min(max_attempts) AS m FROM "${ctx.schema}".jobs WHERE queue = $1 GROUP BY state ORDER BY state`, [queue]);
    expect(rows).toEqual([{ state: 'available', n: 1_200, m: 2 }, { state: 'succeeded', n: 3, m: 1 }]);
    expect(await pgq.cancelJobs({ queue, payload: { contains: { n: 7 } } })).toBe(1);
    expect(await pgq.cancelJobs({ queue })).toBe(1_199);
    expect(await pgq.deleteJobs({ queue, state: 'cancelled' })).toBe(1_200);
    expect(await pgq.countJobs({ queue })).toBe(3);
  });

  it('a bulk action locks its jobs in id order, so it waits for a statement locking them in id order instead of deadlocking with it', async () => {
    const queue = 'bulk-order';
    const [a, b] = await pgq.enqueueMany(mail, [{ to: 'a@x.y' }, { to: 'b@x.y' }], { queue });
    const other = await ctx.admin.connect();
    try {
      // Another statement taking both in id order (a workflow cancel, a pruner pass) holds the first.
      await other.query('BEGIN');
      await other.query(`SELECT 1 FROM "${ctx.schema}".jobs WHERE id = $1 FOR UPDATE`, [a!.id]);
      const cancelled = pgq.cancelJobs({ queue });
      cancelled.catch(() => undefined);
      await ctx.lockWaiters(1, 'the bulk cancel to wait on the first job');
      // Newest first, the bulk cancel held the second job here: a deadlock, one side aborted (40P01).
      await other.query(`SELECT 1 FROM "${ctx.schema}".jobs WHERE id = $1 FOR UPDATE`, [b!.id]);
      await other.query('COMMIT');
      expect(await cancelled).toBe(2);
    } finally {
      other.release();
    }
    expect(await pgq.countJobs({ queue, state: 'cancelled' })).toBe(2);
  });

  it('bulk retry skips the workflow steps retryJob would refuse', async () => {
    const wf = await pgq.enqueueWorkflow(chain(step(boom, { to: 'w@x.y' }), step(mail, { to: 'after@x.y' })), { name: 'bulk-wf' });
    const worker = pgq.worker({ queues: ['emails'] });
    await worker.start();
    await pgq.waitForWorkflow(wf.id, { timeoutMs: 20_000 });
    await worker.stop();
    // the second step was cancelled because the first failed: only the first is retried
    expect(await pgq.retryJobs({ workflowId: wf.id })).toBe(1);
    expect((await pgq.getWorkflow(wf.id))!.steps.map((s) => s.state)).toEqual(['available', 'blocked']);
    await pgq.cancelWorkflow(wf.id);
    const list = await pgq.listWorkflows();
    expect(list[0]).toMatchObject({ id: wf.id, name: 'bulk-wf', state: 'cancelled', total: 2 });
    expect(list[0]!.counts.cancelled).toBe(2);
  });
});

/** Resolves `afterAbortMs` after `signal` aborts, or after `maxMs` without it: a handler that stops on its signal, in its own time. */
function stopsAfterSignal(signal: AbortSignal, maxMs: number, afterAbortMs: number): Promise<void> {
  return new Promise((resolve) => {
    const done = setTimeout(resolve, maxMs);
    signal.addEventListener(
      'abort',
      () => {
        clearTimeout(done);
        setTimeout(resolve, afterAbortMs);
      },
      { once: true },
    );
  });
}

describe('retrying jobs that share a uniqueKey', () => {
  it('retryJobs retries the newest of several retryable jobs with one key and the rest of the batch (it rolled back on a raw 23505)', async () => {
    const pgq = await ctx.migrated({ tasks: [mail] });
    const fail = (id: string) => ctx.admin.query(`UPDATE "${ctx.schema}".jobs SET state = 'failed', finished_at = now() WHERE id = $1`, [id]);
    const older = await pgq.enqueue(mail, { to: 'k@x.co' }, { queue: 'same-key', uniqueKey: 'k', delayMs: 60_000 });
    await fail(older.id);
    const newer = await pgq.enqueue(mail, { to: 'k@x.co' }, { queue: 'same-key', uniqueKey: 'k', delayMs: 60_000 });
    expect(newer.id).not.toBe(older.id);
    await fail(newer.id);
    const other = await pgq.enqueue(mail, { to: 'other@x.co' }, { queue: 'same-key', delayMs: 60_000 });
    await fail(other.id);
    expect(await pgq.retryJobs({ queue: 'same-key' })).toBe(2);
    expect((await pgq.getJob(newer.id))?.state).toBe('available');
    expect((await pgq.getJob(other.id))?.state).toBe('available');
    expect((await pgq.getJob(older.id))?.state).toBe('failed');
    await pgq.deleteJobs({ queue: 'same-key' });
  });

  it('a retry racing an enqueue that takes the key is refused naming the new holder (it was a raw 23505), and retryJobs skips it', async () => {
    const pgq = await ctx.migrated({ tasks: [mail] });
    const first = await pgq.enqueue(mail, { to: 'race@x.co' }, { queue: 'key-race', uniqueKey: 'race', delayMs: 60_000 });
    await pgq.cancelJob(first.id);
    for (const bulk of [false, true]) {
      // An application's transaction enqueues with the key and has not committed when the retry starts.
      const client = await ctx.admin.connect();
      try {
        await client.query('BEGIN');
        const holder = await pgq.enqueue(mail, { to: 'race@x.co' }, { queue: 'key-race', uniqueKey: 'race', delayMs: 60_000, db: client });
        const retrying = bulk ? pgq.retryJobs({ queue: 'key-race', state: 'cancelled' }) : pgq.retryJob(first.id);
        const settled = retrying.then(
          (value) => ({ value }),
          (error: unknown) => ({ error }),
        );
        await ctx.lockWaiters(1, 'the retry to wait on the uncommitted key');
        await client.query('COMMIT');
        const outcome = await settled;
        if (bulk) expect(outcome).toEqual({ value: 0 });
        else expect(outcome).toMatchObject({ error: { code: 'PGQ_NOT_RETRYABLE', message: expect.stringContaining(`job ${holder.id} holds its uniqueKey`) } });
        expect((await pgq.getJob(first.id))?.state).toBe('cancelled');
        await pgq.cancelJob(holder.id);
      } finally {
        client.release();
      }
    }
    await pgq.deleteJobs({ queue: 'key-race' });
  });
});

describe('a bulk retry of many jobs with unique keys', () => {
  it('reads each job\'s key by index: rows read grow with the jobs, not with their square', async () => {
    const n = 2_000;
    const { rows: made } = await ctx.admin.query<{ id: string }>(
      `INSERT INTO "${ctx.schema}".jobs (task, queue, state, payload, unique_key, finished_at)
       SELECT 'mail', 'bulk-keys', 'failed', '{"to": "x"}', 'bulk-key-' || i, now() FROM generate_series(1, $1::int) AS i RETURNING id::text`,
      [n],
    );
    const ids = made.map((r) => r.id);
    // Statistics from before the retry, as a bulk retry's later batches see them, of a table that keeps its
    // succeeded jobs.
    await ctx.admin.query(`INSERT INTO "${ctx.schema}".jobs (task, queue, state, payload, finished_at)
       SELECT 'mail', 'bulk-keys', 'succeeded', '{"to": "x"}', now() FROM generate_series(1, 50000)`);
    await ctx.admin.query(`ANALYZE "${ctx.schema}".jobs`);
    try {
      // The count a bulk retry confirms with (and the filter each of its batches applies): a newer failed job
      // sharing a key is retried instead, looked up for each job. No index held failed jobs by key, so each
      // read the newer failed jobs of the queue: about n²/2 rows (273 s to count 20,000 such jobs).
      // Each reading less the one at BEGIN: on a connection of the pool used before, the statistics also hold
      // what its earlier transactions read and the server has not reported yet (see jobRowsRead).
      await pgq.kysely.transaction().execute(async (trx) => {
        const start = await jobRowsRead(trx, ctx.schema);
        const workflows = { lostInputs: (id: Expression<unknown>) => lostInputs(ctx.schema, id) };
        const counted = await countQuery(trx, workflows, { state: 'failed', queue: 'bulk-keys' }, undefined, 'retry').executeTakeFirstOrThrow();
        expect(Number(counted.n)).toBe(n);
        expect((await jobRowsRead(trx, ctx.schema)) - start).toBeLessThan(n * 10);
      });
      // A batch's check for live holders of its keys, once the batches before it made half the keys live again:
      // as a join, the live keys (few, said the statistics) were walked against every job of the batch (501,000
      // rows read here).
      await ctx.admin.query(`UPDATE "${ctx.schema}".jobs SET state = 'available', finished_at = NULL WHERE id = ANY ($1::bigint[])`, [ids.slice(0, n / 2)]);
      await pgq.kysely.transaction().execute(async (trx) => {
        const start = await jobRowsRead(trx, ctx.schema);
        const batch = ids.slice(n / 2, n / 2 + 500);
        expect(await uniqueKeyHolders(trx, batch)).toEqual(new Map());
        expect((await jobRowsRead(trx, ctx.schema)) - start).toBeLessThan(batch.length * 10);
        // And a holder is found.
        await ctx.admin.query(`UPDATE "${ctx.schema}".jobs SET unique_key = 'bulk-key-1' WHERE id = $1`, [batch[0]]);
      });
      await pgq.kysely.transaction().execute(async (trx) => {
        expect(await uniqueKeyHolders(trx, [ids[n - 1]!, ids[n / 2]!])).toEqual(new Map([[ids[n / 2]!, ids[0]!]]));
      });
      expect(await pgq.retryJobs({ queue: 'bulk-keys', state: 'failed' })).toBe(n / 2 - 1);
    } finally {
      await ctx.admin.query(`DELETE FROM "${ctx.schema}".jobs WHERE queue = 'bulk-keys'`);
    }
  });
});

describe('a bulk action on a filter PostgreSQL misjudges', () => {
  it('reads its candidates in few scans: rows read grow with the table, not with the table times the batches', async () => {
    const n = 2_000;
    await ctx.admin.query(`INSERT INTO "${ctx.schema}".jobs (task, queue, state, payload, finished_at)
       SELECT 'mail', 'bulk-scan', 'succeeded', '{"to": "x"}', now() FROM generate_series(1, 50000)`);
    // The campaign's jobs are the newest: each read of a batch below the one before scanned all the older ones.
    // Statistics from before the campaign's jobs came (autovacuum lags behind a burst).
    await ctx.admin.query(`ANALYZE "${ctx.schema}".jobs`);
    await ctx.admin.query(`INSERT INTO "${ctx.schema}".jobs (task, queue, state, payload, finished_at)
       SELECT 'mail', 'bulk-scan', 'succeeded', '{"to": "x", "campaign": "spring"}', now() FROM generate_series(1, $1::int)`, [n]);
    const { rows: all } = await ctx.admin.query<{ n: string }>(`SELECT count(*) AS n FROM "${ctx.schema}".jobs`);
    const table = Number(all[0]!.n);
    const filter = { payload: { contains: { campaign: 'spring' } } };
    // What a bulk action walks: by those statistics no job matches, so each read of candidates scans the table
    // and sorts what matches.
    const read = (chunk?: number) =>
      pgq.kysely.transaction().execute(async (trx) => {
        const start = await jobRowsRead(trx, ctx.schema);
        const ids: string[] = [];
        for await (const candidates of bulkCandidates(trx, (eb) => jobFilterCondition(eb, filter), chunk)) ids.push(...candidates);
        return { ids, rowsRead: (await jobRowsRead(trx, ctx.schema)) - start };
      });
    try {
      const { ids, rowsRead } = await read();
      expect(ids).toHaveLength(n);
      expect(ids).toEqual([...ids].sort((a, b) => Number(b) - Number(a)));
      // Read a batch (500) at a time, as before, it scanned the table n / 500 + 1 times (deleting 96,855 of
      // 1,140,000 jobs by queue on a table not analyzed since took 68 s; 2.5 s read in chunks).
      expect(rowsRead).toBeLessThan(table * 1.5);
      expect((await read(BULK_BATCH)).rowsRead).toBeGreaterThan(table * (n / BULK_BATCH));
      expect(await pgq.deleteJobs({ queue: 'bulk-scan', ...filter })).toBe(n);
      expect(await pgq.countJobs({ queue: 'bulk-scan' })).toBe(50_000);
    } finally {
      await ctx.admin.query(`DELETE FROM "${ctx.schema}".jobs WHERE queue = 'bulk-scan'`);
    }
  });
});

describe('deleting the finished steps of a long chain', () => {
  it('reads each step\'s dependents through its edges, counting and deleting: rows read grow with the steps, not with the table or their square', async () => {
    const n = 1_000;
    const link = defineTask({ name: 'chain-link', queue: 'long-chain', schema: z.unknown(), handler: (x) => x });
    // A table that keeps its succeeded jobs, and statistics from before the chain: they see no blocked job.
    await ctx.admin.query(`INSERT INTO "${ctx.schema}".jobs (task, queue, state, payload, finished_at)
       SELECT 'chain-link', 'long-chain-other', 'succeeded', '0', now() FROM generate_series(1, 50000)`);
    await ctx.admin.query(`ANALYZE "${ctx.schema}".jobs`);
    const wf = await pgq.enqueueWorkflow(chain(...(Array.from({ length: n }, (_, i) => (i === 0 ? step(link, 0) : step(link))) as [ReturnType<typeof step>])));
    const ids = wf.steps.map((s) => s.id);
    const half = ids.slice(0, n / 2);
    const client = await ctx.admin.connect();
    try {
      // Its first half succeeded (by hand, the triggers off); the other half is blocked.
      await client.query('BEGIN');
      await client.query('SET LOCAL session_replication_role = replica');
      await client.query(`UPDATE "${ctx.schema}".jobs SET state = 'succeeded', finished_at = now(), result = '0' WHERE id = ANY($1::bigint[])`, [half]);
      await client.query('COMMIT');
    } finally {
      await client.query('ROLLBACK').catch(() => undefined);
      client.release();
    }
    // The count a bulk delete confirms with: whether a blocked dependent still waits on each finished step. On a
    // table of 1,100,000 jobs PostgreSQL walked the blocked jobs' index for each (7.4 to 21.7 s for a cancelled
    // chain of 10,000, whose blocked entries the index keeps until a vacuum; 0.1 s now); this table does not
    // bring that plan about, and the bound only guards the count.
    await pgq.kysely.transaction().execute(async (trx) => {
      await sql`SET LOCAL jit = off`.execute(trx);
      const start = await jobRowsRead(trx, ctx.schema);
      const workflows = { lostInputs: (id: Expression<unknown>) => lostInputs(ctx.schema, id) };
      const counted = await countQuery(trx, workflows, { workflowId: wf.id }, undefined, 'delete').executeTakeFirstOrThrow();
      // The last finished step is waited on by the first blocked one.
      expect(Number(counted.n)).toBe(n / 2 - 1);
      expect((await jobRowsRead(trx, ctx.schema)) - start).toBeLessThan(n * 10);
    });
    expect(await pgq.countJobs({ workflowId: wf.id }, { action: 'delete' })).toBe(n / 2 - 1);
    // What each batch of the delete locks: the dependents of its steps. As one join priced by statistics of
    // job_dependencies, PostgreSQL hashed the whole jobs table per batch (8.3 s to delete a chain of 10,000 beside
    // 850,000 other jobs; 0.4 s now).
    await pgq.kysely.transaction().execute(async (trx) => {
      const start = await jobRowsRead(trx, ctx.schema);
      const dependents = await readDependentsLocked(trx, half);
      expect(dependents).toEqual(half.map((id, i) => ({ id, state: i === n / 2 - 1 ? 'blocked' : 'succeeded' })));
      expect((await jobRowsRead(trx, ctx.schema)) - start).toBeLessThan(half.length * 10);
    });
    expect(await pgq.deleteJobs({ workflowId: wf.id })).toBe(n / 2 - 1);
    await pgq.cancelWorkflow(wf.id);
    expect(await pgq.deleteJobs({ workflowId: wf.id })).toBe(n / 2 + 1);
    await ctx.admin.query(`DELETE FROM "${ctx.schema}".jobs WHERE queue = 'long-chain-other'`);
  });
});

describe('a filter with a field it does not know', () => {
  it('is refused, naming the field, and changes nothing: a misspelt state matched every job and a bulk delete deleted them all', async () => {
    const pgq = await ctx.migrated({ tasks: [mail] });
    const kept = await pgq.enqueue(mail, { to: 'kept@x.co' }, { queue: 'typo', delayMs: 60_000 });
    const total = await pgq.countJobs({});
    const typo = { sate: 'cancelled' } as unknown as Parameters<Pgq['deleteJobs']>[0];
    await expect(pgq.deleteJobs(typo)).rejects.toMatchObject({ name: 'ValidationError', message: expect.stringMatching(/^sate: is not a job filter field; the fields are state, queue/) });
    await expect(pgq.cancelJobs({ queu: 'typo' } as never)).rejects.toThrow(/^queu: is not a job filter field/);
    await expect(pgq.retryJobs({ sate: 'cancelled' } as never)).rejects.toThrow(/^sate: is not a job filter field/);
    await expect(pgq.countJobs({ sate: 'cancelled' } as never)).rejects.toThrow(/^sate: is not a job filter field/);
    await expect(pgq.listJobs({ queue: 'typo', limt: 5 } as never)).rejects.toThrow(/^limt: is not a job filter field; the fields are .*before, limit$/);
    await expect(pgq.deleteJobs({ queue: 'typo', limit: 1 } as never)).rejects.toThrow(/^limit: is not a job filter field \(paging is listJobs' alone\)/);
    await expect(pgq.countJobs({ payload: { text: 'kept', contains: { to: 'x' } } as never })).rejects.toThrow(/^payload: must be .* not both/);
    await expect(pgq.countJobs({ workflowId: 'abc' })).rejects.toThrow(/workflow id/);
    // A field given as undefined is left out, as before; a workflow record stands for its id.
    expect(await pgq.countJobs({ queue: 'typo', before: undefined, limit: undefined } as never)).toBe(1);
    expect(await pgq.countJobs({ workflowId: { id: '999999' } as never })).toBe(0);
    expect(await pgq.countJobs({})).toBe(total);
    expect((await pgq.getJob(kept.id))?.state).toBe('scheduled');
    expect((await pgq.listJobs({ queue: 'typo', limit: 5, before: String(Number(kept.id) + 1) })).map((j) => j.id)).toEqual([kept.id]);
    await pgq.deleteJobs({ queue: 'typo' });
  });
});

describe('counting for a bulk action', () => {
  it('counts what retryJobs, cancelJobs and deleteJobs then change, less the jobs each skips (the console confirms with it)', async () => {
    const task = (name: string) => defineTask({ name, queue: 'count-vs-action', schema: z.unknown(), handler: () => 1 });
    const [cancelling, retrying, deleting, losing] = [task('cva-cancel'), task('cva-retry'), task('cva-delete'), task('cva-lost')];
    const pgq = await ctx.migrated({ tasks: [cancelling, retrying, deleting, losing] });
    const later = { delayMs: 3_600_000 };
    const setState = (id: string, state: string, extra = '') => ctx.admin.query(`UPDATE "${ctx.schema}".jobs SET state = '${state}'${extra} WHERE id = $1`, [id]);
    const counts = async (name: string) => {
      const filter = { task: name };
      return { retry: await pgq.countJobs(filter, { action: 'retry' }), cancel: await pgq.countJobs(filter, { action: 'cancel' }), delete: await pgq.countJobs(filter, { action: 'delete' }) };
    };

    // cancel: a running job whose cancel was asked for already is not counted again.
    await pgq.enqueue(cancelling, 1, later);
    const asked = await pgq.enqueue(cancelling, 2, later);
    await setState(asked.id, 'running', ', attempts = 1, started_at = now(), cancel_requested_at = now()');
    expect((await counts('cva-cancel')).cancel).toBe(1);
    expect(await pgq.cancelJobs({ task: 'cva-cancel' })).toBe(1);

    // retry: not a job whose uniqueKey a live job holds, nor a step cancelled because its parent failed.
    const old = await pgq.enqueue(retrying, 'old', { ...later, uniqueKey: 'k' });
    await setState(old.id, 'failed', ', finished_at = now()');
    const holder = await pgq.enqueue(retrying, 'new', { ...later, uniqueKey: 'k' });
    expect(holder.id).not.toBe(old.id);
    const wf = await pgq.enqueueWorkflow(chain(step(retrying, 'a'), step(retrying)));
    const [first, second] = wf.steps;
    await setState(first!.id, 'failed', ', attempts = 1, finished_at = now()');
    expect((await pgq.getJob(second!.id))?.state).toBe('cancelled');
    // Two finished jobs sharing a key that is free: the newer is retried, not both.
    const firstK2 = await pgq.enqueue(retrying, 'k2-first', { ...later, uniqueKey: 'k2' });
    await setState(firstK2.id, 'failed', ', finished_at = now()');
    const secondK2 = await pgq.enqueue(retrying, 'k2-second', { ...later, uniqueKey: 'k2' });
    await setState(secondK2.id, 'cancelled', ', finished_at = now()');
    // An older live one (retryable) and a newer finished one sharing a key: the live one holds it and is retried.
    const liveK3 = await pgq.enqueue(retrying, 'k3-live', { ...later, uniqueKey: 'k3' });
    await setState(liveK3.id, 'failed', ', finished_at = now()');
    const newerK3 = await pgq.enqueue(retrying, 'k3-newer', { ...later, uniqueKey: 'k3' });
    await setState(newerK3.id, 'failed', ', finished_at = now()');
    await setState(liveK3.id, 'retryable', ', finished_at = NULL');
    expect(await pgq.countJobs({ task: 'cva-retry', state: ['failed', 'cancelled', 'scheduled', 'retryable'] })).toBe(8);
    expect((await counts('cva-retry')).retry).toBe(4); // the holder, the failed first step, the newer of k2, the live k3
    expect(await pgq.retryJobs({ task: 'cva-retry' })).toBe(4);
    expect((await pgq.getJob(secondK2.id))?.state).toBe('available');
    expect((await pgq.getJob(firstK2.id))?.state).toBe('failed');
    expect((await pgq.getJob(liveK3.id))?.state).toBe('available');
    expect((await pgq.getJob(newerK3.id))?.state).toBe('failed');

    // retry, workflow steps with a deleted parent: one whose input was made when it left blocked lost
    // nothing and is retried (it was counted, then refused); one cancelled while blocked, or a step whose
    // success would resume it, would make that input without the parent's result and is not counted.
    const succeed = (id: string, result: string) => setState(id, 'succeeded', `, attempts = 1, finished_at = now(), result = '${result}'`);
    const released = (await pgq.enqueueWorkflow(chain(step(losing, 'a'), step(losing)))).steps.map((s) => s.id);
    await succeed(released[0]!, '7');
    expect(await pgq.getJob(released[1]!)).toMatchObject({ state: 'available', payload: 7 });
    await pgq.cancelJob(released[1]!);
    const neverReleased = (await pgq.enqueueWorkflow(chain(step(losing, 'b'), step(losing)))).steps.map((s) => s.id);
    await pgq.cancelJob(neverReleased[1]!);
    await succeed(neverReleased[0]!, '8');
    const resuming = (await pgq.enqueueWorkflow(chord(group([step(losing, 'c1'), step(losing, 'c2')]), step(losing)))).steps.map((s) => s.id);
    await succeed(resuming[0]!, '9');
    await pgq.cancelJob(resuming[1]!); // the callback is cancelled by it, and would resume with its retry
    for (const id of [released[0]!, neverReleased[0]!, resuming[0]!]) expect(await pgq.deleteJob(id)).toBe(true);
    expect((await counts('cva-lost')).retry).toBe(1);
    await expect(pgq.retryJob(neverReleased[1]!)).rejects.toMatchObject({ code: 'PGQ_NOT_RETRYABLE', message: expect.stringMatching(/its input includes the result of job \d+, which has been deleted/) });
    expect(await pgq.retryJobs({ task: 'cva-lost' })).toBe(1);
    expect(await pgq.getJob(released[1]!)).toMatchObject({ state: 'available', payload: 7 });
    expect((await pgq.getJob(neverReleased[1]!))?.state).toBe('cancelled');
    expect((await pgq.getJob(resuming[1]!))?.state).toBe('cancelled');

    // delete: not a step that has not finished, nor a finished one a blocked dependent still waits on.
    await pgq.enqueue(deleting, 'plain', later);
    const chorded = await pgq.enqueueWorkflow(chord(group([step(deleting, 1), step(deleting, 2)]), step(deleting)));
    await setState(chorded.steps[0]!.id, 'succeeded', ', attempts = 1, finished_at = now()');
    expect((await pgq.getJob(chorded.steps[2]!.id))?.state).toBe('blocked');
    expect((await counts('cva-delete')).delete).toBe(1);
    expect(await pgq.deleteJobs({ task: 'cva-delete' })).toBe(1);
    await pgq.cancelWorkflow(chorded.id);
    expect(await counts('cva-delete')).toMatchObject({ delete: 3 });
    expect(await pgq.deleteJobs({ task: 'cva-delete' })).toBe(3);
    await expect(pgq.countJobs({}, { action: 'archive' as 'retry' })).rejects.toThrow(/action: must be retry, cancel or delete/);
    // An inherited name is no action, and options or a list filter that are not objects say so (not a TypeError).
    await expect(pgq.countJobs({}, { action: 'toString' as 'retry' })).rejects.toThrow(/action: must be retry, cancel or delete/);
    await expect(pgq.countJobs({}, null as unknown as {})).rejects.toMatchObject({ name: 'ValidationError', message: 'options: must be an object' });
    await expect(pgq.listWorkflows(null as unknown as {})).rejects.toMatchObject({ name: 'ValidationError', message: 'filter: must be an object' });
    await expect(pgq.listWorkflows({ befor: '1' } as {})).rejects.toThrow(/befor: is not a workflow list field; the fields are before, limit/);
  });
});

describe('cancelling a running job', () => {
  it('keeps it running, held by its worker, until its handler settles: retryJob, deleteJob and a concurrency-1 queue wait for it, and no attempts overlap', async () => {
    // A ledger of attempts: [job id, attempt, start, end] (ms, one clock).
    const ledger: { id: string; attempt: number; start: number; end: number }[] = [];
    const stubborn = defineTask({
      name: 'stubborn',
      queue: 'one-at-a-time',
      schema: z.object({ n: z.number() }),
      handler: async (_p, c) => {
        const row = { id: c.job.id, attempt: c.job.attempts, start: performance.now(), end: Infinity };
        ledger.push(row);
        try {
          // Stops 2 s after its signal (long enough for the calls below on a
          // busy machine), or after 1.5 s without one.
          await stopsAfterSignal(c.signal, 1_500, 2_000);
          if (c.signal.aborted) throw c.signal.reason;
          return 'ok';
        } finally {
          row.end = performance.now();
        }
      },
    });
    const a = ctx.pgq({ tasks: [stubborn] });
    const b = ctx.pgq({ tasks: [stubborn] });
    await a.migrate();
    await a.setQueue('one-at-a-time', { concurrency: 1 });
    const workers = [a.worker({ queues: ['one-at-a-time'], concurrency: 2, pollIntervalMs: 50 }), b.worker({ queues: ['one-at-a-time'], concurrency: 2, pollIntervalMs: 50 })];
    await Promise.all(workers.map((w) => w.start()));
    try {
      const first = await a.enqueue(stubborn, { n: 1 });
      await until(async () => ledger.some((r) => r.id === first.id), { what: 'the first job to start' });
      const second = await a.enqueue(stubborn, { n: 2 });

      const cancelling = await a.cancelJob(first.id);
      expect(cancelling).toMatchObject({ state: 'running', cancelRequestedAt: expect.any(Date) });
      await expect(a.retryJob(first.id)).rejects.toMatchObject({ code: 'PGQ_NOT_RETRYABLE', message: expect.stringMatching(/ends cancelled once its handler has settled/) });
      await expect(a.deleteJob(first.id)).rejects.toMatchObject({ code: 'PGQ_JOB_RUNNING' });
      expect(await a.retryJobs({ queue: 'one-at-a-time' })).toBe(0);
      // Asked once already: a bulk cancel does not count it again.
      expect(await a.cancelJobs({ queue: 'one-at-a-time', state: 'running' })).toBe(0);

      const cancelled = await a.waitForJob(first.id, { timeoutMs: 10_000 });
      expect(cancelled).toMatchObject({ state: 'cancelled', attempts: 1, cancelRequestedAt: null, finishedAt: expect.any(Date) });
      expect(cancelled.errors.at(-1)!.message).toMatch(/cancel/i);
      expect(await a.retryJob(first.id)).toMatchObject({ state: 'available' });
      expect((await a.waitForJob(second.id, { timeoutMs: 10_000 })).state).toBe('succeeded');
      expect((await a.waitForJob(first.id, { timeoutMs: 10_000 })).state).toBe('succeeded');
    } finally {
      await Promise.all(workers.map((w) => w.stop()));
    }
    // One attempt at a time in the whole queue (concurrency 1), the cancelled one included.
    const sorted = [...ledger].sort((x, y) => x.start - y.start);
    expect(sorted.map((r) => r.attempt)).toEqual([1, 1, 2]);
    for (let i = 1; i < sorted.length; i += 1) expect(sorted[i]!.start, `attempt ${i} starts after the one before ended`).toBeGreaterThanOrEqual(sorted[i - 1]!.end);
  });

  it('an attempt waiting behind an earlier one of its job (rescued from this worker, claimed again by it) is given back when cancelled: the job ends cancelled', async () => {
    const started = deferred();
    const lingering = defineTask({
      name: 'lingering',
      queue: 'rescued-here',
      schema: z.object({}),
      handler: async (_p, c) => {
        started.resolve();
        await stopsAfterSignal(c.signal, 8_000, 500);
        c.signal.throwIfAborted();
      },
    });
    const own = ctx.pgq({ tasks: [lingering] });
    await own.migrate();
    const worker = own.worker({ queues: ['rescued-here'], concurrency: 2, pollIntervalMs: 50, leader: false });
    await worker.start();
    try {
      const job = await own.enqueue(lingering, {});
      await started.promise;
      // What the rescuer does when this worker's lease has lapsed while the handler still runs here.
      await ctx.admin.query(`UPDATE "${ctx.schema}".jobs SET state = 'available', run_at = now() WHERE id = $1`, [job.id]);
      await until(async () => (await own.getJob(job.id))?.attempts === 2, { what: 'the same worker to claim it again' });
      await own.cancelJob(job.id);
      const done = await own.waitForJob(job.id, { timeoutMs: 15_000 });
      expect(done).toMatchObject({ state: 'cancelled', cancelRequestedAt: null });
    } finally {
      await worker.stop();
    }
  });

  it('reaches a handler on a worker that does not listen (listen: false): its signal aborts within about a second', async () => {
    let abortedAfterMs = -1;
    const started = deferred();
    const patient = defineTask({
      name: 'patient',
      queue: 'no-listen',
      schema: z.object({}),
      handler: async (_p, c) => {
        started.resolve();
        const t0 = performance.now();
        await stopsAfterSignal(c.signal, 20_000, 0);
        if (c.signal.aborted) abortedAfterMs = performance.now() - t0;
        c.signal.throwIfAborted();
      },
    });
    const deaf = ctx.pgq({ tasks: [patient], listen: false });
    await deaf.migrate();
    const worker = deaf.worker({ queues: ['no-listen'], pollIntervalMs: 200 });
    await worker.start();
    try {
      const job = await pgq.enqueue(patient, {});
      await started.promise;
      await pgq.cancelJob(job.id);
      const done = await pgq.waitForJob(job.id, { timeoutMs: 15_000 });
      expect(done.state).toBe('cancelled');
      expect(abortedAfterMs).toBeGreaterThan(0);
      expect(abortedAfterMs).toBeLessThan(10_000);
    } finally {
      await worker.stop();
    }
  });

  it('reaches an attempt whose claim reply was still on its way when the cancel was heard', async () => {
    let signalled = false;
    const started = deferred();
    const late = defineTask({
      name: 'late-reply',
      queue: 'late-reply',
      schema: z.object({}),
      handler: async (_p, c) => {
        started.resolve();
        await stopsAfterSignal(c.signal, 20_000, 0);
        signalled = c.signal.aborted;
        c.signal.throwIfAborted();
      },
    });
    // A pool whose first claim that takes a job answers only when told: the
    // job is running for this worker in the database while the worker does
    // not know it holds it yet.
    const claimHeld = deferred();
    const release = deferred();
    let holding = true;
    const pool = new pg.Pool({ connectionString: ctx.url, max: 4 });
    pool.on('connect', (client) => {
      const query = client.query.bind(client) as (...args: unknown[]) => unknown;
      (client as unknown as { query: (...args: unknown[]) => unknown }).query = (...args: unknown[]) => {
        const config = args[0] as { name?: string } | string;
        const callback = args.at(-1);
        if (typeof config !== 'object' || !new RegExp(`^pgq_${ctx.schema}_claim_[0-9a-f]{8}$`).test(config.name ?? '') || typeof callback !== 'function') return query(...args);
        // pgq's statements use the callback form.
        return query(...args.slice(0, -1), (err: Error | undefined, result: { rows: unknown[] } | undefined) => {
          if (!holding || err || !result?.rows.length) return callback(err, result);
          holding = false;
          claimHeld.resolve();
          void release.promise.then(() => callback(err, result));
        });
      };
    });
    const own = ctx.pgq({ tasks: [late], pool });
    await own.migrate();
    const worker = own.worker({ queues: ['late-reply'], pollIntervalMs: 200, leader: false });
    await worker.start();
    // Past the look-up a start makes in case a cancel was sent before it listened.
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    try {
      const job = await own.enqueue(late, {});
      await claimHeld.promise;
      expect(await own.getJob(job.id)).toMatchObject({ state: 'running', workerId: expect.any(String) });
      await own.cancelJob(job.id);
      // The worker hears the cancel now, for a job it does not know it holds.
      await new Promise((resolve) => setTimeout(resolve, 500));
      release.resolve();
      await started.promise;
      const done = await own.waitForJob(job.id, { timeoutMs: 10_000 });
      expect(done).toMatchObject({ state: 'cancelled', cancelRequestedAt: null });
      expect(signalled).toBe(true);
    } finally {
      release.resolve();
      await worker.stop();
      await own.close();
      await pool.end();
    }
  });

  it('a notification on the cancel channel alone (anyone may send one) does not abort a job: the database says which were asked to stop', async () => {
    let signalled = false;
    const started = deferred();
    const finish = deferred();
    const steady = defineTask({
      name: 'steady',
      queue: 'forged-cancel',
      schema: z.object({}),
      handler: async (_p, c) => {
        c.signal.addEventListener('abort', () => (signalled = true));
        started.resolve();
        await finish.promise;
        return 'done';
      },
    });
    const own = ctx.pgq({ tasks: [steady] });
    await own.migrate();
    const worker = own.worker({ queues: ['forged-cancel'], pollIntervalMs: 100, leader: false });
    await worker.start();
    try {
      const job = await own.enqueue(steady, {});
      await started.promise;
      // What cancelJob sends, sent by hand (pg_notify needs no privilege: an enqueuer, or a role with no grants, can).
      await ctx.admin.query(`SELECT pg_notify($1, $2)`, [`pgq:${ctx.schema}:cancel`, job.id]);
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      expect(signalled).toBe(false);
      finish.resolve();
      expect(await own.waitForJob(job.id, { timeoutMs: 10_000 })).toMatchObject({ state: 'succeeded', result: 'done', attempts: 1 });
    } finally {
      finish.resolve();
      await worker.stop();
    }
  });

  it('a request left on a job no longer running (a worker from before the request existed retried it) does not hide it from cancelJobs, and a retry clears it', async () => {
    const pgq = await ctx.migrated({ tasks: [mail] });
    const [left, retried] = await pgq.enqueueMany(mail, [{ to: 'left@x.co' }, { to: 'retried@x.co' }], { queue: 'left-over', delayMs: 60_000 });
    await ctx.admin.query(`UPDATE "${ctx.schema}".jobs SET cancel_requested_at = now() WHERE id = ANY($1::bigint[])`, [[left!.id, retried!.id]]);
    expect(await pgq.cancelJobs({ queue: 'left-over', task: 'mail', payload: { contains: { to: 'left@x.co' } } })).toBe(1);
    expect((await pgq.getJob(left!.id))!.state).toBe('cancelled');
    await pgq.cancelJob(retried!.id);
    await ctx.admin.query(`UPDATE "${ctx.schema}".jobs SET cancel_requested_at = now() WHERE id = $1`, [retried!.id]);
    expect(await pgq.retryJob(retried!.id)).toMatchObject({ state: 'available', cancelRequestedAt: null });
    await pgq.cancelJobs({ queue: 'left-over' });
  });

  it('a give-back of a job not yet started, or a rescue, ends a job whose cancel was asked for cancelled (the statements, on their own)', async () => {
    const pgq = await ctx.migrated({ tasks: [mail] });
    const statements = createStatements(ctx.schema);
    const db = fromPg(ctx.admin);
    const jobs = `"${ctx.schema}".jobs`;
    const [held, orphan] = await pgq.enqueueMany(mail, [{ to: 'held@x.co' }, { to: 'orphan@x.co' }]);
    // Claimed by a worker (its row is gone for the second: a rescue), then asked to stop.
    await ctx.admin.query(
      `UPDATE ${jobs} SET state = 'running', attempts = 1, worker_id = 'w-cancel', started_at = now(), cancel_requested_at = now() WHERE id = ANY($1::bigint[])`,
      [[held!.id, orphan!.id]],
    );
    // Its waiters are told, as for any job that ends.
    const listening = new pg.Client({ connectionString: ctx.url });
    await listening.connect();
    try {
      const heard = new Promise<string>((resolve) => listening.on('notification', (n) => resolve(n.payload ?? '')));
      await listening.query(`LISTEN "pgq:${ctx.schema}:done"`);
      await statements.releaseUnstarted(db, { workerIds: ['w-cancel'], attempts: [[held!.id, 1]] });
      expect(await pgq.getJob(held!.id)).toMatchObject({ state: 'cancelled', attempts: 0, cancelRequestedAt: null, finishedAt: expect.any(Date) });
      expect((await heard).split(',')).toContain(held!.id);
    } finally {
      await listening.end();
    }
    const rescued = await statements.rescueJobs(db, { legacyRescueAfterMs: 1_000, now: null });
    expect(rescued).toEqual([expect.objectContaining({ id: orphan!.id, state: 'cancelled' })]);
    expect(await pgq.getJob(orphan!.id)).toMatchObject({ state: 'cancelled', attempts: 1, cancelRequestedAt: null, finishedAt: expect.any(Date) });
  });
});

describe('progress', () => {
  it('is stored while the attempt runs, returned by getJob, and the last value is written', async () => {
    const job = await pgq.enqueue(slow, {});
    const worker = pgq.worker({ queues: ['default'] });
    await worker.start();
    await until(async () => {
      const j = await pgq.getJob(job.id);
      return j && typeof j.progress === 'object' && j.progress !== null ? j : null;
    }, { what: 'the object progress' });
    const seen = await pgq.getJob(job.id);
    expect(seen).toMatchObject({ state: 'running', progress: { done: 5, of: 10 } });
    expect(seen!.progressAt!.getTime()).toBeGreaterThanOrEqual(seen!.startedAt!.getTime());
    expect(steps).toEqual([10, 20, 30, 40, 50]);
    release.resolve();
    await pgq.waitForJob(job.id, { timeoutMs: 20_000 });
    await worker.stop();
    const listed = await pgq.listJobs({ task: 'slow' });
    expect(listed[0]!.progress).toEqual({ done: 5, of: 10 });
  });

  it("keeps the last value of a handler that returns right after reporting it (as docs/tasks.md's loop does)", async () => {
    const importer = defineTask({
      name: 'import-rows',
      queue: 'progress-last',
      schema: z.object({ n: z.number() }),
      handler: async ({ n }, c) => {
        for (let i = 0; i < n; i++) {
          await new Promise((r) => setTimeout(r, 20));
          void c.progress({ done: i + 1, of: n }); // throttled; the last value is always written
        }
        return { imported: n };
      },
    });
    const local = await ctx.migrated({ tasks: [importer] });
    const worker = local.worker({ queues: ['progress-last'], leader: false });
    await worker.start();
    try {
      const job = await local.enqueue(importer, { n: 5 });
      // The pending value was written by its timer after the outcome, found the job finished, and was dropped: {done: 1}.
      expect(await local.waitForJob(job.id, { timeoutMs: 20_000 })).toMatchObject({ state: 'succeeded', progress: { done: 5, of: 5 } });
    } finally {
      await worker.stop();
    }
  });

  it('writes only for the running attempt it belongs to, throttles, and refuses bad values', async () => {
    const job = await pgq.enqueue(mail, { to: 'p@x.y' }, { queue: 'progress' });
    await ctx.admin.query(`UPDATE "${ctx.schema}".jobs SET state = 'running', attempts = 2 WHERE id = $1`, [job.id]);
    const queries: unknown[] = [];
    const db = fromPg(ctx.admin);
    const counting = { query: async <R,>(s: Parameters<typeof db.query>[0]) => (queries.push(s), db.query<R>(s)) };
    const writer = new ProgressWriter(counting, ctx.schema, pgq.logger, 10_000);
    const { report } = writer.reporter(job.id, 2);
    await report(5);
    const later = [report(6), report(7), report(8)];
    expect(queries).toHaveLength(1); // the rest wait for the interval
    expect((await pgq.getJob(job.id))!.progress).toBe(5);
    const stale = new ProgressWriter(db, ctx.schema, pgq.logger).reporter(job.id, 1).report;
    await stale(99); // an earlier attempt: not written
    expect((await pgq.getJob(job.id))!.progress).toBe(5);
    expect(() => report(101)).toThrow(/progress: a number must be from 0 to 100/);
    expect(() => report('half' as never)).toThrow(/progress: must be a number/);
    expect(() => report({ blob: 'x'.repeat(5_000) })).toThrow(/over the limit of 4096 bytes/);
    void later;
    await pgq.cancelJob(job.id);
  });
});

describe('workers', () => {
  it('lists workers with their running jobs and the leader, and marks one whose lease expired', async () => {
    const gate = deferred();
    const hold = defineTask({ name: 'hold', queue: 'hold', schema: z.object({}), handler: () => gate.promise });
    const other = ctx.pgq({ tasks: [hold] });
    const worker = other.worker({ concurrency: 3, queues: ['hold'] });
    await worker.start();
    const job = await other.enqueue(hold, {});
    await until(async () => (await pgq.getJob(job.id))?.state === 'running', { what: 'running' });
    const list = await until(async () => {
      const l = await pgq.listWorkers();
      return l.some((w) => w.isLeader) ? l : null;
    }, { what: 'a leader' });
    expect(list).toEqual([expect.objectContaining({ id: worker.id, queues: ['hold'], concurrency: 3, runningJobs: 1, isLeader: true, live: true })]);
    expect(list[0]!.heartbeatAgeSeconds).toBeLessThan(60);
    gate.resolve();
    await other.waitForJob(job.id);
    await worker.stop();
    expect(await pgq.listWorkers()).toEqual([]);
    // A worker that died (its lease expired, no leader to rescue its jobs yet) is listed, and not as live.
    await ctx.admin.query(
      `INSERT INTO "${ctx.schema}".workers (id, hostname, pid, queues, concurrency, rescue_after_ms, lease_expires_at) VALUES ('dead', 'gone', 1, '{hold}', 1, 30000, now() - interval '1 minute')`,
    );
    expect(await pgq.listWorkers()).toEqual([expect.objectContaining({ id: 'dead', live: false })]);
    await ctx.admin.query(`DELETE FROM "${ctx.schema}".workers WHERE id = 'dead'`);
  });
});

describe('the jobs page query and the pruner at 1,000,000 rows', () => {
  beforeAll(async () => {
    await ctx.admin.query(`
      INSERT INTO "${ctx.schema}".jobs (task, queue, state, payload, finished_at)
      SELECT 'bulk-fill', 'q' || (i % 20), CASE WHEN i % 100 = 0 THEN 'failed' ELSE 'succeeded' END, jsonb_build_object('i', i), now()
        FROM generate_series(1, 1000000) AS i`);
    await ctx.admin.query(`ANALYZE "${ctx.schema}".jobs`);
  });

  afterAll(async () => {
    await ctx.admin.query(`DELETE FROM "${ctx.schema}".jobs WHERE task = 'bulk-fill'`);
  });

  it('uses an index for a state and queue filter, newest first', async () => {
    const compiled = pgq.kysely
      .selectFrom('jobs')
      .selectAll()
      .where('state', '=', 'failed')
      .where('queue', '=', 'q0')
      .orderBy('id', 'desc')
      .limit(50)
      .compile();
    const client = await ctx.admin.connect();
    try {
      const { rows } = await client.query(`EXPLAIN (FORMAT JSON) ${compiled.sql}`, compiled.parameters as unknown[]);
      const plan = JSON.stringify(rows[0]['QUERY PLAN']);
      expect(plan).toMatch(/"Index Name":"jobs_state_queue_idx"/);
      expect(plan).not.toMatch(/"Node Type":"Seq Scan"/);
    } finally {
      client.release();
    }
    const page = await pgq.listJobs({ state: 'failed', queue: 'q0', limit: 50 });
    expect(page).toHaveLength(50);
    expect(page.every((j) => j.state === 'failed' && j.queue === 'q0')).toBe(true);
  });

  it('prunes through indexes: a pass over a million finished jobs, none past retention, reads a few pages of a 20,000-page table', async () => {
    const day = 86_400_000;
    const pruner = new Pruner(
      { succeededMs: day, failedMs: 7 * day, cancelledMs: 7 * day, batchSize: 1_000, intervalMs: 60_000, maxBatchesPerPass: 1 },
      pgq.kysely,
      pgq.logger,
    );
    const client = await ctx.admin.connect();
    try {
      for (const state of ['succeeded', 'failed', 'cancelled'] as const) {
        const compiled = pruner.batchQuery(state, 1_000).compile();
        await client.query('BEGIN');
        const { rows } = await client.query(`EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ${compiled.sql}`, compiled.parameters as unknown[]);
        await client.query('ROLLBACK');
        const plan = rows[0]['QUERY PLAN'][0].Plan as { 'Shared Hit Blocks': number; 'Shared Read Blocks': number };
        const text = JSON.stringify(plan);
        // Succeeded rows are only in jobs_state_finished_idx; failed and cancelled ones also in jobs_state_queue_idx (either will do).
        if (state === 'succeeded') expect(text, state).toMatch(/"Index Name":"jobs_state_finished_idx"/);
        expect(text, state).not.toMatch(/"Node Type":"Seq Scan"/);
        // The table is about 20,000 pages (a full read: 21,151). A state the
        // planner sees few rows of may be read from jobs_state_queue_idx, all
        // of that state's rows (here the other tests' cancelled jobs: 189
        // pages on PostgreSQL 18); an empty range of the new index, a handful.
        const pages = plan['Shared Hit Blocks'] + plan['Shared Read Blocks'];
        expect(pages, `${state}: ${text.match(/"Index Name":"[^"]+"/g)?.join(' ')}`).toBeLessThan(500);
      }
      // Whole workflows: the expired rows of each state, then the workflow index.
      const compiled = pruner.workflowBatchQuery(1_000).compile();
      await client.query('BEGIN');
      const { rows } = await client.query(`EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ${compiled.sql}`, compiled.parameters as unknown[]);
      await client.query('ROLLBACK');
      const plan = rows[0]['QUERY PLAN'][0].Plan as { 'Shared Hit Blocks': number; 'Shared Read Blocks': number };
      expect(JSON.stringify(plan), 'workflows').not.toMatch(/"Node Type":"Seq Scan"/);
      expect(plan['Shared Hit Blocks'] + plan['Shared Read Blocks'], 'workflows').toBeLessThan(500);
    } finally {
      await client.query('ROLLBACK').catch(() => undefined);
      client.release();
    }
    expect(await pruner.pruneOnce()).toBe(0);
  });
});

describe('a page of a state a queue has none of, among 200,000 rows', () => {
  beforeAll(async () => {
    // A fifth of the rows in a queue with nothing scheduled; two fifths of
    // them scheduled (a year ahead: nothing claims or promotes them), all in
    // the other queues.
    await ctx.admin.query(`
      INSERT INTO "${ctx.schema}".jobs (task, queue, state, payload, run_at, finished_at)
      SELECT 'stats-fill', CASE WHEN i % 5 = 0 THEN 'stats-empty' ELSE 'stats-q' || (i % 5) END, s.state, '{}',
             now() + interval '1 year', CASE WHEN s.state = 'succeeded' THEN now() END
        FROM generate_series(1, 200000) AS i,
             LATERAL (SELECT CASE WHEN i % 5 <> 0 AND i % 2 = 0 THEN 'scheduled' ELSE 'succeeded' END AS state) AS s`);
    await ctx.admin.query(`ANALYZE "${ctx.schema}".jobs`);
  });

  afterAll(async () => {
    await ctx.admin.query(`DELETE FROM "${ctx.schema}".jobs WHERE task = 'stats-fill'`);
  });

  it('reads a few pages, not the whole table (statistics of states by queue)', async () => {
    // Taking the two shares as independent (scheduled 40%, the queue 20%),
    // the planner expected 16,000 scheduled jobs in the queue and walked the
    // primary key backwards through the whole table (about 4,000 pages) for
    // the 50 it thought it would meet soon.
    const compiled = pgq.kysely.selectFrom('jobs').selectAll().where('state', '=', 'scheduled').where('queue', '=', 'stats-empty').orderBy('id', 'desc').limit(50).compile();
    const client = await ctx.admin.connect();
    try {
      const { rows } = await client.query(`EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ${compiled.sql}`, compiled.parameters as unknown[]);
      const plan = rows[0]['QUERY PLAN'][0].Plan as { 'Shared Hit Blocks': number; 'Shared Read Blocks': number };
      expect(plan['Shared Hit Blocks'] + plan['Shared Read Blocks'], JSON.stringify(plan).match(/"Index Name":"[^"]+"/g)?.join(' ')).toBeLessThan(100);
    } finally {
      client.release();
    }
    expect(await pgq.listJobs({ state: 'scheduled', queue: 'stats-empty', limit: 50 })).toEqual([]);
    expect(await pgq.listJobs({ state: 'scheduled', queue: 'stats-q2', limit: 50 })).toHaveLength(50);
  });
});
