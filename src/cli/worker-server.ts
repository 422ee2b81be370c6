/**
 * The HTTP endpoints of `pgq worker --metrics-port`: Prometheus metrics at
 * /metrics, liveness at /healthz (200 or 503 with the JSON of
 * `worker.liveness()`) and readiness at /readyz (the JSON of
 * `worker.health()`), each naming what is wrong.
 */
import http from 'node:http';
import type { Pgq } from '../client.js';
import type { Worker } from '../worker/worker.js';
import type { PgqMetrics } from '../metrics.js';
import { importOptional } from '../core/optional-packages.js';

export interface WorkerServer {
  server: http.Server;
  metrics: PgqMetrics;
  close(): Promise<void>;
}

/** Starts the server; resolves once it listens. Port 0 picks a free port (see `server.address()`). */
export async function serveWorkerEndpoints(pgq: Pgq, worker: Worker, host: string, port: number): Promise<WorkerServer> {
  // prom-client is optional: loaded only when the endpoints are asked for.
  const { PgqMetrics } = await importOptional(['prom-client'], () => import('../metrics.js'));
  const metrics = new PgqMetrics(pgq);
  metrics.observe(worker);
  const fail = (res: http.ServerResponse, err: unknown): void =>
    void res.writeHead(500, { 'content-type': 'text/plain' }).end(`${err instanceof Error ? err.message : String(err)}\n`);
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/metrics') {
      metrics.registry.metrics().then((body) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(body), (err: unknown) => fail(res, err));
    } else if (path === '/healthz') {
      // Answered without the database: a slow database must not get a healthy worker restarted.
      const liveness = worker.liveness();
      res.writeHead(liveness.live ? 200 : 503, { 'content-type': 'application/json' }).end(`${JSON.stringify(liveness)}\n`);
    } else if (path === '/readyz') {
      worker.health().then((health) => {
        res.writeHead(health.ready ? 200 : 503, { 'content-type': 'application/json' }).end(`${JSON.stringify(health)}\n`);
      }, (err: unknown) => fail(res, err));
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found; try /metrics, /healthz or /readyz\n');
    }
  });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
  } catch (err) {
    metrics.close();
    throw err;
  }
  return {
    server,
    metrics,
    async close() {
      metrics.close();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
