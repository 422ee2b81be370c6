/**
 * A worker's lease: its `workers` row, whose `lease_expires_at` the worker
 * alone renews from its own `rescueAfterMs`. The lease is what makes the
 * attempts a worker claimed its own: claims succeed only while it is live,
 * and the rescuer takes attempts away only once it has passed.
 *
 * States: unregistered → registered (renewed every `heartbeatMs` by the lease
 * thread) → lost (the rescuer removed the row: the worker stops claiming,
 * registers under a new id and adopts the attempts still its own) →
 * registered … → stopped.
 *
 * Renewal runs on a thread of its own with its own connection (see
 * lease-thread.ts), so a handler that blocks the main event loop does not
 * cost the lease while the process lives; the same thread reports stalls of
 * the main loop. Where the connection settings cannot be handed to a thread
 * (a password callback, say), renewal runs on the main thread instead, with
 * a warning.
 *
 * Fallback: while the renewer has had no renewal succeed for over a heartbeat
 * (its connection refused, as after a password rotation or at the server's
 * connection limit, while the pool's connections still work), the main
 * thread renews through the pool as well, so a worker that can reach the
 * database at all keeps its lease, and its running attempts are not rescued
 * from under handlers that still run.
 *
 * Trust window: the main thread claims only while `trusted`: the last
 * renewal that succeeded was sent less than `rescueAfterMs - heartbeatMs`
 * ago, so the lease the database holds outlives any claim sent now by at
 * least a heartbeat.
 */
import os from 'node:os';
import { createRequire } from 'node:module';
import { MessageChannel, Worker as Thread, isMainThread } from 'node:worker_threads';
import fs from 'node:fs';
import pg from 'pg';
import type { Logger } from '../core/logger.js';
import { PgqError } from '../core/errors.js';
import { heartbeatLimitMs } from '../core/defaults.js';
import type { Queryable } from '../db/queryable.js';
import type { HotStatements } from '../db/statements.js';
import {
  SHARED_SLOTS,
  SLOTS,
  leaseThreadMain,
  type FromLeaseThread,
  type LeaseThreadData,
  type ToLeaseThread,
} from './lease-thread.js';
import { takeHeldJobs, type HeldJobsLayout } from './held-jobs.js';
import { Rescuer } from '../maintenance/rescuer.js';
import { sleep } from '../core/sleep.js';

export interface LeaseConfig {
  /** The id asked for; a re-registration after a lost lease appends `~2`, `~3`, … */
  workerId: string;
  queues: readonly string[];
  /** The task names the worker can run, written into its row with every registration. */
  tasks: readonly string[];
  concurrency: number;
  heartbeatMs: number;
  rescueAfterMs: number;
  /** Warn when the main event loop has not answered for this long. */
  stallWarnMs: number;
  /** Connection for the renewal thread; null renews on the main thread. */
  connection: pg.ClientConfig | null;
  /** The producer's held jobs, which the thread gives back after the main loop has not answered for `releaseAfterMs`. */
  held: { layout: HeldJobsLayout; releaseAfterMs: number } | null;
}

export interface LeaseEvents {
  /** The lease was lost: the row is gone, its attempts may have been rescued. */
  lost(formerWorkerId: string): void;
  /** The main loop stopped answering (reported once it answers again), or came back after `lagMs`. */
  stall(lagMs: number, tasks: Record<string, number>, ended: boolean, idle: boolean): void;
}

const TICK_MS = 100;
const monotonicMs = (): number => Number(process.hrtime.bigint()) / 1e6;

