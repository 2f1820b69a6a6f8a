// Benchmark of the probe engine: 1,000 TCP targets in a network namespace of our own (10 % open, 45 % refused,
// 45 % dropped by nftables), swept by runFrom in this very process and compared with the ground truth.
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { runFrom, type RunResult } from '../agent/engine.js';
import { parsePlanText } from '../core/plan-load.js';
import { createNamespace, isRoot, missingCommands, nftIn, removeOnExit, removeStale, spawnIn, stopProcess, type Namespace } from './netns.js';

const PREFIX = 'bhbench';
const LINK_PREFIX = 'bhb';
const OPEN = 100;
const REFUSED = 450;
const FILTERED = 450;
const TIMEOUT_MS = 1000;
const CONCURRENCY = 256;
const FLOOR_MS = Math.ceil(FILTERED / CONCURRENCY) * TIMEOUT_MS;
const OPEN_PORT = 7001;
const CLOSED_PORT = 7002;
// Every target address is local inside the namespace; the upper half of the /16 is dropped by nftables.
const TARGET_NET = '198.19.0.0/16';
const FILTERED_NET = '198.19.128.0/17';
const LISTENER_READY_MS = 10_000;
const SWEEP_LIMIT_MS = 60_000;
const CHILD_LIMIT_MS = 120_000;

type Expected = 'open' | 'refused' | 'filtered';
interface Target {
  readonly name: string;
  readonly address: string;
  readonly port: number;
  readonly expected: Expected;
}

/** What one sweep measured. The `*StartMs` and overshoot figures say where time above the floor went. */
interface Figures {
  wallMs: number;
  ratio: number;
  sweepCpuS: number;
  sweepSystemCpuS: number;
  processCpuS: number;
  rssBeforeMb: number;
  peakRssMb: number;
  agreement: number;
  firstStartMs: number;
  wave1LastStartMs: number;
  wave2LastStartMs: number;
  overshootMedianMs: number;
  overshootMaxMs: number;
  mismatches: string[];
}
type Figure = Exclude<keyof Figures, 'mismatches'>;

/** mulberry32: a tiny seeded PRNG, so every run shuffles the targets the same way. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The targets with their expected outcomes, shuffled by `seed`. Each has an address of its own. */
function groundTruth(seed: number): Target[] {
  // Third octet bases: open from 198.19.1.x, refused from 198.19.65.x, filtered from 198.19.129.x.
  const kinds: [Expected, number, number][] = [
    ['open', OPEN, 1],
    ['refused', REFUSED, 65],
    ['filtered', FILTERED, 129],
  ];
  const list = kinds.flatMap(([expected, count, base]) =>
    Array.from({ length: count }, (_, j) => ({
      address: `198.19.${base + Math.floor(j / 250)}.${1 + (j % 250)}`,
      // Half the filtered targets use the listening port: the drop must win whatever listens behind it.
      port: expected === 'open' || (expected === 'filtered' && j % 2 === 0) ? OPEN_PORT : CLOSED_PORT,
      expected,
    })),
  );
  const random = prng(seed);
  for (let i = list.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [list[i], list[j]] = [list[j]!, list[i]!];
  }
  return list.map((t, i) => ({ name: `t${String(i).padStart(4, '0')}`, ...t }));
}

/** One wildcard listener inside the namespace answers for every open address; it exits when we are gone. */
function startListener(ns: Namespace): Promise<ChildProcess> {
  const script = `
const server = require('node:net').createServer((c) => { c.on('error', () => {}); c.destroy(); });
server.listen({ host: '0.0.0.0', port: ${OPEN_PORT}, backlog: 4096 }, () => process.stdout.write('ready\\n'));
setInterval(() => { try { process.kill(${process.pid}, 0); } catch { process.exit(0); } }, 500);
setTimeout(() => process.exit(0), ${CHILD_LIMIT_MS}).unref();`;
  const child = spawnIn(ns, process.execPath, ['-e', script]);
  return new Promise((resolve, reject) => {
    const fail = (err: Error) => {
      clearTimeout(timer);
      stopProcess(child);
      reject(err);
    };
    const timer = setTimeout(() => fail(new Error(`the listener did not start within ${LISTENER_READY_MS} ms`)), LISTENER_READY_MS);
    child.once('error', fail);
    child.once('exit', (code) => fail(new Error(`the listener exited early (code ${code})`)));
    child.stdout!.once('data', () => {
      clearTimeout(timer);
      child.removeAllListeners('exit');
      resolve(child);
    });
  });
}

