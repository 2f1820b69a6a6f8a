import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { PlanError } from '../../core/errors.js';
import { parsePlanText } from '../../core/plan-load.js';
import { parseDurationMs } from '../../core/plan.js';

const dir = join(import.meta.dirname, '../fixtures/plans');
const fixtures = readdirSync(dir);

function problemsOf(file: string): readonly string[] {
  try {
    parsePlanText(readFileSync(join(dir, file), 'utf8'), file);
  } catch (err) {
    if (err instanceof PlanError) return err.problems;
    throw err;
  }
  return [];
}

describe('plan fixtures', () => {
  it.each(fixtures.filter((f) => f.startsWith('valid-')))('%s is accepted', (file) => {
    expect(problemsOf(file)).toEqual([]);
  });

  it.each(fixtures.filter((f) => f.startsWith('invalid-') && !f.endsWith('.errors')))('%s is rejected whole, with every error', (file) => {
    const expected = readFileSync(join(dir, file.replace(/\.(ya?ml|json)$/, '.errors')), 'utf8').trimEnd().split('\n');
    expect(problemsOf(file)).toEqual(expected);
  });
});

describe('plan schema', () => {
  it('applies defaults and converts durations to milliseconds', () => {
    const { plan } = parsePlanText('version: 1\nenvironments: { prod: {} }\n', 'min.yaml');
    expect(plan.schedule).toEqual({ intervalMs: 60_000, jitter: 0.1, timeoutMs: 3_000, concurrency: 64, attempts: 2, staggerMs: 0 });
    expect(plan.policy).toEqual({ default: 'deny', allow: [] });
    expect(plan.targets).toEqual([]);
  });

  it('keeps the SPEC example as written: dates stay strings, a single from becomes a list', () => {
    const { plan } = parsePlanText(readFileSync(join(dir, 'valid-spec-example.yaml'), 'utf8'), 'spec.yaml');
    expect(plan.policy.allow[0]).toEqual({ from: ['staging'], to: { target: 'prod-api' }, reason: 'status page', ticket: 'SEC-123', expires: '2027-03-31' });
    expect(plan.targets.map((t) => t.probe)).toEqual(['postgres', 'http', 'redis', 'dns']);
    expect(plan.targets[3]).toMatchObject({ type: 'A' });
    expect(plan.targets[0]).toMatchObject({ mode: 'ssl', port: 5432 });
  });

  it('freezes the parsed plan so nothing downstream can change it', () => {
    const { plan } = parsePlanText(readFileSync(join(dir, 'valid-spec-example.yaml'), 'utf8'), 'spec.yaml');
    expect(Object.isFrozen(plan.targets[0])).toBe(true);
    expect(() => (plan.targets as unknown[]).push({})).toThrow(TypeError);
  });

  it('hashes the exact bytes of the file', () => {
    const a = parsePlanText('version: 1\nenvironments: { prod: {} }\n', 'a.yaml');
    const b = parsePlanText('version: 1\nenvironments: { prod: {} }  \n', 'a.yaml');
    expect(a.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(a.sha256).not.toBe(b.sha256);
  });

  it('reports bad JSON with the file name', () => {
    expect(() => parsePlanText('{"version": 1,', 'p.json')).toThrow(/^p\.json: invalid JSON/);
  });

  it.each([
    ['500ms', 500],
    ['3s', 3000],
    ['1.5s', 1500],
    ['2m', 120_000],
    ['1h', 3_600_000],
    ['3', undefined],
    ['s', undefined],
    ['-1s', undefined],
  ])('parses duration %s', (text, ms) => {
    expect(parseDurationMs(text)).toBe(ms);
  });
});

function problemsOfText(text: string, label = 'plan.yaml'): readonly string[] {
  try {
    parsePlanText(text, label);
  } catch (err) {
    if (err instanceof PlanError) return err.problems;
    throw err;
  }
  return [];
}
const withAlerting = (alerting: string) => `version: 1\nenvironments: { prod: {} }\nalerting:\n${alerting}`;

describe('alerting schema', () => {
  it('applies the grouping, storm and rate-limit defaults', () => {
    const { plan } = parsePlanText('version: 1\nenvironments: { prod: {} }\n', 'min.yaml');
    expect(plan.alerting).toMatchObject({ group_wait: 30_000, group_interval: 300_000, repeat_interval: 14_400_000, storm_threshold: 25 });
    expect(plan.alerting.watchdog).toBeUndefined();
    expect(plan.alerting.receivers).toEqual([{ name: 'console', type: 'console', rate_limit: { requests: 1000, per: 1000 } }]);
    expect(plan.alerting.routes).toEqual([{ match: {}, receivers: ['console'], continue: false }]);
  });

  it('reads every field of a full alerting section, durations in milliseconds, secrets as references', () => {
    const { plan } = parsePlanText(readFileSync(join(dir, 'valid-alerting.yaml'), 'utf8'), 'valid-alerting.yaml');
    expect(plan.alerting.watchdog).toEqual({ receiver: 'am', interval: 60_000 });
    expect(plan.alerting.receivers).toEqual([
      { name: 'console', type: 'console', rate_limit: { requests: 1000, per: 1000 } },
      { name: 'oncall', type: 'pagerduty', routing_key: { env: 'BULKHEAD_PD_KEY' }, source: 'bulkhead-controller', rate_limit: { requests: 30, per: 60_000 } },
      { name: 'sec-chat', type: 'slack', url: { file: 'secrets/slack-webhook-url' }, rate_limit: { requests: 1, per: 1000 } },
      {
        name: 'siem',
        type: 'webhook',
        url: 'https://siem.example.com/hooks/bulkhead',
        secret: { file: '/run/secrets/bulkhead-webhook' },
        rate_limit: { requests: 10, per: 1000 },
      },
      {
        name: 'am',
        type: 'alertmanager',
        url: 'http://alertmanager:9093',
        generator_url: 'https://bulkhead.example.com/findings',
        rate_limit: { requests: 10, per: 1000 },
      },
    ]);
    // A route's timings stay absent unless written, so the controller can fall back to alerting's.
    expect(plan.alerting.routes[0]).toEqual({ match: { to_env: 'prod', kind: 'violation' }, receivers: ['oncall', 'sec-chat'], continue: true, group_wait: 10_000 });
    expect(Object.keys(plan.alerting.routes[1]!)).toEqual(['match', 'receivers', 'continue', 'repeat_interval']);
    expect(plan.alerting.routes[1]!.repeat_interval).toBe(3_600_000);
  });

  it.each([
    ['slack', 'url: { env: SLACK_URL }', { requests: 1, per: 1000 }],
    ['pagerduty', 'routing_key: { env: PD_KEY }', { requests: 60, per: 60_000 }],
    ['webhook', 'url: "http://127.0.0.1:9/hook", secret: { env: HOOK_SECRET }', { requests: 10, per: 1000 }],
    ['alertmanager', 'url: "http://127.0.0.1:9093"', { requests: 10, per: 1000 }],
    ['console', '', { requests: 1000, per: 1000 }],
  ])('gives a %s receiver its vendor-safe rate limit by default', (type, fields, limit) => {
    const { plan } = parsePlanText(withAlerting(`  receivers: [{ name: r, type: ${type}${fields ? `, ${fields}` : ''} }]\n  routes: [{ receivers: [r] }]\n`), 'p.yaml');
    expect(plan.alerting.receivers[0]!.rate_limit).toEqual(limit);
  });

  it('refuses a secret written in the plan, without repeating it', () => {
    const problems = problemsOfText(withAlerting('  receivers: [{ name: pd, type: pagerduty, routing_key: "R0123456789abcdef0123456789abcde" }]\n  routes: [{ receivers: [pd] }]\n'));
    expect(problems).toEqual(['plan.yaml: alerting.receivers[0].routing_key: a secret cannot be written in the plan: give { env: VAR } or { file: PATH }']);
    expect(problems.join('\n')).not.toContain('R0123456789');
  });

  it.each([
    ['neither url nor receiver', 'watchdog: { interval: 1m }', ['plan.yaml: alerting.watchdog: expected url or receiver']],
    ['both url and receiver', 'watchdog: { url: { env: HC_URL }, receiver: am }', ['plan.yaml: alerting.watchdog: give url or receiver, not both']],
    ['an unknown receiver', 'watchdog: { receiver: alerts }', ['plan.yaml: alerting.watchdog.receiver: unknown receiver "alerts" (declared: am, chat)']],
    [
      'a receiver that is not an alertmanager',
      'watchdog: { receiver: chat }',
      ['plan.yaml: alerting.watchdog.receiver: receiver "chat" is of type slack: the watchdog needs an alertmanager receiver'],
    ],
    ['a plain URL', 'watchdog: { url: "https://hc.example.com/ping/abc", interval: 5m }', []],
    ['an alertmanager receiver', 'watchdog: { receiver: am }', []],
  ])('checks a watchdog with %s', (_name, watchdog, expected) => {
    const receivers = '  receivers: [{ name: am, type: alertmanager, url: "http://127.0.0.1:9093" }, { name: chat, type: slack, url: { env: SLACK_URL } }]\n';
    expect(problemsOfText(withAlerting(`  ${watchdog}\n${receivers}  routes: [{ receivers: [chat] }]\n`))).toEqual(expected);
  });

  it('checks a watchdog receiver against the default console receiver too', () => {
    expect(problemsOfText(withAlerting('  watchdog: { receiver: console }\n'))).toEqual([
      'plan.yaml: alerting.watchdog.receiver: receiver "console" is of type console: the watchdog needs an alertmanager receiver',
    ]);
  });

  it.each([
    ['a repeat shorter than the group interval', '  group_interval: 10m\n  repeat_interval: 9m\n', ['plan.yaml: alerting.repeat_interval: must not be shorter than alerting.group_interval (540000 ms < 600000 ms)']],
    ['a repeat equal to the group interval', '  group_interval: 10m\n  repeat_interval: 10m\n', []],
    ['a group interval longer than the group wait', '  group_wait: 10m\n  group_interval: 1m\n', []],
    [
      "a route's repeat shorter than its own group interval",
      '  routes: [{ receivers: [console], group_interval: 2h, repeat_interval: 1h }]\n',
      ["plan.yaml: alerting.routes[0].repeat_interval: must not be shorter than the route's group_interval (3600000 ms < 7200000 ms)"],
    ],
    ["a route whose repeat fits alerting's group interval", '  routes: [{ receivers: [console], repeat_interval: 5m }]\n', []],
  ])('checks %s', (_name, alerting, expected) => {
    expect(problemsOfText(withAlerting(alerting))).toEqual(expected);
  });
});
