import { ValidationError } from './errors.js';

const MAX_DEPTH = 1_000;

/**
 * JSON text for a value bound for a `jsonb` column, or a ValidationError that
 * names `field`. Refuses what PostgreSQL or JSON would mangle or reject:
 * `\u0000` in a string or key, nesting deeper than 1,000, cycles, BigInt,
 * non-finite numbers, and JSON larger than `maxBytes`.
 */
export function toJsonText(value: unknown, field: string, maxBytes: number): string {
  checkJsonValue(value, field);
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

function checkJsonValue(root: unknown, field: string): void {
  const stack: { value: unknown; path: string; depth: number }[] = [{ value: root, path: field, depth: 0 }];
  const seen = new Set<object>();
  while (stack.length > 0) {
    const { value, path, depth } = stack.pop()!;
    if (depth > MAX_DEPTH) throw new ValidationError(path, `nests deeper than ${MAX_DEPTH} levels`);
    if (typeof value === 'string') {
      if (value.includes('\u0000')) throw new ValidationError(path, 'contains \\u0000, which PostgreSQL cannot store in jsonb');
    } else if (typeof value === 'number') {
      if (!Number.isFinite(value)) throw new ValidationError(path, `is ${value}, which JSON cannot represent`);
    } else if (typeof value === 'bigint') {
      throw new ValidationError(path, 'is a BigInt, which JSON cannot represent (use a string)');
    } else if (value !== null && typeof value === 'object') {
      if (seen.has(value)) throw new ValidationError(path, 'contains a cycle');
      if (typeof (value as { toJSON?: unknown }).toJSON === 'function') continue;
      seen.add(value);
      if (Array.isArray(value)) {
        value.forEach((item, i) => stack.push({ value: item, path: `${path}[${i}]`, depth: depth + 1 }));
      } else {
        for (const [key, item] of Object.entries(value)) {
          if (key.includes('\u0000')) throw new ValidationError(path, 'has a key containing \\u0000');
          stack.push({ value: item, path: `${path}.${key}`, depth: depth + 1 });
        }
      }
    }
  }
}
