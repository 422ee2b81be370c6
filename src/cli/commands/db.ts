import type { Command } from 'commander';
import type { CliRuntime } from '../runtime.js';
import { ensureEmbedded, stopEmbedded } from '../embedded.js';

export function registerDb(program: Command, rt: CliRuntime): void {
  const db = program.command('db').description('the embedded PostgreSQL used when no database is configured (data in ./.pgq)');
  db.command('start')
    .description('start (or reuse) the embedded PostgreSQL and print its URL')
    .action(async () => {
      const info = await ensureEmbedded();
      rt.out(info.url);
    });
  db.command('stop')
    .description('stop the embedded PostgreSQL')
    .action(async () => {
      rt.out((await stopEmbedded()) ? 'embedded PostgreSQL stopped' : 'embedded PostgreSQL was not running');
    });
}
