/** Waiting for the harness's child processes to end. */
import type { ChildProcess } from 'node:child_process';

/** Resolves true once `child` has exited (at once if it has), false after `ms`. */
export function waitExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

/** Sends `message` (a stop) to `child` if it still listens and waits up to `ms` for it to exit: a child that exited early is not written to. */
export function stopChild(child: ChildProcess, message: object, ms: number): Promise<boolean> {
  const exited = waitExit(child, ms);
  if (child.connected) child.send(message);
  return exited;
}
