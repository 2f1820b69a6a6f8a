// The real servers of the namespace lab, each started inside one namespace on one lab address: PostgreSQL
// (password auth), Redis (requirepass), Node HTTP/HTTPS services, dnsmasq resolvers, and nats-server with
// deploy/nats/nats-server.conf. Readiness is checked from inside the namespace, which the host cannot reach.
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { NATS_CONFIG, type NatsUser } from '../helpers/nats-server.js';
import { postgresCommands } from '../helpers/postgres-server.js';

/** A server (or agent, controller…) the lab started and will stop by pid. */
export interface LabProcess {
  readonly name: string;
  readonly child: ChildProcess;
  /** Its stdout and stderr so far (the last 64 KiB). */
  log(): string;
  /** Stops it with its own signal (SIGINT for PostgreSQL), SIGKILL after a grace period; resolves on exit. */
  stop(): Promise<void>;
}

export interface StartOptions {
  readonly env?: NodeJS.ProcessEnv;
  /** The signal that stops it cleanly; SIGTERM unless said otherwise. */
  readonly stopSignal?: NodeJS.Signals;
  readonly cwd?: string;
}

export interface RunOptions {
  readonly timeoutMs?: number;
  readonly env?: NodeJS.ProcessEnv;
}

export interface ExecResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** What the servers need from the lab: its directory, and running commands inside its namespaces. */
export interface Launcher {
  /** The lab's temporary directory (mode 0755, so servers that drop privileges can read their files). */
  readonly dir: string;
  /** Starts a long-running command inside namespace `ns` (a lab role such as `prod`), tracked for cleanup. */
  start(ns: string, name: string, command: string, args: readonly string[], options?: StartOptions): LabProcess;
  /** Runs a command inside namespace `ns` to completion (bounded). */
  run(ns: string, command: string, args: readonly string[], options?: RunOptions): Promise<ExecResult>;
}

/** Something to wait for: a TCP port accepting, or a resolver answering a name with records / with REFUSED. */
export type Check =
  | { readonly tcp: string; readonly port: number }
  | { readonly dns: string; readonly name: string; readonly expect: 'answer' | 'refused' };

// Runs inside the namespace: polls every check until all pass (exit 0) or the deadline (exit 1, says which).
const WAIT_SCRIPT = `
const net = require('node:net');
const { Resolver } = require('node:dns').promises;
const checks = JSON.parse(process.argv[1]);
const deadline = Date.now() + Number(process.argv[2]);
const tcp = (host, port) => new Promise((done) => {
  const s = net.connect({ host, port });
  const end = (ok) => { clearTimeout(t); s.destroy(); done(ok); };
  const t = setTimeout(() => end(false), 300);
  s.once('connect', () => end(true));
  s.once('error', () => end(false));
});
const dns = async (server, name, expect) => {
  const r = new Resolver({ timeout: 300, tries: 1 });
  r.setServers([server]);
  try { const answers = await r.resolve4(name); return expect === 'answer' && answers.length > 0; }
  catch (e) { return expect === 'refused' && e.code === 'EREFUSED'; }
};
const pass = (c) => (c.tcp !== undefined ? tcp(c.tcp, c.port) : dns(c.dns, c.name, c.expect));
(async () => {
  let pending = checks;
  while (pending.length > 0) {
    const results = await Promise.all(pending.map(pass));
    pending = pending.filter((_, i) => !results[i]);
    if (pending.length === 0) break;
    if (Date.now() > deadline) { console.log(JSON.stringify(pending)); process.exit(1); }
    await new Promise((r) => setTimeout(r, 50));
  }
})();
`;

/** Waits until every check passes from inside namespace `ns`; rejects naming the ones that did not. */
export async function waitInside(launcher: Launcher, ns: string, checks: readonly Check[], timeoutMs: number, context: () => string = () => ''): Promise<void> {
  const result = await launcher.run(ns, process.execPath, ['-e', WAIT_SCRIPT, JSON.stringify(checks), String(timeoutMs)], { timeoutMs: timeoutMs + 5_000 });
  if (result.code !== 0) {
    const more = context();
    throw new Error(`not ready within ${timeoutMs} ms in ${ns}: ${result.stdout.trim() || result.stderr.trim()}${more ? `\n${more}` : ''}`);
  }
}

/** A fresh secret, starting with a letter (nats-server reads $VAR values as config values: "1e10…" is a number). */
export function secret(): string {
  return `pw${randomBytes(12).toString('hex')}`;
}

