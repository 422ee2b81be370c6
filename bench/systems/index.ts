/**
 * Every system the harness knows, by name, in the order reports list them.
 * Loaded lazily, so a worker process holds only its own system's library and
 * its memory (RSS) is that system's alone.
 */
import type { System } from '../lib/types.js';

const LOADERS: Record<string, () => Promise<System>> = {
  pgq: async () => (await import('./pgq.js')).pgqSystem,
  'pgq-traced': async () => (await import('./pgq.js')).pgqTracedSystem,
  'pgq-keep-none': async () => (await import('./pgq.js')).pgqKeepNoneSystem,
  floor: async () => (await import('./floor.js')).floorSystem,
  'graphile-worker': async () => (await import('./graphile-worker.js')).graphileWorkerSystem,
  'graphile-worker-tuned': async () => (await import('./graphile-worker.js')).graphileWorkerTunedSystem,
  'pg-boss': async () => (await import('./pg-boss.js')).pgBossSystem,
  'pg-boss-tuned': async () => (await import('./pg-boss.js')).pgBossTunedSystem,
  bullmq: async () => (await import('./bullmq.js')).bullmqSystem,
  'bullmq-pg': async () => (await import('./bullmq.js')).bullmqPgSystem,
};

/** Run only when named in --systems. */
const OPT_IN = new Set(['pgq-traced', 'pgq-keep-none']);

/** The systems a run without --systems compares. */
export const SYSTEM_NAMES: readonly string[] = Object.keys(LOADERS).filter((name) => !OPT_IN.has(name));

export async function loadSystem(name: string): Promise<System> {
  const load = LOADERS[name];
  if (!load) throw new Error(`unknown system ${JSON.stringify(name)}; known: ${Object.keys(LOADERS).join(', ')}`);
  return load();
}
