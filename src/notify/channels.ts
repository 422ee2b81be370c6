/**
 * NOTIFY channels of one schema. The `jobs` channel name is also written in
 * the first migration's trigger ('pgq:' || schema || ':jobs'), and the `jobs`
 * and `queues` names in the queue-control migration's trigger: keep them equal.
 */
export interface ChannelNames {
  /** Due jobs were inserted or made available; payload: the queue name. */
  jobs: string;
  /** Jobs reached a final state; payload: comma-separated ids, or '*'. */
  done: string;
  /** A running job was cancelled; payload: its id. */
  cancel: string;
  /** A queue's pause switch or limits changed (queues trigger); payload: the queue name. */
  queues: string;
  /** Schedules were saved, paused or resumed (wakes the scheduler); payload: the schedule name, or '*'. */
  schedules: string;
}

export function channelNames(schema: string): ChannelNames {
  return {
    jobs: `pgq:${schema}:jobs`,
    done: `pgq:${schema}:done`,
    cancel: `pgq:${schema}:cancel`,
    queues: `pgq:${schema}:queues`,
    schedules: `pgq:${schema}:schedules`,
  };
}
