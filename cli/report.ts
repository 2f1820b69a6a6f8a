// The audit report: every observation with its verdict, the summary, and the exit code it implies.
import type { RunResult } from '../agent/engine.js';
import type { LoadedPlan } from '../core/plan-load.js';
import type { Observation } from '../core/observation.js';
import { OUTCOMES, type Outcome } from '../core/outcome.js';
import { evaluateRun, expiredRules, VERDICTS, type Expectation, type RuleRef, type Verdict } from '../core/policy.js';

export interface JudgedObservation extends Observation {
  readonly verdict: Verdict;
  readonly expectation: Expectation;
  readonly rule: RuleRef;
}

export interface AuditReport {
  readonly tool: { readonly name: 'bulkhead'; readonly version: string };
  readonly plan: { readonly path: string; readonly sha256: string };
  readonly from: string;
  readonly environments: readonly string[];
  readonly startedAt: string;
  readonly finishedAt: string;
  readonly summary: {
    readonly paths: number;
    readonly verdicts: Record<Verdict, number>;
    readonly outcomes: Record<Outcome, number>;
    readonly controls: { readonly total: number; readonly failed: readonly string[] };
    readonly result: 'sealed' | 'violations' | 'inconclusive';
  };
  /** Allow rules of the plan that apply to this environment, with whether they have expired. */
  readonly exceptions: readonly {
    readonly rule: string;
    readonly from: readonly string[];
    readonly to: { readonly env?: string; readonly target?: string };
    readonly reason: string;
    readonly ticket?: string;
    readonly expires?: string;
    readonly expired: boolean;
  }[];
  readonly observations: readonly JudgedObservation[];
}

export const EXIT = { sealed: 0, violations: 1, inconclusive: 2, usage: 3 } as const;

/** Judges a run against its plan at `now` and assembles the report. */
export function buildReport(loaded: LoadedPlan, run: RunResult, now: Date, version: string): AuditReport {
  const { plan } = loaded;
  const { decisions, failedControls, controlCount } = evaluateRun(plan, run.observations, now);
  const controlsOk = failedControls.length === 0;
  const observations = run.observations.map((o, i): JudgedObservation => {
    const { verdict, expectation, rule } = decisions[i]!;
    return { ...o, verdict, expectation, rule };
  });

  const verdicts = Object.fromEntries(VERDICTS.map((v) => [v, 0])) as Record<Verdict, number>;
  const outcomes = Object.fromEntries(OUTCOMES.map((o) => [o, 0])) as Record<Outcome, number>;
  for (const o of observations) {
    verdicts[o.verdict]++;
    outcomes[o.outcome]++;
  }
  const expired = new Set(expiredRules(plan, now).map((e) => e.index));
  const result = verdicts.violation > 0 ? 'violations' : verdicts.inconclusive > 0 || !controlsOk ? 'inconclusive' : 'sealed';

  return {
    tool: { name: 'bulkhead', version },
    plan: { path: loaded.path, sha256: loaded.sha256 },
    from: run.from,
    environments: Object.keys(plan.environments),
    startedAt: run.startedAt.toISOString(),
    finishedAt: run.finishedAt.toISOString(),
    summary: {
      paths: observations.length,
      verdicts,
      outcomes,
      controls: { total: controlCount, failed: failedControls },
      result,
    },
    exceptions: plan.policy.allow
      .map((rule, index) => ({ rule, index }))
      .filter(({ rule }) => rule.from.includes(run.from))
      .map(({ rule, index }) => ({
        rule: `allow[${index}]`,
        from: rule.from,
        to: rule.to,
        reason: rule.reason,
        ...(rule.ticket !== undefined ? { ticket: rule.ticket } : {}),
        ...(rule.expires !== undefined ? { expires: rule.expires } : {}),
        expired: expired.has(index),
      })),
    observations,
  };
}

/** 0 sealed, 1 violations, 2 inconclusive (including failed controls). */
export function exitCodeFor(report: AuditReport): number {
  return EXIT[report.summary.result];
}
