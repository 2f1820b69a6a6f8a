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
