import { createRequire } from 'node:module';
import { PgqError } from './errors.js';

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
  const level = envLogLevel('warn');
  const { pino } = createRequire(import.meta.url)('pino') as typeof import('pino');
  return pino({ name: 'pgq', level }, pino.destination(2));
}

/** The levels pgq's loggers take, most verbose first. */
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;

/** PGQ_LOG_LEVEL when set (an error naming the levels when it names none), else `fallback`. */
export function envLogLevel(fallback: (typeof LOG_LEVELS)[number]): string {
  const fromEnv = process.env.PGQ_LOG_LEVEL;
  if (fromEnv === undefined || fromEnv === '') return fallback;
  if (!(LOG_LEVELS as readonly string[]).includes(fromEnv)) {
    throw new PgqError('PGQ_BAD_OPTION', `PGQ_LOG_LEVEL must be one of ${LOG_LEVELS.join(', ')}, got ${JSON.stringify(fromEnv)}`);
  }
  return fromEnv;
}
