/**
 * Task schemas other than zod: any Standard Schema (`~standard.validate`),
 * here a hand-written one, synchronous and asynchronous. Checked wherever a
 * payload is: enqueue and enqueueMany, workflows and map(), schedules,
 * before the handler runs, performJob and drain. A bad payload is refused
 * with the validator's message and path, and nothing is written.
 */
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { defineTask, map, step, ValidationError, type StandardSchemaV1 } from '../src/index.js';
import { drain, performJob } from '../src/testing/index.js';
import { validatePayloads } from '../src/core/validate-payloads.js';
import { useTestSchema } from './support/harness.js';

const ctx = useTestSchema('standard_schema');

interface OrderIn {
  lines: { sku: string; qty: number | string }[];
}
interface OrderOut {
  lines: { sku: string; qty: number }[];
}

/** A tiny validator: an order's lines, each quantity a positive whole number (a numeric string is turned into one). */
function checkOrder(value: unknown): StandardSchemaV1.Result<OrderOut> {
  const lines = (value as { lines?: unknown } | null)?.lines;
  if (!Array.isArray(lines)) return { issues: [{ message: 'must be a list of lines', path: ['lines'] }] };
  const out: OrderOut['lines'] = [];
  for (const [i, line] of lines.entries()) {
    const { sku, qty } = (line ?? {}) as { sku?: unknown; qty?: unknown };
    if (typeof sku !== 'string' || sku === '') return { issues: [{ message: 'must be a non-empty string', path: ['lines', i, 'sku'] }] };
    const n = typeof qty === 'string' && qty.trim() !== '' ? Number(qty) : qty;
    if (typeof n !== 'number' || !Number.isInteger(n) || n < 1) {
      // Path segments may also be objects ({ key }), as valibot gives them.
      return { issues: [{ message: 'must be a positive whole number', path: [{ key: 'lines' }, { key: i }, { key: 'qty' }] }, { message: 'second issue' }] };
    }
    out.push({ sku, qty: n });
  }
  return { value: { lines: out } };
}

function standard<In, Out>(validate: StandardSchemaV1.Props<In, Out>['validate']): StandardSchemaV1<In, Out> {
  return { '~standard': { version: 1, vendor: 'pgq-test', validate } };
}

const orderSchema = standard<OrderIn, OrderOut>(checkOrder);
/** The same validator, answering on a later turn of the event loop. */
const asyncOrderSchema = standard<OrderIn, OrderOut>((value) => new Promise((resolve) => setImmediate(() => resolve(checkOrder(value)))));

const totalOf = (order: OrderOut): { total: number; types: string[] } => ({
  total: order.lines.reduce((sum, line) => sum + line.qty, 0),
  types: order.lines.map((line) => typeof line.qty),
});

const order = defineTask({ name: 'order', schema: orderSchema, handler: (payload) => totalOf(payload) });
const asyncOrder = defineTask({ name: 'async-order', schema: asyncOrderSchema, handler: (payload) => totalOf(payload) });
const exploding = defineTask({
  name: 'exploding',
  schema: standard<{ n: number }, { n: number }>(() => {
    throw new Error('validator exploded');
  }),
  handler: () => null,
});

async function rows(table = 'jobs', where = 'true'): Promise<number> {
  const { rows: found } = await ctx.admin.query<{ n: number }>(`SELECT count(*)::int AS n FROM "${ctx.schema}".${table} WHERE ${where}`);
  return found[0]!.n;
}

async function clear(): Promise<void> {
  await ctx.admin.query(`TRUNCATE "${ctx.schema}".jobs, "${ctx.schema}".workflows, "${ctx.schema}".schedules CASCADE`);
}

