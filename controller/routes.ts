// Which receivers a finding goes to: the plan's routes with Alertmanager semantics (SPEC §7 Alerting).
import type { Alerting } from '../core/plan.js';
import type { FindingLabels } from './model.js';

type Matchers = Alerting['routes'][number]['match'];
const LABELS = ['kind', 'severity', 'from_env', 'to_env', 'target'] as const satisfies readonly (keyof Matchers & keyof FindingLabels)[];

// A matcher on a label the finding does not carry does not match: a route for `from_env: prod` must not
// catch an exception-expired finding that names no environment.
function matches(match: Matchers, labels: FindingLabels): boolean {
  return LABELS.every((name) => {
    const wanted = match[name];
    if (wanted === undefined) return true;
    const value = labels[name];
    return value !== undefined && (Array.isArray(wanted) ? (wanted as readonly string[]).includes(value) : wanted === value);
  });
}

/**
 * Receivers for a finding: routes in order, the first matching route wins unless it says `continue`.
 * A finding no route matches goes nowhere (it is still tracked); a plan ends its routes with `match: {}` to catch all.
 */
export function receiversFor(labels: FindingLabels, alerting: Alerting): string[] {
  const receivers: string[] = [];
  for (const route of alerting.routes) {
    if (!matches(route.match, labels)) continue;
    for (const name of route.receivers) if (!receivers.includes(name)) receivers.push(name);
    if (!route.continue) break;
  }
  return receivers;
}

export interface GroupTimings {
  readonly groupWaitMs: number;
  readonly groupIntervalMs: number;
  readonly repeatIntervalMs: number;
}

/**
 * The grouping timings for a finding at one receiver: those of the first route (walked as receiversFor walks them)
 * that matched and named the receiver, falling back to the alerting section's.
 */
export function timingsFor(labels: FindingLabels, receiver: string, alerting: Alerting): GroupTimings {
  const fallback = { groupWaitMs: alerting.group_wait, groupIntervalMs: alerting.group_interval, repeatIntervalMs: alerting.repeat_interval };
  for (const route of alerting.routes) {
    if (!matches(route.match, labels)) continue;
    if (route.receivers.includes(receiver)) {
      return {
        groupWaitMs: route.group_wait ?? fallback.groupWaitMs,
        groupIntervalMs: route.group_interval ?? fallback.groupIntervalMs,
        repeatIntervalMs: route.repeat_interval ?? fallback.repeatIntervalMs,
      };
    }
    if (!route.continue) break;
  }
  return fallback;
}

/** Whether a finding's labels satisfy a set of matchers (routes and silences share the semantics). */
export function labelsMatch(match: Matchers, labels: FindingLabels): boolean {
  return matches(match, labels);
}
