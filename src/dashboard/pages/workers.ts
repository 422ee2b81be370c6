/** Workers: registered workers (one whose lease has run out marked so), their queues, load, heartbeat age, and the leader. */
import type { Pgq } from '../../client.js';
import { html } from '../html.js';
import { ago, table, time, url, type PageContext } from './components.js';
import type { Page } from './layout.js';

export async function workersPage(ctx: PageContext, pgq: Pgq): Promise<Page> {
  const workers = await pgq.listWorkers();
  const rows = workers.map((w) => [
    // A row whose lease has run out is a dead (or frozen) worker's, kept until a leader's rescuer takes its jobs back.
    html`<span class="mono">${w.id}</span>${w.isLeader ? html` <span class="badge leader">leader</span>` : null}${
      w.live ? null : html` <span class="badge status-dead" title="no heartbeat within its rescueAfterMs: its running jobs go back to the queue when a leader's rescuer next runs">lease expired</span>`
    }`,
    html`${w.hostname} <span class="muted">pid ${w.pid}</span>`,
    w.queues.map((q) => html`<a class="chip" href="${url(ctx, `/jobs?queue=${encodeURIComponent(q)}`)}">${q}</a>`),
    html`<div class="progress small"><div class="bar" style="width:${((w.runningJobs / w.concurrency) * 100).toFixed(1)}%"></div><span class="label">${w.runningJobs}/${w.concurrency}</span></div>`,
    html`<span class="${!w.live || w.heartbeatAgeSeconds > 30 ? 'warn' : ''}">${ago(w.heartbeatAgeSeconds)}</span>`,
    time(w.startedAt, { ago: true }),
  ]);
  return {
    title: 'Workers',
    nav: 'workers',
    live: 'tick',
    head: html`<div class="page-head"><h1>Workers</h1></div>`,
    region: table(['Worker', 'Host', 'Queues', 'Running', 'Heartbeat', 'Started'], rows, 'No workers are running.'),
  };
}
