import { createHash } from 'node:crypto';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pathKey, type Observation } from '../../core/observation.js';
import { parsePlanText } from '../../core/plan-load.js';
import type { Plan } from '../../core/plan.js';
import type { ResultBatch } from '../../core/wire.js';
import { applyResults } from '../../controller/lifecycle.js';
import { emptyState, type ControllerState, type Notification } from '../../controller/model.js';
import { classifyAlertmanager, renderAlertmanager } from '../../controller/receivers/alertmanager.js';
import { renderConsole } from '../../controller/receivers/console.js';
import { classifyPagerDuty, renderPagerDuty } from '../../controller/receivers/pagerduty.js';
import { ReceiverError } from '../../controller/receivers/shared.js';
import { classifySlack, renderSlack } from '../../controller/receivers/slack.js';
import type { ClassifyFn, OutgoingRequest, Verdict } from '../../controller/receivers/types.js';
import { classifyWebhook, renderWebhook, webhookKey } from '../../controller/receivers/webhook.js';
import {
  fakeAlertmanager,
  fakePagerDuty,
  fakeSlack,
  fakeWebhook,
  type FakeAlertmanager,
  type FakePagerDuty,
  type FakeWebhook,
  type Fake,
  type SlackMessage,
} from '../helpers/fake-receivers.js';

const SHA = 'a'.repeat(64);
const ROUTING_KEY = 'R0123456789abcdef0123456789abcde'; // 32 characters, like a real integration key
const SECRET = `whsec_${Buffer.from('bulkhead-test-signing-secret-32b').toString('base64')}`;
const expectedDedup = (findingKey: string) => `bulkhead:v1:${createHash('sha256').update(findingKey).digest('hex')}`;

/** A plan whose one route sends every finding to one receiver of each type; `extra` targets are tcp services in prod. */
function makePlan(extra = 0): Plan {
  const doc = {
    version: 1,
    environments: { prod: {}, staging: {} },
    targets: [
      { name: 'prod-db', env: 'prod', probe: 'postgres', host: '198.18.1.1' },
      ...Array.from({ length: extra }, (_, i) => ({ name: `svc-${i}`, env: 'prod', probe: 'tcp', host: '198.18.2.1', port: 1000 + i })),
    ],
    schedule: { interval: '60s', timeout: '3s' },
    alerting: {
      receivers: [
        { name: 'pager', type: 'pagerduty', routing_key: { env: 'BULKHEAD_PD_KEY' } },
        { name: 'chat', type: 'slack', url: { env: 'BULKHEAD_SLACK_URL' } },
        { name: 'hook', type: 'webhook', url: 'http://127.0.0.1:9/hook', secret: { env: 'BULKHEAD_HOOK_SECRET' } },
        { name: 'am', type: 'alertmanager', url: 'http://127.0.0.1:9093' },
        { name: 'console', type: 'console' },
      ],
      routes: [{ match: {}, receivers: ['pager', 'chat', 'hook', 'am', 'console'] }],
    },
  };
  return parsePlanText(JSON.stringify(doc), 'plan.json').plan;
}

function observation(target: string, port: number, open: boolean, at: string): Observation {
  return {
    target, env: 'prod', from: 'staging', probe: target === 'prod-db' ? 'postgres' : 'tcp', address: target === 'prod-db' ? '198.18.1.1' : '198.18.2.1', port,
    outcome: open ? 'open' : 'filtered', layer: open ? 'app' : 'tcp', evidence: open ? { detail: 'answered' } : {}, timings: { totalMs: 1 }, attempts: 1, at,
  };
}

/** Drives the real lifecycle: each call is one result batch from staging's agent, and returns what it owed. */
class Controller {
  readonly state: ControllerState = emptyState();
  private seq = 0;
  constructor(readonly plan: Plan) {}
  results(at: string, items: [target: string, port: number, open: boolean][]): Notification[] {
    this.seq++;
    const batch: ResultBatch = {
      v: 1, type: 'results', env: 'staging', agent: 'stg-1', id: `b${this.seq}`,
      cycle: { id: `c${this.seq}`, startedAt: at, finishedAt: at, chunk: 0, chunks: 1 },
      planSha256: SHA, controls: { total: 2, failed: [] },
      observations: items.map(([target, port, open]) => observation(target, port, open, at)),
    };
    return applyResults(this.state, batch, this.seq, { plan: this.plan, now: new Date(at) }).effects.notifications;
  }
}

