#!/usr/bin/env node
/** The `pgq` executable: runs the program defined in main.ts. */
import { main } from './main.js';

// A reader that stops early (`pgq jobs list --json | head`) closes the pipe:
// the output ends there, as with any Unix command, rather than in a stack trace.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code !== 'EPIPE') throw err;
  process.exit(process.exitCode ?? 0);
});

process.exitCode = await main(process.argv);
