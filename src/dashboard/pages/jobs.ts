/** Jobs: filters (state, queue, task, time, payload/result/error), keyset pages, per-row and bulk actions. */
import type { Pgq } from '../../client.js';
import { JOB_STATES, isFinalState, type JobRecord } from '../../core/types.js';
import { listJobPage } from '../../jobs/job-list.js';
import { RETRYABLE_STATES } from '../../jobs/job-store.js';
import { html, type Html } from '../html.js';
import { filterParams, hasFilterParams, listFromQuery, refuseUnknownParams } from '../query.js';
import { actionButton, jobBadge, progressBar, table, time, url, type PageContext } from './components.js';
import type { Page } from './layout.js';

const SINCE = [['', 'any time'], ['15m', 'last 15 minutes'], ['1h', 'last hour'], ['24h', 'last 24 hours'], ['7d', 'last 7 days']] as const;

/** Retry, cancel and delete buttons for what the job's state allows; on the job's own page a delete goes back to the list. */
export function jobActions(ctx: PageContext, job: JobRecord, onJobPage = false): Html {
  const id = job.id;
  return html`<div class="actions">
    ${RETRYABLE_STATES.includes(job.state) ? actionButton(ctx, 'Retry', { post: `/api/jobs/${id}/retry`, tone: 'primary' }) : null}
    ${!isFinalState(job.state) && !job.cancelRequestedAt ? actionButton(ctx, 'Cancel', { post: `/api/jobs/${id}/cancel`, confirm: `Cancel job ${id}?` }) : null}
    ${job.state !== 'running' ? actionButton(ctx, 'Delete', { post: `/api/jobs/${id}/delete`, confirm: `Delete job ${id}? This cannot be undone.`, tone: 'danger', after: onJobPage ? url(ctx, '/jobs') : undefined }) : null}
  </div>`;
}

/** Filters the form has no field for: kept as they are when it is submitted. */
const KEPT_FILTERS = ['until', 'result', 'workflow', 'limit'] as const;

function filterForm(ctx: PageContext): Html {
  const q = ctx.query;
  // Several states (state=failed,cancelled, or state given twice) are one choice of their own.
  const state = [...new Set(q.getAll('state').flatMap((s) => s.split(',')).map((s) => s.trim()).filter(Boolean))].join(',');
  const several = state.includes(',');
  const since = q.get('since') ?? '';
  const input = (name: string, placeholder: string, disabled = false): Html =>
    html`<label><span>${name}</span><input name="${name}" value="${q.get(name) ?? ''}" placeholder="${placeholder}" ${disabled ? html`disabled title="hidden in this console"` : null}></label>`;
  return html`<form class="filters" method="get" action="${url(ctx, '/jobs')}">
    <label><span>state</span><select name="state"><option value="">any</option>${JOB_STATES.map((s) => html`<option value="${s}" ${s === state ? html`selected` : null}>${s}</option>`)}${
      several ? html`<option value="${state}" selected>${state.replaceAll(',', ', ')}</option>` : null
    }</select></label>
    ${input('queue', 'any')}${input('task', 'any')}
    <label><span>enqueued</span><select name="since">${SINCE.map(([v, l]) => html`<option value="${v}" ${v === since ? html`selected` : null}>${l}</option>`)}${
      since && !SINCE.some(([v]) => v === since) ? html`<option value="${since}" selected>since ${since}</option>` : null
    }</select></label>
    ${input('payload', '{"to":"a@b.co"} or text', ctx.hidePayloads)}${input('error', 'text in message or stack')}
    ${KEPT_FILTERS.map((key) => (q.get(key)?.trim() ? html`<input type="hidden" name="${key}" value="${q.get(key)!}">` : null))}
    <div class="filter-buttons"><button class="btn primary" type="submit">Filter</button><a class="btn plain" href="${url(ctx, '/jobs')}">Clear</a></div>
  </form>`;
}

function bulkBar(ctx: PageContext): Html | null {
  if (ctx.readOnly || !hasFilterParams(ctx.query, ctx.hidePayloads)) return null;
  const f = filterParams(ctx.query).toString();
  const button = (action: 'retry' | 'cancel' | 'delete', label: string, tone: 'primary' | 'plain' | 'danger'): Html | null =>
    actionButton(ctx, label, {
      post: `/api/jobs/${action}?${f}`,
      countUrl: `/api/jobs/count?action=${action}&${f}`,
      confirm: `${label.replace(' all matching', '')} {count} matching job(s)?`,
      tone,
    });
  return html`<div class="bulk"><span class="muted">Everything matching this filter:</span>
    ${button('retry', 'Retry all matching', 'primary')}${button('cancel', 'Cancel all matching', 'plain')}${button('delete', 'Delete all matching', 'danger')}</div>`;
}

export async function jobsPage(ctx: PageContext, pgq: Pgq): Promise<Page> {
  // As the API: a misspelt key (queu=) would be no filter, and the page would list every job as if filtered.
  refuseUnknownParams(ctx.query, ['before', 'limit']);
  const filter = listFromQuery(ctx.query, ctx.hidePayloads);
  const limit = filter.limit ?? 50;
  // Without payloads and results, which this page never shows (a page of 1,000 large jobs read gigabytes, at every live refresh).
  const jobs = await listJobPage(pgq.kysely, { ...filter, limit }, true);
  const keep = filterParams(ctx.query);
  // The page size travels with the pages, as the filter does.
  if (ctx.query.get('limit')?.trim()) keep.set('limit', ctx.query.get('limit')!.trim());
  const older = new URLSearchParams(keep);
  if (jobs.length === limit) older.set('before', jobs.at(-1)!.id);
  const rows = jobs.map((job) => [
    html`<a class="mono" href="${url(ctx, `/jobs/${job.id}`)}">${job.id}</a>`,
    html`<a class="task" href="${url(ctx, `/jobs/${job.id}`)}">${job.task}</a>`,
    job.queue,
    jobBadge(job),
    html`<span class="mono">${job.attempts}/${job.maxAttempts}</span>`,
    job.state === 'running' && job.progress !== null ? progressBar(job.progress) : time(job.createdAt, { ago: true }),
    job.finishedAt ? time(job.finishedAt, { ago: true }) : job.state === 'running' ? html`<span class="muted">running</span>` : time(job.runAt, { ago: true }),
    html`<span class="error-snippet">${job.errors.at(-1)?.message.split('\n')[0]?.slice(0, 120) ?? ''}</span>`,
    jobActions(ctx, job),
  ]);
  return {
    title: 'Jobs',
    nav: 'jobs',
    live: 'change',
    head: html`<div class="page-head"><h1>Jobs</h1></div>${filterForm(ctx)}${bulkBar(ctx)}`,
    region: html`${table(['ID', 'Task', 'Queue', 'State', 'Attempts', 'Enqueued / progress', 'Finished / due', 'Last error', ''], rows, 'No jobs match this filter.')}
      <div class="pager">
        ${filter.before ? html`<a class="btn plain" href="${url(ctx, `/jobs${keep.size ? `?${keep}` : ''}`)}">← Newest</a>` : null}
        ${jobs.length === limit ? html`<a class="btn plain" href="${url(ctx, `/jobs?${older}`)}">Older →</a>` : null}
      </div>`,
  };
}
