// Alert delivery end to end below the process: lifecycle → outbox → dispatcher → real HTTP to fake receivers that
// check every request against the vendor's format. Time is a fake clock, so group waits, Retry-After, receiver
// outages and silences are tested minutes deep in well under a second each.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Observation } from '../../core/observation.js';
import { parsePlanText, type LoadedPlan } from '../../core/plan-load.js';
import type { ResultBatch } from '../../core/wire.js';
import { Dispatcher } from '../../controller/delivery/dispatcher.js';
import { httpPost, type Post } from '../../controller/delivery/lane.js';
import type { DeliveryCommit, DeliveryState, Settled, Silence, StormRecord } from '../../controller/delivery/model.js';
import { parseSilence } from '../../controller/delivery/silences.js';
import { applyReceiverFailed, applyReceiverWorks, applyResults } from '../../controller/lifecycle.js';
import { emptyState, type ControllerState, type Notification } from '../../controller/model.js';
import { resolveReceivers } from '../../controller/receivers/config.js';
import { fakeClock, type FakeClock } from '../helpers/fake-clock.js';
import { fakeAlertmanager, fakePagerDuty, fakeSlack, fakeWebhook, type FakeAlertmanager, type FakePagerDuty, type FakeWebhook, type Fake, type SlackMessage } from '../helpers/fake-receivers.js';

const PD_KEY = 'R0UT1NGKEY0123456789abcdefABCDEF';
const HOOK_SECRET = 'whsec_c2VjcmV0LWZvci10aGUtZGVsaXZlcnktdGVzdA==';
const MIN = 60_000;

/** The store seam: what a commitDelivery would persist, kept in memory so a second dispatcher can start from it. */
class MemoryStore {
  readonly outbox = new Map<string, Notification>();
  readonly settled = new Map<string, Settled>();
  readonly storms = new Map<string, StormRecord>();
  readonly silences = new Map<string, Silence>();
  commits = 0;
  owe(notifications: readonly Notification[]): void {
    for (const n of notifications) if (!this.settled.has(n.id)) this.outbox.set(n.id, structuredClone(n));
  }
  async commitDelivery(c: DeliveryCommit): Promise<void> {
    this.commits++;
    for (const s of c.settled) {
      if (this.outbox.delete(s.id)) this.settled.set(s.id, s);
    }
    this.owe(c.owed);
    for (const s of c.storms) this.storms.set(s.key, structuredClone(s));
    for (const s of c.silences) this.silences.set(s.id, structuredClone(s));
  }
  delivery(): DeliveryState {
    return { storms: [...this.storms.values()], silences: [...this.silences.values()] };
  }
}

interface Fakes {
  pd: FakePagerDuty;
  slack: Fake<SlackMessage>;
  hook: FakeWebhook;
  am: FakeAlertmanager;
}

function planText(fakes: Fakes, opts: { receivers: (keyof Fakes)[]; addresses?: number; alerting?: Record<string, unknown> }): string {
  const all = {
    pd: { name: 'pd', type: 'pagerduty', routing_key: { env: 'PD_KEY' }, url: fakes.pd.url },
    slack: { name: 'slack', type: 'slack', url: { env: 'SLACK_URL' } },
    hook: { name: 'hook', type: 'webhook', url: fakes.hook.url, secret: { env: 'HOOK_SECRET' } },
    am: { name: 'am', type: 'alertmanager', url: fakes.am.url },
  };
  return JSON.stringify({
    version: 1,
    environments: { prod: {}, staging: {}, dev: {} },
    targets: [
      { name: 'prod-db', env: 'prod', probe: 'tcp', addresses: ['127.0.10.1', '127.0.10.2', '127.0.10.3'], port: 5432 },
      { name: 'prod-fleet', env: 'prod', probe: 'tcp', addresses: Array.from({ length: opts.addresses ?? 1 }, (_, i) => `127.1.${Math.floor(i / 250)}.${1 + (i % 250)}`), port: 22 },
    ],
    schedule: { interval: '1m', timeout: '3s' },
    alerting: {
      open_threshold: 1,
      resolve_after: 1,
      receivers: opts.receivers.map((r) => all[r]),
      routes: [{ match: {}, receivers: opts.receivers }],
      ...opts.alerting,
    },
  });
}

