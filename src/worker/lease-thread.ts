/**
 * The lease renewer: the loop that keeps a worker's lease alive, run on a
 * thread of its own so that a handler blocking the main event loop for
 * minutes does not cost the worker its lease while its process lives.
 *
 * `leaseThreadMain` is shipped to the thread as source text (it must not use
 * anything from this module's scope: everything arrives as arguments), so
 * the same code runs from `dist/` and from TypeScript sources.
 *
 * Protocol. Shared memory (Float64Array): [LAST_RENEW] the monotonic time at
 * which the last successful renewal was sent, written by the thread; [MAIN_TICK]
 * the main loop's last tick, written by the main thread every `tickMs`;
 * [STUCK] the stuck handler count, written by the main thread.
 * The thread starts with no id and renews nothing until told `renew-as`
 * (right after the main thread registers the row, which may be before the
 * thread is up: the message waits for it). A registration renews the
 * lease (the main thread writes its time to LAST_RENEW before it sends
 * `renew-as`): the thread renews half a heartbeat after LAST_RENEW (the
 * registration's, or for a thread started again after one died, the last
 * renewal's), or at once if that has passed by the time it takes the
 * message, whether or not the main loop runs by then. It loads pg and opens
 * its connection on its first use of the database (that renewal, or a
 * give-back of held jobs while the loop is blocked before it), so neither
 * competes with the worker's start for CPU.
 * Messages to the thread: `renew-as` (the worker id to renew, the first one
 * or a new one after a lost lease, and its registration's time: a row of the
 * same id registered since by another process is not renewed),
 * `running` (the running tasks, for stall reports), `stop`. From the thread:
 * `lost` (the row is gone: stop claiming, re-register), `failing` /
 * `recovered` (renewals fail / work again), `stall` / `stall-end` (the main
 * loop stopped answering for `stallWarnMs`, and how long it was out),
 * `ready` (started), `stopped`.
 */
import type pg from 'pg';
import type { MessagePort } from 'node:worker_threads';
import type { HeldJobsLayout, takeHeldJobs } from './held-jobs.js';

/** Slots of the shared Float64Array. */
export const SLOTS = Object.freeze({ lastRenew: 0, mainTick: 1, stuck: 2 });
export const SHARED_SLOTS = 3;

export interface LeaseThreadData {
  connection: pg.ClientConfig;
  renewText: string;
  workerId: string;
  heartbeatMs: number;
  stallWarnMs: number;
  tickMs: number;
  shared: SharedArrayBuffer;
  slots: typeof SLOTS;
  pid: number;
  /**
   * The kernel's id of the thread whose event loop is watched, where it is
   * known (Linux's /proc/thread-self, read on that thread; without it, the
   * process's main thread is its pid). Null: the process's CPU time decides
   * (a worker in a worker thread read the idle main thread's schedstat, and
   * every computing stall was called a wait).
   */
  mainTask: number | null;
  hostname: string;
  /**
   * The jobs the worker holds claimed but not started (held-jobs.ts): given
   * back once the main loop has not answered for `releaseAfterMs`, with
   * `releaseText` ($1 the worker id, $2 the ids, $3 the last claim taken
   * in when one is in flight; one row: `n` given back, `held` of them from
   * $2). Null: never.
   */
  held: (HeldJobsLayout & { releaseAfterMs: number; releaseText: string }) | null;
}

export type ToLeaseThread =
  | { type: 'renew-as'; workerId: string; registeredAt: string }
  | { type: 'running'; tasks: Record<string, number> }
  | { type: 'stop' };

export type FromLeaseThread =
  | { type: 'ready' }
  | { type: 'lost'; workerId: string }
  | { type: 'failing'; message: string }
  | { type: 'recovered' }
  /** `idle`: the process used little CPU while the loop was out (a synchronous wait, or the process paused), not a computation. */
  | { type: 'stall'; lagMs: number; tasks: Record<string, number>; idle: boolean }
  | { type: 'stall-end'; lagMs: number; idle: boolean }
  | { type: 'stopped' };

interface LeaseThreadDeps {
  /** pg, loaded on the renewer's first use of the database. */
  loadPg: () => typeof import('pg').default;
  /** held-jobs.ts's takeHeldJobs (shipped to the thread as source text too). */
  takeHeld: typeof takeHeldJobs;
  port: MessagePort;
  data: LeaseThreadData;
  writeStderr: (line: string) => void;
  /** fs.readFileSync(path, 'utf8'): the main thread's scheduler statistics are read from /proc where there is one. */
  readText: (path: string) => string;
}

