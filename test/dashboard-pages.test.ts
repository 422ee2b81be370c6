/** Parts of the console's pages drawn from a snapshot. */
import { describe, expect, it } from 'vitest';
import { finishedCountNote } from '../src/dashboard/pages/overview.js';
import type { OverviewSnapshot } from '../src/inspection/queue-stats.js';

const snapshot = (agoMs: number): OverviewSnapshot => {
  const at = new Date(Date.UTC(2026, 11, 7, 13, 0, 0));
  return { queues: [], estimatedJobs: 0, at, finishedCountedAt: new Date(at.getTime() - agoMs) };
};

describe('finishedCountNote', () => {
  it('says when failed and cancelled jobs were counted only when that is ten seconds or more before the snapshot', () => {
    expect(finishedCountNote(snapshot(0))).toBeNull();
    expect(finishedCountNote(snapshot(9_999))).toBeNull();
    const note = String(finishedCountNote(snapshot(10_000)));
    expect(note).toContain('Failed and cancelled jobs as counted');
    expect(note).toContain('datetime="2026-12-07T12:59:50.000Z"');
  });
});
