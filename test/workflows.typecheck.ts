/**
 * Type-level tests of workflows, checked by `tsc --noEmit` (never run: the
 * file is not a *.test.ts). Every `@ts-expect-error` line must fail to
 * compile, so a loosened type shows up as "unused @ts-expect-error".
 */
import { z } from 'zod';
import { chain, chord, chunks, defineTask, group, map, step, stepOutcome, type FlowResult, type Pgq, type WorkflowRecord } from '../src/index.js';

declare const pgq: Pgq;

const fetchUser = defineTask({
  name: 'fetch-user',
  schema: z.object({ id: z.number() }),
  handler: ({ id }) => ({ id, email: `${id}@example.com` }),
});
const render = defineTask({
  name: 'render',
  schema: z.object({ id: z.number(), email: z.string() }),
  handler: ({ email }) => `Hello ${email}`,
});
const send = defineTask({ name: 'send', schema: z.string(), handler: (body) => ({ sent: body.length > 0 }) });
const shout = defineTask({ name: 'shout', schema: z.string(), handler: (s) => s.toUpperCase() });
const count = defineTask({ name: 'count', schema: z.array(z.number()), handler: (ns) => ns.length });
const square = defineTask({ name: 'square', schema: z.object({ n: z.number() }), handler: ({ n }) => n * n });
const pair = defineTask({ name: 'pair', schema: z.tuple([z.number(), z.string()]), handler: ([n, s]) => `${s}${n}` });
const tolerant = defineTask({ name: 'tolerant', schema: z.array(stepOutcome(z.number())), handler: (os) => os.filter((o) => o.ok).length });
const squareAll = defineTask({ name: 'square-all', schema: z.array(z.object({ n: z.number() })), handler: (xs) => xs.map(({ n }) => n * n) });
const tolerantOne = defineTask({ name: 'tolerant-one', schema: stepOutcome(z.string()), handler: (o) => (o.ok ? o.value : o.error.step) });

