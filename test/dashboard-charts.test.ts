/** The console's server-drawn charts: the wait chart reads in milliseconds below a second (axis, tooltips, label). */
import { describe, expect, it } from 'vitest';
import { waitChart } from '../src/dashboard/pages/charts.js';
import type { ThroughputSeries } from '../src/inspection/queue-stats.js';

function series(waits: (number | null)[]): ThroughputSeries {
  const start = Date.UTC(2026, 11, 7, 12, 0);
  return {
    range: 'hour',
    bucketSeconds: 60,
    points: waits.map((w, i) => ({ at: new Date(start + i * 60_000), succeeded: 1, failed: 0, cancelled: 0, meanWaitSeconds: w })),
  };
}

const ticks = (svg: string): string[] => [...svg.matchAll(/<text class="tick"[^>]*text-anchor="end">([^<]*)<\/text>/g)].map((m) => m[1]!);

describe('waitChart', () => {
  it('labels an axis under a second in milliseconds (a millisecond wait read 0.0011s, too wide for the margin)', () => {
    const svg = String(waitChart(series([0.001, null, 0.0005])));
    expect(ticks(svg)).toEqual(['0ms', '0.55ms', '1.1ms']);
    // The tooltips and the label in the same unit.
    expect([...svg.matchAll(/data-rest=" — ([^"]*)"/g)].map((m) => m[1])).toEqual(['1.0 ms', '0.5 ms']);
    expect(svg).toContain('aria-label="Mean wait from due to start, milliseconds"');
  });

  it('labels an axis of a second or more in seconds', () => {
    const svg = String(waitChart(series([12, 3, null])));
    expect(ticks(svg)).toEqual(['0s', '6.6s', '13.2s']);
    expect([...svg.matchAll(/data-rest=" — ([^"]*)"/g)].map((m) => m[1])).toEqual(['12.000 s', '3.000 s']);
  });
});
