/**
 * The one LISTEN connection of a `Pgq` instance, multiplexed over channels.
 *
 * States: idle (no subscription) → connecting → listening → (connection lost)
 * → connecting … → closed. While connecting it retries with a capped backoff.
 * After every (re)connect it LISTENs on all subscribed channels, in one
 * round trip, and then calls the `onConnect` hooks, so producers re-poll for
 * what they may have missed: NOTIFY is only a latency hint, never the sole
 * source of truth.
 *
 * Constructed with a null config (poll-only mode, `listen: false`), it never
 * connects: subscriptions are kept but never called, and `ready()` resolves
 * at once.
 *
 * A LISTEN connection only receives, so one that died without a word (a
 * dropped NAT entry, a host gone) would look connected for hours: every
 * `checkMs` (15 s) it is asked `SELECT 1`, and every statement on it has
 * `queryTimeoutMs` (10 s) to answer; one that does not is closed and a new
 * one opened. Connecting gives up after 10 s too (unless the config sets
 * its own `connectionTimeoutMillis`), and closing never waits on a silent
 * server.
 */
import pg from 'pg';
import type { Logger } from '../core/logger.js';
import { errorMessage, errorSummary } from '../core/errors.js';
import { quoteIdent } from '../db/identifiers.js';
import { settlesWithin, sleep } from '../core/sleep.js';
import { destroyConnection, endClient } from '../db/connection.js';
import { RepeatedFailure } from '../core/repeated-failure.js';

export interface ListenerTiming {
  /** How often a connection that is listening is checked with `SELECT 1`. */
  checkMs: number;
  /** How long a statement on the LISTEN connection may go unanswered before the connection is replaced. */
  queryTimeoutMs: number;
}

const DEFAULT_TIMING: ListenerTiming = { checkMs: 15_000, queryTimeoutMs: 10_000 };

export type NotificationHandler = (payload: string) => void;

export class Listener {
  readonly #config: pg.ClientConfig | null;
  readonly #logger: Logger;
  readonly #handlers = new Map<string, Set<NotificationHandler>>();
  readonly #connectHooks = new Set<() => void>();
  #client: pg.Client | undefined;
  /** The client being connected, if any: close() ends it (a server that does not answer held close() for its connect limit). */
  #connecting: pg.Client | undefined;
  #loop: Promise<void> | undefined;
  #closing = new AbortController();
  #connected = false;
  #connectedWaiters: (() => void)[] = [];
  /** The last statement sent on the connection: the next waits for it to end. */
  #lastQuery: Promise<void> = Promise.resolve();

  readonly #timing: ListenerTiming;

  /** Told the database of each new connection (`checkDatabase`). */
  #onDatabase: ((name: string) => void) | undefined;

  constructor(config: pg.ClientConfig | null, logger: Logger, timing: ListenerTiming = DEFAULT_TIMING) {
    this.#config = config;
    this.#logger = logger;
    this.#timing = timing;
  }

  /**
   * Reads the database of each connection it opens and gives its name to
   * `check`: a LISTEN connection configured apart from the pool
   * (`listenConnectionString`) hears nothing from another database.
   */
  checkDatabase(check: (name: string) => void): void {
    this.#onDatabase = check;
  }

  get connected(): boolean {
    return this.#connected;
  }

  /** Subscribes to a channel; returns the unsubscribe function. Starts the connection on first use. */
  async subscribe(channel: string, handler: NotificationHandler): Promise<() => Promise<void>> {
    let set = this.#handlers.get(channel);
    const isNew = !set;
    if (!set) {
      set = new Set();
      this.#handlers.set(channel, set);
    }
    set.add(handler);
    this.#ensureLoop();
    // Also while the connection's first statement (LISTEN on every channel
    // then known) is in flight: this one goes after it. A connection that
    // dropped or stops answering is closed: a new one LISTENs on every channel.
    if (isNew && this.#client) {
      await this.#query(this.#client, `LISTEN ${quoteIdent(channel)}`).catch(() => undefined);
    }
    return async () => {
      set.delete(handler);
      if (set.size === 0 && this.#handlers.get(channel) === set) {
        this.#handlers.delete(channel);
        if (this.#client) {
          await this.#query(this.#client, `UNLISTEN ${quoteIdent(channel)}`).catch(() => undefined);
        }
      }
    };
  }

  /** Called after each successful (re)connect; returns the removal function. */
  onConnect(hook: () => void): () => void {
    this.#connectHooks.add(hook);
    return () => this.#connectHooks.delete(hook);
  }

