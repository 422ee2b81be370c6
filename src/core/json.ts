import { ValidationError } from './errors.js';

const MAX_DEPTH = 1_000;

/**
 * JSON text for a value bound for a `jsonb` column, or a ValidationError that
 * names `field`. Refuses what PostgreSQL or JSON would mangle or reject:
 * `\u0000` or a lone UTF-16 surrogate in a string or key, nesting deeper than
 * 1,000, cycles, BigInt, non-finite numbers, and JSON larger than `maxBytes`.
 * An object referenced twice (not inside itself) is fine: JSON writes it twice.
 */
export function toJsonText(value: unknown, field: string, maxBytes: number): string {
  checkJsonValue(value, field, maxBytes);
  let text: string | undefined;
  try {
    text = JSON.stringify(value === undefined ? null : value);
  } catch (err) {
    throw new ValidationError(field, `is not JSON-serialisable (${err instanceof Error ? err.message : String(err)})`);
  }
  if (text === undefined) throw new ValidationError(field, 'is not JSON-serialisable');
  const bytes = Buffer.byteLength(text, 'utf8');
  if (bytes > maxBytes) {
    throw new ValidationError(field, `is ${bytes} bytes of JSON, over the limit of ${maxBytes} bytes`);
  }
  return text;
}

/** A UTF-16 surrogate without its pair: JSON.stringify writes it as `\udXXX`, which jsonb refuses. */
const LONE_SURROGATE = /\p{Cs}/u;

/** `text` with every lone surrogate replaced by U+FFFD, so jsonb takes it (text pgq writes itself, such as a caught error's message). */
export function wellFormed(text: string): string {
  return LONE_SURROGATE.test(text) ? text.replace(/\p{Cs}/gu, '\uFFFD') : text;
}

/** At most `max` UTF-16 units of `text`, never ending in half of a surrogate pair. */
export function clipText(text: string, max: number): string {
  if (text.length <= max) return text;
  const code = text.charCodeAt(max - 1);
  return text.slice(0, code >= 0xd800 && code <= 0xdbff ? max - 1 : max);
}

function checkString(value: string, path: string, what: string): void {
  if (value.includes('\u0000')) throw new ValidationError(path, `${what} \\u0000, which PostgreSQL cannot store in jsonb`);
  if (LONE_SURROGATE.test(value)) throw new ValidationError(path, `${what} a lone UTF-16 surrogate (half of a character), which PostgreSQL cannot store in jsonb`);
}

function checkJsonValue(root: unknown, field: string, maxBytes: number): void {
  // Depth first, with an exit entry after each container's children, so
  // `ancestors` holds exactly the containers on the path to the value.
  type Entry = { value: unknown; path: string; depth: number } | { leave: object };
  const stack: Entry[] = [{ value: root, path: field, depth: 0 }];
  const ancestors = new Set<object>();
  // Every value visited writes at least one byte of JSON: past maxBytes, the
  // JSON is over the limit (and a value shared many times over does not make
  // this walk, or JSON.stringify after it, run for long).
  let visited = 0;
  while (stack.length > 0) {
    const entry = stack.pop()!;
    if ('leave' in entry) {
      ancestors.delete(entry.leave);
      continue;
    }
    const { value, path, depth } = entry;
    if (++visited > maxBytes) throw new ValidationError(field, `is over the limit of ${maxBytes} bytes of JSON`);
    if (depth > MAX_DEPTH) throw new ValidationError(path, `nests deeper than ${MAX_DEPTH} levels`);
    if (typeof value === 'string') {
      checkString(value, path, 'contains');
    } else if (typeof value === 'number') {
      if (!Number.isFinite(value)) throw new ValidationError(path, `is ${value}, which JSON cannot represent`);
    } else if (typeof value === 'bigint') {
      throw new ValidationError(path, 'is a BigInt, which JSON cannot represent (use a string)');
    } else if (value !== null && typeof value === 'object') {
      if (ancestors.has(value)) throw new ValidationError(path, 'contains a cycle');
      if (typeof (value as { toJSON?: unknown }).toJSON === 'function') continue;
      ancestors.add(value);
      stack.push({ leave: value });
      if (Array.isArray(value)) {
        value.forEach((item, i) => stack.push({ value: item, path: `${path}[${i}]`, depth: depth + 1 }));
      } else {
        for (const [key, item] of Object.entries(value)) {
          checkString(key, path, 'has a key containing');
          stack.push({ value: item, path: `${path}.${key}`, depth: depth + 1 });
        }
      }
    }
  }
}
