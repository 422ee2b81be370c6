/**
 * The `pgq` command end to end, as the built binary (npm test builds first).
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { Pgq, defineTask } from '../src/index.js';
import { main } from '../src/cli/main.js';
import { exposureWarning, isLoopback, listensOnLoopback } from '../src/cli/commands/dashboard.js';
import { logJobEvents, summaryLine } from '../src/cli/commands/worker.js';
import { captureLogger, type Line } from './support/logger.js';
import { deferred, until, useTestSchema } from './support/harness.js';
import { alive } from './support/processes.js';

const ctx = useTestSchema('cli');
const root = path.resolve(import.meta.dirname, '..');
const bin = path.join(root, 'dist/cli/bin.js');
const tasks = path.join(root, 'examples/tasks.ts');

function pgq(args: string[], options: { env?: Record<string, string | undefined>; cwd?: string } = {}) {
  const env: Record<string, string | undefined> = { ...process.env, DATABASE_URL: ctx.url, PGQ_LOG_LEVEL: 'warn', ...options.env };
  for (const [k, v] of Object.entries(env)) if (v === undefined) delete env[k];
  const r = spawnSync(process.execPath, [bin, '--schema', ctx.schema, ...args], {
    env: env as NodeJS.ProcessEnv,
    cwd: options.cwd ?? root,
    encoding: 'utf8',
    timeout: 120_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('pgq CLI', () => {
  it('migrates, enqueues, lists, shows stats, runs a worker, retries and cancels', async () => {
    expect(pgq(['migrate'])).toMatchObject({ code: 0, stdout: expect.stringMatching(/applied .*jobs/) });
    expect(pgq(['migrate']).stdout).toMatch(/up to date/);

    const added = pgq(['--json', 'enqueue', 'send-email', '--tasks', tasks, '--payload', '{"to":"ada@example.com","subject":"hi"}']);
    expect(added.code).toBe(0);
    const job = JSON.parse(added.stdout) as { id: string; state: string; queue: string };
    expect(job).toMatchObject({ state: 'available', queue: 'emails' });

    const bad = pgq(['enqueue', 'send-email', '--tasks', tasks, '--payload', '{"to":"nope","subject":"hi"}']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/payload\.to: /);

    const list = pgq(['jobs', 'list', '--state', 'available']);
    expect(list.code).toBe(0);
    expect(list.stdout).toMatch(new RegExp(`^${job.id}\\s+send-email\\s+emails\\s+available`, 'm'));
    expect(pgq(['stats']).stdout).toMatch(/^emails\s+0\s+1\s/m);

    const worker = spawn(process.execPath, [bin, '--schema', ctx.schema, 'worker', '--tasks', tasks, '--concurrency', '2'], {
      env: { ...process.env, DATABASE_URL: ctx.url, PGQ_LOG_LEVEL: 'info' },
      cwd: root,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let logs = '';
    worker.stderr.on('data', (d: Buffer) => (logs += d.toString()));
    const client = new Pgq({ connectionString: ctx.url, schema: ctx.schema });
    try {
      const done = await client.waitForJob(job.id, { timeoutMs: 30_000 });
      expect(done).toMatchObject({ state: 'succeeded', result: { to: 'ada@example.com' } });
      // --wait prints the finished job; the exit status says whether it succeeded.
      const waited = pgq(['enqueue', 'send-email', '--tasks', tasks, '--payload', '{"to":"bo@example.com","subject":"hi"}', '--wait', '--timeout-ms', '30000']);
      expect(waited, waited.stderr).toMatchObject({ code: 0 });
      expect(JSON.parse(waited.stdout)).toMatchObject({ state: 'succeeded' });
      // Without --tasks nothing checks the payload here; the worker's schema refuses it, for good.
      const refused = pgq(['enqueue', 'send-email', '--queue', 'emails', '--payload', '{"to":"nope"}', '--wait', '--timeout-ms', '30000']);
      expect(refused.code).toBe(1);
      expect(JSON.parse(refused.stdout)).toMatchObject({ state: 'failed' });
      expect(refused.stderr).toMatch(/pgq: job \d+ failed/);
      const exited = new Promise<number | null>((resolve) => worker.on('exit', resolve));
      worker.kill('SIGTERM');
      expect(await exited).toBe(0);
      expect(logs).toMatch(/worker stopped after .*: processed 3 job attempts \(2 succeeded, 0 retried, 1 failed\)/);
      expect(logs).not.toMatch(/job \d+ \(send-email\) succeeded/); // a success is logged at debug
      expect(logs).not.toMatch(/ada@example\.com/); // payloads and results stay out of the logs
    } finally {
      if (worker.exitCode === null) worker.kill('SIGKILL');
      await client.close();
    }

    const shown = pgq(['--json', 'jobs', 'show', job.id]);
    expect(JSON.parse(shown.stdout)).toMatchObject({ id: job.id, state: 'succeeded' });
    expect(pgq(['retry', job.id])).toMatchObject({ code: 1, stderr: expect.stringMatching(/only failed/) });
    // Cancelling a job that already succeeded changes nothing, and the exit status says so.
    expect(pgq(['cancel', job.id])).toMatchObject({ code: 1, stderr: `pgq: job ${job.id} had already succeeded; nothing was cancelled\n` });
    expect(JSON.parse(pgq(['--json', 'jobs', 'show', job.id]).stdout)).toMatchObject({ state: 'succeeded' });
    // A unique key: the second enqueue returns the first job, and says so in words true of both.
    const keyed = pgq(['enqueue', 'anything', '--unique-key', 'k1', '--delay-ms', '600000']);
    const again = pgq(['enqueue', 'anything', '--unique-key', 'k1', '--delay-ms', '600000']);
    const keyedId = /^job (\d+) is the live job with unique key "k1" \(task anything, queue default\); it is scheduled$/m.exec(keyed.stdout)?.[1];
    expect(keyedId, keyed.stdout + keyed.stderr).toBeDefined();
    expect(again.stdout).toContain(`job ${keyedId} is the live job with unique key "k1"`);
    expect(pgq(['cancel', keyedId!]).code).toBe(0);
    const later = JSON.parse(pgq(['--json', 'enqueue', 'anything', '--delay-ms', '600000']).stdout) as { id: string; state: string };
    expect(later.state).toBe('scheduled');
    expect(pgq(['cancel', later.id]).stdout).toMatch(/is cancelled/);
    expect(pgq(['retry', later.id]).stdout).toMatch(/waits to run again/);
  });

  it('exits non-zero with a clear message on bad flags, bad modules and unreachable databases', () => {
    // A bad PGQ_LOG_LEVEL is refused only where it would be used: --log-level overrides it, --version needs none.
    expect(pgq(['--version'], { env: { PGQ_LOG_LEVEL: 'bogus' } })).toMatchObject({ code: 0, stdout: expect.stringMatching(/^\d+\.\d+\.\d+/) });
    expect(pgq(['--log-level', 'warn', 'migrate'], { env: { PGQ_LOG_LEVEL: 'bogus' } })).toMatchObject({ code: 0, stderr: '' });
    expect(pgq(['migrate'], { env: { PGQ_LOG_LEVEL: 'bogus' } })).toMatchObject({ code: 1, stderr: expect.stringMatching(/PGQ_LOG_LEVEL must be one of trace, .*got "bogus"/) });
    const flag = pgq(['worker', '--tasks', tasks, '--concurrency', 'lots']);
    expect(flag.code).toBe(1);
    expect(flag.stderr).toMatch(/--concurrency must be a whole number/);
    // Worker flags that only clash with each other are refused by name before anything starts: no database
    // configured here, and no embedded server started for them.
    const bare = fs.mkdtempSync(path.join(os.tmpdir(), 'pgq-flags-'));
    try {
      const clash = pgq(['worker', '--tasks', tasks, '--heartbeat-ms', '20000'], { env: { DATABASE_URL: undefined }, cwd: bare });
      expect(clash).toMatchObject({ code: 1, stderr: expect.stringMatching(/--heartbeat-ms 20000 needs a --rescue-after-ms of at least twice it/) });
      const both = pgq(['worker', '--tasks', tasks, '--heartbeat-ms', '100', '--rescue-after-ms', '150'], { env: { DATABASE_URL: undefined }, cwd: bare });
      expect(both).toMatchObject({ code: 1, stderr: expect.stringMatching(/--rescue-after-ms: must be at least twice --heartbeat-ms/) });
      // So are the console's basic-auth value and the role names.
      const auth = pgq(['dashboard', '--basic-auth', 'nocolon'], { env: { DATABASE_URL: undefined }, cwd: bare });
      expect(auth).toMatchObject({ code: 1, stderr: expect.stringMatching(/basicAuth.*must be user:password/) });
      // Named as given (it was "dashboard.allowedHosts[4]", a place in a list the user never wrote).
      const host = pgq(['dashboard', '--allowed-host', 'localhost:4100'], { env: { DATABASE_URL: undefined }, cwd: bare });
      expect(host).toMatchObject({ code: 1, stderr: expect.stringMatching(/--allowed-host must be a host name or address without a port .*got "localhost:4100"/) });
      // One colon is a host and a port, not an IPv6 address.
      expect(pgq(['dashboard', '--allowed-host', 'cafe:8080'], { env: { DATABASE_URL: undefined }, cwd: bare })).toMatchObject({ code: 1, stderr: expect.stringMatching(/got "cafe:8080"/) });
      const role = pgq(['roles', '--worker', 'no such role'], { env: { DATABASE_URL: undefined }, cwd: bare });
      expect(role).toMatchObject({ code: 1, stderr: expect.stringMatching(/"no such role" is not a plain identifier/) });
      expect(fs.existsSync(path.join(bare, '.pgq'))).toBe(false);
    } finally {
      fs.rmSync(bare, { recursive: true, force: true });
    }
    const empty = pgq(['worker', '--tasks', path.join(root, 'test/fixtures/no-tasks.ts')]);
    expect(empty.code).toBe(1);
    expect(empty.stderr).toMatch(/exports no task/);
    // A syntax error in an ES module: Node.js 20 names neither file nor line; pgq finds them.
    const syntax = pgq(['worker', '--tasks', path.join(root, 'test/fixtures/syntax-error-tasks.mjs')]);
    expect(syntax.code).toBe(1);
    expect(syntax.stderr).toContain(`could not load tasks module ${path.join(root, 'test/fixtures/syntax-error-tasks.mjs')}: ${path.join(root, 'test/fixtures/syntax-error-tasks.mjs')}:3: Unexpected token ';'\nexport const broken = ;\n`);
    const duplicate = pgq(['worker', '--tasks', path.join(root, 'test/fixtures/duplicate-tasks.ts')]);
    expect(duplicate.code).toBe(1);
    expect(duplicate.stderr).toMatch(/exports two different tasks named "dup": task names must be unique/);
    // A .ts module in a package without "type": "module" (tsx compiles it to CommonJS): its default array and named exports.
    // A plain CommonJS module: every task of module.exports, also those Node.js names no export for (a spread, a computed key).
    // Loaded by Node.js itself, as the CLI loads it (the test runner's own loader reads CommonJS otherwise).
    const loaded = spawnSync(
      process.execPath,
      ['--input-type=module', '-e', `const { loadTasks } = await import(${JSON.stringify(path.join(root, 'dist/cli/load-tasks.js'))}); console.log(JSON.stringify((await loadTasks(process.argv[1])).map((t) => t.name).sort()))`, path.join(root, 'test/fixtures/commonjs/exports-object.js')],
      { encoding: 'utf8' },
    );
    expect(loaded.stdout.trim(), loaded.stderr).toBe('["cjs-a","cjs-computed","cjs-spread"]');
    const commonjs = path.join(root, 'test/fixtures/commonjs/tasks.ts');
    expect(pgq(['enqueue', 'cjs-none', '--tasks', commonjs, '--payload', '{}']).stderr).toMatch(/has no task named "cjs-none"; its tasks are "cjs-default", "cjs-named"/);
    // One task exported twice is fine; a name the module lacks is refused with the names it has.
    const repeated = path.join(root, 'test/fixtures/repeated-export-tasks.ts');
    const typo = pgq(['enqueue', 'pnig', '--tasks', repeated]);
    expect(typo.code).toBe(1);
    expect(typo.stderr).toMatch(/has no task named "pnig"; its tasks are "ping", "echo-back"/);
    const down = pgq(['stats'], { env: { DATABASE_URL: 'postgres://postgres@127.0.0.1:1/postgres' } });
    expect(down.code).toBe(1);
    expect(down.stderr).toMatch(/cannot reach PostgreSQL at postgres:\/\/postgres@127\.0\.0\.1:1\/postgres/);
    // A password in the query string is masked as in the userinfo.
    const queryPassword = pgq(['stats'], { env: { DATABASE_URL: 'postgres://postgres@127.0.0.1:1/postgres?password=s3cret&sslpassword=k3y' } });
    expect(queryPassword.code).toBe(1);
    expect(queryPassword.stderr).toMatch(/cannot reach PostgreSQL at postgres:\/\/postgres@127\.0\.0\.1:1\/postgres\?password=\*\*\*&sslpassword=\*\*\*/);
    expect(queryPassword.stderr).not.toMatch(/s3cret|k3y/);
    // An empty --database-url (an unset variable) is an error, not the embedded server.
    const emptyUrl = pgq(['--database-url', '', 'stats'], { env: { DATABASE_URL: undefined } });
    expect(emptyUrl).toMatchObject({ code: 1, stderr: expect.stringMatching(/--database-url is empty/) });
    expect(emptyUrl.stderr).not.toMatch(/(started|reusing) embedded PostgreSQL/);
    // So is an empty DATABASE_URL (a deployment whose secret did not arrive: its worker served an embedded database).
    const emptyEnv = pgq(['stats'], { env: { DATABASE_URL: ' ' } });
    expect(emptyEnv).toMatchObject({ code: 1, stderr: expect.stringMatching(/DATABASE_URL is set but empty; give it a postgres:\/\/ URL, or unset it/) });
    expect(emptyEnv.stderr).not.toMatch(/embedded PostgreSQL at/);
    const notUrl = pgq(['stats'], { env: { DATABASE_URL: 'notaurl' } });
    expect(notUrl).toMatchObject({ code: 1, stderr: expect.stringMatching(/DATABASE_URL is not a PostgreSQL URL \(postgres:\/\/.*\): it does not start with postgres:\/\//) });
    // libpq's socket form with an empty host is node-postgres's too: not refused as a URL (this socket directory does not exist).
    const socketForm = pgq(['stats'], { env: { DATABASE_URL: 'postgres://postgres:x@/postgres?host=/nonexistent-pgq-socket-dir' } });
    expect(socketForm.code).toBe(1);
    expect(socketForm.stderr).toMatch(/cannot reach PostgreSQL/);
    const version = pgq(['--version']);
    expect(version).toMatchObject({ code: 0, stdout: `${(JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string }).version}\n` });
    const schema = pgq(['--schema', 'bad-name;', 'stats']);
    expect(schema.code).toBe(1);
    expect(schema.stderr).toMatch(/schema: "bad-name;" is not a plain identifier/);
    // An id flag is refused under its own name.
    expect(pgq(['jobs', 'list', '--workflow', 'x'])).toMatchObject({ code: 1, stderr: expect.stringMatching(/--workflow: "x" is not a workflow id/) });
    expect(pgq(['workflows', 'list', '--before', 'x'])).toMatchObject({ code: 1, stderr: expect.stringMatching(/--before: "x" is not a workflow id/) });
    // --timeout-ms is --wait's: alone it is refused, and nothing is enqueued.
    const before = pgq(['--json', 'jobs', 'list']).stdout;
    const lonely = pgq(['enqueue', 'anything', '--timeout-ms', '1000']);
    expect(lonely.code).toBe(1);
    expect(lonely.stderr).toMatch(/--timeout-ms is how long --wait waits/);
    expect(pgq(['--json', 'jobs', 'list']).stdout).toBe(before);
    const state = pgq(['jobs', 'list', '--state', 'done']);
    expect(state.code).toBe(1);
    expect(state.stderr).toMatch(/--state must be one of/);
  });
});

