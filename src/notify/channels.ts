/**
 * NOTIFY channels of one schema. The `jobs` channel name is also written in
 * the first migration's trigger ('pgq:' || schema || ':jobs'), and the `jobs`
 * and `queues` names in the queue-control migration's trigger: keep them equal.
 */
export interface ChannelNames {
  /**
   * Due jobs were inserted or made available; payload: the queue name. Or
   * delayed jobs were inserted; payload: `scheduledPayload` (the queue and
   * the earliest `run_at`).
   */
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

/** A `jobs` payload for delayed jobs of `queue`, the first due at `dueAt`: as the insert trigger sends it. */
export function scheduledPayload(queue: string, dueAt: Date): string {
  return `${queue}\n${Math.ceil(dueAt.getTime())}`;
}

/**
 * A `jobs` payload for delayed jobs read back: the queue and when the first
 * is due (epoch ms); undefined for a payload naming due jobs' queue.
 */
export function readScheduledPayload(payload: string): { queue: string; dueAt: number } | undefined {
  const at = payload.lastIndexOf('\n');
  if (at < 0) return undefined;
  const digits = payload.slice(at + 1);
  return /^\d{1,15}$/.test(digits) ? { queue: payload.slice(0, at), dueAt: Number(digits) } : undefined;
}

/**
 * Longest `done` payload pgq sends: PostgreSQL refuses a NOTIFY payload of
 * 8,000 bytes or more, so a longer list of ids is split (`donePayloads`) or
 * sent as '*' (`notifyDoneSql`), which wakes every waiter.
 */
export const DONE_PAYLOAD_MAX = 7_000;

/** The ids as comma-joined `done` payloads of at most `DONE_PAYLOAD_MAX` characters each. */
export function donePayloads(ids: readonly string[]): string[] {
  const payloads: string[] = [];
  let current = '';
  for (const id of ids) {
    if (current && current.length + id.length + 1 > DONE_PAYLOAD_MAX) {
      payloads.push(current);
      current = '';
    }
    current = current ? `${current},${id}` : id;
  }
  if (current) payloads.push(current);
  return payloads;
}

/** Whether a `done` payload may concern an id `wanted` accepts ('*' concerns every id). */
export function doneMentions(payload: string, wanted: (id: string) => boolean): boolean {
  return payload === '*' || payload.split(',').some(wanted);
}

/**
 * SQL that sends one `done` NOTIFY for the ids of `from` (a relation with an
 * `id` column): the ids comma-joined, or '*' when they would not fit; nothing
 * when `from` is empty.
 */
export function notifyDoneSql(channel: string, from: string): string {
  return `SELECT pg_notify('${channel}', CASE WHEN sum(length(id::text) + 1) <= ${DONE_PAYLOAD_MAX}
        THEN string_agg(id::text, ',') ELSE '*' END) FROM ${from} HAVING count(*) > 0`;
}
