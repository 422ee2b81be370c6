/**
 * Module resolution hook registered by peers.mjs: resolves the peers (and
 * their subpaths) as if imported from the given npm prefix, so its
 * node_modules is searched first; their own dependencies follow from there.
 */
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const PEERS = /^(pg-boss|graphile-worker|bullmq)(\/.*)?$/;

/** @type {string | undefined} */
let parentURL;

/** @param {{ prefix: string }} data */
export function initialize(data) {
  parentURL = pathToFileURL(path.join(data.prefix, 'package.json')).href;
}

/**
 * @param {string} specifier
 * @param {{ parentURL?: string }} context
 * @param {(specifier: string, context: object) => Promise<{ url: string }>} next
 */
export async function resolve(specifier, context, next) {
  if (parentURL && PEERS.test(specifier)) return next(specifier, { ...context, parentURL });
  return next(specifier, context);
}
