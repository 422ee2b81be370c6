import type { Command } from 'commander';
import type { CliRuntime } from '../runtime.js';
import { ensureEmbedded, stopEmbedded } from '../embedded.js';
import { json } from '../format.js';

export function registerDb(program: Command, rt: CliRuntime): void {
  const db = program.command('db').description('the embedded PostgreSQL used when no database is configured (data in ./.pgq)');
  db.command('start')
    .description('start (or reuse) the embedded PostgreSQL and print its URL')
    .action(async () => {
      const info = await ensureEmbedded();
      rt.out(rt.json ? json({ url: info.url }) : info.url);
    });
  db.command('stop')
    .description('stop the embedded PostgreSQL')
    .action(async () => {
      const stopped = await stopEmbedded();
      rt.out(rt.json ? json({ stopped }) : stopped ? 'embedded PostgreSQL stopped' : 'embedded PostgreSQL was not running');
    });
}
