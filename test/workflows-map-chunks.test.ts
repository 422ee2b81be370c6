/**
 * map and chunks: groups built from a list. One job per payload, or one job
 * per chunk of items; results in order for a chord callback; each job with
 * its own retries; bad input refused with a clear error before anything is
 * written.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import {
  chain,
  chord,
  chunks,
  defineTask,
  map,
  MAX_WORKFLOW_STEPS,
  step,
  ValidationError,
  type Pgq,
  type Worker,
} from '../src/index.js';
import { useTestSchema } from './support/harness.js';

const ctx = useTestSchema('workflow_map_chunks');

const square = defineTask({ name: 'square', schema: z.object({ n: z.number() }), handler: ({ n }) => n * n });
const seed = defineTask({ name: 'seed', schema: z.object({ n: z.number() }), handler: ({ n }) => n });
const sum = defineTask({ name: 'sum', schema: z.array(z.number()), handler: (ns) => ns.reduce((a, b) => a + b, 0) });
/** Squares a chunk; the chunk holding 13 fails its first attempt. */
const squareChunk = defineTask({
  name: 'square-chunk',
  schema: z.array(z.number()).max(4),
  maxAttempts: 3,
  backoff: { baseMs: 10, maxMs: 50 },
  handler: (ns, c) => {
    if (ns.includes(13) && c.attempt === 1) throw new Error('13 is unlucky the first time');
    return ns.map((n) => n * n);
  },
});
const flatten = defineTask({
  name: 'flatten',
  schema: z.array(z.array(z.number())),
  handler: (parts) => ({ chunks: parts.length, values: parts.flat() }),
});

let pgq: Pgq;
let worker: Worker;

beforeAll(async () => {
  const tasks = [square, seed, sum, squareChunk, flatten];
  pgq = await ctx.migrated({ tasks });
  worker = ctx.pgq({ tasks }).worker({ concurrency: 10, pollIntervalMs: 100 });
  await worker.start();
});

afterAll(async () => {
  await worker.stop();
});

const countRows = async (): Promise<{ jobs: number; workflows: number }> => {
  const { rows } = await ctx.admin.query(
    `SELECT (SELECT count(*) FROM "${ctx.schema}".jobs)::int AS jobs, (SELECT count(*) FROM "${ctx.schema}".workflows)::int AS workflows`,
  );
  return rows[0];
};

describe('map', () => {
  it('runs one job per payload; the chord callback gets their results in payload order', async () => {
    const payloads = Array.from({ length: 12 }, (_, i) => ({ n: i + 1 }));
    const wf = await pgq.enqueueWorkflow(chord(map(square, payloads, { priority: 3, maxAttempts: 2 }), step(sum)));
    const members = wf.steps.filter((s) => s.task === 'square');
    expect(members.map((s) => s.payload)).toEqual(payloads);
    expect(members.map((s) => s.step)).toEqual(payloads.map((_, i) => `square#${i + 1}`));
    expect(members.map((s) => [s.priority, s.maxAttempts])).toEqual(payloads.map(() => [3, 2]));
    const done = await pgq.waitForWorkflow(wf, { timeoutMs: 20_000 });
    expect(done.state).toBe('succeeded');
    const callback = done.steps.find((s) => s.task === 'sum')!;
    expect(callback.payload).toEqual(payloads.map(({ n }) => n * n));
    expect(done.result).toBe(payloads.reduce((a, { n }) => a + n * n, 0));
  });

  it('ends a workflow with the list of results, and inside a chain waits on the step before it', async () => {
    const alone = await pgq.waitForWorkflow(await pgq.enqueueWorkflow(map(square, [{ n: 2 }, { n: 3 }])), { timeoutMs: 20_000 });
    const results: number[] | null = alone.result;
    expect(results).toEqual([4, 9]);

    const wf = await pgq.enqueueWorkflow(chain(step(seed, { n: 1 }), map(square, [{ n: 4 }, { n: 5 }]), step(sum)));
    // (The running worker may already have claimed `seed`: the order is checked from the edges and the times.)
    const [seedStep, first, second, sumStep] = wf.steps;
    expect(wf.steps.map((s) => s.step)).toEqual(['seed', 'square#1', 'square#2', 'sum']);
    expect([first!.dependsOn, second!.dependsOn, sumStep!.dependsOn]).toEqual([[seedStep!.id], [seedStep!.id], [first!.id, second!.id]]);
    const done = await pgq.waitForWorkflow(wf, { timeoutMs: 20_000 });
    const [seedDone, ...rest] = done.steps;
    for (const s of rest) expect(s.startedAt!.getTime()).toBeGreaterThanOrEqual(seedDone!.finishedAt!.getTime());
    // The members keep their own payloads; the step before only orders them.
    expect(done.steps.map((s) => s.payload)).toEqual([{ n: 1 }, { n: 4 }, { n: 5 }, [16, 25]]);
    expect(done.result).toBe(41);
  });
});

