/** The benchmark's sandboxed handlers: the CPU-bound hash (default) and a no-op. */
import { defineSandboxHandler } from '../../src/sandbox/handler.js';
import { hashRounds } from './work.js';

export default defineSandboxHandler((payload: { rounds: number }) => hashRounds(payload.rounds));

export const noop = defineSandboxHandler((_payload: unknown) => null);
