/**
 * The main module of a sandbox child process: runs one attempt at a time
 * as the worker asks over IPC, and exits when the worker goes away (its IPC
 * channel closes), so no sandbox outlives its worker.
 */
import { RemoteError, type FromChild, type ToChild } from './protocol.js';
import { runAttempt } from './sandbox-entry.js';

let controller: AbortController | null = null;

const send = (message: FromChild): void => {
  if (process.connected) process.send!(message);
};

process.on('message', (message: ToChild) => {
  if (message.type === 'abort') {
    controller?.abort(new RemoteError(message.reason));
    return;
  }
  const current = new AbortController();
  controller = current;
  send({ type: 'started' });
  void runAttempt(message.request, current.signal, send).then((reply) => {
    if (controller === current) controller = null;
    send({ type: 'done', reply });
  });
});

process.on('disconnect', () => process.exit(0));
