/**
 * Which jobs an inspection or a bulk action is about: one filter shape for
 * `listJobs`, `countJobs`, the bulk `retryJobs`/`cancelJobs`/`deleteJobs`,
 * the console and the CLI, validated in one place and turned into one SQL
 * condition.
 */
import { dateProblem, parseIsoDate } from '../core/dates.js';
import { durationMs } from '../core/cron.js';
import type { Expression, ExpressionBuilder, SqlBool } from 'kysely';
import { sql } from '../db/kysely.js';
import { ValidationError, objectArgument } from '../core/errors.js';
import { parseWorkflowId } from '../core/ids.js';
import { toJsonText } from '../core/json.js';
import { JOB_STATES, type JobState, type Json } from '../core/types.js';
import type { PgqDatabase } from '../db/tables.js';

/**
 * A match on a JSON column: `{ contains }` is JSON containment (`@>`: every
 * key and value given is in the column, e.g. `{ to: 'a@b.co' }`), `{ text }`
 * a case-insensitive substring of a value: of a string, number or boolean
 * anywhere in a payload or result (not of a key), of an error's message or
 * stack.
 */
export type JsonMatch = { contains: Json } | { text: string };

/** Which jobs. Every field narrows; an empty filter means every job. */
export interface JobFilter {
  /** One state or several. */
  state?: JobState | readonly JobState[] | undefined;
  queue?: string | undefined;
  task?: string | undefined;
  /** Enqueued (`created_at`) at or after this time. */
  since?: Date | undefined;
  /** Enqueued before this time. */
  until?: Date | undefined;
  /** On the payload. */
  payload?: JsonMatch | undefined;
  /** On the result. */
  result?: JsonMatch | undefined;
  /** On the errors (`{ text }` searches messages and stacks; `{ contains }` matches an entry, e.g. `{ "attempt": 3 }`, or the list, e.g. `[{ "attempt": 3 }]`). */
  error?: JsonMatch | undefined;
  /** Only jobs of this workflow. */
  workflowId?: string | undefined;
}

/** Filters of `listJobs`: a JobFilter plus keyset paging. */
export interface ListJobsFilter extends JobFilter {
  /** Only jobs with a smaller id: pass the last id of a page to get the next one. */
  before?: string | undefined;
  /** At most this many, newest first. Default 50, at most 1,000. */
  limit?: number | undefined;
}

/** The largest JSON a containment search may give. */
const MAX_MATCH_BYTES = 1_000_000;

const FILTER_FIELDS = ['state', 'queue', 'task', 'since', 'until', 'payload', 'result', 'error', 'workflowId'] as const satisfies readonly (keyof JobFilter)[];
const LIST_FIELDS = [...FILTER_FIELDS, 'before', 'limit'] as const satisfies readonly (keyof ListJobsFilter)[];

/**
 * The filter checked field by field; throws a ValidationError naming the
 * first bad one. A field it does not know is refused: a misspelt
 * `{ sate: 'failed' }` would otherwise match every job, and a bulk delete
 * with it delete them all. `listing`: `before` and `limit` are fields too.
 */
