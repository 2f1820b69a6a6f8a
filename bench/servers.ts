// Throwaway nats-server and PostgreSQL for benchmarks (test/ is not compiled into dist/, so its helpers are not
// available here): temporary directories, free loopback ports, random passwords, stopped by pid.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { accessSync, chownSync, constants, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

// dist/bench/servers.js when compiled, bench/servers.ts when run from source.
const NATS_CONFIG = [join(import.meta.dirname, '../../deploy/nats/nats-server.conf'), join(import.meta.dirname, '../deploy/nats/nats-server.conf')].find(
  (path) => {
    try {
      accessSync(path, constants.R_OK);
      return true;
    } catch {
      return false;
    }
  },
);
const NATS_USERS = ['controller', 'auditor', 'prod', 'staging', 'dev', 'mgmt'] as const;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export interface Server {
  stop(): Promise<void>;
}
export interface NatsInstance extends Server {
  readonly url: string;
  readonly passwords: Readonly<Record<(typeof NATS_USERS)[number], string>>;
  /** A `user:password` file for --nats-creds. */
  credsFile(user: 'controller'): string;
}
export interface PostgresInstance extends Server {
  readonly port: number;
  /** The postmaster's pid: its children are the backends, whose CPU time a benchmark may want. */
  readonly pid: number;
  url(database: string): string;
}

/** A port free on 127.0.0.1 right now (the kernel picks it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port: 0, exclusive: true }, () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    const done = (ok: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), 1000);
    socket.once('error', () => done(false));
    socket.once('connect', () => done(true));
  });
}

function which(name: string, dirs: string[]): string | undefined {
  for (const dir of [...(process.env.PATH ?? '').split(':'), ...dirs]) {
    try {
      accessSync(join(dir, name), constants.X_OK);
      return join(dir, name);
    } catch {
      // not here
    }
  }
  return undefined;
}

async function stopChild(child: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

/** Starts a child and waits (bounded) until it accepts TCP on `port`; tries three ports, a free one can be taken meanwhile. */
async function startListening(what: string, launch: (port: number) => ChildProcess, ready: (out: string) => boolean): Promise<{ child: ChildProcess; port: number }> {
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const child = launch(port);
    let out = '';
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline && child.exitCode === null && child.signalCode === null) {
      if (ready(out) && (await accepts(port))) return { child, port };
      await sleep(50);
    }
    await stopChild(child, 'SIGKILL');
    if (attempt === 2) throw new Error(`${what} did not start:\n${out.slice(-2000)}`);
  }
  throw new Error('unreachable');
}

/** nats-server with the deploy/ configuration and a temporary JetStream store. */
export async function startNatsServer(): Promise<NatsInstance> {
  const binary = which('nats-server', ['/usr/sbin', '/usr/bin', '/usr/local/bin']);
  if (!binary) throw new Error('nats-server is not installed (apt-get install nats-server)');
  if (!NATS_CONFIG) throw new Error('deploy/nats/nats-server.conf not found');
  const config = NATS_CONFIG;
  const dir = mkdtempSync(join(tmpdir(), 'bulkhead-bench-nats-'));
  // nats-server parses a $VARIABLE's value as a config token: hex such as "1e5…" becomes a number and the
  // server refuses to start. A leading letter keeps every password a string.
  const passwords = Object.fromEntries(NATS_USERS.map((u) => [u, `p${randomBytes(12).toString('hex')}`])) as NatsInstance['passwords'];
  const env = { ...process.env, ...Object.fromEntries(NATS_USERS.map((u) => [`BULKHEAD_PW_${u.toUpperCase()}`, passwords[u]])) };
  const { child, port } = await startListening(
    'nats-server',
    (p) => spawn(binary, ['-c', config, '-a', '127.0.0.1', '-p', String(p), '-sd', join(dir, 'js')], { env, stdio: ['ignore', 'pipe', 'pipe'] }),
    (out) => out.includes('Server is ready'),
  );
  return {
    url: `nats://127.0.0.1:${port}`,
    passwords,
    credsFile(user) {
      const file = join(dir, `${user}.creds`);
      writeFileSync(file, `${user}:${passwords[user]}\n`, { mode: 0o600 });
      return file;
    },
    async stop() {
      await stopChild(child, 'SIGTERM');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A fresh PostgreSQL cluster (trust auth on loopback), run as the `postgres` user when we are root. */
export async function startPostgresServer(): Promise<PostgresInstance> {
  const versions = (() => {
    try {
      return readdirSync('/usr/lib/postgresql').sort((a, b) => Number(b) - Number(a));
    } catch {
      return [];
    }
  })();
  const bin = versions.map((v) => join('/usr/lib/postgresql', v, 'bin')).find((d) => which('postgres', [d]) === join(d, 'postgres'));
  const initdb = bin ? join(bin, 'initdb') : which('initdb', []);
  const postgres = bin ? join(bin, 'postgres') : which('postgres', []);
  if (!initdb || !postgres) throw new Error('PostgreSQL is not installed (apt-get install postgresql)');
  const root = process.getuid?.() === 0;
  const id = root ? { uid: Number(execFileSync('id', ['-u', 'postgres']).toString()), gid: Number(execFileSync('id', ['-g', 'postgres']).toString()) } : {};
  const dir = mkdtempSync(join(tmpdir(), 'bulkhead-bench-pg-'));
  const data = join(dir, 'data');
  if (root) chownSync(dir, id.uid!, id.gid!);
  const env = { ...process.env, LC_ALL: 'C', LANG: 'C', TZ: 'UTC' };
  execFileSync(initdb, ['-D', data, '-A', 'trust', '-U', 'postgres', '--no-sync', '-E', 'UTF8', '--locale=C'], { env, cwd: dir, stdio: 'ignore', timeout: 60_000, ...id });
  writeFileSync(join(data, 'pg_hba.conf'), 'local all all trust\nhost all all 127.0.0.1/32 trust\n');
  if (root) chownSync(join(data, 'pg_hba.conf'), id.uid!, id.gid!);
  // Durable settings (fsync on) so the figure is what a real deployment would see.
  const settings = ['listen_addresses=127.0.0.1', 'logging_collector=off', `unix_socket_directories=${dir}`];
  const { child, port } = await startListening(
    'postgres',
    (p) => spawn(postgres, ['-D', data, '-p', String(p), ...settings.flatMap((s) => ['-c', s])], { env, cwd: dir, stdio: ['ignore', 'ignore', 'pipe'], ...id }),
    (out) => out.includes('ready to accept connections'),
  );
  return {
    port,
    pid: child.pid!,
    url: (database) => `postgres://postgres@127.0.0.1:${port}/${database}`,
    async stop() {
      await stopChild(child, 'SIGINT');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
