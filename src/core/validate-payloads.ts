/**
 * Payload validation through a task's Standard Schema, the one place that
 * calls a schema's `~standard.validate`.
 *
 * A validator may answer with a promise (an async refinement, say). Every
 * caller stays synchronous while its validators are: it awaits only when a
 * promise came back, so a zod schema costs what `safeParse` costs. A batch
 * is checked as a whole and the error names its first bad payload in order,
 * however the validators answered.
 */
import { ValidationError } from './errors.js';
import { toJson } from './json.js';
import type { StandardSchemaV1 } from './standard-schema.js';

/** One value to check: the schema, the value, and where it sits (`payload[3]`, `steps["a"].payload`). */
export interface PayloadCheck {
  schema: StandardSchemaV1;
  value: unknown;
  field: string;
}

type Result = StandardSchemaV1.Result<unknown>;

/** True for a Standard Schema: an object (or function, as arktype's are) with `~standard.validate`. */
export function isStandardSchema(value: unknown): value is StandardSchemaV1 {
  if (value === null || (typeof value !== 'object' && typeof value !== 'function')) return false;
  const props = (value as Partial<StandardSchemaV1>)['~standard'];
  return props !== null && typeof props === 'object' && props.version === 1 && typeof props.validate === 'function';
}

export function isPromiseLike<T>(value: T | PromiseLike<T>): value is PromiseLike<T> {
  return value !== null && typeof value === 'object' && typeof (value as Partial<PromiseLike<T>>).then === 'function';
}

/**
 * The schema's verdict on `value`; a promise only when the validator gave
 * one. Throws what the validator throws, and a TypeError when what it
 * returned is not a Standard Schema result.
 */
export function runSchema(schema: StandardSchemaV1, value: unknown): Result | Promise<Result> {
  const result = schema['~standard'].validate(value);
  return isPromiseLike(result) ? Promise.resolve(result).then(checkResult) : checkResult(result);
}

function checkResult(result: Result): Result {
  if (result === null || typeof result !== 'object') {
    throw new TypeError(`the schema's ~standard.validate returned ${String(result)}, not a Standard Schema result ({ value } or { issues })`);
  }
  return result;
}

/** One value validated (its schema's output), as `validatePayloads` does it, awaited. */
export async function validatePayload(check: PayloadCheck): Promise<unknown> {
  const checked = validatePayloads([check]);
  return (Array.isArray(checked) ? checked : await checked)[0];
}

/**
 * The validated values (the schemas' outputs), in order; a promise only when
 * some validator answered with one. Throws (or rejects with) a
 * ValidationError naming the first bad value's field and its issue.
 */
export function validatePayloads(checks: readonly PayloadCheck[]): unknown[] | Promise<unknown[]> {
  const results: (Result | Promise<Result>)[] = [];
  let pending = false;
  for (const check of checks) {
    let result: Result | Promise<Result>;
    try {
      result = runSchema(check.schema, check.value);
    } catch (err) {
      if (!pending) {
        outputs(results as Result[], checks); // an earlier bad value is named first
        throw err;
      }
      // Rejected rather than thrown, so the pending answers before it are still awaited (and their rejections handled).
      result = Promise.reject(err);
    }
    if (isPromiseLike(result)) pending = true;
    results.push(result);
  }
  if (!pending) return outputs(results as Result[], checks);
  return Promise.allSettled(results).then((settled) =>
    settled.map((s, i) => {
      if (s.status === 'rejected') throw s.reason;
      return output(s.value, checks[i]!);
    }),
  );
}

/**
 * The JSON texts to store for validated values (`outputs`, the schemas'
 * outputs for `checks`), each no larger than `maxBytes`. A worker reads a
 * payload back from its JSON through the schema again, so where JSON
 * changes a value (a Date becomes its ISO text, an `undefined` array item
 * null, a Map `{}`) the stored form is validated too, and refused here
 * rather than failing its job for good on the first attempt. A promise only
 * when a validator answered with one.
 */
export function storedTexts(checks: readonly PayloadCheck[], outputs: readonly unknown[], maxBytes: number): string[] | Promise<string[]> {
  const texts: string[] = [];
  const again: PayloadCheck[] = [];
  outputs.forEach((value, i) => {
    const check = checks[i]!;
    const { text, changed } = toJson(value, check.field, maxBytes);
    texts.push(text);
    if (changed) again.push({ schema: check.schema, value: JSON.parse(text) as unknown, field: check.field });
  });
  if (again.length === 0) return texts;
  let checked: unknown[] | Promise<unknown[]>;
  try {
    checked = validatePayloads(again);
  } catch (err) {
    throw asStored(err);
  }
  return Array.isArray(checked) ? texts : checked.then(() => texts, (err: unknown) => Promise.reject(asStored(err)));
}

/** A stored form's ValidationError, saying why a value that passed is refused. */
function asStored(err: unknown): unknown {
  if (!(err instanceof ValidationError)) return err;
  const message = err.message.slice(err.field.length + 2);
  return new ValidationError(
    err.field,
    `${message}, in the form stored as JSON and validated again before the handler runs (JSON turns a Date into its ISO text, an undefined array item into null, a Map, Set or class instance into a plain object): give the schema what JSON keeps (z.coerce.date() for a Date, say)`,
    { cause: err },
  );
}

function outputs(results: readonly Result[], checks: readonly PayloadCheck[]): unknown[] {
  return results.map((result, i) => output(result, checks[i]!));
}

function output(result: Result, check: PayloadCheck): unknown {
  if (result.issues) throw issuesToValidationError(result.issues, check.field);
  return result.value;
}

/**
 * A ValidationError for a failed validation: the first issue's field under
 * `prefix` (`payload.items[2].sku`) and its message, with a count of the rest.
 */
export function issuesToValidationError(issues: readonly StandardSchemaV1.Issue[], prefix: string, cause: unknown = issues): ValidationError {
  const issue = issues[0];
  if (!issue) return new ValidationError(prefix, 'is invalid', { cause });
  const field = (issue.path ?? []).reduce<string>((acc, segment) => {
    const key = segment !== null && typeof segment === 'object' ? segment.key : segment;
    return typeof key === 'number' ? `${acc}[${key}]` : `${acc}.${String(key)}`;
  }, prefix);
  const more = issues.length > 1 ? ` (and ${issues.length - 1} more issue${issues.length > 2 ? 's' : ''})` : '';
  return new ValidationError(field, `${issue.message}${more}`, { cause });
}
