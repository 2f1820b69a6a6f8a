// A throwaway PostgreSQL cluster per test file: initdb into a temp dir, our pg_hba.conf, one postmaster
// on a free loopback port, stopped by its pid. Runs as the `postgres` user when we are root (initdb refuses root).
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { accessSync, chownSync, constants, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findExecutable, unavailable } from './need.js';
import { freePort } from './free-port.js';
import { portAccepts, stopChild } from './process.js';

export interface PostgresOptions {
  /** The whole pg_hba.conf. */
  readonly hba: string;
  /** Serve TLS with a fresh self-signed certificate (SSLRequest is then answered `S`). */
  readonly ssl?: boolean;
  /** What the server pretends a missing role's password is hashed with, which picks the mock auth exchange. */
  readonly passwordEncryption?: 'scram-sha-256' | 'md5';
}

export interface PostgresServer {
  readonly port: number;
  readonly dataDir: string;
  /** Everything the postmaster and its backends wrote to stderr so far (the server log). */
  log(): string;
  stop(): Promise<void>;
}

interface Binaries {
  readonly initdb: string;
  readonly postgres: string;
}

const executable = (path: string) => {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
};

function findBinaries(): Binaries | undefined {
  const root = '/usr/lib/postgresql';
  let versions: string[] = [];
  try {
    versions = readdirSync(root).filter((v) => /^\d+(\.\d+)?$/.test(v));
  } catch {
    // not installed from Debian packages; try PATH below
  }
  versions.sort((a, b) => Number(b) - Number(a));
  for (const version of versions) {
    const bin = join(root, version, 'bin');
    if (executable(join(bin, 'initdb')) && executable(join(bin, 'postgres'))) {
      return { initdb: join(bin, 'initdb'), postgres: join(bin, 'postgres') };
    }
  }
  const initdb = findExecutable('initdb');
  const postgres = findExecutable('postgres');
  return initdb && postgres ? { initdb, postgres } : undefined;
}

const binaries = findBinaries();

/** The uid/gid to run the server as: initdb and postgres refuse to run as root. Null: root without a postgres user. */
function serverIdentity(): { uid: number; gid: number } | undefined | null {
  if (process.getuid?.() !== 0) return undefined;
  try {
    const id = (flag: string) => Number(execFileSync('id', [flag, 'postgres'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim());
    return { uid: id('-u'), gid: id('-g') };
  } catch {
    return null;
  }
}

const identity = serverIdentity();

/**
 * The initdb and postgres executables and the identity to run them as (uid/gid of `postgres` when we are
 * root), for callers that start the server their own way (the namespace lab); undefined when unavailable.
 */
export function postgresCommands(): { readonly initdb: string; readonly postgres: string; readonly uid?: number; readonly gid?: number } | undefined {
  if (!binaries || identity === null) return undefined;
  return { ...binaries, ...(identity ?? {}) };
}

/** Why PostgreSQL tests cannot run here (skip locally), or undefined; throws under CI=true. */
export const postgresMissing = (): string | undefined =>
  unavailable('PostgreSQL', binaries === undefined, 'install the postgresql package: initdb and postgres under /usr/lib/postgresql/*/bin') ??
  unavailable('PostgreSQL', identity === null, 'running as root needs a `postgres` system user to run initdb and postgres as');

/** Starts a fresh cluster and resolves once it accepts connections; rejects (after cleaning up) if it cannot. */
export async function startPostgres(opts: PostgresOptions): Promise<PostgresServer> {
  if (!binaries || identity === null) throw new Error(postgresMissing() ?? 'PostgreSQL cannot run here');
  const dir = mkdtempSync(join(tmpdir(), 'bulkhead-pg-'));
  const dataDir = join(dir, 'data');
  const own = (path: string) => identity && chownSync(path, identity.uid, identity.gid);
  const runAs = identity ?? {};
  const env = { ...process.env, LC_ALL: 'C', LANG: 'C', TZ: 'UTC' };
  try {
    own(dir);
    execFileSync(binaries.initdb, ['-D', dataDir, '-A', 'trust', '-U', 'postgres', '--no-sync', '-E', 'UTF8', '--locale=C'], {
      env,
      cwd: dir,
      stdio: ['ignore', 'ignore', 'pipe'],
      timeout: 60_000,
      ...runAs,
    });
    writeFileSync(join(dataDir, 'pg_hba.conf'), opts.hba);
    own(join(dataDir, 'pg_hba.conf'));
    const settings = ['listen_addresses=127.0.0.1', 'fsync=off', 'logging_collector=off', `unix_socket_directories=${dir}`];
    if (opts.passwordEncryption) settings.push(`password_encryption=${opts.passwordEncryption}`);
    if (opts.ssl) settings.push('ssl=on', ...selfSignedCertificate(dir, own));

    // A free port can be taken between freePort() and bind; try a few.
    let lastError: unknown;
    for (let attempt = 0; attempt < 3; attempt++) {
      const port = await freePort();
      const args = ['-D', dataDir, '-p', String(port), ...settings.flatMap((s) => ['-c', s])];
      const child = spawn(binaries.postgres, args, { env, cwd: dir, stdio: ['ignore', 'ignore', 'pipe'], ...runAs });
      const stderr: string[] = [];
      child.stderr?.setEncoding('utf8').on('data', (chunk: string) => stderr.push(chunk));
      try {
        await waitUntilReady(child, port, stderr);
      } catch (err) {
        lastError = err;
        await stopPostgres(child);
        continue;
      }
      return {
        port,
        dataDir,
        log: () => stderr.join(''),
        stop: async () => {
          await stopPostgres(child);
          rmSync(dir, { recursive: true, force: true });
        },
      };
    }
    throw lastError;
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

function selfSignedCertificate(dir: string, own: (path: string) => unknown): string[] {
  const cert = join(dir, 'server.crt');
  const key = join(dir, 'server.key');
  execFileSync(
    'openssl',
    ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost', '-days', '1', '-keyout', key, '-out', cert],
    { stdio: ['ignore', 'ignore', 'pipe'], timeout: 30_000 },
  );
  own(cert);
  own(key);
  return [`ssl_cert_file=${cert}`, `ssl_key_file=${key}`];
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Waits (20 s at most) for the postmaster to say it is ready and to accept a TCP connection. The probe is a
 * bare connect and close, which Postgres does not log; an SSLRequest would log "could not accept SSL connection".
 */
async function waitUntilReady(child: ChildProcess, port: number, stderr: string[]): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`postgres exited (${child.exitCode ?? child.signalCode}) before accepting connections:\n${stderr.join('')}`);
    }
    if (stderr.join('').includes('ready to accept connections') && (await portAccepts(port))) return;
    await sleep(50);
  }
  throw new Error(`postgres did not accept connections on 127.0.0.1:${port} within 20 s:\n${stderr.join('')}`);
}

/** Fast shutdown (SIGINT: disconnect clients, no checkpoint wait) by pid, SIGKILL after 10 s. */
const stopPostgres = (child: ChildProcess) => stopChild(child, 'SIGINT', 10_000);
