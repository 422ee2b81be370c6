/** Workflows: recent ones with their progress, and one drawn as a graph of its steps with each step's state. */
import type { Pgq } from '../../client.js';
import { WorkflowNotFoundError, type WorkflowStepRecord } from '../../workflow/store.js';
import { workflowView } from '../../inspection/workflow-view.js';
import { html, type Html } from '../html.js';
import { badge, jobBadge, table, time, url, type PageContext } from './components.js';
import type { Page } from './layout.js';

export async function workflowsPage(ctx: PageContext, pgq: Pgq): Promise<Page> {
  const before = ctx.query.get('before') || undefined;
  const list = await pgq.listWorkflows({ before, limit: 50 });
  const rows = list.map((w) => {
    const done = w.counts.succeeded + w.counts.failed + w.counts.cancelled;
    const pct = w.total ? (done / w.total) * 100 : 0;
    return [
      html`<a class="mono" href="${url(ctx, `/workflows/${w.id}`)}">${w.id}</a>`,
      html`<a href="${url(ctx, `/workflows/${w.id}`)}">${w.name}</a>`,
      badge(w.state),
      html`<div class="progress small"><div class="bar ${w.counts.failed ? 'bar-bad' : ''}" style="width:${pct.toFixed(1)}%"></div><span class="label">${done}/${w.total}</span></div>`,
      time(w.createdAt, { ago: true }),
    ];
  });
  return {
    title: 'Workflows',
    nav: 'workflows',
    live: 'change',
    head: html`<div class="page-head"><h1>Workflows</h1></div>`,
    region: html`${table(['ID', 'Name', 'State', 'Steps finished', 'Created'], rows, 'No workflows yet.')}
      <div class="pager">${before ? html`<a class="btn plain" href="${url(ctx, '/workflows')}">← Newest</a>` : null}
      ${list.length === 50 ? html`<a class="btn plain" href="${url(ctx, `/workflows?before=${list.at(-1)!.id}`)}">Older →</a>` : null}</div>`,
  };
}

const NODE_W = 168;
const NODE_H = 52;
const GAP_X = 64;
const GAP_Y = 22;

/** Steps placed in columns by depth (longest path from a root), edges from each parent. */
export function workflowGraph(ctx: PageContext, workflow: { steps: readonly WorkflowStepRecord[] }): Html {
  const byId = new Map(workflow.steps.map((s) => [s.id, s]));
  const depth = new Map<string, number>();
  const depthOf = (s: WorkflowStepRecord): number => {
    const known = depth.get(s.id);
    if (known !== undefined) return known;
    const d = Math.max(-1, ...s.dependsOn.map((p) => (byId.has(p) ? depthOf(byId.get(p)!) : -1))) + 1;
    depth.set(s.id, d);
    return d;
  };
  const columns: WorkflowStepRecord[][] = [];
  for (const s of workflow.steps) (columns[depthOf(s)] ??= []).push(s);
  const tallest = Math.max(1, ...columns.map((c) => c.length));
  const height = tallest * (NODE_H + GAP_Y) - GAP_Y + 20;
  const width = columns.length * (NODE_W + GAP_X) - GAP_X + 20;
  const pos = new Map<string, { x: number; y: number }>();
  columns.forEach((col, ci) => {
    const offset = (height - (col.length * (NODE_H + GAP_Y) - GAP_Y)) / 2;
    col.forEach((s, ri) => pos.set(s.id, { x: 10 + ci * (NODE_W + GAP_X), y: offset + ri * (NODE_H + GAP_Y) }));
  });
  const edges = workflow.steps.flatMap((s) =>
    s.dependsOn.filter((p) => pos.has(p)).map((p) => {
      const a = pos.get(p)!;
      const b = pos.get(s.id)!;
      const x1 = a.x + NODE_W;
      const y1 = a.y + NODE_H / 2;
      const x2 = b.x;
      const y2 = b.y + NODE_H / 2;
      const mid = (x1 + x2) / 2;
      return html`<path class="edge edge-${byId.get(p)!.state}" d="M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2 - 6},${y2}" marker-end="url(#arrow)"/>`;
    }),
  );
  const nodes = workflow.steps.map((s) => {
    const p = pos.get(s.id)!;
    const name = s.step.length > 22 ? `${s.step.slice(0, 21)}…` : s.step;
    return html`<a href="${url(ctx, `/jobs/${s.id}`)}" class="node" data-step="${s.step}" data-state="${s.state}">
      <title>${s.step} (${s.task}) — ${s.state}</title>
      <rect class="node-box state-fill-${s.state}" x="${p.x}" y="${p.y}" width="${NODE_W}" height="${NODE_H}" rx="8"/>
      <text class="node-name" x="${p.x + 12}" y="${p.y + 21}">${name}</text>
      <text class="node-state" x="${p.x + 12}" y="${p.y + 39}">${s.state === 'running' && s.cancelRequestedAt ? 'cancelling' : s.state} · job ${s.id}</text></a>`;
  });
  return html`<div class="graph-wrap"><svg class="graph" viewBox="0 0 ${width} ${height}" width="${width}" height="${height}" role="img" aria-label="Workflow graph">
    <defs><marker id="arrow" viewBox="0 0 10 10" refX="8" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" class="arrow"/></marker></defs>
    ${edges}${nodes}</svg></div>`;
}