const DB_FINDING = `violation:${pathKey({ from: 'staging', target: 'prod-db', address: '198.18.1.1', port: 5432 })}`;
const forReceiver = (notes: Notification[], receiver: string) => notes.filter((n) => n.receiver === receiver);

/** One incident on prod-db: opened at 12:00, blocked three times, resolved at 12:03. */
function incident(): { triggers: Notification[]; resolves: Notification[] } {
  const c = new Controller(makePlan());
  const triggers = c.results('2030-05-01T12:00:00.000Z', [['prod-db', 5432, true]]);
  c.results('2030-05-01T12:01:00.000Z', [['prod-db', 5432, false]]);
  c.results('2030-05-01T12:02:00.000Z', [['prod-db', 5432, false]]);
  const resolves = c.results('2030-05-01T12:03:00.000Z', [['prod-db', 5432, false]]);
  return { triggers, resolves };
}

/** 200 paths opening in one batch: one trigger per path per receiver. */
function storm(): Notification[] {
  const c = new Controller(makePlan(200));
  return c.results('2030-05-01T12:00:00.000Z', Array.from({ length: 200 }, (_, i) => [`svc-${i}`, 1000 + i, true] as [string, number, boolean]));
}

/** A copy of `n` whose finding says something else. */
function reshaped(n: Notification, finding: Partial<Notification['finding']>, rest: Partial<Notification> = {}): Notification {
  return { ...structuredClone(n), ...rest, finding: { ...structuredClone(n.finding), ...finding } };
}

/** Sends a rendered request with undici and classifies the answer. */
async function send(req: OutgoingRequest, classify: ClassifyFn): Promise<{ status: number; body: string; verdict: Verdict }> {
  const res = await request(req.url, { method: req.method, headers: req.headers, body: req.body });
  const body = await res.body.text();
  return { status: res.statusCode, body, verdict: classify(res.statusCode, res.headers, body) };
}

const now = () => new Date();

describe('notifications from the real lifecycle', () => {
  it('owe a trigger and a resolve to every receiver, with the deterministic dedup key', () => {
    const { triggers, resolves } = incident();
    expect(triggers.map((n) => n.receiver).sort()).toEqual(['am', 'chat', 'console', 'hook', 'pager']);
    expect(resolves.map((n) => n.action)).toEqual(Array(5).fill('resolve'));
    for (const n of [...triggers, ...resolves]) expect(n.dedupKey).toBe(expectedDedup(DB_FINDING));
  });
});