class Harness {
  readonly state: ControllerState = emptyState();
  readonly store = new MemoryStore();
  readonly logs: { level: string; msg: string; fields: Record<string, unknown> }[] = [];
  readonly posts: { at: number; url: string }[] = [];
  readonly printed: string[] = [];
  readonly clock: FakeClock = fakeClock();
  dispatcher: Dispatcher;
  private seq = 0;

  constructor(readonly loaded: LoadedPlan) {
    this.dispatcher = this.start();
  }

  start(): Dispatcher {
    const receivers = resolveReceivers(this.loaded, { PD_KEY, SLACK_URL: slackUrl, HOOK_SECRET });
    const post: Post = (req, timeoutMs) => {
      this.posts.push({ at: this.clock.now(), url: req.url });
      return httpPost(req, timeoutMs);
    };
    const ctx = () => ({ plan: this.loaded.plan, now: new Date(this.clock.now()) });
    this.dispatcher = new Dispatcher(
      {
        store: this.store,
        state: this.state,
        alerting: () => this.loaded.plan.alerting,
        receivers: () => receivers,
        clock: this.clock,
        random: () => 0.5,
        log: (level, msg, fields = {}) => void this.logs.push({ level, msg, fields }),
        post,
        print: (line) => void this.printed.push(line),
        // What ingest does with these: apply, commit, then hand the committed notifications over.
        receiverFailed: (receiver, reason) => this.commit(applyReceiverFailed(this.state, receiver, reason, ctx()).notifications),
        receiverWorks: (receiver) => {
          if (this.state.findings.get(`receiver-failed:${receiver}`)?.status === 'firing') this.commit(applyReceiverWorks(this.state, receiver, ctx()).notifications);
        },
      },
      this.store.delivery(),
    );
    // The controller loads the store's outbox into its state before starting the dispatcher.
    for (const n of this.store.outbox.values()) this.state.outbox.set(n.id, n);
    this.dispatcher.resume();
    return this.dispatcher;
  }

  private commit(notifications: Notification[]): void {
    this.store.owe(notifications);
    this.dispatcher.enqueue(notifications);
  }

  /** One agent's results, judged by the real lifecycle and committed; the observation times are the fake clock's. */
  observe(from: string, paths: { target: string; address: string; port: number }[], outcome: 'open' | 'filtered'): void {
    const at = new Date(this.clock.now()).toISOString();
    for (let i = 0; i < paths.length; i += 400) {
      const observations: Observation[] = paths.slice(i, i + 400).map((p) => ({
        target: p.target,
        env: 'prod',
        from,
        probe: 'tcp',
        address: p.address,
        port: p.port,
        outcome,
        layer: 'tcp',
        evidence: outcome === 'open' ? { remoteAddress: p.address, remotePort: p.port, detail: 'connected' } : { remoteAddress: p.address, remotePort: p.port, detail: 'no answer' },
        timings: { totalMs: 1 },
        attempts: 1,
        at,
      }));
      const seq = ++this.seq;
      const batch: ResultBatch = {
        v: 1,
        type: 'results',
        env: from,
        agent: `${from}-1`,
        id: `${from}-${seq}`,
        cycle: { id: `c${seq}`, startedAt: at, finishedAt: at, chunk: 0, chunks: 1 },
        planSha256: this.loaded.sha256,
        controls: { total: 0, failed: [] },
        observations,
      };
      const { effects } = applyResults(this.state, batch, seq, { plan: this.loaded.plan, now: new Date(this.clock.now()) });
      this.commit(effects.notifications);
    }
  }
}

const db = (i: number) => ({ target: 'prod-db', address: `127.0.10.${i}`, port: 5432 });
let slackUrl = '';