export function validateJobFilter(filter: JobFilter, listing = false): JobFilter {
  objectArgument(filter, 'filter');
  const known: readonly string[] = listing ? LIST_FIELDS : FILTER_FIELDS;
  for (const [key, value] of Object.entries(filter)) {
    // A field given as undefined is left out, as everywhere else (`{ queue: q.queue }` with no queue set).
    if (value !== undefined && !known.includes(key)) {
      const hint = !listing && (key === 'before' || key === 'limit') ? ' (paging is listJobs\' alone)' : '';
      throw new ValidationError(key, `is not a job filter field${hint}; the fields are ${known.join(', ')}`);
    }
  }
  const states = filter.state === undefined ? [] : Array.isArray(filter.state) ? filter.state : [filter.state];
  if (filter.state !== undefined && states.length === 0) throw new ValidationError('state', 'must name at least one state (leave it out to match every state)');
  for (const state of states) {
    if (!JOB_STATES.includes(state as JobState)) throw new ValidationError('state', `must be one of ${JOB_STATES.join(', ')}, got ${JSON.stringify(state)}`);
  }
  for (const key of ['queue', 'task'] as const) {
    const value = filter[key];
    if (value !== undefined && (typeof value !== 'string' || value.length === 0)) throw new ValidationError(key, 'must be a non-empty string');
    if (value?.includes('\u0000')) throw new ValidationError(key, 'contains \\u0000, which no queue or task name can');
  }
  for (const key of ['since', 'until'] as const) {
    const value = filter[key];
    const problem = value === undefined ? null : dateProblem(value);
    if (problem) throw new ValidationError(key, problem);
  }
  for (const key of ['payload', 'result', 'error'] as const) {
    const match = filter[key];
    if (match === undefined) continue;
    if (match === null || typeof match !== 'object') throw new ValidationError(key, 'must be { contains: <json> } or { text: <string> }');
    if ('text' in match && 'contains' in match) throw new ValidationError(key, 'must be { contains: <json> } or { text: <string> }, not both');
    if ('text' in match) {
      if (typeof match.text !== 'string' || match.text.length === 0) throw new ValidationError(`${key}.text`, 'must be a non-empty string');
      if (match.text.includes('\u0000')) throw new ValidationError(`${key}.text`, 'contains \\u0000, which no stored JSON can');
    } else if (!('contains' in match) || match.contains === undefined) {
      throw new ValidationError(key, 'must be { contains: <json> } or { text: <string> }');
    } else {
      // What jsonb cannot hold (\u0000, a lone surrogate, a cycle) cannot be searched for either.
      toJsonText(match.contains, `${key}.contains`, MAX_MATCH_BYTES);
      const empty = emptyContainmentProblem(match.contains);
      if (empty) throw new ValidationError(`${key}.contains`, empty);
    }
  }
  if (filter.workflowId !== undefined) parseWorkflowId(filter.workflowId, 'workflowId');
  return filter;
}

/**
 * Why a containment value looks for nothing, or null: `{}` or `[]` is
 * contained in every object or list, so `errors @> '[]'` held for every job
 * and a bulk action with it (`pgq cancel --error '[]'`) changed them all.
 */
function emptyContainmentProblem(contains: Json): string | null {
  if (contains === null || typeof contains !== 'object' || Object.keys(contains).length > 0) return null;
  const shown = Array.isArray(contains) ? '[]' : '{}';
  return `${shown} is empty: it looks for nothing, so it would match every job; give a key and value to look for, e.g. '{"to":"a@b.co"}', or leave the filter out`;
}

/**
 * Reads `since`/`until` from a command line or query string: a duration back
 * from now (`1h`, `30m`, `2d`) or an ISO 8601 date. A bare number is
 * neither (JavaScript's own reading makes `45` the year 2045, so a bulk
 * delete "until 45" would match every job).
 */
export function parseTimeBack(value: string, key: string): Date {
  const back = durationMs(value);
  if (back !== null) {
    const at = new Date(Date.now() - back);
    if (!Number.isSafeInteger(back) || Number.isNaN(at.getTime())) throw new ValidationError(key, `${JSON.stringify(value)} back from now is before any date JavaScript holds`);
    return at;
  }
  const date = parseIsoDate(value);
  if (!date) throw new ValidationError(key, `must be a duration back from now (1h, 30m, 2d: units ms, s, m for minutes, h, d, in lower case) or an ISO 8601 date (2026-12-01, 2026-12-01T10:00Z), got ${JSON.stringify(value)}`);
  return date;
}

/**
 * Reads a JSON match from a command line or query string (`key` names it in
 * errors): JSON objects and arrays are containment, anything else is text.
 * A value that starts with `{` must be a JSON object: a mistyped one
 * (`{n:1}`) searched as text matched nothing, and a bulk action on it
 * reported success. One that starts with `[` and is not JSON is text
 * (`[ERROR] timeout`). An empty `{}` or `[]` is refused: it would match
 * every job.
 */
