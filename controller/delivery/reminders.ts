// What a group's reminder carries: the findings still firing in it (one receiver, one environment pair) as update
// notifications, with a firing storm incident standing in for its member paths. Pure; the dispatcher times them.
import { dedupKey } from '../findings.js';
import type { Finding, FindingLabels, Notification } from '../model.js';
import type { StormRecord } from './model.js';
import { stormFinding } from './storm.js';

/** `<receiver>|<from_env>→<to_env>`, `-` for a label the finding lacks. Storm records use the same key. */
export const groupKey = (receiver: string, f: { readonly labels: FindingLabels }): string => `${receiver}|${f.labels.from_env ?? '-'}→${f.labels.to_env ?? '-'}`;

const inGroup = (f: Finding, receiver: string, key: string): boolean => f.status === 'firing' && f.receivers.includes(receiver) && groupKey(receiver, f) === key;

/** Whether anything fires in the group: a finding routed to the receiver, or its storm incident. */
export function anyFiring(key: string, receiver: string, findings: Iterable<Finding>, storm: StormRecord | undefined): boolean {
  if (storm?.status === 'firing') return true;
  for (const f of findings) if (inGroup(f, receiver, key)) return true;
  return false;
}

/** The group's firing findings as reminders at `at` (storm members replaced by their incident). */
export function reminders(key: string, receiver: string, findings: ReadonlyMap<string, Finding>, storm: StormRecord | undefined, at: string): Notification[] {
  const folded = new Set(storm?.status === 'firing' ? storm.open : []);
  const firing: Finding[] = [];
  for (const f of findings.values()) if (inGroup(f, receiver, key) && !folded.has(f.key)) firing.push(f);
  if (storm?.status === 'firing') firing.push(stormFinding(storm, { summaryOf: (k) => findings.get(k)?.summary }, at));
  return firing.map((f) => reminder(f, receiver, at));
}

/** A firing finding re-sent as an update; its id names the moment, and nothing settles it. */
function reminder(f: Finding, receiver: string, at: string): Notification {
  return {
    id: `${f.key}#${f.incident}:reminder:${receiver}:${at}`,
    receiver,
    action: 'update',
    findingKey: f.key,
    incident: f.incident,
    dedupKey: dedupKey(f.key),
    createdAt: at,
    finding: f,
    deliveredAt: null,
  };
}
