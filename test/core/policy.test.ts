import { describe, expect, it } from 'vitest';
import type { Observation } from '../../core/observation.js';
import type { Outcome } from '../../core/outcome.js';
import { parsePlanText } from '../../core/plan-load.js';
import { evaluate, evaluateRun, expectationFor, expiredRules, expiryInstant, type Verdict } from '../../core/policy.js';

const { plan } = parsePlanText(
  `
version: 1
environments: { prod: {}, staging: {}, dev: {} }
targets:
  - { name: prod-db,  env: prod, probe: postgres, host: 198.18.1.1 }
  - { name: prod-api, env: prod, probe: http, url: "http://198.18.1.2/" }
  - { name: prod-old, env: prod, probe: tcp, host: 198.18.1.3, port: 22 }
  - { name: stg-web,  env: staging, probe: http, url: "http://198.18.2.1/", expect_status: [200] }
  - { name: dev-db,   env: dev, probe: postgres, host: 198.18.3.1 }
policy:
  allow:
    - { from: [staging], to: { target: prod-api }, reason: "status page", ticket: SEC-123, expires: 2027-03-31 }
    - { from: [staging], to: { target: prod-old }, reason: "legacy sftp", ticket: SEC-9, expires: 2026-01-31 }
    - { from: [staging, dev], to: { env: dev }, reason: "shared sandbox" }
`,
  'policy.yaml',
);
const now = new Date('2026-11-22T12:00:00Z');
const target = (name: string) => plan.targets.find((t) => t.name === name)!;

function obs(from: string, name: string, outcome: Outcome, status?: number): Observation {
  const t = target(name);
  return {
    target: name,
    env: t.env,
    from,
    probe: t.probe,
    address: '198.18.0.1',
    port: 1,
    outcome,
    layer: 'tcp',
    evidence: status === undefined ? {} : { http: { status } },
    timings: { totalMs: 1 },
    attempts: 1,
    at: now.toISOString(),
  };
}

describe('evaluate', () => {
  const cases: [string, string, Outcome, boolean, Verdict, string][] = [
    // from, target, outcome, controlsOk, verdict, rule id
    ['staging', 'prod-db', 'open', true, 'violation', 'default-deny'],
    ['staging', 'prod-db', 'open', false, 'violation', 'default-deny'], // an open path is open even when controls fail
    ['staging', 'prod-db', 'refused', true, 'pass', 'default-deny'],
    ['staging', 'prod-db', 'filtered', true, 'pass', 'default-deny'],
    ['staging', 'prod-db', 'unreachable', true, 'pass', 'default-deny'],
    ['staging', 'prod-db', 'unresolved', true, 'pass', 'default-deny'],
    ['staging', 'prod-db', 'filtered', false, 'inconclusive', 'default-deny'], // silence is not isolation
    ['staging', 'prod-db', 'error', true, 'inconclusive', 'default-deny'],
    ['staging', 'prod-api', 'open', true, 'pass', 'allow[0]'],
    ['staging', 'prod-api', 'filtered', true, 'expected-path-down', 'allow[0]'],
    ['staging', 'prod-api', 'error', true, 'inconclusive', 'allow[0]'],
    ['dev', 'prod-api', 'open', true, 'violation', 'default-deny'], // the rule names staging only
    ['staging', 'prod-old', 'open', true, 'violation', 'allow[1]'], // expired exception turns back into deny
    ['staging', 'prod-old', 'refused', true, 'pass', 'allow[1]'],
    ['staging', 'dev-db', 'open', true, 'pass', 'allow[2]'], // env-wide rule
    ['prod', 'prod-db', 'open', true, 'pass', 'control'],
    ['prod', 'prod-db', 'refused', true, 'expected-path-down', 'control'],
    ['staging', 'stg-web', 'error', true, 'inconclusive', 'control'],
  ];
  it.each(cases)('%s → %s %s (controls ok: %s) is %s by %s', (from, name, outcome, controlsOk, verdict, ruleId) => {
    const decision = evaluate(plan, target(name), obs(from, name, outcome), { now, controlsOk });
    expect(decision.verdict).toBe(verdict);
    expect(decision.rule.id).toBe(ruleId);
  });

  it('a control that answers with a status it does not expect is down', () => {
    expect(evaluate(plan, target('stg-web'), obs('staging', 'stg-web', 'open', 503), { now, controlsOk: true }).verdict).toBe('expected-path-down');
    expect(evaluate(plan, target('stg-web'), obs('staging', 'stg-web', 'open', 200), { now, controlsOk: true }).verdict).toBe('pass');
  });

  it('across environments any HTTP status is open: a 403 from prod is a violation', () => {
    expect(evaluate(plan, target('prod-db'), obs('staging', 'prod-db', 'open', 403), { now, controlsOk: true }).verdict).toBe('violation');
  });

  it('names the expired exception with its reason and ticket', () => {
    const { rule, expectation } = expectationFor(plan, 'staging', target('prod-old'), now);
    expect(expectation).toBe('deny');
    expect(rule).toEqual({ id: 'allow[1]', kind: 'exception-expired', reason: 'legacy sftp', ticket: 'SEC-9', expires: '2026-01-31' });
  });
});

describe('expiry', () => {
  it('a date is valid through the end of that day, UTC', () => {
    expect(expiryInstant('2027-03-31').toISOString()).toBe('2027-04-01T00:00:00.000Z');
    expect(expiryInstant('2026-12-01T18:00:00Z').toISOString()).toBe('2026-12-01T18:00:00.000Z');
  });

  it('the rule applies on its last day and not a millisecond after', () => {
    const lastMoment = new Date('2027-03-31T23:59:59.999Z');
    expect(expectationFor(plan, 'staging', target('prod-api'), lastMoment).expectation).toBe('allow');
    expect(expectationFor(plan, 'staging', target('prod-api'), new Date('2027-04-01T00:00:00Z')).expectation).toBe('deny');
  });

  it('lists expired rules', () => {
    expect(expiredRules(plan, now).map((e) => e.index)).toEqual([1]);
    expect(expiredRules(plan, new Date('2028-01-01')).map((e) => e.index)).toEqual([0, 1]);
  });
});

describe('evaluateRun', () => {
  it('a control answering the wrong status fails the run: its blocked results become inconclusive, open stays a violation', () => {
    const observations = [obs('staging', 'stg-web', 'open', 503), obs('staging', 'prod-db', 'refused'), obs('staging', 'prod-old', 'open')];
    const run = evaluateRun(plan, observations, now);
    expect(run.failedControls).toEqual(['stg-web']);
    expect(run.controlCount).toBe(1);
    expect(run.decisions.map((d) => d.verdict)).toEqual(['expected-path-down', 'inconclusive', 'violation']);
  });

  it('with every control passing, blocked results pass', () => {
    const run = evaluateRun(plan, [obs('staging', 'stg-web', 'open', 200), obs('staging', 'prod-db', 'refused')], now);
    expect(run.failedControls).toEqual([]);
    expect(run.decisions.map((d) => d.verdict)).toEqual(['pass', 'pass']);
  });
});