/** One sweep in this process: set up the namespace, measure runFrom, judge it, always tear down. */
async function sweepOnce(seed: number): Promise<Figures> {
  const stale = removeStale(PREFIX, LINK_PREFIX);
  if (stale.length > 0) console.log(`removed stale: ${stale.join(' ')}`);

  // The control: the prober's own environment must be reachable, or the sweep would prove nothing.
  const control = net.createServer((c) => c.destroy());
  await new Promise<void>((resolve) => control.listen(0, '127.0.0.1', resolve));
  const controlPort = (control.address() as net.AddressInfo).port;

  let listener: ChildProcess | undefined;
  const ns = createNamespace({ prefix: PREFIX, linkPrefix: LINK_PREFIX, hostAddress: '198.18.0.1', nsAddress: '198.18.0.2', localNetworks: [TARGET_NET] });
  const teardown = removeOnExit(ns, () => listener && stopProcess(listener));
  try {
    nftIn(ns, `table inet ${PREFIX} {\n  chain input {\n    type filter hook input priority 0; policy accept;\n    ip daddr ${FILTERED_NET} drop\n  }\n}\n`);
    listener = await startListener(ns);

    const truth = groundTruth(seed);
    const doc = {
      version: 1,
      environments: { bench: { networks: ['127.0.0.0/8'] }, target: { networks: [TARGET_NET] } },
      targets: [
        { name: 'control', env: 'bench', probe: 'tcp', host: '127.0.0.1', port: controlPort },
        ...truth.map((t) => ({ name: t.name, env: 'target', probe: 'tcp', host: t.address, port: t.port })),
      ],
      schedule: { timeout: `${TIMEOUT_MS}ms`, concurrency: CONCURRENCY, attempts: 1, stagger: '0ms' },
    };
    const { plan } = parsePlanText(JSON.stringify(doc), 'sweep-plan.json');

    const rssBeforeMb = process.memoryUsage.rss() / 2 ** 20;
    const abort = new AbortController();
    const limit = setTimeout(() => abort.abort(new Error('the sweep took too long')), SWEEP_LIMIT_MS);
    const finishedAt = new Map<string, number>();
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    const result = await runFrom(plan, 'bench', { signal: abort.signal, onObservation: (o) => finishedAt.set(o.target, performance.now() - t0) });
    const wallMs = performance.now() - t0;
    const cpu = process.cpuUsage(cpu0);
    clearTimeout(limit);

    const whole = process.cpuUsage();
    return {
      wallMs,
      ratio: wallMs / FLOOR_MS,
      sweepCpuS: (cpu.user + cpu.system) / 1e6,
      sweepSystemCpuS: cpu.system / 1e6,
      processCpuS: (whole.user + whole.system) / 1e6,
      rssBeforeMb,
      peakRssMb: process.resourceUsage().maxRSS / 1024,
      ...judge(truth, result, finishedAt),
    };
  } finally {
    teardown();
    control.close();
  }
}

/** Compares each observation with the ground truth, and times the filtered attempts' starts. */
function judge(truth: readonly Target[], result: RunResult, finishedAt: ReadonlyMap<string, number>) {
  const expected = new Map<string, Expected>([['control', 'open'], ...truth.map((t) => [t.name, t.expected] as const)]);
  const mismatches = result.observations
    .filter((o) => o.outcome !== expected.get(o.target) || o.attempts !== 1)
    .map((o) => `${o.target} ${o.address}:${o.port} expected ${expected.get(o.target)} got ${o.outcome} (${o.evidence.errno ?? '-'}, ${o.timings.totalMs} ms)`);
  const seen = new Set(result.observations.map((o) => o.target));
  for (const name of expected.keys()) if (!seen.has(name)) mismatches.push(`${name}: no observation`);

  // An attempt started at its completion minus its own duration; filtered ones come in two waves.
  const starts = result.observations.map((o) => ({ o, start: (finishedAt.get(o.target) ?? NaN) - o.timings.totalMs }));
  const filtered = starts.filter((s) => expected.get(s.o.target) === 'filtered');
  const waveLast = (second: boolean) => Math.max(...filtered.filter((s) => s.start >= TIMEOUT_MS / 2 === second).map((s) => s.start));
  const overshoot = filtered.map((s) => s.o.timings.totalMs - TIMEOUT_MS);
  return {
    agreement: (100 * (expected.size - mismatches.length)) / expected.size,
    firstStartMs: Math.min(...starts.map((s) => s.start)),
    wave1LastStartMs: waveLast(false),
    wave2LastStartMs: waveLast(true),
    overshootMedianMs: median(overshoot),
    overshootMaxMs: Math.max(...overshoot),
    mismatches,
  };
}

