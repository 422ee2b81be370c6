/**
 * Type-level tests of sandboxed tasks, checked by `tsc --noEmit` (never run).
 * Every `@ts-expect-error` line must fail to compile.
 */
import { z } from 'zod';
import { defineSandboxHandler, defineTask, sandboxed, type Pgq, type TaskResult } from '../src/index.js';
import type echoHandler from './fixtures/sandbox/handlers.js';
import type { compute } from './fixtures/sandbox/handlers.js';
import { computeSchema } from './fixtures/sandbox/schemas.js';

declare const pgq: Pgq;
const module = new URL('./fixtures/sandbox/handlers.js', import.meta.url);

export async function typeTests(): Promise<void> {
  // The task's result is the handler's.
  const computeTask = defineTask({ name: 'c', schema: computeSchema, sandbox: sandboxed<typeof compute>({ module, export: 'compute' }) });
  const rounds: TaskResult<typeof computeTask>['rounds'] = 1;
  const job = await pgq.enqueue(computeTask, { ms: 1 });
  const stoppedBy: 'cap' | 'done' | undefined = job.result?.stoppedBy;
  // Waited for by its record, the job's result is the handler's too.
  const done = await pgq.waitForJob(job, { timeoutMs: 1_000 });
  const doneRounds: number | undefined = done.result?.rounds;
  // @ts-expect-error no such field of the result
  void done.result?.width;
  void doneRounds;
  void rounds;
  void stoppedBy;
  // @ts-expect-error the payload is the schema's input
  await pgq.enqueue(computeTask, { ms: 'soon' });

  // The schema's output must fit the handler's payload.
  const echoSchema = z.object({ text: z.string() });
  defineTask({ name: 'e', schema: echoSchema, sandbox: sandboxed<typeof echoHandler>({ module }) });
  // @ts-expect-error the handler wants { text: string }
  defineTask({ name: 'e2', schema: z.object({ txt: z.string() }), sandbox: sandboxed<typeof echoHandler>({ module }) });

  // Without sandboxed(): any payload, an unknown result.
  const loose = defineTask({ name: 'l', schema: z.number(), sandbox: { module, kind: 'process' } });
  const unknownResult: TaskResult<typeof loose> = 1 as unknown;
  void unknownResult;

  // A handler typed from a schema sees the schema's output.
  defineSandboxHandler(computeSchema, (payload, ctx) => {
    const capMs: number = payload.capMs;
    // @ts-expect-error no such field
    void payload.width;
    return { capMs, attempt: ctx.attempt, aborted: ctx.signal.aborted };
  });
}
