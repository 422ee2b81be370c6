/** What the JSON API and the pages show of a job or a schedule: the record, minus payload and result when they are hidden. */
import type { JobRecord } from '../core/types.js';
import type { ScheduleRecord } from '../schedules.js';

/** A job as the console shows it. */
export type ConsoleJob = Omit<JobRecord, 'payload' | 'result'> & { payload: unknown; result: unknown; payloadHidden: boolean };

export function consoleJob(job: JobRecord, hidePayloads: boolean): ConsoleJob {
  return hidePayloads ? { ...job, payload: null, result: null, payloadHidden: true } : { ...job, payloadHidden: false };
}

/** A schedule as the console shows it: the payload its jobs get is a payload too. */
export type ConsoleSchedule = Omit<ScheduleRecord, 'payload'> & { payload: unknown; payloadHidden: boolean };

export function consoleSchedule(schedule: ScheduleRecord, hidePayloads: boolean): ConsoleSchedule {
  return hidePayloads ? { ...schedule, payload: null, payloadHidden: true } : { ...schedule, payloadHidden: false };
}
