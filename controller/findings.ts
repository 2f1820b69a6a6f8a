// Findings and the notifications they owe: firing opens an incident and owes one trigger per routed receiver,
// resolving owes one resolve to exactly the receivers the trigger went to. Pure: every time comes from the caller.
import { createHash } from 'node:crypto';
import type { Observation } from '../core/observation.js';
import type { AllowRule, Alerting, FindingKind, Plan } from '../core/plan.js';
import type { Decision } from '../core/policy.js';
import { parseSubject } from '../core/wire.js';
import type {
  AgentRecord,
  ControllerState,
  Effects,
  Finding,
  FindingLabels,
  Notification,
  NotificationAction,
  PathRecord,
  Transition,
} from './model.js';
import { receiversFor } from './routes.js';

/** Collects what one message or tick changed; `effects()` snapshots it so later mutations of the state cannot leak in. */
export class Changes {
  private readonly paths = new Map<string, PathRecord>();
  private readonly findings = new Map<string, Finding>();
  private readonly agents = new Map<string, AgentRecord>();
  private readonly notifications: Notification[] = [];
  private readonly transitions: Transition[] = [];

  path(path: PathRecord): void {
    this.paths.set(path.key, path);
  }
  finding(finding: Finding): void {
    this.findings.set(finding.key, finding);
  }
  agent(agent: AgentRecord): void {
    this.agents.set(agent.key, agent);
  }
  notification(notification: Notification): void {
    this.notifications.push(notification);
  }
  /** Records a change of state (or flags) of a path or finding; a non-change records nothing. */
  transition(key: string, from: string, to: string, at: string, reason: string): void {
    if (from !== to) this.transitions.push({ at, key, from, to, reason });
  }
  effects(): Effects {
    return {
      paths: [...this.paths.values()].map((p) => structuredClone(p)),
      findings: [...this.findings.values()].map((f) => structuredClone(f)),
      agents: [...this.agents.values()].map((a) => structuredClone(a)),
      notifications: this.notifications.map((n) => structuredClone(n)),
      transitions: [...this.transitions],
    };
  }
}

/** `firing+stale+flapping`: the state plus its flags, as a transition's from/to shows them. */
export function describe(state: string, flags: { stale: boolean; flapping: boolean }): string {
  return state + (flags.stale ? '+stale' : '') + (flags.flapping ? '+flapping' : '');
}

/** The same for every incident of a finding: PagerDuty reopens an incident under the key it resolved. */
export function dedupKey(findingKey: string): string {
  return `bulkhead:v1:${createHash('sha256').update(findingKey).digest('hex')}`;
}

export interface FindingSpec {
  readonly key: string;
  readonly kind: FindingKind;
  readonly labels: FindingLabels;
  readonly summary: string;
  readonly details: Record<string, unknown>;
}

function owe(state: ControllerState, changes: Changes, finding: Finding, action: NotificationAction, receiver: string, at: string, suffix = ''): void {
  const id = `${finding.key}#${finding.incident}:${action}:${receiver}${suffix}`;
  // Ids are deterministic per incident, so an id already owed is this very notification: never twice.
  if (state.outbox.has(id)) return;
  const notification: Notification = {
    id,
    receiver,
    action,
    findingKey: finding.key,
    incident: finding.incident,
    dedupKey: dedupKey(finding.key),
    createdAt: at,
    finding: structuredClone(finding),
    deliveredAt: null,
  };
  state.outbox.set(id, notification);
  changes.notification(notification);
}

/**
 * Fires a finding: a new incident with one trigger per routed receiver, unless it is already firing, in which
 * case only what it says is refreshed (no second page for the same incident).
 */
export function fireFinding(
  state: ControllerState,
  changes: Changes,
  alerting: Alerting,
  spec: FindingSpec,
  at: string,
  reason: string,
  exclude?: string,
): Finding {
  const existing = state.findings.get(spec.key);
  if (existing?.status === 'firing') {
    const said = JSON.stringify([existing.labels, existing.summary, existing.details]);
    if (said !== JSON.stringify([spec.labels, spec.summary, spec.details])) {
      Object.assign(existing, { labels: spec.labels, summary: spec.summary, details: spec.details, updatedAt: at } satisfies Partial<Finding>);
      changes.finding(existing);
    }
    return existing;
  }
  const before = existing ? describe(existing.status, existing) : 'none';
  const firing = {
    labels: spec.labels,
    status: 'firing',
    since: at,
    updatedAt: at,
    stale: false,
    flapping: false,
    summary: spec.summary,
    details: spec.details,
    // Routes are read at firing time and remembered, so the resolve reaches the same receivers after a plan change.
    receivers: receiversFor(spec.labels, alerting).filter((r) => r !== exclude),
  } satisfies Partial<Finding>;
  // A finding that fires again after a resolve keeps its key and starts its next incident.
  const finding: Finding = existing
    ? Object.assign(existing, { ...firing, incident: existing.incident + 1 })
    : { key: spec.key, kind: spec.kind, incident: 1, ...firing };
  state.findings.set(finding.key, finding);
  changes.finding(finding);
  changes.transition(finding.key, before, describe(finding.status, finding), at, reason);
  for (const receiver of finding.receivers) owe(state, changes, finding, 'trigger', receiver, at);
  return finding;
}

/** Resolves a firing finding: one resolve to each receiver its trigger went to. A finding not firing is left alone. */
export function resolveFinding(state: ControllerState, changes: Changes, key: string, at: string, reason: string): Finding | undefined {
  const finding = state.findings.get(key);
  if (finding?.status !== 'firing') return undefined;
  const before = describe(finding.status, finding);
  Object.assign(finding, { status: 'resolved', updatedAt: at, stale: false, flapping: false } satisfies Partial<Finding>);
  changes.finding(finding);
  changes.transition(key, before, describe(finding.status, finding), at, reason);
  // finding.receivers holds exactly the receivers owed this incident's trigger: no resolve without its trigger.
  for (const receiver of finding.receivers) owe(state, changes, finding, 'resolve', receiver, at);
  return finding;
}