describe('PagerDuty Events v2', () => {
  let pd: FakePagerDuty;
  const config = () => ({ routingKey: ROUTING_KEY, url: pd.url });
  beforeAll(async () => void (pd = await fakePagerDuty()));
  afterAll(() => pd.close());

  it('a trigger carries every required field and a dedup key ≤255 equal to the deterministic value; the resolve closes it', async () => {
    const { triggers, resolves } = incident();
    const trigger = forReceiver(triggers, 'pager');
    const sent = await send(renderPagerDuty(trigger, config(), now()), classifyPagerDuty);
    expect(sent.status).toBe(202);
    expect(sent.verdict).toEqual({ kind: 'delivered' });
    const event = pd.accepted.at(-1)!;
    expect(event).toMatchObject({ routing_key: ROUTING_KEY, event_action: 'trigger', dedup_key: expectedDedup(DB_FINDING) });
    expect(event.dedup_key!.length).toBeLessThanOrEqual(255);
    expect(event.payload).toMatchObject({ severity: 'critical', source: 'prod-db', class: 'violation', timestamp: '2030-05-01T12:00:00.000Z' });
    expect(event.payload!.summary).toContain('staging can reach prod-db');
    expect(event.payload!.custom_details).toMatchObject({ finding: DB_FINDING, details: { outcome: 'open', evidence: { detail: 'answered' } } });
    expect(pd.open.has(`${ROUTING_KEY}/${expectedDedup(DB_FINDING)}`)).toBe(true);

    const resolved = await send(renderPagerDuty(forReceiver(resolves, 'pager'), config(), now()), classifyPagerDuty);
    expect(resolved.verdict).toEqual({ kind: 'delivered' });
    expect(pd.accepted.at(-1)).toEqual({ routing_key: ROUTING_KEY, event_action: 'resolve', dedup_key: expectedDedup(DB_FINDING) });
    expect(pd.dropped).toEqual([]);
    expect(pd.open.size).toBe(0);
  });

  it('an update is a trigger with the same dedup key, folded into the open alert', async () => {
    const [trigger] = forReceiver(incident().triggers, 'pager');
    const opened = pd.opened.length;
    await send(renderPagerDuty([trigger!], config(), now()), classifyPagerDuty);
    const update = reshaped(trigger!, { flapping: true }, { action: 'update', id: `${trigger!.id}:flapping` });
    const sent = await send(renderPagerDuty([update], config(), now()), classifyPagerDuty);
    expect(sent.verdict).toEqual({ kind: 'delivered' });
    expect(pd.opened.length).toBe(opened + 1);
    expect(pd.updates.at(-1)).toMatchObject({ event_action: 'trigger', dedup_key: trigger!.dedupKey });
    expect(pd.updates.at(-1)!.payload!.summary).toMatch(/^\[flapping\] /);
  });

  it('truncates a 1,500-character summary to 1024 with an ellipsis', async () => {
    const [trigger] = forReceiver(incident().triggers, 'pager');
    const long = reshaped(trigger!, { summary: 'x'.repeat(1500) });
    const sent = await send(renderPagerDuty([long], config(), now()), classifyPagerDuty);
    expect(sent.verdict).toEqual({ kind: 'delivered' });
    const summary = pd.accepted.at(-1)!.payload!.summary;
    expect(summary).toHaveLength(1024);
    expect(summary.endsWith('…')).toBe(true);
  });

  it('replaces a 600 KB details object with a truncation note so the body stays under 512 KB', async () => {
    const [trigger] = forReceiver(incident().triggers, 'pager');
    const huge = reshaped(trigger!, { details: { evidence: { body: 'y'.repeat(600 * 1024) } } });
    const req = renderPagerDuty([huge], config(), now());
    expect(Buffer.byteLength(req.body)).toBeLessThan(512_000);
    const sent = await send(req, classifyPagerDuty);
    expect(sent.verdict).toEqual({ kind: 'delivered' });
    const details = pd.accepted.at(-1)!.payload!.custom_details!;
    expect(details.truncated).toMatch(/custom_details removed/);
    expect(details.finding).toBe(DB_FINDING);
  });

  it('refuses a group: one event per request', () => {
    const triggers = forReceiver(storm(), 'pager');
    expect(() => renderPagerDuty(triggers.slice(0, 2), config(), now())).toThrow(ReceiverError);
    expect(() => renderPagerDuty([], config(), now())).toThrow(/exactly one event/);
  });

  it('classifies 400 invalid event as permanent, 429 (Retry-After) and 500 as retry', async () => {
    const [trigger] = forReceiver(incident().triggers, 'pager');
    const good = renderPagerDuty([trigger!], config(), now());
    const bad = { ...good, body: JSON.stringify({ ...JSON.parse(good.body), payload: { source: 'x' } }) };
    const invalid = await send(bad, classifyPagerDuty);
    expect(invalid.status).toBe(400);
    expect(invalid.verdict).toMatchObject({ kind: 'permanent', reason: expect.stringContaining('invalid event') });
    expect(pd.rejected.at(-1)!.problems).toContain('payload.summary: required');

    pd.script(
      { status: 429, headers: { 'retry-after': '30' }, body: '{"status":"throttle event"}' },
      { status: 500, body: 'oops' },
    );
    expect((await send(good, classifyPagerDuty)).verdict).toMatchObject({ kind: 'retry', afterMs: 30_000 });
    const five = (await send(good, classifyPagerDuty)).verdict;
    expect(five.kind).toBe('retry');
    expect(five).not.toHaveProperty('afterMs');
    // After the outage the same request goes through.
    expect((await send(good, classifyPagerDuty)).verdict).toEqual({ kind: 'delivered' });
  });

  it('the fake answers 202 to a resolve for an unknown key and records it as dropped', async () => {
    const [resolve] = forReceiver(incident().resolves, 'pager');
    const stray = reshaped(resolve!, {}, { dedupKey: 'bulkhead:v1:never-triggered' });
    expect((await send(renderPagerDuty([stray], config(), now()), classifyPagerDuty)).verdict).toEqual({ kind: 'delivered' });
    expect(pd.dropped.at(-1)).toMatchObject({ event_action: 'resolve', dedup_key: 'bulkhead:v1:never-triggered' });
  });
});

