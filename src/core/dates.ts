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
