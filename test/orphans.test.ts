import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { defineTask, type Logger } from '../src/index.js';
import { orphanedTasksQuery } from '../src/db/worker-tasks.js';
import { until, useTestSchema } from './support/harness.js';

const ctx = useTestSchema('orphans');
const root = path.resolve(import.meta.dirname, '..');

const known = defineTask({ name: 'known', schema: z.object({}), handler: () => new Promise(() => undefined) });
const typo = defineTask({ name: 'knwon', schema: z.object({}), handler: () => undefined });

function capture(): { logger: Logger; warnings: string[] } {
  const warnings: string[] = [];
  const logger: Logger = {
    error: (_obj, msg) => void warnings.push(`error: ${msg ?? ''}`),
    info: (_obj, msg) => void warnings.push(`info: ${msg ?? ''}`),
    warn: (_obj, msg) => void warnings.push(msg ?? ''),
    debug: () => undefined,
    child: () => logger,
  };
  return { logger, warnings };
}

function cli(args: string[]) {
  const r = spawnSync(process.execPath, [path.join(root, 'dist/cli/bin.js'), '--schema', ctx.schema, ...args], {
    env: { ...process.env, DATABASE_URL: ctx.url, PGQ_LOG_LEVEL: 'warn' },
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('jobs no live worker runs', () => {
  it('are reported by orphanedTasks, logged by the leader, shown by stats and warned about by enqueue', async () => {
    const { logger, warnings } = capture();
    const pgq = await ctx.migrated({ tasks: [known], logger });
    // No worker yet: nothing to report (every job waits while no worker runs).
    await pgq.enqueue(typo, {});
    expect(await pgq.orphanedTasks()).toEqual([]);
    const lonely = cli(['enqueue', 'knwon']);
    expect(lonely.code).toBe(0);
    expect(lonely.stderr).toMatch(/warning: 2 jobs of task knwon wait in queue default; no live worker knows task knwon/);

    const worker = pgq.worker({ concurrency: 1, orphanCheckMs: 50 });
    await worker.start();
    try {
      const { rows } = await ctx.admin.query<{ tasks: string[] }>(`SELECT tasks FROM "${ctx.schema}".workers`);
      expect(rows).toEqual([{ tasks: ['known'] }]);
      await pgq.enqueue(known, {}, { queue: 'elsewhere' });
      expect(await pgq.orphanedTasks()).toEqual([
        { task: 'known', queue: 'elsewhere', jobs: 1, reason: 'queue-not-served' },
        { task: 'knwon', queue: 'default', jobs: 2, reason: 'unknown-task' },
      ]);
      // The leader's pass may run before the second job is enqueued: wait for both lines.
      await until(
        () =>
          warnings.includes('2 jobs of task knwon wait in queue default; no live worker knows task knwon') &&
          warnings.includes('1 job of task known waits in queue elsewhere; the live workers that know task known do not serve queue elsewhere'),
        { what: `the leader to log both orphaned tasks; logged: ${JSON.stringify(warnings)}` },
      );

      const stats = cli(['stats']);
      expect(stats.stdout).toMatch(/waiting for a task no live worker runs:\n[^]*\n {2}2 jobs of task knwon wait in queue default; no live worker knows task knwon/);
      // The same in JSON, in each queue (it printed the counts alone).
      const asJson = JSON.parse(cli(['--json', 'stats']).stdout) as { queue: string; orphanedTasks: { task: string; jobs: number; reason: string }[] }[];
      expect(asJson.find((q) => q.queue === 'default')!.orphanedTasks).toEqual([expect.objectContaining({ task: 'knwon', jobs: 2, reason: 'unknown-task' })]);
      expect(asJson.find((q) => q.queue === 'elsewhere')!.orphanedTasks).toEqual([expect.objectContaining({ task: 'known', jobs: 1, reason: 'queue-not-served' })]);
      const warned = cli(['enqueue', 'knwon']);
      expect(warned.stderr).toMatch(/3 jobs of task knwon wait in queue default; no live worker knows task knwon; the job waits until a worker that runs it starts \(with --tasks <module>, enqueue uses the task's own queue, priority and attempts\)/);
      // With --queue given, the hint does not offer the task's queue.
      const queued = cli(['enqueue', 'knwon', '--queue', 'default']);
      expect(queued.stderr).toMatch(/\(with --tasks <module>, enqueue uses the task's own priority and attempts\)/);
      const fine = cli(['enqueue', 'known']);
      expect(fine.code).toBe(0);
      expect(fine.stderr).not.toMatch(/warning/);
    } finally {
      await worker.hardStop();
    }
  });

  it('pgq enqueue --tasks uses the task queue, priority and attempts', () => {
    const tasks = path.join(root, 'examples/tasks.ts');
    const out = cli(['--json', 'enqueue', 'send-email', '--tasks', tasks, '--payload', '{"to":"a@b.co","subject":"s"}']);
    const plain = cli(['--json', 'enqueue', 'send-email', '--payload', '{"to":"a@b.co","subject":"s"}']);
    const withTasks = JSON.parse(out.stdout) as { queue: string; priority: number; maxAttempts: number };
    const without = JSON.parse(plain.stdout) as { queue: string; priority: number; maxAttempts: number };
    expect(without).toMatchObject({ queue: 'default', priority: 0, maxAttempts: 25 });
    expect(withTasks.queue).toBe('emails');
    expect(withTasks.maxAttempts).toBe(5);
  });
});

describe('the orphan check', () => {
  it('counts waiting jobs by task and queue first, then asks the workers once per pair, not once per job', async () => {
    const pgq = await ctx.migrated();
    const s = `"${ctx.schema}"`;
    await ctx.admin.query(`DELETE FROM ${s}.jobs`);
    await ctx.admin.query(`INSERT INTO ${s}.jobs (task, queue, payload) SELECT 'orphan-' || (g % 2), 'orphans', '{}' FROM generate_series(1, 2000) AS g`);
    await ctx.admin.query(
      `INSERT INTO ${s}.workers (id, hostname, pid, queues, concurrency, rescue_after_ms, lease_expires_at, tasks)
       VALUES ('orphan-check', 'h', 1, '{elsewhere}', 1, 30000, now() + interval '1 minute', '{orphan-0}')`,
    );
    try {
      await ctx.admin.query(`ANALYZE ${s}.jobs`);
      const compiled = orphanedTasksQuery(pgq.kysely).compile();
      const { rows } = await ctx.admin.query<{ 'QUERY PLAN': string }>(`EXPLAIN (ANALYZE, FORMAT JSON) ${compiled.sql}`, compiled.parameters as unknown[]);
      // How often each step ran: the checks against workers (a subplan, or
      // the inner side of a join) once per pair, not once per waiting job.
      const loops: string[] = [];
      const visit = (node: { 'Node Type'?: string; 'Relation Name'?: string; 'Actual Loops'?: number; Plans?: unknown[] }): void => {
        loops.push(`${node['Node Type']} ${node['Relation Name'] ?? ''} ×${node['Actual Loops']}`);
        for (const child of node.Plans ?? []) visit(child as typeof node);
      };
      visit((rows[0]!['QUERY PLAN'] as unknown as { Plan: Parameters<typeof visit>[0] }[])[0]!.Plan);
      expect(loops.some((l) => l.includes(' workers '))).toBe(true);
      for (const step of loops) expect(Number(step.slice(step.lastIndexOf('×') + 1)), loops.join(', ')).toBeLessThanOrEqual(3);
      expect(await pgq.orphanedTasks()).toEqual([
        { task: 'orphan-0', queue: 'orphans', jobs: 1000, reason: 'queue-not-served' },
        { task: 'orphan-1', queue: 'orphans', jobs: 1000, reason: 'unknown-task' },
      ]);
    } finally {
      await ctx.admin.query(`DELETE FROM ${s}.workers WHERE id = 'orphan-check'`);
      await ctx.admin.query(`DELETE FROM ${s}.jobs WHERE queue = 'orphans'`);
    }
  });
});
