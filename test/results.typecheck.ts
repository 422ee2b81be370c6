/**
 * Type-level tests of `Jsonified` (a task's result as stored and read back),
 * checked by `tsc --noEmit` (never run). Each `@ts-expect-error` line must
 * fail to compile; each `Equal` must hold both ways.
 */
import type { Jsonified } from '../src/index.js';

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
const holds = <T extends true>(value: T): T => value;

interface User {
  id: string;
  name: string;
}

// A Date is its text; a key that may hold undefined is optional (JSON leaves it out when it does).
holds<Equal<Jsonified<{ at: Date; user: User | undefined; note?: string }>, { at: string; user?: User; note?: string }>>(true);
// Functions and symbols: left out of objects (the key goes), null in lists and on their own.
holds<Equal<Jsonified<{ n: number; f: () => void; maybe: string | (() => void) }>, { n: number; maybe?: string }>>(true);
holds<Equal<Jsonified<(string | undefined)[]>, (string | null)[]>>(true);
holds<Equal<Jsonified<undefined>, null>>(true);
holds<Equal<Jsonified<void>, null>>(true);
// unknown and any stay, also inside lists and tuples (unknown[] was never[]).
holds<Equal<Jsonified<unknown>, unknown>>(true);
holds<Equal<Jsonified<{ items: unknown[]; pair: [unknown, Date] }>, { items: unknown[]; pair: [unknown, string] }>>(true);
holds<Equal<Jsonified<readonly unknown[]>, readonly unknown[]>>(true);
holds<Equal<Jsonified<{ a: unknown }>, { a: unknown }>>(true);
// Maps and Sets are empty objects.
holds<Equal<Jsonified<{ m: Map<string, number> }>, { m: Record<string, never> }>>(true);
// An interface's key that may hold undefined becomes optional; a type alias of JSON values (and undefined) passes
// through as it is, its key required but typed with undefined: reading it is right either way. Walking such aliases
// ran tsc out of depth on recursive JSON types (below).
type AliasShape = { x: string | undefined; n: number; user: { name: string; email: string | undefined } };
interface InterfaceShape {
  x: string | undefined;
  n: number;
  user: { name: string; email: string | undefined };
}
holds<Equal<Jsonified<AliasShape>, AliasShape>>(true);
holds<Equal<Jsonified<InterfaceShape>, { x?: string; n: number; user: { name: string; email: string | undefined } }>>(true);
// Recursive JSON types pass through as they are, type-fest's JsonValue (optional keys) among them.
type JsonObject = { [Key in string]: JsonValue } & { [Key in string]?: JsonValue | undefined };
type JsonArray = JsonValue[] | readonly JsonValue[];
type JsonPrimitive = string | number | boolean | null;
type JsonValue = JsonPrimitive | JsonObject | JsonArray;
holds<Equal<Jsonified<{ config: JsonValue }>, { config: JsonValue }>>(true);
// Supabase's generated Json, and one with optional mapped keys.
type SupabaseJson = string | number | boolean | null | { [key: string]: SupabaseJson | undefined } | SupabaseJson[];
holds<Equal<Jsonified<{ data: SupabaseJson }>, { data: SupabaseJson }>>(true);
type OptionalJson = string | number | null | OptionalJson[] | { readonly [K in string]?: OptionalJson };
holds<Equal<Jsonified<{ data: OptionalJson }>, { data: OptionalJson }>>(true);
interface Tree {
  label: string;
  at: Date;
  children: Tree[];
}
const tree = null as unknown as Jsonified<Tree>;
const label: string = tree.children[0]!.children[0]!.label;
const at: string = tree.children[0]!.at;
void label;
void at;

export function lookups(user: Jsonified<{ user: User | undefined }>): string | undefined {
  // @ts-expect-error user may be missing: JSON left it out
  const name: string = user.user.name;
  void name;
  return user.user?.name;
}