export class Lease {
  readonly #shared = new Float64Array(new SharedArrayBuffer(SHARED_SLOTS * Float64Array.BYTES_PER_ELEMENT));
  #workerId: string;
  /** The current id's registration (`Registration.registeredAt`); empty while not registered (before, during a registration after a lost lease, once started again). */
  #registeredAt = '';
  #incarnation = 1;
  #lost = false;
  /** Registered again after a lost lease, and the worker has not yet sorted what it kept from what was rescued. */
  #adopting = false;
  #port: { postMessage(message: ToLeaseThread): void } | undefined;
  #thread: Thread | undefined;
  #threadExited: Promise<void> | undefined;
  #running: Promise<void> | undefined;
  /** A registration is under way: its id is not in the table yet, and register() tells the thread once it is. */
  #registering = false;
  #inProcess: Promise<void> | undefined;
  #stopped: Promise<void> | undefined;
  #tick: NodeJS.Timeout | undefined;
  #lastRunningPost = 0;
  #runningPostTimer: NodeJS.Timeout | undefined;
  /** The tasks of the last running list posted to the thread. */
  #postedTasks = new Set<string>();
  #fallbackTimer: NodeJS.Timeout | undefined;
  #fallbackInFlight = false;
  /** The renewer said its renewals fail, and has not said they work again. */
  #renewerFailing = false;
  /** Told that the pool renews while the renewer cannot (once per failing spell). */
  #toldPoolRenews = false;
  /** Told that the lease ran out while renewals failed (once per failing spell). */
  #toldExpired = false;

  constructor(
    private readonly config: LeaseConfig,
    private readonly db: Queryable,
    private readonly statements: HotStatements,
    private readonly logger: Logger,
    private readonly events: LeaseEvents,
  ) {
    this.#workerId = config.workerId;
  }

  /** The id this worker is registered under now (it changes after a lost lease). */
  get workerId(): string {
    return this.#workerId;
  }