/** Sets or clears a flag of a firing finding. Setting `flapping` owes one update per receiver, once per incident. */
export function flagFinding(
  state: ControllerState,
  changes: Changes,
  key: string,
  flag: 'stale' | 'flapping',
  value: boolean,
  at: string,
  reason: string,
): void {
  const finding = state.findings.get(key);
  if (finding?.status !== 'firing' || finding[flag] === value) return;
  const before = describe(finding.status, finding);
  finding[flag] = value;
  finding.updatedAt = at;
  changes.finding(finding);
  changes.transition(key, before, describe(finding.status, finding), at, reason);
  if (flag === 'flapping' && value) {
    for (const receiver of finding.receivers) owe(state, changes, finding, 'update', receiver, at, ':flapping');
  }
}

export interface ImpersonationInfo {
  readonly subject: string;
  readonly claimedEnv: string;
  readonly claimedAgent: string;
  readonly detail: string;
}

/** The finding a path's trouble raises: a violation for a deny path, expected-path-down for an allow path. */
export function pathFindingKey(path: PathRecord): string {
  return `${path.expectation === 'allow' ? 'expected-path-down' : 'violation'}:${path.key}`;
}

export function pathFinding(path: PathRecord, obs: Observation, agent: string, decision: Decision): FindingSpec {
  const allow = path.expectation === 'allow';
  const kind = allow ? 'expected-path-down' : 'violation';
  const where = `${path.target} (${path.env}) at ${path.address ?? '-'}:${path.port ?? '-'}`;
  return {
    key: pathFindingKey(path),
    kind,
    labels: { kind, severity: allow ? 'warning' : 'critical', from_env: path.from, to_env: path.env, target: path.target },
    summary: allow
      ? `${path.from} cannot reach ${where}, which ${decision.rule.id} allows: ${obs.outcome}`
      : `${path.from} can reach ${where}: ${obs.outcome} at the ${obs.layer} layer, seen by ${agent}`,
    // The observation that fired it: what a responder needs to see first.
    details: { path: path.key, probe: path.probe, agent, at: obs.at, outcome: obs.outcome, layer: obs.layer, rule: decision.rule, evidence: structuredClone(obs.evidence) },
  };
}

export function controlFailedFinding(agent: AgentRecord, controls: { total: number; failed: readonly string[] }): FindingSpec {
  const { failed, total } = controls;
  return {
    key: `control-failed:${agent.key}`,
    kind: 'control-failed',
    labels: { kind: 'control-failed', severity: 'error', from_env: agent.env },
    summary: `${agent.key}: ${failed.length} of ${total} controls failed (${failed.join(', ')}); its blocked results prove nothing`,
    details: { failed: [...failed], total },
  };
}

export function agentSilentFinding(agent: AgentRecord, seen: string, silentAfter: number): FindingSpec {
  return {
    key: `agent-silent:${agent.key}`,
    kind: 'agent-silent',
    labels: { kind: 'agent-silent', severity: 'error', from_env: agent.env },
    summary: `${agent.key} has sent no heartbeat since ${seen}: its environment is not being checked`,
    details: { lastHeartbeatAt: agent.lastHeartbeatAt, lastResultsAt: agent.lastResultsAt, intervalMs: agent.intervalMs, silentAfter },
  };
}

export function exceptionExpiredFinding(plan: Plan, index: number, rule: AllowRule): FindingSpec {
  const toEnv = rule.to.env ?? plan.targets.find((t) => t.name === rule.to.target)?.env;
  return {
    key: `exception-expired:allow[${index}]`,
    kind: 'exception-expired',
    labels: {
      kind: 'exception-expired',
      severity: 'warning',
      // Labels are single values: a rule for several source environments names none.
      ...(rule.from.length === 1 ? { from_env: rule.from[0] } : {}),
      ...(toEnv !== undefined ? { to_env: toEnv } : {}),
      ...(rule.to.target !== undefined ? { target: rule.to.target } : {}),
    },
    summary: `allow[${index}] (${rule.reason}) expired ${rule.expires}: its paths are denied again`,
    details: { reason: rule.reason, ticket: rule.ticket ?? null, expires: rule.expires, from: [...rule.from], to: { ...rule.to } },
  };
}

export function impersonationFinding(info: ImpersonationInfo): FindingSpec {
  // The subject is what the sender's credentials let it publish on, so its env is where the sender really is.
  const senderEnv = parseSubject(info.subject)?.env ?? info.claimedEnv;
  return {
    key: `impersonation:${info.claimedEnv}/${info.claimedAgent}@${info.subject}`,
    kind: 'impersonation',
    labels: { kind: 'impersonation', severity: 'critical', from_env: senderEnv },
    summary: `a message on ${info.subject} claims to come from ${info.claimedEnv}/${info.claimedAgent}: ${info.detail}`,
    details: { detail: info.detail, subject: info.subject, claimedEnv: info.claimedEnv, claimedAgent: info.claimedAgent },
  };
}

/** A receiver refused a notification for good: the people behind the other receivers must hear that alerts are not arriving. */
export function receiverFailedFinding(receiver: string, reason: string): FindingSpec {
  return {
    key: `receiver-failed:${receiver}`,
    kind: 'receiver-failed',
    labels: { kind: 'receiver-failed', severity: 'error' },
    summary: `receiver ${receiver} refused a notification for good (${reason}): its alerts are not arriving, see the dead letters`,
    details: { receiver, reason },
  };
}
