// The end-to-end lab: a small company in network namespaces. prod, staging, dev and mgmt each get a /24 of
// 198.18.0.0/15 and a veth to a router namespace whose nftables forward chain is the isolation policy
// (lab-firewall.ts); real servers run inside (lab-servers.ts). Everything is removed by destroy(), and also
// on exit, SIGINT, SIGTERM and SIGHUP; namespaces of dead runs are removed when the next lab starts.
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { alive, assertBenchRange, isRoot, missingCommands, namespacePids, namespacesWithPrefix, onProcessEnd, removeStaleRuns, run, stopPids } from '../../bench/netns.js';
import { natsMissing } from '../helpers/nats-server.js';
import { unavailable } from '../helpers/need.js';
import { postgresMissing } from '../helpers/postgres-server.js';
import { redisMissing } from '../helpers/redis-server.js';
import { selfSignedCert } from '../helpers/tls-cert.js';
import { stopChild } from '../helpers/process.js';
import { Firewall, type DenyMode, type Proto, type RuleHandle } from './lab-firewall.js';
import {
  secret, startDnsmasqIn, startNatsIn, startPostgresIn, startRedisIn, startWebIn, waitInside,
  type Check, type ExecResult, type LabNats, type LabProcess, type Launcher, type Resolver, type RunOptions, type StartOptions,
} from './lab-servers.js';
import { address, ENVS, labPlan, network, PORT, siteAddresses, SITES, zone, type Env, type Role, type Site } from './lab-layout.js';

export type { DenyMode, Proto, RuleHandle, ExecResult, LabProcess };
export { address, ENVS, HOST, network, PORT, type Env, type Role, type Site } from './lab-layout.js';

/**
 * Why the lab cannot be built here (root, ip/nft/dnsmasq/setpriv/openssl, PostgreSQL, Redis, nats-server), or
 * undefined. Under CI=true a missing piece throws (need.ts): the e2e tests fail rather than skip.
 */
export function labUnavailable(): string | undefined {
  const commands = ['ip', 'nft', 'dnsmasq', 'setpriv', 'openssl'];
  return (
    unavailable('root', !isRoot(), 'network namespaces and nftables need root: sudo make e2e') ??
    unavailable('lab commands', missingCommands(commands).length > 0, `missing: ${missingCommands(commands).join(', ')}`) ??
    postgresMissing() ??
    redisMissing() ??
    natsMissing()
  );
}

/** Namespaces are `<PREFIX><pid>-<role>`: per run, so parallel runs never clash and dead runs can be found. */
export const PREFIX = 'bhe';
const ROOT = join(import.meta.dirname, '../..');
export const CLI = join(ROOT, 'dist/cli/bulkhead.js');
const DIR_PREFIX = 'bulkhead-lab-';

// Host links (test process ↔ mgmt) are /30s in 198.18.128.0/17, picked from the pid: bench/ uses 198.18.0.0/30 and 198.19/16.
const HOST_LINK_SLOTS = 8192;
const READY_MS = 20_000;
const EXEC_MS = 60_000;
const LOG_BYTES = 64 * 1024;

export interface LabOptions {
  /** Link the test process to mgmt with a /30 of its own (fake receivers, the controller API). Default true. */
  readonly hostLink?: boolean;
}

interface Tracked {
  readonly proc: LabProcess;
  readonly signal: NodeJS.Signals;
}

/** A running lab. Build it with `createLab()`; always `destroy()` it (also done on exit and signals). */
export class Lab implements Launcher {
  readonly id: string;
  readonly dir: string;
  readonly firewall: Firewall;
  /** Set once servers are up. */
  nats!: LabNats;
  readonly resolvers = {} as Record<Env, Resolver>;
  readonly secrets = { postgres: secret(), redis: secret() };
  /** Host end and mgmt end of the host link, when there is one. */
  hostLink: { readonly host: string; readonly mgmt: string } | undefined;
  private readonly tracked = new Set<Tracked>();
  private readonly uninstall: () => void;
  private leakRules: RuleHandle[] = [];
  private destroyed = false;

  constructor() {
    this.id = `${PREFIX}${process.pid}`;
    this.dir = mkdtempSync(join(tmpdir(), `${DIR_PREFIX}${this.id}-`));
    chmodSync(this.dir, 0o755);
    this.uninstall = onProcessEnd(() => this.teardown());
    try {
      this.buildNetwork();
      this.firewall = new Firewall(this.ns('router'), SITES, 'mgmt', PORT.nats);
    } catch (err) {
      try {
        this.destroy();
      } catch {
        // the setup error is the one worth reporting
      }
      throw err;
    }
  }

