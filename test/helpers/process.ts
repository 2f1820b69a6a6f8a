// Child processes the test helpers start: stopped by pid, and polled for a listening port.
import type { ChildProcess } from 'node:child_process';
import net from 'node:net';

/** Sends `signal` to the child by pid, then SIGKILL if it has not exited after `graceMs`; resolves on exit. */
export async function stopChild(child: ChildProcess, signal: NodeJS.Signals, graceMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const send = (name: NodeJS.Signals) => {
    try {
      if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) process.kill(child.pid, name);
    } catch {
      // already gone
    }
  };
  send(signal);
  const killer = setTimeout(() => send('SIGKILL'), graceMs);
  await exited;
  clearTimeout(killer);
}

/** Whether a TCP connect to 127.0.0.1:`port` succeeds within `timeoutMs` (the socket is closed at once). */
export function portAccepts(port: number, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    const done = (ok: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    socket.once('error', () => done(false));
    socket.once('connect', () => done(true));
  });
}
