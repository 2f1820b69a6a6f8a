import { describe, expect, it } from 'vitest';
import { parsePlanText } from '../../core/plan-load.js';
import type { Alerting } from '../../core/plan.js';
import type { FindingLabels } from '../../controller/model.js';
import { receiversFor } from '../../controller/routes.js';

function alerting(routes?: unknown[]): Alerting {
  const receivers = ['pager', 'chat', 'hook', 'console'].map((name) =>
    name === 'pager'
      ? { name, type: 'pagerduty', routing_key: { env: 'BULKHEAD_PD_KEY' } }
      : { name, type: 'webhook', url: 'http://127.0.0.1:9/hook', secret: { env: 'BULKHEAD_HOOK_SECRET' } },
  );
  const doc = { version: 1, environments: { prod: {} }, alerting: routes === undefined ? {} : { receivers, routes } };
  return parsePlanText(JSON.stringify(doc), 'plan.json').plan.alerting;
}

const violation: FindingLabels = { kind: 'violation', severity: 'critical', from_env: 'staging', to_env: 'prod', target: 'prod-db' };
const silent: FindingLabels = { kind: 'agent-silent', severity: 'error', from_env: 'dev' };
const expired: FindingLabels = { kind: 'exception-expired', severity: 'warning', target: 'prod-api' };

describe('receiversFor', () => {
  it('the default routes send everything to console', () => {
    expect(receiversFor(violation, alerting())).toEqual(['console']);
    expect(receiversFor(expired, alerting())).toEqual(['console']);
  });

  const routes = [
    { match: { to_env: 'prod', kind: 'violation' }, receivers: ['pager'], continue: true },
    { match: { severity: ['critical', 'error'] }, receivers: ['chat', 'pager'], continue: true },
    { match: { from_env: ['dev', 'qa'] }, receivers: ['hook'] },
    { match: { severity: 'critical' }, receivers: ['hook'] },
    { match: {}, receivers: ['console'] },
  ];
  it.each<[string, FindingLabels, string[]]>([
    // every matcher must match; continue keeps going; the result is deduplicated in order
    ['matches all matchers, continues twice, stops at the first route without continue', violation, ['pager', 'chat', 'hook']],
    ['a list matcher is any-of', silent, ['chat', 'pager', 'hook']],
    ['one failing matcher fails the route', { ...violation, to_env: 'staging' }, ['chat', 'pager', 'hook']],
    ['a missing label never matches a matcher on it', expired, ['console']],
    ['the catch-all route at the end', { kind: 'expected-path-down', severity: 'warning', from_env: 'staging' }, ['console']],
    ['severity list excludes others', { kind: 'control-failed', severity: 'info', from_env: 'qa' }, ['hook']],
  ])('%s', (_name, labels, expected) => {
    expect(receiversFor(labels, alerting(routes))).toEqual(expected);
  });

  it('without a catch-all, a finding no route matches goes nowhere', () => {
    expect(receiversFor(expired, alerting([{ match: { kind: 'violation' }, receivers: ['pager'] }]))).toEqual([]);
  });

  it('the first matching route wins when it does not continue', () => {
    const first = alerting([
      { match: { kind: 'violation' }, receivers: ['pager'] },
      { match: {}, receivers: ['console'] },
    ]);
    expect(receiversFor(violation, first)).toEqual(['pager']);
    expect(receiversFor(silent, first)).toEqual(['console']);
  });

  it('duplicates across and within routes appear once, in first-seen order', () => {
    const dup = alerting([
      { match: {}, receivers: ['chat', 'pager', 'chat'], continue: true },
      { match: { target: ['prod-db'] }, receivers: ['pager', 'hook'], continue: true },
      { match: {}, receivers: ['chat'] },
    ]);
    expect(receiversFor(violation, dup)).toEqual(['chat', 'pager', 'hook']);
  });
});
