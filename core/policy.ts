// Policy evaluation: observation + plan → verdict and the rule that decided it. Pure: no I/O, no clock.
import { pathState } from './outcome.js';
import type { Observation } from './observation.js';
import type { AllowRule, Plan, Target } from './plan.js';

export const VERDICTS = ['pass', 'violation', 'inconclusive', 'expected-path-down'] as const;
export type Verdict = (typeof VERDICTS)[number];

/** What the policy expects of a path: cross-environment deny or allow, or a same-environment control. */
export type Expectation = 'deny' | 'allow' | 'control';

/** The rule that decided a verdict, as it appears in reports. */
export type RuleRef =
  | { readonly id: 'default-deny'; readonly kind: 'default-deny' }
  | { readonly id: 'control'; readonly kind: 'control' }
  | {
      readonly id: `allow[${number}]`;
      readonly kind: 'allow' | 'exception-expired';
      readonly reason: string;
      readonly ticket?: string;
      readonly expires?: string;
    };

export interface Decision {
  readonly verdict: Verdict;
  readonly expectation: Expectation;
  readonly rule: RuleRef;
}

export interface EvaluationContext {
  readonly now: Date;
  /** False when this run's controls failed: its blocked results prove nothing. */
  readonly controlsOk: boolean;
}

/** The instant an allow rule stops applying: a date means "through the end of that day, UTC". */
export function expiryInstant(expires: string): Date {
  return /^\d{4}-\d{2}-\d{2}$/.test(expires) ? new Date(Date.parse(`${expires}T00:00:00Z`) + 86_400_000) : new Date(expires);
}

export function isExpired(rule: AllowRule, now: Date): boolean {
  return rule.expires !== undefined && now.getTime() >= expiryInstant(rule.expires).getTime();
}

function ruleRef(rule: AllowRule, index: number, kind: 'allow' | 'exception-expired'): RuleRef {
  return {
    id: `allow[${index}]`,
    kind,
    reason: rule.reason,
    ...(rule.ticket !== undefined ? { ticket: rule.ticket } : {}),
    ...(rule.expires !== undefined ? { expires: rule.expires } : {}),
  };
}

/** The expectation for a path from `from` to `target`, and the rule that sets it. */
export function expectationFor(plan: Plan, from: string, target: Target, now: Date): { expectation: Expectation; rule: RuleRef } {
  if (from === target.env) return { expectation: 'control', rule: { id: 'control', kind: 'control' } };
  let expired: RuleRef | undefined;
  for (const [index, rule] of plan.policy.allow.entries()) {
    if (!rule.from.includes(from)) continue;
    const to = rule.to;
    if (to.target !== undefined && to.target !== target.name) continue;
    if (to.env !== undefined && to.env !== target.env) continue;
    if (!isExpired(rule, now)) return { expectation: 'allow', rule: ruleRef(rule, index, 'allow') };
    expired ??= ruleRef(rule, index, 'exception-expired');
  }
  return { expectation: 'deny', rule: expired ?? { id: 'default-deny', kind: 'default-deny' } };
}

/** Judges one observation against the plan (SPEC §3 rules 1–4, §5 allow rules and expiry). */
export function evaluate(plan: Plan, target: Target, observation: Observation, ctx: EvaluationContext): Decision {
  const { expectation, rule } = expectationFor(plan, observation.from, target, ctx.now);
  const state = pathState(observation.outcome);
  if (state === 'inconclusive') return { verdict: 'inconclusive', expectation, rule };

  switch (expectation) {
    case 'control': {
      const wanted = target.probe === 'http' ? target.expect_status : undefined;
      const status = observation.evidence.http?.status;
      const works = state === 'open' && (wanted === undefined || (status !== undefined && wanted.includes(status)));
      return { verdict: works ? 'pass' : 'expected-path-down', expectation, rule };
    }
    case 'allow':
      return { verdict: state === 'open' ? 'pass' : 'expected-path-down', expectation, rule };
    case 'deny':
      if (state === 'open') return { verdict: 'violation', expectation, rule };
      return { verdict: ctx.controlsOk ? 'pass' : 'inconclusive', expectation, rule };
  }
}

/** A run's observations judged together: controls first, because failed controls make blocked results inconclusive. */
export function evaluateRun(
  plan: Plan,
  observations: readonly Observation[],
  now: Date,
): { decisions: Decision[]; failedControls: string[]; controlCount: number } {
  const byName = new Map(plan.targets.map((t) => [t.name, t]));
  const isControl = (o: Observation) => o.from === o.env;
  const failed = new Set<string>();
  let controlCount = 0;
  for (const o of observations) {
    if (!isControl(o)) continue;
    controlCount++;
    if (evaluate(plan, byName.get(o.target)!, o, { now, controlsOk: true }).verdict !== 'pass') failed.add(o.target);
  }
  const ctx = { now, controlsOk: failed.size === 0 };
  const decisions = observations.map((o) => evaluate(plan, byName.get(o.target)!, o, ctx));
  return { decisions, failedControls: [...failed], controlCount };
}

/** Allow rules that have expired at `now`, with their index: each one is an `exception-expired` finding. */
export function expiredRules(plan: Plan, now: Date): { index: number; rule: AllowRule }[] {
  return plan.policy.allow.flatMap((rule, index) => (isExpired(rule, now) ? [{ index, rule }] : []));
}
