/** Inline SVG charts drawn on the server: stacked bars of finished jobs, and a line of mean wait. */
import type { ThroughputSeries } from '../../inspection/queue-stats.js';
import { html, raw, type Html } from '../html.js';

const W = 640;
const H = 150;
const PAD = { left: 44, right: 8, top: 10, bottom: 22 };

function label(date: Date, range: ThroughputSeries['range']): string {
  const iso = date.toISOString();
  return range === 'hour' ? `${iso.slice(11, 16)} UTC` : `${iso.slice(5, 10)} ${iso.slice(11, 16)} UTC`;
}

/**
 * A bucket's time as text: UTC (so marked) from the server, put in the
 * viewer's zone by the console's script (`data-at`, `data-range`; `data-rest`
 * is what follows the time in a tooltip), as every other time shown is.
 */
function timeText(tag: 'text' | 'title', date: Date, range: ThroughputSeries['range'], rest = '', attrs: Html | null = null): Html {
  return tag === 'text'
    ? html`<text ${attrs} data-at="${date.toISOString()}" data-range="${range}">${label(date, range)}</text>`
    : html`<title data-at="${date.toISOString()}" data-range="${range}" data-rest="${rest}">${label(date, range)}${rest}</title>`;
}

/** Grid lines and their labels at 0, half and the top; a label is the value times `scale`, then `unit`. */
function axis(max: number, unit: string, scale = 1): Html {
  const y = (v: number): number => PAD.top + (H - PAD.top - PAD.bottom) * (1 - v / max);
  return html`${[0, 0.5, 1].map((f) => html`<line class="grid" x1="${PAD.left}" x2="${W - PAD.right}" y1="${y(max * f)}" y2="${y(max * f)}"/>
    <text class="tick" x="${PAD.left - 6}" y="${y(max * f) + 4}" text-anchor="end">${niceNumber(max * f * scale)}${unit}</text>`)}`;
}

function niceNumber(n: number): string {
  if (n >= 10_000) return `${Math.round(n / 1000)}k`;
  if (n >= 100 || Number.isInteger(n)) return String(Math.round(n));
  // Two significant digits: a wait axis up to 0.08 s read 0.1, 0.0 and 0.
  return n >= 10 ? n.toFixed(1) : String(Number(n.toPrecision(2)));
}

function xLabels(series: ThroughputSeries, step: number): Html {
  const n = series.points.length;
  const anchors = ['start', 'middle', 'end'] as const;
  return html`${[0, Math.floor(n / 2), n - 1].map((i, k) => {
    const p = series.points[i];
    const x = k === 0 ? PAD.left : k === 2 ? W - PAD.right : PAD.left + (i + 0.5) * step;
    return p ? timeText('text', p.at, series.range, '', html`class="tick" x="${x}" y="${H - 6}" text-anchor="${anchors[k]!}"`) : null;
  })}`;
}

/** Finished jobs per bucket: succeeded, failed and cancelled stacked. */
export function throughputChart(series: ThroughputSeries): Html {
  const n = series.points.length;
  const step = (W - PAD.left - PAD.right) / n;
  const max = Math.max(1, ...series.points.map((p) => p.succeeded + p.failed + p.cancelled));
  const scale = (H - PAD.top - PAD.bottom) / max;
  const bars = series.points.map((p, i) => {
    let y = H - PAD.bottom;
    const x = PAD.left + i * step + step * 0.12;
    const w = Math.max(1, step * 0.76);
    const parts = (['succeeded', 'failed', 'cancelled'] as const).map((key) => {
      const h = p[key] * scale;
      y -= h;
      return h > 0 ? html`<rect class="bar-${key}" x="${x.toFixed(1)}" y="${y.toFixed(1)}" width="${w.toFixed(1)}" height="${h.toFixed(1)}"/>` : null;
    });
    const title = timeText('title', p.at, series.range, ` — ${p.succeeded} succeeded, ${p.failed} failed, ${p.cancelled} cancelled`);
    return html`<g>${title}${parts}<rect class="hit" x="${(PAD.left + i * step).toFixed(1)}" y="${PAD.top}" width="${step.toFixed(1)}" height="${H - PAD.top - PAD.bottom}"/></g>`;
  });
  return html`<svg class="chart" viewBox="0 0 ${W} ${H}" role="img" aria-label="Jobs finished per ${series.bucketSeconds === 60 ? 'minute' : '30 minutes'}">
    ${axis(max, '')}${bars}${xLabels(series, step)}</svg>`;
}

/** Mean seconds from due to start, per bucket. */
export function waitChart(series: ThroughputSeries): Html {
  const n = series.points.length;
  const step = (W - PAD.left - PAD.right) / n;
  const values = series.points.map((p) => p.meanWaitSeconds);
  const max = Math.max(0.001, ...values.map((v) => v ?? 0)) * 1.1;
  const y = (v: number): number => PAD.top + (H - PAD.top - PAD.bottom) * (1 - v / max);
  let d = '';
  values.forEach((v, i) => {
    if (v === null) return;
    const x = PAD.left + (i + 0.5) * step;
    d += `${d && values[i - 1] !== null ? 'L' : 'M'}${x.toFixed(1)},${y(v).toFixed(1)}`;
  });
  // Below a second, in milliseconds: axis, tooltips and label alike.
  const inMs = max < 1;
  const value = (v: number): string => (inMs ? `${(v * 1_000).toFixed(1)} ms` : `${v.toFixed(3)} s`);
  const dots = values.map((v, i) =>
    v === null ? null : html`<circle class="dot" cx="${(PAD.left + (i + 0.5) * step).toFixed(1)}" cy="${y(v).toFixed(1)}" r="2">${timeText('title', series.points[i]!.at, series.range, ` — ${value(v)}`)}</circle>`,
  );
  return html`<svg class="chart" viewBox="0 0 ${W} ${H}" role="img" aria-label="Mean wait from due to start, ${inMs ? 'milliseconds' : 'seconds'}">
    ${inMs ? axis(max, 'ms', 1_000) : axis(max, 's')}<path class="line" d="${d}"/>${dots}${xLabels(series, step)}</svg>`;
}

export const chartLegend = raw(
  '<div class="legend"><span class="sw bar-succeeded"></span>succeeded <span class="sw bar-failed"></span>failed <span class="sw bar-cancelled"></span>cancelled</div>',
);