describe('chunks', () => {
  it('splits the items into jobs of `size` (the last shorter); the callback gets one result per chunk, in order', async () => {
    const items = Array.from({ length: 10 }, (_, i) => i + 1);
    const wf = await pgq.enqueueWorkflow(chord(chunks(squareChunk, items, 4), step(flatten)));
    const parts = wf.steps.filter((s) => s.task === 'square-chunk');
    expect(parts.map((s) => s.payload)).toEqual([[1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]);
    const done = await pgq.waitForWorkflow(wf, { timeoutMs: 20_000 });
    expect(done.state).toBe('succeeded');
    expect(done.result).toEqual({ chunks: 3, values: items.map((n) => n * n) });
  });

  it('retries a failed chunk alone; the others run once', async () => {
    const items = Array.from({ length: 16 }, (_, i) => i + 1);
    const wf = await pgq.enqueueWorkflow(chord(chunks(squareChunk, items, 4), step(flatten)));
    const done = await pgq.waitForWorkflow(wf, { timeoutMs: 20_000 });
    expect(done.state).toBe('succeeded');
    const parts = done.steps.filter((s) => s.task === 'square-chunk');
    expect(parts.map((s) => s.attempts)).toEqual([1, 1, 1, 2]);
    expect(parts[3]!.errors[0]!.message).toBe('13 is unlucky the first time');
    expect((done.result as { values: number[] }).values).toEqual(items.map((n) => n * n));
  });

  it('a chunk bigger than the task schema allows is refused at enqueue, naming its step', async () => {
    const before = await countRows();
    const err = await pgq.enqueueWorkflow(chunks(squareChunk, [1, 2, 3, 4, 5, 6], 5)).then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(ValidationError);
    expect((err as Error).message).toMatch(/^steps\["square-chunk#1"\]\.payload: .*4/);
    expect(await countRows()).toEqual(before);
  });
});

describe('bad input', () => {
  it('throws a ValidationError saying what is wrong, and writes nothing', async () => {
    const before = await countRows();
    const tooMany = MAX_WORKFLOW_STEPS + 1;
    const cases: [() => unknown, RegExp][] = [
      [() => map(square, 'nope' as never), /^map\.payloads: must be an array of payloads, got "nope"$/],
      [() => map(square, null as never), /^map\.payloads: must be an array of payloads, got null$/],
      [() => map(square, []), /^map\.payloads: is empty; a group needs at least one job$/],
      [
        () => map(square, Array.from({ length: tooMany }, () => ({ n: 1 }))),
        new RegExp(`^map\\.payloads: ${tooMany} payloads make ${tooMany} jobs, more than the ${MAX_WORKFLOW_STEPS} steps a workflow may have .*use chunks\\(\\)`),
      ],
      [() => chunks(squareChunk, [1, 2], 0), /^chunks\.size: must be a positive integer, got 0$/],
      [() => chunks(squareChunk, [1, 2], -3), /^chunks\.size: must be a positive integer, got -3$/],
      [() => chunks(squareChunk, [1, 2], 1.5), /^chunks\.size: must be a positive integer, got 1\.5$/],
      [() => chunks(squareChunk, [1, 2], Number.NaN), /^chunks\.size: must be a positive integer, got NaN$/],
      [() => chunks(squareChunk, [1, 2], '2' as never), /^chunks\.size: must be a positive integer, got "2"$/],
      [() => chunks(squareChunk, { length: 2 } as never, 2), /^chunks\.items: must be an array of items, got object$/],
      [() => chunks(squareChunk, [], 2), /^chunks\.items: is empty; a group needs at least one job$/],
      [
        () => chunks(squareChunk, Array.from({ length: MAX_WORKFLOW_STEPS * 2 + 1 }, () => 1), 2),
        new RegExp(`^chunks\\.items: ${MAX_WORKFLOW_STEPS * 2 + 1} items in chunks of 2 make ${tooMany} jobs, more than the ${MAX_WORKFLOW_STEPS} steps .*use bigger chunks`),
      ],
    ];
    for (const [build, message] of cases) {
      const err = await (async () => pgq.enqueueWorkflow(build() as never))().then(() => null, (e: unknown) => e);
      expect(err, String(message)).toBeInstanceOf(ValidationError);
      expect((err as Error).message).toMatch(message);
    }
    // At the limit it is the workflow as a whole that is too big: the callback makes one step too many.
    const atLimit = Array.from({ length: MAX_WORKFLOW_STEPS }, () => ({ n: 1 }));
    await expect(pgq.enqueueWorkflow(chord(map(square, atLimit), step(sum)))).rejects.toThrow(
      new RegExp(`^workflow: has more than ${MAX_WORKFLOW_STEPS} steps`),
    );
    expect(await countRows()).toEqual(before);
  });
});
