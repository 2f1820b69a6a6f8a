// A throwaway redis-server per test file on a free loopback port, no persistence, stopped by its pid.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findExecutable, unavailable } from './need.js';
import { freePort } from './free-port.js';
import { stopChild } from './process.js';
import { selfSignedCert } from './tls-cert.js';

export interface RedisServer {
  readonly port: number;
  /** What redis-server printed so far (its log goes to stdout). */
  log(): string;
  stop(): Promise<void>;
}

const redisServer = findExecutable('redis-server', ['/usr/bin', '/usr/sbin']);

/** Why Redis tests cannot run here (skip locally), or undefined; throws under CI=true. */
export const redisMissing = (): string | undefined =>
  unavailable('Redis', redisServer === undefined, 'install the redis-server package');

export interface RedisOptions {
  readonly requirepass?: string;
  /** Serve TLS only (a self-signed certificate for localhost, client certificates not required). */
  readonly tls?: boolean;
}

/** Starts redis-server and resolves once it answers PING (+PONG, or -NOAUTH with a password). */
export async function startRedis(opts: RedisOptions = {}): Promise<RedisServer> {
  if (!redisServer) throw new Error('redis-server not found');
  const dir = mkdtempSync(join(tmpdir(), 'bulkhead-redis-'));
  const tlsArgs: string[] = [];
  if (opts.tls) {
    const { key, cert } = selfSignedCert('localhost');
    writeFileSync(join(dir, 'server.key'), key, { mode: 0o600 });
    writeFileSync(join(dir, 'server.crt'), cert);
    tlsArgs.push('--tls-cert-file', join(dir, 'server.crt'), '--tls-key-file', join(dir, 'server.key'), '--tls-auth-clients', 'no');
  }
  let lastError: unknown;
  // A free port can be taken between freePort() and bind; try a few.
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const ports = opts.tls ? ['--port', '0', '--tls-port', String(port)] : ['--port', String(port)];
    const args = [...ports, ...tlsArgs, '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no', '--dir', dir];
    if (opts.requirepass !== undefined) args.push('--requirepass', opts.requirepass);
    const child = spawn(redisServer, args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    const output: string[] = [];
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => output.push(chunk));
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => output.push(chunk));
    try {
      await waitForPing(child, port, output, opts.tls === true);
    } catch (err) {
      lastError = err;
      await stopChild(child, 'SIGTERM', 5_000);
      continue;
    }
    return {
      port,
      log: () => output.join(''),
      stop: async () => {
        await stopChild(child, 'SIGTERM', 5_000);
        rmSync(dir, { recursive: true, force: true });
      },
    };
  }
  rmSync(dir, { recursive: true, force: true });
  throw lastError;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls PING until a RESP line comes back; bounded to 10 s. */
async function waitForPing(child: ChildProcess, port: number, output: string[], overTls: boolean): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`redis-server exited (${child.exitCode ?? child.signalCode}):\n${output.join('')}`);
    }
    if (await answersPing(port, overTls)) return;
    await sleep(50);
  }
  throw new Error(`redis-server did not answer PING on 127.0.0.1:${port} within 10 s:\n${output.join('')}`);
}

function answersPing(port: number, overTls: boolean): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = overTls
      ? tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false })
      : net.connect({ host: '127.0.0.1', port });
    const done = (ok: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), 1000);
    socket.once('error', () => done(false));
    socket.once(overTls ? 'secureConnect' : 'connect', () => socket.write('PING\r\n'));
    socket.once('data', (data) => done(data[0] === 0x2b || data[0] === 0x2d));
    socket.once('close', () => done(false));
  });
}
