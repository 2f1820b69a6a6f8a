import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { PlanError } from '../../core/errors.js';
import { parsePlanText, type LoadedPlan } from '../../core/plan-load.js';
import { redact, resolveAlerting, resolveReceivers, resolveWatchdog, secretsOf, type ReceiverRuntime } from '../../controller/receivers/config.js';
import { renderPagerDuty } from '../../controller/receivers/pagerduty.js';

const ROUTING_KEY = 'R0123456789abcdef0123456789abcde';
const SLACK_URL = 'https://hooks.slack.com/services/T0001/B0001/abcdefghijklmnopqrstuvwx';
const HOOK_URL = 'http://127.0.0.1:8099/hooks/bulkhead?token=hook-url-token';
const HOOK_SECRET = `whsec_${Buffer.from('bulkhead-test-signing-secret-32b').toString('base64')}`;
const AM_URL = 'http://127.0.0.1:9093';

// The plan sits in its own directory so that relative file references have something to resolve against.
const root = mkdtempSync(join(tmpdir(), 'bulkhead-receivers-'));
const planDir = join(root, 'plans');
afterAll(() => rmSync(root, { recursive: true, force: true }));

function secretFile(relative: string, content: string): string {
  const path = join(planDir, relative);
  mkdirSync(join(path, '..'), { recursive: true });
  writeFileSync(path, content);
  return path;
}

/** A plan at `<planDir>/plan.yaml` with these receivers (YAML flow items) routed from one catch-all route. */
function plan(receivers: string[], extra = ''): LoadedPlan {
  const names = receivers.map((r) => /name: ([a-z0-9-]+)/.exec(r)![1]);
  const text = `version: 1\nenvironments: { prod: {} }\nalerting:\n${extra}  receivers:\n${receivers.map((r) => `    - ${r}\n`).join('')}  routes: [{ receivers: [${names.join(', ')}] }]\n`;
  return parsePlanText(text, join(planDir, 'plan.yaml'));
}

/** The problems of the PlanError `fn` throws (failing the test when it throws nothing or something else). */
function problemsOf(fn: () => unknown): readonly string[] {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(PlanError);
    return (err as PlanError).problems;
  }
  throw new Error('expected a PlanError, nothing was thrown');
}

