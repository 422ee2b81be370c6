/**
 * What Linux's /proc says of a process, for telling pgq's embedded
 * PostgreSQL and its daemon from whatever process a stale pid names now.
 */
import fs from 'node:fs';

/** The command line of `pid` as its arguments; null where there is no /proc, or the process is gone or not ours to read. */
export function processArgs(pid: number | string): string[] | null {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  } catch {
    return null;
  }
}