describe('the worker summary', () => {
  it('counts every attempt started, those whose outcome did not stand or was not a success or failure included', async () => {
    const entered = deferred<void>();
    let snoozedOnce = false;
    const step = defineTask({
      name: 'summary-step',
      schema: z.object({ how: z.enum(['ok', 'snooze', 'wait']) }),
      handler: async ({ how }, c) => {
        if (how === 'snooze' && !snoozedOnce) {
          snoozedOnce = true;
          c.snooze(10);
        }
        if (how === 'wait' && c.job.cancelRequestedAt === null) {
          entered.resolve();
          // Ends only once cancelled: its success is then discarded (the job ends cancelled).
          await new Promise((resolve) => c.signal.addEventListener('abort', resolve, { once: true }));
          return 'late';
        }
        return how;
      },
    });
    const client = await ctx.migrated({ tasks: [step] });
    const worker = client.worker({ concurrency: 3, pollIntervalMs: 50, leader: false });
    const lines: Line[] = [];
    const tally = logJobEvents(worker, captureLogger(lines));
    await worker.start();
    try {
      const [ok, snoozed, waiting] = await client.enqueueMany(step, [{ how: 'ok' }, { how: 'snooze' }, { how: 'wait' }]);
      await entered.promise;
      await client.cancelJob(waiting!.id);
      expect((await client.waitForJob(ok!.id, { timeoutMs: 10_000 })).state).toBe('succeeded');
      expect((await client.waitForJob(snoozed!.id, { timeoutMs: 10_000 })).state).toBe('succeeded');
      expect((await client.waitForJob(waiting!.id, { timeoutMs: 10_000 })).state).toBe('cancelled');
    } finally {
      await worker.stop();
    }
    expect(summaryLine(tally, 1_000)).toMatch(/processed 4 job attempts \(2 succeeded, 0 retried, 0 failed, 1 discarded, 1 snoozed, given back or not written\)$/);
  });
});

