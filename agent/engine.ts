// The probe engine: runs every path one environment must try, with bounded concurrency, a start stagger,
// a per-attempt timeout and retries for non-open attempts only. The audit and the agent both use it.
import { setMaxListeners } from 'node:events';
import { performance } from 'node:perf_hooks';
import type { Observation } from '../core/observation.js';
import type { ProbeResult } from '../core/outcome.js';
import type { Plan, ProbeKind, Schedule } from '../core/plan.js';
import { PROBES } from '../probes/index.js';
import type { ProbeFn, ProbeRequest } from '../probes/types.js';
import { planPaths, resolverFor, type PlannedPath, type ResolveHost } from './paths.js';

export type ProbeLoader = { readonly [K in ProbeKind]: () => Promise<ProbeFn<K>> };

export interface RunOptions {
  /** Cancels the whole run; attempts in flight end with outcome `error`. */
  readonly signal?: AbortSignal;
  /** Overrides of the plan's schedule (the audit's `--timeout`, `--concurrency`, tests). */
  readonly schedule?: Partial<Schedule>;
  /** Called after each path completes, for progress displays. */
  readonly onObservation?: (observation: Observation, done: number, total: number) => void;
  /** Seams for tests: name resolution and the probe functions. */
  readonly resolve?: ResolveHost;
  readonly probes?: ProbeLoader;
}

export interface RunResult {
  readonly from: string;
  readonly startedAt: Date;
  readonly finishedAt: Date;
  /** Controls first, then cross-environment paths, in plan order. */
  readonly observations: readonly Observation[];
}

/** Runs the plan once as seen from environment `from`. Never throws for network failures. */
export async function runFrom(plan: Plan, from: string, options: RunOptions = {}): Promise<RunResult> {
  // The run's own signal, tied to the caller's by one listener. It fans out to one listener per name lookup and per
  // staggered start: bounded by the plan's names and the concurrency, so Node's 10-listener leak warning is noise here.
  const run = new AbortController();
  setMaxListeners(0, run.signal);
  const signal = run.signal;
  const onCallerAbort = () => run.abort(options.signal?.reason);
  if (options.signal?.aborted) onCallerAbort();
  else options.signal?.addEventListener('abort', onCallerAbort, { once: true });
  try {
    return await runWith(plan, from, options, signal);
  } finally {
    options.signal?.removeEventListener('abort', onCallerAbort);
  }
}

async function runWith(plan: Plan, from: string, options: RunOptions, signal: AbortSignal): Promise<RunResult> {
  const schedule = { ...plan.schedule, ...options.schedule };
  const startedAt = new Date();
  const paths = await planPaths(plan, from, options.resolve ?? resolverFor(plan, from), signal);
  const leakNetworks = Object.entries(plan.environments)
    .filter(([env]) => env !== from)
    .flatMap(([env, e]) => e.networks.map((cidr) => ({ env, cidr })));

  // One listener on the run's signal for all attempts (not one per attempt): aborting the run aborts them all.
  const inFlight = new Set<AbortController>();
  const onRunAbort = () => {
    for (const controller of inFlight) controller.abort(signal.reason);
  };
  signal.addEventListener('abort', onRunAbort, { once: true });
  const probeFor = cachedLoader(options.probes ?? PROBES);

  const observations: Observation[] = new Array(paths.length);
  let next = 0;
  let done = 0;
  const t0 = performance.now();
  const worker = async () => {
    while (next < paths.length) {
      const index = next++;
      const path = paths[index]!;
      // Spread the starts over the stagger window so a run does not open every connection in one burst.
      const notBefore = t0 + (schedule.staggerMs * index) / paths.length;
      const wait = notBefore - performance.now();
      if (wait > 1) await sleep(wait, signal);
      const observation = await attemptPath(path, from, schedule, signal, inFlight, probeFor, leakNetworks);
      observations[index] = observation;
      done++;
      options.onObservation?.(observation, done, paths.length);
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(schedule.concurrency, paths.length) }, worker));
  } finally {
    signal.removeEventListener('abort', onRunAbort);
  }
  return { from, startedAt, finishedAt: new Date(), observations };
}

