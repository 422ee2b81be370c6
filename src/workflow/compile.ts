/**
 * Turns a flow (steps, chains, groups, `after` edges) into the rows of one
 * workflow: its steps in topological order, each with its parents, where
 * its input comes from, and its validated payload and options. Everything is
 * checked here, before anything is written; errors name the step.
 *
 * Placement: a chain places each part after the previous one's exits; a
 * group places every member after the same upstream, and its exits are the
 * members' exits in order. A step's input is, first match wins:
 * 1. its own payload (its parents only order it);
 * 2. the list of its `after(...)` dependencies' results (a step placed before
 *    it in a chain only orders it);
 * 3. what runs before it: one result, or the list of a group's results.
 */
import { z } from 'zod';
import { ValidationError } from '../core/errors.js';
import { storedTexts, validatePayloads } from '../core/validate-payloads.js';
import { isTask, NAME_LIMIT, nameSchema, zodToValidationError } from '../task.js';
import { MAX_CALL_PAYLOAD_CHARS, jobOptionsShape, payloadCharsOver } from '../enqueue.js';
import { MAX_WORKFLOW_STEPS, type AnyFlow, type ParentFailurePolicy, type StepSpec } from './flow.js';


export interface CompiledParent {
  /** Index of the parent in `CompiledWorkflow.steps`. */
  index: number;
  /** Index of its result in the input; null when it only orders the step. */
  position: number | null;
}

export interface CompiledStep {
  name: string;
  task: string;
  queue: string;
  /** JSON text: the payload, or `null` for an input made from the parents when the step unblocks. */
  payloadText: string;
  priority: number;
  maxAttempts: number;
  timeoutMs: number | null;
  backoffBaseMs: number | null;
  backoffMaxMs: number | null;
  parents: CompiledParent[];
  /** Null for a step without parents. */
  passResults: 'none' | 'one' | 'list' | null;
  onParentFailure: ParentFailurePolicy | null;
}

export interface CompiledWorkflow {
  name: string;
  /** Parents always come before their children. */
  steps: CompiledStep[];
  /** Steps whose results make the workflow's result. */
  outputs: number[];
  /** True when the result is the list of the outputs' results. */
  outputIsList: boolean;
}

interface Placement {
  exits: number[];
  many: boolean;
}

interface Placed {
  spec: StepSpec;
  /** Exits of what runs before it. */
  upstream: number[];
  upstreamMany: boolean;
  /** Exits of its `after(...)` dependencies, in order. */
  after: number[];
}

const stepOptionsSchema = z.object(jobOptionsShape).strict();

/**
 * Validates a flow and lays it out as workflow rows. Rejects with a
 * ValidationError naming the bad step or field. The payloads are awaited
 * only when a task's validator answers with a promise.
 */
export async function compileWorkflow(flow: unknown, options: { name?: string | undefined; maxPayloadBytes: number }): Promise<CompiledWorkflow> {
  const layout = new Layout();
  const root = layout.place(flow, null, 'workflow');
  layout.resolveAfter();
  const placed = layout.placed;
  const names = stepNames(placed);
  // Before the edges are built: two big groups in a row would be every pair.
  let edges = 0;
  for (const p of placed) edges += p.upstream.length + p.after.length;
  if (edges > MAX_WORKFLOW_EDGES) {
    throw new ValidationError(
      'workflow',
      `has ${edges} dependencies between its steps, more than ${MAX_WORKFLOW_EDGES}: a group after a group waits on every pair of members; put one step between them (a group followed by a step, then the next group)`,
    );
  }
  const parents = placed.map((p, i) => parentsOf(p, names[i]!));
  const order = topologicalOrder(parents, names);
  const indexOf = new Map(order.map((placedIndex, i) => [placedIndex, i]));
  const fieldOf = (i: number): string => `steps[${JSON.stringify(names[i]!)}]`;
  const withPayload = order.filter((i) => placed[i]!.spec.hasPayload);
  const checks = withPayload.map((i) => ({ schema: placed[i]!.spec.task.schema, value: placed[i]!.spec.payload, field: `${fieldOf(i)}.payload` }));
  const checked = validatePayloads(checks);
  const values = Array.isArray(checked) ? checked : await checked;
  const stored = storedTexts(checks, values, options.maxPayloadBytes);
  const texts = Array.isArray(stored) ? stored : await stored;
  checkWorkflowSize(texts);
  const payloadTexts = new Map(withPayload.map((i, k) => [i, texts[k]!]));
  const steps = order.map((i) => {
    const p = placed[i]!;
    const field = fieldOf(i);
    const task = p.spec.task;
    const o = parseStepOptions(p.spec.options, `${field}.options`);
    const mine = parents[i]!.list.map((parent) => ({ index: indexOf.get(parent.index)!, position: parent.position }));
    if (p.spec.onParentFailure !== 'cancel' && p.spec.onParentFailure !== 'run') {
      throw new ValidationError(`${field}.onParentFailure`, 'must be "cancel" or "run"');
    }
    return {
      name: names[i]!,
      task: task.name,
      queue: o.queue ?? task.queue,
      payloadText: payloadTexts.get(i) ?? 'null',
      priority: o.priority ?? task.priority,
      maxAttempts: o.maxAttempts ?? task.maxAttempts,
      timeoutMs: o.timeoutMs ?? null,
      backoffBaseMs: o.backoff?.baseMs ?? null,
      backoffMaxMs: o.backoff?.maxMs ?? null,
      parents: mine,
      passResults: mine.length === 0 ? null : parents[i]!.pass,
      onParentFailure: mine.length === 0 ? null : p.spec.onParentFailure,
    } satisfies CompiledStep;
  });
  const name = options.name ?? placed[0]!.spec.task.name;
  const parsedName = nameSchema.safeParse(name);
  if (!parsedName.success) throw zodToValidationError(parsedName.error, 'options.name');
  return { name, steps, outputs: root.exits.map((i) => indexOf.get(i)!), outputIsList: root.many };
}

