// The controller's lifecycle (SPEC §7): judges observations, advances paths and findings, owes notifications.
// Pure: no I/O and no clock. Results and heartbeats are dated by their own times (obs.at, cycle.finishedAt, hb.at),
// so replaying the same messages rebuilds the same state after a crash; only `tick` reads ctx.now.
import { pathKey, type Observation } from '../core/observation.js';
import type { Plan, Target } from '../core/plan.js';
import { evaluate, expiredRules, type Decision, type Expectation } from '../core/policy.js';
import { subjects, type Heartbeat, type ResultBatch } from '../core/wire.js';
import {
  agentSilentFinding,
  Changes,
  controlFailedFinding,
  describe,
  exceptionExpiredFinding,
  fireFinding,
  flagFinding,
  impersonationFinding,
  pathFinding,
  pathFindingKey,
  receiverFailedFinding,
  resolveFinding,
  type FindingSpec,
  type ImpersonationInfo,
} from './findings.js';
import type { AgentRecord, ControllerState, Effects, HistoryRow, PathRecord } from './model.js';

export type { ImpersonationInfo };

export interface LifecycleContext {
  readonly plan: Plan;
  readonly now: Date;
}

const ms = (iso: string): number => Date.parse(iso);
// Messages from several agents interleave, so "last" times only ever move forward.
const latest = (known: string | null, seen: string): string => (known === null || ms(seen) > ms(known) ? seen : known);
const recent = (flips: readonly string[], at: string, windowMs: number): string[] => flips.filter((t) => ms(at) - ms(t) < windowMs);

/** Mutates a path and records the transition if its state or flags changed. */
function change(changes: Changes, path: PathRecord, at: string, reason: string, mutate: (p: PathRecord) => void): void {
  const before = describe(path.state, path);
  mutate(path);
  changes.path(path);
  changes.transition(path.key, before, describe(path.state, path), at, reason);
}

function firePath(state: ControllerState, changes: Changes, plan: Plan, path: PathRecord, spec: FindingSpec, at: string, reason: string): void {
  const finding = fireFinding(state, changes, plan.alerting, spec, at, reason);
  change(changes, path, at, reason, (p) => {
    p.state = 'firing';
    p.incident = finding.incident;
    p.firedAt = at;
    p.resolvedAt = null;
    p.flips = [...recent(p.flips, at, plan.alerting.flapping.window), at];
  });
}

function resolvePath(state: ControllerState, changes: Changes, plan: Plan, path: PathRecord, at: string, reason: string): void {
  resolveFinding(state, changes, pathFindingKey(path), at, reason);
  change(changes, path, at, reason, (p) => {
    Object.assign(p, { state: 'resolved', resolvedAt: at, stale: false, flapping: false, openStreak: 0, downStreak: 0, openers: [], blockedStreaks: {} } satisfies Partial<PathRecord>);
    p.flips = [...recent(p.flips, at, plan.alerting.flapping.window), at];
  });
}

// Deny paths: fire on open_threshold opens; resolve only when every agent that saw it open has seen it blocked
// resolve_after times in a row. Another agent's blocked results do not resolve what someone else saw open.
function judgeDeny(state: ControllerState, changes: Changes, plan: Plan, path: PathRecord, obs: Observation, agent: string, decision: Decision): void {
  const { open_threshold: threshold, resolve_after: resolveAfter, flapping } = plan.alerting;
  const at = obs.at;
  switch (decision.verdict) {
    case 'violation': {
      path.openStreak++;
      path.lastOpenAt = latest(path.lastOpenAt, at);
      if (!path.openers.includes(agent)) path.openers.push(agent);
      path.blockedStreaks[agent] = 0;
      if (path.state === 'firing') return; // one incident: no second page, flapping or not
      if (path.openStreak < threshold) {
        change(changes, path, at, `open ${path.openStreak} of ${threshold}`, (p) => (p.state = 'pending'));
        return;
      }
      firePath(state, changes, plan, path, pathFinding(path, obs, agent, decision), at, `open ${path.openStreak} time(s), seen by ${agent}`);
      return;
    }
    case 'pass': {
      path.openStreak = 0;
      if (path.state === 'pending') {
        change(changes, path, at, `blocked before the open threshold, seen by ${agent}`, (p) => {
          Object.assign(p, { state: 'ok', openers: [], blockedStreaks: {} } satisfies Partial<PathRecord>);
        });
        return;
      }
      if (path.state !== 'firing' || !path.openers.includes(agent)) return;
      path.blockedStreaks[agent] = (path.blockedStreaks[agent] ?? 0) + 1;
      if (!path.openers.every((a) => (path.blockedStreaks[a] ?? 0) >= resolveAfter)) return;
      if (path.flapping) {
        // A flapping path resolves only once it has also been quiet for a whole window.
        if (path.lastOpenAt !== null && ms(at) - ms(path.lastOpenAt) < flapping.window) return;
        resolvePath(state, changes, plan, path, at, `blocked ${resolveAfter} times from every opener and no open for ${flapping.window} ms`);
        return;
      }
      path.flips = recent(path.flips, at, flapping.window);
      if (path.flips.length + 1 >= flapping.transitions) {
        const reason = `${path.flips.length + 1} flips within ${flapping.window} ms: flapping, stays firing`;
        change(changes, path, at, reason, (p) => (p.flapping = true));
        flagFinding(state, changes, pathFindingKey(path), 'flapping', true, at, reason);
        return;
      }
      resolvePath(state, changes, plan, path, at, `blocked ${resolveAfter} times in a row from every opener (${path.openers.join(', ')})`);
      return;
    }
    case 'inconclusive':
      // Weak data never resolves: it breaks the opener's blocked streak and proves nothing else.
      if (path.openers.includes(agent)) path.blockedStreaks[agent] = 0;
      return;
    case 'expected-path-down':
      return; // not a verdict of a deny path
  }
}

