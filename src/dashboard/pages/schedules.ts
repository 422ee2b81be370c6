/** Schedules: expression and zone, next and last run in the schedule's zone and the viewer's, last outcome, pause/resume/run now. */
import type { Pgq } from '../../client.js';
import { html } from '../html.js';
import { actionButton, badge, table, time, zoned, url, type PageContext } from './components.js';
import type { Page } from './layout.js';

export async function schedulesPage(ctx: PageContext, pgq: Pgq): Promise<Page> {
  const schedules = await pgq.listSchedules();
  const lastIds = schedules.map((s) => s.lastJobId).filter((id): id is string => id !== null);
  const lastJobs = new Map((await Promise.all(lastIds.map((id) => pgq.getJob(id)))).filter((j) => j !== null).map((j) => [j.id, j]));
  const rows = schedules.map((s) => {
    const last = s.lastJobId ? lastJobs.get(s.lastJobId) : undefined;
    const status = !s.enabled ? 'disabled' : s.paused ? 'paused' : 'active';
    const name = encodeURIComponent(s.name);
    return [
      html`<strong>${s.name}</strong><div class="muted small">${s.task} → ${s.queue}</div>`,
      s.cron !== null ? html`<code>${s.cron}</code><div class="muted small">${s.timezone}</div>` : html`every <code>${s.every}</code>`,
      html`<span class="badge status-${status}" data-schedule-status="${s.name}">${status}</span>`,
      html`${zoned(s.nextRunAt, s.timezone)} <span class="muted small">${s.timezone}</span><div class="small">${time(s.nextRunAt)} <span class="muted">yours</span></div>`,
      s.lastRunAt ? html`${zoned(s.lastRunAt, s.timezone)}<div class="small">${time(s.lastRunAt)} <span class="muted">yours</span></div>` : html`<span class="muted">never</span>`,
      last ? html`<a href="${url(ctx, `/jobs/${last.id}`)}">job ${last.id}</a> ${badge(last.state)}` : s.lastJobId ? html`job ${s.lastJobId} <span class="muted">(pruned)</span>` : html`<span class="muted">—</span>`,
      html`<div class="actions">${
        s.paused
          ? actionButton(ctx, 'Resume', { post: `/api/schedules/${name}/resume`, tone: 'primary' })
          : actionButton(ctx, 'Pause', { post: `/api/schedules/${name}/pause`, confirm: `Pause schedule ${s.name}? It will not fire until resumed.` })
      }${actionButton(ctx, 'Run now', { post: `/api/schedules/${name}/run`, confirm: `Enqueue one job of ${s.name} now?` })}</div>`,
    ];
  });
  return {
    title: 'Schedules',
    nav: 'schedules',
    live: 'change',
    head: html`<div class="page-head"><h1>Schedules</h1></div>`,
    region: table(['Schedule', 'When', 'Status', 'Next run', 'Last run', 'Last job', ''], rows, 'No schedules. Add one with pgq.schedule() or pgq schedules add.'),
  };
}
