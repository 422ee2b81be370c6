/**
 * Type-level tests of `defineSchedule`, checked by `tsc --noEmit` (never
 * run). Each `@ts-expect-error` line must fail to compile.
 */
import { z } from 'zod';
import { defineSchedule, defineTask, type Pgq } from '../src/index.js';

declare const pgq: Pgq;
const sendEmail = defineTask({
  name: 'send-email',
  schema: z.object({ to: z.string(), subject: z.string(), at: z.coerce.date().optional() }),
  handler: () => null,
});
const refresh = defineTask({ name: 'refresh', schema: z.object({}), handler: () => null });

const nightly = defineSchedule({ name: 'nightly', cron: '0 2 * * *', task: sendEmail, payload: { to: 'ops@example.com', subject: 'Nightly' } });
// The schema's input: z.coerce.date() takes text.
const dated = defineSchedule({ name: 'dated', every: '1h', task: sendEmail, payload: { to: 'a@b.c', subject: 'x', at: '2026-01-01' as unknown } });
pgq.worker({ schedules: [nightly, dated, defineSchedule({ name: 'refresh', every: '5m', task: refresh })] });

// Inline in the option, a wrong payload compiles (checked by pgq.worker() at run time); through defineSchedule it does not.
pgq.worker({ schedules: [{ name: 'loose', every: '5m', task: sendEmail, payload: { too: 'x' } }] });
// @ts-expect-error no key "too" in the payload, and "to" and "subject" are missing
defineSchedule({ name: 'typo', every: '5m', task: sendEmail, payload: { too: 'x' } });
// @ts-expect-error subject must be a string
defineSchedule({ name: 'wrong-type', every: '5m', task: sendEmail, payload: { to: 'a@b.c', subject: 5 } });
// @ts-expect-error a task's name cannot be checked: defineSchedule takes the task itself
defineSchedule({ name: 'by-name', every: '5m', task: 'send-email', payload: {} });

// With no payload the job's is `{}`, which this task's schema refuses (pgq.worker() said so at run time): a task
// that takes `{}` may leave it out, one that does not needs it.
const optionalFields = defineTask({ name: 'optional-fields', schema: z.object({ to: z.string().optional() }), handler: () => null });
pgq.worker({ schedules: [defineSchedule({ name: 'no-payload', every: '5m', task: optionalFields })] });
// @ts-expect-error payload is missing: "to" and "subject" are required
defineSchedule({ name: 'missing', every: '5m', task: sendEmail });
// @ts-expect-error undefined is the default payload, {}, which the schema refuses
defineSchedule({ name: 'undefined', every: '5m', task: sendEmail, payload: undefined });
