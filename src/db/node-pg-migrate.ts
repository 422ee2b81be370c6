/**
 * pgq's one import of node-pg-migrate, loaded by the first `migrate()`.
 * `npm run build` replaces this module's output with one file that holds the
 * node-pg-migrate it was built against (scripts/bundle-deps.ts), so a library
 * user's install does not carry node-pg-migrate's command-line and loader
 * dependencies. From src/ (tests, tsx) this is a plain re-export.
 */
export { runner } from 'node-pg-migrate';
