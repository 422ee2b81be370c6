/**
 * Turns the runs into the report: per row, each system's median over the
 * rounds and pgq's ratio to every peer (`pgq_vs_<peer>` = pgq's median ÷ the
 * peer's, so above 1 is better for throughput and below 1 is better for
 * latency and memory); the issue's targets with their measured ratios; the
 * machine, PostgreSQL and library versions. Written as JSON and Markdown.
 */
import type { ChildResult } from './spec.js';
import { median } from './stats.js';
import { ROWS, type BenchConfig, type Row } from './workloads.js';

export interface RunRecord {
  round: number;
  workload: string;
  system: string;
  ok: boolean;
  cleanExit: boolean;
  wallMs: number;
  /** The 1-minute load average when the run started: other work on the machine shows here. */
  loadAvg1: number;
  result: ChildResult | null;
  error?: string;
}

export interface Meta {
  startedAt: string;
  finishedAt: string;
  durationS: number;
  command: string;
  mode: 'quick' | 'full';
  machine: { cores: number; cpuModel: string; memoryGiB: number; os: string };
  node: string;
  postgres: { version: string; settings: Record<string, string> };
  redis: { version: string | null; url: string | null };
  libraries: Record<string, string>;
  pgq: { version: string; commit: string; dirty: boolean };
  config: BenchConfig;
  systems: { name: string; settings: string; backend: string }[];
  skipped: Record<string, string>;
  /** RSS of an idle process under the same TypeScript loader (tsx): every worker's RSS starts from about this. */
  baselineRssMiB: number | null;
  meanLoadAvg1: number | null;
}

export interface RowSummary extends Row {
  medians: Record<string, number | null>;
  rounds: Record<string, (number | null)[]>;
  capped: Record<string, boolean>;
  ratios: Record<string, number | null>;
}

export interface Target {
  target: string;
  measured: string;
  ratio: number | null;
  met: boolean | null;
}

export interface Report {
  meta: Meta;
  rows: RowSummary[];
  targets: Target[];
  failures: { round: number; workload: string; system: string; why: string }[];
  runs: RunRecord[];
}

export function summarize(runs: RunRecord[], systems: string[]): RowSummary[] {
  return ROWS.map((row) => {
    const medians: Record<string, number | null> = {};
    const rounds: Record<string, (number | null)[]> = {};
    const capped: Record<string, boolean> = {};
    for (const system of systems) {
      const mine = runs.filter((r) => r.workload === row.workload && r.system === system && r.result);
      if (mine.length === 0) continue;
      const values = mine.map((r) => (r.ok ? (r.result?.metrics[row.metric] ?? null) : null));
      rounds[system] = values;
      medians[system] = median(values.filter((v): v is number => v !== null));
      capped[system] = mine.some((r) => r.result?.checks.capped === true);
    }
    const ratios: Record<string, number | null> = {};
    const mine = medians.pgq ?? null;
    for (const system of systems) {
      if (system === 'pgq' || !(system in medians)) continue;
      const theirs = medians[system] ?? null;
      ratios[`pgq_vs_${system}`] = mine !== null && theirs !== null && theirs !== 0 ? mine / theirs : null;
    }
    return { ...row, medians, rounds, capped, ratios };
  }).filter((row) => Object.keys(row.rounds).length > 0);
}

