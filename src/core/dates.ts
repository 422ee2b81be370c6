/** The earliest instant PostgreSQL's timestamptz holds: 4714-11-24 00:00 UTC BC. JavaScript's latest (275760) is within its range. */
const EARLIEST_MS = Date.UTC(-4713, 10, 24);

/** Why `value` cannot be stored as a timestamptz, or null if it can. */
export function dateProblem(value: unknown): string | null {
  if (!(value instanceof Date) || Number.isNaN(value.getTime())) return 'must be a valid Date';
  if (value.getTime() < EARLIEST_MS) return 'must be a date PostgreSQL can store (from 4714 BC)';
  return null;
}