describe('Slack incoming webhook', () => {
  let slack: Fake<SlackMessage>;
  const config = () => ({ url: slack.url });
  beforeAll(async () => void (slack = await fakeSlack()));
  afterAll(() => slack.close());

  type Blocks = { type: string; text?: { text: string }; fields?: unknown[]; elements?: unknown[] }[];
  const blocksOf = (m: SlackMessage) => m.blocks as unknown as Blocks;

  it('renders 200 findings in one group within the limits: ≤50 blocks, header ≤150, sections ≤3000, first 20 and "+180 more", text fallback', async () => {
    const group = forReceiver(storm(), 'chat');
    expect(group).toHaveLength(200);
    const sent = await send(renderSlack(group, config(), now()), classifySlack);
    expect(slack.rejected).toEqual([]);
    expect(sent).toMatchObject({ status: 200, body: 'ok', verdict: { kind: 'delivered' } });
    const message = slack.accepted.at(-1)!;
    const blocks = blocksOf(message);
    expect(blocks.length).toBeLessThanOrEqual(50);
    expect(blocks[0]!.type).toBe('header');
    expect(blocks[0]!.text!.text.length).toBeLessThanOrEqual(150);
    expect(blocks[0]!.text!.text).toBe('FIRING 200: staging → prod (200 paths)');
    const sections = blocks.filter((b) => b.type === 'section');
    expect(sections).toHaveLength(21);
    for (const s of sections) expect(s.text!.text.length).toBeLessThanOrEqual(3000);
    expect(sections.at(-1)!.text!.text).toBe('+180 more');
    expect(blocks.at(-1)!.type).toBe('context');
    expect(message.text).toMatch(/^FIRING 200: staging → prod/);
  });

  it('a single trigger shows FIRING, the path and its fields; its resolve shows RESOLVED', async () => {
    const { triggers, resolves } = incident();
    await send(renderSlack(forReceiver(triggers, 'chat'), config(), now()), classifySlack);
    const fired = blocksOf(slack.accepted.at(-1)!);
    expect(fired[0]!.text!.text).toBe('FIRING: staging → prod-db (prod)');
    expect(fired[1]!.fields!.length).toBeGreaterThan(0);
    expect(fired[1]!.fields!.length).toBeLessThanOrEqual(10);
    const sent = await send(renderSlack(forReceiver(resolves, 'chat'), config(), now()), classifySlack);
    expect(sent.verdict).toEqual({ kind: 'delivered' });
    expect(blocksOf(slack.accepted.at(-1)!)[0]!.text!.text).toBe('RESOLVED: staging → prod-db (prod)');
    expect(slack.accepted.at(-1)!.text).toMatch(/^RESOLVED: /);
  });

  it('truncates a long summary and a long target name to the block limits, escaping & < >', async () => {
    const [trigger] = forReceiver(incident().triggers, 'chat');
    const long = reshaped(trigger!, { summary: '<&>'.repeat(2000), labels: { ...trigger!.finding.labels, target: 't'.repeat(300) } });
    const sent = await send(renderSlack([long], config(), now()), classifySlack);
    expect(slack.rejected.map((r) => r.problems)).toEqual([]);
    expect(sent.verdict).toEqual({ kind: 'delivered' });
    const blocks = blocksOf(slack.accepted.at(-1)!);
    expect(blocks[0]!.text!.text).toHaveLength(150);
    expect(blocks[1]!.text!.text.length).toBeLessThanOrEqual(3000);
    expect(blocks[1]!.text!.text).not.toMatch(/&[a-z]*…$/);
    expect(blocks[1]!.text!.text).toContain('&lt;&amp;&gt;');
  });

  it.each([
    [200, 'ok', 'delivered'],
    [200, 'ok\n', 'permanent'],
    [200, '', 'permanent'],
    [200, '{"ok":true}', 'permanent'],
    [201, 'ok', 'permanent'],
    [204, '', 'permanent'],
  ])('only 200 "ok" is delivered: %i %j → %s', async (status, body, kind) => {
    slack.script({ status, body });
    const [trigger] = forReceiver(incident().triggers, 'chat');
    expect((await send(renderSlack([trigger!], config(), now()), classifySlack)).verdict.kind).toBe(kind);
  });

  it('429 with Retry-After: 2 is a retry after 2000 ms; 500 rollup_error is a retry', async () => {
    const req = renderSlack(forReceiver(incident().triggers, 'chat'), config(), now());
    slack.script({ status: 429, headers: { 'retry-after': '2' }, body: '{"retry_after":1,"ok":false,"error":"rate_limited"}' }, { status: 500, body: 'rollup_error' });
    expect((await send(req, classifySlack)).verdict).toMatchObject({ kind: 'retry', afterMs: 2000 });
    expect((await send(req, classifySlack)).verdict).toMatchObject({ kind: 'retry', reason: 'HTTP 500: rollup_error' });
  });

  it('the fake itself answers 400 invalid_payload and no_text, which are permanent', async () => {
    const req = renderSlack(forReceiver(incident().triggers, 'chat'), config(), now());
    const notJson = await send({ ...req, body: '{"text":' }, classifySlack);
    expect(notJson).toMatchObject({ status: 400, body: 'invalid_payload', verdict: { kind: 'permanent', reason: 'HTTP 400: invalid_payload' } });
    const noText = await send({ ...req, body: JSON.stringify({ blocks: JSON.parse(req.body).blocks }) }, classifySlack);
    expect(noText).toMatchObject({ status: 400, body: 'no_text', verdict: { kind: 'permanent' } });
  });

  it.each([
    [410, 'channel_is_archived'],
    [404, 'no_service'],
    [404, 'channel_not_found'],
    [403, 'invalid_token'],
    [403, 'action_prohibited'],
    [400, 'invalid_payload'],
  ])('%i %s is permanent', async (status, error) => {
    slack.script({ status, body: error });
    const req = renderSlack(forReceiver(incident().triggers, 'chat'), config(), now());
    expect((await send(req, classifySlack)).verdict).toEqual({ kind: 'permanent', reason: `HTTP ${status}: ${error}` });
  });
});

