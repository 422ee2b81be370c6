import type { Command } from 'commander';
import type { CliRuntime } from '../runtime.js';
import { loadTasks } from '../load-tasks.js';
import { httpBase, parseIntOption, parseList } from '../options.js';
import type { Worker } from '../../worker/worker.js';
import { serveWorkerEndpoints, type WorkerServer } from '../worker-server.js';
import type { Logger } from '../../core/logger.js';
import { humanDuration } from '../format.js';
import { resolveWorkerOptions, type WorkerOptions } from '../../config.js';
import { DEFAULTS } from '../../core/defaults.js';
import { PgqError, ValidationError } from '../../core/errors.js';
import type { AnyTask } from '../../task.js';

export function registerWorker(program: Command, rt: CliRuntime): void {
  program
    .command('worker')
    .description('run a worker for the tasks of a module until SIGTERM/SIGINT (a second signal stops at once)')
    .requiredOption('--tasks <module>', 'module whose exports are task definitions (.js or .ts)')
    .option('--concurrency <n>', 'jobs run at once', parseIntOption('--concurrency', 1, 10_000), 10)
    .option('--queues <a,b>', 'queues to serve (default: the queues of the tasks)', parseList)
    .option('--no-leader', 'never take leadership (no maintenance in this process)')
    .option('--heartbeat-ms <ms>', 'heartbeat period', parseIntOption('--heartbeat-ms', 10, 3_600_000))
    .option('--rescue-after-ms <ms>', 'a worker silent this long is dead', parseIntOption('--rescue-after-ms', 30, 86_400_000))
    .option('--shutdown-grace-ms <ms>', 'how long a stop waits for running jobs', parseIntOption('--shutdown-grace-ms', 0, 86_400_000))
    .option('--metrics-port <port>', 'serve Prometheus metrics at http://127.0.0.1:<port>/metrics, liveness at /healthz, readiness at /readyz', parseIntOption('--metrics-port', 1, 65_535))
    .option('--metrics-host <host>', 'address the metrics server listens on, with --metrics-port (default 127.0.0.1)')
    .action(async (opts: WorkerCommandOptions) => {
      const tasks = await loadTasks(opts.tasks);
      const workerOptions: WorkerOptions = {
        concurrency: opts.concurrency,
        queues: opts.queues,
        leader: opts.leader,
        heartbeatMs: opts.heartbeatMs,
        rescueAfterMs: opts.rescueAfterMs,
        shutdownGraceMs: opts.shutdownGraceMs,
      };
      // Checked before anything connects (with no database configured, before
      // the embedded server starts), and told by the flags' names.
      checkWorkerFlags(workerOptions, tasks);
      if (opts.metricsHost !== undefined && opts.metricsPort === undefined) {
        throw new PgqError('PGQ_USAGE', '--metrics-host needs --metrics-port (the port the metrics server listens on)');
      }
      const metricsHost = opts.metricsHost ?? '127.0.0.1';
      const pgq = await rt.open(tasks);
      let metricsServer: WorkerServer | undefined;
      let signals: ReturnType<typeof stopOnSignals> | undefined;
      // Whatever fails (the metrics port taken, the worker unable to start), the pool closes: an open pool kept the process alive for its idle timeout.
      try {
        const worker = pgq.worker(workerOptions);
        const tally = logJobEvents(worker, rt.logger);
        const startedAt = performance.now();
        metricsServer = opts.metricsPort ? await serveWorkerEndpoints(pgq, worker, metricsHost, opts.metricsPort) : undefined;
        signals = stopOnSignals(worker, rt.logger);
        await worker.start();
        rt.logger.info({ workerId: worker.id, tasks: tasks.map((t) => t.name) }, `worker ${worker.id} running; Ctrl-C to stop`);
        if (metricsServer) {
          const base = httpBase(metricsHost, opts.metricsPort!);
          rt.logger.info({}, `metrics at ${base}/metrics, health at ${base}/healthz and ${base}/readyz`);
        }
        await signals.stopped;
        const durationMs = performance.now() - startedAt;
        rt.logger.info({ ...tally, durationMs: Math.round(durationMs) }, summaryLine(tally, durationMs));
      } finally {
        // A worker that never started leaves no signal handler behind.
        signals?.dispose();
        await metricsServer?.close();
        await pgq.close();
      }
    });
}

const FLAGS: Record<string, string> = {
  concurrency: '--concurrency',
  queues: '--queues',
  heartbeatMs: '--heartbeat-ms',
  rescueAfterMs: '--rescue-after-ms',
  shutdownGraceMs: '--shutdown-grace-ms',
};

