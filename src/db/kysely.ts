/**
 * pgq's one import of kysely's runtime: every module that builds or runs a
 * query with kysely imports `sql`, `Kysely`, `PostgresDialect` or
 * `CompiledQuery` from here (types still come from 'kysely' itself).
 *
 * kysely ships as about 280 ES modules, and loading them one by one was most
 * of `import 'pgq'` on Node.js 20 (about 200 ms of CPU of 460). So `npm run
 * build` replaces this module's output with one file that holds the kysely
 * it was built against (scripts/bundle-deps.ts); loading that takes about
 * 25 ms. From src/ (tests, tsx) this is a plain re-export.
 */
export { CompiledQuery, Kysely, PostgresDialect, sql } from 'kysely';