describe('resolveReceivers', () => {
  it('turns each of the five receiver types into the exact config its renderer takes', () => {
    secretFile('secrets/hook-url', `${HOOK_URL}\n`);
    const secretPath = secretFile('abs/hook-secret', `${HOOK_SECRET}\r\n`);
    const loaded = plan([
      '{ name: console, type: console }',
      '{ name: oncall, type: pagerduty, routing_key: { env: BULKHEAD_PD_KEY }, url: "http://127.0.0.1:8098/v2/enqueue", source: bulkhead-ci, rate_limit: { requests: 30, per: 1m } }',
      '{ name: chat, type: slack, url: { env: SLACK_URL } }',
      `{ name: hook, type: webhook, url: { file: secrets/hook-url }, secret: { file: "${secretPath}" } }`,
      '{ name: am, type: alertmanager, url: { env: AM_URL }, generator_url: "https://bulkhead.example.com/findings" }',
      '{ name: am-plain, type: alertmanager, url: "http://127.0.0.1:9094/" }',
      '{ name: pd-default, type: pagerduty, routing_key: { env: BULKHEAD_PD_KEY } }',
    ]);
    const receivers = resolveReceivers(loaded, { BULKHEAD_PD_KEY: ROUTING_KEY, SLACK_URL, AM_URL });
    expect(receivers).toEqual<ReceiverRuntime[]>([
      { name: 'console', type: 'console', rateLimit: { requests: 1000, perMs: 1000 } },
      {
        name: 'oncall',
        type: 'pagerduty',
        rateLimit: { requests: 30, perMs: 60_000 },
        config: { routingKey: ROUTING_KEY, url: 'http://127.0.0.1:8098/v2/enqueue', source: 'bulkhead-ci' },
      },
      { name: 'chat', type: 'slack', rateLimit: { requests: 1, perMs: 1000 }, config: { url: SLACK_URL } },
      { name: 'hook', type: 'webhook', rateLimit: { requests: 10, perMs: 1000 }, config: { url: HOOK_URL, secret: HOOK_SECRET }, urlFromSecret: true },
      {
        name: 'am',
        type: 'alertmanager',
        rateLimit: { requests: 10, perMs: 1000 },
        config: { url: AM_URL, generatorUrl: 'https://bulkhead.example.com/findings' },
        urlFromSecret: true,
      },
      { name: 'am-plain', type: 'alertmanager', rateLimit: { requests: 10, perMs: 1000 }, config: { url: 'http://127.0.0.1:9094/' }, urlFromSecret: false },
      { name: 'pd-default', type: 'pagerduty', rateLimit: { requests: 60, perMs: 60_000 }, config: { routingKey: ROUTING_KEY } },
    ]);
    // No key present with an undefined value: the renderer's `config.url ?? default` must see the default.
    expect(Object.keys((receivers[6] as Extract<ReceiverRuntime, { type: 'pagerduty' }>).config)).toEqual(['routingKey']);
  });

  it('hands the renderer a config it can use as is', () => {
    const [pd] = resolveReceivers(plan(['{ name: oncall, type: pagerduty, routing_key: { env: BULKHEAD_PD_KEY } }']), { BULKHEAD_PD_KEY: ROUTING_KEY });
    if (pd?.type !== 'pagerduty') throw new Error(`expected a pagerduty receiver, got ${pd?.type}`);
    const notification = {
      id: 'n1', receiver: 'oncall', action: 'resolve', findingKey: 'violation:x', incident: 1, dedupKey: 'bulkhead:v1:abc',
      createdAt: '2026-11-22T12:00:00.000Z', finding: {},
    } as unknown as Parameters<typeof renderPagerDuty>[0][number];
    const request = renderPagerDuty([notification], pd.config, new Date());
    expect(request.url).toBe('https://events.pagerduty.com/v2/enqueue');
    expect(JSON.parse(request.body)).toEqual({ routing_key: ROUTING_KEY, dedup_key: 'bulkhead:v1:abc', event_action: 'resolve' });
  });

  it('reports every missing or malformed secret at once, in plan order, naming the plan file and field', () => {
    secretFile('secrets/empty', '\n');
    secretFile('secrets/not-a-url', 'hooks.slack.com/services/T0001/B0001/leakedtoken\n');
    secretFile('secrets/bad-whsec', 'whsec_not*base64\n');
    const loaded = plan([
      '{ name: console, type: console }',
      '{ name: oncall, type: pagerduty, routing_key: { env: BULKHEAD_PD_KEY } }',
      '{ name: chat, type: slack, url: { file: secrets/not-a-url } }',
      '{ name: hook, type: webhook, url: { file: secrets/missing }, secret: { file: secrets/bad-whsec } }',
      '{ name: am, type: alertmanager, url: { env: AM_URL } }',
      '{ name: pd2, type: pagerduty, routing_key: { file: secrets/empty } }',
    ]);
    const file = join(planDir, 'plan.yaml');
    const problems = problemsOf(() => resolveReceivers(loaded, { AM_URL: 'ftp://127.0.0.1/leaked-am-token' }));
    expect(problems).toEqual([
      `${file}: alerting.receivers[1].routing_key: environment variable BULKHEAD_PD_KEY is not set`,
      `${file}: alerting.receivers[2].url: file ${join(planDir, 'secrets/not-a-url')} does not hold an http:// or https:// URL`,
      `${file}: alerting.receivers[3].url: cannot read secret file ${join(planDir, 'secrets/missing')} (ENOENT)`,
      `${file}: alerting.receivers[3].secret: file ${join(planDir, 'secrets/bad-whsec')}: a whsec_ secret must be followed by standard base64`,
      `${file}: alerting.receivers[4].url: environment variable AM_URL does not hold an http:// or https:// URL`,
      `${file}: alerting.receivers[5].routing_key: secret file ${join(planDir, 'secrets/empty')} is empty`,
    ]);
    const text = problems.join('\n');
    for (const leaked of ['leakedtoken', 'leaked-am-token', 'not*base64']) expect(text).not.toContain(leaked);
  });

  it('throws one PlanError whose message is every problem, one per line', () => {
    const loaded = plan(['{ name: a, type: pagerduty, routing_key: { env: PD_A } }', '{ name: b, type: slack, url: { env: SLACK_B } }']);
    expect(() => resolveReceivers(loaded, {})).toThrow(
      new PlanError([
        `${loaded.path}: alerting.receivers[0].routing_key: environment variable PD_A is not set`,
        `${loaded.path}: alerting.receivers[1].url: environment variable SLACK_B is not set`,
      ]),
    );
  });

  it('resolves the default plan (one console receiver) without any secret', () => {
    const loaded = parsePlanText('version: 1\nenvironments: { prod: {} }\n', join(planDir, 'min.yaml'));
    expect(resolveReceivers(loaded, {})).toEqual([{ name: 'console', type: 'console', rateLimit: { requests: 1000, perMs: 1000 } }]);
  });
});

