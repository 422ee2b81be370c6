import { InvalidArgumentError } from 'commander';
import { parseId } from '../core/ids.js';
import { parseIsoDate } from '../core/dates.js';

export function parseIntOption(flag: string, min: number, max: number): (value: string) => number {
  return (value: string) => {
    if (!/^-?\d+$/.test(value.trim())) throw new InvalidArgumentError(`${flag} must be a whole number, got ${JSON.stringify(value)}`);
    const n = Number(value);
    if (n < min || n > max) throw new InvalidArgumentError(`${flag} must be between ${min} and ${max}, got ${n}`);
    return n;
  };
}

/**
 * A flag that takes one value: given twice it is refused, rather than
 * commander keeping the last (`pgq queues set q --concurrency 3
 * --concurrency 30` set 30 and said nothing).
 */
export function onceOption<T>(flag: string, parse: (value: string) => T): (value: string, previous: T | undefined) => T {
  return (value, previous) => {
    if (previous !== undefined) throw new InvalidArgumentError(`${flag} is given twice; it takes one value`);
    return parse(value);
  };
}

export function parseList(value: string): string[] {
  const items = value.split(',').map((s) => s.trim()).filter(Boolean);
  if (items.length === 0) throw new InvalidArgumentError('expected a comma-separated list, e.g. default,emails');
  return items;
}

/**
 * A JSON flag's value, boxed: commander takes a parser's `null` for "no
 * value" and stores `''` (`--payload null` was enqueued as the string "").
 */
export interface JsonFlag {
  readonly json: unknown;
}

export function parseJson(flag: string): (value: string) => JsonFlag {
  return (value: string) => {
    try {
      return { json: JSON.parse(value) as unknown };
    } catch (err) {
      throw new InvalidArgumentError(`${flag} is not valid JSON: ${err instanceof Error ? err.message : String(err)}`);
    }
  };
}

export function parseDate(flag: string): (value: string) => Date {
  return (value: string) => {
    const d = parseIsoDate(value);
    if (!d) throw new InvalidArgumentError(`${flag} must be an ISO 8601 date (2026-12-01, 2026-12-01T10:00Z), got ${JSON.stringify(value)}`);
    return d;
  };
}

/** A job or workflow id flag, refused by commander with the flag's name. */
export function parseIdFlag(flag: string, what: 'job' | 'workflow'): (value: string) => string {
  return (value: string) => {
    try {
      return parseId(value, flag, what);
    } catch (err) {
      throw new InvalidArgumentError(err instanceof Error ? err.message : String(err));
    }
  };
}

/** The base URL of a server this command listens on: an IPv6 host goes in brackets (`http://[::1]:9464`). */
export function httpBase(host: string, port: number): string {
  return `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
}