export async function typeTests(): Promise<void> {
  // chain: each input is the previous result; the workflow result is the last.
  const wf = await pgq.enqueueWorkflow(chain(step(fetchUser, { id: 1 }), step(render), step(send)));
  const sent: { sent: boolean } | null = wf.result;
  const again: WorkflowRecord<{ sent: boolean }> = await pgq.waitForWorkflow(wf);
  void sent;
  void again;

  // @ts-expect-error render's input is {id, email}, not send's string
  chain(step(fetchUser, { id: 1 }), step(send));
  // @ts-expect-error the first step has no payload and nothing before it
  await pgq.enqueueWorkflow(chain(step(render), step(send)));
  // @ts-expect-error a payload must match the task schema
  step(fetchUser, { id: 'one' });
  // @ts-expect-error the result of send is not a number
  const wrong: number | null = (await pgq.enqueueWorkflow(chain(step(fetchUser, { id: 1 }), step(render), step(send)))).result;
  void wrong;

  // group: results in member order, as a tuple; a mapped list gives an array.
  const g = group([step(square, { n: 2 }), step(fetchUser, { id: 3 })]);
  const gr: [number, { id: number; email: string }] = null as unknown as FlowResult<typeof g>;
  void gr;
  const squares = group([1, 2, 3].map((n) => step(square, { n })));
  await pgq.enqueueWorkflow(chord(squares, step(count)));
  await pgq.enqueueWorkflow(chord([step(square, { n: 1 }), step(shout, 'x')], step(pair).named('p')));
  // @ts-expect-error the callback gets number[], not strings
  chord(squares, step(send));
  // @ts-expect-error the tuple is [number, {…}], pair wants [number, string]
  chord(g, step(pair));
  // @ts-expect-error a chord's header must be a group
  chord(step(square, { n: 1 }), step(count));
  // @ts-expect-error groups do not nest: wrap the inner one in a chord
  group([squares]);

  // A group's members all get the previous result.
  await pgq.enqueueWorkflow(chain(step(fetchUser, { id: 1 }), group([step(render), step(render)]), step(count).named('n').after(step(square, { n: 1 }))));
  // @ts-expect-error a member of this group cannot take fetchUser's result
  chain(step(fetchUser, { id: 1 }), group([step(render), step(send)]));

  // after(): the input is the list of the dependencies' results.
  const a = step(square, { n: 2 });
  const b = step(shout, 'hi');
  await pgq.enqueueWorkflow(step(pair).after(a, b));
  // @ts-expect-error pair wants [number, string], the deps give [string, number]
  step(pair).after(b, a);
  // @ts-expect-error after() takes flows ending in one step
  step(count).after(squares);

  // onParentFailure('run'): the task takes outcomes; the flow still accepts plain results.
  await pgq.enqueueWorkflow(chord(squares, step(tolerant).onParentFailure('run')));
  await pgq.enqueueWorkflow(chain(step(fetchUser, { id: 1 }), step(render), step(tolerantOne).onParentFailure('run')));
  // @ts-expect-error without 'run' the task would get bare numbers, not outcomes
  chord(squares, step(tolerant));
  // @ts-expect-error outcomes of strings do not accept numbers
  chain(step(square, { n: 1 }), step(tolerantOne).onParentFailure('run'));

  // map: one job per payload; the result is the list of their results.
  const mapped = map(square, [{ n: 1 }, { n: 2 }], { queue: 'math' });
  const mr: number[] = null as unknown as FlowResult<typeof mapped>;
  void mr;
  const mwf = await pgq.enqueueWorkflow(chord(mapped, step(count)));
  const mcount: number | null = mwf.result;
  void mcount;
  await pgq.enqueueWorkflow(chain(step(fetchUser, { id: 1 }), map(square, [{ n: 3 }]), step(count)));
  // @ts-expect-error a payload must match the task's schema
  map(square, [{ n: 'one' }]);
  // @ts-expect-error the callback gets number[], not a string
  chord(map(square, [{ n: 1 }]), step(send));

  // chunks: the task takes a list; the result is one result per chunk.
  const chunked = chunks(squareAll, [{ n: 1 }, { n: 2 }, { n: 3 }], 2);
  const cr: number[][] = null as unknown as FlowResult<typeof chunked>;
  void cr;
  const sumChunks = defineTask({ name: 'sum-chunks', schema: z.array(z.array(z.number())), handler: (xss) => xss.flat().length });
  await pgq.enqueueWorkflow(chord(chunked, step(sumChunks)));
  // @ts-expect-error an item must match the list's item schema
  chunks(squareAll, [{ n: '1' }], 2);
  // @ts-expect-error chunks needs a task whose schema is a list
  chunks(square, [{ n: 1 }], 2);
  // @ts-expect-error the callback gets number[][], not number[]
  chord(chunked, step(count));

  // Results pass on as stored, through JSON: a Date is its ISO text, nothing (void) is null.
  const stamp = defineTask({ name: 'stamp', schema: z.object({ n: z.number() }), handler: ({ n }) => ({ n, at: new Date(), note: undefined as string | undefined }) });
  const useStamp = defineTask({ name: 'use-stamp', schema: z.object({ n: z.number(), at: z.date() }), handler: ({ at }) => at.getTime() });
  const readStamp = defineTask({ name: 'read-stamp', schema: z.object({ n: z.number(), at: z.coerce.date() }), handler: ({ at }) => at.getTime() });
  // @ts-expect-error use-stamp wants a Date; the stored result has its text
  chain(step(stamp, { n: 1 }), step(useStamp));
  await pgq.enqueueWorkflow(chain(step(stamp, { n: 1 }), step(readStamp)));
  const stamped = await pgq.waitForJob(await pgq.enqueue(stamp, { n: 1 }));
  const at: string | undefined = stamped.result?.at;
  const note: string | undefined = stamped.result?.note;
  void at;
  void note;
  // @ts-expect-error the result's at is text, not a Date
  stamped.result?.at.getTime();
  const noop = defineTask({ name: 'noop', schema: z.object({}), handler: () => undefined });
  const cleanup = defineTask({ name: 'cleanup', schema: z.void(), handler: () => 1 });
  const afterNothing = defineTask({ name: 'after-nothing', schema: z.null(), handler: () => 1 });
  // @ts-expect-error noop's result is stored as null, which z.void() refuses
  chain(step(noop, {}), step(cleanup));
  await pgq.enqueueWorkflow(chain(step(noop, {}), step(afterNothing)));
}