/** initdb (as `postgres` when we are root) with a password for the `postgres` role, then a postmaster on `address:port`. */
export async function startPostgresIn(launcher: Launcher, ns: string, address: string, port: number, password: string): Promise<LabProcess> {
  const pg = postgresCommands();
  if (!pg) throw new Error('PostgreSQL is not available (initdb/postgres, and a postgres user when running as root)');
  const dir = join(launcher.dir, `${ns}-postgres`);
  const data = join(dir, 'data');
  mkdirSync(dir, { mode: 0o700 });
  writeFileSync(join(dir, 'pwfile'), `${password}\n`, { mode: 0o600 });
  if (pg.uid !== undefined && pg.gid !== undefined) {
    chownSync(dir, pg.uid, pg.gid);
    chownSync(join(dir, 'pwfile'), pg.uid, pg.gid);
  }
  // initdb refuses root, and setpriv execs (no fork), so the pid we hold is the postmaster's own.
  const asPostgres = (command: string) => (pg.uid !== undefined ? ['setpriv', `--reuid=${pg.uid}`, `--regid=${pg.gid}`, '--clear-groups', '--', command] : [command]);
  const env = { ...process.env, LC_ALL: 'C', LANG: 'C', TZ: 'UTC' };
  const initdb = asPostgres(pg.initdb);
  const made = await launcher.run(ns, initdb[0]!, [...initdb.slice(1), '-D', data, '-U', 'postgres', '-A', 'scram-sha-256', `--pwfile=${join(dir, 'pwfile')}`, '--no-sync', '-E', 'UTF8', '--locale=C'], { timeoutMs: 30_000, env });
  if (made.code !== 0) throw new Error(`initdb failed (${made.code}): ${made.stderr}`);
  // Any client address may try; only a password gets in. Probes never have one, so they see 28P01 at most.
  writeFileSync(join(data, 'pg_hba.conf'), 'local all postgres scram-sha-256\nhost all all 0.0.0.0/0 scram-sha-256\n');
  if (pg.uid !== undefined && pg.gid !== undefined) chownSync(join(data, 'pg_hba.conf'), pg.uid, pg.gid);
  const settings = [`listen_addresses=${address}`, `port=${port}`, `unix_socket_directories=${dir}`, 'fsync=off', 'logging_collector=off', 'password_encryption=scram-sha-256'];
  const postgres = asPostgres(pg.postgres);
  return launcher.start(ns, `${ns} postgres`, postgres[0]!, [...postgres.slice(1), '-D', data, ...settings.flatMap((s) => ['-c', s])], {
    env,
    cwd: dir,
    stopSignal: 'SIGINT',
  });
}

/** redis-server on `address:port` with requirepass: a PING without AUTH gets -NOAUTH, which is still `open`. */
export function startRedisIn(launcher: Launcher, ns: string, address: string, port: number, password: string): LabProcess {
  const dir = join(launcher.dir, `${ns}-redis`);
  mkdirSync(dir, { mode: 0o700 });
  return launcher.start(ns, `${ns} redis`, 'redis-server', ['--bind', address, '--port', String(port), '--requirepass', password, '--save', '', '--appendonly', 'no', '--daemonize', 'no', '--dir', dir], { cwd: dir });
}

// A tiny web service: 200 "ok" with a recognisable server header; exits when the test process is gone.
const WEB_SCRIPT = `
const [kind, host, port, cert, key] = process.argv.slice(1);
const fs = require('node:fs');
const tls = kind === 'https' ? { cert: fs.readFileSync(cert), key: fs.readFileSync(key) } : {};
const server = require('node:' + kind).createServer(tls, (req, res) => {
  res.writeHead(200, { server: 'bulkhead-lab', 'content-type': 'text/plain', connection: 'close' });
  res.end('ok\\n');
});
server.listen(Number(port), host, () => process.stdout.write('listening\\n'));
const parent = process.ppid;
setInterval(() => { if (process.ppid !== parent) process.exit(0); }, 500).unref();
`;

