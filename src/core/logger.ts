import { pino } from 'pino';

/** The logging methods pgq calls; a pino logger fits, and so does any compatible one. */
export interface Logger {
  error(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
  child(bindings: Record<string, unknown>): Logger;
}

/** The default: JSON lines on stderr at `warn`, so a library stays quiet unless something is wrong. */
export function defaultLogger(): Logger {
  return pino({ name: 'pgq', level: process.env.PGQ_LOG_LEVEL ?? 'warn' }, pino.destination(2));
}