  /**
   * Resolves once the connection is listening (or the listener closes), or
   * after `timeoutMs`; resolves to whether it is listening. Callers that
   * must not hang on a database that is down pass a timeout and poll.
   */
  async ready(timeoutMs = Infinity): Promise<boolean> {
    this.#ensureLoop();
    if (!this.#config) return false;
    if (this.#connected || this.#closing.signal.aborted) return this.#connected;
    let timer: NodeJS.Timeout | undefined;
    let waiter: (() => void) | undefined;
    await new Promise<void>((resolve) => {
      waiter = resolve;
      this.#connectedWaiters.push(resolve);
      if (Number.isFinite(timeoutMs)) timer = setTimeout(resolve, Math.max(0, timeoutMs));
    });
    clearTimeout(timer);
    // Given up on by its timeout: out of the list (one per wait piled up while LISTEN stayed down).
    const at = this.#connectedWaiters.indexOf(waiter!);
    if (at >= 0) this.#connectedWaiters.splice(at, 1);
    return this.#connected;
  }

  async close(): Promise<void> {
    this.#closing.abort();
    this.#connectedWaiters.splice(0).forEach((resolve) => resolve());
    const client = this.#client;
    this.#client = undefined;
    if (this.#connecting) destroyConnection(this.#connecting);
    if (client) await endClient(client);
    await this.#loop;
  }

  /** False in poll-only mode. */
  get enabled(): boolean {
    return this.#config !== null;
  }

  #ensureLoop(): void {
    if (!this.#loop && this.#config && !this.#closing.signal.aborted) this.#loop = this.#run(this.#config);
  }

  async #run(config: pg.ClientConfig): Promise<void> {
    let failures = 0;
    const connects = new RepeatedFailure(this.#logger, 'pgq listener could not connect', 'pgq listener connected and listens again');
    const signal = this.#closing.signal;
    while (!signal.aborted) {
      const client = new pg.Client({ connectionTimeoutMillis: 10_000, ...config });
      let lost!: () => void;
      const connectionLost = new Promise<void>((resolve) => (lost = resolve));
      client.on('error', (err) => {
        this.#logger.warn({ err: errorSummary(err) }, `pgq listener connection error: ${errorMessage(err)}`);
        lost();
      });
      client.on('end', () => lost());
      client.on('notification', (msg) => this.#dispatch(msg.channel, msg.payload ?? ''));
      try {
        this.#connecting = client;
        try {
          await client.connect();
        } finally {
          this.#connecting = undefined;
        }
        this.#client = client;
        // Every channel, and the database's name when asked, in one round trip (a simple query of several statements).
        const statements = [...this.#handlers.keys()].map((channel) => `LISTEN ${quoteIdent(channel)}`);
        if (this.#onDatabase) statements.push('SELECT current_database() AS name');
        if (statements.length > 0) {
          const rows = await this.#query(client, statements.join('; '));
          if (this.#onDatabase) this.#onDatabase(String(rows[0]?.name));
        }
        // Closed while it connected: ended below like any other (close() could
        // not end a client it did not know yet; left open, it kept the process alive).
        if (!signal.aborted) {
          this.#connected = true;
          if (failures > 0 && !connects.failing) this.#logger.info({}, 'pgq listener reconnected and listens again');
          failures = 0;
          connects.succeeded();
          this.#connectedWaiters.splice(0).forEach((resolve) => resolve());
          for (const hook of this.#connectHooks) hook();
          // Not AbortSignal.any: on Node 20 it leaves a WeakRef on the long-lived `signal` for every reconnect.
          const watching = new AbortController();
          const closing = (): void => watching.abort();
          signal.addEventListener('abort', closing, { once: true });
          try {
            await Promise.race([
              connectionLost,
              new Promise((resolve) => watching.signal.addEventListener('abort', resolve, { once: true })),
              this.#watch(client, watching.signal),
            ]);
          } finally {
            signal.removeEventListener('abort', closing);
            watching.abort();
          }
        }
      } catch (err) {
        if (!signal.aborted) connects.failed(err);
      }
      this.#connected = false;
      if (this.#client === client) this.#client = undefined;
      await endClient(client);
      if (signal.aborted) break;
      failures += 1;
      await sleep(Math.min(5_000, 100 * 2 ** Math.min(failures, 6)), signal);
    }
    this.#connected = false;
  }

  /** Resolves once `client` fails to answer a check (or `stop` is aborted). */
  async #watch(client: pg.Client, stop: AbortSignal): Promise<void> {
    while (!stop.aborted) {
      await sleep(this.#timing.checkMs, stop);
      if (stop.aborted) return;
      try {
        await this.#query(client, 'SELECT 1');
      } catch (err) {
        if (stop.aborted) return;
        this.#logger.warn({ err: errorSummary(err) }, `pgq listener connection stopped answering: ${errorMessage(err)}; reconnecting`);
        return;
      }
    }
  }

  /**
   * Runs `text` on `client` (one statement, or several separated by `;`:
   * the last one's rows), after the statement sent before it has ended
   * (LISTENs, UNLISTENs and the check may overlap: pg would queue them on
   * the client itself, which it deprecates); a connection that does not
   * answer within queryTimeoutMs is closed (the loop opens another).
   */
  async #query(client: pg.Client, text: string): Promise<Record<string, unknown>[]> {
    const previous = this.#lastQuery;
    let ended!: () => void;
    this.#lastQuery = new Promise<void>((resolve) => (ended = resolve));
    try {
      await previous;
      const running = client.query<Record<string, unknown>>(text);
      if (await settlesWithin(running, this.#timing.queryTimeoutMs)) {
        // Several statements in one text answer with a result each (pg types it as one): the last one's rows.
        const answered: pg.QueryResult<Record<string, unknown>> | pg.QueryResult<Record<string, unknown>>[] = await running;
        return Array.isArray(answered) ? (answered.at(-1)?.rows ?? []) : answered.rows;
      }
      running.catch(() => undefined);
      destroyConnection(client);
      throw new Error(`the LISTEN connection did not answer ${text} within ${this.#timing.queryTimeoutMs} ms`);
    } finally {
      ended();
    }
  }

  #dispatch(channel: string, payload: string): void {
    const handlers = this.#handlers.get(channel);
    if (!handlers) return;
    for (const handler of handlers) {
      try {
        handler(payload);
      } catch (err) {
        this.#logger.error({ err: errorSummary(err), channel }, `pgq notification handler threw: ${errorMessage(err)}`);
      }
    }
  }
}