export function evaluateTargets(rows: RowSummary[]): Target[] {
  const get = (key: string, system: string): number | null => rows.find((r) => r.key === key)?.medians[system] ?? null;
  const ratioTarget = (label: string, key: string, peer: string, atLeast: number): Target => {
    const a = get(key, 'pgq');
    const b = get(key, peer);
    const ratio = a !== null && b !== null && b > 0 ? a / b : null;
    return {
      target: label,
      measured: ratio === null ? 'n/a' : `${fmt(a)} vs ${fmt(b)} → ${ratio.toFixed(2)}x`,
      ratio,
      met: ratio === null ? null : ratio >= atLeast,
    };
  };
  const absolute = (label: string, key: string, limit: number, below: boolean): Target => {
    const a = get(key, 'pgq');
    return {
      target: label,
      measured: a === null ? 'n/a' : `${fmt(a)}`,
      ratio: a,
      met: a === null ? null : below ? a <= limit : a >= limit,
    };
  };
  const p50 = get('latency-p50', 'pgq');
  const gwBest = [get('latency-p50', 'graphile-worker'), get('latency-p50', 'graphile-worker-tuned')].filter(
    (v): v is number => v !== null,
  );
  const gwP50 = gwBest.length ? Math.min(...gwBest) : null;
  return [
    ratioTarget('Drain c=100 ≥ 1.5x graphile-worker (tuned)', 'drain-c100', 'graphile-worker-tuned', 1.5),
    ratioTarget('Drain c=100 ≥ 5x pg-boss (tuned)', 'drain-c100', 'pg-boss-tuned', 5),
    ratioTarget('Drain c=100 ahead of BullMQ on Redis', 'drain-c100', 'bullmq', 1.0000001),
    ratioTarget('Drain c=100 ≥ 70% of the SQL floor', 'drain-c100', 'floor', 0.7),
    absolute('Latency p50 ≤ 1.5 ms', 'latency-p50', 1.5, true),
    {
      target: "Latency p50 below graphile-worker's (best variant)",
      measured: p50 === null || gwP50 === null ? 'n/a' : `${fmt(p50)} ms vs ${fmt(gwP50)} ms`,
      ratio: p50 !== null && gwP50 !== null ? p50 / gwP50 : null,
      met: p50 === null || gwP50 === null ? null : p50 < gwP50,
    },
    absolute('Latency p99 ≤ 5 ms', 'latency-p99', 5, true),
    ratioTarget('Single enqueue (1 conn) ≥ 5x graphile-worker', 'enqueue-1', 'graphile-worker', 5),
    absolute('Bulk enqueue ≥ 150,000 jobs/s', 'enqueue-bulk', 150_000, false),
    ratioTarget("Bulk enqueue ≥ 3x graphile-worker's addJobs", 'enqueue-bulk', 'graphile-worker', 3),
    ratioTarget("8-connection single enqueue ≥ 80% of the floor's plain INSERT", 'enqueue-8', 'floor', 0.8),
  ];
}

export function fmt(value: number | null | undefined, digits?: number): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return '—';
  if (digits !== undefined) return value.toFixed(digits);
  if (Math.abs(value) >= 1000) return Math.round(value).toLocaleString('en-US');
  if (Math.abs(value) >= 100) return value.toFixed(0);
  if (Math.abs(value) >= 10) return value.toFixed(1);
  return value.toFixed(2);
}

