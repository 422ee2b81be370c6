/** What every subcommand gets from the `pgq` program (built in main.ts). */
import type { Pgq } from '../client.js';
import type { AnyTask } from '../task.js';
import type { Logger } from '../core/logger.js';
import type { SchemaPreparation } from './context.js';

/** What commands get from the program: output, logger, and a Pgq from the global options. */
export interface CliRuntime {
  readonly logger: Logger;
  readonly json: boolean;
  /** The --schema option. */
  schema(): string;
  out(text: string): void;
  open(tasks?: AnyTask[], options?: { schema?: SchemaPreparation }): Promise<Pgq>;
  /** Opens a Pgq, runs `fn` with it, and closes it whatever happens. */
  using<T>(fn: (pgq: Pgq) => Promise<T>, options?: { tasks?: AnyTask[]; schema?: SchemaPreparation }): Promise<T>;
}
