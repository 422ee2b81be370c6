/** Queues: per queue its counts, the pause switch and limits, with pause/resume and a form to set or remove limits. */
import type { QueueSnapshot } from '../../inspection/queue-stats.js';
import { formatRateText } from '../../queues.js';
import { html, type Html } from '../html.js';
import type { LiveFeed } from '../live.js';
import { actionButton, liveAge, table, url, type PageContext } from './components.js';
import type { Page } from './layout.js';
import { finishedCountNote, queueControl } from './overview.js';

const COUNTED = ['available', 'running', 'scheduled', 'retryable', 'blocked', 'failed'] as const;

/** The limits form: every field filled with the current value; an empty field removes that limit. */
function limitsForm(ctx: PageContext, q: QueueSnapshot): Html | null {
  if (ctx.readOnly) return null;
  const name = encodeURIComponent(q.queue);
  return html`<details class="limits"><summary class="btn plain">Limits…</summary>
    <form class="limits-form" data-post-form="${url(ctx, `/api/queues/${name}/limits`)}">
      <label><span>Concurrency</span><input type="number" min="1" step="1" name="concurrency" value="${q.concurrency ?? ''}" placeholder="unlimited"></label>
      <label><span>Rate limit</span><input type="text" name="rateLimit" value="${q.rateLimit ? formatRateText(q.rateLimit) : ''}" placeholder="e.g. 100/1m"></label>
      <label><span>Per key</span><input type="number" min="1" step="1" name="keyConcurrency" value="${q.keyConcurrency ?? ''}" placeholder="unlimited"></label>
      <p class="footnote">Empty removes a limit. Applies on every worker within about a second.</p>
      <div class="form-buttons"><button class="btn primary" type="submit">Save limits</button></div>
    </form></details>`;
}

export async function queuesPage(ctx: PageContext, live: LiveFeed): Promise<Page> {
  const snapshot = await live.snapshot();
  const rows = snapshot.queues.map((q) => {
    const name = encodeURIComponent(q.queue);
    return [
      html`<a href="${url(ctx, `/jobs?queue=${name}`)}"><strong>${q.queue}</strong></a>`,
      q.paused ? html`<span class="badge status-paused">paused</span>` : html`<span class="badge status-active">active</span>`,
      ...COUNTED.map((s) => {
        const n = q.counts[s];
        return html`<a class="count ${n ? `has state-text-${s}` : 'zero'}" href="${url(ctx, `/jobs?queue=${name}&state=${s}`)}">${n.toLocaleString('en-US')}</a>`;
      }),
      q.oldestWaitingRunAt ? liveAge((snapshot.at.getTime() - q.oldestWaitingRunAt.getTime()) / 1000) : html`<span class="muted">—</span>`,
      queueControl({ ...q, paused: false }),
      html`<div class="actions">${
        q.paused
          ? actionButton(ctx, 'Resume', { post: `/api/queues/${name}/resume`, tone: 'primary' })
          : actionButton(ctx, 'Pause', { post: `/api/queues/${name}/pause`, confirm: `Pause queue ${q.queue}? No worker starts its jobs until it is resumed; running jobs finish.` })
      }${limitsForm(ctx, q)}</div>`,
    ];
  });
  return {
    title: 'Queues',
    nav: 'queues',
    live: 'change',
    drawnFrom: snapshot,
    head: html`<div class="page-head"><h1>Queues</h1></div>`,
    region: html`<div class="queues-page">${table(
      ['Queue', 'Status', ...COUNTED.map((s) => html`<span class="state-text-${s}">${s}</span>`), 'Oldest waiting', 'Limits', ''],
      rows,
      'No queues yet. A queue appears when a worker serves it, a job is enqueued to it, or it is paused or limited.',
    )}
    <p class="footnote">Limits hold across every worker: concurrency is the most jobs of the queue running at once, the rate limit the most starts per period (a token bucket, so bursts up to the limit), per key the most running jobs sharing one concurrency key.${finishedCountNote(snapshot)}</p></div>`,
  };
}
