/** Job filters from a query string: the console's filter form, its links and the JSON API read them the same way. */
import { ValidationError } from '../core/errors.js';
import { JOB_STATES, type JobState } from '../core/types.js';
import { parseJsonMatch, parseTimeBack, type JobFilter, type ListJobsFilter } from '../jobs/job-filter.js';

const FILTER_KEYS = ['state', 'queue', 'task', 'since', 'until', 'payload', 'result', 'error', 'workflow'] as const;

/** The filter in `params`; empty values are ignored. With `hidePayloads`, payload and result searches are refused. */
export function filterFromQuery(params: URLSearchParams, hidePayloads: boolean): JobFilter {
  const get = (key: string): string | undefined => singleParam(params, key);
  const filter: JobFilter = {};
  const states = params.getAll('state').flatMap((s) => s.split(',')).map((s) => s.trim()).filter(Boolean);
  for (const state of states) {
    if (!(JOB_STATES as readonly string[]).includes(state)) throw new ValidationError('state', `must be one of ${JOB_STATES.join(', ')}, got ${JSON.stringify(state)}`);
  }
  if (states.length) filter.state = states.length === 1 ? (states[0] as JobState) : (states as JobState[]);
  const queue = get('queue');
  const task = get('task');
  const since = get('since');
  const until = get('until');
  const workflow = get('workflow');
  if (queue) filter.queue = queue;
  if (task) filter.task = task;
  if (since) filter.since = parseTimeBack(since, 'since');
  if (until) filter.until = parseTimeBack(until, 'until');
  if (workflow) filter.workflowId = workflow;
  for (const key of ['payload', 'result', 'error'] as const) {
    const value = get(key);
    if (!value) continue;
    if (hidePayloads && key !== 'error') throw new ValidationError(key, 'payloads and results are hidden in this console, so they cannot be searched');
    filter[key] = parseJsonMatch(value, key);
  }
  return filter;
}

/** Keys whose value is a name, matched exactly: a queue or task named " sp " is not "sp" (nor, as " ", no filter at all). */
const EXACT_KEYS: readonly string[] = ['queue', 'task'];

/**
 * The one value of `key` in `params`, or undefined when it is not given or
 * empty (a form's empty field). Names are taken as they are; other values
 * lose the spaces around them. A key given twice is refused: one of the
 * values was dropped before, and a bulk action then acted on it alone.
 */
export function singleParam(params: URLSearchParams, key: string): string | undefined {
  const values = params
    .getAll(key)
    .map((v) => asGiven(key, v))
    .filter((v) => v !== '');
  if (values.length > 1) throw new ValidationError(key, `is given ${values.length} times; it takes one value (state alone takes several)`);
  return values[0];
}

/** A value as the filter reads it: a name as it is, anything else without the spaces around it; '' is not given. */
function asGiven(key: string, value: string): string {
  return EXACT_KEYS.includes(key) ? value : value.trim();
}

/** The filter plus `before` and `limit`. */
export function listFromQuery(params: URLSearchParams, hidePayloads: boolean): ListJobsFilter {
  const filter: ListJobsFilter = filterFromQuery(params, hidePayloads);
  const before = singleParam(params, 'before');
  const limit = singleParam(params, 'limit');
  if (before) filter.before = before;
  if (limit) {
    if (!/^\d+$/.test(limit)) throw new ValidationError('limit', `must be a whole number, got ${JSON.stringify(limit)}`);
    filter.limit = Number(limit);
  }
  return filter;
}

/**
 * Refuses a query-string key that is neither a filter nor one of `also`:
 * a misspelt `queu=emails` would otherwise be no filter at all, and a bulk
 * delete with it delete every job the rest matches.
 */
export function refuseUnknownParams(params: URLSearchParams, also: readonly string[] = []): void {
  for (const key of params.keys()) {
    if (!(FILTER_KEYS as readonly string[]).includes(key) && !also.includes(key)) {
      throw new ValidationError(key, `is not a job filter; the filters are ${FILTER_KEYS.join(', ')}`);
    }
  }
}

/** The filter's own query-string entries (for links that keep it). */
export function filterParams(params: URLSearchParams): URLSearchParams {
  const out = new URLSearchParams();
  for (const key of FILTER_KEYS) for (const value of params.getAll(key)) if (asGiven(key, value) !== '') out.append(key, value);
  return out;
}

/** Whether the query string names a filter that constrains anything (`state=,` names none; an empty JSON match, `error=[]`, is refused as a ValidationError): what a bulk action needs. */
export function hasFilterParams(params: URLSearchParams, hidePayloads: boolean): boolean {
  return Object.keys(filterFromQuery(params, hidePayloads)).length > 0;
}
