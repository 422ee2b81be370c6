import { createRequire } from 'node:module';

/** The logging methods pgq calls; a pino logger fits, and so does any compatible one. */
export interface Logger {
  error(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
  child(bindings: Record<string, unknown>): Logger;
}

/**
 * The default: JSON lines on stderr at `warn`, so a library stays quiet
 * unless something is wrong. pino (about 40 ms of loading) is required here,
 * by the first Pgq made without a `logger`, not by `import 'pgq'`: an
 * application that passes its own logger never loads it. pino is CommonJS,
 * so a synchronous require serves the constructor.
 */
export function defaultLogger(): Logger {
  const { pino } = createRequire(import.meta.url)('pino') as typeof import('pino');
  return pino({ name: 'pgq', level: process.env.PGQ_LOG_LEVEL ?? 'warn' }, pino.destination(2));
}