/** Polls (real time) until `check` holds; every wait is bounded. */
async function eventually(check: () => boolean, what: string, ms = 5_000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
/** Lets real I/O run for a moment, to show that nothing more arrives. */
const quiet = (ms = 150) => new Promise((r) => setTimeout(r, ms));

describe('alert delivery', () => {
  let fakes: Fakes;
  let h: Harness;
  const make = (opts: Parameters<typeof planText>[1]) => (h = new Harness(parsePlanText(planText(fakes, opts), 'delivery.json')));

  beforeEach(async () => {
    const clockNow = () => h?.clock.now() ?? Date.now();
    fakes = { pd: await fakePagerDuty(), slack: await fakeSlack(), hook: await fakeWebhook(HOOK_SECRET, clockNow), am: await fakeAlertmanager(clockNow) };
    slackUrl = fakes.slack.url;
  });
  afterEach(async () => {
    await h?.dispatcher.stop();
    await Promise.all(Object.values(fakes).map((f) => f.close()));
    for (const f of Object.values(fakes)) expect(f.rejected, 'every request matched the vendor format').toEqual([]);
  });

  it('first open: nothing before group_wait, then exactly one trigger per receiver, all paths of the pair in one group', async () => {
    make({ receivers: ['pd', 'slack', 'hook', 'am'] });
    h.observe('staging', [db(1), db(2)], 'open');
    await h.clock.advance(29_999);
    await quiet();
    expect(h.posts).toHaveLength(0);
    await h.clock.advance(1);
    await eventually(() => fakes.pd.accepted.length === 2 && fakes.slack.accepted.length === 1 && fakes.hook.accepted.length === 1 && fakes.am.accepted.length === 1, 'one delivery each');
    await quiet();
    // PagerDuty takes one event per request: one trigger per path; the others one grouped request for the pair.
    expect(fakes.pd.opened.map((e) => e.event_action)).toEqual(['trigger', 'trigger']);
    expect(new Set(fakes.pd.opened.map((e) => e.dedup_key)).size).toBe(2);
    expect(fakes.slack.accepted[0]!.text).toMatch(/^FIRING 2: staging → prod/);
    expect((fakes.hook.accepted[0]!.body.data.notifications as unknown[]).length).toBe(2);
    expect(fakes.am.accepted[0]!).toHaveLength(2);
    expect(h.posts).toHaveLength(5);
    expect(h.state.outbox.size).toBe(0);
    expect([...h.store.settled.values()].every((s) => s.outcome === 'delivered')).toBe(true);
  });

  it('resolve: PagerDuty gets the same routing key and dedup key, Alertmanager an endsAt at or before now', async () => {
    make({ receivers: ['pd', 'am'], alerting: { group_wait: '1s', group_interval: '10s' } });
    h.observe('staging', [db(1)], 'open');
    await h.clock.advance(1_000);
    await eventually(() => fakes.pd.opened.length === 1 && fakes.am.accepted.length === 1, 'trigger');
    h.observe('staging', [db(1)], 'filtered');
    await h.clock.advance(9_999);
    await quiet();
    expect(fakes.pd.received).toHaveLength(1);
    await h.clock.advance(1);
    await eventually(() => fakes.pd.accepted.length === 2 && fakes.am.accepted.length === 2, 'resolve');
    const [trigger, resolve] = fakes.pd.accepted;
    expect(resolve).toMatchObject({ event_action: 'resolve', routing_key: trigger!.routing_key, dedup_key: trigger!.dedup_key });
    expect(fakes.pd.open.size).toBe(0);
    expect(fakes.pd.dropped).toEqual([]);
    const alert = fakes.am.accepted[1]![0]!;
    expect(Date.parse(alert.endsAt!)).toBeLessThanOrEqual(h.clock.now());
    expect(fakes.am.resolved(alert.labels)).toBe(true);
  });

  it('429 with Retry-After: 2 → the next attempt at least 2 s later, and nothing else goes to that receiver meanwhile', async () => {
    make({ receivers: ['slack'], alerting: { group_wait: '1s' } });
    fakes.slack.script({ status: 429, headers: { 'retry-after': '2', 'content-type': 'application/json' }, body: '{"retry_after":2,"ok":false,"error":"rate_limited"}' });
    h.observe('staging', [db(1)], 'open');
    await h.clock.advance(1_000);
    await eventually(() => fakes.slack.received.length === 1, 'first attempt');
    h.observe('dev', [db(2)], 'open');
    await h.clock.advance(1_999);
    await quiet();
    expect(fakes.slack.received).toHaveLength(1);
    await h.clock.advance(1);
    await eventually(() => fakes.slack.accepted.length === 1, 'the retry');
    expect(h.posts[1]!.at - h.posts[0]!.at).toBeGreaterThanOrEqual(2_000);
    expect(fakes.slack.accepted[0]!.text).toMatch(/staging → prod-db/);
    // The other pair's message waited behind it, then for the rate limit (1 request/s).
    await h.clock.advance(1_000);
    await eventually(() => fakes.slack.accepted.length === 2, 'the other pair');
    expect(fakes.slack.accepted[1]!.text).toMatch(/dev → prod-db/);
    expect(h.posts[2]!.at - h.posts[1]!.at).toBeGreaterThanOrEqual(1_000);
  });

  it.each([
    ['PagerDuty 400 invalid event', 'pd', 'slack', { status: 400, headers: { 'content-type': 'application/json' }, body: '{"status":"invalid event","message":"Event object is invalid","errors":["x"]}' }],
    ['Slack 400 invalid_payload', 'slack', 'pd', { status: 400, body: 'invalid_payload' }],
    ['Slack 410 channel_is_archived', 'slack', 'pd', { status: 410, body: 'channel_is_archived' }],
  ] as const)('%s: not retried, dead-lettered, and a receiver-failed finding goes to the other receiver', async (_name, failing, other, answer) => {
    make({ receivers: ['pd', 'slack'], alerting: { group_wait: '1s' } });
    fakes[failing].script(answer);
    h.observe('staging', [db(1)], 'open');
    await h.clock.advance(1_000);
    await eventually(() => [...h.store.settled.values()].some((s) => s.outcome === 'dead'), 'dead letter');
    const dead = [...h.store.settled.values()].filter((s) => s.outcome === 'dead');
    expect(dead).toHaveLength(1);
    expect(dead[0]!.id).toContain(`:trigger:${failing}`);
    expect(dead[0]!.reason).toContain(String(answer.status));
    expect(h.state.findings.get(`receiver-failed:${failing}`)).toMatchObject({ status: 'firing', receivers: [other] });
    await h.clock.advance(1_000);
    await eventually(() => JSON.stringify(fakes[other].accepted).includes(`receiver ${failing} refused`), 'internal finding at the other receiver');
    await h.clock.advance(30 * MIN);
    await quiet();
    expect(fakes[failing].received).toHaveLength(1);
    expect((h.dispatcher.snapshot().deadLetters as { receiver: string }[])[0]!.receiver).toBe(failing);
  });

  it('a receiver down for two minutes gets the trigger afterwards, once, with bounded attempts', async () => {
    make({ receivers: ['pd'], alerting: { group_wait: '1s' } });
    fakes.pd.down(true);
    h.observe('staging', [db(1)], 'open');
    await h.clock.advance(1_000);
    for (let t = 0; t < 120; t += 5) await h.clock.advance(5_000);
    expect(fakes.pd.accepted).toHaveLength(0);
    const attemptsWhileDown = h.posts.length;
    expect(attemptsWhileDown).toBeGreaterThan(3);
    expect(attemptsWhileDown).toBeLessThan(15);
    fakes.pd.down(false);
    for (let t = 0; t < 60 && fakes.pd.accepted.length === 0; t += 5) {
      await h.clock.advance(5_000);
      await quiet(30);
    }
    await eventually(() => fakes.pd.accepted.length === 1, 'delivery after the outage');
    expect(fakes.pd.opened).toHaveLength(1);
    expect(h.state.outbox.size).toBe(0);
  });

  it('10,000 paths opening at once: one incident per environment pair, a bounded number of requests, ≤ 1 request/s to Slack', async () => {
    make({ receivers: ['pd', 'slack'], addresses: 5_000, alerting: { group_wait: '30s', group_interval: '1m' } });
    const fleet = Array.from({ length: 5_000 }, (_, i) => ({ target: 'prod-fleet', address: `127.1.${Math.floor(i / 250)}.${1 + (i % 250)}`, port: 22 }));
    h.observe('staging', fleet, 'open');
    await h.clock.advance(3_000);
    h.observe('dev', fleet, 'open');
    expect(h.state.outbox.size).toBe(20_000);
    await h.clock.advance(30_000);
    await eventually(() => fakes.pd.accepted.length === 2 && fakes.slack.accepted.length === 2, 'one storm incident per pair');
    expect(fakes.pd.opened.map((e) => e.payload!.summary)).toEqual([expect.stringMatching(/^5000 paths from staging to prod are open/), expect.stringMatching(/^5000 paths from dev to prod are open/)]);
    expect(fakes.slack.accepted.map((m) => m.text)).toEqual([expect.stringMatching(/5000 paths from staging to prod/), expect.stringMatching(/5000 paths from dev to prod/)]);
    const details = fakes.pd.opened[0]!.payload!.custom_details!.details as { sample: unknown[]; more: number };
    expect(details.sample).toHaveLength(20);
    expect(details.more).toBe(4_980);
    expect(h.state.outbox.size).toBe(0);

    h.observe('staging', fleet, 'filtered');
    h.observe('dev', fleet, 'filtered');
    await h.clock.advance(60_000);
    await eventually(() => fakes.pd.accepted.length === 4 && fakes.slack.accepted.length === 4, 'storm resolves');
    expect(fakes.pd.open.size).toBe(0);
    expect(fakes.pd.dropped).toEqual([]);
    await h.clock.advance(10 * MIN);
    await quiet();
    const slackTimes = h.posts.filter((p) => p.url === slackUrl).map((p) => p.at);
    expect(slackTimes).toHaveLength(4);
    for (let i = 1; i < slackTimes.length; i++) expect(slackTimes[i]! - slackTimes[i - 1]!).toBeGreaterThanOrEqual(1_000);
    expect(h.posts).toHaveLength(8);
  });

  it('a silence holds sending while tracking continues; an incident still open when it ends is sent', async () => {
    make({ receivers: ['pd'], alerting: { group_wait: '1s' } });
    const silence = parseSilence({ matchers: { from_env: 'staging' }, duration: '1h', created_by: 'alice', comment: 'CHG-42 firewall migration' }, h.clock.now());
    if ('problems' in silence) throw new Error(silence.problems.join('; '));
    await h.dispatcher.addSilence(silence);
    h.observe('staging', [db(1), db(2)], 'open');
    h.observe('dev', [db(3)], 'open');
    await h.clock.advance(1_000);
    await eventually(() => fakes.pd.accepted.length === 1, 'the unsilenced dev path');
    // Path 2 closes inside the silence: its trigger and resolve are settled together, never sent.
    await h.clock.advance(10 * MIN);
    h.observe('staging', [db(2)], 'filtered');
    await h.clock.advance(49 * MIN);
    await quiet();
    expect(fakes.pd.accepted).toHaveLength(1);
    expect(h.state.findings.get('violation:staging→prod-db@127.0.10.1:5432')?.status).toBe('firing');
    await h.clock.advance(60 * MIN);
    await eventually(() => fakes.pd.accepted.length === 2, 'the still-open path after the silence');
    expect(fakes.pd.accepted[1]!.payload!.summary).toContain('127.0.10.1');
    const silenced = [...h.store.settled.values()].filter((s) => s.outcome === 'silenced');
    expect(silenced.map((s) => s.id.split(':').slice(-2).join(':')).sort()).toEqual(['resolve:pd', 'trigger:pd']);
    expect(silenced.every((s) => s.id.includes('127.0.10.2'))).toBe(true);
  });

  it('a restart between a state change and its delivery: exactly one trigger, and the resolve still owed is sent', async () => {
    make({ receivers: ['pd', 'hook'], alerting: { group_wait: '5s' } });
    h.observe('staging', [db(1)], 'open');
    await h.clock.advance(1_000);
    await h.dispatcher.stop(); // "killed" before the group wait ended: the trigger is committed but unsent
    expect(fakes.pd.received).toHaveLength(0);
    h.start();
    await h.clock.advance(5_000);
    await eventually(() => fakes.pd.accepted.length === 1 && fakes.hook.accepted.length === 1, 'trigger after restart');
    h.observe('staging', [db(1)], 'filtered');
    await h.dispatcher.stop();
    h.start();
    await h.clock.advance(5_000);
    await eventually(() => fakes.pd.accepted.length === 2 && fakes.hook.accepted.length === 2, 'resolve after restart');
    await h.clock.advance(10 * MIN);
    await quiet();
    expect(fakes.pd.accepted.map((e) => e.event_action)).toEqual(['trigger', 'resolve']);
    expect(fakes.pd.open.size).toBe(0);
    expect(fakes.hook.duplicates).toEqual([]);
  });

  it('Alertmanager: firing alerts are re-sent every 2 minutes, also after a restart, and stop once resolved', async () => {
    make({ receivers: ['am'], alerting: { group_wait: '1s', group_interval: '10s' } });
    h.observe('staging', [db(1)], 'open');
    await h.clock.advance(1_000);
    await eventually(() => fakes.am.accepted.length === 1, 'trigger');
    await h.dispatcher.stop();
    h.start();
    await h.clock.advance(2 * MIN);
    await eventually(() => fakes.am.accepted.length === 2, 're-sent after the restart');
    const [first, again] = [fakes.am.accepted[0]![0]!, fakes.am.accepted[1]![0]!];
    expect(again.labels).toEqual(first.labels);
    expect(Date.parse(again.endsAt!)).toBeGreaterThan(h.clock.now());
    h.observe('staging', [db(1)], 'filtered');
    await h.clock.advance(10_000);
    await eventually(() => fakes.am.resolved(first.labels) === true, 'resolve');
    const sent = fakes.am.accepted.length;
    await h.clock.advance(10 * MIN);
    await quiet();
    expect(fakes.am.accepted).toHaveLength(sent);
  });

  it('a new incident in a pair whose last one resolved waits group_wait again, not group_interval', async () => {
    make({ receivers: ['pd'], alerting: { group_wait: '30s', group_interval: '5m' } });
    h.observe('staging', [db(1)], 'open');
    await h.clock.advance(30_000);
    await eventually(() => fakes.pd.accepted.length === 1, 'first trigger');
    await h.clock.advance(60_000);
    h.observe('staging', [db(1)], 'filtered');
    await h.clock.advance(5 * MIN);
    await eventually(() => fakes.pd.accepted.length === 2, 'resolve');
    h.observe('staging', [db(2)], 'open');
    await h.clock.advance(29_999);
    await quiet();
    expect(fakes.pd.accepted).toHaveLength(2);
    await h.clock.advance(1);
    await eventually(() => fakes.pd.accepted.length === 3, 'the new incident after group_wait');
    expect(fakes.pd.accepted[2]!.payload!.summary).toContain('127.0.10.2');
  });

  it("a route's repeat_interval sets its reminders", async () => {
    make({
      receivers: ['slack'],
      alerting: { group_wait: '1s', repeat_interval: '4h', routes: [{ match: { to_env: 'prod' }, receivers: ['slack'], repeat_interval: '10m' }] },
    });
    h.observe('staging', [db(1)], 'open');
    await h.clock.advance(1_000);
    await eventually(() => fakes.slack.accepted.length === 1, 'trigger');
    await h.clock.advance(10 * MIN);
    await eventually(() => fakes.slack.accepted.length === 2, 'reminder after the route repeat_interval');
  });

  it('webhook: the HMAC verifies and the webhook-id is the same on a retry', async () => {
    make({ receivers: ['hook'], alerting: { group_wait: '1s' } });
    fakes.hook.script({ status: 503, body: 'busy' });
    h.observe('staging', [db(1)], 'open');
    await h.clock.advance(1_000);
    await eventually(() => fakes.hook.received.length === 1, 'first attempt');
    await h.clock.advance(2_000);
    await eventually(() => fakes.hook.accepted.length === 1, 'retry');
    const [first, second] = fakes.hook.received;
    expect(second!.headers['webhook-id']).toBe(first!.headers['webhook-id']);
    expect(fakes.hook.accepted[0]!.id).toBe(first!.headers['webhook-id']);
  });

  it('repeat_interval: Slack is reminded while the finding fires, PagerDuty is not paged again', async () => {
    make({ receivers: ['pd', 'slack'], alerting: { group_wait: '1s', group_interval: '1m', repeat_interval: '1h' } });
    h.observe('staging', [db(1)], 'open');
    await h.clock.advance(1_000);
    await eventually(() => fakes.pd.accepted.length === 1 && fakes.slack.accepted.length === 1, 'trigger');
    await h.clock.advance(60 * MIN);
    await eventually(() => fakes.slack.accepted.length === 2, 'reminder');
    expect(fakes.slack.accepted[1]!.text).toMatch(/^FIRING/);
    h.observe('staging', [db(1)], 'filtered');
    await h.clock.advance(3 * 60 * MIN);
    await eventually(() => fakes.pd.accepted.length === 2, 'resolve');
    await quiet();
    expect(fakes.pd.accepted.map((e) => e.event_action)).toEqual(['trigger', 'resolve']);
    // trigger, one reminder, the resolve: no reminder once nothing fires.
    expect(fakes.slack.accepted.map((m) => m.text.split(':')[0])).toEqual(['FIRING', 'FIRING', 'RESOLVED']);
  });
});