async function attemptPath(
  path: PlannedPath,
  from: string,
  schedule: Schedule,
  runSignal: AbortSignal,
  inFlight: Set<AbortController>,
  probeFor: (kind: ProbeKind) => Promise<ProbeFn>,
  leakNetworks: readonly { env: string; cidr: string }[],
): Promise<Observation> {
  const at = new Date().toISOString();
  const base = {
    target: path.target.name,
    env: path.target.env,
    from,
    probe: path.target.probe,
    address: path.address,
    port: path.port,
    at,
  };
  if (path.decided || path.address === null || path.port === null) {
    const result = path.decided ?? { outcome: 'error' as const, layer: 'dns' as const, evidence: { detail: 'no address to probe' }, timings: { totalMs: 0 } };
    return { ...base, ...result, attempts: 0 };
  }
  const probe = await probeFor(path.target.probe);
  const request: ProbeRequest = {
    target: path.target,
    address: path.address,
    port: path.port,
    ...(path.host !== undefined ? { host: path.host } : {}),
    // A DNS answer inside another environment's networks, or inside the target's own leak_networks, is a leak.
    ...(path.target.probe === 'dns'
      ? { leakNetworks: [...leakNetworks, ...(path.target.leak_networks ?? []).map((cidr) => ({ env: path.target.env, cidr }))] }
      : {}),
  } as ProbeRequest;

  let chosen: ProbeResult | undefined;
  let attempts = 0;
  while (attempts < schedule.attempts && !runSignal.aborted) {
    attempts++;
    const result = await attemptOnce(probe, request, schedule.timeoutMs, inFlight);
    // Any open attempt makes the path open; a real blocked answer beats a local error.
    if (result.outcome === 'open') {
      chosen = result;
      break;
    }
    if (chosen === undefined || result.outcome !== 'error' || chosen.outcome === 'error') chosen = result;
  }
  chosen ??= { outcome: 'error', layer: 'tcp', evidence: { errno: 'ABORTED', detail: 'run cancelled before the attempt' }, timings: { totalMs: 0 } };
  const timings = path.resolveMs !== undefined ? { ...chosen.timings, resolveMs: path.resolveMs } : chosen.timings;
  const evidence = path.host !== undefined && chosen.evidence.host === undefined ? { host: path.host, ...chosen.evidence } : chosen.evidence;
  return { ...base, outcome: chosen.outcome, layer: chosen.layer, evidence, timings, attempts };
}

/** Loads each probe kind once per run instead of awaiting an import() per attempt. */
function cachedLoader(loader: ProbeLoader): (kind: ProbeKind) => Promise<ProbeFn> {
  const cache = new Map<ProbeKind, Promise<ProbeFn>>();
  return (kind) => {
    let fn = cache.get(kind);
    if (!fn) cache.set(kind, (fn = loader[kind]() as Promise<ProbeFn>));
    return fn;
  };
}

/** One attempt with its own timeout; the run's cancellation reaches it through `inFlight`. */
async function attemptOnce(probe: ProbeFn, request: ProbeRequest, timeoutMs: number, inFlight: Set<AbortController>): Promise<ProbeResult> {
  const controller = new AbortController();
  inFlight.add(controller);
  const timer = setTimeout(() => controller.abort(new DOMException('attempt timed out', 'TimeoutError')), timeoutMs);
  try {
    return await probe(request, controller.signal);
  } catch (err) {
    // Probes must not throw; if one does, it is a bug of ours and the attempt proves nothing.
    return { outcome: 'error', layer: 'tcp', evidence: { errno: 'PROBE_BUG', detail: String(err).slice(0, 500) }, timings: { totalMs: 0 } };
  } finally {
    clearTimeout(timer);
    inFlight.delete(controller);
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}