  /** The namespace name of a role, e.g. `bhe1234-prod`. */
  ns(role: Role): string {
    return `${this.id}-${role}`;
  }

  /** Opens `proto`/`port` from `from` into `to` at the router; `remove()` on the handle closes exactly that hole. */
  allow(from: Site, to: Site, proto: Proto, port: number): RuleHandle {
    return this.firewall.allow(from, to, proto, port);
  }

  /** drop: denied paths are `filtered`. reject: TCP reset → `refused`. prohibit: ICMP admin-prohibited → `unreachable`. */
  setDenyMode(mode: DenyMode): void {
    this.firewall.setDenyMode(mode);
  }

  /** Cuts `site` off from `other` (mgmt by default) both ways, established NATS connections included. */
  partition(site: Site, other: Site = 'mgmt'): void {
    this.firewall.partition(site, other);
  }

  /** Undoes `partition`. */
  heal(site: Site, other: Site = 'mgmt'): void {
    this.firewall.heal(site, other);
  }

  /**
   * The DNS-leak misconfiguration: staging's resolver forwards prod.internal to prod's DNS, with the router
   * rules (udp and tcp 53, staging → prod) that make it work. Resolves once staging's resolver answers
   * db.prod.internal (on) or refuses it again (off).
   */
  async forwardProdInternal(on: boolean): Promise<void> {
    const staging = this.resolvers.staging;
    if (on) {
      if (this.leakRules.length === 0) this.leakRules = (['udp', 'tcp'] as const).map((proto) => this.allow('staging', 'prod', proto, PORT.dns));
      await staging.forward([{ domain: 'prod.internal', server: address('prod', 'dns') }]);
    } else {
      await staging.forward([]);
      this.leakRules.forEach((rule) => rule.remove());
      this.leakRules = [];
    }
    await waitInside(this, 'staging', [{ dns: staging.address, name: 'db.prod.internal', expect: on ? 'answer' : 'refused' }], 10_000, () => staging.process.log());
  }

  /**
   * A PostgreSQL of its own (e.g. the controller's state and history) in `site` on `host:port`, password auth with a
   * fresh password; resolves once it accepts TCP connections from inside `site`. Stopped by destroy() like every server.
   */
  async startDatabase(site: Site, host: string, port: number = PORT.postgres): Promise<{ readonly process: LabProcess; readonly url: string }> {
    assertBenchRange(host);
    const password = secret();
    const proc = await startPostgresIn(this, site, host, port, password);
    await waitInside(this, site, [{ tcp: host, port }], READY_MS, () => proc.log());
    return { process: proc, url: `postgres://postgres:${password}@${host}:${port}/postgres` };
  }

  /** Runs the bulkhead CLI (`node dist/cli/bulkhead.js …argv`) inside a namespace to completion, bounded. */
  exec(role: Role, argv: readonly string[], options: RunOptions = {}): Promise<ExecResult> {
    return this.run(role, process.execPath, [CLI, ...argv], options);
  }

  /** Starts a long-running bulkhead CLI (an agent, the controller) inside a namespace; stopped by destroy(). */
  spawn(role: Role, name: string, argv: readonly string[], options: StartOptions = {}): LabProcess {
    return this.start(role, name, process.execPath, [CLI, ...argv], { cwd: ROOT, ...options });
  }

