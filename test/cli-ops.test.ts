/**
 * The CLI's operator commands as the built binary: jobs list with filters and
 * --before, jobs show for people and --json, jobs delete, bulk retry and
 * cancel by filter with counts, workers, workflows list and show.
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { chain, defineTask, PermanentError, step, type Pgq } from '../src/index.js';
import { useTestSchema } from './support/harness.js';
import { workflowTree } from '../src/cli/job-text.js';
import type { WorkflowRecord, WorkflowStepRecord } from '../src/workflow/store.js';
import { boom } from './fixtures/mail-tasks.js';

const ctx = useTestSchema('cliops');
const root = path.resolve(import.meta.dirname, '..');
const bin = path.join(root, 'dist/cli/bin.js');

function pgq(args: string[]) {
  const r = spawnSync(process.execPath, [bin, '--schema', ctx.schema, ...args], {
    env: { ...process.env, DATABASE_URL: ctx.url, PGQ_LOG_LEVEL: 'warn' },
    cwd: root,
    encoding: 'utf8',
    timeout: 120_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const ok = defineTask({ name: 'ok', schema: z.number(), handler: (n) => n * 2 });

let app: Pgq;
const ids: string[] = [];
beforeAll(async () => {
  app = await ctx.migrated({ tasks: [boom, ok] });
  for (const to of ['a@x.y', 'b@x.y', 'c@x.y']) ids.push((await app.enqueue(boom, { to })).id);
  await app.enqueueWorkflow(chain(step(ok, 1), step(ok)), { name: 'doubling' });
  const worker = app.worker({ queues: ['emails', 'default'] });
  await worker.start();
  for (const id of ids) await app.waitForJob(id, { timeoutMs: 20_000 });
  await app.waitForWorkflow((await app.listWorkflows())[0]!.id, { timeoutMs: 20_000 });
  await worker.stop();
});

describe('pgq operator commands', { timeout: 180_000 }, () => {
  it('lists with --payload and pages with --before', async () => {
    const byPayload = pgq(['jobs', 'list', '--payload', '{"to":"b@x.y"}']);
    expect(byPayload.code).toBe(0);
    expect(byPayload.stdout).toMatch(new RegExp(`^${ids[1]}\\s+boom\\s+emails\\s+failed`, 'm'));
    expect(byPayload.stdout).not.toMatch(new RegExp(`^${ids[0]}\\s`, 'm'));
    const first = pgq(['jobs', 'list', '--task', 'boom', '--limit', '2']);
    expect(first.stdout).toMatch(new RegExp(`next page: --before ${ids[1]}`));
    const next = JSON.parse(pgq(['--json', 'jobs', 'list', '--task', 'boom', '--before', ids[1]!]).stdout) as { id: string }[];
    expect(next.map((j) => j.id)).toEqual([ids[0]]);
    expect(pgq(['jobs', 'list', '--since', 'soon']).stderr).toMatch(/--since: must be a duration back from now/);
    // Any duration back, not only what a schedule's interval may be (1 s to 366 days).
    expect(pgq(['jobs', 'list', '--task', 'boom', '--until', '400d'])).toMatchObject({ code: 0, stderr: '' });
    expect(JSON.parse(pgq(['--json', 'jobs', 'list', '--task', 'boom', '--since', '400d']).stdout)).toHaveLength(ids.length);
    // A bare number is no date (JavaScript reads 45 as the year 2045): refused, nothing deleted.
    const before = await app.countJobs({});
    expect(pgq(['jobs', 'delete', '--state', 'failed', '--until', '45'])).toMatchObject({ code: 1, stderr: expect.stringMatching(/--until: must be a duration back from now .* or an ISO 8601 date/) });
    expect(await app.countJobs({})).toBe(before);
    expect(pgq(['enqueue', 'ok', '1', '--run-at', '7']).stderr).toMatch(/--run-at must be an ISO 8601 date/);
    // Both times: refused under the flags' own names, nothing enqueued.
    expect(pgq(['enqueue', 'ok', '--delay-ms', '1000', '--run-at', '2030-01-01'])).toMatchObject({ code: 1, stderr: expect.stringMatching(/--delay-ms and --run-at both say when the job runs/) });
    expect(await app.countJobs({})).toBe(before);
  });

  it("refuses what it would misread: 6M (not six months), a filter that starts with { but is no JSON; enqueues --payload null as null; cuts long names in tables", async () => {
    const before = await app.countJobs({});
    // Units are lower case: 6M was six minutes, and a delete of jobs "older than six months" took the last six minutes'.
    expect(pgq(['jobs', 'delete', '--state', 'failed', '--until', '6M'])).toMatchObject({ code: 1, stderr: expect.stringMatching(/--until: must be a duration .*in lower case/) });
    // A mistyped JSON filter was searched as text, matched nothing, and the bulk action said "cancelled 0 jobs".
    expect(pgq(['cancel', '--payload', '{to:"b@x.y"}'])).toMatchObject({ code: 1, stderr: expect.stringMatching(/--payload: starts with \{ but is not a JSON object/) });
    // An empty one looks for nothing: --error '[]' matched every job, and a cancel with it cancelled them all.
    expect(pgq(['cancel', '--error', '[]'])).toMatchObject({ code: 1, stderr: expect.stringMatching(/--error: \[\] is empty: it looks for nothing, so it would match every job/) });
    // Text that starts with [ is still text.
    expect(pgq(['jobs', 'list', '--error', '[no such'])).toMatchObject({ code: 0, stderr: '' });
    expect(await app.countJobs({})).toBe(before);
    // null is a payload like any other (commander stored "" for it).
    const enqueued = JSON.parse(pgq(['--json', 'enqueue', 'nulls', '--payload', 'null']).stdout) as { id: string; payload: unknown };
    expect(enqueued.payload).toBeNull();
    const { rows } = await ctx.admin.query<{ kind: string }>(`SELECT jsonb_typeof(payload) AS kind FROM "${ctx.schema}".jobs WHERE id = $1`, [enqueued.id]);
    expect(rows).toEqual([{ kind: 'null' }]);
    // A delay past what the API takes is refused under the flag's name.
    expect(pgq(['enqueue', 'nulls', '--delay-ms', '9007199254740991'])).toMatchObject({ code: 1, stderr: expect.stringMatching(/--delay-ms must be between 0 and 10000000000000/) });
    // A long name is cut in the table (whole in --json).
    const long = 'very-long-task-name-'.repeat(9);
    await app.enqueue(defineTask({ name: long, schema: z.unknown(), handler: () => null }), {});
    const listed = pgq(['jobs', 'list', '--task', long]);
    expect(listed.code).toBe(0);
    expect(listed.stdout).toContain(`${long.slice(0, 39)}…`);
    expect(listed.stdout).not.toContain(long);
    await app.deleteJobs({ task: long });
    await app.deleteJobs({ task: 'nulls' });
  });

  it('names the flag when a flag is missing or empty, and prints JSON for --json from migrate and roles --print', () => {
    // The API's field names were printed ("settings: give at least one of concurrency, rateLimit…", "queue: must be…").
    expect(pgq(['queues', 'set', 'emails'])).toMatchObject({ code: 1, stderr: expect.stringMatching(/give at least one of --concurrency, --rate, --key-concurrency/) });
    expect(pgq(['jobs', 'list', '--queue='])).toMatchObject({ code: 1, stderr: expect.stringMatching(/--queue must name a queue, got an empty value/) });
    // Given twice: refused (the last one was kept, and `cancel --queue a --queue b` acted on b alone).
    expect(pgq(['cancel', '--queue', 'a', '--queue', 'b'])).toMatchObject({ code: 1, stderr: expect.stringMatching(/--queue is given twice; it takes one value/) });
    expect(pgq(['jobs', 'list', '--since', '1h', '--since', '2h'])).toMatchObject({ code: 1, stderr: expect.stringMatching(/--since is given twice/) });
    expect(pgq(['cancel', '--task', ' '])).toMatchObject({ code: 1, stderr: expect.stringMatching(/--task must name a task/) });
    // --metrics-host alone was ignored: no server, no word of it.
    expect(pgq(['worker', '--tasks', 'examples/tasks.ts', '--metrics-host', '0.0.0.0'])).toMatchObject({ code: 1, stderr: expect.stringMatching(/--metrics-host needs --metrics-port/) });
    // --json was ignored by these.
    expect(JSON.parse(pgq(['--json', 'migrate']).stdout)).toEqual({ schema: ctx.schema, applied: [] });
    const roles = JSON.parse(pgq(['--json', 'roles', '--worker', 'w', '--print']).stdout) as { statements: string[] };
    expect(roles.statements.length).toBeGreaterThan(0);
    expect(roles.statements.every((s) => typeof s === 'string' && !s.endsWith(';'))).toBe(true);
  });

  it('takes --state twice as both states', () => {
    const both = pgq(['--json', 'jobs', 'list', '--task', 'boom', '--state', 'failed', '--state', 'succeeded']);
    expect((JSON.parse(both.stdout) as { id: string }[]).map((j) => j.id).sort()).toEqual([...ids].sort());
  });

  it('shows a running job whose cancel was asked for as cancelling', async () => {
    const job = await app.enqueue(ok, 1, { queue: 'cancelling', delayMs: 3_600_000 });
    // What cancelJob leaves while the handler on some worker has not settled yet.
    await ctx.admin.query(`UPDATE "${ctx.schema}".jobs SET state = 'running', attempts = 1, started_at = now(), worker_id = 'elsewhere', cancel_requested_at = now() WHERE id = $1`, [job.id]);
    try {
      const shown = pgq(['jobs', 'show', job.id]).stdout;
      expect(shown).toMatch(/^ {2}state {7}running \(cancelling\)$/m);
      expect(shown).toMatch(/^ {2}cancel {6}asked .*: it ends cancelled once its handler has settled$/m);
      expect(pgq(['jobs', 'list', '--queue', 'cancelling']).stdout).toMatch(new RegExp(`^${job.id}\\s+ok\\s+cancelling\\s+running \\(cancelling\\)\\s`, 'm'));
    } finally {
      await ctx.admin.query(`DELETE FROM "${ctx.schema}".jobs WHERE id = $1`, [job.id]);
    }
  });

  it('ends quietly when the reader of its output stops early (a pipe into head)', async () => {
    await app.enqueueMany(ok, Array.from({ length: 600 }, (_, i) => i), { queue: 'piped', delayMs: 3_600_000 });
    const r = spawnSync('bash', ['-o', 'pipefail', '-c', `"${process.execPath}" "${bin}" --schema ${ctx.schema} --json jobs list --queue piped --limit 600 | head -c 100 > /dev/null`], {
      env: { ...process.env, DATABASE_URL: ctx.url, PGQ_LOG_LEVEL: 'warn' },
      cwd: root,
      encoding: 'utf8',
      timeout: 120_000,
    });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    await app.deleteJobs({ queue: 'piped' });
  });

  it('shows a job for people, with its stack, and as JSON with --json', () => {
    const shown = pgq(['jobs', 'show', ids[0]!]);
    expect(shown.stdout).toMatch(new RegExp(`^job ${ids[0]}\\n  task\\s+boom`));
    expect(shown.stdout).toMatch(/attempt 1 at .*: mailbox a@x.y is full\n\s+at /);
    expect(shown.stdout).toMatch(/payload\n  \{\n    "to": "a@x.y"/);
    expect(JSON.parse(pgq(['--json', 'jobs', 'show', ids[0]!]).stdout)).toMatchObject({ id: ids[0], state: 'failed', progress: null });
  });

  it('retries and cancels in bulk by filter and prints how many', async () => {
    expect(pgq(['retry']).stderr).toMatch(/give a job id, or filter flags/);
    expect(pgq(['retry', '--state', 'failed', '--queue', 'emails', '--since', '1h'])).toMatchObject({ code: 0, stdout: 'retried 3 jobs\n' });
    expect(pgq(['retry', '--state', 'failed', '--queue', 'emails'])).toMatchObject({ stdout: 'retried 0 jobs\n' });
    expect(pgq(['cancel', '--queue', 'emails', '--payload', 'c@x.y']).stdout).toBe('cancelled 1 job\n');
    expect(pgq(['--json', 'cancel', '--queue', 'emails']).stdout).toMatch(/"cancelled": 2/);
    expect(await app.countJobs({ queue: 'emails', state: 'cancelled' })).toBe(3);
  });

  it('deletes one job or many', async () => {
    expect(pgq(['jobs', 'delete', ids[0]!]).stdout).toBe(`deleted job ${ids[0]}\n`);
    expect(pgq(['jobs', 'delete', ids[0]!])).toMatchObject({ code: 1, stderr: expect.stringMatching(/does not exist|not found/i) });
    expect(pgq(['jobs', 'delete', '--state', 'cancelled', '--queue', 'emails']).stdout).toBe('deleted 2 jobs\n');
    expect(await app.countJobs({ queue: 'emails' })).toBe(0);
  });

  it('lists workers, and workflows as a list and a tree', () => {
    expect(pgq(['workers']).stdout).toBe('no workers\n');
    const list = pgq(['workflows', 'list']);
    expect(list.stdout).toMatch(/doubling\s+succeeded\s+2\/2 succeeded/);
    const id = /^(\d+)\s+doubling/m.exec(list.stdout)![1]!;
    expect(pgq(['workflows', 'list', '--limit', '1']).stdout).toMatch(new RegExp(`\\nnext page: --before ${id}\\n$`));
    expect(pgq(['workflows', 'list', '--limit', '2']).stdout).not.toMatch(/next page/);
    const tree = pgq(['workflows', 'show', id]);
    expect(tree.stdout).toMatch(new RegExp(`^workflow ${id} doubling \\[succeeded\\]\\n└─ \\S+ \\[succeeded\\] job \\d+ \\(ok\\)\\n   └─ \\S+ \\[succeeded\\] job \\d+ \\(ok\\)`));
    expect(pgq(['workflows', 'show', '99999999']).stderr).toMatch(/workflow 99999999 does not exist/);
  });
});

describe('pgq workflows show, the tree', () => {
  const stepOf = (id: number, dependsOn: number[]) =>
    ({ id: String(id), step: `s${id}`, state: 'blocked', task: 't', dependsOn: dependsOn.map(String) }) as unknown as WorkflowStepRecord;
  const workflowOf = (steps: WorkflowStepRecord[]) => ({ id: '1', name: 'w', state: 'running', steps }) as unknown as WorkflowRecord;

  it('draws each step under its first parent, naming the others beside it', () => {
    // 1 → (2, 3) → 4; 5 on its own.
    const tree = workflowTree(workflowOf([stepOf(1, []), stepOf(2, [1]), stepOf(3, [1]), stepOf(4, [2, 3]), stepOf(5, [])]));
    expect(tree).toBe(
      [
        'workflow 1 w [running]',
        '├─ s1 [blocked] job 1 (t)',
        '│  ├─ s2 [blocked] job 2 (t)',
        '│  │  └─ s4 [blocked] job 4 (t) also after s3',
        '│  └─ s3 [blocked] job 3 (t)',
        '└─ s5 [blocked] job 5 (t)',
      ].join('\n'),
    );
  });

  it('draws a chain of 5,000 steps (one level each: a recursion per level overflowed the stack at 3,000)', () => {
    const steps = Array.from({ length: 5_000 }, (_, i) => stepOf(i + 1, i === 0 ? [] : [i]));
    const lines = workflowTree(workflowOf(steps)).split('\n');
    expect(lines).toHaveLength(5_001);
    expect(lines[101]).toBe(`${' '.repeat(3 * 100)}└─ s101 [blocked] job 101 (t)`);
    // Past 100 levels a line is not indented further but names its level.
    expect(lines.at(-1)).toBe(`${' '.repeat(3 * 100)}(level 4999) └─ s5000 [blocked] job 5000 (t)`);
  });

  it('draws a chain of 20,000 steps (indented a level each, its 600 million characters ended the command with "Invalid string length")', () => {
    const steps = Array.from({ length: 20_000 }, (_, i) => stepOf(i + 1, i === 0 ? [] : [i]));
    const lines = workflowTree(workflowOf(steps)).split('\n');
    expect(lines).toHaveLength(20_001);
    expect(lines.at(-1)).toBe(`${' '.repeat(3 * 100)}(level 19999) └─ s20000 [blocked] job 20000 (t)`);
  });
});
