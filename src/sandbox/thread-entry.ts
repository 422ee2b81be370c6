/**
 * The module piscina loads in each sandbox thread: one call per attempt,
 * with a MessagePort of its own for log lines and progress out, and the
 * abort and progress acknowledgements in.
 */
import type { MessagePort } from 'node:worker_threads';
import { RemoteError, type SandboxEvent, type SandboxReply, type SandboxRequest, type ToSandbox } from './protocol.js';
import { ProgressChannel, catchStrayErrors, runAttempt } from './sandbox-entry.js';

catchStrayErrors();

/** What the thread pool sends for one attempt. */
export interface ThreadTask {
  request: SandboxRequest;
  port: MessagePort;
  /** One Int32 on shared memory, set to 1 as the thread takes the attempt: readable by the pool whatever its event loop is doing. */
  taken: Int32Array;
}

export default async function runInThread({ request, port, taken }: ThreadTask): Promise<SandboxReply> {
  Atomics.store(taken, 0, 1);
  const controller = new AbortController();
  const send = (event: SandboxEvent): void => port.postMessage(event);
  const progress = new ProgressChannel(send);
  port.on('message', (message: ToSandbox) => {
    if (message.type === 'abort') controller.abort(new RemoteError(message.reason));
    else progress.saved(message.seq);
  });
  send({ type: 'started' });
  try {
    return await runAttempt(request, controller.signal, send, progress);
  } finally {
    // The reply goes on piscina's port, which keeps no order with this one: the pool waits for this
    // mark before it closes its end, so that the attempt's last log lines and progress are read.
    send({ type: 'end' });
    port.close();
  }
}
