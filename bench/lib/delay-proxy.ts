/**
 * A TCP proxy that adds a fixed one-way delay in each direction, so a
 * PostgreSQL on loopback looks like one across availability zones
 * (round-trip time = 2 × oneWayMs). The bench uses it where the kernel has
 * no netem (`tc qdisc … netem` answers "Specified qdisc kind is unknown").
 *
 * Each direction of each connection is one FIFO of chunks, each released at
 * its arrival time + oneWayMs, in order. One timer serves every FIFO: a
 * thread (Ticker) sleeps until the earliest head is due and wakes the main
 * thread with a message. It is a thread rather than setTimeout because
 * Node's timers tick in whole milliseconds and, on a loaded machine, fire
 * 0.2–1.5 ms late, which at a 1 ms one-way delay would add tens of percent
 * to the round trip; `Atomics.wait` takes fractional milliseconds. All that
 * is due when it wakes is written in one corked burst. The proxy records the
 * hold it actually gave every chunk and reports it, so the report states the
 * delay that was applied, not only the one asked for. With oneWayMs = 0
 * chunks take the same path (FIFO, ticker, corked write), so a 0 ms proxy
 * measures the cost of the mechanism itself.
 *
 * Backpressure: when the destination's buffer is full (write returns false)
 * or more than MAX_QUEUED_BYTES wait in a FIFO, the source socket is paused,
 * and resumed on 'drain' / when the FIFO is short again. Both sockets have
 * Nagle off (setNoDelay), as PostgreSQL clients and servers do; both are
 * half-open, so a FIN is passed on only after the data queued before it.
 *
 * Run as a process of its own (the systems under test must not share their
 * event loop with it): `node --import tsx bench/lib/delay-proxy.ts <target
 * host:port> <oneWayMs>`. It listens on an ephemeral 127.0.0.1 port, sends
 * `{ type: 'listening', port }` over IPC, answers `{ type: 'stats' }` with
 * its DelayProxyStats, and exits when its parent disconnects.
 */