describe('pgq worker told to stop', () => {
  it('exits at the second signal even when a handler ignores its signal (status 70, 5 s later; at once at a third), and the job is rescued, not lost', async () => {
    // The same task name, a handler that finishes: what runs the jobs once they are rescued.
    const deafHere = defineTask({ name: 'deaf', schema: z.object({}), handler: () => 'ran again' });
    const client = await ctx.migrated({ tasks: [deafHere] });
    const deafTasks = path.join(root, 'test/fixtures/deaf-tasks.ts');
    const run = async (signals: NodeJS.Signals[]): Promise<{ code: number | null; logs: string; afterLastMs: number; jobId: string }> => {
      const job = await client.enqueue(deafHere, {});
      const worker = spawn(process.execPath, [bin, '--schema', ctx.schema, 'worker', '--tasks', deafTasks, '--no-leader', '--shutdown-grace-ms', '100', '--heartbeat-ms', '200', '--rescue-after-ms', '1000'], {
        env: { ...process.env, DATABASE_URL: ctx.url, PGQ_LOG_LEVEL: 'info' },
        cwd: root,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let logs = '';
      worker.stderr.on('data', (d: Buffer) => (logs += d.toString()));
      const exited = new Promise<number | null>((resolve) => worker.on('exit', resolve));
      try {
        await until(async () => (await client.getJob(job.id))?.state === 'running', { timeoutMs: 30_000, what: 'the deaf job to start' });
        let last = 0;
        for (const signal of signals) {
          worker.kill(signal);
          last = performance.now();
          await new Promise((resolve) => setTimeout(resolve, 300));
        }
        const code = await exited;
        return { code, logs, afterLastMs: performance.now() - last, jobId: job.id };
      } finally {
        if (worker.exitCode === null && worker.signalCode === null) worker.kill('SIGKILL');
      }
    };

    const twice = await run(['SIGTERM', 'SIGTERM']);
    expect(twice.code, twice.logs).toBe(70);
    expect(twice.logs).toMatch(/the stop did not finish within 5000 ms of the second signal: exiting before the stop finished \(1 handler\(s\) still running\)/);
    expect(twice.afterLastMs).toBeGreaterThan(4_000);
    // Left with the lease of a worker that is gone: running, not lost.
    expect(await client.getJob(twice.jobId)).toMatchObject({ state: 'running', attempts: 1 });

    const thrice = await run(['SIGTERM', 'SIGTERM', 'SIGINT']);
    expect(thrice.code, thrice.logs).toBe(70);
    expect(thrice.logs).toMatch(/SIGINT a third time: exiting/);

    // A leader rescues both once the leases (1 s) have run out, and they run again: nothing lost.
    const rescuer = client.worker({ concurrency: 2, heartbeatMs: 100, rescueAfterMs: 1_000 });
    await rescuer.start();
    try {
      for (const id of [twice.jobId, thrice.jobId]) {
        expect(await client.waitForJob(id, { timeoutMs: 30_000 })).toMatchObject({ state: 'succeeded', attempts: 2, result: 'ran again' });
      }
    } finally {
      await rescuer.stop();
    }
  });
});

describe('pgq worker that cannot start', () => {
  it('with its metrics port taken: exits 1 naming the port, and leaves no connection or timer open', async () => {
    await ctx.migrated();
    const taken = http.createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const port = (taken.address() as { port: number }).port;
    // In this process, so what the command leaves open is visible: an open pool kept the process alive for seconds.
    const open = (): string[] => process.getActiveResourcesInfo().filter((r) => r === 'TCPSocketWrap' || r === 'Timeout').sort();
    const before = open();
    const errors: string[] = [];
    const write = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((chunk: string | Uint8Array) => (errors.push(String(chunk)), true)) as typeof process.stderr.write;
    let code: number;
    try {
      code = await main(['node', 'pgq', '--database-url', ctx.url, '--schema', ctx.schema, '--log-level', 'warn', 'worker', '--tasks', path.join(root, 'test/fixtures/repeated-export-tasks.ts'), '--metrics-port', String(port)]);
    } finally {
      process.stderr.write = write;
      await new Promise<void>((resolve) => taken.close(() => resolve()));
    }
    expect(code).toBe(1);
    expect(errors.join('')).toMatch(new RegExp(`EADDRINUSE.*${port}`));
    // Sockets finish closing a few turns later; a pool left open would keep its connections for its idle timeout (10 s).
    // At most what was open before (a timer of this process's own may end meanwhile); an open pool would hold two sockets for 10 s.
    await until(() => open().length <= before.length, { timeoutMs: 5_000, what: `the command's sockets and timers to close: ${open().join(', ')} against ${before.join(', ')}` });
  });
});

describe('pgq dashboard on a loopback address', () => {
  it('knows loopback however it is written, so the host check is on (it was off for ::ffff:127.0.0.1 or 0:0:0:0:0:0:0:1)', () => {
    for (const host of ['127.0.0.1', '127.1.2.3', 'localhost', '::1', '[::1]', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1', '::ffff:7f00:1']) expect(isLoopback(host), host).toBe(true);
    for (const host of ['0.0.0.0', '::', '10.0.0.1', '::2', '::ffff:10.0.0.1', 'example.com']) expect(isLoopback(host), host).toBe(false);
  });

  it('warns when it serves off loopback without basic auth (it said nothing), and says DNS rebinding reaches it without --allowed-host', () => {
    const given = { loopback: false, basicAuth: false, readOnly: false, allowedHosts: [] as string[] };
    expect(exposureWarning('0.0.0.0', given)).toMatch(/listens on 0\.0\.0\.0 without basic auth: anyone who can reach it can read every job and retry, cancel or delete jobs.*DNS rebinding: name its hosts with --allowed-host/);
    expect(exposureWarning('0.0.0.0', { ...given, readOnly: true, allowedHosts: ['jobs.internal'] })).toMatch(/can read every job; set --basic-auth/);
    expect(exposureWarning('0.0.0.0', { ...given, basicAuth: true })).toBeUndefined();
    expect(exposureWarning('127.0.0.1', { ...given, loopback: true })).toBeUndefined();
  });

  it('knows loopback by the address the server listens on: --host 127.1 listens on 127.0.0.1 (the host check was off there)', async () => {
    // Short forms the resolver expands, as listen() does: 127.1 and 2130706433 are 127.0.0.1.
    for (const host of ['127.1', '2130706433', '127.0.0.1', 'localhost', '[::1]']) expect(await listensOnLoopback(host), host).toBe(true);
    for (const host of ['0.0.0.0', '::', '10.1', '::ffff:10.0.0.1']) expect(await listensOnLoopback(host), host).toBe(false);
  });
});

/** `pgq dashboard` on a free port with `args`, until `use` settles; `status` asks it for `path` with a given Host header. */
async function withConsole(args: string[], use: (status: (host: string, method?: string, path?: string) => Promise<number>, port: number) => Promise<void>): Promise<void> {
  await ctx.migrated();
  const console = spawn(process.execPath, [bin, '--schema', ctx.schema, 'dashboard', '--port', '0', ...args], {
    env: { ...process.env, DATABASE_URL: ctx.url, PGQ_LOG_LEVEL: 'info' },
    cwd: root,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let logs = '';
  console.stderr.on('data', (d: Buffer) => (logs += d.toString()));
  console.stdout.on('data', (d: Buffer) => (logs += d.toString()));
  try {
    await until(() => /console at http:\/\/[^/]+:\d+/.test(logs), { timeoutMs: 30_000, what: `the console to listen: ${logs}` });
    const port = Number(/console at http:\/\/[^/]+:(\d+)/.exec(logs)![1]);
    const status = (host: string, method = 'GET', path = '/api/overview'): Promise<number> =>
      new Promise((resolve, reject) => {
        const req = http.request({ host: '127.0.0.1', port, path, method, headers: { host } }, (res) => {
          res.resume();
          resolve(res.statusCode!);
        });
        req.on('error', reject);
        req.end();
      });
    await use(status, port);
  } finally {
    if (console.exitCode === null && console.signalCode === null) {
      const exited = new Promise((resolve) => console.on('exit', resolve));
      console.kill('SIGTERM');
      await exited;
    }
  }
}

describe('pgq dashboard', () => {
  it('on loopback answers only loopback host names (a page rebound to 127.0.0.1 gets 421), and --allowed-host adds one', async () => {
    await withConsole(['--allowed-host', 'jobs.internal'], async (status, port) => {
      expect(await status(`127.0.0.1:${port}`)).toBe(200);
      expect(await status(`localhost:${port}`)).toBe(200);
      expect(await status(`[::1]:${port}`)).toBe(200);
      expect(await status(`jobs.internal:${port}`)).toBe(200);
      expect(await status(`attacker.example:${port}`)).toBe(421);
      expect(await status(`attacker.example:${port}`, 'GET', '/api/csrf')).toBe(421);
      expect(await status(`attacker.example:${port}`, 'POST', '/api/jobs/delete?state=failed')).toBe(421);
    });
  });

  it('--host 127.1 listens on 127.0.0.1 and checks host names there too (it answered any host: DNS rebinding reached it)', async () => {
    await withConsole(['--host', '127.1'], async (status, port) => {
      expect(await status(`127.0.0.1:${port}`)).toBe(200);
      expect(await status(`attacker.example:${port}`, 'GET', '/api/csrf')).toBe(421);
    });
  });
});

/** libpq's variables left out: with one of them set, the CLI connects as they say. */
const NO_LIBPQ = { PGHOST: undefined, PGDATABASE: undefined, PGUSER: undefined };

describe("libpq's environment variables", () => {
  it('are what the CLI connects with when no --database-url or DATABASE_URL is given (it started an embedded PostgreSQL of its own)', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgq-libpq-'));
    try {
      const url = new URL(ctx.url);
      const env = {
        DATABASE_URL: undefined,
        PGHOST: url.hostname,
        PGPORT: url.port || '5432',
        PGUSER: decodeURIComponent(url.username) || 'postgres',
        PGPASSWORD: decodeURIComponent(url.password) || undefined,
        PGDATABASE: url.pathname.slice(1),
      };
      const migrated = pgq(['migrate'], { cwd: dir, env });
      expect(migrated.stderr).toMatch(/connecting with libpq's environment variables \(PGHOST=/);
      expect(migrated.code).toBe(0);
      expect(pgq(['stats'], { cwd: dir, env }).code).toBe(0);
      expect(fs.existsSync(path.join(dir, '.pgq'))).toBe(false);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('zero-setup start', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgq-zero-'));
  fs.chmodSync(dir, 0o755);
  afterAll(() => {
    spawnSync(process.execPath, [bin, 'db', 'stop'], { cwd: dir, encoding: 'utf8' });
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('runs the demo on an embedded PostgreSQL when no database is configured', () => {
    const demo = pgq(['demo', '--tasks', tasks], { cwd: dir, env: { DATABASE_URL: undefined, PGQ_TEST_DATABASE_URL: undefined, ...NO_LIBPQ } });
    expect(demo.stderr).toMatch(/started embedded PostgreSQL \(data in \.\/\.pgq\) at postgres:\/\//);
    expect(demo.code).toBe(0);
    expect(demo.stdout).toMatch(/call-flaky-api\s+succeeded\s+2/);
    expect(demo.stdout).toMatch(/build-report\s+succeeded\s+1/);
    expect(demo.stdout).toMatch(/All 6 jobs reached a final state/);
    expect(fs.existsSync(path.join(dir, '.pgq/data/PG_VERSION'))).toBe(true);

    // The next command starts it again from the same data; a second one reuses it.
    const first = pgq(['jobs', 'list'], { cwd: dir, env: { DATABASE_URL: undefined, ...NO_LIBPQ } });
    expect(first.stdout).toMatch(/build-report/);
    const second = pgq(['stats'], { cwd: dir, env: { DATABASE_URL: undefined, ...NO_LIBPQ } });
    expect(second.stderr).toMatch(/reusing embedded PostgreSQL/);
    expect(pgq(['db', 'stop'], { cwd: dir }).stdout).toMatch(/stopped/);
  });
});

describe('the embedded server behind zero-setup', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgq-daemon-'));
  fs.chmodSync(dir, 0o755);
  const pgqDir = path.join(dir, '.pgq');
  const zero = { DATABASE_URL: undefined, PGQ_TEST_DATABASE_URL: undefined };
  const daemons = (): number[] =>
    fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p)).map(Number).filter((pid) => {
      try {
        const args = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
        return args.some((a) => a.endsWith('embedded-daemon.js')) && args.includes(pgqDir);
      } catch {
        return false;
      }
    });
  const postmaster = (): number => Number(fs.readFileSync(path.join(pgqDir, 'data/postmaster.pid'), 'utf8').split('\n')[0]);
  const serverJson = (): { pid: number } => JSON.parse(fs.readFileSync(path.join(pgqDir, 'server.json'), 'utf8')) as { pid: number };
  afterAll(() => {
    spawnSync(process.execPath, [bin, 'db', 'stop'], { cwd: dir, encoding: 'utf8' });
    for (const pid of daemons()) process.kill(pid, 'SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('waits for a server that does not answer instead of starting a second; a daemon goes when its PostgreSQL dies; db stop signals only its daemon', async () => {
    const { ensureEmbedded } = await import('../src/cli/embedded.js');
    expect(pgq(['db', 'start'], { cwd: dir, env: zero })).toMatchObject({ code: 0, stdout: expect.stringMatching(/^postgres:\/\//) });
    const first = serverJson().pid;
    expect(daemons()).toEqual([first]);

    // A server that does not answer (stopped here; crash recovery or a full
    // machine look the same) is waited for, then named, never replaced.
    const pm = postmaster();
    process.kill(pm, 'SIGSTOP');
    try {
      await expect(ensureEmbedded(pgqDir, { unansweredWaitMs: 1_000 })).rejects.toThrow(
        new RegExp(`the embedded PostgreSQL in .* \\(daemon pid ${first}\\) is running but does not answer`),
      );
      expect(daemons()).toEqual([first]);
      expect(serverJson().pid).toBe(first);
    } finally {
      process.kill(pm, 'SIGCONT');
    }
    expect(await ensureEmbedded(pgqDir)).toMatchObject({ pid: first, started: false });

    // PostgreSQL killed: its daemon goes too, and the next command starts a new pair.
    process.kill(postmaster(), 'SIGKILL');
    await until(() => !alive(first), { timeoutMs: 15_000, what: 'the daemon to exit after its PostgreSQL died' });
    const restarted = pgq(['db', 'start'], { cwd: dir, env: zero });
    expect(restarted.code, restarted.stderr).toBe(0);
    const second = serverJson().pid;
    expect(second).not.toBe(first);
    expect(daemons()).toEqual([second]);

    // server.json naming a process that is not the daemon (a pid reused after a reboot): left alone.
    expect(pgq(['db', 'stop'], { cwd: dir }).stdout).toMatch(/embedded PostgreSQL stopped/);
    expect(daemons()).toEqual([]);
    const stranger = spawn('sleep', ['30'], { stdio: 'ignore' });
    try {
      fs.writeFileSync(path.join(pgqDir, 'server.json'), JSON.stringify({ pid: stranger.pid, port: 1, url: 'postgres://postgres:pgq@127.0.0.1:1/postgres' }));
      expect(pgq(['db', 'stop'], { cwd: dir }).stdout).toMatch(/was not running/);
      expect(alive(stranger.pid!)).toBe(true);
    } finally {
      stranger.kill('SIGKILL');
    }
  }, 180_000);

  it('recovers from a daemon killed with SIGKILL (its PostgreSQL stopped), an interrupted first start, an unfinished initdb, and two projects starting at once', async () => {
    const postgresOf = (dataDir: string): number[] =>
      fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p)).map(Number).filter((pid) => {
        try {
          const args = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
          return /(^|\/)postgres$/.test(args[0] ?? '') && args.includes(dataDir);
        } catch {
          return false;
        }
      });
    const dataDir = path.join(pgqDir, 'data');
    const startedFirst = pgq(['db', 'start'], { cwd: dir, env: zero });
    expect(startedFirst.code, `${startedFirst.stderr}\n${fs.existsSync(path.join(pgqDir, 'postgres.log')) ? fs.readFileSync(path.join(pgqDir, 'postgres.log'), 'utf8') : 'no log'}`).toBe(0);
    // The daemon killed with SIGKILL: its PostgreSQL ran on, and every command failed on its lock file.
    const orphan = postmaster();
    process.kill(serverJson().pid, 'SIGKILL');
    await until(() => daemons().length === 0, { timeoutMs: 10_000, what: 'the daemon to be gone' });
    expect(alive(orphan)).toBe(true);
    const again = pgq(['db', 'start'], { cwd: dir, env: zero });
    expect(again.code, again.stderr).toBe(0);
    expect(alive(orphan)).toBe(false);
    expect(daemons()).toEqual([serverJson().pid]);
    // And db stop ends a PostgreSQL left so ("was not running" while it ran).
    process.kill(serverJson().pid, 'SIGKILL');
    await until(() => daemons().length === 0, { timeoutMs: 10_000, what: 'the daemon to be gone' });
    expect(postgresOf(dataDir)).toHaveLength(1);
    expect(pgq(['db', 'stop'], { cwd: dir }).stdout).toMatch(/embedded PostgreSQL stopped/);
    expect(postgresOf(dataDir)).toEqual([]);

    // A first start (initdb) whose command is interrupted: the next command waits for that daemon instead of starting a second.
    const fresh = fs.mkdtempSync(path.join(os.tmpdir(), 'pgq-daemon-'));
    fs.chmodSync(fresh, 0o755); // PostgreSQL runs as its own user where the tests run as root
    const freshPgq = path.join(fresh, '.pgq');
    const env: Record<string, string | undefined> = { ...process.env, DATABASE_URL: undefined, PGQ_TEST_DATABASE_URL: undefined };
    for (const [k, v] of Object.entries(env)) if (v === undefined) delete env[k];
    try {
      const first = spawn(process.execPath, [bin, 'db', 'start'], { cwd: fresh, env: env as NodeJS.ProcessEnv, stdio: 'ignore' });
      await until(() => fs.existsSync(path.join(freshPgq, 'daemon.pid')), { timeoutMs: 30_000, what: 'the daemon to start' });
      const reaped = new Promise((resolve) => first.once('exit', resolve));
      first.kill('SIGKILL');
      await reaped; // a zombie still holds its pid: the lock it left would look held
      const next = pgq(['db', 'start'], { cwd: fresh, env: zero });
      expect(next.code, next.stderr).toBe(0);
      const freshServer = JSON.parse(fs.readFileSync(path.join(freshPgq, 'server.json'), 'utf8')) as { pid: number; port: number };
      expect(Number(fs.readFileSync(path.join(freshPgq, 'daemon.pid'), 'utf8'))).toBe(freshServer.pid);
      expect(pgq(['db', 'stop'], { cwd: fresh }).code).toBe(0);

      // Two projects starting at once on the default port: each gets a server (one bound the port the other had found free).
      const starts = [dir, fresh].map(
        (cwd) =>
          new Promise<number | null>((resolve) => {
            const child = spawn(process.execPath, [bin, 'db', 'start'], { cwd, env: env as NodeJS.ProcessEnv, stdio: 'ignore' });
            child.on('exit', (code) => resolve(code));
          }),
      );
      expect(await Promise.all(starts)).toEqual([0, 0]);
      expect(pgq(['db', 'stop'], { cwd: fresh }).code).toBe(0);

      // An initdb that did not finish (its daemon killed: no marker, never started, pg_control perhaps written): moved aside and made again.
      fs.rmSync(path.join(freshPgq, 'initialised'));
      fs.rmSync(path.join(freshPgq, 'data', 'postmaster.opts'));
      fs.rmSync(path.join(freshPgq, 'data', 'global', 'pg_control'));
      const afterUnfinished = pgq(['db', 'start'], { cwd: fresh, env: zero });
      expect(afterUnfinished.code, afterUnfinished.stderr).toBe(0);
      expect(fs.readdirSync(freshPgq).some((name) => name.startsWith('data.unfinished-'))).toBe(true);
      // A directory some server has run on is never moved, marker or not (an older pgq wrote none).
      expect(pgq(['db', 'stop'], { cwd: fresh }).code).toBe(0);
      fs.rmSync(path.join(freshPgq, 'initialised'));
      expect(pgq(['db', 'start'], { cwd: fresh, env: zero }).code).toBe(0);
      expect(fs.readdirSync(freshPgq).filter((name) => name.startsWith('data.unfinished-'))).toHaveLength(1);
    } finally {
      spawnSync(process.execPath, [bin, 'db', 'stop'], { cwd: fresh, encoding: 'utf8' });
      fs.rmSync(fresh, { recursive: true, force: true });
    }
  }, 300_000);
});