export function parseJsonMatch(value: string, key = 'filter'): JsonMatch {
  const trimmed = value.trim();
  if (trimmed.startsWith('{') || trimmed.startsWith('[')) {
    let contains: Json;
    try {
      contains = JSON.parse(trimmed) as Json;
    } catch (err) {
      if (trimmed.startsWith('{')) {
        throw new ValidationError(key, `starts with { but is not a JSON object (${err instanceof Error ? err.message : String(err)}): give JSON such as '{"to":"a@b.co"}'`);
      }
      return { text: value };
    }
    const empty = emptyContainmentProblem(contains);
    if (empty) throw new ValidationError(key, empty);
    return { contains };
  }
  return { text: value };
}

function isJsonObject(value: Json | undefined): value is { [key: string]: Json } {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/**
 * `text` in the message or stack of an entry of `errors`. Values, not the
 * column's JSON text: there a quote or backslash is stored escaped (`\"`),
 * so text holding one found nothing, and key names (`message`, `attempt`)
 * matched every job with an error.
 */
function errorTextCondition(column: Expression<unknown>, text: string): Expression<SqlBool> {
  return sql<SqlBool>`EXISTS (SELECT 1 FROM jsonb_array_elements(${column}) AS error_entry(entry)
    WHERE strpos(lower(coalesce(entry ->> 'message', '') || E'\\n' || coalesce(entry ->> 'stack', '')), lower(${text})) > 0)`;
}

/**
 * `text` in a scalar value anywhere in the document (a string unquoted, a
 * number, true or false as written), not in its keys. `strict` so `.**`
 * does not visit array elements twice; `$.**` includes the document itself,
 * so a bare string payload is searched too.
 */
function valueTextCondition(column: Expression<unknown>, text: string): Expression<SqlBool> {
  return sql<SqlBool>`EXISTS (SELECT 1 FROM jsonb_path_query(${column}, 'strict $.**') AS json_value(item)
    WHERE jsonb_typeof(item) NOT IN ('object', 'array') AND strpos(lower(item #>> '{}'), lower(${text})) > 0)`;
}

/** The filter as one SQL condition on `jobs`. */
export function jobFilterCondition(eb: ExpressionBuilder<PgqDatabase, 'jobs'>, filter: JobFilter): Expression<SqlBool> {
  const and: Expression<SqlBool>[] = [];
  if (filter.state !== undefined) {
    const states = Array.isArray(filter.state) ? [...filter.state] : [filter.state as JobState];
    and.push(states.length === 1 ? eb('state', '=', states[0]!) : eb('state', 'in', states));
  }
  if (filter.queue !== undefined) and.push(eb('queue', '=', filter.queue));
  if (filter.task !== undefined) and.push(eb('task', '=', filter.task));
  if (filter.since !== undefined) and.push(sql<SqlBool>`created_at >= ${filter.since}`);
  if (filter.until !== undefined) and.push(sql<SqlBool>`created_at < ${filter.until}`);
  if (filter.workflowId !== undefined) and.push(eb('workflow_id', '=', parseWorkflowId(filter.workflowId, 'workflowId')));
  const columns = { payload: 'payload', result: 'result', error: 'errors' } as const;
  for (const key of ['payload', 'result', 'error'] as const) {
    const match = filter[key];
    if (match === undefined) continue;
    const column = sql.ref(columns[key]);
    if ('text' in match) {
      and.push(key === 'error' ? errorTextCondition(column, match.text) : valueTextCondition(column, match.text));
      continue;
    }
    // `errors` is a list of entries: an object is looked for as one of them (at the top level it could never match).
    const contains = key === 'error' && isJsonObject(match.contains) ? [match.contains] : match.contains;
    and.push(sql<SqlBool>`${column} @> ${JSON.stringify(contains)}::jsonb`);
  }
  return eb.and(and);
}
