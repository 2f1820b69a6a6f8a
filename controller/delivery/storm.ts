// Storm control: when many paths of one environment pair open within one group flush, the receiver gets one
// incident for the pair with the per-path details inside it, not one page per path. Pure: the dispatcher
// persists what this returns (settled, owed, the storm record) in one delivery commit before sending anything.
import { dedupKey } from '../findings.js';
import type { Finding, Notification, NotificationAction } from '../model.js';
import type { Settled, StormRecord } from './model.js';

/** Paths listed one by one inside a storm incident; the rest are counted. */
export const STORM_SAMPLE = 20;

export interface FlushInput {
  readonly receiver: string;
  readonly from_env: string;
  readonly to_env: string;
  /** What this flush would send, after silences, oldest first. */
  readonly notifications: readonly Notification[];
  /** This receiver's storm record for the pair, if it ever had one. */
  readonly storm: StormRecord | undefined;
  readonly threshold: number;
  readonly at: string;
  /** The current summary of a finding, for the incident's sample (undefined when unknown). */
  readonly summaryOf: (findingKey: string) => string | undefined;
}

export interface FlushPlan {
  /** Notifications carried by the storm incident instead of being sent. */
  readonly folded: Settled[];
  /** The storm incident's own notifications, to persist then send. */
  readonly owed: Notification[];
  /** The storm record after this flush, when it changed. */
  readonly storm: StormRecord | undefined;
  /** What to send as it is. */
  readonly send: Notification[];
}

const foldable = (n: Notification): boolean => n.finding.kind === 'violation' && !isStorm(n);

/** Storm incidents carry a synthetic finding whose key starts with `storm:`. */
const isStorm = (n: Notification): boolean => n.findingKey.startsWith('storm:');

/** Decides, for one receiver and pair, what a flush folds into a storm incident and what it sends as it is. */
export function planFlush(input: FlushInput): FlushPlan {
  const { notifications, threshold, at } = input;
  let storm = input.storm ? structuredClone(input.storm) : undefined;
  const triggers = notifications.filter((n) => foldable(n) && n.action === 'trigger');
  const starting = storm?.status !== 'firing' && new Set(triggers.map((n) => n.findingKey)).size >= threshold;
  if (starting) {
    storm = {
      key: `${input.receiver}|${input.from_env}→${input.to_env}`,
      receiver: input.receiver,
      from_env: input.from_env,
      to_env: input.to_env,
      incident: (storm?.incident ?? 0) + 1,
      status: 'firing',
      since: at,
      updatedAt: at,
      members: [],
      open: [],
    };
  }
  if (storm?.status !== 'firing') return { folded: [], owed: [], storm: undefined, send: [...notifications] };

  const firing: StormRecord = storm;
  const before = { members: firing.members.length, open: firing.open.length };
  const folded: Settled[] = [];
  const send: Notification[] = [];
  const reason = `folded into storm incident ${firing.key}#${firing.incident}`;
  for (const n of notifications) {
    if (!foldable(n)) {
      send.push(n);
      continue;
    }
    const member = firing.members.includes(n.findingKey);
    if (n.action === 'trigger') {
      if (!member) firing.members.push(n.findingKey);
      if (!firing.open.includes(n.findingKey)) firing.open.push(n.findingKey);
    } else if (!member) {
      // Its trigger went out on its own before the storm: its resolve (or update) does too.
      send.push(n);
      continue;
    } else if (n.action === 'resolve') {
      firing.open = firing.open.filter((k) => k !== n.findingKey);
    }
    folded.push({ id: n.id, outcome: 'folded', reason });
  }

  const owed: Notification[] = [];
  if (starting) owed.push(stormNotification(firing, 'trigger', input, at));
  else if (firing.members.length > before.members) owed.push(stormNotification(firing, 'update', input, at));
  if (firing.open.length === 0) {
    firing.status = 'resolved';
    owed.push(stormNotification(firing, 'resolve', input, at));
  }
  const changed = folded.length > 0 || owed.length > 0 || firing.open.length !== before.open;
  if (changed) firing.updatedAt = at;
  return { folded, owed, storm: changed ? firing : undefined, send };
}

/** The synthetic finding a storm incident is about: the pair, how many paths, and a sample of them. */
export function stormFinding(storm: StormRecord, input: Pick<FlushInput, 'summaryOf'>, at: string): Finding {
  const key = `storm:${storm.from_env}→${storm.to_env}`;
  const sample = storm.open.slice(0, STORM_SAMPLE).map((findingKey) => ({ finding: findingKey, summary: input.summaryOf(findingKey) ?? null }));
  const open = storm.open.length;
  return {
    key,
    kind: 'violation',
    labels: { kind: 'violation', severity: 'critical', from_env: storm.from_env, to_env: storm.to_env },
    status: storm.status,
    incident: storm.incident,
    since: storm.since,
    updatedAt: at,
    stale: false,
    flapping: false,
    summary:
      storm.status === 'firing'
        ? `${open} paths from ${storm.from_env} to ${storm.to_env} are open (${storm.members.length} opened during this storm): one incident for the pair`
        : `all ${storm.members.length} paths from ${storm.from_env} to ${storm.to_env} that opened during this storm are closed again`,
    details: { storm: storm.key, members: storm.members.length, open, sample, more: Math.max(0, open - sample.length) },
    receivers: [storm.receiver],
  };
}

function stormNotification(storm: StormRecord, action: NotificationAction, input: FlushInput, at: string): Notification {
  const finding = stormFinding(storm, input, at);
  // Updates are owed each time the storm grows: the member count makes each one's id unique and deterministic.
  const suffix = action === 'update' ? `:${storm.members.length}` : '';
  return {
    id: `${finding.key}#${storm.incident}:${action}:${storm.receiver}${suffix}`,
    receiver: storm.receiver,
    action,
    findingKey: finding.key,
    incident: storm.incident,
    dedupKey: dedupKey(finding.key),
    createdAt: at,
    finding,
    deliveredAt: null,
  };
}
