/**
 * PostgreSQL's `int` (int4) range: priorities, attempts, limits and the
 * millisecond columns are `int`, so every number bound for one is checked
 * against these bounds, here.
 */
import { z } from 'zod';

export const INT32_MIN = -2_147_483_648;
export const INT32_MAX = 2_147_483_647;

/** A whole number from `min` (default: the int4 minimum) up to the int4 maximum. */
export function int32(min = INT32_MIN): z.ZodNumber {
  return z.number().int().min(min).max(INT32_MAX);
}

/** Whether `n` is a whole number from `min` up to the int4 maximum. */
export function isInt32(n: number, min = INT32_MIN): boolean {
  return Number.isInteger(n) && n >= min && n <= INT32_MAX;
}
