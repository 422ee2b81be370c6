/**
 * Loaded with `node --import` (through NODE_OPTIONS, so the benchmark's child
 * processes inherit it): when PGQ_BENCH_PEERS names an npm prefix holding
 * other releases of the peers (`npm run bench:current` installs their newest
 * there), `pg-boss`, `graphile-worker` and `bullmq` are loaded from it instead
 * of from the project's devDependencies. Without the variable it does nothing.
 */
import { register } from 'node:module';

const prefix = process.env.PGQ_BENCH_PEERS;
if (prefix) register(new URL('./peers-hooks.mjs', import.meta.url), { data: { prefix } });
