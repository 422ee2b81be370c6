/** The page frame: navigation, the live region the client refreshes, and the assets. */
import type { OverviewSnapshot } from '../../inspection/queue-stats.js';
import { html, type Html } from '../html.js';
import { url, type PageContext } from './components.js';

/** What a page renders: a title, what stays put (filters, actions) and the region that refreshes live. */
export interface Page {
  title: string;
  nav: 'overview' | 'jobs' | 'workflows' | 'schedules' | 'workers' | 'queues';
  /** Above the live region: headings, filter forms, bulk actions. */
  head?: Html;
  /** Refreshed without reload: on every snapshot that changed (`change`), on every tick (`tick`), or never. */
  live: 'change' | 'tick' | 'none';
  region: Html;
  /** The snapshot the region was drawn from, where it was (its key goes on the region: `layout`). */
  drawnFrom?: OverviewSnapshot;
}

const NAV: [Page['nav'], string, string][] = [
  ['overview', 'Overview', '/'],
  ['jobs', 'Jobs', '/jobs'],
  ['workflows', 'Workflows', '/workflows'],
  ['schedules', 'Schedules', '/schedules'],
  ['queues', 'Queues', '/queues'],
  ['workers', 'Workers', '/workers'],
];

/**
 * `snapshotKey`: the key (`liveKey()` of assets/client.ts) of a snapshot no
 * newer than what the page shows ('' when there is none): the browser
 * refreshes the page on the first snapshot of its event stream that differs.
 */
export function layout(ctx: PageContext, page: Page, schema: string, snapshotKey: string): Html {
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="pgq-base" content="${ctx.base}">
<meta name="pgq-csrf" content="${ctx.readOnly ? '' : ctx.csrfToken}">
<title>${page.title} · pgq</title>
<link rel="stylesheet" href="${url(ctx, '/assets/console.css')}">
<link rel="icon" href="${url(ctx, '/assets/favicon.svg')}" type="image/svg+xml">
</head>
<body>
<header class="top">
  <a class="brand" href="${url(ctx, '/')}"><span class="logo">pgq</span><span class="schema">${schema}</span></a>
  <nav>${NAV.map(([key, label, path]) => html`<a href="${url(ctx, path === '/' ? '/' : path)}" class="${key === page.nav ? 'active' : ''}">${label}</a>`)}</nav>
  <div class="status">
    ${ctx.readOnly ? html`<span class="pill readonly" title="Actions are disabled">read-only</span>` : null}
    <span class="pill live-dot" id="live-status" title="Live updates">connecting…</span>
  </div>
</header>
<main>
  <div id="flash" role="status" aria-live="polite"></div>
  ${page.head ?? null}
  <div id="live" data-live="${page.live}" data-key="${snapshotKey}">${page.region}</div>
</main>
<dialog id="confirm"><form method="dialog"><p class="message"></p>
  <menu><button value="cancel" class="btn plain">Cancel</button><button value="ok" class="btn primary" id="confirm-ok">Confirm</button></menu></form></dialog>
<script src="${url(ctx, '/assets/console.js')}" defer></script>
</body>
</html>`;
}
