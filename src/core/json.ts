import { ValidationError } from './errors.js';
import type { Json } from './types.js';

const MAX_DEPTH = 1_000;

/**
 * JSON text for a value bound for a `jsonb` column, or a ValidationError that
 * names `field`. Refuses what PostgreSQL or JSON would mangle or reject:
 * `\u0000` or a lone UTF-16 surrogate in a string or key, nesting deeper than
 * 1,000, cycles, BigInt, non-finite numbers, and JSON larger than `maxBytes`;
 * a value's `toJSON()` is checked for what it returns. An object referenced
 * twice (not inside itself) is fine: JSON writes it twice.
 */
export function toJsonText(value: unknown, field: string, maxBytes: number): string {
  return toJson(value, field, maxBytes).text;
}

/**
 * As `toJsonText`, and whether the JSON reads back as something other than
 * `value`: a `toJSON()` (a Date becomes its ISO text), an object that is not
 * a plain object or array (a Map becomes `{}`), `undefined`, a function or a
 * symbol (left out of an object, null in an array), a hole in an array, or
 * `undefined` itself (null).
 */
export function toJson(value: unknown, field: string, maxBytes: number): { text: string; changed: boolean } {
  const changed = checkJsonValue(value, field, maxBytes);
  let text: string | undefined;
  try {
    text = JSON.stringify(value === undefined ? null : value);
  } catch (err) {
    throw new ValidationError(field, `is not JSON-serialisable (${err instanceof Error ? err.message : String(err)})`);
  }
  if (text === undefined) throw new ValidationError(field, 'is not JSON-serialisable');
  // The walk above and JSON.stringify each read the value: a getter or a
  // toJSON() may answer the second time with what the first was checked not
  // to be. What is stored is the text: one that holds an escape jsonb
  // refuses is checked again, as parsed back, which names the field.
  if (REFUSED_ESCAPE.test(text)) checkJsonValue(JSON.parse(text), field, maxBytes);
  const bytes = Buffer.byteLength(text, 'utf8');
  if (bytes > maxBytes) {
    throw new ValidationError(field, `is ${bytes} bytes of JSON, over the limit of ${maxBytes} bytes`);
  }
  return { text, changed };
}

/**
 * One JSON array of the values whose JSON texts are `texts`: the texts as
 * they are, between brackets and commas. Statements that insert many
 * payloads (or metas), and those that write many outcomes (results, errors,
 * notes, metas), take them so, split by `json_array_elements`, rather
 * than as a `jsonb[]` parameter: pg writes an array parameter's text by
 * escaping every `"` and `\` of every element with two regular-expression
 * replaces, and JSON is full of both (every key is quoted; a quote in a
 * string is escaped already): an enqueueMany of 20 payloads of 1 MB of
 * quotes took 16 s, 10 s of it the client's CPU (as one JSON array, 1.3 s
 * and 0.3 s). The array is split as `json`, bounded like any parameter
 * (1 GB), not as `jsonb`, whose whole document must fit in 256 MiB (44 MB of
 * JSON of small numbers takes that). Joined by `+=`: `Array.prototype.join`
 * took twice as long for 1,000 payloads of 10 KB.
 */
export function jsonArrayText(texts: readonly string[]): string {
  let list = '[';
  for (let i = 0; i < texts.length; i += 1) list += i === 0 ? texts[i] : `,${texts[i]}`;
  return `${list}]`;
}

/** In JSON text, an escape that may be a `\u0000` or a lone surrogate (or a backslash before such letters: the check that follows tells). */
const REFUSED_ESCAPE = /\\u(?:0000|[dD][89a-fA-F])/;

/** A UTF-16 surrogate without its pair: JSON.stringify writes it as `\udXXX`, which jsonb refuses. */
const LONE_SURROGATE = /\p{Cs}/u;

/**
 * True when `text` holds a lone UTF-16 surrogate. `pg` sends such a string
 * with U+FFFD in its place, so two different strings could be stored as one
 * (two unique keys, a task name that no longer matches its task): names and
 * keys refuse them, as jsonb does.
 */
export function hasLoneSurrogate(text: string): boolean {
  return LONE_SURROGATE.test(text);
}

export const LONE_SURROGATE_MESSAGE = 'must not contain a lone UTF-16 surrogate (half of a character)';

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

