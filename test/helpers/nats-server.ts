// A real nats-server started from deploy/nats/nats-server.conf on a free port with a temporary JetStream
// store and random passwords; stopped (or killed, or restarted on the same port and store) by its pid.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './free-port.js';
import { findExecutable, unavailable } from './need.js';
import { portAccepts, stopChild } from './process.js';

export const NATS_CONFIG = join(import.meta.dirname, '../../deploy/nats/nats-server.conf');
const USERS = ['controller', 'auditor', 'prod', 'staging', 'dev', 'mgmt'] as const;
export type NatsUser = (typeof USERS)[number];

export interface NatsServer {
  readonly url: string;
  readonly port: number;
  readonly storeDir: string;
  /** The password of each configured user (agents are `agent-<env>`). */
  readonly passwords: Readonly<Record<NatsUser, string>>;
  /** `user:password` credentials file for a user, as the agent's --nats-creds takes it. */
  credsFile(user: NatsUser): string;
  log(): string;
  /** SIGTERM and wait. */
  stop(): Promise<void>;
  /** SIGKILL and wait: an outage. */
  kill(): Promise<void>;
  /** Start again on the same port with the same store. */
  start(): Promise<void>;
}

/** Reason nats-server cannot be used here, or undefined (under CI this throws instead). */
export function natsMissing(): string | undefined {
  return unavailable('nats-server', natsBinary() === undefined, 'apt-get install nats-server, or make test');
}

function natsBinary(): string | undefined {
  return findExecutable('nats-server', ['/usr/sbin', '/usr/bin', '/usr/local/bin']);
}

/** Polls a TCP connect to the port every 50 ms until it succeeds; rejects after `timeoutMs`. */
async function waitForPort(port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await portAccepts(port))) {
    if (Date.now() > deadline) throw new Error(`nats-server did not listen on ${port} within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Starts nats-server with the deploy/ configuration. */
export async function startNats(): Promise<NatsServer> {
  const binary = natsBinary();
  if (!binary) throw new Error('nats-server is not installed');
  let port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'bulkhead-nats-'));
  const storeDir = join(dir, 'js');
  // A leading letter: nats-server parses $VAR values as config values, and hex such as "7e3f…" reads as a number (parse error).
  const passwords = Object.fromEntries(USERS.map((u) => [u, `pw${randomBytes(12).toString('hex')}`])) as Record<NatsUser, string>;
  const env = { ...process.env, ...Object.fromEntries(USERS.map((u) => [`BULKHEAD_PW_${u.toUpperCase()}`, passwords[u]])) };
  let child: ChildProcess | undefined;
  let output = '';

  const start = async () => {
    const proc = spawn(binary, ['-c', NATS_CONFIG, '-a', '127.0.0.1', '-p', String(port), '-sd', storeDir], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    child = proc;
    proc.stdout!.on('data', (d: Buffer) => (output += d.toString()));
    proc.stderr!.on('data', (d: Buffer) => (output += d.toString()));
    const died = new Promise<never>((_, reject) =>
      proc.once('exit', (code, signal) => reject(new Error(`nats-server exited (${code ?? signal}) before listening on ${port}:\n${output.slice(-2000)}`))),
    );
    died.catch(() => undefined);
    await Promise.race([waitForPort(port, 10_000), died]);
  };
  // The free port can be taken by someone else between freePort() and the server binding it: try another.
  for (let attempt = 1; ; attempt++) {
    try {
      await start();
      break;
    } catch (err) {
      if (attempt === 3 || !/address already in use/i.test(output)) {
        rmSync(dir, { recursive: true, force: true });
        throw err;
      }
      output = '';
      port = await freePort();
    }
  }

  return {
    get url() {
      return `nats://127.0.0.1:${port}`;
    },
    get port() {
      return port;
    },
    storeDir,
    passwords,
    credsFile(user) {
      const file = join(dir, `${user}.creds`);
      const name = user === 'controller' || user === 'auditor' ? user : `agent-${user}`;
      writeFileSync(file, `${name}:${passwords[user]}\n`, { mode: 0o600 });
      return file;
    },
    log: () => output,
    async stop() {
      if (child) await stopChild(child, 'SIGTERM', 5_000);
      rmSync(dir, { recursive: true, force: true });
    },
    async kill() {
      if (child) await stopChild(child, 'SIGKILL', 5_000);
    },
    start,
  };
}