  /** Every id this worker has registered under (the first, then `~2`, `~3`, … after lost leases): its attempts are under one of them. */
  get ids(): string[] {
    const ids = [this.config.workerId];
    for (let n = 2; n <= this.#incarnation; n += 1) ids.push(`${this.config.workerId}~${n}`);
    return ids;
  }

  /** The current id's registration time (`workers.started_at`, ISO 8601); empty until registered. */
  get registeredAt(): string {
    return this.#registeredAt;
  }

  /** Whether a claim sent now is covered by the lease with a heartbeat to spare. */
  get trusted(): boolean {
    if (this.#lost || this.#adopting) return false;
    return monotonicMs() < this.#shared[SLOTS.lastRenew]! + this.config.rescueAfterMs - this.config.heartbeatMs;
  }

  /**
   * Registers the worker row (the first lease) and hands it to the renewer.
   * Throws if a live worker holds the id. A row whose lease has run out (a
   * killed worker's) is rescued here, as a leader would; one whose lease runs
   * at most this worker's rescueAfterMs more is waited out when `signal` is
   * given (a start: a worker of a fixed id killed and started again at
   * once), unless it is renewed meanwhile (a live worker) or `signal`
   * aborts (a stop).
   */
  async register(signal?: AbortSignal): Promise<void> {
    let sentAt = monotonicMs();
    this.#registering = true;
    const insert = () =>
      this.statements.registerWorker(this.db, {
        workerId: this.#workerId,
        hostname: os.hostname(),
        pid: process.pid,
        queues: [...this.config.queues],
        concurrency: this.config.concurrency,
        rescueAfterMs: this.config.rescueAfterMs,
        tasks: [...this.config.tasks],
      });
    let registration: Awaited<ReturnType<typeof insert>>;
    try {
      registration = await insert();
      if (!registration) {
        // The id's row may be a dead worker's (a fixed id, its process killed): its lease has run out, but only a
        // leader's rescuer removes the row and gives its jobs back, and with no other worker running there is no
        // leader. Do the rescuer's pass here (it touches only workers whose lease has run out), then try again.
        const rescuer = new Rescuer({ rescueAfterMs: this.config.rescueAfterMs, intervalMs: 0 }, this.db, this.statements, this.logger);
        await rescuer.rescueOnce();
        sentAt = monotonicMs();
        registration = await insert();
        const held = registration ? null : await this.statements.workerLease(this.db, { workerId: this.#workerId, legacyRescueAfterMs: this.config.rescueAfterMs });
        // Only a start waits (it passes the stop's signal): a registration again after a lost lease takes the next
        // id at once, its rescued attempts waiting to be signalled.
        if (held && signal && held.leftMs <= this.config.rescueAfterMs) {
          this.logger.warn(
            { workerId: this.#workerId, leaseLeftMs: Math.round(held.leftMs) },
            `pgq worker id ${JSON.stringify(this.#workerId)} is registered by a worker whose lease runs ${Math.round(Math.max(0, held.leftMs))} ms more: ` +
              'waiting for it to run out (a worker killed and started again); if that worker lives, it renews the lease and this start fails',
          );
          await sleep(Math.max(0, held.leftMs) + 100, signal);
          signal?.throwIfAborted();
          const after = await this.statements.workerLease(this.db, { workerId: this.#workerId, legacyRescueAfterMs: this.config.rescueAfterMs });
          if (after === null || after.lease === held.lease) {
            await rescuer.rescueOnce();
            sentAt = monotonicMs();
            registration = await insert();
          }
        }
      }
    } finally {
      this.#registering = false;
    }
    if (!registration) {
      throw new PgqError(
        'PGQ_WORKER_ID_TAKEN',
        `worker id ${JSON.stringify(this.#workerId)} is already registered by a live worker (its lease has not run out): two live workers cannot share an id (the id of a stopped or killed worker is free once its lease, rescueAfterMs, has run out)`,
      );
    }
    this.#shared[SLOTS.lastRenew] = sentAt;
    this.#lost = false;
    this.#registeredAt = registration.registeredAt;
    this.#port?.postMessage({ type: 'renew-as', workerId: this.#workerId, registeredAt: this.#registeredAt });
  }

  /**
   * Starts the renewer; it renews from `register()` on. On a thread, resolves
   * once the thread is spawned: `register()` may follow at once (the thread
   * takes its `renew-as` when it is up, whatever the main loop does by then)
   * and `running` resolves once the thread runs. In-process, resolves once
   * the renewer runs.
   */
  async start(): Promise<void> {
    if (this.#port) return;
    // Started again after a stop (a worker's start that failed): a new renewer, stopped by the next stop().
    await this.#stopped;
    this.#stopped = undefined;
    this.#registeredAt = '';
    this.#shared[SLOTS.mainTick] = monotonicMs();
    this.#tick = setInterval(() => (this.#shared[SLOTS.mainTick] = monotonicMs()), TICK_MS);
    this.#tick.unref();
    this.#fallbackTimer = setInterval(() => {
      this.#tellIfExpired();
      void this.#renewThroughPool();
    }, Math.max(10, this.config.heartbeatMs / 4));
    this.#fallbackTimer.unref();
    const data: LeaseThreadData = {
      connection: this.config.connection ?? {},
      renewText: this.statements.renewLeaseStatement({ workerId: '', stuckJobs: 0, loopLagMs: 0, registeredAt: '' }).text,
      workerId: '',
      heartbeatMs: this.config.heartbeatMs,
      stallWarnMs: this.config.stallWarnMs,
      tickMs: TICK_MS,
      shared: this.#shared.buffer as SharedArrayBuffer,
      slots: SLOTS,
      pid: process.pid,
      mainTask: watchedTask(),
      hostname: os.hostname(),
      held: this.config.held && {
        ...this.config.held.layout,
        releaseAfterMs: this.config.held.releaseAfterMs,
        releaseText: this.statements.releaseHeldText,
      },
    };
    let ready!: () => void;
    const started = new Promise<void>((resolve) => (ready = resolve));
    const onMessage = (message: FromLeaseThread): void => {
      if (message.type === 'ready') ready();
      this.#onMessage(message);
    };
    const threadable = this.config.connection && transferable(this.config.connection);
    if (threadable) {
      this.#spawnThread(data, onMessage);
      this.#running = Promise.race([started, this.#threadExited!]);
      return;
    }
    if (this.config.connection) {
      this.logger.warn({}, 'pgq renews this worker\'s lease on the main thread (its connection settings cannot be passed to a thread): a handler that blocks the event loop for rescueAfterMs loses the lease');
    }
    const channel = new MessageChannel();
    channel.port1.on('message', onMessage);
    channel.port1.unref();
    this.#port = channel.port1;
    this.#inProcess = leaseThreadMain({
      loadPg: () => pg,
      takeHeld: takeHeldJobs,
      port: channel.port2,
      data: { ...data, connection: this.config.connection ?? {}, stallWarnMs: Number.MAX_SAFE_INTEGER, held: null },
      writeStderr: (line) => fs.writeSync(2, line),
      readText: (file) => fs.readFileSync(file, 'utf8'),
    }).finally(() => channel.port2.close());
    this.#running = started;
    await started;
  }

  /** Resolves once the renewer runs (or its first thread exited: another is started). */
  get running(): Promise<void> {
    return this.#running ?? Promise.resolve();
  }

  /** Runs the renewal loop on a thread; a thread that dies is replaced while the lease is wanted. */
  #spawnThread(data: LeaseThreadData, onMessage: (message: FromLeaseThread) => void): void {
    const pgPath = createRequire(import.meta.url).resolve('pg');
    // pg probes for Cloudflare Workers when it loads: where `navigator` is
    // missing (Node.js 20) it constructs a fetch `Response`, which loads
    // Node's fetch implementation: half of the thread's start-up CPU. This
    // thread's global is pgq's alone; a `navigator` that is not Cloudflare's
    // gives pg the same answer without it.
    const source = `
      var __name = (f) => f;
      globalThis.navigator ??= { userAgent: 'Node.js' };
      const { parentPort, workerData } = require('node:worker_threads');
      (${leaseThreadMain.toString()})({
        loadPg: () => require(${JSON.stringify(pgPath)}),
        takeHeld: (${takeHeldJobs.toString()}),
        port: parentPort,
        data: workerData,
        writeStderr: (line) => require('node:fs').writeSync(2, line),
        readText: (file) => require('node:fs').readFileSync(file, 'utf8'),
      }).catch((err) => { require('node:fs').writeSync(2, 'pgq lease thread failed: ' + (err && err.stack || err) + '\\n'); process.exit(1); });`;
    // No inherited loader flags (such as --import tsx): the source is plain JavaScript, and the thread must start fast.
    const thread = new Thread(source, { eval: true, workerData: data, execArgv: [], stdout: false, stderr: false });
    thread.unref();
    thread.on('message', onMessage);
    thread.on('error', (err) => this.logger.error({ err: err.message }, `pgq lease thread failed: ${err.message}`));
    this.#threadExited = new Promise<void>((resolve) => thread.once('exit', () => resolve()));
    this.#thread = thread;
    this.#port = thread;
    thread.once('exit', (code) => {
      this.#releaseHeldLock();
      if (this.#stopped || this.#thread !== thread) return;
      this.logger.error({ code }, `pgq lease thread exited (${code}); starting another`);
      setTimeout(() => {
        if (this.#stopped || this.#thread !== thread) return;
        this.#spawnThread(data, onMessage);
        // Before the first registration there is nothing to renew, and during a
        // registration the new id is not in the table yet (a renewal now would
        // report it lost): register() tells the thread.
        if (this.#registeredAt && !this.#registering) {
          this.#port?.postMessage({ type: 'renew-as', workerId: this.#workerId, registeredAt: this.#registeredAt });
        }
      }, 100).unref();
    });
  }

  /**
   * A thread that died while it held the held jobs' lock, or while it gave
   * them back, must not hold back the claims; what it took and may not have
   * given back, the worker reconciles.
   */
  #releaseHeldLock(): void {
    const held = this.config.held?.layout;
    if (!held) return;
    const control = new Int32Array(held.control);
    Atomics.compareExchange(control, held.slots.lock, held.lock.thread, held.lock.free);
    Atomics.store(control, held.slots.incomplete, 1);
    Atomics.store(control, held.slots.releasing, 0);
  }

  /**
   * After a lost lease: registers under a new id; returns it. The caller
   * adopts what is still its own, then calls `adopted()`: until then the
   * lease is not trusted, so nothing is claimed under the new id while an
   * attempt rescued from the old one may still run here unsignalled.
   */
  async reregister(): Promise<string> {
    this.#incarnation += 1;
    this.#workerId = `${this.config.workerId}~${this.#incarnation}`;
    this.#registeredAt = '';
    this.#adopting = true;
    await this.register();
    return this.#workerId;
  }

  /** What the worker kept after `reregister()` is sorted out: claims may go on. */
  adopted(): void {
    this.#adopting = false;
  }

  /** The stuck handler count, written into the lease row at the next renewal. */
  setStuck(count: number): void {
    this.#shared[SLOTS.stuck] = count;
  }

  /**
   * The running tasks, for the thread's stall report: at most every 250 ms,
   * except that a job of a task missing from the last list (`started`) is
   * told at once. A handler that blocks the loop blocks it right after it
   * starts, so a list left to a timer would name what ran before it.
   */
  reportRunning(tasks: () => Record<string, number>, started?: string): void {
    if (!this.#port) return;
    const urgent = started !== undefined && !this.#postedTasks.has(started);
    if (this.#runningPostTimer && !urgent) return;
    const post = (): void => {
      clearTimeout(this.#runningPostTimer);
      this.#runningPostTimer = undefined;
      this.#lastRunningPost = monotonicMs();
      const list = tasks();
      this.#postedTasks = new Set(Object.keys(list));
      this.#port?.postMessage({ type: 'running', tasks: list });
    };
    const wait = this.#lastRunningPost + 250 - monotonicMs();
    if (urgent || wait <= 0) return post();
    this.#runningPostTimer = setTimeout(post, wait);
    this.#runningPostTimer.unref();
  }

  /** Stops renewing; resolves once the renewer has closed its connection. */
  stop(): Promise<void> {
    this.#stopped ??= this.#stop();
    return this.#stopped;
  }

  async #stop(): Promise<void> {
    clearInterval(this.#tick);
    clearInterval(this.#fallbackTimer);
    clearTimeout(this.#runningPostTimer);
    const port = this.#port;
    if (!port) return;
    const thread = this.#thread;
    if (thread) {
      const exited = this.#threadExited!;
      const stopped = new Promise<void>((resolve) => thread.on('message', (m: FromLeaseThread) => m.type === 'stopped' && resolve()));
      port.postMessage({ type: 'stop' });
      const timer = setTimeout(() => void thread.terminate(), 5_000);
      await Promise.race([stopped, exited]);
      clearTimeout(timer);
      await thread.terminate();
    } else {
      port.postMessage({ type: 'stop' });
      await this.#inProcess;
    }
    this.#port = undefined;
  }

  /**
   * Renews through the pool once the renewer's renewal is overdue (none has
   * succeeded for a heartbeat and a quarter: checked every quarter
   * heartbeat, so within a heartbeat and a half, before a lease of two
   * heartbeats, the shortest allowed, runs out); a row found gone is a lost
   * lease, as when the renewer finds it. A renewer that is only starting
   * (its thread boots in 20–40 ms, then renews half a heartbeat after the
   * registration) is covered the same way, silently.
   */
  async #renewThroughPool(): Promise<void> {
    if (this.#fallbackInFlight || !this.#registeredAt || this.#registering || this.#lost || this.#stopped) return;
    const sentAt = monotonicMs();
    if (sentAt - this.#shared[SLOTS.lastRenew]! < 1.25 * this.config.heartbeatMs) return;
    const workerId = this.#workerId;
    this.#fallbackInFlight = true;
    try {
      const statement = this.statements.renewLeaseStatement({
        workerId,
        registeredAt: this.#registeredAt,
        stuckJobs: this.#shared[SLOTS.stuck]!,
        loopLagMs: 0,
      });
      const rows = await this.db.query({ ...statement, timeoutMs: heartbeatLimitMs(this.config.heartbeatMs) });
      // Stopped meanwhile: the worker row is gone by design, not lost.
      if (this.#stopped) return;
      if (rows.length === 0) {
        this.#onMessage({ type: 'lost', workerId });
      } else if (workerId === this.#workerId) {
        if (sentAt > this.#shared[SLOTS.lastRenew]!) this.#shared[SLOTS.lastRenew] = sentAt;
        if (this.#renewerFailing && !this.#toldPoolRenews) {
          this.#toldPoolRenews = true;
          this.logger.warn({}, 'pgq renews the worker\'s lease through its pool while the lease thread cannot');
        }
      }
    } catch {
      // The pool fails too: the database is out of reach, as the renewer already reported.
    } finally {
      this.#fallbackInFlight = false;
    }
  }

  /**
   * Says once when the lease has run out while renewals failed (a database
   * out of reach): from then on the leader may rescue this worker's running
   * attempts and have them run elsewhere, and nothing else said so until the
   * database answered and the worker found its row gone.
   */
  #tellIfExpired(): void {
    if (!this.#renewerFailing || this.#toldExpired || this.#lost || this.#stopped || !this.#registeredAt) return;
    const sinceRenewMs = monotonicMs() - this.#shared[SLOTS.lastRenew]!;
    if (sinceRenewMs < this.config.rescueAfterMs) return;
    this.#toldExpired = true;
    this.logger.warn(
      { workerId: this.#workerId, sinceRenewMs: Math.round(sinceRenewMs) },
      `pgq worker ${this.#workerId}'s lease has run out (not renewed for ${Math.round(sinceRenewMs)} ms, rescueAfterMs ${this.config.rescueAfterMs}): ` +
        'its running jobs may be rescued and run again elsewhere; it claims nothing until it reaches the database, where it renews its row if no leader removed it meanwhile, or registers again',
    );
  }

  #onMessage(message: FromLeaseThread): void {
    switch (message.type) {
      case 'lost':
        if (message.workerId !== this.#workerId || this.#lost) return;
        this.#lost = true;
        this.events.lost(message.workerId);
        return;
      case 'failing':
        this.#renewerFailing = true;
        this.logger.warn({}, `pgq could not renew the worker's lease: ${message.message}`);
        return;
      case 'recovered':
        this.#renewerFailing = false;
        this.#toldPoolRenews = false;
        this.#toldExpired = false;
        this.logger.info({}, 'pgq renews the worker\'s lease again');
        return;
      case 'stall':
        this.events.stall(message.lagMs, message.tasks, false, message.idle);
        return;
      case 'stall-end':
        this.events.stall(message.lagMs, {}, true, message.idle);
        return;
      case 'ready':
      case 'stopped':
        return;
    }
  }
}

/** Whether connection settings survive the trip to a thread (no functions, no sockets). */
function transferable(config: pg.ClientConfig): boolean {
  try {
    structuredClone(config);
    return true;
  } catch {
    return false;
  }
}

/**
 * The kernel's id of the thread this worker runs on (whose event loop the
 * lease thread watches): Linux's /proc/thread-self names it, on a worker
 * thread too. Without it, the process's main thread is its pid, and a worker
 * thread's id is unknown (null: the process's CPU time decides, which took a
 * worker thread waiting synchronously beside a busy main thread for one
 * computing).
 */
function watchedTask(): number | null {
  try {
    const task = /\/task\/(\d+)$/.exec(fs.readlinkSync('/proc/thread-self'))?.[1];
    if (task !== undefined) return Number(task);
  } catch {
    // Not Linux, or a kernel before 3.17.
  }
  return isMainThread ? process.pid : null;
}