function report(f: Figures, label: string, agreementLabel = `${label}agreement`): void {
  const line = (text: string) => console.log(`${label}${text}`);
  line(`targets: ${OPEN + REFUSED + FILTERED} (open ${OPEN}, refused ${REFUSED}, filtered ${FILTERED}) + 1 control; timeout ${TIMEOUT_MS} ms, concurrency ${CONCURRENCY}, attempts 1, stagger 0`);
  line(`sweep wall ms: ${f.wallMs.toFixed(1)}`);
  line(`floor ms: ${FLOOR_MS} (ceil(${FILTERED}/${CONCURRENCY}) x ${TIMEOUT_MS})`);
  line(`ratio wall/floor: ${f.ratio.toFixed(4)} (target <= 1.05)`);
  line(`sweep cpu s: ${f.sweepCpuS.toFixed(3)} (system ${f.sweepSystemCpuS.toFixed(3)})`);
  line(`process cpu s: ${f.processCpuS.toFixed(3)} (whole process, including startup and namespace setup)`);
  line(`rss before sweep MB: ${f.rssBeforeMb.toFixed(1)}`);
  line(`peak rss MB: ${f.peakRssMb.toFixed(1)} (target <= 60)`);
  line(
    `breakdown ms: first attempt +${f.firstStartMs.toFixed(1)}, last filtered start of wave 1 +${f.wave1LastStartMs.toFixed(1)}, ` +
      `of wave 2 +${f.wave2LastStartMs.toFixed(1)}, timeout overshoot median ${f.overshootMedianMs.toFixed(1)} max ${f.overshootMaxMs.toFixed(1)}`,
  );
  console.log(`${agreementLabel}: ${f.agreement.toFixed(2)} % (target 100 %)`);
  for (const m of f.mismatches.slice(0, 50)) line(`mismatch: ${m}`);
  if (f.mismatches.length > 50) line(`mismatch: ... and ${f.mismatches.length - 50} more`);
}

/** One sweep in a fresh child process of this script, which sets up and cleans up by itself. */
function runChild(seed: number, index: number): Promise<Figures> {
  const script = fileURLToPath(import.meta.url);
  const child = spawn(process.execPath, [...process.execArgv, script, '--child', '--seed', String(seed)], { stdio: ['ignore', 'pipe', 'inherit'] });
  let interrupted: NodeJS.Signals | undefined;
  // The child removes its namespace on SIGTERM; we only wait for it (bounded by CHILD_LIMIT_MS).
  const forward = (signal: NodeJS.Signals) => {
    interrupted = signal;
    if (child.pid !== undefined && child.exitCode === null) process.kill(child.pid, 'SIGTERM');
  };
  process.on('SIGINT', forward).on('SIGTERM', forward).on('SIGHUP', forward);
  const timer = setTimeout(() => stopProcess(child), CHILD_LIMIT_MS);
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  return new Promise((resolve, reject) => {
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      process.off('SIGINT', forward).off('SIGTERM', forward).off('SIGHUP', forward);
      const lines = out.split('\n');
      for (const line of lines) if (line !== '' && !line.startsWith('figures ')) console.log(`run ${index}: ${line}`);
      const json = lines.find((l) => l.startsWith('figures '));
      if (interrupted) return reject(new Error(`interrupted by ${interrupted}`));
      if (json === undefined) return reject(new Error(`run ${index} ended without figures (exit ${code ?? signal})`));
      resolve(JSON.parse(json.slice('figures '.length)) as Figures);
    });
  });
}

function median(values: readonly number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

function option(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  if (i === -1) return fallback;
  const value = Number(process.argv[i + 1]);
  if (!Number.isInteger(value) || value < 1) throw new Error(`${name} expects a positive integer`);
  return value;
}

async function main(): Promise<number> {
  if (!isRoot()) {
    console.error('bench/sweep needs root: it creates a network namespace, a veth pair, a route and nftables rules. Run it as root.');
    return 2;
  }
  const missing = missingCommands(['ip', 'nft']);
  if (missing.length > 0) {
    console.error(`bench/sweep needs ${missing.join(' and ')} (Debian packages iproute2 and nftables)`);
    return 2;
  }
  const seed = option('--seed', 1);
  const runs = process.argv.includes('--child') ? 1 : option('--runs', 5);
  if (runs === 1) {
    const figures = await sweepOnce(seed);
    report(figures, '');
    if (process.argv.includes('--child')) console.log(`figures ${JSON.stringify(figures)}`);
    return figures.agreement < 100 ? 1 : 0;
  }

  const all: Figures[] = [];
  for (let i = 1; i <= runs; i++) all.push(await runChild(seed, i));
  const keys = Object.keys(all[0]!).filter((k): k is Figure => k !== 'mismatches');
  const medians = Object.fromEntries(keys.map((k) => [k, median(all.map((f) => f[k]))])) as Record<Figure, number>;
  console.log(`median of ${runs} runs, each in a fresh process (seed ${seed}, node ${process.execArgv.join(' ') || 'without flags'})`);
  report({ ...medians, agreement: Math.min(...all.map((f) => f.agreement)), mismatches: [] }, 'median ', 'worst agreement of all runs');
  const each = (k: Figure, digits: number) => all.map((f) => f[k].toFixed(digits)).join(' ');
  console.log(`per run: wall ms [${each('wallMs', 1)}] cpu s [${each('sweepCpuS', 3)}] peak rss MB [${each('peakRssMb', 1)}] agreement % [${each('agreement', 2)}]`);
  return all.some((f) => f.agreement < 100) ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(`bench/sweep: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(err instanceof Error && err.message.startsWith('interrupted') ? 130 : 1);
  },
);
