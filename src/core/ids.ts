/**
 * Row ids (jobs, workflows) are `bigint` in PostgreSQL and strings of digits
 * in the API. Every id that comes from outside is read here.
 */
import { ValidationError } from './errors.js';

const DIGITS = /^[0-9]{1,19}$/;
/** The largest `bigint`: a longer string of digits is no id. */
const MAX_ID = 9223372036854775807n;

/** An id as a string of digits (a positive safe integer is accepted too), or a ValidationError naming `field`. */
export function parseId(id: unknown, field: string, what: 'job' | 'workflow'): string {
  if (typeof id === 'number' && Number.isSafeInteger(id) && id > 0) return String(id);
  if (typeof id !== 'string' || !DIGITS.test(id)) {
    throw new ValidationError(field, `${JSON.stringify(id)} is not a ${what} id (a string of digits)`);
  }
  if (id.length === 19 && BigInt(id) > MAX_ID) throw new ValidationError(field, `${JSON.stringify(id)} is not a ${what} id (larger than any id can be)`);
  return id;
}

/** A job id, or a ValidationError naming `field`. */
export function parseJobId(id: unknown, field = 'id'): string {
  return parseId(id, field, 'job');
}

/** A workflow id, given as such or as the record that carries it, or a ValidationError naming `field` (default `workflowId`). */
export function parseWorkflowId(id: unknown, field = 'workflowId'): string {
  const value = id !== null && typeof id === 'object' && 'id' in id ? (id as { id: unknown }).id : id;
  return parseId(value, field, 'workflow');
}
