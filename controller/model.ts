// The controller's state: paths, findings, agents and the notifications owed (the outbox), plus the
// checkpoint that makes a restart resume exactly where the last commit left off. Plain JSON-serialisable
// records so both stores (PostgreSQL, JetStream KV) can persist them as they are.
import type { Observation } from '../core/observation.js';
import type { Layer, Outcome } from '../core/outcome.js';
import type { FindingKind, ProbeKind, Severity } from '../core/plan.js';
import type { Expectation, RuleRef, Verdict } from '../core/policy.js';
import type { DropReason } from '../core/wire.js';

/**
 * ok: nothing wrong; pending: open seen, below the open threshold; firing: a finding is open;
 * resolved: was firing, then blocked N times in a row from every agent that saw it open (behaves as ok).
 */
export type PathState = 'ok' | 'pending' | 'firing' | 'resolved';

export interface PathRecord {
  /** `from→target@address:port`, see core/observation.ts pathKey. */
  readonly key: string;
  readonly from: string;
  readonly env: string;
  readonly target: string;
  readonly probe: ProbeKind;
  readonly address: string | null;
  readonly port: number | null;
  expectation: Expectation;
  state: PathState;
  /** Still firing but no fresh observation for `silent_after` intervals: never resolved on silence. */
  stale: boolean;
  /** Too many flips within the flapping window: stays firing, no new incident per flip. */
  flapping: boolean;
  /** Consecutive open observations (any agent). */
  openStreak: number;
  /** Allow paths: consecutive observations (any agent) that found the path not open. */
  downStreak: number;
  /** Agents that saw the path open during the current incident; each must see it blocked to resolve. */
  openers: string[];
  /** Per opener: consecutive blocked observations since its last open one. */
  blockedStreaks: Record<string, number>;
  /** Increments each time the path starts firing; part of the notification ids. */
  incident: number;
  /** ISO times of recent firing/resolved transitions, pruned to the flapping window. */
  flips: string[];
  firstSeenAt: string;
  lastObservedAt: string;
  lastOpenAt: string | null;
  firedAt: string | null;
  resolvedAt: string | null;
  last: {
    readonly agent: string;
    readonly at: string;
    readonly outcome: Outcome;
    readonly layer: Layer;
    readonly verdict: Verdict;
    readonly rule: RuleRef;
    readonly evidence: Observation['evidence'];
  };
}

export interface FindingLabels {
  readonly kind: FindingKind;
  readonly severity: Severity;
  readonly from_env?: string;
  readonly to_env?: string;
  readonly target?: string;
}

export interface Finding {
  /** Deterministic: `violation:<pathKey>`, `agent-silent:<env>/<agent>`, `impersonation:<subject env>/<agent>`, … */
  readonly key: string;
  readonly kind: FindingKind;
  labels: FindingLabels;
  status: 'firing' | 'resolved';
  /** Increments each time the finding fires again after being resolved. */
  incident: number;
  since: string;
  updatedAt: string;
  stale: boolean;
  flapping: boolean;
  summary: string;
  details: Record<string, unknown>;
  /** Receivers the current incident's trigger went to: its resolve goes to the same ones. */
  receivers: string[];
}

export type NotificationAction = 'trigger' | 'resolve' | 'update';

/** A notification owed to one receiver. The id is deterministic so a replay after a crash cannot duplicate it. */
export interface Notification {
  /** `<findingKey>#<incident>:<action>:<receiver>` (plus `:<n>` for repeated updates). */
  readonly id: string;
  readonly receiver: string;
  readonly action: NotificationAction;
  readonly findingKey: string;
  readonly incident: number;
  /** Stable per finding and incident across trigger and resolve: what PagerDuty and friends dedupe on. */
  readonly dedupKey: string;
  readonly createdAt: string;
  /** The finding as it was when the notification became owed. */
  readonly finding: Finding;
  deliveredAt: string | null;
}

export interface AgentRecord {
  /** `<env>/<agent>` */
  readonly key: string;
  readonly env: string;
  readonly agent: string;
  version: string;
  planSha256: string;
  intervalMs: number;
  lastHeartbeatAt: string | null;
  lastResultsAt: string | null;
  controls: { total: number; failed: string[] } | null;
  outbox: { pending: number; dropped: number };
  silent: boolean;
}

/** A state change of a path or finding, kept as history. */
export interface Transition {
  readonly at: string;
  readonly key: string;
  readonly from: string;
  readonly to: string;
  readonly reason: string;
}

export interface Counters {
  /** Messages processed and observations judged. */
  messages: number;
  observations: number;
  /** Messages dropped, by reason. */
  dropped: Record<DropReason, number>;
}

export interface ControllerState {
  readonly paths: Map<string, PathRecord>;
  readonly findings: Map<string, Finding>;
  readonly agents: Map<string, AgentRecord>;
  /** Undelivered notifications, by id. */
  readonly outbox: Map<string, Notification>;
  /** The last JetStream stream sequence whose effects are committed: anything at or below it is a replay. */
  checkpoint: { streamSeq: number };
  counters: Counters;
}

/** What applying one message (or a tick) changed: exactly what a store must persist. */
export interface Effects {
  readonly paths: PathRecord[];
  readonly findings: Finding[];
  readonly agents: AgentRecord[];
  readonly notifications: Notification[];
  readonly transitions: Transition[];
}

/** One judged observation for the history table. */
export interface HistoryRow {
  /** `<batch id>#<index>`: unique, so a redelivered batch cannot duplicate history. */
  readonly id: string;
  readonly streamSeq: number;
  readonly agent: string;
  readonly pathKey: string;
  readonly observation: Observation;
  readonly verdict: Verdict;
}

export function emptyState(): ControllerState {
  return {
    paths: new Map(),
    findings: new Map(),
    agents: new Map(),
    outbox: new Map(),
    checkpoint: { streamSeq: 0 },
    counters: emptyCounters(),
  };
}

export function emptyCounters(): Counters {
  return { messages: 0, observations: 0, dropped: { oversized: 0, 'not-json': 0, schema: 0, subject: 0, impersonation: 0 } };
}
