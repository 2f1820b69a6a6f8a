// A deterministic stream of result batches for the controller: agents in two environments probing many paths
// into `prod`, some of which open and close on a fixed pattern so that findings fire, resolve and flap.
// Shared by bench/ingest.ts and the controller's crash test: the same index always yields the same message.
import { parsePlanText, type LoadedPlan } from '../core/plan-load.js';
import type { Observation } from '../core/observation.js';
import { subjects, type ResultBatch } from '../core/wire.js';

export interface WorkloadOptions {
  /** Targets in `prod`, each with `addresses` declared addresses: targets × addresses paths per source env. */
  readonly targets: number;
  readonly addresses: number;
  readonly messages: number;
  /** Observations per message, taken round-robin from the sending agent's paths. */
  readonly observationsPerMessage: number;
  /** Time of the first cycle; each agent's next message is `stepMs` later. */
  readonly startMs: number;
  readonly stepMs: number;
  /** Share of paths that open now and then (default 0.2). */
  readonly flappingShare?: number;
}

export interface Workload {
  readonly plan: LoadedPlan;
  readonly planText: string;
  readonly paths: number;
  message(index: number): { subject: string; batch: ResultBatch };
}

export const AGENTS = [
  { env: 'staging', agent: 's1' },
  { env: 'dev', agent: 'd1' },
] as const;

/** The environment a controller running the workload plan needs (the pager's routing key is a secret reference). */
export const WORKLOAD_ENV = { BULKHEAD_WORKLOAD_PD_KEY: 'workload0routing0key0000000000000' } as const;

/** Builds the plan and the message generator. Addresses are 127.x loopback strings: nothing is ever contacted. */
export function workload(opts: WorkloadOptions): Workload {
  const targets = Array.from({ length: opts.targets }, (_, t) => ({
    name: `t${t}`,
    env: 'prod',
    probe: 'tcp',
    addresses: Array.from({ length: opts.addresses }, (_, a) => `127.${1 + Math.floor(t / 250)}.${t % 250}.${1 + a}`),
    port: 5432,
  }));
  const planText = JSON.stringify(
    {
      version: 1,
      environments: { prod: {}, staging: {}, dev: {} },
      targets,
      // One allow path, so expected-path-down findings happen too.
      policy: { allow: [{ from: 'dev', to: { target: 't0' }, reason: 'workload: reporting reads t0', ticket: 'BENCH-1' }] },
      // Long enough that no tick during a test or benchmark finds an agent silent or a path stale.
      schedule: { interval: '6h', timeout: '3s' },
      alerting: {
        open_threshold: 1,
        resolve_after: 3,
        // Nothing is sent while a test or benchmark runs: notifications stay owed, so outbox digests are deterministic.
        group_wait: '6h',
        group_interval: '6h',
        repeat_interval: '6h',
        receivers: [
          { name: 'console', type: 'console' },
          // Port 9 (discard) on loopback: were anything ever sent, it would go nowhere.
          { name: 'pager', type: 'pagerduty', routing_key: { env: 'BULKHEAD_WORKLOAD_PD_KEY' }, url: 'http://127.0.0.1:9/v2/enqueue' },
        ],
        routes: [{ match: { severity: 'critical' }, receivers: ['pager', 'console'] }, { match: {}, receivers: ['console'] }],
      },
    },
    null,
    2,
  );
  const plan = parsePlanText(planText, 'workload.json');
  const perEnv = opts.targets * opts.addresses;
  const flapEvery = Math.max(1, Math.round(1 / (opts.flappingShare ?? 0.2)));

  const message = (index: number): { subject: string; batch: ResultBatch } => {
    const who = AGENTS[index % AGENTS.length]!;
    const cycle = Math.floor(index / AGENTS.length);
    const at = new Date(opts.startMs + cycle * opts.stepMs).toISOString();
    const observations: Observation[] = [];
    for (let k = 0; k < opts.observationsPerMessage; k++) {
      const p = (cycle * opts.observationsPerMessage + k) % perEnv;
      const t = Math.floor(p / opts.addresses);
      const target = targets[t]!;
      const address = target.addresses[p % opts.addresses]!;
      // Every other flapping path opens for 3 of every 23 cycles (fires, then resolves), the others for 2 of
      // every 7 (fast enough to be flagged flapping when cycles are a minute or two apart). Each has its own phase.
      const slow = (p / flapEvery) % 2 === 0;
      const open = p % flapEvery === 0 && (cycle + 7 * p) % (slow ? 23 : 7) < (slow ? 3 : 2);
      observations.push({
        target: target.name,
        env: 'prod',
        from: who.env,
        probe: 'tcp',
        address,
        port: 5432,
        outcome: open ? 'open' : 'refused',
        layer: 'tcp',
        evidence: open
          ? { remoteAddress: address, remotePort: 5432, localAddress: '127.0.0.1', localPort: 40000 + (k % 20000), detail: 'connected' }
          : { remoteAddress: address, remotePort: 5432, errno: 'ECONNREFUSED', detail: 'connection refused' },
        timings: { connectMs: 0.4, totalMs: 0.5 },
        attempts: 1,
        at,
      });
    }
    const batch: ResultBatch = {
      v: 1,
      type: 'results',
      env: who.env,
      agent: who.agent,
      id: `${who.env}-${who.agent}-${cycle}`,
      cycle: { id: `c${cycle}`, startedAt: at, finishedAt: at, chunk: 0, chunks: 1 },
      planSha256: plan.sha256,
      controls: { total: 1, failed: [] },
      observations,
    };
    return { subject: subjects.results(who.env, who.agent), batch };
  };
  return { plan, planText, paths: perEnv * AGENTS.length, message };
}
