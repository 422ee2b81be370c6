import { CommanderError, type Command } from 'commander';
import { PgqError } from '../../core/errors.js';
import type { CliRuntime } from '../runtime.js';
import { resolveTask } from '../load-tasks.js';
import { INT32_MAX, INT32_MIN } from '../../core/int32.js';
import { MAX_ATTEMPTS } from '../../task.js';
import { parseDate, parseIntOption, parseJson, type JsonFlag } from '../options.js';
import { json, stateSentence } from '../format.js';
import type { Pgq } from '../../client.js';
import { describeOrphan, findOrphanedTasks } from '../../db/worker-tasks.js';

export function registerEnqueue(program: Command, rt: CliRuntime): void {
  program
    .command('enqueue <task>')
    .description('enqueue one job; with --tasks the payload is validated by the task schema')
    .option('--payload <json>', 'the payload as JSON (default {})', parseJson('--payload'))
    .option('--tasks <module>', 'tasks module, to validate the payload and use the task defaults')
    .option('--queue <name>', 'queue (default: the task queue, or "default")')
    .option('--priority <n>', 'higher runs first', parseIntOption('--priority', INT32_MIN, INT32_MAX))
    .option('--delay-ms <ms>', 'run no sooner than this many ms from now', parseIntOption('--delay-ms', 0, 10_000_000_000_000))
    .option('--run-at <iso>', 'run no sooner than this time', parseDate('--run-at'))
    .option('--max-attempts <n>', 'attempts before failing for good', parseIntOption('--max-attempts', 1, MAX_ATTEMPTS))
    .option('--unique-key <key>', 'return the live job with this key instead of adding another')
    .option('--wait', 'wait for the job to finish and print it as JSON')
    .option('--timeout-ms <ms>', 'with --wait: give up after this long', parseIntOption('--timeout-ms', 1, 86_400_000))
    .action(async (taskName: string, opts: EnqueueCommandOptions) => {
      if (opts.timeoutMs !== undefined && !opts.wait) {
        // Not the job's own time limit (that is the task's timeoutMs): refuse rather than ignore it.
        throw new PgqError('PGQ_USAGE', '--timeout-ms is how long --wait waits for the job; give it with --wait (a handler\'s time limit is its task\'s timeoutMs)');
      }
      if (opts.delayMs !== undefined && opts.runAt !== undefined) {
        throw new PgqError('PGQ_USAGE', '--delay-ms and --run-at both say when the job runs: give one of them');
      }
      const task = await resolveTask(taskName, opts.tasks);
      await rt.using(async (pgq) => {
        const job = await pgq.enqueue(task, opts.payload ? opts.payload.json : {}, {
          queue: opts.queue,
          priority: opts.priority,
          delayMs: opts.delayMs,
          runAt: opts.runAt,
          maxAttempts: opts.maxAttempts,
          uniqueKey: opts.uniqueKey,
        });
        await warnIfOrphaned(pgq, job.task, job.queue, Boolean(opts.tasks), opts.queue !== undefined);
        if (opts.wait) {
          const done = await pgq.waitForJob(job.id, { timeoutMs: opts.timeoutMs });
          rt.out(json(done));
          if (done.state !== 'succeeded') {
            // Printed, and the exit status says so: a script can tell a failed job from a done one.
            process.stderr.write(`pgq: job ${done.id} ${stateSentence(done.state)}\n`);
            throw new CommanderError(1, 'pgq.jobNotSucceeded', '');
          }
        } else {
          // With a unique key the job may be one that was already live: say what is true either way.
          const what = opts.uniqueKey === undefined ? `enqueued job ${job.id}` : `job ${job.id} is the live job with unique key ${JSON.stringify(opts.uniqueKey)}`;
          rt.out(rt.json ? json(job) : `${what} (task ${job.task}, queue ${job.queue}); it ${stateSentence(job.state)}`);
        }
      }, { tasks: [task] });
    });
}

/**
 * Warns on stderr when no live worker runs `task` on `queue`, where the job
 * just enqueued waits. Quiet when the check cannot run (an enqueue-only role cannot read the
 * workers table).
 */
async function warnIfOrphaned(pgq: Pgq, task: string, queue: string, fromModule: boolean, queueGiven: boolean): Promise<void> {
  const orphans = await findOrphanedTasks(pgq.kysely, { tasks: [task], evenWithNoWorkers: true }).catch(() => []);
  for (const orphan of orphans.filter((o) => o.queue === queue)) {
    const defaults = queueGiven ? 'priority and attempts' : 'queue, priority and attempts';
    const hint = fromModule ? '' : ` (with --tasks <module>, enqueue uses the task's own ${defaults})`;
    process.stderr.write(`pgq: warning: ${describeOrphan(orphan)}; the job waits until a worker that runs it starts${hint}\n`);
  }
}

interface EnqueueCommandOptions {
  payload?: JsonFlag;
  tasks?: string;
  queue?: string;
  priority?: number;
  delayMs?: number;
  runAt?: Date;
  maxAttempts?: number;
  uniqueKey?: string;
  wait?: boolean;
  timeoutMs?: number;
}