import { execFileSync, fork, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';

/**
 * The ticker is asked to wake this much before a head is due, and a wake
 * releases every head due within this much: a thread's wake-up and the
 * message to the main thread take about 0.1–0.2 ms, so chunks leave close to
 * on time instead of always late.
 */
const WAKE_LEAD_MS = 0.1;
const MAX_QUEUED_BYTES = 4 * 2 ** 20;
/** Hold-time histogram: buckets of 0.1 ms up to 100 ms. */
const BUCKET_MS = 0.1;
const BUCKETS = 1_000;

/** Milliseconds on the monotonic clock, the same in every thread. */
function nowMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

/**
 * The ticker thread's loop. Shared memory: Int32 [0] is a generation the
 * main thread bumps whenever it changes the deadline (Float64 at byte 8; 0 =
 * nothing due). The thread waits for the deadline or a new generation; at the
 * deadline it posts one message and waits for the main thread to answer with
 * a new generation, so it never spins.
 */
const TICKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const generation = new Int32Array(workerData, 0, 1);
const deadline = new Float64Array(workerData, 8, 1);
const now = () => Number(process.hrtime.bigint()) / 1e6;
for (;;) {
  const seen = Atomics.load(generation, 0);
  const at = deadline[0];
  if (at === 0) { Atomics.wait(generation, 0, seen); continue; }
  const wait = at - now();
  if (wait > 0) { Atomics.wait(generation, 0, seen, wait); continue; }
  parentPort.postMessage(0);
  Atomics.wait(generation, 0, seen);
}
`;

interface Releasable {
  release(now: number): void;
}

/** One timer for every FIFO head of the process: see TICKER_SOURCE. */
class Ticker {
  readonly #memory = new SharedArrayBuffer(16);
  readonly #generation = new Int32Array(this.#memory, 0, 1);
  readonly #deadline = new Float64Array(this.#memory, 8, 1);
  readonly #due = new Map<Releasable, number>();
  readonly #thread: Worker;
  #ticking = false;

  constructor() {
    this.#thread = new Worker(TICKER_SOURCE, { eval: true, workerData: this.#memory });
    this.#thread.unref();
    this.#thread.on('message', () => this.#tick());
    this.#thread.on('error', (err) => {
      console.error('delay proxy: ticker thread failed', err);
      process.exit(1);
    });
  }

  /** `target.release(now)` will be called once, at `time` (a nowMs() value). */
  at(target: Releasable, time: number): void {
    this.#due.set(target, time);
    const wake = time - WAKE_LEAD_MS;
    if (!this.#ticking && (this.#deadline[0] === 0 || wake < this.#deadline[0]!)) this.#publish(wake);
  }

  cancel(target: Releasable): void {
    this.#due.delete(target);
  }

  #tick(): void {
    this.#ticking = true;
    const now = nowMs();
    const ready: Releasable[] = [];
    for (const [target, time] of this.#due) if (time <= now + WAKE_LEAD_MS) ready.push(target);
    for (const target of ready) {
      this.#due.delete(target);
      target.release(now);
    }
    this.#ticking = false;
    let next = Infinity;
    for (const time of this.#due.values()) if (time < next) next = time;
    this.#publish(next === Infinity ? 0 : next - WAKE_LEAD_MS);
  }

  #publish(wake: number): void {
    this.#deadline[0] = wake;
    Atomics.add(this.#generation, 0, 1);
    Atomics.notify(this.#generation, 0);
  }

  close(): Promise<number> {
    return this.#thread.terminate();
  }
}

export interface DelayProxyOptions {
  targetHost: string;
  targetPort: number;
  oneWayMs: number;
  /** 0 (default): an ephemeral port. */
  listenPort?: number;
}

export interface DelayProxyStats {
  oneWayMs: number;
  connections: number;
  chunks: number;
  bytes: number;
  /** Time each chunk spent in the proxy, arrival to write, in ms. */
  holdMeanMs: number | null;
  holdP50Ms: number | null;
  holdP99Ms: number | null;
  holdMaxMs: number | null;
  /** Times a source was paused because its destination or FIFO was full. */
  pauses: number;
  /** CPU time of the proxy process since it started (user + system), in seconds. */
  cpuSeconds: number;
}

export interface DelayProxy {
  port: number;
  stats(): DelayProxyStats;
  close(): Promise<void>;
}

class Recorder {
  readonly histogram = new Uint32Array(BUCKETS + 1);
  connections = 0;
  chunks = 0;
  bytes = 0;
  holdSum = 0;
  holdMax = 0;
  pauses = 0;

  record(holdMs: number, bytes: number): void {
    this.chunks += 1;
    this.bytes += bytes;
    this.holdSum += holdMs;
    if (holdMs > this.holdMax) this.holdMax = holdMs;
    this.histogram[Math.min(BUCKETS, Math.max(0, Math.floor(holdMs / BUCKET_MS)))]! += 1;
  }

  quantile(q: number): number | null {
    if (this.chunks === 0) return null;
    const rank = Math.ceil(q * this.chunks);
    let seen = 0;
    for (let b = 0; b <= BUCKETS; b += 1) {
      seen += this.histogram[b]!;
      if (seen >= rank) return (b + 0.5) * BUCKET_MS;
    }
    return this.holdMax;
  }
}

/** One direction of one connection: chunks from `source` to `destination`, each held `delayMs`. */
class DelayedPipe implements Releasable {
  readonly #source: net.Socket;
  readonly #destination: net.Socket;
  readonly #delayMs: number;
  readonly #ticker: Ticker;
  readonly #recorder: Recorder;
  /** FIFO as arrays with a moving head: no per-chunk shift. */
  #chunks: Buffer[] = [];
  #arrivals: number[] = [];
  #head = 0;
  #queuedBytes = 0;
  #armed = false;
  #ended = false;
  #pausedForDestination = false;
  #pausedForQueue = false;

  constructor(source: net.Socket, destination: net.Socket, delayMs: number, ticker: Ticker, recorder: Recorder) {
    this.#source = source;
    this.#destination = destination;
    this.#delayMs = delayMs;
    this.#ticker = ticker;
    this.#recorder = recorder;
    source.on('data', (chunk: Buffer) => this.#push(chunk));
    source.on('end', () => {
      this.#ended = true;
      this.#finishIfDone();
    });
    destination.on('drain', () => {
      this.#pausedForDestination = false;
      this.#resumeIfClear();
    });
  }

  #push(chunk: Buffer): void {
    const now = nowMs();
    this.#chunks.push(chunk);
    this.#arrivals.push(now);
    this.#queuedBytes += chunk.length;
    if (this.#queuedBytes > MAX_QUEUED_BYTES && !this.#pausedForQueue) {
      this.#pausedForQueue = true;
      this.#recorder.pauses += 1;
      this.#source.pause();
    }
    if (!this.#armed) this.#arm();
  }

  #arm(): void {
    this.#armed = true;
    this.#ticker.at(this, this.#arrivals[this.#head]! + this.#delayMs);
  }

  /** Called by the ticker when the head is due: writes everything due by now. */
  release(now: number): void {
    this.#armed = false;
    const last = this.#chunks.length;
    let k = this.#head;
    while (k < last && this.#arrivals[k]! + this.#delayMs <= now + WAKE_LEAD_MS) k += 1;
    if (k > this.#head) {
      this.#destination.cork();
      for (let j = this.#head; j < k; j += 1) {
        const chunk = this.#chunks[j]!;
        this.#queuedBytes -= chunk.length;
        this.#write(chunk, this.#arrivals[j]!, now);
      }
      this.#destination.uncork();
      this.#head = k;
      if (this.#head === last) {
        this.#chunks = [];
        this.#arrivals = [];
        this.#head = 0;
      } else if (this.#head > 1_024 && this.#head * 2 > last) {
        this.#chunks = this.#chunks.slice(this.#head);
        this.#arrivals = this.#arrivals.slice(this.#head);
        this.#head = 0;
      }
    }
    if (this.#pausedForQueue && this.#queuedBytes <= MAX_QUEUED_BYTES / 2) {
      this.#pausedForQueue = false;
      this.#resumeIfClear();
    }
    if (this.#head < this.#chunks.length) this.#arm();
    else this.#finishIfDone();
  }

  #write(chunk: Buffer, arrivedAt: number, now: number): void {
    this.#recorder.record(now - arrivedAt, chunk.length);
    if (this.#destination.destroyed) return;
    if (!this.#destination.write(chunk) && !this.#pausedForDestination) {
      this.#pausedForDestination = true;
      this.#recorder.pauses += 1;
      this.#source.pause();
    }
  }

  #resumeIfClear(): void {
    if (!this.#pausedForDestination && !this.#pausedForQueue && !this.#source.destroyed) this.#source.resume();
  }

  /** The source ended and everything it sent has been written: end the destination too. */
  #finishIfDone(): void {
    if (this.#ended && this.#head === this.#chunks.length && !this.#destination.destroyed) this.#destination.end();
  }

  close(): void {
    this.#ticker.cancel(this);
    this.#armed = false;
  }
}

export function startDelayProxy(options: DelayProxyOptions): Promise<DelayProxy> {
  if (!Number.isFinite(options.oneWayMs) || options.oneWayMs < 0) throw new Error(`oneWayMs must be a number ≥ 0, got ${options.oneWayMs}`);
  const recorder = new Recorder();
  const ticker = new Ticker();
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (client) => {
    recorder.connections += 1;
    const upstream = net.connect({ host: options.targetHost, port: options.targetPort, allowHalfOpen: true });
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    sockets.add(client);
    sockets.add(upstream);
    const pipes = [
      new DelayedPipe(client, upstream, options.oneWayMs, ticker, recorder),
      new DelayedPipe(upstream, client, options.oneWayMs, ticker, recorder),
    ];
    // A reset on either side resets the other; a clean close waits for the FIFOs (see finishIfDone).
    const teardown = (): void => {
      for (const pipe of pipes) pipe.close();
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', teardown);
    upstream.on('error', teardown);
    client.on('close', () => {
      if (upstream.writableEnded || upstream.destroyed) teardown();
    });
    upstream.on('close', () => {
      if (client.writableEnded || client.destroyed) teardown();
    });
  });
  const cpuStart = process.cpuUsage();
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.listenPort ?? 0, '127.0.0.1', () => {
      const address = server.address() as net.AddressInfo;
      resolve({
        port: address.port,
        stats: () => {
          const cpu = process.cpuUsage(cpuStart);
          return {
            oneWayMs: options.oneWayMs,
            connections: recorder.connections,
            chunks: recorder.chunks,
            bytes: recorder.bytes,
            holdMeanMs: recorder.chunks ? recorder.holdSum / recorder.chunks : null,
            holdP50Ms: recorder.quantile(0.5),
            holdP99Ms: recorder.quantile(0.99),
            holdMaxMs: recorder.chunks ? recorder.holdMax : null,
            pauses: recorder.pauses,
            cpuSeconds: (cpu.user + cpu.system) / 1e6,
          };
        },
        close: () =>
          new Promise<void>((done) => {
            for (const socket of sockets) socket.destroy();
            server.close(() => void ticker.close().then(() => done()));
          }),
      });
    });
  });
}

/** A delay proxy in a process of its own, as the harness runs it. */
export interface DelayProxyProcess {
  port: number;
  pid: number;
  /** How the proxy's threads are scheduled, e.g. "SCHED_FIFO 10" or "nice -10". */
  scheduling: string;
  stats(): Promise<DelayProxyStats>;
  stop(): Promise<void>;
}

const REALTIME_PRIORITY = 10;

/** Moves every thread of the proxy to SCHED_FIFO (see PROXY_NICENESS); null where not permitted. */
function realTime(pid: number): string | null {
  try {
    execFileSync('chrt', ['--all-tasks', '--fifo', '--pid', String(REALTIME_PRIORITY), String(pid)], { stdio: 'ignore' });
    return `SCHED_FIFO ${REALTIME_PRIORITY}`;
  } catch {
    return null;
  }
}

/** Forks this file as a proxy process to `target` (host:port) and waits until it listens. */
export function spawnDelayProxy(target: string, oneWayMs: number): Promise<DelayProxyProcess> {
  const child: ChildProcess = fork(fileURLToPath(import.meta.url), [target, String(oneWayMs)], {
    execArgv: process.execArgv.filter((a) => !a.startsWith('--cpu-prof')),
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return new Promise((resolve, reject) => {
    const onExit = (code: number | null): void => reject(new Error(`delay proxy exited (${code}) before listening`));
    child.once('exit', onExit);
    child.once('message', (msg: DelayProxyMessage) => {
      child.off('exit', onExit);
      if (msg.type !== 'listening') return reject(new Error(`delay proxy sent ${msg.type} before listening`));
      resolve({
        port: msg.port,
        pid: child.pid!,
        scheduling: realTime(child.pid!) ?? `nice ${msg.niceness}`,
        stats: () =>
          new Promise((answer, fail) => {
            if (!child.connected) return fail(new Error('delay proxy is gone'));
            const onMessage = (m: DelayProxyMessage): void => {
              if (m.type !== 'stats') return;
              child.off('message', onMessage);
              answer(m.stats);
            };
            child.on('message', onMessage);
            child.send({ type: 'stats' });
          }),
        async stop() {
          if (child.exitCode === null && child.signalCode === null) {
            if (child.connected) child.disconnect();
            const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
            await exited;
            clearTimeout(timer);
          }
        },
      });
    });
  });
}

export type DelayProxyMessage = { type: 'listening'; port: number; niceness: number } | { type: 'stats'; stats: DelayProxyStats };

/**
 * The proxy stands in for the network, which does not wait for a CPU: on a
 * loaded machine a proxy at normal priority waits in the run queue behind
 * the systems under test on every hop (measured on the 2-core bench machine
 * at load 15: chunks held 1.7 ms on average and 10 ms at p99 for 1 ms asked,
 * at nice -10; 1.06 and 1.75 ms under SCHED_FIFO). The process asks for nice
 * PROXY_NICENESS before it starts its ticker thread, which inherits it;
 * spawnDelayProxy then moves every thread to SCHED_FIFO with `chrt` where
 * permitted (root or CAP_SYS_NICE; the kernel still keeps 5% of each second
 * for other work). Both fall back silently and are reported.
 */
const PROXY_NICENESS = -10;

function raisePriority(): number {
  try {
    os.setPriority(PROXY_NICENESS);
  } catch {
    // not permitted: stays at the niceness it inherited
  }
  return os.getPriority();
}

async function main(): Promise<void> {
  const [target, oneWay] = process.argv.slice(2);
  const match = /^(.+):(\d+)$/.exec(target ?? '');
  if (!match || oneWay === undefined) throw new Error('usage: delay-proxy.ts <target host:port> <oneWayMs>');
  const niceness = raisePriority();
  const proxy = await startDelayProxy({ targetHost: match[1]!, targetPort: Number(match[2]), oneWayMs: Number(oneWay) });
  const send = (msg: DelayProxyMessage): void => {
    if (process.send) process.send(msg);
    else console.log(JSON.stringify(msg));
  };
  send({ type: 'listening', port: proxy.port, niceness });
  process.on('message', (msg: { type: string }) => {
    if (msg.type === 'stats') send({ type: 'stats', stats: proxy.stats() });
  });
  const stop = (): void => {
    void proxy.close().finally(() => process.exit(0));
  };
  process.on('disconnect', stop);
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((err: unknown) => {
    console.error('delay proxy:', err);
    process.exit(1);
  });
}