// Allow paths: expected-path-down fires after open_threshold consecutive not-open observations and resolves on
// the first open one. No flapping handling: a warning that comes and goes pages nobody twice for the same incident.
function judgeAllow(state: ControllerState, changes: Changes, plan: Plan, path: PathRecord, obs: Observation, agent: string, decision: Decision): void {
  const threshold = plan.alerting.open_threshold;
  const at = obs.at;
  switch (decision.verdict) {
    case 'pass':
      path.openStreak++;
      path.downStreak = 0;
      path.lastOpenAt = latest(path.lastOpenAt, at);
      if (path.state === 'firing') resolvePath(state, changes, plan, path, at, `open again, seen by ${agent}`);
      else if (path.state === 'pending') change(changes, path, at, `open, seen by ${agent}`, (p) => (p.state = 'ok'));
      return;
    case 'expected-path-down':
      path.openStreak = 0;
      path.downStreak++;
      if (path.state === 'firing') return;
      if (path.downStreak < threshold) {
        change(changes, path, at, `not open ${path.downStreak} of ${threshold}`, (p) => (p.state = 'pending'));
        return;
      }
      firePath(state, changes, plan, path, pathFinding(path, obs, agent, decision), at, `not open ${path.downStreak} time(s), seen by ${agent}`);
      return;
    case 'inconclusive':
    case 'violation':
      return; // an error proves neither; violation is not a verdict of an allow path
  }
}

// The plan changed what it expects of this path (an allow rule added, removed or expired): what was firing under
// the old expectation is no longer a finding, so it resolves and the path starts afresh under the new one.
function repolicy(state: ControllerState, changes: Changes, path: PathRecord, expectation: Expectation, at: string): void {
  const reason = `policy now expects ${expectation}, not ${path.expectation}`;
  if (path.state === 'firing') resolveFinding(state, changes, pathFindingKey(path), at, reason);
  change(changes, path, at, reason, (p) => {
    if (p.state === 'firing') Object.assign(p, { state: 'resolved', resolvedAt: at } satisfies Partial<PathRecord>);
    else if (p.state === 'pending') p.state = 'ok';
    Object.assign(p, { expectation, stale: false, flapping: false, openStreak: 0, downStreak: 0, openers: [], blockedStreaks: {} } satisfies Partial<PathRecord>);
  });
}

function observe(state: ControllerState, changes: Changes, plan: Plan, target: Target, obs: Observation, agent: string, decision: Decision): PathRecord {
  const key = pathKey(obs);
  const last = { agent, at: obs.at, outcome: obs.outcome, layer: obs.layer, verdict: decision.verdict, rule: decision.rule, evidence: structuredClone(obs.evidence) };
  let path = state.paths.get(key);
  if (path === undefined) {
    path = {
      key, from: obs.from, env: target.env, target: target.name, probe: target.probe, address: obs.address, port: obs.port,
      expectation: decision.expectation, state: 'ok', stale: false, flapping: false, openStreak: 0, downStreak: 0,
      openers: [], blockedStreaks: {}, incident: 0, flips: [], firstSeenAt: obs.at, lastObservedAt: obs.at,
      lastOpenAt: null, firedAt: null, resolvedAt: null, last,
    };
    state.paths.set(key, path);
  }
  changes.path(path);
  if (path.expectation !== decision.expectation) repolicy(state, changes, path, decision.expectation, obs.at);
  path.last = last;
  // Only conclusive data is fresh: a path seen only through failed controls goes stale like an unobserved one.
  if (decision.verdict !== 'inconclusive') {
    path.lastObservedAt = latest(path.lastObservedAt, obs.at);
    if (path.stale) {
      change(changes, path, obs.at, `observed again by ${agent}`, (p) => (p.stale = false));
      flagFinding(state, changes, pathFindingKey(path), 'stale', false, obs.at, `observed again by ${agent}`);
    }
  }
  switch (path.expectation) {
    case 'deny':
      judgeDeny(state, changes, plan, path, obs, agent, decision);
      break;
    case 'allow':
      judgeAllow(state, changes, plan, path, obs, agent, decision);
      break;
    case 'control':
      break; // controls are judged per cycle by the agent: control-failed
  }
  return path;
}

