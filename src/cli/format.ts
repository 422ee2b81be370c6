import type { JobRecord } from '../core/types.js';

/** A plain text table: one header row, columns padded to their widest cell. */
export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd();
  return [line(headers), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

export function jobRow(job: JobRecord): string[] {
  return [
    job.id,
    job.task,
    job.queue,
    job.state,
    `${job.attempts}/${job.maxAttempts}`,
    job.runAt.toISOString(),
    job.finishedAt?.toISOString() ?? '',
    job.errors.at(-1)?.message.split('\n')[0]?.slice(0, 60) ?? '',
  ];
}

export const JOB_HEADERS = ['id', 'task', 'queue', 'state', 'attempts', 'run_at', 'finished_at', 'last_error'];

export function json(value: unknown): string {
  return JSON.stringify(value, null, 2);
}
