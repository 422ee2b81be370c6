/** Queues: counts by state for every queue. */
import { html } from '../html.js';
import type { LiveFeed } from '../live.js';
import type { PageContext } from './components.js';
import type { Page } from './layout.js';
import { queueTable } from './overview.js';

export async function queuesPage(ctx: PageContext, live: LiveFeed): Promise<Page> {
  const snapshot = await live.snapshot();
  return {
    title: 'Queues',
    nav: 'queues',
    live: 'change',
    head: html`<div class="page-head"><h1>Queues</h1></div>`,
    region: html`<section class="card">${queueTable(ctx, snapshot)}</section>`,
  };
}
