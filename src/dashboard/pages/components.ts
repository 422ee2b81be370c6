/** Small pieces every page uses: state badges, times, progress bars, tables, JSON blocks, action buttons. */
import type { JobProgress, JobRecord, JobState } from '../../core/types.js';
import { html, type Html, type HtmlChild } from '../html.js';

/** What a page knows about where and how it is served. */
export interface PageContext {
  /** Base path with no trailing slash (`''` at the root). */
  base: string;
  readOnly: boolean;
  hidePayloads: boolean;
  csrfToken: string;
  /** The request's query string. */
  query: URLSearchParams;
}

export const url = (ctx: PageContext, path: string): string => `${ctx.base}${path}`;

export function badge(state: string): Html {
  return html`<span class="badge state-${state}">${state}</span>`;
}

/** A job's state badge; a running job whose cancel was asked for says so beside it (it ends cancelled once its handler has settled). */
export function jobBadge(job: Pick<JobRecord, 'state' | 'cancelRequestedAt'>): Html {
  if (job.state !== 'running' || !job.cancelRequestedAt) return badge(job.state);
  return html`${badge(job.state)} <span class="badge state-cancelling" title="cancel asked for at ${job.cancelRequestedAt.toISOString()}; it ends cancelled once its handler has settled">cancelling</span>`;
}

/** A time as UTC text, which the client rewrites into the viewer's zone and a relative age. */
export function time(date: Date | null | undefined, options: { ago?: boolean } = {}): Html {
  if (!date) return html`<span class="muted">—</span>`;
  const iso = date.toISOString();
  return html`<time datetime="${iso}" ${options.ago ? html`data-ago` : html`data-local`} title="${iso}">${iso.replace('T', ' ').slice(0, 19)} UTC</time>`;
}

/** A time in a given IANA zone, as text. */
export function zoned(date: Date | null, timeZone: string): string {
  if (!date) return '—';
  return new Intl.DateTimeFormat('en-GB', { timeZone, dateStyle: 'medium', timeStyle: 'medium' }).format(date);
}

function bar(pct: number, label: string, live: boolean): Html {
  return html`<div class="progress${live ? ' live' : ''}" role="progressbar" aria-valuenow="${pct}" aria-valuemin="0" aria-valuemax="100">
      <div class="bar" style="width:${pct.toFixed(1)}%"></div><span class="label">${label}</span></div>`;
}

/** A number as a bar; `{ done, of }` (or `total`) as a bar labelled `done / of`, with any other fields as JSON below. */
export function progressBar(progress: JobProgress | null, live = false): Html {
  if (progress === null) return html`<span class="muted">—</span>`;
  if (typeof progress === 'number') {
    const pct = Math.max(0, Math.min(100, progress));
    return bar(pct, `${Number(pct.toFixed(1))}%`, live);
  }
  const done = typeof progress.done === 'number' ? progress.done : null;
  const of = typeof progress.of === 'number' ? progress.of : typeof progress.total === 'number' ? progress.total : null;
  if (done === null || !of) return html`<code class="progress-json">${JSON.stringify(progress)}</code>`;
  const rest = Object.keys(progress).filter((k) => !['done', 'of', 'total'].includes(k));
  return html`${bar(Math.max(0, Math.min(100, (done / of) * 100)), `${done} / ${of}`, live)}${
    rest.length ? html`<code class="progress-json">${JSON.stringify(progress)}</code>` : null
  }`;
}

export function jsonBlock(value: unknown, hidden: boolean): Html {
  if (hidden) return html`<p class="muted">hidden (--hide-payloads)</p>`;
  if (value === null || value === undefined) return html`<p class="muted">none</p>`;
  return html`<pre class="json">${JSON.stringify(value, null, 2)}</pre>`;
}

/** An action button: the client confirms (with a count first when `countUrl` is given), then POSTs. */
export function actionButton(
  ctx: PageContext,
  label: string,
  options: { post: string; confirm?: string; countUrl?: string; tone?: 'primary' | 'danger' | 'plain'; after?: string | undefined },
): Html | null {
  if (ctx.readOnly) return null;
  return html`<button type="button" class="btn ${options.tone ?? 'plain'}" data-post="${url(ctx, options.post)}"
    ${options.confirm ? html`data-confirm="${options.confirm}"` : null} ${options.countUrl ? html`data-count="${url(ctx, options.countUrl)}"` : null}
    ${options.after ? html`data-after="${options.after}"` : null}>${label}</button>`;
}

export function table(headers: HtmlChild[], rows: HtmlChild[][], empty = 'Nothing here yet.'): Html {
  if (rows.length === 0) return html`<div class="empty">${empty}</div>`;
  return html`<div class="table-wrap"><table><thead><tr>${headers.map((h) => html`<th>${h}</th>`)}</tr></thead>
    <tbody>${rows.map((r) => html`<tr>${r.map((cell) => html`<td>${cell}</td>`)}</tr>`)}</tbody></table></div>`;
}

/**
 * An age of `seconds` when the page was made, kept current by the console's
 * script while the page stays open (a page re-renders only when its counts
 * change: a queue stuck for an hour would still say "3s"). `bare` leaves out
 * the " ago".
 */
export function liveAge(seconds: number, bare = false): Html {
  const text = bare ? ago(seconds).replace(' ago', '') : ago(seconds);
  return html`<span data-age="${seconds.toFixed(1)}" ${bare ? html`data-bare` : null}>${text}</span>`;
}

export function ago(seconds: number): string {
  if (seconds < 1) return 'just now';
  if (seconds < 90) return `${Math.round(seconds)}s ago`;
  if (seconds < 5_400) return `${Math.round(seconds / 60)}m ago`;
  if (seconds < 172_800) return `${Math.round(seconds / 3_600)}h ago`;
  return `${Math.round(seconds / 86_400)}d ago`;
}

export const STATE_ORDER: readonly JobState[] = ['available', 'scheduled', 'running', 'retryable', 'blocked', 'failed', 'cancelled', 'succeeded'];
