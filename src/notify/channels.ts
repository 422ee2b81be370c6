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

/**
 * How far ahead a delayed job's NOTIFY is sent: a worker polls at least
 * this often (`pollIntervalMs` is at most an hour), and each poll reads the
 * next due time itself.
 */
export const SCHEDULED_NOTIFY_AHEAD_MS = 3_600_000;

/** A `jobs` payload for delayed jobs of `queue`, the first due at `dueAt`: as the insert trigger sends it. */
export function scheduledPayload(queue: string, dueAt: Date): string {
  return `${queue}\n${Math.ceil(dueAt.getTime())}`;
}

/**
 * SQL that wakes the workers of the jobs in `from` (a relation with `queue`,
 * `state` and `run_at`), as the insert trigger does: the queue name for
 * `available` ones, `scheduledPayload` for `scheduled` and `retryable` ones
 * due within SCHEDULED_NOTIFY_AHEAD_MS. Nothing when there are none, or
 * when the SQL condition `when` is false.
 */
export function notifyDueSql(channel: string, from: string, when = 'true'): string {
  return `SELECT pg_notify('${channel}', p.payload) FROM (
      SELECT DISTINCT queue AS payload FROM ${from} WHERE state = 'available'
      UNION ALL
      SELECT queue || E'\\n' || ceil(extract(epoch FROM min(run_at)) * 1000)::bigint FROM ${from}
       WHERE state IN ('scheduled', 'retryable') AND isfinite(run_at)
         AND run_at < now() + interval '${SCHEDULED_NOTIFY_AHEAD_MS} milliseconds'
       GROUP BY queue) AS p
     WHERE ${when}`;
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
