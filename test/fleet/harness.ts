// What the fleet tests share: the compiled CLI run as child processes (stopped by pid), bounded polling, a TCP
// listener a test opens and closes on a fixed loopback port (a path that opens and closes), and the controller's
// HTTP API read as JSON.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { stopChild } from '../helpers/process.js';

export const ROOT = join(import.meta.dirname, '../..');
export const CLI = join(ROOT, 'dist/cli/bulkhead.js');

/** The tests run the compiled CLI, which `make test` builds first (building here would race other test files). */
export function requireBuild(): void {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run "make build" (make test does it)`);
}


/** One `bulkhead …` child process with its output kept (the last 200 kB). */
export interface CliProcess {
  readonly proc: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** stdout and stderr together, in arrival order. */
  output(): string;
  /** SIGKILL by pid and wait for the exit. */
  kill(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGTERM by pid (SIGKILL after 10 s) and wait for the exit. */
  stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const running = new Set<ChildProcess>();

/** Starts `node dist/cli/bulkhead.js …args` with exactly `env` as its environment (plus PATH). */
export function spawnCli(args: readonly string[], env: Record<string, string>): CliProcess {
  const proc = spawn(process.execPath, [CLI, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env } });
  running.add(proc);
  let out = '';
  const keep = (d: Buffer) => (out = (out + d.toString()).slice(-200_000));
  proc.stdout!.on('data', keep);
  proc.stderr!.on('data', keep);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.once('exit', (code, signal) => {
      running.delete(proc);
      resolve({ code, signal });
    }),
  );
  return {
    proc,
    exited,
    output: () => out,
    kill: async () => {
      await stopChild(proc, 'SIGKILL', 5_000);
      return exited;
    },
    stop: async () => {
      await stopChild(proc, 'SIGTERM', 10_000);
      return exited;
    },
  };
}

/** SIGKILLs every child this file started that is still running (afterAll's safety net), each by its pid. */
export async function killAll(): Promise<void> {
  await Promise.all([...running].map((proc) => stopChild(proc, 'SIGKILL', 5_000)));
}

/** A TCP listener on a fixed loopback port that accepts and hangs up; open() and close() flip the path. */
export interface Switch {
  readonly port: number;
  readonly isOpen: boolean;
  open(): Promise<void>;
  close(): Promise<void>;
}

export async function tcpSwitch(): Promise<Switch> {
  // Reserve a port by listening once; later opens reuse it.
  let server: net.Server | undefined;
  const sockets = new Set<net.Socket>();
  const listen = (port: number) =>
    new Promise<net.Server>((resolve, reject) => {
      const s = net.createServer((socket) => {
        sockets.add(socket);
        socket.on('close', () => sockets.delete(socket));
        socket.on('error', () => undefined);
        socket.destroy();
      });
      s.once('error', reject);
      s.listen({ host: '127.0.0.1', port }, () => resolve(s));
    });
  server = await listen(0);
  const port = (server.address() as net.AddressInfo).port;
  await new Promise((r) => server!.close(r));
  server = undefined;
  return {
    port,
    get isOpen() {
      return server !== undefined;
    },
    async open() {
      if (server === undefined) server = await listen(port);
    },
    async close() {
      const s = server;
      server = undefined;
      if (s === undefined) return;
      for (const socket of sockets) socket.destroy();
      await new Promise((r) => s.close(r));
    },
  };
}

/** A controller API answer: status and parsed JSON body. */
export interface ApiAnswer {
  readonly status: number;
  readonly body: any;
}

/** One request to the controller API; the body is sent as JSON when it is not a string. */
export async function api(base: string, path: string, init: { method?: string; body?: unknown; token?: string } = {}): Promise<ApiAnswer> {
  const headers: Record<string, string> = {};
  if (init.body !== undefined) headers['content-type'] = 'application/json';
  if (init.token !== undefined) headers.authorization = `Bearer ${init.token}`;
  const res = await fetch(`${base}${path}`, {
    method: init.method ?? 'GET',
    headers,
    ...(init.body !== undefined ? { body: typeof init.body === 'string' ? init.body : JSON.stringify(init.body) } : {}),
    signal: AbortSignal.timeout(5_000),
  });
  const text = await res.text();
  return { status: res.status, body: text === '' ? undefined : JSON.parse(text) };
}