  /** Runs any command inside a namespace to completion; killed by pid after `timeoutMs` (code -1). */
  run(role: string, command: string, args: readonly string[], options: RunOptions = {}): Promise<ExecResult> {
    const child = spawn('ip', ['netns', 'exec', this.ns(role as Role), command, ...args], {
      cwd: ROOT,
      env: options.env ?? process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timeoutMs = options.timeoutMs ?? EXEC_MS;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        stderr += `\n(killed after ${timeoutMs} ms)`;
        void stopChild(child, 'SIGKILL', 1000);
      }, timeoutMs);
      child.once('error', (err) => {
        clearTimeout(timer);
        resolve({ code: -1, stdout, stderr: `${stderr}${err.message}` });
      });
      child.once('close', (code) => {
        clearTimeout(timer);
        resolve({ code: code ?? -1, stdout, stderr });
      });
    });
  }

  /** Starts any long-running command inside a namespace, tracked so destroy() stops it by pid. */
  start(role: string, name: string, command: string, args: readonly string[], options: StartOptions = {}): LabProcess {
    if (this.destroyed) throw new Error(`the lab ${this.id} is destroyed`);
    const child: ChildProcess = spawn('ip', ['netns', 'exec', this.ns(role as Role), command, ...args], {
      cwd: options.cwd ?? this.dir,
      env: options.env ?? process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let log = '';
    const keep = (d: string) => (log = (log + d).slice(-LOG_BYTES));
    child.stdout!.setEncoding('utf8').on('data', keep);
    child.stderr!.setEncoding('utf8').on('data', keep);
    child.on('error', (err) => keep(`\nspawn failed: ${err.message}\n`));
    const signal = options.stopSignal ?? 'SIGTERM';
    const proc: LabProcess = { name, child, log: () => log, stop: () => stopChild(child, signal, 10_000) };
    this.tracked.add({ proc, signal });
    return proc;
  }

  /** Every process the lab started, with the tail of its output: for failure messages. */
  logs(): string {
    return [...this.tracked].map(({ proc }) => `--- ${proc.name} (pid ${proc.child.pid}, exit ${proc.child.exitCode ?? proc.child.signalCode ?? 'running'})\n${proc.log().slice(-3000)}`).join('\n');
  }

  /**
   * Writes the plan covering the lab (environments, every server as a target, NATS allowed from every
   * environment) to `<dir>/<file>` and returns its path and text. `extra` adds or replaces top-level keys.
   */
  plan(extra: Readonly<Record<string, unknown>> = {}, file = 'plan.yaml'): { path: string; text: string } {
    const text = stringify({ ...labPlan(), ...extra });
    const path = join(this.dir, file);
    writeFileSync(path, text);
    return { path, text };
  }

  /**
   * Stops every process the lab started (PostgreSQL with SIGINT, the rest SIGTERM; SIGKILL after 10 s), kills
   * anything else left inside its namespaces, deletes them and the directory. Synchronous and idempotent;
   * throws if a namespace of this lab remains.
   */
  destroy(): void {
    this.uninstall();
    const left = namespacesWithPrefix(`${this.id}-`);
    if (left.length > 0) throw new Error(`namespaces left after destroy: ${left.join(' ')}`);
  }

  private teardown(): void {
    this.destroyed = true;
    const live = [...this.tracked].filter(({ proc }) => proc.child.pid !== undefined && proc.child.exitCode === null && proc.child.signalCode === null);
    stopPids(live.map(({ proc, signal }) => ({ pid: proc.child.pid!, signal })), 10_000);
    const roles: Role[] = [...SITES, 'router'];
    // Anything still inside (a backend a crashed postmaster left, a forked child) was started by this lab.
    stopPids(roles.flatMap((role) => namespacePids(this.ns(role)).map((pid) => ({ pid, signal: 'SIGKILL' as const }))), 2000);
    for (const role of roles) quietly('ip', ['netns', 'del', this.ns(role)]);
    if (this.hostLink) quietly('ip', ['link', 'del', `${this.id}h`]);
    rmSync(this.dir, { recursive: true, force: true });
  }

  private buildNetwork(): void {
    const router = this.ns('router');
    for (const role of ['router', ...SITES] as Role[]) {
      run('ip', ['netns', 'add', this.ns(role)]);
      run('ip', ['-n', this.ns(role), 'link', 'set', 'dev', 'lo', 'up']);
      // Forwarding only in the router: no site, mgmt with its host link included, may become a bridge.
      run('ip', ['netns', 'exec', this.ns(role), 'sysctl', '-qw', `net.ipv4.ip_forward=${role === 'router' ? 1 : 0}`]);
    }
    // The kernel rate-limits ICMP errors per destination (a burst of about 6, then 1/s): a REJECT with
    // admin-prohibited would leave some of a burst of probes unanswered (`filtered`). Real routers do this
    // too, but the lab wants each outcome to follow from the rule alone.
    run('ip', ['netns', 'exec', router, 'sysctl', '-qw', 'net.ipv4.icmp_ratelimit=0']);
    for (const site of SITES) {
      const ns = this.ns(site);
      [network(site), address(site, 'router'), address(site, 'self')].forEach(assertBenchRange);
      // The router's end is named after the site, so nftables rules read `iifname "staging" oifname "prod"`.
      run('ip', ['-n', router, 'link', 'add', 'name', site, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
      run('ip', ['-n', router, 'addr', 'add', `${address(site, 'router')}/24`, 'dev', site]);
      run('ip', ['-n', router, 'link', 'set', 'dev', site, 'up']);
      for (const ip of siteAddresses(site)) run('ip', ['-n', ns, 'addr', 'add', `${ip}/24`, 'dev', 'eth0']);
      run('ip', ['-n', ns, 'link', 'set', 'dev', 'eth0', 'up']);
      run('ip', ['-n', ns, 'route', 'add', 'default', 'via', address(site, 'router')]);
    }
  }

  /** (createLab) Links the host to mgmt with a /30 nobody else routes; the host gets no route to any site network. */
  addHostLink(): void {
    const hostIf = `${this.id}h`;
    for (let i = 0; i < 16; i++) {
      const slot = (process.pid + i) % HOST_LINK_SLOTS;
      const base = (198 << 24) + (18 << 16) + (128 << 8) + slot * 4;
      const [net, host, mgmt] = [base, base + 1, base + 2].map(ipv4);
      if (run('ip', ['-4', 'route', 'show', `${net}/30`]).trim() !== '' || run('ip', ['-4', 'addr', 'show', 'to', `${net}/30`]).trim() !== '') continue;
      [host!, mgmt!].forEach(assertBenchRange);
      run('ip', ['link', 'add', 'name', hostIf, 'type', 'veth', 'peer', 'name', 'host0', 'netns', this.ns('mgmt')]);
      this.hostLink = { host: host!, mgmt: mgmt! };
      run('ip', ['addr', 'add', `${host}/30`, 'dev', hostIf]);
      run('ip', ['link', 'set', 'dev', hostIf, 'up']);
      run('ip', ['-n', this.ns('mgmt'), 'addr', 'add', `${mgmt}/30`, 'dev', 'host0']);
      run('ip', ['-n', this.ns('mgmt'), 'link', 'set', 'dev', 'host0', 'up']);
      return;
    }
    throw new Error('no free /30 for the host link in 198.18.128.0/17 after 16 tries');
  }

  /** (createLab) Starts every server and waits (bounded) until each answers from inside its namespace. */
  async startServers(): Promise<void> {
    for (const env of ENVS) this.resolvers[env] = startDnsmasqIn(this, env, address(env, 'dns'), `${env}.internal`, zone(env));
    for (const env of ['staging', 'dev'] as const) startWebIn(this, env, `${env}-web`, address(env, 'web'), PORT.http);
    startRedisIn(this, 'prod', address('prod', 'cache'), PORT.redis, this.secrets.redis);
    startWebIn(this, 'prod', 'prod-api', address('prod', 'web'), PORT.https, selfSignedCert('api.prod.internal'));
    this.nats = startNatsIn(this, 'mgmt', address('mgmt', 'nats'), PORT.nats);
    await startPostgresIn(this, 'prod', address('prod', 'db'), PORT.postgres, this.secrets.postgres);

    const ready: Record<Site, Check[]> = {
      prod: [
        { tcp: address('prod', 'db'), port: PORT.postgres },
        { tcp: address('prod', 'cache'), port: PORT.redis },
        { tcp: address('prod', 'web'), port: PORT.https },
        { dns: address('prod', 'dns'), name: 'db.prod.internal', expect: 'answer' },
      ],
      staging: [{ tcp: address('staging', 'web'), port: PORT.http }, { dns: address('staging', 'dns'), name: 'web.staging.internal', expect: 'answer' }],
      dev: [{ tcp: address('dev', 'web'), port: PORT.http }, { dns: address('dev', 'dns'), name: 'web.dev.internal', expect: 'answer' }],
      mgmt: [{ tcp: address('mgmt', 'nats'), port: PORT.nats }],
    };
    await Promise.all(SITES.map((site) => waitInside(this, site, ready[site], READY_MS)));
  }
}

/** Builds the lab: removes dead runs' namespaces, creates the topology and firewall, starts the servers. */
export async function createLab(options: LabOptions = {}): Promise<Lab> {
  const stale = [...removeStaleRuns(PREFIX), ...removeStaleDirs()];
  if (stale.length > 0) console.warn(`removed what dead runs left: ${stale.join(' ')}`);
  const lab = new Lab();
  try {
    if (options.hostLink ?? true) lab.addHostLink();
    await lab.startServers();
  } catch (err) {
    const logs = lab.logs();
    try {
      lab.destroy();
    } catch (cleanup) {
      console.error(`while cleaning up a lab that did not start: ${(cleanup as Error).message}`);
    }
    throw new Error(`${(err as Error).message}\n${logs}`, { cause: err });
  }
  return lab;
}

/** Temporary directories `bulkhead-lab-bhe<pid>-*` of runs whose pid is gone (their namespaces went first). */
function removeStaleDirs(): string[] {
  const pattern = new RegExp(`^${DIR_PREFIX}${PREFIX}(\\d+)-`);
  return readdirSync(tmpdir()).filter((name) => {
    const pid = pattern.exec(name)?.[1];
    if (pid === undefined || alive(Number(pid))) return false;
    rmSync(join(tmpdir(), name), { recursive: true, force: true });
    return true;
  });
}


function ipv4(n: number): string {
  return [24, 16, 8, 0].map((shift) => (n >>> shift) & 255).join('.');
}

/** Runs a command whose failure means there was nothing left to remove. */
function quietly(command: string, args: readonly string[]): void {
  try {
    run(command, args);
  } catch {
    // already gone
  }
}
