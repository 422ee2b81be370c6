import type { Command } from 'commander';
import type { CliRuntime } from '../runtime.js';
import { loadTasks } from '../load-tasks.js';
import { importModule } from '../../core/import-module.js';
import { logJobEvents } from './worker.js';
import { nameCell, table, truncate } from '../format.js';
import { embeddedState } from '../context.js';
import { stopEmbedded } from '../embedded.js';
import { PgqError } from '../../core/errors.js';
import type { Pgq } from '../../client.js';

type EnqueueDemo = (pgq: Pgq) => Promise<string[]>;

export function registerDemo(program: Command, rt: CliRuntime): void {
  program
    .command('demo')
    .description('start a worker, enqueue the example jobs of a tasks module (its enqueueDemo export), show them processed, exit')
    .requiredOption('--tasks <module>', 'module exporting tasks and enqueueDemo(pgq)')
    .action(async (opts: { tasks: string }) => {
      const tasks = await loadTasks(opts.tasks);
      const enqueueDemo = await loadEnqueueDemo(opts.tasks);
      const pgq = await rt.open(tasks, { schema: 'migrate' });
      try {
        const worker = pgq.worker({ concurrency: 4, pollIntervalMs: 200 });
        logJobEvents(worker, rt.logger);
        await worker.start();
        const ids = await enqueueDemo(pgq);
        rt.logger.info({ jobs: ids.length }, `enqueued ${ids.length} demo jobs; the worker is processing them`);
        const jobs = [];
        for (const id of ids) jobs.push(await pgq.waitForJob(id, { timeoutMs: 60_000 }));
        await worker.stop();
        rt.out(
          '\n' +
            table(
              ['id', 'task', 'state', 'attempts', 'waited', 'result / error'],
              jobs.map((j) => [
                j.id,
                nameCell(j.task),
                j.state,
                String(j.attempts),
                `${((j.startedAt!.getTime() - j.createdAt.getTime()) / 1000).toFixed(2)}s`,
                truncate(JSON.stringify(j.state === 'succeeded' ? j.result : j.errors.at(-1)?.message) ?? '', 70),
              ]),
            ),
        );
        rt.out(`\nAll ${jobs.length} jobs reached a final state. Inspect them with: npx pgq jobs list`);
      } finally {
        await pgq.close();
        if (embeddedState.startedHere && (await stopEmbedded())) {
          rt.out('Stopped the embedded PostgreSQL this demo started; its data stays in ./.pgq.');
        }
      }
    });
}

async function loadEnqueueDemo(modulePath: string): Promise<EnqueueDemo> {
  const mod = await importModule(modulePath);
  if (typeof mod.enqueueDemo !== 'function') {
    throw new PgqError('PGQ_TASKS_MODULE', `${modulePath} exports no enqueueDemo(pgq) function`);
  }
  return mod.enqueueDemo as EnqueueDemo;
}
