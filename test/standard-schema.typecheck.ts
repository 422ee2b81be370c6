/**
 * Type-level tests of task schemas, checked by `tsc --noEmit` (never run).
 * A zod schema types a task exactly as zod's own `z.input` / `z.output` do;
 * any other Standard Schema types it from its `~standard.types`. Every
 * `@ts-expect-error` line must fail to compile.
 */
import { expectTypeOf } from 'vitest';
import { z } from 'zod';
import {
  chain,
  chunks,
  defineSandboxHandler,
  defineTask,
  Pgq,
  step,
  type AnyTask,
  type JobRecord,
  type StandardSchemaV1,
  type Task,
  type TaskInput,
  type TaskResult,
} from '../src/index.js';
import { performJob } from '../src/testing/index.js';

declare const pgq: Pgq;

// Input and output differ: a default and a transform.
const orderSchema = z.object({
  sku: z.string(),
  qty: z.string().transform(Number),
  gift: z.boolean().default(false),
});
type OrderIn = z.input<typeof orderSchema>;
type OrderOut = z.output<typeof orderSchema>;

const placeOrder = defineTask({
  name: 'place-order',
  schema: orderSchema,
  concurrencyKey: (payload) => {
    expectTypeOf(payload).toEqualTypeOf<OrderOut>();
    return payload.sku;
  },
  handler: (payload, ctx) => {
    expectTypeOf(payload).toEqualTypeOf<OrderOut>();
    expectTypeOf(ctx.job.payload).toEqualTypeOf<OrderOut>();
    return { total: payload.qty };
  },
});

/** What a Standard Schema library gives: its types under `~standard.types`. */
declare const lineSchema: StandardSchemaV1<{ sku: string; qty: number | string }, { sku: string; qty: number }>;
declare const linesSchema: StandardSchemaV1<{ sku: string; qty: number | string }[], { sku: string; qty: number }[]>;

const addLine = defineTask({
  name: 'add-line',
  schema: lineSchema,
  handler: (payload, ctx) => {
    expectTypeOf(payload).toEqualTypeOf<{ sku: string; qty: number }>();
    expectTypeOf(ctx.job.payload).toEqualTypeOf<{ sku: string; qty: number }>();
    return payload.qty;
  },
});
const addLines = defineTask({ name: 'add-lines', schema: linesSchema, handler: (lines) => lines.length });

export async function typeTests(): Promise<void> {
  // zod: the payload at enqueue is the schema's input, the handler's its output.
  expectTypeOf<TaskInput<typeof placeOrder>>().toEqualTypeOf<OrderIn>();
  expectTypeOf<TaskResult<typeof placeOrder>>().toEqualTypeOf<{ total: number }>();
  const job = await pgq.enqueue(placeOrder, { sku: 'a', qty: '2' });
  expectTypeOf(job).toEqualTypeOf<JobRecord<OrderIn, { total: number }>>();
  // @ts-expect-error qty is a string at enqueue (the transform makes it a number)
  await pgq.enqueue(placeOrder, { sku: 'a', qty: 2 });
  // @ts-expect-error sku is required
  await pgq.enqueueMany(placeOrder, [{ qty: '1' }]);
  expectTypeOf(await performJob(placeOrder, { sku: 'a', qty: '1', gift: true })).toEqualTypeOf<{ total: number }>();

  // Another Standard Schema: the same, from its declared types.
  expectTypeOf<TaskInput<typeof addLine>>().toEqualTypeOf<{ sku: string; qty: number | string }>();
  await pgq.enqueue(addLine, { sku: 'a', qty: '3' });
  // @ts-expect-error qty is a number or a string
  await pgq.enqueue(addLine, { sku: 'a', qty: true });
  expectTypeOf(await performJob(addLine, { sku: 'a', qty: 1 })).toEqualTypeOf<number>();

  // Every task is an AnyTask, whatever its schema.
  const tasks: AnyTask[] = [placeOrder, addLine, addLines];
  new Pgq({ connectionString: 'postgres://localhost/db', tasks });
  // A task typed by hand, as the docs write it, still fits.
  const byHand: Task<z.ZodType<{ id: number }, { id: number }>, string> = defineTask({
    name: 'by-hand',
    schema: z.object({ id: z.number() }),
    handler: ({ id }) => String(id),
  });
  void byHand;

  // Workflows: chunks() of a list task, chains checked across schemas.
  chunks(addLines, [{ sku: 'a', qty: 1 }], 10);
  // @ts-expect-error an item of add-lines is a line, not a number
  chunks(addLines, [1, 2], 10);
  // @ts-expect-error add-line's schema is not a list
  chunks(addLine, [{ sku: 'a', qty: 1 }], 10);
  const counted = defineTask({ name: 'counted', schema: z.number(), handler: (n) => n + 1 });
  chain(step(addLine, { sku: 'a', qty: 1 }), step(counted));
  // @ts-expect-error add-line's result (a number) is not an order
  chain(step(counted, 1), step(addLine));

  // A sandboxed handler typed from a Standard Schema sees its output.
  defineSandboxHandler(lineSchema, (payload) => {
    expectTypeOf(payload).toEqualTypeOf<{ sku: string; qty: number }>();
    return payload.qty;
  });

  // @ts-expect-error a schema needs ~standard
  defineTask({ name: 'no-schema', schema: { parse: (v: unknown) => v }, handler: () => null });
}