function impersonate(state: ControllerState, changes: Changes, plan: Plan, info: ImpersonationInfo, at: string): void {
  const spec = impersonationFinding(info);
  const previous = state.findings.get(spec.key);
  const occurrences = previous?.status === 'firing' ? Number(previous.details.occurrences ?? 1) + 1 : 1;
  fireFinding(state, changes, plan.alerting, { ...spec, details: { ...spec.details, occurrences } }, at, 'impersonation');
}

/** Judges a result batch's observations and advances paths and findings. Mutates `state`, returns what changed. */
export function applyResults(state: ControllerState, batch: ResultBatch, streamSeq: number, ctx: LifecycleContext): { effects: Effects; history: HistoryRow[] } {
  const changes = new Changes();
  if (streamSeq <= state.checkpoint.streamSeq) return { effects: changes.effects(), history: [] }; // a replay after a crash
  state.checkpoint.streamSeq = streamSeq;
  const { plan } = ctx;
  const at = batch.cycle.finishedAt;

  // An agent reporting observations from another environment is lying about where it stands: none of it is judged.
  // The caller cannot see this case, so the drop is counted here (applyImpersonation leaves counting to the caller).
  const foreign = [...new Set(batch.observations.filter((o) => o.from !== batch.env).map((o) => o.from))];
  if (foreign.length > 0) {
    state.counters.dropped.impersonation++;
    const subject = subjects.results(batch.env, batch.agent);
    for (const env of foreign) {
      const detail = `batch ${batch.id} from ${batch.env}/${batch.agent} carries observations from ${env}`;
      impersonate(state, changes, plan, { subject, claimedEnv: env, claimedAgent: batch.agent, detail }, at);
    }
    return { effects: changes.effects(), history: [] };
  }
  state.counters.messages++;

  const agentKey = `${batch.env}/${batch.agent}`;
  const agent = state.agents.get(agentKey) ?? {
    key: agentKey, env: batch.env, agent: batch.agent, version: 'unknown', planSha256: batch.planSha256,
    intervalMs: plan.schedule.intervalMs, lastHeartbeatAt: null, lastResultsAt: null, controls: null,
    outbox: { pending: 0, dropped: 0 }, silent: false,
  };
  agent.lastResultsAt = latest(agent.lastResultsAt, at);
  state.agents.set(agentKey, agent);
  changes.agent(agent);

  const { failed } = batch.controls;
  if (failed.length > 0) {
    fireFinding(state, changes, plan.alerting, controlFailedFinding(agent, batch.controls), at, `controls failed: ${failed.join(', ')}`);
  } else {
    resolveFinding(state, changes, `control-failed:${agentKey}`, at, 'all controls passed');
  }

  const targets = new Map(plan.targets.map((t) => [t.name, t]));
  const controlsOk = failed.length === 0;
  const history: HistoryRow[] = [];
  batch.observations.forEach((obs, index) => {
    const target = targets.get(obs.target);
    if (target === undefined) return; // removed from the plan since the agent's cycle: nothing to judge it against
    const decision = evaluate(plan, target, obs, { now: new Date(obs.at), controlsOk });
    state.counters.observations++;
    const path = observe(state, changes, plan, target, obs, batch.agent, decision);
    history.push({ id: `${batch.id}#${index}`, streamSeq, agent: batch.agent, pathKey: path.key, observation: obs, verdict: decision.verdict });
  });
  return { effects: changes.effects(), history };
}

