/** Overview: every queue by state, what runs now, the oldest wait, and finished/failed and wait-time charts. */
import type { OverviewSnapshot, QueueSnapshot } from '../../inspection/queue-stats.js';
import { formatRateText } from '../../queues.js';
import { html, type Html } from '../html.js';
import type { LiveFeed } from '../live.js';
import { chartLegend, throughputChart, waitChart } from './charts.js';
import { STATE_ORDER, liveAge, table, time, url, type PageContext } from './components.js';
import type { Page } from './layout.js';

/** The overview counts every state but succeeded (counted by time window in the charts instead). */
const COUNTED_STATES = STATE_ORDER.filter((s) => s !== 'succeeded');

function countCell(ctx: PageContext, q: QueueSnapshot, state: (typeof COUNTED_STATES)[number]): Html {
  const n = q.counts[state];
  const link = url(ctx, `/jobs?queue=${encodeURIComponent(q.queue)}&state=${state}`);
  return html`<a class="count ${n ? `has state-text-${state}` : 'zero'}" href="${link}" data-count="${q.queue}:${state}">${n.toLocaleString('en-US')}</a>`;
}

/** The per-queue table: counts by state, the oldest wait, the pause switch and limits. */
export function queueTable(ctx: PageContext, snapshot: OverviewSnapshot): Html {
  return table(
    ['Queue', ...COUNTED_STATES.map((s) => html`<span class="state-text-${s}">${s}</span>`), 'Oldest waiting', html`<a href="${url(ctx, '/queues')}">Control</a>`],
    snapshot.queues.map((q) => [
      html`<a href="${url(ctx, `/jobs?queue=${encodeURIComponent(q.queue)}`)}"><strong>${q.queue}</strong></a>`,
      ...COUNTED_STATES.map((s) => countCell(ctx, q, s)),
      q.oldestWaitingRunAt ? liveAge((snapshot.at.getTime() - q.oldestWaitingRunAt.getTime()) / 1000) : html`<span class="muted">—</span>`,
      queueControl(q),
    ]),
    'No jobs yet. Enqueue one and it shows up here.',
  );
}

/**
 * Said where the failed and cancelled counts are ten seconds or more older
 * than the snapshot (a slow count is made less often: `OverviewReader`); a
 * count one or two snapshots old (a connection's first statement is slower)
 * is as fresh as the page.
 */
export function finishedCountNote(snapshot: OverviewSnapshot): Html | null {
  if (snapshot.at.getTime() - snapshot.finishedCountedAt.getTime() < 10_000) return null;
  return html` Failed and cancelled jobs as counted ${time(snapshot.finishedCountedAt, { ago: true })}: counting them takes a while, so it is done less often.`;
}

/** The pause switch and limits of a queue, as badges. */
export function queueControl(q: QueueSnapshot): Html {
  const limits = [
    q.concurrency !== null ? html`<span class="chip limit" title="most running at once, all workers">≤ ${q.concurrency} running</span>` : null,
    q.rateLimit !== null ? html`<span class="chip limit" title="most job starts per period (token bucket)">${formatRateText(q.rateLimit)}</span>` : null,
    q.keyConcurrency !== null ? html`<span class="chip limit" title="most running per concurrency key">≤ ${q.keyConcurrency} per key</span>` : null,
  ];
  return html`<span class="control" data-queue-status="${q.queue}">${q.paused ? html`<span class="badge status-paused">paused</span>` : null}${limits}${
    !q.paused && limits.every((l) => l === null) ? html`<span class="muted small">unlimited</span>` : null
  }</span>`;
}

function tile(label: string, value: string | number | Html, tone = '', href?: string): Html {
  const body = html`<div class="tile-value">${typeof value === 'number' ? value.toLocaleString('en-US') : value}</div><div class="tile-label">${label}</div>`;
  return href ? html`<a class="tile ${tone}" href="${href}">${body}</a>` : html`<div class="tile ${tone}">${body}</div>`;
}

export async function overviewPage(ctx: PageContext, live: LiveFeed, workers: number): Promise<Page> {
  const range = ctx.query.get('range') === 'day' ? 'day' : 'hour';
  const [snapshot, series] = await Promise.all([live.snapshot(), live.series(range)]);
  const sum = (state: keyof QueueSnapshot['counts']): number => snapshot.queues.reduce((a, q) => a + q.counts[state], 0);
  const finished = series.points.reduce((a, p) => a + p.succeeded, 0);
  const failedInRange = series.points.reduce((a, p) => a + p.failed, 0);
  const oldest = snapshot.queues.map((q) => q.oldestWaitingRunAt).filter((d): d is Date => d !== null).sort((a, b) => a.getTime() - b.getTime())[0];
  const rangeLink = (r: string, text: string): Html => html`<a class="seg ${range === r ? 'active' : ''}" href="${url(ctx, `/?range=${r}`)}">${text}</a>`;
  return {
    title: 'Overview',
    nav: 'overview',
    live: 'change',
    drawnFrom: snapshot,
    head: html`<div class="page-head"><h1>Overview</h1><div class="segmented">${rangeLink('hour', 'Last hour')}${rangeLink('day', 'Last day')}</div></div>`,
    region: html`
      <section class="tiles">
        ${tile('running now', sum('running'), 'tone-running', url(ctx, '/jobs?state=running'))}
        ${tile('waiting (available)', sum('available'), 'tone-available', url(ctx, '/jobs?state=available'))}
        ${tile('oldest waiting', oldest ? liveAge((snapshot.at.getTime() - oldest.getTime()) / 1000, true) : '—')}
        ${tile(`succeeded, last ${range}`, finished, 'tone-succeeded', url(ctx, '/jobs?state=succeeded'))}
        ${tile(`failed, last ${range}`, failedInRange, failedInRange ? 'tone-failed' : '', url(ctx, '/jobs?state=failed'))}
        ${tile('failed (dead letters)', sum('failed'), sum('failed') ? 'tone-failed' : '', url(ctx, '/jobs?state=failed'))}
        ${tile('workers', workers, '', url(ctx, '/workers'))}
      </section>
      <section class="card"><h2>Queues</h2>${queueTable(ctx, snapshot)}
        <p class="footnote">${snapshot.estimatedJobs === null ? 'The table has not been analyzed yet, so there is no estimate of its size.' : `About ${snapshot.estimatedJobs.toLocaleString('en-US')} jobs in the table (planner estimate).`} Succeeded jobs are counted per time window, in the charts. Updated ${time(snapshot.at, { ago: true })}.${finishedCountNote(snapshot)}</p></section>
      <section class="grid-2">
        <div class="card"><h2>Finished per ${range === 'hour' ? 'minute' : '30 minutes'}</h2>${throughputChart(series)}${chartLegend}</div>
        <div class="card"><h2>Mean wait, due → started</h2>${waitChart(series)}<div class="legend"><span class="sw line-sw"></span>mean of the jobs finished in each bucket</div></div>
      </section>`,
  };
}
