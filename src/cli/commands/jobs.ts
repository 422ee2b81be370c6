import type { Command } from 'commander';
import type { CliRuntime } from '../runtime.js';
import { parseIdFlag, parseIntOption } from '../options.js';
import { humanDuration, JOB_HEADERS, jobRow, json, nameCell, table } from '../format.js';
import { JobNotFoundError, PgqError } from '../../core/errors.js';
import { addJobFilterOptions, hasFilter, toJobFilter, type JobFilterFlags } from '../job-filter-options.js';
import { jobText } from '../job-text.js';
import { JOB_STATES as JOB_STATES_ORDER } from '../../core/types.js';
import { describeOrphan } from '../../db/worker-tasks.js';

export function registerJobs(program: Command, rt: CliRuntime): void {
  const jobs = program.command('jobs').description('inspect and delete jobs');
  addJobFilterOptions(
    jobs
      .command('list', { isDefault: true })
      .description('list jobs, newest first; page with --before <last id of the previous page>'),
  )
    .option('--before <id>', 'only jobs with a smaller id (the next page)', parseIdFlag('--before', 'job'))
    .option('--limit <n>', 'at most this many', parseIntOption('--limit', 1, 1_000), 50)
    .action(async (opts: JobFilterFlags & { before?: string; limit: number }) => {
      await rt.using(async (pgq) => {
        const list = await pgq.listJobs({ ...toJobFilter(opts), before: opts.before, limit: opts.limit });
        if (rt.json) return rt.out(json(list));
        if (list.length === 0) return rt.out('no jobs');
        const more = list.length === opts.limit ? `\nnext page: --before ${list.at(-1)!.id}` : '';
        rt.out(table(JOB_HEADERS, list.map((job) => jobRow(job))) + more);
      });
    });
  jobs
    .command('show <id>')
    .description('show one job: payload, result, progress, every error with its stack (--json for JSON)')
    .action(async (id: string) => {
      await rt.using(async (pgq) => {
        const job = await pgq.getJob(id);
        if (!job) throw new JobNotFoundError(id);
        rt.out(rt.json ? json(job) : jobText(job));
      });
    });
  addJobFilterOptions(
    jobs
      .command('delete [id]')
      .description('delete one job, or every job matching the filter flags (never running ones); prints how many'),
  ).action(async (id: string | undefined, opts: JobFilterFlags) => {
    const filter = toJobFilter(opts);
    await rt.using(async (pgq) => {
      if (id !== undefined) {
        if (hasFilter(filter)) throw new PgqError('PGQ_USAGE', 'give a job id or filter flags, not both');
        if (!(await pgq.deleteJob(id))) throw new JobNotFoundError(id);
        return rt.out(rt.json ? json({ deleted: 1 }) : `deleted job ${id}`);
      }
      if (!hasFilter(filter)) throw new PgqError('PGQ_USAGE', 'give a job id, or filter flags (e.g. --state cancelled --until 7d) to delete every matching job');
      const n = await pgq.deleteJobs(filter);
      rt.out(rt.json ? json({ deleted: n }) : `deleted ${n} job${n === 1 ? '' : 's'}`);
    });
  });

  program
    .command('stats')
    .description('jobs per queue and state, and the oldest waiting job')
    .action(async () => {
      await rt.using(async (pgq) => {
        const stats = await pgq.stats();
        if (stats.length === 0) return rt.out(rt.json ? json([]) : 'no jobs');
        // Read from `workers`, which an enqueuer role may not read (pgq roles): then none are listed.
        const orphans = await pgq.orphanedTasks().catch((err: unknown) => {
          if ((err as { code?: unknown }).code === '42501') return null;
          throw err;
        });
        // Each queue with the tasks of its waiting jobs that no live worker runs (null: not readable), as the text lists them under the table.
        if (rt.json) return rt.out(json(stats.map((s) => ({ ...s, orphanedTasks: orphans && orphans.filter((o) => o.queue === s.queue) }))));
        const now = Date.now();
        rt.out(
          table(
            ['queue', ...JOB_STATES_ORDER, 'oldest_waiting'],
            stats.map((s) => [
              nameCell(s.queue),
              ...JOB_STATES_ORDER.map((st) => String(s.counts[st])),
              s.oldestWaitingRunAt ? humanDuration(now - s.oldestWaitingRunAt.getTime()) : '',
            ]),
          ),
        );
        if (orphans && orphans.length > 0) {
          rt.out(`\nwaiting for a task no live worker runs:\n${orphans.map((o) => `  ${describeOrphan(o)}`).join('\n')}`);
        }
      });
    });
}