/** The worker options as `pgq.worker()` checks them, a failure named by its flag. */
function checkWorkerFlags(options: WorkerOptions, tasks: readonly AnyTask[]): void {
  try {
    resolveWorkerOptions(options, tasks);
  } catch (err) {
    if (!(err instanceof ValidationError)) throw err;
    const key = err.field.replace(/^worker\./, '').split(/[.[]/)[0]!;
    const flag = FLAGS[key];
    if (!flag) throw err;
    const message = err.message.slice(err.field.length + 2);
    if (key === 'rescueAfterMs' && options.rescueAfterMs === undefined) {
      throw new PgqError('PGQ_USAGE', `--heartbeat-ms ${options.heartbeatMs} needs a --rescue-after-ms of at least twice it (the default is ${DEFAULTS.rescueAfterMs} ms)`);
    }
    throw new PgqError('PGQ_USAGE', `${flag}: ${message.replace('heartbeatMs', '--heartbeat-ms')}`);
  }
}

interface WorkerCommandOptions {
  metricsPort?: number;
  metricsHost?: string;
  tasks: string;
  concurrency: number;
  queues?: string[];
  leader: boolean;
  heartbeatMs?: number;
  rescueAfterMs?: number;
  shutdownGraceMs?: number;
}

/** What a worker did, for the summary it logs when it stops. */
export interface JobTally {
  /** Attempts started; every one has settled by the time the summary is logged. */
  started: number;
  succeeded: number;
  retried: number;
  failed: number;
  /** Outcomes that did not stand: the job was cancelled or rescued from this worker first. */
  discarded: number;
}

/**
 * Logs each job's end (never payloads or results): a success at debug (one
 * line per job is noise at info), a failure at warn, in words; and counts
 * them for the summary at shutdown.
 */
export function logJobEvents(worker: Worker, logger: Logger): JobTally {
  const tally: JobTally = { started: 0, succeeded: 0, retried: 0, failed: 0, discarded: 0 };
  worker.on('job:start', (job) => {
    tally.started += 1;
    logger.debug({ jobId: job.id, task: job.task, attempt: job.attempts }, `job ${job.id} (${job.task}) started`);
  });
  worker.on('job:discarded', () => void (tally.discarded += 1));
  worker.on('job:success', (job, ms) => {
    tally.succeeded += 1;
    logger.debug({ jobId: job.id, task: job.task, attempt: job.attempts, ms: Math.round(ms) }, `job ${job.id} (${job.task}) succeeded in ${humanDuration(ms)}`);
  });
  worker.on('job:failure', (job, error, ms, retry) => {
    const message = (error as { message?: string }).message ?? String(error);
    const outcome = retry
      ? `failed attempt ${job.attempts} of ${job.maxAttempts}, will retry`
      : job.attempts >= job.maxAttempts
        ? `failed permanently after ${job.attempts} attempt${job.attempts === 1 ? '' : 's'}`
        : 'failed permanently';
    if (retry) tally.retried += 1;
    else tally.failed += 1;
    logger.warn({ jobId: job.id, task: job.task, attempt: job.attempts, ms: Math.round(ms), retry }, `job ${job.id} (${job.task}) ${outcome}: ${firstLine(message)}`);
  });
  return tally;
}

/** The line a worker logs when it has stopped: what it did and for how long. */
export function summaryLine(tally: JobTally, durationMs: number): string {
  const { started, succeeded, retried, failed, discarded } = tally;
  // The rest snoozed, were given back by the stop, or ended while the database was away (their outcome not written: the rescuer runs them again).
  const other = Math.max(0, started - succeeded - retried - failed - discarded);
  const more = `${discarded > 0 ? `, ${discarded} discarded` : ''}${other > 0 ? `, ${other} snoozed, given back or not written` : ''}`;
  return `worker stopped after ${humanDuration(durationMs)}: processed ${started} job attempt${started === 1 ? '' : 's'} (${succeeded} succeeded, ${retried} retried, ${failed} failed${more})`;
}

function firstLine(text: string): string {
  const [first = '', ...rest] = text.split('\n');
  return rest.length > 0 ? `${first} …` : first;
}

/** How long a hard stop (the second signal) may wait for handlers to settle and outcomes to be written before the process exits without them. */
export const HARD_STOP_EXIT_MS = 5_000;

/** The exit status when handlers that ignore their signal are left behind (as for exitOnStuckMs). */
const EXIT_STUCK = 70;

/**
 * First SIGTERM/SIGINT: graceful stop. Second: hard stop (running handlers
 * signalled at once); if they have not all settled and been written within
 * HARD_STOP_EXIT_MS, or at a third signal, the process exits without them:
 * their jobs stay with this worker's lease and are rescued once it expires,
 * as after a crash (never run twice at once). `stopped` resolves when the
 * worker has stopped; `dispose` removes the handlers.
 */
export function stopOnSignals(worker: Worker, logger: Logger, exit: (code: number) => void = (code) => process.exit(code)): { stopped: Promise<void>; dispose: () => void } {
  let dispose = (): void => undefined;
  const stopped = new Promise<void>((resolve) => {
    let signals = 0;
    let exitTimer: NodeJS.Timeout | undefined;
    const leave = (why: string): void => {
      logger.error({ running: worker.runningJobs }, `${why}: exiting before the stop finished (${worker.runningJobs} handler(s) still running); jobs not yet given back are rescued once this worker's lease expires`);
      exit(EXIT_STUCK);
    };
    const onSignal = (signal: NodeJS.Signals): void => {
      signals += 1;
      if (signals === 1) {
        logger.info({ signal }, `${signal}: finishing running jobs (send again to stop at once)`);
        void worker.stop().then(done);
      } else if (signals === 2) {
        logger.warn({ signal }, `${signal} again: stopping now; running jobs go back to the queue (a third signal exits at once)`);
        void worker.hardStop().then(done);
        exitTimer = setTimeout(() => leave(`the stop did not finish within ${HARD_STOP_EXIT_MS} ms of the second signal`), HARD_STOP_EXIT_MS);
        exitTimer.unref();
      } else {
        leave(`${signal} a third time`);
      }
    };
    dispose = (): void => {
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
    };
    const done = (): void => {
      clearTimeout(exitTimer);
      dispose();
      resolve();
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
  return { stopped, dispose };
}