/** Walks what JSON.stringify will write; throws a ValidationError at the first value it cannot store; true when JSON changes the value (see `toJson`). */
function checkJsonValue(root: unknown, field: string, maxBytes: number): boolean {
  // Depth first, with an exit entry after each container's children, so
  // `ancestors` holds exactly the containers on the path to the value.
  // `key` is what JSON.stringify passes to a toJSON(); `replaced` marks what
  // a toJSON() returned (JSON.stringify does not call toJSON on that again).
  type Entry = { value: unknown; path: string; depth: number; key: string; replaced?: true } | { leave: object };
  const stack: Entry[] = [{ value: root, path: field, depth: 0, key: '' }];
  const ancestors = new Set<object>();
  let changed = root === undefined;
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
      const toJSON = (value as { toJSON?: unknown }).toJSON;
      if (!entry.replaced && typeof toJSON === 'function') {
        // What is stored is what toJSON() returns: check that instead.
        let replacement: unknown;
        try {
          replacement = toJSON.call(value, entry.key);
        } catch (err) {
          throw new ValidationError(path, `is not JSON-serialisable (its toJSON() threw: ${err instanceof Error ? err.message : String(err)})`);
        }
        changed = true;
        stack.push({ value: replacement, path, depth, key: entry.key, replaced: true });
        continue;
      }
      ancestors.add(value);
      stack.push({ leave: value });
      if (Array.isArray(value)) {
        for (let i = 0; i < value.length; i += 1) {
          if (!(i in value)) {
            changed = true; // a hole: null in JSON
            continue;
          }
          const item: unknown = value[i];
          if (item === undefined || typeof item === 'function' || typeof item === 'symbol') changed = true;
          stack.push({ value: item, path: `${path}[${i}]`, depth: depth + 1, key: String(i) });
        }
      } else {
        const proto: unknown = Object.getPrototypeOf(value);
        if (proto !== Object.prototype && proto !== null) changed = true; // a Map, a Set, a class instance: JSON keeps only its own fields
        for (const [key, item] of Object.entries(value)) {
          checkString(key, path, 'has a key containing');
          if (item === undefined || typeof item === 'function' || typeof item === 'symbol') changed = true;
          stack.push({ value: item, path: `${path}.${key}`, depth: depth + 1, key });
        }
      }
    }
  }
  return changed;
}

type NotJson = undefined | void | symbol | ((...args: never[]) => unknown);

/**
 * The type a value of type `T` reads back as once stored as JSON (as
 * `JSON.parse(JSON.stringify(value))` would give it), which is what a job's
 * stored result is, and what a workflow step is given from its parents: a
 * `Date` (anything with `toJSON()`) is what `toJSON()` returns; `undefined`,
 * a function or a symbol is null on its own or in a list, and an object's
 * key that may hold one is optional (JSON leaves it out); a `Map` or `Set`
 * is an empty object. `unknown` and `any` stay as they are, and so does a
 * type that is JSON already. A type cannot tell a getter from a field: a
 * class instance keeps both (JSON keeps its own enumerable fields only).
 */
export type Jsonified<T> = unknown extends T ? T : JsonifiedValue<T>;

// JSON as it is, a recursive JSON type among them, is left alone, not walked.
type JsonifiedValue<T> = T extends LooseJson
  ? T
  : T extends { toJSON(...args: never[]): infer J }
    ? Jsonified<J>
    : T extends NotJson
      ? null
      : T extends bigint
        ? never
        : T extends ReadonlyMap<unknown, unknown> | ReadonlySet<unknown>
          ? Record<string, never>
          : T extends readonly unknown[]
            ? { [K in keyof T]: Jsonified<T[K]> }
            : T extends object
              ? Flat<
                  { [K in keyof T as JsonKey<T, K, false>]: Jsonified<T[K]> } & {
                    [K in keyof T as JsonKey<T, K, true>]?: Jsonified<Exclude<T[K], NotJson>>;
                  }
                >
              : never;

/**
 * JSON values, keys that may hold undefined among them: what `JsonifiedValue`
 * passes through unchanged. Recursive JSON types (type-fest's, Supabase's
 * `{ [key: string]: Json | undefined }`) must not be walked: tsc gives up on
 * them. So a type alias of that shape keeps such a key required (typed with
 * undefined, which reads right), where an interface, never assignable to an
 * index signature, is walked and gets it optional.
 */
type LooseJson = string | number | boolean | null | readonly LooseJson[] | { readonly [key: string]: LooseJson | undefined };

/** One type of an intersection's keys. */
type Flat<T> = { [K in keyof T]: T[K] } & {};

/**
 * An object's key as JSON keeps it (a string; a number as its text), and
 * whether it is optional there: a key whose value may be undefined, a
 * function or a symbol is left out when it is; one that only ever is, is
 * never there. `unknown` and `any` keep their key as it was.
 */
type JsonKey<T, K extends keyof T, Optional extends boolean> = K extends symbol
  ? never
  : unknown extends T[K]
    ? Optional extends false ? JsonKeyName<K> : never
    : [Exclude<T[K], NotJson>] extends [never]
      ? never
      : ([Extract<T[K], NotJson>] extends [never] ? false : true) extends Optional
        ? JsonKeyName<K>
        : never;

type JsonKeyName<K> = K extends string ? K : K extends number ? `${K}` : never;
