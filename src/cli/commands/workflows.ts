import type { Command } from 'commander';
import type { CliRuntime } from '../runtime.js';
import { parseIdFlag, parseIntOption } from '../options.js';
import { humanTime, json, nameCell, table } from '../format.js';
import { WorkflowNotFoundError } from '../../workflow/store.js';
import { JOB_STATES } from '../../core/types.js';
import { workflowTree } from '../job-text.js';

export function registerWorkflows(program: Command, rt: CliRuntime): void {
  const workflows = program.command('workflows').description('inspect workflows');
  workflows
    .command('list', { isDefault: true })
    .description('workflows, newest first, with their jobs counted by state')
    .option('--before <id>', 'only workflows with a smaller id (the next page)', parseIdFlag('--before', 'workflow'))
    .option('--limit <n>', 'at most this many', parseIntOption('--limit', 1, 500), 50)
    .action(async (opts: { before?: string; limit: number }) => {
      await rt.using(async (pgq) => {
        const list = await pgq.listWorkflows(opts);
        if (rt.json) return rt.out(json(list));
        if (list.length === 0) return rt.out('no workflows');
        const more = list.length === opts.limit ? `\nnext page: --before ${list.at(-1)!.id}` : '';
        rt.out(
          table(
            ['id', 'name', 'state', 'jobs', 'created'],
            list.map((w) => [
              w.id,
              nameCell(w.name),
              w.state,
              `${w.counts.succeeded}/${w.total} succeeded${JOB_STATES.filter((s) => s !== 'succeeded' && w.counts[s] > 0)
                .map((s) => `, ${w.counts[s]} ${s}`)
                .join('')}`,
              humanTime(w.createdAt),
            ]),
          ) + more,
        );
      });
    });
  workflows
    .command('show <id>')
    .description('one workflow as a tree of its steps with their states (--json for JSON)')
    .action(async (id: string) => {
      await rt.using(async (pgq) => {
        const workflow = await pgq.getWorkflow(id);
        if (!workflow) throw new WorkflowNotFoundError(id);
        rt.out(rt.json ? json(workflow) : workflowTree(workflow));
      });
    });
}
