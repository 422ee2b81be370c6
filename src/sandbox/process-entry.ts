/**
 * The main module of a sandbox child process: runs one attempt at a time
 * as the worker asks over IPC, and exits when the worker goes away (its IPC
 * channel closes), so no sandbox outlives its worker.
 */
import { RemoteError, type FromChild, type ToChild } from './protocol.js';
import { ProgressChannel, runAttempt } from './sandbox-entry.js';

let controller: AbortController | null = null;
let progress: ProgressChannel | null = null;

const send = (message: FromChild): void => {
  if (process.connected) process.send!(message);
};

process.on('message', (message: ToChild) => {
  if (message.type === 'abort') {
    controller?.abort(new RemoteError(message.reason));
    return;
  }
  if (message.type === 'progress-saved') {
    progress?.saved(message.seq);
    return;
  }
  const current = new AbortController();
  const channel = new ProgressChannel(send);
  controller = current;
  progress = channel;
  send({ type: 'started' });
  void runAttempt(message.request, current.signal, send, channel).then((reply) => {
    if (controller === current) controller = null;
    if (progress === channel) progress = null;
    send({ type: 'done', reply });
  });
});

process.on('disconnect', () => process.exit(0));
