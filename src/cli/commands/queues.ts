import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';
import type { CliRuntime } from '../runtime.js';
import { json, nameCell, table } from '../format.js';
import { onceOption } from '../options.js';
import { formatEvery } from '../../core/cron.js';
import { isInt32 } from '../../core/int32.js';
import { PgqError } from '../../core/errors.js';
import { parseRateText, type QueueRecord, type QueueSettings, type RateLimit } from '../../queues.js';

// Parsers return 'none' rather than null: commander turns a null value into ''.
const NONE = 'none';

/** `N` or `none` (removes the limit). */
function parseLimit(flag: string): (value: string) => number | typeof NONE {
  return (value: string) => {
    if (value.trim().toLowerCase() === NONE) return NONE;
    if (!/^\d+$/.test(value.trim()) || !isInt32(Number(value), 1)) {
      throw new InvalidArgumentError(`${flag} must be a whole number of at least 1, or none; got ${JSON.stringify(value)}`);
    }
    return Number(value);
  };
}

/** `100/1m`, `20/s`, `5/250ms`, or `none`. */
function parseRate(value: string): RateLimit | typeof NONE {
  if (value.trim().toLowerCase() === NONE) return NONE;
  try {
    return parseRateText(value);
  } catch {
    throw new InvalidArgumentError(`--rate must look like 100/1m, 20/s or 5/250ms (at least 1 job per at least 1 ms), or none; got ${JSON.stringify(value)}`);
  }
}

const HEADERS = ['name', 'status', 'concurrency', 'rate', 'key_concurrency', 'running', 'available', 'scheduled', 'retryable', 'blocked'];

function queueRow(q: QueueRecord): string[] {
  return [
    nameCell(q.name),
    q.paused ? 'paused' : 'active',
    q.concurrency === null ? '-' : String(q.concurrency),
    q.rateLimit === null ? '-' : `${q.rateLimit.limit}/${formatEvery(q.rateLimit.periodMs)}`,
    q.keyConcurrency === null ? '-' : String(q.keyConcurrency),
    String(q.running),
    String(q.counts.available),
    String(q.counts.scheduled),
    String(q.counts.retryable),
    String(q.counts.blocked),
  ];
}

export function registerQueues(program: Command, rt: CliRuntime): void {
  const queues = program.command('queues').description('queue control: list, pause, resume, set limits');

  queues
    .command('list', { isDefault: true })
    .description('list queues with their settings and live job counts')
    .action(async () => {
      await rt.using(async (pgq) => {
        const list = await pgq.listQueues();
        rt.out(rt.json ? json(list) : list.length ? table(HEADERS, list.map(queueRow)) : 'no queues');
      });
    });

  queues
    .command('pause <name>')
    .description('stop every worker from claiming the queue (running jobs finish)')
    .action(async (name: string) => {
      await rt.using(async (pgq) => {
        const q = await pgq.pauseQueue(name);
        rt.out(rt.json ? json(q) : `paused queue ${q.name} (${q.running} running will finish)`);
      });
    });

  queues
    .command('resume <name>')
    .description('let workers claim the queue again (they are woken at once)')
    .action(async (name: string) => {
      await rt.using(async (pgq) => {
        const q = await pgq.resumeQueue(name);
        rt.out(rt.json ? json(q) : `resumed queue ${q.name}`);
      });
    });

  queues
    .command('set <name>')
    .description('set limits enforced across all workers; "none" removes one')
    .option('--concurrency <n>', 'most jobs of the queue running at once, or none', onceOption('--concurrency', parseLimit('--concurrency')))
    .option('--rate <n/period>', 'most job starts per period (token bucket), e.g. 100/1m, 20/s, or none', onceOption('--rate', parseRate))
    .option('--key-concurrency <n>', 'most running jobs per concurrency key, or none', onceOption('--key-concurrency', parseLimit('--key-concurrency')))
    .action(async (name: string, opts: QueueSettingsOptions) => {
      const settings: QueueSettings = {};
      const value = <V>(v: V | typeof NONE): V | null => (v === NONE ? null : v);
      if (opts.concurrency !== undefined) settings.concurrency = value(opts.concurrency);
      if (opts.rate !== undefined) settings.rateLimit = value(opts.rate);
      if (opts.keyConcurrency !== undefined) settings.keyConcurrency = value(opts.keyConcurrency);
      if (Object.keys(settings).length === 0) {
        throw new PgqError('PGQ_USAGE', 'give at least one of --concurrency, --rate, --key-concurrency (none removes a limit)');
      }
      await rt.using(async (pgq) => {
        const q = await pgq.setQueue(name, settings);
        rt.out(rt.json ? json(q) : table(HEADERS, [queueRow(q)]));
      });
    });
}

interface QueueSettingsOptions {
  concurrency?: number | typeof NONE;
  rate?: RateLimit | typeof NONE;
  keyConcurrency?: number | typeof NONE;
}
