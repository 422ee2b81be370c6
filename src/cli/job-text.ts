/**
 * `pgq jobs show` and `pgq workflows show` for a person at a terminal: a job
 * as labelled lines, its payload, result and every attempt's error with its
 * stack; a workflow as a tree of its steps with their states.
 */
import type { JobRecord } from '../core/types.js';
import { humanTime, stateCell } from './format.js';
import type { WorkflowRecord, WorkflowStepRecord } from '../workflow/store.js';

/** Relative and local time, as in every table. */
function when(date: Date | null, now: Date): string {
  return humanTime(date, now);
}

function block(title: string, value: unknown): string[] {
  const text = JSON.stringify(value, null, 2) ?? 'null';
  return [title, ...text.split('\n').map((line) => `  ${line}`)];
}

/** A job's progress as text: "45%" or its JSON. */
export function progressText(job: JobRecord): string {
  if (job.progress === null) return '';
  const text = typeof job.progress === 'number' ? `${job.progress}%` : JSON.stringify(job.progress);
  const stale = job.progressAt && job.startedAt && job.progressAt < job.startedAt ? ' (from an earlier attempt)' : '';
  return text + stale;
}

export function jobText(job: JobRecord, now = new Date()): string {
  const rows: [string, string][] = [
    ['task', job.task],
    ['queue', job.queue],
    ['state', stateCell(job)],
    ['cancel', job.state === 'running' && job.cancelRequestedAt ? `asked ${when(job.cancelRequestedAt, now)}: it ends cancelled once its handler has settled` : ''],
    ['attempts', `${job.attempts}/${job.maxAttempts}`],
    ['priority', String(job.priority)],
    ['created', when(job.createdAt, now)],
    ['run at', when(job.runAt, now)],
    ['started', when(job.startedAt, now)],
    ['finished', when(job.finishedAt, now)],
    ['worker', job.workerId ?? ''],
    ['progress', progressText(job)],
    ['workflow', job.workflowId ? `${job.workflowId} (step ${job.workflowStep ?? '?'})` : ''],
    ['unique key', job.uniqueKey ?? ''],
  ];
  const lines = [`job ${job.id}`, ...rows.filter(([, v]) => v !== '').map(([k, v]) => `  ${k.padEnd(10)}  ${v}`), ''];
  lines.push(...block('payload', job.payload));
  if (job.result !== null) lines.push(...block('result', job.result));
  if (job.errors.length > 0) {
    lines.push('errors');
    for (const e of job.errors) {
      lines.push(`  attempt ${e.attempt} at ${e.at}: ${e.message.split('\n')[0]}`);
      const stack = e.stack ?? e.message;
      for (const line of stack.split('\n').slice(1)) lines.push(`    ${line.trim()}`);
    }
  }
  return lines.join('\n');
}

/** The levels of a workflow's tree drawn indented; deeper ones are named instead (`(level 250) └─ …`). */
const DRAWN_LEVELS = 100;

export function workflowTree(workflow: WorkflowRecord): string {
  const steps = new Map(workflow.steps.map((s) => [s.id, s]));
  const children = new Map<string, WorkflowStepRecord[]>();
  const roots: WorkflowStepRecord[] = [];
  for (const step of workflow.steps) {
    // Drawn under its first parent; other parents are named beside it.
    const parent = step.dependsOn.find((id) => steps.has(id));
    if (parent === undefined) roots.push(step);
    else {
      // Pushed, not copied (a copy per child took 146 s for a step followed by a group of 50,000).
      const siblings = children.get(parent);
      if (siblings) siblings.push(step);
      else children.set(parent, [step]);
    }
  }
  const label = (s: WorkflowStepRecord): string => {
    const also = s.dependsOn.slice(1).map((id) => steps.get(id)?.step ?? id);
    return `${s.step} [${s.state}] job ${s.id} (${s.task})${also.length ? ` also after ${also.join(', ')}` : ''}`;
  };
  const lines = [`workflow ${workflow.id} ${workflow.name} [${workflow.state}]`];
  // Depth first with a stack of its own: a chain is as deep as it is long, and a recursion
  // per level ended `pgq workflows show` with "Maximum call stack size exceeded" at 3,000 steps.
  // Levels past DRAWN_LEVELS are not indented further but named: indented, a chain's lines grew
  // with its length, its drawing with the square, and one of 20,000 steps (600 million
  // characters) ended the command with "Invalid string length".
  const stack: { list: WorkflowStepRecord[]; next: number; prefix: string; level: number }[] = [{ list: roots, next: 0, prefix: '', level: 0 }];
  while (stack.length > 0) {
    const top = stack.at(-1)!;
    if (top.next === top.list.length) {
      stack.pop();
      continue;
    }
    const s = top.list[top.next]!;
    top.next += 1;
    const last = top.next === top.list.length;
    const level = top.level > DRAWN_LEVELS ? `(level ${top.level}) ` : '';
    lines.push(`${top.prefix}${level}${last ? '└─ ' : '├─ '}${label(s)}`);
    const below = children.get(s.id);
    if (below) {
      const prefix = top.level < DRAWN_LEVELS ? `${top.prefix}${last ? '   ' : '│  '}` : top.prefix;
      stack.push({ list: below, next: 0, prefix, level: top.level + 1 });
    }
  }
  return lines.join('\n');
}
