// Network namespaces for benchmarks and end-to-end tests: a namespace joined to the host by a veth pair,
// with addresses only from 198.18.0.0/15 (RFC 2544 benchmarking space), and cleanup that survives crashes.
import { spawn, spawnSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { BlockList, isIPv4 } from 'node:net';

/** The only addresses these helpers will configure: RFC 2544's benchmarking network. */
export const BENCH_RANGE = '198.18.0.0/15';
const benchRange = new BlockList();
benchRange.addSubnet('198.18.0.0', 15, 'ipv4');

const COMMAND_TIMEOUT_MS = 10_000;

/** A namespace this process created, linked to the host through `hostIf` ↔ `nsIf`. */
export interface Namespace {
  readonly name: string;
  readonly hostIf: string;
  readonly nsIf: string;
  readonly hostAddress: string;
  readonly nsAddress: string;
}

export interface NamespaceOptions {
  /** Namespace names are `<prefix>-<pid>`, so stale ones can be matched to their (dead) creator. */
  readonly prefix: string;
  /** Short prefix for the host-side veth name, `<linkPrefix><pid>` (at most 15 characters in all). */
  readonly linkPrefix: string;
  /** The /30 link: host side and namespace side, both inside 198.18.0.0/15. */
  readonly hostAddress: string;
  readonly nsAddress: string;
  readonly prefixLength?: number;
  /** Networks (inside 198.18.0.0/15) answered locally by the namespace and routed to it from the host. */
  readonly localNetworks?: readonly string[];
}

/** Thrown when a command that sets up a namespace fails; carries the command and its stderr. */
export class NetnsError extends Error {
  readonly code = 'NETNS_COMMAND_FAILED';
}

/** Whether this process can create namespaces (effective uid 0). */
export function isRoot(): boolean {
  return typeof process.geteuid === 'function' && process.geteuid() === 0;
}

/** The commands of `names` that are not on PATH (for a clear message instead of a spawn error). */
export function missingCommands(names: readonly string[]): string[] {
  return names.filter((name) => spawnSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore', timeout: COMMAND_TIMEOUT_MS }).status !== 0);
}

/** Runs a command synchronously (bounded), throwing NetnsError with its stderr when it fails. */
export function run(command: string, args: readonly string[], input?: string): string {
  const result = spawnSync(command, args, { input, encoding: 'utf8', timeout: COMMAND_TIMEOUT_MS });
  if (result.error || result.status !== 0) {
    const why = result.error ? String(result.error.message) : (result.stderr || `exit ${result.status}`).trim();
    throw new NetnsError(`${command} ${args.join(' ')}: ${why}`);
  }
  return result.stdout;
}

/** Throws unless `cidrOrAddress` lies wholly inside 198.18.0.0/15: the safety net of the network rules. */
export function assertBenchRange(cidrOrAddress: string): void {
  const [address = '', lengthText] = cidrOrAddress.split('/');
  const length = lengthText === undefined ? 32 : Number(lengthText);
  if (!isIPv4(address) || !Number.isInteger(length) || length < 15 || length > 32 || !benchRange.check(address, 'ipv4')) {
    throw new NetnsError(`${cidrOrAddress} is outside ${BENCH_RANGE}; refusing to configure it`);
  }
}

/**
 * Creates `<prefix>-<pid>`, a veth pair into it, addresses on both ends, the namespace's loopback,
 * `localNetworks` as local routes inside it and routes to them from the host. On any failure the
 * partial setup is removed before the error is rethrown.
 */
export function createNamespace(opts: NamespaceOptions): Namespace {
  const length = opts.prefixLength ?? 30;
  const locals = opts.localNetworks ?? [];
  [opts.hostAddress, opts.nsAddress, ...locals].forEach(assertBenchRange);
  const ns: Namespace = {
    name: `${opts.prefix}-${process.pid}`,
    hostIf: `${opts.linkPrefix}${process.pid}`,
    nsIf: `${opts.linkPrefix}${process.pid}n`,
    hostAddress: opts.hostAddress,
    nsAddress: opts.nsAddress,
  };
  if (ns.nsIf.length > 15) throw new NetnsError(`interface name ${ns.nsIf} is longer than 15 characters`);
  for (const cidr of locals) {
    // A route the host already has means another run (or something else) owns it: do not steal it.
    const existing = run('ip', ['-4', 'route', 'show', cidr]).trim();
    if (existing !== '') throw new NetnsError(`the host already routes ${cidr} (${existing}); is another benchmark running?`);
  }
  try {
    run('ip', ['netns', 'add', ns.name]);
    run('ip', ['link', 'add', ns.hostIf, 'type', 'veth', 'peer', 'name', ns.nsIf, 'netns', ns.name]);
    run('ip', ['addr', 'add', `${ns.hostAddress}/${length}`, 'dev', ns.hostIf]);
    run('ip', ['link', 'set', ns.hostIf, 'up']);
    run('ip', ['-n', ns.name, 'addr', 'add', `${ns.nsAddress}/${length}`, 'dev', ns.nsIf]);
    run('ip', ['-n', ns.name, 'link', 'set', ns.nsIf, 'up']);
    run('ip', ['-n', ns.name, 'link', 'set', 'lo', 'up']);
    for (const cidr of locals) {
      // Every address of the network is local in the namespace, so one wildcard listener answers for all.
      run('ip', ['-n', ns.name, 'route', 'add', 'local', cidr, 'dev', 'lo']);
      run('ip', ['route', 'add', cidr, 'via', ns.nsAddress, 'dev', ns.hostIf]);
    }
  } catch (err) {
    removeNamespace(ns);
    throw err;
  }
  return ns;
}

/** Loads an nftables ruleset inside the namespace. */
export function nftIn(ns: Pick<Namespace, 'name'>, ruleset: string): void {
  run('ip', ['netns', 'exec', ns.name, 'nft', '-f', '-'], ruleset);
}

/**
 * Starts a command inside the namespace; `ip netns exec` execs it, so the child's pid is the command's.
 * `options` (environment, stdio, cwd) go to spawn; stdout is piped and stderr inherited unless they say otherwise.
 */
export function spawnIn(ns: Pick<Namespace, 'name'>, command: string, args: readonly string[], options: SpawnOptions = {}): ChildProcess {
  return spawn('ip', ['netns', 'exec', ns.name, command, ...args], { stdio: ['ignore', 'pipe', 'inherit'], ...options });
}

/**
 * Removes the namespace and its veth pair (deleting the host end deletes both, and the host routes
 * through it). Synchronous and idempotent, so it can run in signal and exit handlers.
 */
export function removeNamespace(ns: Pick<Namespace, 'name' | 'hostIf'>): void {
  quiet('ip', ['link', 'del', ns.hostIf]);
  quiet('ip', ['netns', 'del', ns.name]);
}

/**
 * Removes namespaces `<prefix>-<pid>` and host links `<linkPrefix><pid>` left by runs whose process
 * no longer exists (killed with SIGKILL, or a crash before cleanup). Returns what was removed.
 */
export function removeStale(prefix: string, linkPrefix: string): string[] {
  const removed: string[] = [];
  const nsPattern = new RegExp(`^${escape(prefix)}-(\\d+)$`);
  for (const line of quiet('ip', ['netns', 'list']).split('\n')) {
    const name = line.split(' ')[0] ?? '';
    const pid = nsPattern.exec(name)?.[1];
    if (pid !== undefined && !alive(Number(pid))) {
      quiet('ip', ['link', 'del', `${linkPrefix}${pid}`]);
      quiet('ip', ['netns', 'del', name]);
      removed.push(name);
    }
  }
  const linkPattern = new RegExp(`^${escape(linkPrefix)}(\\d+)(@\\S*)?$`);
  for (const line of quiet('ip', ['-o', 'link', 'show', 'type', 'veth']).split('\n')) {
    const name = line.split(': ')[1] ?? '';
    const match = linkPattern.exec(name);
    if (match && !alive(Number(match[1]))) {
      quiet('ip', ['link', 'del', name.split('@')[0]!]);
      removed.push(name.split('@')[0]!);
    }
  }
  return removed;
}

/**
 * Removes the namespace when the process ends: normal exit, uncaught error, SIGINT, SIGTERM or SIGHUP.
 * `beforeRemove` (synchronous) stops processes started inside it first. Returns a function that
 * removes it now and uninstalls the handlers.
 */
export function removeOnExit(ns: Namespace, beforeRemove: () => void = () => undefined): () => void {
  return onProcessEnd(() => {
    try {
      beforeRemove();
    } finally {
      removeNamespace(ns);
    }
  });
}

/**
 * Runs `cleanup` (synchronous) once when the process ends: normal exit, uncaught error, SIGINT, SIGTERM or
 * SIGHUP (then exits with 128 + the signal number). Returns a function that runs it now and uninstalls it.
 */
export function onProcessEnd(cleanup: () => void): () => void {
  let done = false;
  const once = () => {
    if (done) return;
    done = true;
    cleanup();
  };
  const onSignal = (signal: NodeJS.Signals) => {
    once();
    process.exit(128 + (signal === 'SIGINT' ? 2 : signal === 'SIGHUP' ? 1 : 15));
  };
  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  signals.forEach((s) => process.on(s, onSignal));
  process.on('exit', once);
  return () => {
    signals.forEach((s) => process.off(s, onSignal));
    process.off('exit', once);
    once();
  };
}

/**
 * Stops a process we started, by its pid: SIGTERM, then SIGKILL after `graceMs`. Synchronous, so it
 * also works in exit and signal handlers.
 */
export function stopProcess(child: ChildProcess, graceMs = 2000, signal: NodeJS.Signals = 'SIGTERM'): void {
  const pid = child.pid;
  if (pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  stopPids([{ pid, signal }], graceMs);
}

/**
 * Stops several processes at once, by pid: each gets its own signal, then all are waited for together
 * and SIGKILLed after `graceMs`. Synchronous, for exit and signal handlers.
 */
export function stopPids(targets: readonly { readonly pid: number; readonly signal: NodeJS.Signals }[], graceMs = 2000): void {
  const live = targets.filter(({ pid, signal }) => {
    try {
      process.kill(pid, signal);
      return true;
    } catch {
      return false;
    }
  });
  const deadline = Date.now() + graceMs;
  const pause = new Int32Array(new SharedArrayBuffer(4));
  while (Date.now() < deadline && !live.every(({ pid }) => exited(pid))) Atomics.wait(pause, 0, 0, 5);
  for (const { pid } of live) {
    if (exited(pid)) continue;
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

/** The pids of the processes living in a namespace (empty when it does not exist). */
export function namespacePids(name: string): number[] {
  return quiet('ip', ['netns', 'pids', name])
    .split('\n')
    .map((line) => Number(line.trim()))
    .filter((pid) => Number.isInteger(pid) && pid > 0);
}

/**
 * Removes the namespaces of runs named `<prefix><pid>-<role>` whose pid no longer exists: first every
 * process still inside them (by pid; they were started by that run), then the namespaces, which takes
 * their veth pairs with them. Returns the namespaces removed.
 */
export function removeStaleRuns(prefix: string): string[] {
  const pattern = new RegExp(`^${escape(prefix)}(\\d+)-[a-z0-9-]+$`);
  const stale = quiet('ip', ['netns', 'list'])
    .split('\n')
    .map((line) => line.split(' ')[0] ?? '')
    .filter((name) => {
      const pid = pattern.exec(name)?.[1];
      return pid !== undefined && !alive(Number(pid));
    });
  stopPids(stale.flatMap((name) => namespacePids(name).map((pid) => ({ pid, signal: 'SIGKILL' as const }))), 2000);
  for (const name of stale) quiet('ip', ['netns', 'del', name]);
  return stale;
}

/** Namespaces whose name starts with `prefix`, as `ip netns list` shows them now. */
export function namespacesWithPrefix(prefix: string): string[] {
  return quiet('ip', ['netns', 'list'])
    .split('\n')
    .map((line) => line.split(' ')[0] ?? '')
    .filter((name) => name.startsWith(prefix));
}

/** Whether a pid has exited. A zombie counts: while we block the loop, libuv cannot reap our child. */
function exited(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.charAt(stat.lastIndexOf(')') + 2) === 'Z';
  } catch {
    return true;
  }
}

function quiet(command: string, args: readonly string[]): string {
  const result = spawnSync(command, args, { encoding: 'utf8', timeout: COMMAND_TIMEOUT_MS, stdio: ['ignore', 'pipe', 'ignore'] });
  return result.stdout ?? '';
}

/** Whether a process with this pid exists (EPERM: it does, owned by someone else). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
