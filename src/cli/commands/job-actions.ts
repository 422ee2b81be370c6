/** `pgq retry` and `pgq cancel`: one job by id, or every job the filter flags match (prints how many). */
import { CommanderError, type Command } from 'commander';
import type { CliRuntime } from '../runtime.js';
import { json, stateSentence } from '../format.js';
import { PgqError } from '../../core/errors.js';
import { addJobFilterOptions, hasFilter, toJobFilter, type JobFilterFlags } from '../job-filter-options.js';

export function registerJobActions(program: Command, rt: CliRuntime): void {
  addJobFilterOptions(
    program
      .command('retry [id]')
      .description('run a failed, cancelled, retryable or scheduled job again now; with filter flags instead of an id, every such job that matches (e.g. --state failed --queue emails --since 1h)'),
  ).action(async (id: string | undefined, opts: JobFilterFlags) => {
    await rt.using(async (pgq) => {
      const filter = toJobFilter(opts);
      if (id === undefined) {
        requireFilter(filter, 'retry');
        const n = await pgq.retryJobs(filter);
        return rt.out(rt.json ? json({ retried: n }) : `retried ${n} job${n === 1 ? '' : 's'}`);
      }
      if (hasFilter(filter)) throw new PgqError('PGQ_USAGE', 'give a job id or filter flags, not both');
      const job = await pgq.retryJob(id);
      rt.out(rt.json ? json(job) : `job ${job.id} ${stateSentence(job.state)} again (${job.attempts} of ${job.maxAttempts} attempts used)`);
    });
  });

  addJobFilterOptions(
    program
      .command('cancel [id]')
      .description('cancel a job (queued ones never run, running ones are aborted); with filter flags instead of an id, every matching job not yet finished'),
  ).action(async (id: string | undefined, opts: JobFilterFlags) => {
    await rt.using(async (pgq) => {
      const filter = toJobFilter(opts);
      if (id === undefined) {
        requireFilter(filter, 'cancel');
        const n = await pgq.cancelJobs(filter);
        return rt.out(rt.json ? json({ cancelled: n }) : `cancelled ${n} job${n === 1 ? '' : 's'}`);
      }
      if (hasFilter(filter)) throw new PgqError('PGQ_USAGE', 'give a job id or filter flags, not both');
      const job = await pgq.cancelJob(id);
      if (job.state === 'succeeded' || job.state === 'failed') {
        // It had finished: nothing was cancelled, and the exit status says so.
        if (rt.json) rt.out(json(job));
        process.stderr.write(`pgq: job ${job.id} had already ${job.state}; nothing was cancelled\n`);
        throw new CommanderError(1, 'pgq.jobFinished', '');
      }
      const cancelling = job.state === 'running' && job.cancelRequestedAt !== null;
      rt.out(rt.json ? json(job) : cancelling ? `job ${job.id} is running; its handler was told to stop, and the job ends cancelled once it has` : `job ${job.id} ${stateSentence(job.state)}`);
    });
  });
}

function requireFilter(filter: object, verb: string): void {
  if (!hasFilter(filter)) {
    throw new PgqError('PGQ_USAGE', `give a job id, or filter flags (e.g. --state failed --queue emails --since 1h) to ${verb} every matching job`);
  }
}
