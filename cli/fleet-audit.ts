// `bulkhead audit --nats URL`: ask every live agent to run now, gather their results until a deadline,
// and report agents and environments that did not answer as coverage gaps.
import { randomUUID } from 'node:crypto';
import { connect, errors, type NatsConnection } from '@nats-io/transport-node';
import type { RunResult } from '../agent/engine.js';
import type { Observation } from '../core/observation.js';
import { readNatsCredentials } from '../core/nats-credentials.js';
import { securityOptions } from '../core/nats-options.js';
import type { LoadedPlan } from '../core/plan-load.js';
import { Heartbeat, parseMessage, ResultBatch, RunAccepted, subjects, type RunRequest } from '../core/wire.js';
import { buildReport, type AuditReport, type CoverageGap } from './report.js';

export interface FleetAuditOptions {
  readonly url: string;
  readonly credsFile?: string;
  readonly caFile?: string;
  /** How long to wait for results after asking. */
  readonly deadlineMs: number;
  /** How long agents have to accept the request. */
  readonly acceptMs?: number;
  readonly signal: AbortSignal;
  readonly onProgress?: (text: string) => void;
}

interface AgentRun {
  readonly env: string;
  readonly agent: string;
  readonly cycleId: string;
  chunks: number | undefined;
  readonly received: Map<number, ResultBatch>;
}

const key = (env: string, agent: string) => `${env}/${agent}`;

/** Runs a fleet audit and returns the report; agents run the plan they have, judged against this plan. */
export async function fleetAudit(loaded: LoadedPlan, options: FleetAuditOptions, version: string): Promise<AuditReport> {
  const credentials = options.credsFile ? await readNatsCredentials(options.credsFile) : undefined;
  const nc: NatsConnection = await connect({
    servers: options.url,
    name: 'bulkhead-audit',
    ...securityOptions(options.url, credentials, options.caFile),
    maxReconnectAttempts: 3,
  });
  const requestId = randomUUID();
  const runs = new Map<string, AgentRun>();
  const alive = new Set<string>();
  try {
    // Listen before asking, so no result or heartbeat can slip past.
    const results = nc.subscribe(subjects.allResults);
    const heartbeats = nc.subscribe(subjects.allHeartbeats);
    let wake: () => void = () => undefined;
    const complete = () => runs.size > 0 && [...runs.values()].every((r) => r.chunks !== undefined && r.received.size === r.chunks);
    (async () => {
      for await (const msg of results) {
        const parsed = parseMessage(ResultBatch, msg.subject, msg.data);
        if (!parsed.ok || parsed.message.cycle.requestId !== requestId) continue;
        const batch = parsed.message;
        const run = runs.get(key(batch.env, batch.agent));
        if (!run || run.cycleId !== batch.cycle.id) continue;
        run.chunks = batch.cycle.chunks;
        run.received.set(batch.cycle.chunk, batch);
        options.onProgress?.(`results from ${batch.env}/${batch.agent}: chunk ${run.received.size}/${run.chunks}`);
        if (complete()) wake();
      }
    })().catch(() => undefined);
    (async () => {
      for await (const msg of heartbeats) {
        const parsed = parseMessage(Heartbeat, msg.subject, msg.data);
        if (parsed.ok) alive.add(key(parsed.message.env, parsed.message.agent));
      }
    })().catch(() => undefined);

    const request: RunRequest = { v: 1, type: 'run', requestId };
    const payload = JSON.stringify(request);
    await Promise.all(
      Object.keys(loaded.plan.environments).map(async (env) => {
        try {
          const replies = await nc.requestMany(subjects.run(env), payload, { maxWait: options.acceptMs ?? 2_000 });
          for await (const reply of replies) {
            const accepted = parseMessage(RunAccepted, '', reply.data);
            if (!accepted.ok || accepted.message.requestId !== requestId || accepted.message.env !== env) continue;
            const m = accepted.message;
            runs.set(key(m.env, m.agent), { env: m.env, agent: m.agent, cycleId: m.cycleId, chunks: undefined, received: new Map() });
            options.onProgress?.(`${m.env}/${m.agent} accepted, running cycle ${m.cycleId}`);
          }
        } catch (err) {
          // No responders: no agent of this environment is listening. It becomes a coverage gap below.
          const noResponders = err instanceof errors.NoRespondersError || (err instanceof errors.RequestError && err.isNoResponders());
          if (!noResponders) throw err;
        }
      }),
    );

    if (!complete()) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, options.deadlineMs);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
        options.signal.addEventListener('abort', wake, { once: true });
      });
    }
    results.unsubscribe();
    heartbeats.unsubscribe();

    const gaps: CoverageGap[] = [];
    const agentRuns: RunResult[] = [];
    for (const run of runs.values()) {
      if (run.chunks === undefined || run.received.size < run.chunks) gaps.push({ env: run.env, agent: run.agent, reason: 'incomplete' });
      const batches = [...run.received.values()].sort((a, b) => a.cycle.chunk - b.cycle.chunk);
      if (batches.length === 0) continue;
      const observations: Observation[] = batches.flatMap((b) => b.observations);
      agentRuns.push({ from: run.env, startedAt: new Date(batches[0]!.cycle.startedAt), finishedAt: new Date(batches[0]!.cycle.finishedAt), observations });
    }
    for (const live of alive) {
      if (!runs.has(live)) {
        const [env, agent] = live.split('/') as [string, string];
        gaps.push({ env, agent, reason: 'no-answer' });
      }
    }
    for (const env of Object.keys(loaded.plan.environments)) {
      if (![...runs.values()].some((r) => r.env === env)) gaps.push({ env, agent: null, reason: 'no-agent' });
    }
    const agents = [...runs.values()].map((r) => ({ env: r.env, agent: r.agent }));
    return buildReport(loaded, agentRuns, new Date(), version, { agents, gaps });
  } finally {
    await nc.close().catch(() => undefined);
  }
}
