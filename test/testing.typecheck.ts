/**
 * Type-level tests of `assertEnqueued` / `refuteEnqueued`'s `payloadMatch`,
 * checked by `tsc --noEmit` (never run). Each `@ts-expect-error` line must
 * fail to compile.
 */
import { z } from 'zod';
import { defineTask, type AnyTask, type Pgq } from '../src/index.js';
import { assertEnqueued, refuteEnqueued } from '../src/testing/index.js';

declare const pgq: Pgq;
const sendEmail = defineTask({
  name: 'send-email',
  schema: z.object({ to: z.string(), subject: z.string(), tags: z.array(z.string()), meta: z.object({ campaign: z.string(), round: z.number() }) }),
  handler: () => null,
});

// Any part of the payload, deeply; arrays whole.
await assertEnqueued(pgq, sendEmail, { to: 'a@b.c' });
await assertEnqueued(pgq, sendEmail, { meta: { round: 2 } });
await assertEnqueued(pgq, sendEmail, { tags: ['x', 'y'] });
await assertEnqueued(pgq, sendEmail);
await refuteEnqueued(pgq, sendEmail, { subject: 'hi' }, { queue: 'emails' });
// A misspelt key compiled, and the refute always passed.
// @ts-expect-error no key "too" in the payload
await refuteEnqueued(pgq, sendEmail, { too: 'x' });
// @ts-expect-error a value of the wrong type
await assertEnqueued(pgq, sendEmail, { meta: { round: 'two' } });
// By name, the task's payload is not known: anything goes; so for a value that may be a task or a name.
await assertEnqueued(pgq, 'send-email', { anything: 1 });
declare const either: AnyTask | string;
await assertEnqueued(pgq, either, { anything: 1 });
await refuteEnqueued(pgq, either);
// Compared with the stored payload, the schema's output: a transform's output is what matches.
const parsed = defineTask({ name: 'parsed', schema: z.object({ n: z.string().transform(Number), at: z.coerce.date() }), handler: () => null });
await assertEnqueued(pgq, parsed, { n: 5 });
await assertEnqueued(pgq, parsed, { at: new Date(0) });
await assertEnqueued(pgq, parsed, { at: '1970-01-01T00:00:00.000Z' });
// @ts-expect-error the input's form: stored as the number, it never matched
await refuteEnqueued(pgq, parsed, { n: '5' });
// A value with a toJSON() as itself or its JSON, in lists too.
const linked = defineTask({ name: 'linked', schema: z.object({ u: z.string().transform((s) => new URL(s)), ats: z.array(z.coerce.date()) }), handler: () => null });
await assertEnqueued(pgq, linked, { u: 'https://x.example/a' });
await assertEnqueued(pgq, linked, { u: new URL('https://x.example/a') });
await assertEnqueued(pgq, linked, { ats: ['1970-01-01T00:00:00.000Z', new Date(0)] });
// @ts-expect-error a list's element of the wrong type
await assertEnqueued(pgq, linked, { ats: [5] });
