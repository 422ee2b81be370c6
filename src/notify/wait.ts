/**
 * The one wait loop behind `waitForJob` and `waitForWorkflow`: look, and if
 * not done, sleep until a NOTIFY on the channel says something changed, or a
 * poll interval passes. It keeps its timeout whatever the listener and the
 * database are doing: it never waits for the listener longer than the time
 * left, polls every 250 ms while the listener is down, retries looks that
 * fail on a lost connection, and races every look against the deadline.
 */
import type { Clock } from '../core/clock.js';
import { errorMessage, ValidationError } from '../core/errors.js';
import { Waker } from '../core/sleep.js';
import { isConnectionError } from '../db/errors.js';
import type { Listener } from './listener.js';

/** What one look found: the final value, or the state it is still in. */
export type Look<T> = { done: true; value: T } | { done: false; state: string };

export interface WaitOptions<T> {
  channel: string;
  /** Whether a NOTIFY payload on the channel may concern what we wait for. */
  wakesOn(payload: string): boolean;
  look(): Promise<Look<T>>;
  timeoutMs?: number;
  signal?: AbortSignal;
  /** The error for a wait that ran out of time, given the last state seen. */
  timeoutError(state: string): Error;
}

const POLL_LISTENING_MS = 5_000;
const POLL_NOT_LISTENING_MS = 250;
const LOOK_GRACE_MS = 200;
/** The longest delay setTimeout keeps: a longer one fires after 1 ms (Node's TimeoutOverflowWarning). */
const MAX_TIMER_MS = 2 ** 31 - 1;

export async function waitUntilDone<T>(deps: { listener: Listener; clock: Clock }, o: WaitOptions<T>): Promise<T> {
  const { listener, clock } = deps;
  // NaN would make every comparison with the deadline false: no timeout,
  // and no wait between looks either (a loop of queries).
  if (o.timeoutMs !== undefined && (typeof o.timeoutMs !== 'number' || Number.isNaN(o.timeoutMs) || o.timeoutMs < 0)) {
    throw new ValidationError('timeoutMs', `must be a number of milliseconds, 0 or more (Infinity: no limit), got ${String(o.timeoutMs)}`);
  }
  const deadline = o.timeoutMs === undefined ? Infinity : clock.monotonicMs() + o.timeoutMs;
  const left = (): number => deadline - clock.monotonicMs();
  const waker = new Waker();
  const unsubscribe = await listener.subscribe(o.channel, (payload) => {
    if (o.wakesOn(payload)) waker.wake();
  });
  // A NOTIFY sent while the connection was down is lost: a look at once after each reconnect (it waited for
  // the next 5 s poll).
  const unhook = listener.onConnect(() => waker.wake());
  try {
    await listener.ready(Math.min(left() / 2, 1_000));
    let state = 'unknown';
    for (;;) {
      o.signal?.throwIfAborted();
      let look: Look<T> | undefined;
      try {
        // A look may run a little past the deadline, never without bound.
        look = await beforeDeadline(o.look(), Math.max(left(), LOOK_GRACE_MS));
      } catch (err) {
        if (!isConnectionError(err)) throw err;
        state = `unknown (the database did not answer: ${errorMessage(err)})`;
      }
      if (look?.done) return look.value;
      if (look) state = look.state;
      if (left() <= 0) throw o.timeoutError(state);
      await waker.wait(Math.min(left(), listener.connected ? POLL_LISTENING_MS : POLL_NOT_LISTENING_MS), o.signal);
    }
  } finally {
    unhook();
    await unsubscribe();
  }
}

/**
 * The look's result, or undefined once the deadline passes first. A deadline
 * beyond what a timer holds (about 24.8 days) does not bound the look: such a
 * timer fired after 1 ms, before any look could answer, so a wait with
 * `timeoutMs` of 30 days discarded every look and never resolved.
 */
async function beforeDeadline<T>(work: Promise<T>, ms: number): Promise<T | undefined> {
  if (!Number.isFinite(ms) || ms > MAX_TIMER_MS) return work;
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), Math.max(0, ms))));
  work.catch(() => undefined);
  try {
    return await Promise.race([work, late]);
  } finally {
    clearTimeout(timer);
  }
}