/** A Node HTTP service on `address:port`, or HTTPS with the given PEM certificate and key. */
export function startWebIn(launcher: Launcher, ns: string, name: string, address: string, port: number, tls?: { readonly cert: string; readonly key: string }): LabProcess {
  const args = ['http', address, String(port)];
  if (tls) {
    const certFile = join(launcher.dir, `${name}.crt`);
    const keyFile = join(launcher.dir, `${name}.key`);
    writeFileSync(certFile, tls.cert);
    writeFileSync(keyFile, tls.key, { mode: 0o600 });
    args[0] = 'https';
    args.push(certFile, keyFile);
  }
  return launcher.start(ns, `${ns} ${name}`, process.execPath, ['-e', WEB_SCRIPT, ...args]);
}

/** A dnsmasq resolver; `forward` changes which domains it forwards where, as an operator would. */
export interface Resolver {
  readonly process: LabProcess;
  readonly address: string;
  /** Forwards `domain` to `server` (or stops forwarding anything when `forwards` is empty); resolves once reloaded. */
  forward(forwards: readonly { readonly domain: string; readonly server: string }[]): Promise<void>;
}

/**
 * dnsmasq on `address:53`, authoritative for `domain` with `records` (name → address), nothing upstream:
 * any other name is REFUSED, and no query ever leaves the namespace. Forwarding rules live in a
 * --servers-file, which dnsmasq re-reads on SIGHUP.
 */
export function startDnsmasqIn(launcher: Launcher, ns: string, address: string, domain: string, records: Readonly<Record<string, string>>): Resolver {
  const serversFile = join(launcher.dir, `${ns}-dnsmasq.servers`);
  writeFileSync(serversFile, '');
  // dnsmasq drops to an unprivileged user after binding; it must still read the file on SIGHUP.
  chmodSync(serversFile, 0o644);
  const args = [
    '--keep-in-foreground',
    '--conf-file=/dev/null',
    '--no-resolv',
    '--no-hosts',
    '--no-poll',
    '--bind-interfaces',
    `--listen-address=${address}`,
    '--port=53',
    `--local=/${domain}/`,
    ...Object.entries(records).map(([name, ip]) => `--host-record=${name},${ip}`),
    `--servers-file=${serversFile}`,
    '--pid-file=',
    '--log-facility=-',
    '--log-queries',
  ];
  const proc = launcher.start(ns, `${ns} dnsmasq`, 'dnsmasq', args);
  return {
    process: proc,
    address,
    forward: async (forwards) => {
      writeFileSync(serversFile, forwards.map((f) => `server=/${f.domain}/${f.server}\n`).join(''));
      const pid = proc.child.pid;
      if (pid === undefined || proc.child.exitCode !== null) throw new Error(`${proc.name} is not running:\n${proc.log()}`);
      process.kill(pid, 'SIGHUP');
    },
  };
}

/** nats-server in a namespace, configured from deploy/, with one random password per user. */
export interface LabNats {
  readonly process: LabProcess;
  readonly url: string;
  readonly passwords: Readonly<Record<NatsUser, string>>;
  /** `user:password` credentials file for a user (agents are `agent-<env>`), as --nats-creds takes it. */
  credsFile(user: NatsUser): string;
}

const NATS_USERS: readonly NatsUser[] = ['controller', 'auditor', 'prod', 'staging', 'dev', 'mgmt'];

/** nats-server with deploy/nats/nats-server.conf on every address of namespace `ns`, port `port`, JetStream under the lab dir. */
export function startNatsIn(launcher: Launcher, ns: string, address: string, port: number): LabNats {
  const passwords = Object.fromEntries(NATS_USERS.map((u) => [u, secret()])) as Record<NatsUser, string>;
  const env = { ...process.env, ...Object.fromEntries(NATS_USERS.map((u) => [`BULKHEAD_PW_${u.toUpperCase()}`, passwords[u]])) };
  const store = join(launcher.dir, `${ns}-nats`);
  mkdirSync(store, { mode: 0o700 });
  // 0.0.0.0 inside mgmt: the mgmt address for agents through the router, and the host link for the test process.
  const proc = launcher.start(ns, `${ns} nats-server`, 'nats-server', ['-c', NATS_CONFIG, '-a', '0.0.0.0', '-p', String(port), '-sd', store], { env });
  return {
    process: proc,
    url: `nats://${address}:${port}`,
    passwords,
    credsFile(user) {
      const file = join(launcher.dir, `nats-${user}.creds`);
      const name = user === 'controller' || user === 'auditor' ? user : `agent-${user}`;
      writeFileSync(file, `${name}:${passwords[user]}\n`, { mode: 0o600 });
      return file;
    },
  };
}
