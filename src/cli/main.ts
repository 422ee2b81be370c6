/**
 * The `pgq` command. Every subcommand takes --schema (default pgq) and finds
 * its database in --database-url, then DATABASE_URL, then an embedded
 * PostgreSQL with its data in ./.pgq (started, or reused when running).
 *
 * This module only defines the program; `bin.ts` runs it.
 */
import { createRequire } from 'node:module';
import { Command, CommanderError, Option } from 'commander';
import { envLogLevel, type Logger } from '../core/logger.js';
import { PgqError } from '../core/errors.js';
import { LOG_LEVELS, makeLogger, openPgq, plainLogger, type GlobalOptions } from './context.js';
import type { CliRuntime } from './runtime.js';
import { registerMigrate } from './commands/migrate.js';
import { registerWorker } from './commands/worker.js';
import { registerEnqueue } from './commands/enqueue.js';
import { registerJobs } from './commands/jobs.js';
import { registerDb } from './commands/db.js';
import { registerDemo } from './commands/demo.js';
import { registerRoles } from './commands/roles.js';
import { registerSchedules } from './commands/schedules.js';
import { registerJobActions } from './commands/job-actions.js';
import { registerWorkers } from './commands/workers.js';
import { registerWorkflows } from './commands/workflows.js';
import { registerDashboard } from './commands/dashboard.js';
import { registerQueues } from './commands/queues.js';

export function buildProgram(): Command {
  const program = new Command();
  program
    .name('pgq')
    .description('pgq: a PostgreSQL job queue')
    .option('--schema <name>', "schema of pgq's tables", 'pgq')
    .option('--database-url <url>', 'PostgreSQL URL (default: DATABASE_URL, else libpq\'s PGHOST/PGDATABASE/PGUSER, else an embedded PostgreSQL in ./.pgq)')
    // Read from PGQ_LOG_LEVEL only when no --log-level is given, and only by a command that logs: a bad value
    // there broke every invocation, --version and --help too, and --log-level could not override it.
    .addOption(new Option('--log-level <level>', 'how much to log (default: PGQ_LOG_LEVEL, else info)').choices(LOG_LEVELS))
    .option('--json', 'print JSON instead of tables')
    .version(packageVersion(), '-V, --version', "print pgq's version")
    .showHelpAfterError('(pgq <command> --help lists its options)')
    .exitOverride();
  let logger: Logger | undefined;
  const globals = (): GlobalOptions & { json?: boolean } => {
    const given = program.opts<GlobalOptions & { json?: boolean }>();
    return { ...given, logLevel: given.logLevel ?? envLogLevel('info') };
  };
  program.hook('preAction', async () => {
    logger ??= await makeLogger(globals().logLevel);
  });
  const rt: CliRuntime = {
    get logger() {
      logger ??= plainLogger(globals().logLevel);
      return logger;
    },
    get json() {
      return Boolean(globals().json);
    },
    schema: () => globals().schema,
    out: (text: string) => void process.stdout.write(`${text}\n`),
    open: (tasks = [], options = {}) => openPgq(globals(), rt.logger, tasks, options),
    async using(fn, options = {}) {
      const pgq = await rt.open(options.tasks, { schema: options.schema });
      try {
        return await fn(pgq);
      } finally {
        await pgq.close();
      }
    },
  };
  registerMigrate(program, rt);
  registerWorker(program, rt);
  registerEnqueue(program, rt);
  registerJobs(program, rt);
  registerDb(program, rt);
  registerDemo(program, rt);
  registerRoles(program, rt);
  registerSchedules(program, rt);
  registerJobActions(program, rt);
  registerWorkers(program, rt);
  registerWorkflows(program, rt);
  registerDashboard(program, rt);
  registerQueues(program, rt);
  return program;
}

/** The version in pgq's package.json (two levels up from src/cli and from dist/cli alike). */
function packageVersion(): string {
  return (createRequire(import.meta.url)('../../package.json') as { version: string }).version;
}

/** Runs the program on `argv` (as `process.argv`); resolves to the exit code. */
export async function main(argv: string[]): Promise<number> {
  try {
    const program = buildProgram();
    // A bare `pgq` asks what there is: help on stdout, success.
    if (argv.length <= 2) {
      process.stdout.write(program.helpInformation());
      return 0;
    }
    await program.parseAsync(argv);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : err.exitCode || 1;
    const message = err instanceof PgqError ? err.message : err instanceof Error ? `${err.message}` : String(err);
    process.stderr.write(`pgq: ${message}\n`);
    if (!(err instanceof PgqError) && process.env.PGQ_DEBUG) process.stderr.write(`${(err as Error).stack}\n`);
    return 1;
  }
}