/** The placement passes: the tree first, then the `after` edges. */
class Layout {
  readonly placed: Placed[] = [];
  readonly #byFlow = new Map<object, Placement>();

  place(flow: unknown, upstream: Placement | null, path: string): Placement {
    if (flow === null || typeof flow !== 'object' || !('kind' in flow)) {
      throw new ValidationError(path, 'must be a step(), chain(), group() or chord()');
    }
    if (this.#byFlow.has(flow)) {
      throw new ValidationError(path, 'this step (or chain, or group) object appears twice in the workflow; call step() again for a second job');
    }
    const f = flow as AnyFlow & { spec?: StepSpec; parts?: readonly unknown[]; members?: readonly unknown[] };
    let placement: Placement;
    if (f.kind === 'step' && f.spec) {
      if (!isTask(f.spec.task)) throw new ValidationError(`${path}.task`, 'must be a task made by defineTask');
      if (this.placed.length >= MAX_WORKFLOW_STEPS) {
        throw new ValidationError('workflow', `has more than ${MAX_WORKFLOW_STEPS} steps; split it into several workflows`);
      }
      this.placed.push({ spec: f.spec, upstream: upstream?.exits ?? [], upstreamMany: upstream?.many ?? false, after: [] });
      placement = { exits: [this.placed.length - 1], many: false };
    } else if (f.kind === 'chain' && Array.isArray(f.parts)) {
      placement = this.#placeChain(f.parts, upstream, path);
    } else if (f.kind === 'group' && Array.isArray(f.members)) {
      if (f.members.length === 0) throw new ValidationError(path, 'group() needs at least one member');
      const exits: number[] = [];
      f.members.forEach((member, i) => {
        const inner = this.place(member, upstream, `${path}.group[${i}]`);
        if (inner.many) {
          throw new ValidationError(`${path}.group[${i}]`, 'ends in a group; a group member must end in one step (wrap it: chord(innerGroup, step(...)))');
        }
        exits.push(...inner.exits);
      });
      placement = { exits, many: true };
    } else {
      throw new ValidationError(path, 'must be a step(), chain(), group() or chord()');
    }
    this.#byFlow.set(flow, placement);
    return placement;
  }

  /**
   * A chain's parts in order, each after the previous one's exits. Chains
   * nested in it are walked with a stack of their own rather than by
   * recursion: a long chain is built by nesting (`chain` types 8 links per
   * call), `steps.reduce((c, s) => chain(c, s))` nests as deep as it is long,
   * and a recursion that deep ended the enqueue with "Maximum call stack
   * size exceeded" (10,000 steps, a fifth of the limit).
   */
  #placeChain(parts: readonly unknown[], upstream: Placement | null, path: string): Placement {
    if (parts.length === 0) throw new ValidationError(path, 'chain() needs at least one step');
    const stack: { parts: readonly unknown[]; flow: object | null; path: string; next: number }[] = [{ parts, flow: null, path, next: 0 }];
    // The chains on the stack (a lookup, not a search of the stack: that was quadratic in the nesting, 10 s at 50,000 steps).
    const open = new Set<object>();
    let current = upstream;
    while (stack.length > 0) {
      const top = stack.at(-1)!;
      if (top.next === top.parts.length) {
        stack.pop();
        if (top.flow !== null) {
          open.delete(top.flow);
          this.#byFlow.set(top.flow, current!);
        }
        continue;
      }
      const i = top.next++;
      const part = top.parts[i];
      const partPath = `${top.path}.chain[${i}]`;
      const inner = part !== null && typeof part === 'object' && (part as { kind?: unknown }).kind === 'chain' ? (part as { parts?: unknown }).parts : undefined;
      if (Array.isArray(inner)) {
        if (this.#byFlow.has(part as object) || open.has(part as object)) {
          throw new ValidationError(partPath, 'this step (or chain, or group) object appears twice in the workflow; call step() again for a second job');
        }
        if (inner.length === 0) throw new ValidationError(partPath, 'chain() needs at least one step');
        open.add(part as object);
        stack.push({ parts: inner, flow: part as object, path: partPath, next: 0 });
      } else {
        current = this.place(part, current, partPath);
      }
    }
    return current!;
  }

  /** Links every `after(...)` dependency, placing the ones the tree does not hold as roots of their own. */
  resolveAfter(): void {
    for (let i = 0; i < this.placed.length; i += 1) {
      const p = this.placed[i]!;
      const seen = new Set<number>();
      p.spec.after.forEach((dep, j) => {
        const path = `steps[${i}].after[${j}]`;
        const placement = (dep !== null && typeof dep === 'object' && this.#byFlow.get(dep)) || this.place(dep, null, path);
        if (placement.many) throw new ValidationError(path, 'ends in a group; after() takes flows that end in one step (use chord)');
        const exit = placement.exits[0]!;
        if (seen.has(exit)) throw new ValidationError(path, 'names the same dependency twice');
        if (exit === i) throw new ValidationError(path, 'a step cannot run after itself');
        seen.add(exit);
        p.after.push(exit);
      });
    }
  }
}

