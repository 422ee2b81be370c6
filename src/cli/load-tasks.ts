import path from 'node:path';
import fs from 'node:fs';
import { z } from 'zod';
import { PgqError, ValidationError } from '../core/errors.js';
import { importModule } from '../core/import-module.js';
import { defineTask, isTask, type AnyTask } from '../task.js';

/**
 * Loads a tasks module: its named exports that are tasks, and a default
 * export that is a task, an array of tasks or an object whose values are
 * tasks (a CommonJS module's `module.exports`). A `.ts` module is loaded
 * through tsx.
 */
export async function loadTasks(modulePath: string): Promise<AnyTask[]> {
  const file = path.resolve(modulePath);
  if (!fs.existsSync(file)) throw new PgqError('PGQ_TASKS_MODULE', `tasks module ${modulePath} does not exist`);
  let mod: Record<string, unknown>;
  try {
    mod = await importModule(file);
  } catch (err) {
    if (err instanceof PgqError) throw err;
    throw new PgqError('PGQ_TASKS_MODULE', `could not load tasks module ${modulePath}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  const found = new Map<string, AnyTask>();
  const consider = (value: unknown): void => {
    if (!isTask(value)) return;
    const same = found.get(value.name);
    // One task exported twice (a named export and the default array) is one task; two tasks of one name are a mistake.
    if (same && same !== value) {
      throw new PgqError('PGQ_TASKS_MODULE', `tasks module ${modulePath} exports two different tasks named ${JSON.stringify(value.name)}: task names must be unique`);
    }
    found.set(value.name, value);
  };
  const def = mod.default;
  if (Array.isArray(def)) def.forEach(consider);
  else if (isTask(def)) consider(def);
  // A CommonJS module's exports object (Node.js names only the exports it can find by reading the
  // source: a spread or a computed one was left out), or an ES module's default object of tasks.
  else if (def !== null && typeof def === 'object') Object.values(def).forEach(consider);
  for (const [key, value] of Object.entries(mod)) if (key !== 'default') consider(value);
  if (found.size === 0) {
    throw new PgqError(
      'PGQ_TASKS_MODULE',
      `tasks module ${modulePath} exports no task: export tasks made by defineTask (named exports, a default array or object, or module.exports)`,
    );
  }
  return [...found.values()];
}

/**
 * The task named `name`: from `modulePath` when given (so its schema
 * validates payloads and its defaults apply), else a stand-in that accepts
 * any JSON payload with the default options.
 */
export async function resolveTask(name: string, modulePath: string | undefined): Promise<AnyTask> {
  if (!modulePath) return defineTask({ name, schema: z.unknown(), handler: () => undefined });
  const tasks = await loadTasks(modulePath);
  const found = tasks.find((t) => t.name === name);
  if (!found) {
    const names = tasks.map((t) => JSON.stringify(t.name)).join(', ');
    throw new ValidationError('task', `module ${modulePath} has no task named ${JSON.stringify(name)}; its tasks are ${names}`);
  }
  return found;
}
