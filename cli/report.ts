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

/** An agent a fleet audit expected to hear from and did not (fully): a hole in the evidence. */
export interface CoverageGap {
  readonly env: string;
  /** Null when no agent of the environment answered at all. */
  readonly agent: string | null;
  readonly reason: 'no-agent' | 'no-answer' | 'incomplete';
}

export interface AuditReport {
  readonly tool: { readonly name: 'bulkhead'; readonly version: string };
  readonly plan: { readonly path: string; readonly sha256: string };
  /** The environment audited from, or `fleet` when agents of every environment ran. */
  readonly from: string;
  /** Fleet audits: which agents answered. */
  readonly agents?: readonly { readonly env: string; readonly agent: string }[];
  readonly coverageGaps?: readonly CoverageGap[];
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

export interface FleetInfo {
  readonly agents: readonly { readonly env: string; readonly agent: string }[];
  readonly gaps: readonly CoverageGap[];
}

/**
 * Judges runs against their plan at `now` and assembles the report. One run for a local audit; for a
 * fleet audit one run per agent (each judged with its own controls) plus the coverage gaps.
 */
export function buildReport(loaded: LoadedPlan, runs: RunResult | readonly RunResult[], now: Date, version: string, fleet?: FleetInfo): AuditReport {
  const { plan } = loaded;
  const list: readonly RunResult[] = Array.isArray(runs) ? runs : [runs as RunResult];
  const observations: JudgedObservation[] = [];
  const failedControls: string[] = [];
  let controlCount = 0;
  for (const run of list) {
    const judged = evaluateRun(plan, run.observations, now);
    controlCount += judged.controlCount;
    failedControls.push(...judged.failedControls.filter((t) => !failedControls.includes(t)));
    run.observations.forEach((o, i) => {
      const { verdict, expectation, rule } = judged.decisions[i]!;
      observations.push({ ...o, verdict, expectation, rule });
    });
  }
  const controlsOk = failedControls.length === 0;
  const from = fleet ? 'fleet' : (list[0]?.from ?? '');
  const startedAt = new Date(Math.min(...list.map((r) => r.startedAt.getTime()), now.getTime()));
  const finishedAt = new Date(Math.max(...list.map((r) => r.finishedAt.getTime()), 0) || now.getTime());

  const verdicts = Object.fromEntries(VERDICTS.map((v) => [v, 0])) as Record<Verdict, number>;
  const outcomes = Object.fromEntries(OUTCOMES.map((o) => [o, 0])) as Record<Outcome, number>;
  for (const o of observations) {
    verdicts[o.verdict]++;
    outcomes[o.outcome]++;
  }
  const expired = new Set(expiredRules(plan, now).map((e) => e.index));
  const gaps = fleet?.gaps ?? [];
  const result = verdicts.violation > 0 ? 'violations' : verdicts.inconclusive > 0 || !controlsOk || gaps.length > 0 ? 'inconclusive' : 'sealed';

  return {
    tool: { name: 'bulkhead', version },
    plan: { path: loaded.path, sha256: loaded.sha256 },
    from,
    ...(fleet ? { agents: fleet.agents, coverageGaps: gaps } : {}),
    environments: Object.keys(plan.environments),
    startedAt: startedAt.toISOString(),
    finishedAt: finishedAt.toISOString(),
    summary: {
      paths: observations.length,
      verdicts,
      outcomes,
      controls: { total: controlCount, failed: failedControls },
      result,
    },
    exceptions: plan.policy.allow
      .map((rule, index) => ({ rule, index }))
      .filter(({ rule }) => fleet !== undefined || rule.from.includes(from))
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

/** 0 sealed, 1 violations, 2 inconclusive (failed controls, coverage gaps). */
export function exitCodeFor(report: AuditReport): number {
  return EXIT[report.summary.result];
}
