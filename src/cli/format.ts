import type { JobRecord, JobState } from '../core/types.js';

/** A plain text table: one header row, columns padded to their widest cell. */
export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd();
  return [line(headers), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

/** `text` cut to at most `max` characters, ending with "…" when cut. */
export function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, Math.max(0, max - 1))}…`;
}

/**
 * A task, queue or workflow name in a table: cut at 40 characters (a long
 * one made rows hundreds of characters wide); `--json` has it whole. Ids,
 * counts and times are never cut.
 */
export function nameCell(name: string): string {
  return truncate(name, 40);
}

/** A duration for people: `850ms`, `12s`, `4m 10s`, `3h 5m`, `2d 4h`. */
export function humanDuration(ms: number): string {
  const abs = Math.abs(ms);
  if (abs < 1_000) return `${Math.round(abs)}ms`;
  const s = Math.round(abs / 1_000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return s % 60 ? `${m}m ${s % 60}s` : `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 24) return m % 60 ? `${h}h ${m % 60}m` : `${h}h`;
  const d = Math.floor(h / 24);
  return h % 24 ? `${d}d ${h % 24}h` : `${d}d`;
}

/**
 * A time in a table: relative to `now`, then local wall-clock time —
 * `3m ago (14:02:11)`, `in 2h (16:05:00)`; the local date too when it is not today.
 */
export function humanTime(date: Date | null, now: Date = new Date()): string {
  if (!date) return '';
  const diff = date.getTime() - now.getTime();
  const relative = Math.abs(diff) < 1_000 ? 'now' : diff < 0 ? `${humanDuration(diff)} ago` : `in ${humanDuration(diff)}`;
  const pad = (n: number): string => String(n).padStart(2, '0');
  const clock = `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
  const sameDay = date.toDateString() === now.toDateString();
  const local = sameDay ? clock : `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ${clock}`;
  return `${relative} (${local})`;
}

/** What a job's state says about it, as the end of a sentence: "job 6 succeeded", "job 7 waits to retry". */
export function stateSentence(state: JobState): string {
  const phrases: Record<JobState, string> = {
    scheduled: 'is scheduled',
    available: 'waits to run',
    running: 'is running',
    retryable: 'waits to retry',
    succeeded: 'succeeded',
    failed: 'failed',
    cancelled: 'is cancelled',
    blocked: 'waits for the jobs it depends on',
  };
  return phrases[state];
}

/** A job's state; a running job whose cancel was asked for says so. */
export function stateCell(job: JobRecord): string {
  return job.state === 'running' && job.cancelRequestedAt ? 'running (cancelling)' : job.state;
}

export function jobRow(job: JobRecord, now: Date = new Date()): string[] {
  return [
    job.id,
    nameCell(job.task),
    nameCell(job.queue),
    stateCell(job),
    `${job.attempts}/${job.maxAttempts}`,
    humanTime(job.runAt, now),
    humanTime(job.finishedAt, now),
    truncate(job.errors.at(-1)?.message.split('\n')[0] ?? '', 60),
  ];
}

export const JOB_HEADERS = ['id', 'task', 'queue', 'state', 'attempts', 'run_at', 'finished_at', 'last_error'];

export function json(value: unknown): string {
  return JSON.stringify(value, null, 2);
}

/** A connection URL fit to print: its password (in the URL or the query string) masked. */
export function redact(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    // pg reads these from the query string too.
    for (const key of ['password', 'sslpassword']) if (u.searchParams.has(key)) u.searchParams.set(key, '***');
    return u.toString();
  } catch {
    return '(unparseable URL)';
  }
}