/** The most steps a workflow's page draws and lists. */
const STEPS_SHOWN = 500;

export async function workflowPage(ctx: PageContext, pgq: Pgq, id: string): Promise<Page> {
  // Its first STEPS_SHOWN steps without payloads and results (getWorkflow read every column of every step, at every tick).
  const workflow = await workflowView(pgq.kysely, id, STEPS_SHOWN);
  if (!workflow) throw new WorkflowNotFoundError(id);
  // One lookup (a search of the steps for each parent took seconds, the whole process blocked, for a chord of 5,000).
  const stepName = new Map(workflow.steps.map((s) => [s.id, s.step]));
  // A workflow may have 50,000 steps: the page draws and lists the first
  // STEPS_SHOWN (megabytes of HTML, rendered on the host's event loop, at
  // every tick of a running workflow's page); the jobs page pages through all.
  const many = workflow.total > STEPS_SHOWN;
  const rows = workflow.steps.map((s) => [
    html`<strong>${s.step}</strong>`,
    html`<a class="mono" href="${url(ctx, `/jobs/${s.id}`)}">${s.id}</a>`,
    s.task,
    jobBadge(s),
    html`<span class="mono">${s.attempts}/${s.maxAttempts}</span>`,
    s.dependsOn.map((p) => stepName.get(p) ?? p).join(', ') || html`<span class="muted">—</span>`,
    time(s.finishedAt, { ago: true }),
  ]);
  return {
    title: `Workflow ${workflow.id}`,
    nav: 'workflows',
    live: workflow.state === 'running' ? 'tick' : 'change',
    region: html`<div class="page-head"><h1><span class="muted">Workflow</span> ${workflow.id} <span class="task-name">${workflow.name}</span> ${badge(workflow.state)}</h1>
        <a class="btn plain" href="${url(ctx, `/jobs?workflow=${workflow.id}`)}">Jobs of this workflow</a></div>
      <section class="card"><h2>Graph</h2>${
        many
          ? html`<p class="muted">${workflow.total.toLocaleString('en-US')} steps: drawn up to ${STEPS_SHOWN.toLocaleString('en-US')}.</p>`
          : workflowGraph(ctx, workflow)
      }</section>
      <section class="card"><h2>Steps</h2>${
        many
          ? html`<p class="muted">The first ${STEPS_SHOWN.toLocaleString('en-US')} of ${workflow.total.toLocaleString('en-US')}; every one: <a href="${url(ctx, `/jobs?workflow=${workflow.id}`)}">the jobs of this workflow</a>.</p>`
          : null
      }${table(['Step', 'Job', 'Task', 'State', 'Attempts', 'After', 'Finished'], rows)}</section>`,
  };
}
