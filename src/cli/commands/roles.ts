import type { Command } from 'commander';
import type { CliRuntime } from '../runtime.js';
import { rolesSql } from '../../roles.js';
import { json } from '../format.js';

export function registerRoles(program: Command, rt: CliRuntime): void {
  program
    .command('roles')
    .description('create least-privilege roles: an enqueue-only role and a worker role (run as the owner of the tables)')
    .option('--enqueuer <role>', 'role that may only add jobs and read its own')
    .option('--worker <role>', 'role that may run workers, but neither change the schema nor pause a queue or change its limits')
    .option('--print', 'print the SQL instead of running it')
    .action(async (opts: { enqueuer?: string; worker?: string; print?: boolean }) => {
      const roles = { enqueuer: opts.enqueuer, worker: opts.worker };
      // Checked before anything connects (with no database configured, before the embedded server starts).
      const statements = rolesSql(rt.schema(), roles);
      if (opts.print) {
        rt.out(rt.json ? json({ statements }) : statements.map((s) => `${s};`).join('\n'));
        return;
      }
      await rt.using(async (pgq) => {
        await pgq.setupRoles(roles);
        rt.out(rt.json ? json({ schema: pgq.schema, ...roles }) : `roles ready in schema ${pgq.schema}: ${[opts.enqueuer && `enqueuer ${opts.enqueuer}`, opts.worker && `worker ${opts.worker}`].filter(Boolean).join(', ')}`);
      });
    });
}
