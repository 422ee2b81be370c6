/**
 * The module piscina loads in each sandbox thread: one call per attempt,
 * with a MessagePort of its own for log lines out and the abort in.
 */
import type { MessagePort } from 'node:worker_threads';
import { RemoteError, type AbortMessage, type SandboxEvent, type SandboxReply, type SandboxRequest } from './protocol.js';
import { runAttempt } from './sandbox-entry.js';

/** What the thread pool sends for one attempt. */
export interface ThreadTask {
  request: SandboxRequest;
  port: MessagePort;
}

export default async function runInThread({ request, port }: ThreadTask): Promise<SandboxReply> {
  const controller = new AbortController();
  port.on('message', (message: AbortMessage) => {
    if (message.type === 'abort') controller.abort(new RemoteError(message.reason));
  });
  const send = (event: SandboxEvent): void => port.postMessage(event);
  send({ type: 'started' });
  try {
    return await runAttempt(request, controller.signal, send);
  } finally {
    port.close();
  }
}