describe('Standard Webhooks', () => {
  let hook: FakeWebhook;
  const config = () => ({ url: hook.url, secret: SECRET });
  beforeAll(async () => void (hook = await fakeWebhook(SECRET)));
  afterAll(() => hook.close());

  it('signs so the receiver verifies the HMAC; the body is {type, timestamp, data}', async () => {
    const { triggers } = incident();
    const sent = await send(renderWebhook(forReceiver(triggers, 'hook'), config(), now()), classifyWebhook);
    expect(hook.rejected).toEqual([]);
    expect(sent).toMatchObject({ status: 204, verdict: { kind: 'delivered' } });
    const delivery = hook.accepted.at(-1)!;
    expect(delivery.body.type).toBe('bulkhead.notification');
    expect(delivery.body.data).toMatchObject({ notifications: [{ action: 'trigger', dedup_key: expectedDedup(DB_FINDING), finding: { key: DB_FINDING } }] });
  });

  it('keeps webhook-id when the same notifications are rendered again later (a retry), with a fresh signature', async () => {
    const group = forReceiver(storm(), 'hook').slice(0, 3);
    const first = renderWebhook(group, config(), new Date(Date.now() - 30_000));
    const again = renderWebhook([...group].reverse(), config(), new Date());
    expect(again.headers['webhook-id']).toBe(first.headers['webhook-id']);
    expect(again.headers['webhook-timestamp']).not.toBe(first.headers['webhook-timestamp']);
    expect(again.headers['webhook-signature']).not.toBe(first.headers['webhook-signature']);
    expect((await send(first, classifyWebhook)).verdict).toEqual({ kind: 'delivered' });
    expect((await send(again, classifyWebhook)).verdict).toEqual({ kind: 'delivered' });
    expect(hook.duplicates.at(-1)!.id).toBe(first.headers['webhook-id']);
    // A different group gets a different id, and so do the same notification ids owed at another time (a wiped state).
    expect(renderWebhook(group.slice(1), config(), new Date()).headers['webhook-id']).not.toBe(first.headers['webhook-id']);
    const later = group.map((n) => ({ ...n, createdAt: new Date(Date.parse(n.createdAt) + 86_400_000).toISOString() }));
    expect(renderWebhook(later, config(), new Date()).headers['webhook-id']).not.toBe(first.headers['webhook-id']);
  });

  it('a wrong secret or a stale timestamp is refused (permanent); 429 and 503 are retried', async () => {
    const group = forReceiver(incident().triggers, 'hook');
    const wrong = await send(renderWebhook(group, { url: hook.url, secret: 'another secret' }, now()), classifyWebhook);
    expect(wrong).toMatchObject({ status: 401, verdict: { kind: 'permanent', reason: 'HTTP 401: invalid signature' } });
    const stale = await send(renderWebhook(group, config(), new Date(Date.now() - 10 * 60_000)), classifyWebhook);
    expect(stale).toMatchObject({ status: 401, verdict: { kind: 'permanent' } });
    hook.script({ status: 429, headers: { 'Retry-After': '5' }, body: '' }, { status: 503, body: 'busy' });
    expect((await send(renderWebhook(group, config(), now()), classifyWebhook)).verdict).toEqual({ kind: 'retry', afterMs: 5000, reason: 'HTTP 429' });
    expect((await send(renderWebhook(group, config(), now()), classifyWebhook)).verdict).toMatchObject({ kind: 'retry' });
  });

  it('takes the secret as whsec_<base64> (decoded) or as raw bytes', async () => {
    expect(webhookKey(SECRET).toString()).toBe('bulkhead-test-signing-secret-32b');
    expect(webhookKey('plain-secret')).toEqual(Buffer.from('plain-secret'));
    expect(() => webhookKey('whsec_not base64!')).toThrow(ReceiverError);
    const raw = await fakeWebhook('raw-bytes-secret');
    try {
      const req = renderWebhook(forReceiver(incident().triggers, 'hook'), { url: raw.url, secret: Buffer.from('raw-bytes-secret') }, now());
      expect((await send(req, classifyWebhook)).verdict).toEqual({ kind: 'delivered' });
    } finally {
      await raw.close();
    }
  });
});

