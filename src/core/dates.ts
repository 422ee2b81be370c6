/**
 * A day after the earliest instant PostgreSQL's timestamptz holds
 * (4714-11-24 00:00 UTC BC): pg sends a Date in the process's time zone,
 * whose offset that far back is local mean time (New York: -04:56:02).
 * JavaScript's latest date (year 275760) is within the range.
 */
const EARLIEST_MS = Date.UTC(-4713, 10, 25);

/** Why `value` cannot be stored as a timestamptz, or null if it can. */
export function dateProblem(value: unknown): string | null {
  if (!(value instanceof Date) || Number.isNaN(value.getTime())) return 'must be a valid Date';
  if (value.getTime() < EARLIEST_MS) return 'must be a date PostgreSQL can store (from 4714 BC)';
  return null;
}

/** ISO 8601 as people type it: a day, optionally a time (to the second or finer) and a zone. */
const ISO_DATE = /^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?)?$/i;

/**
 * A date written in ISO 8601 (`2026-12-01`, `2026-12-01T10:00Z`,
 * `2026-12-01 10:00:00+01:00`; with no zone, a day is UTC and a time is
 * local, as JavaScript reads them), or null. Looser text is not a date here:
 * JavaScript reads `45` as the year 2045 and `7` as July 2001.
 */
export function parseIsoDate(text: string): Date | null {
  const trimmed = text.trim();
  if (!ISO_DATE.test(trimmed)) return null;
  const date = new Date(trimmed.replace(' ', 'T'));
  if (Number.isNaN(date.getTime())) return null;
  // JavaScript rolls a day past the month's end over (2026-02-31 is 3 March): no such day, no date.
  const [year, month, day] = trimmed.slice(0, 10).split('-').map(Number) as [number, number, number];
  return day <= new Date(Date.UTC(year, month, 0)).getUTCDate() && month >= 1 && month <= 12 ? date : null;
}
