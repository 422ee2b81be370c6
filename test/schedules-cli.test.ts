/**
 * `pgq schedules list|add|remove|pause|resume|run`, as the built binary (npm
 * test builds first; from source with tsx, each command took seconds to start).
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { useTestSchema } from './support/harness.js';

const ctx = useTestSchema('schedules_cli');
const root = path.resolve(import.meta.dirname, '..');
const bin = path.join(root, 'dist/cli/bin.js');
const tasks = path.join(root, 'examples/tasks.ts');

function pgq(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [bin, '--database-url', ctx.url, '--schema', ctx.schema, ...args], {
    env: { ...process.env, PGQ_LOG_LEVEL: 'warn' },
    cwd: root,
    encoding: 'utf8',
    timeout: 180_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const rows = async (): Promise<unknown[]> => (await ctx.admin.query(`SELECT * FROM "${ctx.schema}".schedules ORDER BY name`)).rows;

describe('pgq schedules', () => {
  it('adds, lists, pauses, resumes, runs and removes; bad input exits 1 and writes nothing', async () => {
    expect(pgq('migrate')).toMatchObject({ code: 0 });
    const added = pgq(
      '--json', 'schedules', 'add', 'digest', '--task', 'send-email', '--tasks', tasks,
      '--cron', '0 8 * * 1-5', '--timezone', 'America/New_York', '--payload', '{"to":"team@example.com","subject":"digest"}',
    );
    expect(added.stderr).toBe('');
    expect(JSON.parse(added.stdout)).toMatchObject({ name: 'digest', task: 'send-email', queue: 'emails', cron: '0 8 * * 1-5', timezone: 'America/New_York' });
    expect(pgq('schedules', 'add', 'sweep', '--task', 'sweep', '--every', '5m', '--catch-up', 'all', '--catch-up-limit', '3')).toMatchObject({ code: 0 });
    // Milliseconds as the error message offers them (the text "5000" was no duration).
    expect(JSON.parse(pgq('--json', 'schedules', 'add', 'tick', '--task', 'sweep', '--every', '5000').stdout)).toMatchObject({ name: 'tick', everyMs: 5000 });
    expect(pgq('schedules', 'remove', 'tick')).toMatchObject({ code: 0 });
    const before = await rows();

    const badCron = pgq('schedules', 'add', 'digest', '--task', 'send-email', '--cron', '0 25 * * *');
    expect(badCron.code).toBe(1);
    expect(badCron.stderr).toMatch(/cron: "0 25 \* \* \*" is not a valid cron expression/);
    const badZone = pgq('schedules', 'add', 'digest', '--task', 'send-email', '--cron', '0 8 * * *', '--timezone', 'Europe/Atlantis');
    expect(badZone.stderr).toMatch(/timezone: "Europe\/Atlantis" is not a known IANA time zone/);
    const badPayload = pgq('schedules', 'add', 'digest', '--task', 'send-email', '--tasks', tasks, '--cron', '0 8 * * *', '--payload', '{"to":"nobody"}');
    expect(badPayload.code).toBe(1);
    expect(badPayload.stderr).toMatch(/payload\.to/);
    expect(await rows()).toEqual(before);

    expect(pgq('schedules', 'pause', 'sweep').stdout).toMatch(/paused schedule sweep/);
    const list = pgq('schedules', 'list');
    expect(list.stdout).toMatch(/digest\s+send-email\s+0 8 \* \* 1-5 \(America\/New_York\)\s+active/);
    expect(list.stdout).toMatch(/sweep\s+sweep\s+every 5m\s+paused/);
    expect(pgq('schedules', 'resume', 'sweep').stdout).toMatch(/resumed schedule sweep; next run: in /);

    const run = pgq('--json', 'schedules', 'run', 'digest');
    const job = JSON.parse(run.stdout) as { id: string; task: string; payload: unknown; state: string };
    expect(job).toMatchObject({ task: 'send-email', state: 'available', payload: { to: 'team@example.com', subject: 'digest' } });

    expect(pgq('schedules', 'remove', 'sweep').stdout).toMatch(/removed schedule sweep/);
    const again = pgq('schedules', 'remove', 'sweep');
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/schedule "sweep" does not exist/);
    expect((await rows()).map((r) => (r as { name: string }).name)).toEqual(['digest']);
  });

  it('an update without --tasks changes what its flags give and keeps the rest (no stand-in queue, payload or attempts)', async () => {
    expect(pgq('migrate')).toMatchObject({ code: 0 });
    const created = pgq(
      '--json', 'schedules', 'add', 'nightly', '--task', 'send-email', '--tasks', tasks, '--cron', '0 2 * * *', '--timezone', 'Europe/Rome',
      '--payload', '{"to":"ops@example.com","subject":"nightly"}', '--priority', '5', '--max-attempts', '7', '--catch-up', 'once',
    );
    expect(created.stderr).toBe('');
    const first = JSON.parse(created.stdout) as Record<string, unknown>;
    expect(first).toMatchObject({ queue: 'emails', priority: 5, maxAttempts: 7, catchUp: 'once', timezone: 'Europe/Rome' });

    const moved = pgq('--json', 'schedules', 'add', 'nightly', '--task', 'send-email', '--cron', '0 3 * * *');
    expect(moved.stderr).toBe('');
    expect(JSON.parse(moved.stdout)).toMatchObject({
      cron: '0 3 * * *', timezone: 'Europe/Rome', queue: 'emails', priority: 5, maxAttempts: 7, catchUp: 'once',
      payload: { to: 'ops@example.com', subject: 'nightly' },
    });
    const reprioritised = pgq('--json', 'schedules', 'add', 'nightly', '--task', 'send-email', '--priority', '1');
    expect(JSON.parse(reprioritised.stdout)).toMatchObject({ cron: '0 3 * * *', priority: 1, queue: 'emails', maxAttempts: 7 });
    // Another task: its payload, queue and attempts are not the old task's.
    const other = pgq('--json', 'schedules', 'add', 'nightly', '--task', 'sweep');
    expect(JSON.parse(other.stdout)).toMatchObject({ task: 'sweep', cron: '0 3 * * *', queue: 'default', payload: {}, maxAttempts: 25, catchUp: 'once' });
  });
});