describe('Alertmanager API v2', () => {
  let am: FakeAlertmanager;
  const config = () => ({ url: `${am.url}/`, generatorUrl: 'http://bulkhead.example/v1/findings' });
  beforeAll(async () => void (am = await fakeAlertmanager()));
  afterAll(() => am.close());

  it('posts firing alerts with non-empty labels encoding the path, startsAt ≤ endsAt', async () => {
    const { triggers } = incident();
    const sent = await send(renderAlertmanager(forReceiver(triggers, 'am'), config(), now()), classifyAlertmanager);
    expect(am.rejected).toEqual([]);
    expect(sent).toMatchObject({ status: 200, verdict: { kind: 'delivered' } });
    const [alert] = am.accepted.at(-1)!;
    expect(alert!.labels).toEqual({
      alertname: 'bulkhead_violation', from_env: 'staging', to_env: 'prod', target: 'prod-db', severity: 'critical', dedup_key: expectedDedup(DB_FINDING),
    });
    expect(alert!.annotations!.summary).toContain('staging can reach prod-db');
    expect(Date.parse(alert!.startsAt!)).toBeLessThanOrEqual(Date.parse(alert!.endsAt!));
    expect(Date.parse(alert!.endsAt!)).toBeGreaterThan(Date.now());
    expect(am.resolved(alert!.labels)).toBe(false);
  });

  it('a resolve has the same labels and endsAt ≤ now', async () => {
    const { triggers, resolves } = incident();
    await send(renderAlertmanager(forReceiver(triggers, 'am'), config(), now()), classifyAlertmanager);
    const at = now();
    const sent = await send(renderAlertmanager(forReceiver(resolves, 'am'), config(), at), classifyAlertmanager);
    expect(sent.verdict).toEqual({ kind: 'delivered' });
    const [alert] = am.accepted.at(-1)!;
    expect(Date.parse(alert!.endsAt!)).toBeLessThanOrEqual(Date.now());
    expect(alert!.endsAt).toBe(at.toISOString());
    expect(am.resolved(alert!.labels)).toBe(true);
  });

  it('posts a group as one array; 400 is permanent, 500 retried', async () => {
    const group = forReceiver(storm(), 'am');
    const req = renderAlertmanager(group, config(), now());
    expect((await send(req, classifyAlertmanager)).verdict).toEqual({ kind: 'delivered' });
    expect(am.accepted.at(-1)).toHaveLength(200);
    const invalid = await send({ ...req, body: JSON.stringify([{ labels: {} }]) }, classifyAlertmanager);
    expect(invalid).toMatchObject({ status: 400, verdict: { kind: 'permanent' } });
    am.script({ status: 500, body: 'internal' });
    expect((await send(req, classifyAlertmanager)).verdict).toEqual({ kind: 'retry', reason: 'HTTP 500: internal' });
  });
});

describe('console', () => {
  it('renders one line with status, path, summary and dedup key', () => {
    const { triggers, resolves } = incident();
    const [trigger] = forReceiver(triggers, 'console');
    const line = renderConsole(reshaped(trigger!, { summary: 'two\nlines' }));
    expect(line).toBe(`2030-05-01T12:00:00.000Z FIRING critical violation staging → prod-db (prod): two lines [${expectedDedup(DB_FINDING)} #1]`);
    expect(renderConsole(forReceiver(resolves, 'console')[0]!)).toMatch(/^2030-05-01T12:03:00.000Z RESOLVED critical violation /);
  });
});