/** Refuses a workflow whose steps' payloads together are too large for its one statement (as enqueueMany refuses a call). */
function checkWorkflowSize(texts: readonly string[]): void {
  const total = payloadCharsOver(texts);
  if (total !== undefined) {
    throw new ValidationError(
      'workflow',
      `its steps' payloads are ${total} characters of JSON in all, over the ${MAX_CALL_PAYLOAD_CHARS} (200 MiB) one workflow sends in its statement: split it into several workflows`,
    );
  }
}

/** Given names, else the task's name — `task#n` (1-based, in placement order) when the task has several unnamed steps. */
function stepNames(placed: readonly Placed[]): string[] {
  const unnamed = new Map<string, number>();
  for (const p of placed) if (p.spec.name === undefined) unnamed.set(p.spec.task.name, (unnamed.get(p.spec.task.name) ?? 0) + 1);
  const seen = new Map<string, number>();
  const names = placed.map((p, i) => {
    if (p.spec.name !== undefined) {
      const parsed = nameSchema.safeParse(p.spec.name);
      if (!parsed.success) throw zodToValidationError(parsed.error, `steps[${i}].name`);
      return parsed.data;
    }
    const task = p.spec.task.name;
    if (unnamed.get(task) === 1) return task;
    const n = (seen.get(task) ?? 0) + 1;
    seen.set(task, n);
    const name = `${task}#${n}`;
    if (name.length > NAME_LIMIT) {
      throw new ValidationError(`steps[${i}].name`, `${JSON.stringify(name)}, the name given to an unnamed step of a task with a long name, is over ${NAME_LIMIT} characters; name the step with .named()`);
    }
    return name;
  });
  const used = new Set<string>();
  for (const name of names) {
    if (used.has(name)) throw new ValidationError(`steps[${JSON.stringify(name)}]`, 'two steps have this name; step names must be unique within a workflow');
    used.add(name);
  }
  return names;
}

/** Most dependencies (step → step it waits for) one workflow may have. */
const MAX_WORKFLOW_EDGES = 200_000;

/** A step's parents (placement indices) and how its input is made. */
function parentsOf(p: Placed, name: string): { list: CompiledParent[]; pass: 'none' | 'one' | 'list' } {
  const gate = (indices: number[], skip: number[] = []): CompiledParent[] =>
    indices.filter((i) => !skip.includes(i)).map((index) => ({ index, position: null }));
  const inputs = (indices: number[]): CompiledParent[] => indices.map((index, position) => ({ index, position }));
  if (p.spec.hasPayload) return { list: gate([...new Set([...p.upstream, ...p.after])]), pass: 'none' };
  if (p.after.length > 0) return { list: [...inputs(p.after), ...gate(p.upstream, p.after)], pass: 'list' };
  if (p.upstream.length > 0) return { list: inputs(p.upstream), pass: p.upstreamMany ? 'list' : 'one' };
  throw new ValidationError(
    `steps[${JSON.stringify(name)}]`,
    'has no payload and nothing before it to take its input from; give step(task, payload), or place it after another step',
  );
}

/** Kahn's algorithm, ties broken by placement order; a cycle (through after()) is an error naming its steps. */
function topologicalOrder(parents: readonly { list: CompiledParent[] }[], names: readonly string[]): number[] {
  const waiting = parents.map((p) => p.list.length);
  const children: number[][] = parents.map(() => []);
  parents.forEach((p, child) => p.list.forEach((parent) => children[parent.index]!.push(child)));
  const order: number[] = [];
  for (let i = 0; i < waiting.length; i += 1) if (waiting[i] === 0) order.push(i);
  for (let k = 0; k < order.length; k += 1) {
    for (const child of children[order[k]!]!) {
      waiting[child]! -= 1;
      if (waiting[child] === 0) order.push(child);
    }
  }
  if (order.length < parents.length) {
    const stuck = names.filter((_, i) => waiting[i]! > 0);
    throw new ValidationError('workflow', `steps ${stuck.map((n) => JSON.stringify(n)).join(', ')} wait on each other (a cycle through after())`);
  }
  return order;
}

function parseStepOptions(options: unknown, field: string): z.output<typeof stepOptionsSchema> {
  const parsed = stepOptionsSchema.safeParse(options ?? {});
  if (!parsed.success) throw zodToValidationError(parsed.error, field);
  return parsed.data;
}

