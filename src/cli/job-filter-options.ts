/**
 * The job filter flags shared by `pgq jobs list`, `pgq retry`, `pgq cancel`
 * and `pgq jobs delete`, and their translation into a JobFilter.
 */
import { InvalidArgumentError, type Command } from 'commander';
import { JOB_STATES, type JobState } from '../core/types.js';
import { parseIdFlag } from './options.js';
import { parseJsonMatch, parseTimeBack, type JobFilter, type JsonMatch } from '../jobs/job-filter.js';

/** The flags as commander parses them: a JobFilter, with `--workflow` for `workflowId`. */
export interface JobFilterFlags extends Omit<JobFilter, 'state' | 'workflowId'> {
  state?: JobState[];
  workflow?: string;
}

/** `--state` given twice adds to the first (`--state failed --state cancelled` is both). */
function parseStates(value: string, previous: JobState[] | undefined): JobState[] {
  const states = value.split(',').map((s) => s.trim()).filter(Boolean);
  for (const state of states) {
    if (!(JOB_STATES as readonly string[]).includes(state)) {
      throw new InvalidArgumentError(`--state must be one of ${JOB_STATES.join(', ')} (or several, comma-separated), got ${JSON.stringify(state)}`);
    }
  }
  if (states.length === 0) throw new InvalidArgumentError('--state must name a state');
  return [...new Set([...(previous ?? []), ...(states as JobState[])])];
}

/** A time as a duration back from now ("1h", "30m", "2d") or an ISO 8601 date ("2026-12-01T10:00Z"). */
export function parseTimeAgo(flag: string): (value: string) => Date {
  return (value: string) => {
    try {
      return parseTimeBack(value, flag);
    } catch (err) {
      throw new InvalidArgumentError(err instanceof Error ? err.message : String(err));
    }
  };
}

/** A JSON-or-text match flag, refused by commander with the flag's name (`--payload '{n:1}'`). */
function parseMatch(flag: string): (value: string) => JsonMatch {
  return (value: string) => {
    try {
      return parseJsonMatch(value, flag);
    } catch (err) {
      throw new InvalidArgumentError(err instanceof Error ? err.message : String(err));
    }
  };
}

/** A name flag: an empty one is refused under the flag's name (`--queue=`). */
function parseName(flag: string): (value: string) => string {
  return (value: string) => {
    if (value.trim() === '') throw new InvalidArgumentError(`${flag} must name a ${flag.slice(2)}, got an empty value`);
    return value;
  };
}

/**
 * A flag that takes one value: given twice it is refused (commander kept the
 * last, and `pgq cancel --queue a --queue b` acted on queue b alone).
 */
function once<T>(flag: string, parse: (value: string) => T): (value: string, previous: T | undefined) => T {
  return (value, previous) => {
    if (previous !== undefined) throw new InvalidArgumentError(`${flag} is given twice; it takes one value (--state alone takes several)`);
    return parse(value);
  };
}

/** Adds the filter flags to a command. */
export function addJobFilterOptions(command: Command): Command {
  return command
    .option('--state <states>', `one or more of ${JOB_STATES.join(', ')}, comma-separated`, parseStates)
    .option('--queue <name>', 'only this queue', once('--queue', parseName('--queue')))
    .option('--task <name>', 'only this task', once('--task', parseName('--task')))
    .option('--since <when>', 'enqueued at or after: a duration back from now (1h, 30m, 2d) or an ISO 8601 date', once('--since', parseTimeAgo('--since')))
    .option('--until <when>', 'enqueued before: a duration back from now or an ISO 8601 date', once('--until', parseTimeAgo('--until')))
    .option('--payload <json|text>', 'payload contains this JSON (e.g. \'{"to":"a@b.co"}\'), or this text', once('--payload', parseMatch('--payload')))
    .option('--result <json|text>', 'result contains this JSON, or this text', once('--result', parseMatch('--result')))
    .option('--error <json|text>', 'an error message or stack contains this text, or an error entry contains this JSON (e.g. \'{"attempt":3}\')', once('--error', parseMatch('--error')))
    .option('--workflow <id>', 'only jobs of this workflow', once('--workflow', parseIdFlag('--workflow', 'workflow')));
}

export function toJobFilter(flags: JobFilterFlags): JobFilter {
  const filter: JobFilter = {};
  if (flags.state) filter.state = flags.state.length === 1 ? flags.state[0]! : flags.state;
  if (flags.queue !== undefined) filter.queue = flags.queue;
  if (flags.task !== undefined) filter.task = flags.task;
  if (flags.since) filter.since = flags.since;
  if (flags.until) filter.until = flags.until;
  if (flags.payload) filter.payload = flags.payload;
  if (flags.result) filter.result = flags.result;
  if (flags.error) filter.error = flags.error;
  if (flags.workflow !== undefined) filter.workflowId = flags.workflow;
  return filter;
}

/** Whether any filter flag was given (bulk actions refuse to act on every job by accident). */
export function hasFilter(filter: JobFilter): boolean {
  return Object.keys(filter).length > 0;
}
