/**
 * Closing a `pg.Client` whose server may have gone silent. `client.end()`
 * sends Terminate and resolves once the server closes its side: on a
 * connection that died without a word (a dropped NAT entry, a host gone) it
 * never does, and the socket keeps the process up until TCP gives up.
 */
import pg from 'pg';
import type { Duplex } from 'node:stream';

/** Ends `client`; if the server has not closed the connection within `waitMs`, destroys its socket. */
export async function endClient(client: pg.Client, waitMs = 1_000): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const ended = client.end().catch(() => undefined);
  const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), waitMs)));
  const outcome = await Promise.race([ended, late]);
  clearTimeout(timer);
  if (outcome === 'late') destroyConnection(client);
}

/** Closes `client`'s socket at once, without a word to the server: pg then reports the connection ended. */
export function destroyConnection(client: pg.Client): void {
  // pg keeps the socket at client.connection.stream (it destroys it there itself on a pipelined query's timeout).
  const stream = (client as unknown as { connection?: { stream?: Duplex } }).connection?.stream;
  stream?.destroy();
}

/** A `pg.Client` class that keeps its instances until they end, and a way to close them all. */
export interface TrackedClients {
  /** For `pg.Pool`'s `Client` option. */
  Client: typeof pg.Client;
  /** Destroys the socket of every client that has not ended, those still connecting included. */
  destroyAll(): void;
  /** Resolves once every client has ended (at once when none is left). */
  allEnded(): Promise<void>;
}

/**
 * Clients for a pool pgq makes, tracked from their creation: `pool.end()`
 * waits for every client, also one connecting to a server that accepts and
 * never answers, or one whose statement a silent connection holds; a close
 * that has waited long enough ends them itself.
 */
export function trackedClients(): TrackedClients {
  const live = new Set<pg.Client>();
  let waiters: (() => void)[] = [];
  class TrackedClient extends pg.Client {
    constructor(config?: string | pg.ClientConfig) {
      super(config);
      live.add(this);
      watchDateStyle(this);
      // Emitted once the connection has ended, whether or not it ever connected.
      this.once('end', () => {
        live.delete(this);
        if (live.size > 0) return;
        const ended = waiters;
        waiters = [];
        for (const resolve of ended) resolve();
      });
    }
  }
  return {
    Client: TrackedClient,
    destroyAll: () => {
      for (const client of live) destroyConnection(client);
    },
    allEnded: () => (live.size === 0 ? Promise.resolve() : new Promise<void>((resolve) => waiters.push(resolve))),
  };
}

/** The DateStyle each tracked client's server reported (ParameterStatus, at start-up and after a change). */
const reportedDateStyle = new WeakMap<object, string>();

function watchDateStyle(client: pg.Client): void {
  // pg's Connection emits every backend message by name; the Client itself keeps none of the ParameterStatus ones.
  const connection = (client as unknown as { connection?: { on(event: 'parameterStatus', listener: (msg: { parameterName: string; parameterValue: string }) => void): void } }).connection;
  connection?.on('parameterStatus', (msg) => {
    if (msg.parameterName === 'DateStyle') reportedDateStyle.set(client, msg.parameterValue);
  });
}

/**
 * Settings a connection of the pool pgq makes takes before its first
 * statement (pg-pool's `onConnect`: the connection is handed out only once
 * they are set, and one that fails or does not answer within `timeoutMs` is
 * closed and its checkout fails, as a failed connect would). node-postgres
 * reads timestamps only in the ISO output style: under a database's
 * `DateStyle = 'SQL, DMY'` every time pgq read back was null. A server that
 * reported ISO when the connection started (PostgreSQL's default; PgBouncer
 * reports it too) is not asked: a round trip less for every new connection.
 */
export async function setUpSession(client: pg.ClientBase, timeoutMs: number): Promise<void> {
  if (reportedDateStyle.get(client)?.startsWith('ISO')) return;
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => {
      destroyConnection(client as pg.Client);
      reject(new Error(`the new connection did not answer its session settings within ${timeoutMs} ms`));
    }, timeoutMs);
  });
  const setting = client.query('SET DateStyle = ISO');
  setting.catch(() => undefined); // after the deadline it fails on the destroyed connection: not an unhandled rejection
  try {
    await Promise.race([setting, timedOut]);
  } finally {
    clearTimeout(timer);
  }
}