describe('a Standard Schema as a task schema', () => {
  it('defineTask takes it and refuses what is not a schema', () => {
    expect(order.schema).toBe(orderSchema);
    expect(() => defineTask({ name: 'bad', schema: { parse: () => 1 } as unknown as StandardSchemaV1, handler: () => null })).toThrow(
      /task bad\.schema: must be a zod schema or another Standard Schema/,
    );
  });

  it('enqueue stores the validated output; a bad payload names the issue and its path and writes nothing', async () => {
    const pgq = await ctx.migrated({ tasks: [order, asyncOrder] });
    await clear();
    const job = await pgq.enqueue(order, { lines: [{ sku: 'a', qty: '2' }, { sku: 'b', qty: 3 }] });
    expect(job.payload).toEqual({ lines: [{ sku: 'a', qty: 2 }, { sku: 'b', qty: 3 }] });
    expect((await pgq.getJob(job.id))?.payload).toEqual(job.payload);

    const bad = pgq.enqueue(order, { lines: [{ sku: 'a', qty: 1 }, { sku: 'b', qty: 'none' }] });
    await expect(bad).rejects.toThrow(ValidationError);
    await expect(bad).rejects.toThrow('payload.lines[1].qty: must be a positive whole number (and 1 more issue)');
    await expect(bad).rejects.toMatchObject({ field: 'payload.lines[1].qty' });
    await expect(pgq.enqueue(order, { lines: [{ sku: '', qty: 1 }] })).rejects.toThrow('payload.lines[0].sku: must be a non-empty string');
    expect(await rows()).toBe(1);

    const many = pgq.enqueueMany(order, [{ lines: [] }, { lines: [{ sku: 'c', qty: 1 }] }, { lines: [{ sku: 'd', qty: 0 }] }]);
    await expect(many).rejects.toThrow('payload[2].lines[0].qty: must be a positive whole number');
    expect(await rows()).toBe(1);
  });

  it('an asynchronous validator is awaited: enqueue and enqueueMany write valid payloads and nothing for a bad one', async () => {
    const pgq = await ctx.migrated({ tasks: [order, asyncOrder] });
    await clear();
    const job = await pgq.enqueue(asyncOrder, { lines: [{ sku: 'a', qty: '4' }] });
    expect(job.payload).toEqual({ lines: [{ sku: 'a', qty: 4 }] });
    const jobs = await pgq.enqueueMany(asyncOrder, [{ lines: [{ sku: 'b', qty: '1' }] }, { lines: [{ sku: 'c', qty: 2 }] }]);
    expect(jobs.map((j) => j.payload)).toEqual([{ lines: [{ sku: 'b', qty: 1 }] }, { lines: [{ sku: 'c', qty: 2 }] }]);
    expect(await rows()).toBe(3);

    await expect(pgq.enqueue(asyncOrder, { lines: [{ sku: 'a', qty: -1 }] })).rejects.toThrow(
      'payload.lines[0].qty: must be a positive whole number',
    );
    await expect(pgq.enqueueMany(asyncOrder, [{ lines: [{ sku: 'ok', qty: 1 }] }, { lines: 'x' } as unknown as OrderIn])).rejects.toThrow(
      'payload[1].lines: must be a list of lines',
    );
    expect(await rows()).toBe(3);
  });

  it('a validator that throws rejects the enqueue with its error and writes nothing', async () => {
    const pgq = await ctx.migrated({ tasks: [exploding] });
    await clear();
    await expect(pgq.enqueue(exploding, { n: 1 })).rejects.toThrow('validator exploded');
    await expect(pgq.enqueueMany(exploding, [{ n: 1 }, { n: 2 }])).rejects.toThrow('validator exploded');
    expect(await rows()).toBe(0);
  });

  it('the handler gets the validated output; a stored payload that no longer validates fails that one job', async () => {
    const pgq = await ctx.migrated({ tasks: [order, asyncOrder] });
    await clear();
    const good = await pgq.enqueue(order, { lines: [{ sku: 'a', qty: '2' }, { sku: 'b', qty: 5 }] });
    const goodAsync = await pgq.enqueue(asyncOrder, { lines: [{ sku: 'a', qty: '3' }] });
    const stale = (task: string, payload: unknown): Promise<string> =>
      ctx.admin
        .query<{ id: string }>(`INSERT INTO "${ctx.schema}".jobs (task, payload) VALUES ($1, $2) RETURNING id`, [task, JSON.stringify(payload)])
        .then((r) => String(r.rows[0]!.id));
    const badId = await stale('order', { lines: [{ sku: 'a', qty: 0 }] });
    const badAsyncId = await stale('async-order', { lines: [{ sku: '', qty: 1 }] });

    expect(await drain(pgq)).toEqual({ processed: 4, succeeded: 2, retried: 0, failed: 2 });
    expect((await pgq.getJob(good.id))?.result).toEqual({ total: 7, types: ['number', 'number'] });
    expect((await pgq.getJob(goodAsync.id))?.result).toEqual({ total: 3, types: ['number'] });
    const bad = await pgq.getJob(badId);
    expect(bad).toMatchObject({ state: 'failed', attempts: 1 });
    expect(bad!.errors[0]!.message).toBe(
      'stored payload no longer matches the schema of task order: payload.lines[0].qty: must be a positive whole number (and 1 more issue)',
    );
    const badAsync = await pgq.getJob(badAsyncId);
    expect(badAsync).toMatchObject({ state: 'failed', attempts: 1 });
    expect(badAsync!.errors[0]!.message).toBe('stored payload no longer matches the schema of task async-order: payload.lines[0].sku: must be a non-empty string');
  });

  it('workflows and map() check every payload before anything is written', async () => {
    const pgq = await ctx.migrated({ tasks: [order, asyncOrder] });
    await clear();
    const orders = [{ lines: [{ sku: 'a', qty: '1' }] }, { lines: [{ sku: 'b', qty: 2 }] }];
    const wf = await pgq.enqueueWorkflow(map(asyncOrder, orders));
    expect(wf.steps.map((s) => s.payload)).toEqual([{ lines: [{ sku: 'a', qty: 1 }] }, { lines: [{ sku: 'b', qty: 2 }] }]);
    const before = { jobs: await rows('jobs'), workflows: await rows('workflows') };

    await expect(pgq.enqueueWorkflow(map(asyncOrder, [...orders, { lines: [{ sku: 'c', qty: 'x' }] }]))).rejects.toThrow(
      'steps["async-order#3"].payload.lines[0].qty: must be a positive whole number',
    );
    await expect(pgq.enqueueWorkflow(step(order, { lines: [{ sku: '', qty: 1 }] }), { name: 'one' })).rejects.toThrow(
      'steps["order"].payload.lines[0].sku: must be a non-empty string',
    );
    expect({ jobs: await rows('jobs'), workflows: await rows('workflows') }).toEqual(before);
    expect(await drain(pgq)).toMatchObject({ succeeded: 2, failed: 0 });
    expect((await pgq.getWorkflow(wf.id))?.result).toEqual([{ total: 1, types: ['number'] }, { total: 2, types: ['number'] }]);
  });

  it('schedules check their payload: pgq.schedule() and, for an asynchronous validator, worker.start()', async () => {
    const pgq = await ctx.migrated({ tasks: [order, asyncOrder] });
    await clear();
    const saved = await pgq.schedule({ name: 'restock', every: '1h', task: asyncOrder, payload: { lines: [{ sku: 'a', qty: '6' }] } });
    expect(saved.payload).toEqual({ lines: [{ sku: 'a', qty: 6 }] });
    await expect(pgq.schedule({ name: 'bad', every: '1h', task: asyncOrder, payload: { lines: [{ sku: 'a', qty: 0 }] } })).rejects.toThrow(
      'payload.lines[0].qty: must be a positive whole number',
    );
    expect(() => pgq.worker({ leader: false, schedules: [{ name: 'bad', every: '1h', task: order, payload: { lines: [{ sku: '', qty: 1 }] } }] })).toThrow(
      'worker.schedules[0].payload.lines[0].sku: must be a non-empty string',
    );
    const worker = pgq.worker({
      leader: false,
      schedules: [
        { name: 'fine', every: '1h', task: order, payload: { lines: [{ sku: 'a', qty: 1 }] } },
        { name: 'late-bad', every: '1h', task: asyncOrder, payload: { lines: [{ sku: 'a', qty: 'many' }] } },
      ],
    });
    await expect(worker.start()).rejects.toThrow('worker.schedules[1].payload.lines[0].qty: must be a positive whole number');
    expect(await rows('schedules', `name IN ('bad', 'fine', 'late-bad')`)).toBe(0);
  });

  it('performJob validates with it, synchronous or not', async () => {
    expect(await performJob(order, { lines: [{ sku: 'a', qty: '2' }] })).toEqual({ total: 2, types: ['number'] });
    expect(await performJob(asyncOrder, { lines: [{ sku: 'a', qty: '5' }] })).toEqual({ total: 5, types: ['number'] });
    await expect(performJob(asyncOrder, { lines: [{ sku: 'a', qty: 0 }] })).rejects.toThrow('payload.lines[0].qty: must be a positive whole number');
  });
});

