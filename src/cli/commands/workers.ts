import type { Command } from 'commander';
import type { CliRuntime } from '../runtime.js';
import { humanTime, json, nameCell, table } from '../format.js';

export function registerWorkers(program: Command, rt: CliRuntime): void {
  program
    .command('workers')
    .description('registered workers: queues, concurrency, running jobs, heartbeat age, the leader, and any whose lease expired')
    .action(async () => {
      await rt.using(async (pgq) => {
        const workers = await pgq.listWorkers();
        if (rt.json) return rt.out(json(workers));
        if (workers.length === 0) return rt.out('no workers');
        rt.out(
          table(
            ['id', 'queues', 'running', 'heartbeat', 'started', 'leader'],
            workers.map((w) => [
              w.id,
              nameCell(w.queues.join(',')),
              `${w.runningJobs}/${w.concurrency}`,
              `${w.heartbeatAgeSeconds.toFixed(1)}s ago${w.live ? '' : ' (lease expired)'}`,
              humanTime(w.startedAt),
              w.isLeader ? 'leader' : '',
            ]),
          ),
        );
      });
    });
}