/** Records an agent's heartbeat; a heartbeat ends its silence. Out-of-order (older) heartbeats change nothing. */
export function applyHeartbeat(state: ControllerState, hb: Heartbeat, _ctx: LifecycleContext): Effects {
  const changes = new Changes();
  const key = `${hb.env}/${hb.agent}`;
  const known = state.agents.get(key);
  if (known?.lastHeartbeatAt != null && ms(hb.at) < ms(known.lastHeartbeatAt)) return changes.effects();
  const agent = known ?? {
    key, env: hb.env, agent: hb.agent, version: hb.version, planSha256: hb.planSha256, intervalMs: hb.intervalMs,
    lastHeartbeatAt: null, lastResultsAt: null, controls: null, outbox: { pending: 0, dropped: 0 }, silent: false,
  };
  Object.assign(agent, {
    version: hb.version,
    planSha256: hb.planSha256,
    intervalMs: hb.intervalMs,
    controls: hb.controls === null ? null : { total: hb.controls.total, failed: [...hb.controls.failed] },
    outbox: { ...hb.outbox },
    lastHeartbeatAt: hb.at,
    silent: false,
  } satisfies Partial<AgentRecord>);
  state.agents.set(key, agent);
  changes.agent(agent);
  resolveFinding(state, changes, `agent-silent:${key}`, hb.at, 'heartbeat received');
  return changes.effects();
}

/** A message whose claimed environment/agent disagree with its subject (or an observation whose `from` is not the batch env). */
export function applyImpersonation(state: ControllerState, info: ImpersonationInfo, ctx: LifecycleContext): Effects {
  const changes = new Changes();
  // The payload's own times are the impersonator's word, so the controller's clock dates this event.
  impersonate(state, changes, ctx.plan, info, ctx.now.toISOString());
  return changes.effects();
}

/** Time-driven checks: agent-silent, stale paths, exception-expired. */
export function tick(state: ControllerState, ctx: LifecycleContext): Effects {
  const changes = new Changes();
  const { plan } = ctx;
  const now = ctx.now.getTime();
  const at = ctx.now.toISOString();
  const silentAfter = plan.alerting.silent_after;

  for (const agent of state.agents.values()) {
    // An agent known only from its results is measured from them, so one that never heartbeats still goes silent.
    const seen = agent.lastHeartbeatAt ?? agent.lastResultsAt;
    if (agent.silent || seen === null || now - ms(seen) <= silentAfter * agent.intervalMs) continue;
    agent.silent = true;
    changes.agent(agent);
    fireFinding(state, changes, plan.alerting, agentSilentFinding(agent, seen, silentAfter), at, `no heartbeat for ${silentAfter} intervals`);
  }

  // Never resolve on missing data: a firing path nobody observes any more is stale and keeps firing.
  const staleMs = silentAfter * plan.schedule.intervalMs;
  for (const path of state.paths.values()) {
    if (path.state !== 'firing' || path.stale || now - ms(path.lastObservedAt) <= staleMs) continue;
    const reason = `no conclusive observation since ${path.lastObservedAt}`;
    change(changes, path, at, reason, (p) => (p.stale = true));
    flagFinding(state, changes, pathFindingKey(path), 'stale', true, at, reason);
  }

  const expired = new Set<string>();
  for (const { index, rule } of expiredRules(plan, ctx.now)) {
    const key = `exception-expired:allow[${index}]`;
    expired.add(key);
    if (state.findings.get(key)?.status === 'firing') continue; // fires once per expiry
    fireFinding(state, changes, plan.alerting, exceptionExpiredFinding(plan, index, rule), at, `allow[${index}] expired ${rule.expires}`);
  }
  // Extending or removing the rule in the plan is how a human answers this finding.
  for (const finding of state.findings.values()) {
    if (finding.kind === 'exception-expired' && finding.status === 'firing' && !expired.has(finding.key)) {
      resolveFinding(state, changes, finding.key, at, 'the allow rule is no longer expired in the plan');
    }
  }
  return changes.effects();
}

/**
 * A receiver dead-lettered a notification: fire `receiver-failed` for it, routed to every other receiver the routes
 * pick (never to the one that is failing). Already firing: the summary is refreshed, nobody is paged twice.
 */
export function applyReceiverFailed(state: ControllerState, receiver: string, reason: string, ctx: LifecycleContext): Effects {
  const changes = new Changes();
  const at = ctx.now.toISOString();
  fireFinding(state, changes, ctx.plan.alerting, receiverFailedFinding(receiver, reason), at, `dead letter at ${receiver}`, receiver);
  return changes.effects();
}

/** The receiver accepted a request again: its receiver-failed finding resolves. */
export function applyReceiverWorks(state: ControllerState, receiver: string, ctx: LifecycleContext): Effects {
  const changes = new Changes();
  resolveFinding(state, changes, `receiver-failed:${receiver}`, ctx.now.toISOString(), `${receiver} accepted a request`);
  return changes.effects();
}
