/**
 * Closing a `pg.Client` whose server may have gone silent. `client.end()`
 * sends Terminate and resolves once the server closes its side: on a
 * connection that died without a word (a dropped NAT entry, a host gone) it
 * never does, and the socket keeps the process up until TCP gives up.
 */
import type pg from 'pg';
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
