/**
 * pgq as the benchmarks that compare it with its peers run it: its build
 * (`dist/`, what an application installs), as every peer runs from its
 * package. src/ under tsx cost a worker 2–3 µs of CPU a job more (47.0
 * against 49.1–50.4 µs in three alternating 40,000-job drains at
 * concurrency 100): the loader wraps each function that a job's context and
 * attempt create in a naming helper. `npm run bench` builds first; run
 * directly, this refuses a build older than src/.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

function newest(dir: string): number {
  let latest = 0;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    latest = Math.max(latest, entry.isDirectory() ? newest(full) : fs.statSync(full).mtimeMs);
  }
  return latest;
}

const built = path.join(root, 'dist', 'index.js');
if (!fs.existsSync(built) || fs.statSync(built).mtimeMs < newest(path.join(root, 'src'))) {
  throw new Error(`pgq's build (dist/) is missing or older than src/: run \`npm run build\` first (npm run bench does)`);
}

// Loaded by path at run time, typed by src/ (the same API): type-checking
// the benchmarks needs no build.
const dist = (file: string): string => new URL(`../../dist/${file}`, import.meta.url).href;
const api = (await import(dist('index.js'))) as typeof import('../../src/index.js');
const otel = (await import(dist('otel.js'))) as typeof import('../../src/otel.js');

export const { Pgq, defineTask } = api;
export const { tracing } = otel;
export type { Middleware } from '../../src/index.js';
