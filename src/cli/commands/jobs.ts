import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';
import type { CliRuntime } from '../main.js';
import { parseIntOption } from '../options.js';
import { JOB_HEADERS, jobRow, json, table } from '../format.js';
import { JOB_STATES, type JobState } from '../../core/types.js';
import { JobNotFoundError } from '../../core/errors.js';

function parseState(value: string): JobState {
  if (!(JOB_STATES as readonly string[]).includes(value)) {
    throw new InvalidArgumentError(`--state must be one of ${JOB_STATES.join(', ')}, got ${JSON.stringify(value)}`);
  }
  return value as JobState;
}

export function registerJobs(program: Command, rt: CliRuntime): void {
  const jobs = program.command('jobs').description('inspect jobs');
  jobs
    .command('list', { isDefault: true })
    .description('list jobs, newest first')
    .option('--state <state>', `one of ${JOB_STATES.join(', ')}`, parseState)
    .option('--queue <name>', 'only this queue')
    .option('--task <name>', 'only this task')
    .option('--limit <n>', 'at most this many', parseIntOption('--limit', 1, 1_000), 50)
    .action(async (opts: { state?: JobState; queue?: string; task?: string; limit: number }) => {
      await rt.using(async (pgq) => {
        const list = await pgq.listJobs(opts);
        rt.out(rt.json ? json(list) : list.length ? table(JOB_HEADERS, list.map(jobRow)) : 'no jobs');
      });
    });
  jobs
    .command('show <id>')
    .description('show one job with its payload, result and errors')
    .action(async (id: string) => {
      await rt.using(async (pgq) => {
        const job = await pgq.getJob(id);
        if (!job) throw new JobNotFoundError(id);
        rt.out(json(job));
      });
    });

  program
    .command('retry <id>')
    .description('run a failed, cancelled, retryable or scheduled job again now')
    .action(async (id: string) => {
      await rt.using(async (pgq) => {
        const job = await pgq.retryJob(id);
        rt.out(rt.json ? json(job) : `job ${job.id} is ${job.state} again (attempts ${job.attempts}/${job.maxAttempts})`);
      });
    });

  program
    .command('cancel <id>')
    .description('cancel a job: queued jobs never run, running ones are aborted')
    .action(async (id: string) => {
      await rt.using(async (pgq) => {
        const job = await pgq.cancelJob(id);
        rt.out(rt.json ? json(job) : `job ${job.id} is ${job.state}`);
      });
    });

  program
    .command('stats')
    .description('jobs per queue and state, and the oldest waiting job')
    .action(async () => {
      await rt.using(async (pgq) => {
        const stats = await pgq.stats();
        if (rt.json) return rt.out(json(stats));
        if (stats.length === 0) return rt.out('no jobs');
        const now = Date.now();
        const states = JOB_STATES;
        rt.out(
          table(
            ['queue', ...states, 'oldest_waiting'],
            stats.map((s) => [
              s.queue,
              ...states.map((st) => String(s.counts[st])),
              s.oldestWaitingRunAt ? `${((now - s.oldestWaitingRunAt.getTime()) / 1000).toFixed(1)}s` : '',
            ]),
          ),
        );
      });
    });
}