/** The renewal loop. Runs on the lease thread (or, in fallback, on the main thread). */
export async function leaseThreadMain({ loadPg, takeHeld, port, data, writeStderr, readText }: LeaseThreadDeps): Promise<void> {
  const shared = new Float64Array(data.shared);
  const monotonicMs = (): number => Number(process.hrtime.bigint()) / 1e6;
  let workerId = data.workerId;
  let registeredAt = '';
  type Client = InstanceType<ReturnType<typeof loadPg>['Client']>;
  let client = null as Client | null; // set inside connected(): no narrowing to null
  let lost = false;
  let failing = false;
  let stopping = false;
  let tasks: Record<string, number> = {};
  let stallStartedLag = 0;
  let stallMaxLag = 0;
  // The process's CPU time when the main loop was last seen answering: a stall that used little of it since is
  // a synchronous wait (execSync, Atomics.wait, a slow synchronous read) or a paused process (SIGSTOP, a
  // suspended VM), not a handler computing, and is reported as such (it was blamed on CPU-bound handlers).
  // Where the kernel tells it (Linux's schedstat), the main thread's own time on a CPU and waiting in a run
  // queue for one decides instead: CPU time alone took a handler computing on a host short of CPU for a wait
  // (its process got 494 ms of a 2.9 s stall under a load of 9 on two cores).
  const schedstat = data.mainTask === null ? null : `/proc/self/task/${data.mainTask}/schedstat`;
  const mainWantedMs = (): number | null => {
    if (schedstat === null) return null;
    try {
      const [ran, queued] = readText(schedstat).split(' ');
      const ms = (Number(ran) + Number(queued)) / 1e6;
      // "0 0 0": a kernel that keeps no such statistics (sched_info off), not a thread that never ran.
      return Number.isFinite(ms) && ms > 0 ? ms : null;
    } catch {
      return null;
    }
  };
  let answeredCpu = process.cpuUsage();
  let answeredWanted = mainWantedMs();
  let answeredAt = monotonicMs();
  let answeredTick = shared[data.slots.mainTick]!;
  const IDLE_CPU_SHARE = 0.2;
  /** `cpuMs`: the process's CPU time since the loop last answered; `runnableMs`: the main thread's time running or waiting to run (null where unknown). */
  const idleSinceAnswered = (): { idle: boolean; cpuMs: number; runnableMs: number | null } => {
    const used = process.cpuUsage(answeredCpu);
    const cpuMs = (used.user + used.system) / 1000;
    const wanted = mainWantedMs();
    const runnableMs = wanted !== null && answeredWanted !== null ? Math.round(wanted - answeredWanted) : null;
    return { idle: (runnableMs ?? cpuMs) < (monotonicMs() - answeredAt) * IDLE_CPU_SHARE, cpuMs: Math.round(cpuMs), runnableMs };
  };
  let wake: (() => void) | null = null;
  const send = (message: FromLeaseThread): void => port.postMessage(message);
  port.on('message', (message: ToLeaseThread) => {
    if (message.type === 'renew-as') {
      workerId = message.workerId;
      registeredAt = message.registeredAt;
      lost = false;
      // LAST_RENEW is the registration just made (or, for a thread started
      // again after one died, the last renewal). Half a heartbeat on, the
      // first use loads pg and connects well before the pool's fallback
      // would renew instead (lease.ts, #renewThroughPool).
      nextRenewAt = shared[data.slots.lastRenew]! + data.heartbeatMs / 2;
    } else if (message.type === 'running') {
      tasks = message.tasks;
      return;
    } else {
      stopping = true;
    }
    wake?.();
  });
  const held = data.held;
  const heldControl = held && new Int32Array(held.control);
  // The thread's one connection, opened on first use and again after it broke (client = null).
  const connected = async (): Promise<Client> => {
    if (client) return client;
    const fresh = new (loadPg().Client)(data.connection);
    // A connection the server ended while idle (idle_session_timeout, a restart) is let go at once: the next
    // renewal opens another rather than failing on this one first.
    fresh.on('error', () => {
      if (client === fresh) client = null;
    });
    client = fresh;
    await fresh.connect();
    return fresh;
  };
  const log = (level: number, fields: Record<string, unknown>, msg: string): void =>
    writeStderr(`${JSON.stringify({ level, time: Date.now(), pid: data.pid, hostname: data.hostname, name: 'pgq', workerId, ...fields, msg })}\n`);
  const checkMs = Math.max(10, Math.min(data.heartbeatMs, data.stallWarnMs / 2, 1_000, held ? held.releaseAfterMs / 2 : Infinity));
  let nextRenewAt = 0;
  send({ type: 'ready' });
  while (!stopping) {
    const lag = Math.max(0, monotonicMs() - shared[data.slots.mainTick]! - data.tickMs);
    if (lag >= data.stallWarnMs) {
      if (stallStartedLag === 0) {
        stallStartedLag = lag;
        const running = Object.entries(tasks).map(([task, n]) => `${task} ×${n}`).join(', ') || 'no jobs';
        const { idle, cpuMs, runnableMs } = idleSinceAnswered();
        log(
          40,
          { lagMs: Math.round(lag), tasks, cpuMs, runnableMs },
          idle
            ? `pgq worker's event loop has not run for ${Math.round(lag)} ms (running: ${running}), and the process used little CPU meanwhile (${cpuMs} ms): ` +
                'a handler waiting synchronously (execSync, Atomics.wait, a synchronous read of a slow file or socket), or the process was paused (SIGSTOP, a suspended VM or container); its other jobs wait.'
            : `pgq worker's event loop has been blocked for ${Math.round(lag)} ms (running: ${running}); its lease is still renewed, but its other jobs wait. Run CPU-bound handlers in a sandbox.`,
        );
        send({ type: 'stall', lagMs: Math.round(lag), tasks, idle });
      }
      stallMaxLag = Math.max(stallMaxLag, lag);
    } else if (stallStartedLag > 0) {
      send({ type: 'stall-end', lagMs: Math.round(stallMaxLag + data.tickMs), idle: idleSinceAnswered().idle });
      stallStartedLag = 0;
      stallMaxLag = 0;
    }
    // Taken again each time the main loop has ticked since: a stall's CPU is counted from its last tick.
    if (shared[data.slots.mainTick] !== answeredTick) {
      answeredTick = shared[data.slots.mainTick]!;
      answeredCpu = process.cpuUsage();
      answeredWanted = mainWantedMs();
      answeredAt = monotonicMs();
    }
    // Jobs claimed ahead that a blocked loop cannot start go back to the
    // queue (attempt not counted), with a NOTIFY, for other workers to take.
    if (held && heldControl && lag >= held.releaseAfterMs && workerId !== '' && !lost && !stopping) {
      const taken = takeHeld(held);
      if (taken) {
        let given = 0;
        let givenHeld = 0;
        let failed = false;
        try {
          const result = await (await connected()).query({
            text: held.releaseText,
            values: [workerId, taken.ids, taken.claimedAfterUs, registeredAt || null],
          });
          const row = result.rows[0] as { n?: number; held?: number } | undefined;
          given = Number(row?.n ?? 0);
          givenHeld = Number(row?.held ?? 0);
          if (given > 0) log(40, { lagMs: Math.round(lag), jobs: given }, `pgq gave back ${given} job(s) claimed ahead: the worker's event loop has been blocked for ${Math.round(lag)} ms`);
        } catch (err) {
          failed = true;
          const broken = client;
          client = null;
          void broken?.end().catch(() => undefined);
          log(40, { jobs: taken.ids.length }, `pgq could not give back the jobs claimed ahead while the event loop is blocked (the worker gives them back once it runs again): ${err instanceof Error ? err.message : String(err)}`);
        } finally {
          Atomics.store(heldControl, held.slots.releasing, 0);
        }
        // What was not given back here (rescued, cancelled, or the statement failed) the worker
        // reconciles once it runs again; so it does the rows of a claim in flight this missed.
        if (failed || givenHeld < taken.ids.length) Atomics.store(heldControl, held.slots.incomplete, 1);
      }
    }
    if (workerId !== '' && !lost && monotonicMs() >= nextRenewAt) {
      const sentAt = monotonicMs();
      // The id renewed: a `renew-as` may name another while the reply is on its way.
      const renewing = workerId;
      try {
        const result = await (await connected()).query({
          text: data.renewText,
          values: [renewing, shared[data.slots.stuck], Math.round(lag), registeredAt],
        });
        if (renewing !== workerId) {
          // Registered again meanwhile (the pool found the old lease lost): this answer is about the old id.
        } else if (result.rowCount === 0) {
          lost = true;
          send({ type: 'lost', workerId: renewing });
        } else {
          shared[data.slots.lastRenew] = sentAt;
          if (failing) send({ type: 'recovered' });
          failing = false;
        }
      } catch (err) {
        const broken = client;
        client = null;
        void broken?.end().catch(() => undefined);
        if (!failing) send({ type: 'failing', message: err instanceof Error ? err.message : String(err) });
        failing = true;
      }
      nextRenewAt = sentAt + (failing ? Math.min(data.heartbeatMs, 500) : data.heartbeatMs);
    }
    if (stopping) break;
    const waitMs = Math.max(1, Math.min(checkMs, nextRenewAt - monotonicMs()));
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, waitMs);
      function done(): void {
        clearTimeout(timer);
        wake = null;
        resolve();
      }
      wake = done;
    });
  }
  // A connection that went silent never answers the Terminate: the thread's end closes it.
  await Promise.race([client?.end().catch(() => undefined), new Promise((resolve) => setTimeout(resolve, 1_000))]);
  send({ type: 'stopped' });
}
