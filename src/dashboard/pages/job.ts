/** One job: facts, progress, timeline, payload, result, every attempt's error with its stack, actions. */
import type { Pgq } from '../../client.js';
import { JobNotFoundError } from '../../core/errors.js';
import { isFinalState, type JobRecord } from '../../core/types.js';
import { html, type Html } from '../html.js';
import { badge, jobBadge, jsonBlock, progressBar, time, url, type PageContext } from './components.js';
import { jobActions } from './jobs.js';
import type { Page } from './layout.js';

function timeline(job: JobRecord): Html {
  const events: { at: Date; label: Html }[] = [{ at: job.createdAt, label: html`Enqueued in <strong>${job.queue}</strong>` }];
  for (const e of job.errors) events.push({ at: new Date(e.at), label: html`Attempt ${e.attempt} failed: <span class="error-snippet">${e.message.split('\n')[0]}</span>` });
  if (job.startedAt) events.push({ at: job.startedAt, label: html`Attempt ${job.attempts} started${job.workerId ? html` on <span class="mono">${job.workerId}</span>` : null}` });
  if (job.cancelRequestedAt) events.push({ at: job.cancelRequestedAt, label: html`Cancel asked for: it ends cancelled once its handler has settled` });
  if (job.finishedAt) events.push({ at: job.finishedAt, label: html`Finished: ${badge(job.state)}` });
  else if (job.state !== 'running') events.push({ at: job.runAt, label: html`Due (${job.state})` });
  events.sort((a, b) => a.at.getTime() - b.at.getTime());
  return html`<ol class="timeline">${events.map((e) => html`<li><div class="when">${time(e.at)}</div><div>${e.label}</div></li>`)}</ol>`;
}

export async function jobPage(ctx: PageContext, pgq: Pgq, id: string): Promise<Page> {
  const job = await pgq.getJob(id);
  if (!job) throw new JobNotFoundError(id);
  const stale = job.progressAt !== null && job.startedAt !== null && job.progressAt < job.startedAt;
  const facts: [string, Html | string][] = [
    ['State', jobBadge(job)],
    ['Task', job.task],
    ['Queue', html`<a href="${url(ctx, `/jobs?queue=${encodeURIComponent(job.queue)}`)}">${job.queue}</a>`],
    ['Attempts', `${job.attempts} of ${job.maxAttempts}`],
    ['Priority', String(job.priority)],
    ['Worker', job.workerId ?? '—'],
    ['Workflow', job.workflowId ? html`<a href="${url(ctx, `/workflows/${job.workflowId}`)}">#${job.workflowId}</a> step <strong>${job.workflowStep ?? ''}</strong>` : '—'],
    ['Unique key', job.uniqueKey ?? '—'],
  ];
  return {
    title: `Job ${job.id}`,
    nav: 'jobs',
    live: isFinalState(job.state) ? 'change' : 'tick',
    region: html`
      <div class="page-head"><h1><span class="muted">Job</span> ${job.id} <span class="task-name">${job.task}</span> ${jobBadge(job)}</h1>${jobActions(ctx, job, true)}</div>
      <section class="grid-2">
        <div class="card"><h2>Details</h2><dl class="facts">${facts.map(([k, v]) => html`<dt>${k}</dt><dd>${v}</dd>`)}</dl></div>
        <div class="card"><h2>Progress</h2><div id="job-progress">${progressBar(job.progress, job.state === 'running')}</div>
          ${job.progressAt ? html`<p class="footnote">reported ${time(job.progressAt, { ago: true })}${stale ? ' (by an earlier attempt)' : ''}</p>` : null}
          <h2>Timeline</h2>${timeline(job)}</div>
      </section>
      <section class="grid-2">
        <div class="card"><h2>Payload</h2>${jsonBlock(job.payload, ctx.hidePayloads)}</div>
        <div class="card"><h2>Result</h2>${jsonBlock(job.result, ctx.hidePayloads)}</div>
      </section>
      <section class="card"><h2>Errors <span class="muted">(${job.errors.length})</span></h2>
        ${job.errors.length === 0 ? html`<p class="muted">No failed attempts.</p>` : job.errors.map((e) => html`<div class="error-entry">
          <div class="error-head"><span class="badge state-failed">attempt ${e.attempt}</span> ${time(new Date(e.at))}</div>
          <p class="error-message">${e.message}</p>
          ${e.failedStep ? html`<p class="muted">because step ${e.failedStep.step} (job <a href="${url(ctx, `/jobs/${e.failedStep.jobId}`)}">${e.failedStep.jobId}</a>) ${e.failedStep.state}</p>` : null}
          ${e.stack ? html`<pre class="stack">${e.stack}</pre>` : null}</div>`)}
      </section>`,
  };
}
