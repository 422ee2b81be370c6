import type { Command } from 'commander';
import type { CliRuntime } from '../runtime.js';
import { json } from '../format.js';

export function registerMigrate(program: Command, rt: CliRuntime): void {
  program
    .command('migrate')
    .description("create or upgrade pgq's tables in the schema")
    .action(async () => {
      await rt.using(async (pgq) => {
        const { applied } = await pgq.migrate();
        rt.out(rt.json ? json({ schema: pgq.schema, applied }) : applied.length ? `applied ${applied.join(', ')} in schema ${pgq.schema}` : `schema ${pgq.schema} is up to date`);
      }, { schema: 'none' });
    });
}
