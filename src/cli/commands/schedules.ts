import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';
import type { CliRuntime } from '../runtime.js';
import { resolveTask } from '../load-tasks.js';
import { parseIntOption, parseJson, type JsonFlag } from '../options.js';
import { INT32_MAX, INT32_MIN } from '../../core/int32.js';
import { MAX_ATTEMPTS } from '../../task.js';
import { humanTime, json, table } from '../format.js';
import { MISFIRE_GRACE_MS, ScheduleNotFoundError, type ScheduleOptions, type ScheduleRecord } from '../../schedules.js';
import { CATCH_UP_POLICIES, MAX_TICKS_PER_PASS, type CatchUpPolicy } from '../../core/cron.js';

function parsePolicy(value: string): CatchUpPolicy {
  if (!(CATCH_UP_POLICIES as readonly string[]).includes(value)) {
    throw new InvalidArgumentError(`--catch-up must be one of ${CATCH_UP_POLICIES.join(', ')}, got ${JSON.stringify(value)}`);
  }
  return value as CatchUpPolicy;
}

function status(s: ScheduleRecord): string {
  return !s.enabled ? 'disabled' : s.paused ? 'paused' : 'active';
}

const HEADERS = ['name', 'task', 'when', 'status', 'next_run_at', 'last_run_at', 'last_job', 'catch_up'];

function scheduleRow(s: ScheduleRecord): string[] {
  return [
    s.name,
    s.task,
    s.cron !== null ? `${s.cron} (${s.timezone})` : `every ${s.every}`,
    status(s),
    humanTime(s.nextRunAt),
    humanTime(s.lastRunAt ?? null),
    s.lastJobId ?? '',
    s.catchUp === 'all' ? `all (≤${s.catchUpLimit})` : s.catchUp,
  ];
}

export function registerSchedules(program: Command, rt: CliRuntime): void {
  const schedules = program.command('schedules').description('periodic jobs: list, add, remove, pause, resume, run now');

  schedules
    .command('list', { isDefault: true })
    .description('list schedules with their next and last runs')
    .action(async () => {
      await rt.using(async (pgq) => {
        const list = await pgq.listSchedules();
        rt.out(rt.json ? json(list) : list.length ? table(HEADERS, list.map(scheduleRow)) : 'no schedules');
      });
    });

  schedules
    .command('add <name>')
    .description('create or update a schedule (by name); give --cron or --every to create one; an update keeps what its flags do not change')
    .requiredOption('--task <name>', 'task of the jobs')
    .option('--cron <expr>', 'cron expression: 5 fields, or 6 with seconds first (e.g. "0 2 * * *")')
    .option('--timezone <zone>', 'IANA time zone of the cron expression (default UTC)')
    .option('--every <duration>', 'fixed interval instead of cron, e.g. 30s, 5m, 1h30m')
    .option('--payload <json>', 'payload of every job, as JSON (default {})', parseJson('--payload'))
    .option('--tasks <module>', 'tasks module, to validate the payload and use the task defaults')
    .option('--queue <name>', 'queue of the jobs (default: the task queue, or "default")')
    .option('--priority <n>', 'higher runs first', parseIntOption('--priority', INT32_MIN, INT32_MAX))
    .option('--max-attempts <n>', 'attempts of each job', parseIntOption('--max-attempts', 1, MAX_ATTEMPTS))
    .option('--catch-up <policy>', 'missed ticks: skip (default), once, all', parsePolicy)
    .option('--catch-up-limit <n>', 'with --catch-up all: most missed ticks fired', parseIntOption('--catch-up-limit', 1, MAX_TICKS_PER_PASS))
    .option('--misfire-grace-ms <ms>', 'a tick this late still fires on time (default 60000)', parseIntOption('--misfire-grace-ms', MISFIRE_GRACE_MS.min, MISFIRE_GRACE_MS.max))
    .action(async (name: string, opts: AddOptions) => {
      const task = await resolveTask(opts.task, opts.tasks);
      await rt.using(async (pgq) => {
        const { tasks: _module, payload, ...flags } = opts;
        const given = payload ? { ...flags, payload: payload.json } : flags;
        // An update changes what its flags say: without --tasks the task's
        // defaults are not known here, and a stand-in's (queue "default",
        // payload {}) would silently replace what the schedule had.
        const existing = await pgq.getSchedule(name);
        const kept = existing ? keptSettings(existing, given) : {};
        const saved = await pgq.schedule({ ...kept, ...given, name, task });
        rt.out(rt.json ? json(saved) : `saved schedule ${saved.name}; next run: ${humanTime(saved.nextRunAt)}`);
      }, { tasks: [task] });
    });

  schedules
    .command('remove <name>')
    .description('delete a schedule (jobs it already made stay)')
    .action(async (name: string) => {
      await rt.using(async (pgq) => {
        if (!(await pgq.unschedule(name))) throw new ScheduleNotFoundError(name);
        rt.out(rt.json ? json({ removed: name }) : `removed schedule ${name}`);
      });
    });

  schedules
    .command('pause <name>')
    .description('stop a schedule from firing until resumed')
    .action(async (name: string) => {
      await rt.using(async (pgq) => {
        const s = await pgq.pauseSchedule(name);
        rt.out(rt.json ? json(s) : `paused schedule ${s.name}`);
      });
    });

  schedules
    .command('resume <name>')
    .description('let a paused schedule fire again, from its next tick')
    .action(async (name: string) => {
      await rt.using(async (pgq) => {
        const s = await pgq.resumeSchedule(name);
        rt.out(rt.json ? json(s) : `resumed schedule ${s.name}; next run: ${humanTime(s.nextRunAt)}`);
      });
    });

  schedules
    .command('run <name>')
    .description('enqueue one job of the schedule now, without moving its next tick')
    .action(async (name: string) => {
      await rt.using(async (pgq) => {
        const job = await pgq.runSchedule(name);
        rt.out(rt.json ? json(job) : `enqueued job ${job.id} (${job.task}, queue ${job.queue}) for schedule ${name}`);
      });
    });
}

/**
 * What an update by `schedules add` keeps of the schedule saved as
 * `existing`: every setting its flags do not give (the timing when neither
 * --cron nor --every is given; the time zone of a cron schedule). The
 * payload, queue, priority and attempts are kept only while the task stays
 * the same.
 */
function keptSettings(existing: ScheduleRecord, given: Pick<AddOptions, 'cron' | 'every' | 'task'>): Partial<ScheduleOptions> {
  const kept: Partial<ScheduleOptions> = {
    catchUp: existing.catchUp,
    catchUpLimit: existing.catchUpLimit,
    misfireGraceMs: existing.misfireGraceMs,
  };
  if (given.cron === undefined && given.every === undefined) {
    if (existing.cron !== null) [kept.cron, kept.timezone] = [existing.cron, existing.timezone];
    else if (existing.every !== null) kept.every = existing.every;
  } else if (given.cron !== undefined && existing.cron !== null) {
    kept.timezone = existing.timezone;
  }
  if (existing.task === given.task) {
    Object.assign(kept, { payload: existing.payload, queue: existing.queue, priority: existing.priority, maxAttempts: existing.maxAttempts });
  }
  return kept;
}

/** The flags of `schedules add`: the schedule's options, the task by name, and the module that defines it. */
type AddOptions = Omit<ScheduleOptions, 'name' | 'task' | 'every' | 'payload'> & { task: string; every?: string; tasks?: string; payload?: JsonFlag };
