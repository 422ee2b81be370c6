/**
 * The main module of a sandbox child process: runs one attempt at a time
 * as the worker asks over IPC, and exits when the worker goes away (its IPC
 * channel closes), so no sandbox outlives its worker.
 */
import { Worker as Thread } from 'node:worker_threads';
import { RemoteError, type FromChild, type FromChildEnvelope, type ToChild } from './protocol.js';
import { ProgressChannel, catchStrayErrors, runAttempt } from './sandbox-entry.js';

catchStrayErrors();

// A handler that computes without yielding never lets 'disconnect' below
// run: a thread of this process's own, which the handler cannot block,
// ends it once the worker that started it is gone (kill -9 of the worker:
// the rescued job would otherwise run here beside its next attempt).
const watchdog = new Thread(
  `const { workerData } = require('node:worker_threads');
   setInterval(() => { if (process.ppid !== workerData.ppid) process.kill(workerData.pid, 'SIGKILL'); }, 250);`,
  { eval: true, workerData: { ppid: process.ppid, pid: process.pid }, execArgv: [], stdout: false, stderr: false },
);
watchdog.unref();

let controller: AbortController | null = null;
let progress: ProgressChannel | null = null;

// Wrapped: the channel is the handler's too (see FromChildEnvelope).
const send = (message: FromChild): void => {
  if (process.connected) process.send!({ pgqSandbox: message } satisfies FromChildEnvelope);
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
