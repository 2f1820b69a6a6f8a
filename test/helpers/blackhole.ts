// A loopback port whose TCP handshake never completes, so a connect times out (a `filtered` path) without root.
// Linux drops a SYN outright when the listener's accept queue is full (counted as ListenOverflows; the check
// comes before any syncookie logic, observed with tcp_syncookies=1), so a listener with backlog 0 that never
// accepts, once one connection sits in its queue, leaves every further SYN unanswered and the client keeps
// retransmitting. Node's net.Server always accepts, hence the python3 listener.
import { spawn } from 'node:child_process';
import net from 'node:net';
import { findExecutable } from './need.js';

const LISTENER = `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(('127.0.0.1', 0))
s.listen(0)
print(s.getsockname()[1], flush=True)
sys.stdin.read()  # never accept; exit when the test process goes away
`;
const STARTUP_MS = 10_000;
const HANG_MS = 200;
const MAX_FILLERS = 16;

export interface Blackhole {
  readonly port: number;
  close(): void;
}

/** The python3 executable the blackhole needs, or undefined (callers skip or fail via `unavailable`). */
export const python3 = findExecutable('python3');

/** Starts a listener on 127.0.0.1 that never completes a handshake; `close` kills it by pid. */
export async function startBlackhole(): Promise<Blackhole> {
  if (!python3) throw new Error('python3 is not on PATH');
  const child = spawn(python3, ['-c', LISTENER], { stdio: ['pipe', 'pipe', 'inherit'] });
  const fillers: net.Socket[] = [];
  const close = () => {
    for (const socket of fillers) socket.destroy();
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) process.kill(child.pid, 'SIGKILL');
  };
  try {
    const port = await readPort(child);
    // Fill the accept queue until a connect no longer completes: from then on SYNs are dropped.
    for (let i = 0; i < MAX_FILLERS; i++) {
      const socket = net.connect({ host: '127.0.0.1', port });
      socket.on('error', () => {});
      fillers.push(socket);
      const result = await connectWithin(socket, HANG_MS);
      if (result === 'hang') return { port, close };
      if (result !== 'connect') throw new Error(`blackhole: connect to 127.0.0.1:${port} failed with ${result}`);
    }
    throw new Error(`blackhole: ${MAX_FILLERS} connects to 127.0.0.1:${port} all completed; SYNs are not being dropped`);
  } catch (err) {
    close();
    throw err;
  }
}

function readPort(child: ReturnType<typeof spawn>): Promise<number> {
  return new Promise((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => fail(new Error('blackhole: python3 did not report a port')), STARTUP_MS);
    const fail = (err: Error) => {
      clearTimeout(timer);
      reject(err);
    };
    child.once('error', fail);
    child.once('exit', (code) => fail(new Error(`blackhole: python3 exited with ${String(code)}`)));
    child.stdout?.on('data', (chunk: Buffer) => {
      text += chunk.toString();
      const port = Number.parseInt(text, 10);
      if (text.includes('\n') && Number.isInteger(port) && port > 0) {
        clearTimeout(timer);
        resolve(port);
      }
    });
  });
}

function connectWithin(socket: net.Socket, ms: number): Promise<string> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve('hang'), ms);
    socket.once('connect', () => {
      clearTimeout(timer);
      resolve('connect');
    });
    socket.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve(err.code ?? 'error');
    });
  });
}
