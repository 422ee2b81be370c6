/** What the JSON API and the pages show of a job: the record, minus payload and result when they are hidden. */
import type { JobRecord } from '../core/types.js';

/** A job as the console shows it. */
export type ConsoleJob = Omit<JobRecord, 'payload' | 'result'> & { payload: unknown; result: unknown; payloadHidden: boolean };

export function consoleJob(job: JobRecord, hidePayloads: boolean): ConsoleJob {
  return hidePayloads ? { ...job, payload: null, result: null, payloadHidden: true } : { ...job, payloadHidden: false };
}