export function toMarkdown(report: Report): string {
  const { meta, rows } = report;
  const systems = meta.systems.map((s) => s.name);
  const peers = systems.filter((s) => s !== 'pgq');
  const lines: string[] = [];
  lines.push(`# pgq benchmark — ${meta.startedAt}`, '');
  lines.push(`Command: \`${meta.command}\` (${meta.mode} mode, ${meta.config.rounds} round(s), systems alternating; ${meta.durationS.toFixed(0)} s)`, '');
  lines.push('## Medians', '');
  lines.push(`| workload | unit | ${systems.join(' | ')} |`);
  lines.push(`|---|---|${systems.map(() => '---:').join('|')}|`);
  for (const row of rows) {
    const cells = systems.map((s) => (s in row.medians ? `${fmt(row.medians[s])}${row.capped[s] ? '*' : ''}` : 'n/a'));
    lines.push(`| ${row.title} | ${row.unit} | ${cells.join(' | ')} |`);
  }
  lines.push('');
  lines.push(
    `\\* capped: the system did not finish the ${meta.config.drainJobs.toLocaleString('en-US')}-job drain within its cap ` +
      `(${Object.entries(meta.config.drainCapOverrides)
        .map(([s, ms]) => `${s}: ${ms / 1000} s`)
        .concat(`others: ${meta.config.drainCapMs / 1000} s`)
        .join(', ')}); the rate is over the jobs finished by then.`,
    '',
  );
  lines.push('## pgq ÷ peer', '', 'pgq\'s median divided by the peer\'s. Throughput: above 1 means pgq is faster. Latency and RSS: below 1 means pgq is lower (better).', '');
  lines.push(`| workload | ${peers.map((p) => `vs ${p}`).join(' | ')} |`);
  lines.push(`|---|${peers.map(() => '---:').join('|')}|`);
  for (const row of rows) {
    const cells = peers.map((p) => {
      const r = row.ratios[`pgq_vs_${p}`];
      return r === undefined ? 'n/a' : fmt(r, 2);
    });
    lines.push(`| ${row.title} (${row.better} is better) | ${cells.join(' | ')} |`);
  }
  lines.push('', '## Targets (issue 3)', '');
  lines.push('| target | measured | met |', '|---|---|---|');
  for (const t of report.targets) lines.push(`| ${t.target} | ${t.measured} | ${t.met === null ? 'n/a' : t.met ? 'yes' : '**no**'} |`);
  lines.push('', '## Every round', '');
  lines.push(`| workload | ${systems.join(' | ')} |`, `|---|${systems.map(() => '---').join('|')}|`);
  for (const row of rows) {
    const cells = systems.map((s) => (row.rounds[s] ? row.rounds[s]!.map((v) => fmt(v)).join(' / ') : 'n/a'));
    lines.push(`| ${row.title} | ${cells.join(' | ')} |`);
  }
  if (report.failures.length > 0) {
    lines.push('', '## Failed runs', '');
    for (const f of report.failures) lines.push(`- round ${f.round + 1}, ${f.workload}, ${f.system}: ${f.why}`);
  }
  if (Object.keys(meta.skipped).length > 0) {
    lines.push('', '## Skipped', '');
    for (const [what, why] of Object.entries(meta.skipped)) lines.push(`- ${what}: ${why}`);
  }
  lines.push('', '## Systems', '');
  for (const s of meta.systems) lines.push(`- **${s.name}** (${s.backend}): ${s.settings}`);
  lines.push('', '## Environment', '');
  lines.push(`- Machine: ${meta.machine.cores} cores, ${meta.machine.cpuModel}, ${meta.machine.memoryGiB.toFixed(0)} GiB, ${meta.machine.os}`);
  lines.push(`- Node ${meta.node}; pgq ${meta.pgq.version} at ${meta.pgq.commit}${meta.pgq.dirty ? ' (src/ or migrations/ modified)' : ''}`);
  lines.push(`- ${meta.postgres.version}`);
  lines.push(`- PostgreSQL settings: ${Object.entries(meta.postgres.settings).map(([k, v]) => `${k}=${v}`).join(', ')}`);
  lines.push(`- Redis: ${meta.redis.version ?? 'not reachable'}`);
  lines.push(
    `- An idle worker-less process under tsx has ${fmt(meta.baselineRssMiB)} MiB RSS; every worker's RSS includes it. ` +
      `Mean 1-minute load average at run starts: ${fmt(meta.meanLoadAvg1)} (${meta.machine.cores} cores; above that, other work shared the machine).`,
  );
  lines.push(`- Libraries: ${Object.entries(meta.libraries).map(([k, v]) => `${k} ${v}`).join(', ')}`);
  const c = meta.config;
  lines.push(
    `- Sizes: single enqueue ${c.enqueueMs / 1000} s per run after ${c.enqueueWarmup} warm-up calls; bulk ${c.bulkMs / 1000} s or ${c.bulkMaxCalls} calls; ` +
      `drains of ${c.drainJobs.toLocaleString('en-US')} waiting no-op jobs seeded with each system's bulk API (timed from worker start until the system reports all finished); ` +
      `latency ${c.latencySamples} sequential samples (≤ ${c.latencyBudgetMs / 1000} s per run, ${c.latencyGapMs} ms ± 50% apart, worker in its own process); ` +
      `a fresh database per run, cloned from a migrated template.`,
  );
  lines.push('');
  return lines.join('\n');
}