describe('validatePayloads', () => {
  it('answers synchronously for zod and for a synchronous validator', () => {
    const checked = validatePayloads([
      { schema: z.object({ n: z.number().default(1) }), value: {}, field: 'a' },
      { schema: orderSchema, value: { lines: [{ sku: 'x', qty: '1' }] }, field: 'b' },
    ]);
    expect(checked).toEqual([{ n: 1 }, { lines: [{ sku: 'x', qty: 1 }] }]);
  });

  it('names the first bad value in order, whichever validator answered first', async () => {
    const checks = [
      { schema: asyncOrderSchema, value: { lines: [{ sku: 'a', qty: 0 }] }, field: 'payload[0]' },
      { schema: orderSchema, value: { lines: [{ sku: '', qty: 1 }] }, field: 'payload[1]' },
    ];
    const checked = validatePayloads(checks);
    expect(checked).toBeInstanceOf(Promise);
    await expect(checked).rejects.toThrow('payload[0].lines[0].qty');
    await expect(validatePayloads(checks.slice().reverse())).rejects.toThrow('payload[1].lines[0].sku');
    // A validator that throws after a bad value: the bad value is named.
    expect(() => validatePayloads([checks[1]!, { schema: exploding.schema, value: {}, field: 'payload[2]' }])).toThrow('payload[1].lines[0].sku');
  });

  it('takes zod asynchronous refinements, which safeParse cannot', async () => {
    const schema = z.object({ name: z.string().refine(async (s) => s !== 'taken', 'is taken') });
    await expect(validatePayloads([{ schema, value: { name: 'free' }, field: 'payload' }])).resolves.toEqual([{ name: 'free' }]);
    await expect(validatePayloads([{ schema, value: { name: 'taken' }, field: 'payload' }])).rejects.toThrow('payload.name: is taken');
  });
});