describe('resolveWatchdog', () => {
  const am = '{ name: am, type: alertmanager, url: "http://127.0.0.1:9093" }';

  it('is undefined when the plan has no watchdog', () => {
    expect(resolveWatchdog(plan([am]), {})).toBeUndefined();
  });

  it('names the alertmanager receiver', () => {
    expect(resolveWatchdog(plan([am], '  watchdog: { receiver: am, interval: 2m }\n'), {})).toEqual({ kind: 'receiver', receiver: 'am', intervalMs: 120_000 });
  });

  it('takes a URL written in the plan, with the default interval', () => {
    expect(resolveWatchdog(plan([am], '  watchdog: { url: "https://hc.example.com/ping/abc" }\n'), {})).toEqual({
      kind: 'url', url: 'https://hc.example.com/ping/abc', intervalMs: 60_000, urlFromSecret: false,
    });
  });

  it('reads a URL secret, and reports one that is missing', () => {
    const loaded = plan([am], '  watchdog: { url: { env: HC_URL }, interval: 30s }\n');
    expect(resolveWatchdog(loaded, { HC_URL: 'https://hc.example.com/ping/secret-uuid' })).toEqual({
      kind: 'url', url: 'https://hc.example.com/ping/secret-uuid', intervalMs: 30_000, urlFromSecret: true,
    });
    expect(problemsOf(() => resolveWatchdog(loaded, {}))).toEqual([`${loaded.path}: alerting.watchdog.url: environment variable HC_URL is not set`]);
  });

  it('is reported together with the receivers by resolveAlerting', () => {
    const loaded = plan(['{ name: oncall, type: pagerduty, routing_key: { env: PD_KEY } }'], '  watchdog: { url: { env: HC_URL } }\n');
    expect(problemsOf(() => resolveAlerting(loaded, {}))).toEqual([
      `${loaded.path}: alerting.receivers[0].routing_key: environment variable PD_KEY is not set`,
      `${loaded.path}: alerting.watchdog.url: environment variable HC_URL is not set`,
    ]);
    const ok = resolveAlerting(loaded, { PD_KEY: ROUTING_KEY, HC_URL: 'http://127.0.0.1:9/ping' });
    expect(ok.receivers.map((r) => r.name)).toEqual(['oncall']);
    expect(ok.watchdog).toEqual({ kind: 'url', url: 'http://127.0.0.1:9/ping', intervalMs: 60_000, urlFromSecret: true });
  });
});

describe('secretsOf and redact', () => {
  const loaded = plan([
    '{ name: console, type: console }',
    '{ name: oncall, type: pagerduty, routing_key: { env: PD_KEY } }',
    '{ name: chat, type: slack, url: { env: SLACK_URL } }',
    '{ name: hook, type: webhook, url: "http://127.0.0.1:8099/public-hook", secret: { env: HOOK_SECRET } }',
    '{ name: am, type: alertmanager, url: { env: AM_URL } }',
    '{ name: am-plain, type: alertmanager, url: "http://127.0.0.1:9094" }',
  ], '  watchdog: { url: { env: HC_URL } }\n');
  const env = { PD_KEY: ROUTING_KEY, SLACK_URL, HOOK_SECRET, AM_URL: 'HTTP://AM.Example.com:9093', HC_URL: 'https://hc.example.com/ping/hc-uuid' };
  const { receivers, watchdog } = resolveAlerting(loaded, env);

  it('lists the values read from secrets, and URLs written in the plan not at all', () => {
    expect(secretsOf(receivers, watchdog)).toEqual([
      ROUTING_KEY,
      SLACK_URL,
      HOOK_SECRET,
      'HTTP://AM.Example.com:9093',
      'http://am.example.com:9093/', // how a URL parser (and so an HTTP client's error) prints it
      'https://hc.example.com/ping/hc-uuid',
    ]);
    expect(secretsOf(receivers)).not.toContain('https://hc.example.com/ping/hc-uuid');
  });

  it('hides every occurrence of every secret', () => {
    const secrets = secretsOf(receivers, watchdog);
    const text = `POST ${SLACK_URL} failed; routing_key=${ROUTING_KEY} (again: ${ROUTING_KEY}); connect http://am.example.com:9093/api/v2/alerts; public http://127.0.0.1:8099/public-hook`;
    expect(redact(text, secrets)).toBe(
      'POST [redacted] failed; routing_key=[redacted] (again: [redacted]); connect [redacted]api/v2/alerts; public http://127.0.0.1:8099/public-hook',
    );
  });

  it('hides a secret containing another whole, and leaves values under 4 characters alone', () => {
    expect(redact('token abcd and abcdef and abc', ['abc', 'abcd', 'abcdef'])).toBe('token [redacted] and [redacted] and abc');
    expect(redact('nothing to hide', [])).toBe('nothing to hide');
  });
});
