import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { pathKey, type Observation } from '../../core/observation.js';
import type { Outcome } from '../../core/outcome.js';
import { parsePlanText } from '../../core/plan-load.js';
import type { Plan } from '../../core/plan.js';
import type { Heartbeat, ResultBatch } from '../../core/wire.js';
import { applyHeartbeat, applyImpersonation, applyResults, tick, type LifecycleContext } from '../../controller/lifecycle.js';
import { emptyState, type ControllerState, type Effects, type Notification, type Transition } from '../../controller/model.js';

const T0 = Date.parse('2026-11-22T12:00:00Z');
/** Event time `minute` minutes (and `second` seconds) after T0. */
const t = (minute: number, second = 0) => new Date(T0 + minute * 60_000 + second * 1000).toISOString();
const SHA = 'a'.repeat(64);

function makePlan(alerting: Record<string, unknown> = {}, allowExpires = '2027-03-31'): Plan {
  const doc = {
    version: 1,
    environments: { prod: {}, staging: {}, dev: {} },
    targets: [
      { name: 'prod-db', env: 'prod', probe: 'postgres', host: '198.18.1.1' },
      { name: 'prod-api', env: 'prod', probe: 'http', url: 'http://198.18.1.2/' },
      { name: 'stg-web', env: 'staging', probe: 'http', url: 'http://198.18.2.1/', expect_status: [200] },
    ],
    policy: { allow: [{ from: ['staging'], to: { target: 'prod-api' }, reason: 'status page', ticket: 'SEC-123', expires: allowExpires }] },
    schedule: { interval: '60s', timeout: '3s' },
    alerting: {
      receivers: [
        { name: 'pager', type: 'pagerduty', routing_key: { env: 'BULKHEAD_PD_KEY' } },
        { name: 'chat', type: 'slack', url: { env: 'BULKHEAD_SLACK_URL' } },
        { name: 'console', type: 'console' },
      ],
      routes: [
        { match: { kind: 'violation' }, receivers: ['pager'], continue: true },
        { match: { severity: ['critical', 'error'] }, receivers: ['chat'] },
        { match: {}, receivers: ['console'] },
      ],
      ...alerting,
    },
  };
  return parsePlanText(JSON.stringify(doc), 'plan.json').plan;
}

const ADDRESS: Record<string, [string, string, number]> = {
  'prod-db': ['prod', '198.18.1.1', 5432],
  'prod-api': ['prod', '198.18.1.2', 80],
  'stg-web': ['staging', '198.18.2.1', 80],
  gone: ['prod', '198.18.9.9', 1],
};

function obs(from: string, target: string, outcome: Outcome, at: string): Observation {
  const [env, address, port] = ADDRESS[target]!;
  return {
    target, env, from, probe: target === 'prod-db' ? 'postgres' : 'http', address, port, outcome,
    layer: outcome === 'open' ? 'app' : 'tcp', evidence: outcome === 'open' ? { detail: 'answered' } : {},
    timings: { totalMs: 1 }, attempts: 1, at,
  };
}

const DB = pathKey({ from: 'staging', target: 'prod-db', address: '198.18.1.1', port: 5432 });
const API = pathKey({ from: 'staging', target: 'prod-api', address: '198.18.1.2', port: 80 });
const dedup = (key: string) => `bulkhead:v1:${createHash('sha256').update(key).digest('hex')}`;
const OUTCOME: Record<string, Outcome> = { o: 'open', b: 'filtered', e: 'error' };

/** Drives the lifecycle with numbered stream messages and remembers everything it owed. */
class Sim {
  readonly state: ControllerState = emptyState();
  readonly notes: Notification[] = [];
  readonly transitions: Transition[] = [];
  seq = 0;
  constructor(readonly plan: Plan, readonly now = new Date('2031-01-01T00:00:00Z')) {}

  ctx(now = this.now): LifecycleContext {
    return { plan: this.plan, now };
  }
  record(effects: Effects): Effects {
    this.notes.push(...effects.notifications);
    this.transitions.push(...effects.transitions);
    return effects;
  }
  batch(agent: string, at: string, items: [string, Outcome][], opts: { failed?: string[]; env?: string; from?: string } = {}): ResultBatch {
    const env = opts.env ?? 'staging';
    return {
      v: 1, type: 'results', env, agent, id: `${agent}-${this.seq + 1}`,
      cycle: { id: `c${this.seq + 1}`, startedAt: at, finishedAt: at, chunk: 0, chunks: 1 },
      planSha256: SHA, controls: { total: 2, failed: opts.failed ?? [] },
      observations: items.map(([target, outcome]) => obs(opts.from ?? env, target, outcome, at)),
    };
  }
  apply(batch: ResultBatch, seq = ++this.seq) {
    const result = applyResults(this.state, batch, seq, this.ctx());
    this.record(result.effects);
    return result;
  }
  results(agent: string, at: string, items: [string, Outcome][], opts: { failed?: string[]; env?: string; from?: string } = {}) {
    return this.apply(this.batch(agent, at, items, opts));
  }
  /** One observation of `target` per letter (o open, b blocked, e error), a minute apart from `minute`. */
  play(agent: string, minute: number, letters: string, target = 'prod-db'): number {
    for (const [i, letter] of [...letters].entries()) this.results(agent, t(minute + i), [[target, OUTCOME[letter]!]]);
    return minute + letters.length;
  }
  heartbeat(agent: string, at: string, env = 'staging'): Effects {
    const hb: Heartbeat = {
      v: 1, type: 'heartbeat', env, agent, version: '0.1.0', planSha256: SHA, at, intervalMs: 60_000,
      controls: { total: 2, failed: [] }, lastCycleAt: at, outbox: { pending: 1, dropped: 0 },
    };
    return this.record(applyHeartbeat(this.state, hb, this.ctx()));
  }
  tick(at: string): Effects {
    return this.record(tick(this.state, this.ctx(new Date(at))));
  }
  owed(action: string, findingKey?: string): string[] {
    return this.notes.filter((n) => n.action === action && (findingKey === undefined || n.findingKey === findingKey)).map((n) => n.id);
  }
  path(key = DB) {
    return this.state.paths.get(key)!;
  }
  finding(key: string) {
    return this.state.findings.get(key);
  }
}

const V = `violation:${DB}`;

function snapshot(state: ControllerState): string {
  return JSON.stringify({
    paths: [...state.paths.entries()],
    findings: [...state.findings.entries()],
    agents: [...state.agents.entries()],
    outbox: [...state.outbox.entries()],
    checkpoint: state.checkpoint,
    counters: state.counters,
  });
}

describe('deny paths: firing', () => {
  it.each([
    { threshold: 1, opens: 1 },
    { threshold: 2, opens: 2 },
    { threshold: 3, opens: 3 },
  ])('open_threshold $threshold: pending below it, nothing owed; at it one trigger per routed receiver', ({ threshold, opens }) => {
    const sim = new Sim(makePlan({ open_threshold: threshold }));
    sim.play('stg-a', 0, 'o'.repeat(opens - 1));
    expect(sim.notes).toEqual([]);
    if (opens > 1) expect(sim.path().state).toBe('pending');
    expect(sim.finding(V)).toBeUndefined();

    sim.play('stg-a', opens - 1, 'o');
    const path = sim.path();
    expect(path).toMatchObject({ state: 'firing', incident: 1, firedAt: t(opens - 1), openers: ['stg-a'], openStreak: opens });
    expect(sim.notes.map((n) => n.id)).toEqual([`${V}#1:trigger:pager`, `${V}#1:trigger:chat`]);
    expect(sim.notes.every((n) => n.dedupKey === dedup(V) && n.createdAt === t(opens - 1) && n.deliveredAt === null)).toBe(true);
    expect([...sim.state.outbox.keys()]).toEqual([`${V}#1:trigger:pager`, `${V}#1:trigger:chat`]);
    const finding = sim.finding(V)!;
    expect(finding).toMatchObject({
      status: 'firing', incident: 1, since: t(opens - 1), receivers: ['pager', 'chat'],
      labels: { kind: 'violation', severity: 'critical', from_env: 'staging', to_env: 'prod', target: 'prod-db' },
    });
    expect(sim.notes[0]!.finding).toEqual(finding);
    expect(sim.notes[0]!.finding).not.toBe(finding); // a snapshot, not the live record
    expect(sim.transitions.filter((x) => x.to === 'firing').map((x) => x.key)).toEqual([V, DB]);

    sim.play('stg-a', opens, 'oooo'); // still open: no second page, no new flip, the incident keeps its start
    expect(sim.notes).toHaveLength(2);
    expect(sim.path()).toMatchObject({ firedAt: t(opens - 1), flips: [t(opens - 1)], incident: 1 });
    expect(sim.finding(V)).toMatchObject({ since: t(opens - 1), updatedAt: t(opens - 1), details: { at: t(opens - 1) } });
  });

  it('a blocked observation before the threshold sends a pending path back to ok', () => {
    const sim = new Sim(makePlan({ open_threshold: 2 }));
    sim.play('stg-a', 0, 'obo');
    expect(sim.path()).toMatchObject({ state: 'pending', openStreak: 1 });
    expect(sim.transitions.map((x) => `${x.from}>${x.to}`)).toEqual(['ok>pending', 'pending>ok', 'ok>pending']);
    expect(sim.notes).toEqual([]);
  });

  it('messages from several agents interleave: last times only move forward', () => {
    const sim = new Sim(makePlan());
    sim.results('stg-b', t(5), [['prod-db', 'open']]);
    sim.results('stg-a', t(3), [['prod-db', 'open']]); // a delayed batch, delivered after a newer one
    sim.results('stg-b', t(2), []); // and an even older one from stg-b
    expect(sim.path()).toMatchObject({ lastObservedAt: t(5), lastOpenAt: t(5), firstSeenAt: t(5), openers: ['stg-b', 'stg-a'] });
    expect(sim.state.agents.get('staging/stg-b')?.lastResultsAt).toBe(t(5));
  });

  it('observations of targets no longer in the plan are skipped', () => {
    const sim = new Sim(makePlan());
    const { history } = sim.results('stg-a', t(0), [['gone', 'open'], ['prod-db', 'filtered']]);
    expect(history.map((h) => [h.id, h.pathKey, h.verdict])).toEqual([[`stg-a-1#1`, DB, 'pass']]);
    expect([...sim.state.paths.keys()]).toEqual([DB]);
    expect(sim.state.counters).toMatchObject({ messages: 1, observations: 1 });
    expect(sim.state.agents.get('staging/stg-a')?.lastResultsAt).toBe(t(0));
  });
});

describe('deny paths: resolving', () => {
  it.each([1, 3, 5])('resolve_after %i: resolves after that many blocked from the opener, one resolve per receiver', (n) => {
    const sim = new Sim(makePlan({ resolve_after: n }));
    let m = sim.play('stg-a', 0, 'o' + 'b'.repeat(n - 1));
    expect(sim.path().state).toBe('firing');
    expect(sim.owed('resolve')).toEqual([]);
    m = sim.play('stg-a', m, 'b');
    expect(sim.path()).toMatchObject({ state: 'resolved', resolvedAt: t(n), openers: [], blockedStreaks: {} });
    expect(sim.finding(V)).toMatchObject({ status: 'resolved', incident: 1 });
    const resolves = sim.notes.filter((n) => n.action === 'resolve');
    expect(resolves.map((r) => r.id)).toEqual([`${V}#1:resolve:pager`, `${V}#1:resolve:chat`]);
    expect(new Set(sim.notes.map((r) => r.dedupKey))).toEqual(new Set([dedup(V)]));
    sim.play('stg-a', m, 'bbb');
    expect(sim.notes).toHaveLength(4);
    // What the trigger carries is the finding as it was when it became owed.
    expect(sim.state.outbox.get(`${V}#1:trigger:pager`)?.finding.status).toBe('firing');
    expect(sim.state.outbox.get(`${V}#1:resolve:pager`)?.finding.status).toBe('resolved');
  });

  it("another agent's blocked results do not resolve what someone else saw open", () => {
    const sim = new Sim(makePlan());
    sim.play('stg-a', 0, 'o');
    sim.play('stg-b', 1, 'bbbbbbbbbb');
    expect(sim.path()).toMatchObject({ state: 'firing', openers: ['stg-a'] });
    expect(sim.owed('resolve')).toEqual([]);
    sim.play('stg-a', 11, 'bbb');
    expect(sim.path().state).toBe('resolved');
  });

  it('every opener must see it blocked', () => {
    const sim = new Sim(makePlan());
    sim.play('stg-a', 0, 'o');
    sim.play('stg-b', 1, 'o');
    sim.play('stg-a', 2, 'bbbb');
    expect(sim.path()).toMatchObject({ state: 'firing', openers: ['stg-a', 'stg-b'], blockedStreaks: { 'stg-a': 4, 'stg-b': 0 } });
    sim.play('stg-b', 6, 'bb');
    expect(sim.path().state).toBe('firing');
    sim.play('stg-b', 8, 'b');
    expect(sim.path().state).toBe('resolved');
  });

  it.each([
    ['an error outcome', (sim: Sim, m: number) => sim.play('stg-a', m, 'e')],
    ['a blocked result while controls fail', (sim: Sim, m: number) => sim.results('stg-a', t(m), [['prod-db', 'filtered']], { failed: ['stg-web'] })],
  ])('an inconclusive result (%s) resets the streak and resolves nothing', (_name, inconclusive) => {
    const sim = new Sim(makePlan());
    sim.play('stg-a', 0, 'obb');
    inconclusive(sim, 3);
    expect(sim.path()).toMatchObject({ state: 'firing', blockedStreaks: { 'stg-a': 0 } });
    sim.play('stg-a', 4, 'bb');
    expect(sim.path().state).toBe('firing');
    sim.play('stg-a', 6, 'b');
    expect(sim.path().state).toBe('resolved');
    expect(sim.owed('resolve', V)).toEqual([`${V}#1:resolve:pager`, `${V}#1:resolve:chat`]);
  });

  it('reopening after a real resolve is a new incident with a new trigger under the same dedup key', () => {
    const sim = new Sim(makePlan());
    sim.play('stg-a', 0, 'obbb');
    sim.play('stg-a', 40, 'o'); // beyond the flapping window
    expect(sim.path()).toMatchObject({ state: 'firing', incident: 2, flapping: false });
    expect(sim.finding(V)).toMatchObject({ status: 'firing', incident: 2, since: t(40) });
    expect(sim.owed('trigger')).toEqual([`${V}#1:trigger:pager`, `${V}#1:trigger:chat`, `${V}#2:trigger:pager`, `${V}#2:trigger:chat`]);
    expect(new Set(sim.notes.map((n) => n.dedupKey)).size).toBe(1);
    sim.play('stg-a', 41, 'bbb');
    expect(sim.owed('resolve')).toEqual([`${V}#1:resolve:pager`, `${V}#1:resolve:chat`, `${V}#2:resolve:pager`, `${V}#2:resolve:chat`]);
  });
});

describe('flapping', () => {
  it('default (4 flips in 30 min): stays firing with one flapping update, no new incident per flip', () => {
    const sim = new Sim(makePlan());
    let m = sim.play('stg-a', 0, 'obbbobbb'); // fire, resolve, fire again, would resolve: 4th flip
    expect(sim.path()).toMatchObject({ state: 'firing', flapping: true, incident: 2 });
    expect(sim.finding(V)).toMatchObject({ status: 'firing', flapping: true });
    m = sim.play('stg-a', m, 'obbbobbbobbbob');
    expect(sim.path()).toMatchObject({ state: 'firing', flapping: true, incident: 2 });
    expect(sim.owed('trigger')).toHaveLength(4); // incidents 1 and 2, two receivers each
    expect(sim.owed('resolve')).toEqual([`${V}#1:resolve:pager`, `${V}#1:resolve:chat`]);
    expect(sim.owed('update')).toEqual([`${V}#2:update:pager:flapping`, `${V}#2:update:chat:flapping`]);
  });

  it('transitions 2: at most one trigger and one flapping update; resolves only after a quiet window', () => {
    const sim = new Sim(makePlan({ flapping: { transitions: 2, window: '30m' } }));
    let m = sim.play('stg-a', 0, 'obbbobbbobbbobbbo');
    expect(sim.owed('trigger')).toEqual([`${V}#1:trigger:pager`, `${V}#1:trigger:chat`]);
    expect(sim.owed('update')).toEqual([`${V}#1:update:pager:flapping`, `${V}#1:update:chat:flapping`]);
    expect(sim.owed('resolve')).toEqual([]);
    const lastOpen = m - 1;
    expect(sim.path().lastOpenAt).toBe(t(lastOpen));
    // Blocked from the opener for well over resolve_after, but an open was seen within the window.
    m = sim.play('stg-a', m, 'b'.repeat(29));
    expect(sim.path()).toMatchObject({ state: 'firing', flapping: true });
    expect(m - lastOpen).toBe(30);
    sim.play('stg-a', m, 'b'); // 30 min after the last open
    expect(sim.path()).toMatchObject({ state: 'resolved', flapping: false, incident: 1 });
    expect(sim.finding(V)).toMatchObject({ status: 'resolved', flapping: false });
    expect(sim.owed('resolve')).toEqual([`${V}#1:resolve:pager`, `${V}#1:resolve:chat`]);
    expect(sim.notes).toHaveLength(6);
  });

  it('flips older than the window do not count', () => {
    const sim = new Sim(makePlan({ flapping: { transitions: 3, window: '10m' } }));
    sim.play('stg-a', 0, 'obbb'); // flips at 0 and 3
    sim.play('stg-a', 12, 'obbb'); // flips at 12 and 15: only 12 is within 10 min of 15
    expect(sim.path()).toMatchObject({ state: 'resolved', flapping: false, incident: 2 });
    sim.play('stg-a', 16, 'obbb'); // 12, 15, 16 in window, would-be 19 makes 4 ≥ 3
    expect(sim.path()).toMatchObject({ state: 'firing', flapping: true, incident: 3 });
  });
});

describe('silence and staleness', () => {
  it('a silent agent fires agent-silent and the firing path goes stale; nothing resolves; heartbeat and fresh data recover', () => {
    const sim = new Sim(makePlan());
    sim.heartbeat('stg-a', t(0));
    sim.play('stg-a', 0, 'o');
    expect(sim.tick(t(3)).findings).toEqual([]); // exactly silent_after intervals: not yet
    const effects = sim.tick(t(3, 1));
    expect(sim.state.agents.get('staging/stg-a')).toMatchObject({ silent: true });
    const silent = sim.finding('agent-silent:staging/stg-a')!;
    expect(silent).toMatchObject({ status: 'firing', since: t(3, 1), labels: { kind: 'agent-silent', severity: 'error', from_env: 'staging' } });
    expect(sim.path()).toMatchObject({ state: 'firing', stale: true });
    expect(sim.finding(V)).toMatchObject({ status: 'firing', stale: true });
    expect(effects.notifications.map((n) => n.id)).toEqual(['agent-silent:staging/stg-a#1:trigger:chat']);
    expect(effects.transitions.map((x) => `${x.key} ${x.from}>${x.to}`)).toEqual([
      'agent-silent:staging/stg-a none>firing',
      `${DB} firing>firing+stale`,
      `${V} firing>firing+stale`,
    ]);

    for (let m = 4; m < 600; m += 60) sim.tick(t(m)); // hours of silence
    expect(sim.owed('resolve')).toEqual([]);
    expect(sim.owed('trigger', 'agent-silent:staging/stg-a')).toHaveLength(1);
    expect(sim.path().state).toBe('firing');

    sim.heartbeat('stg-a', t(600));
    expect(sim.finding('agent-silent:staging/stg-a')).toMatchObject({ status: 'resolved' });
    expect(sim.owed('resolve')).toEqual(['agent-silent:staging/stg-a#1:resolve:chat']);
    expect(sim.state.agents.get('staging/stg-a')).toMatchObject({ silent: false, lastHeartbeatAt: t(600), outbox: { pending: 1, dropped: 0 } });
    expect(sim.path().stale).toBe(true); // a heartbeat is not an observation of the path

    sim.play('stg-a', 601, 'b');
    expect(sim.path()).toMatchObject({ state: 'firing', stale: false, lastObservedAt: t(601) });
    expect(sim.finding(V)).toMatchObject({ status: 'firing', stale: false });
  });

  it('inconclusive results do not count as fresh data', () => {
    const sim = new Sim(makePlan());
    sim.play('stg-a', 0, 'oeee');
    sim.tick(t(3, 1));
    expect(sim.path()).toMatchObject({ state: 'firing', stale: true, lastObservedAt: t(0) });
  });

  it('an older heartbeat arriving late changes nothing', () => {
    const sim = new Sim(makePlan());
    sim.heartbeat('stg-a', t(5));
    expect(sim.heartbeat('stg-a', t(4)).agents).toEqual([]);
    expect(sim.state.agents.get('staging/stg-a')?.lastHeartbeatAt).toBe(t(5));
  });
});

describe('other findings', () => {
  it('control-failed fires with the failed controls and resolves at the next clean batch', () => {
    const sim = new Sim(makePlan());
    const { history } = sim.results('stg-a', t(0), [['stg-web', 'refused'], ['prod-db', 'filtered']], { failed: ['stg-web'] });
    expect(history.map((h) => h.verdict)).toEqual(['expected-path-down', 'inconclusive']);
    const key = 'control-failed:staging/stg-a';
    expect(sim.finding(key)).toMatchObject({ status: 'firing', labels: { kind: 'control-failed', severity: 'error', from_env: 'staging' }, details: { failed: ['stg-web'], total: 2 } });
    expect(sim.owed('trigger')).toEqual([`${key}#1:trigger:chat`]);
    sim.results('stg-a', t(1), [['stg-web', 'refused']], { failed: ['stg-web'] });
    expect(sim.owed('trigger')).toHaveLength(1);
    sim.results('stg-a', t(2), [['stg-web', 'open']]);
    expect(sim.finding(key)).toMatchObject({ status: 'resolved', updatedAt: t(2) });
    expect(sim.owed('resolve')).toEqual([`${key}#1:resolve:chat`]);
    expect(sim.finding(`expected-path-down:${pathKey({ from: 'staging', target: 'stg-web', address: '198.18.2.1', port: 80 })}`)).toBeUndefined();
  });

  it('a finding no route matches owes neither a trigger nor a resolve', () => {
    const sim = new Sim(makePlan({ routes: [{ match: { kind: 'violation' }, receivers: ['pager'] }] }));
    sim.results('stg-a', t(0), [], { failed: ['stg-web'] });
    sim.results('stg-a', t(1), []);
    expect(sim.finding('control-failed:staging/stg-a')).toMatchObject({ status: 'resolved', receivers: [] });
    expect(sim.notes).toEqual([]);
  });

  it('expected-path-down fires for an allow path not open for open_threshold observations and resolves on the first open', () => {
    const sim = new Sim(makePlan({ open_threshold: 2 }));
    const key = `expected-path-down:${API}`;
    sim.play('stg-a', 0, 'b', 'prod-api');
    expect(sim.path(API)).toMatchObject({ expectation: 'allow', state: 'pending', downStreak: 1 });
    expect(sim.finding(key)).toBeUndefined();
    sim.play('stg-a', 1, 'eb', 'prod-api');
    expect(sim.path(API)).toMatchObject({ state: 'firing', downStreak: 2 });
    expect(sim.finding(key)).toMatchObject({ labels: { kind: 'expected-path-down', severity: 'warning', from_env: 'staging', to_env: 'prod', target: 'prod-api' } });
    expect(sim.owed('trigger')).toEqual([`${key}#1:trigger:console`]);
    sim.play('stg-b', 3, 'o', 'prod-api');
    expect(sim.path(API)).toMatchObject({ state: 'resolved', downStreak: 0 });
    expect(sim.owed('resolve')).toEqual([`${key}#1:resolve:console`]);
    expect(sim.finding(`violation:${API}`)).toBeUndefined();
  });

  it('when an allow rule expires the path is denied again: its allow finding resolves and an open is a violation', () => {
    const sim = new Sim(makePlan({}, '2026-11-22T12:05:00Z'));
    sim.play('stg-a', 0, 'b', 'prod-api');
    expect(sim.path(API).state).toBe('firing');
    sim.play('stg-a', 5, 'o', 'prod-api');
    expect(sim.finding(`expected-path-down:${API}`)).toMatchObject({ status: 'resolved' });
    expect(sim.path(API)).toMatchObject({ expectation: 'deny', state: 'firing', incident: 1 });
    expect(sim.finding(`violation:${API}`)).toMatchObject({ status: 'firing', details: { rule: { id: 'allow[0]', kind: 'exception-expired' } } });
  });

  it('exception-expired fires once via tick after the expiry and resolves when the plan extends the rule', () => {
    const sim = new Sim(makePlan());
    const key = 'exception-expired:allow[0]';
    expect(sim.tick('2027-03-31T23:59:59Z').findings).toEqual([]);
    const effects = sim.tick('2027-04-01T00:00:00Z');
    expect(effects.findings.map((f) => f.key)).toEqual([key]);
    expect(sim.finding(key)).toMatchObject({
      status: 'firing',
      labels: { kind: 'exception-expired', severity: 'warning', from_env: 'staging', to_env: 'prod', target: 'prod-api' },
      details: { reason: 'status page', ticket: 'SEC-123', expires: '2027-03-31' },
    });
    expect(sim.owed('trigger')).toEqual([`${key}#1:trigger:console`]);
    expect(sim.tick('2027-04-02T00:00:00Z').findings).toEqual([]);
    const extended = { plan: makePlan({}, '2028-01-01'), now: new Date('2027-04-03T00:00:00Z') };
    tick(sim.state, extended);
    expect(sim.finding(key)).toMatchObject({ status: 'resolved', updatedAt: '2027-04-03T00:00:00.000Z' });
  });

  it('impersonation fires (critical), repeats without a new page, and nothing resolves it', () => {
    const sim = new Sim(makePlan());
    const info = { subject: 'bulkhead.results.dev.x', claimedEnv: 'prod', claimedAgent: 'p1', detail: 'subject says dev/x, payload says prod/p1' };
    const key = 'impersonation:prod/p1@bulkhead.results.dev.x';
    sim.record(applyImpersonation(sim.state, info, sim.ctx(new Date(t(0)))));
    expect(sim.finding(key)).toMatchObject({
      status: 'firing', since: t(0),
      labels: { kind: 'impersonation', severity: 'critical', from_env: 'dev' },
      details: { detail: info.detail, subject: info.subject, occurrences: 1 },
    });
    expect(sim.owed('trigger')).toEqual([`${key}#1:trigger:chat`]);
    sim.record(applyImpersonation(sim.state, info, sim.ctx(new Date(t(1)))));
    expect(sim.finding(key)).toMatchObject({ status: 'firing', details: { occurrences: 2 }, since: t(0) });
    sim.heartbeat('x', t(2), 'dev');
    sim.play('stg-a', 3, 'bbbb');
    sim.tick(t(9999));
    expect(sim.finding(key)?.status).toBe('firing');
    expect(sim.notes.filter((n) => n.findingKey === key).map((n) => n.action)).toEqual(['trigger']);
  });

  it('a batch carrying observations from another environment is impersonation and judged not at all', () => {
    const sim = new Sim(makePlan());
    const batch = sim.batch('stg-a', t(0), [['prod-db', 'filtered']]);
    batch.observations.push(obs('dev', 'prod-db', 'filtered', t(0)));
    const { effects, history } = sim.apply(batch, 7);
    expect(history).toEqual([]);
    expect(effects.paths).toEqual([]);
    expect(sim.state.paths.size).toBe(0);
    expect(sim.state.agents.size).toBe(0);
    expect(sim.state.checkpoint.streamSeq).toBe(7);
    expect(sim.state.counters).toMatchObject({ messages: 0, observations: 0, dropped: { impersonation: 1 } });
    expect(effects.findings.map((f) => [f.key, f.labels.from_env, f.since])).toEqual([['impersonation:dev/stg-a@bulkhead.results.staging.stg-a', 'staging', t(0)]]);
  });
});

describe('replay and determinism', () => {
  it('a batch at or below the checkpoint changes nothing', () => {
    const sim = new Sim(makePlan());
    const batch = sim.batch('stg-a', t(0), [['prod-db', 'open']]);
    const first = sim.apply(batch, 5);
    expect(first.history.map((h) => h.id)).toEqual(['stg-a-1#0']);
    expect(first.history[0]).toMatchObject({ streamSeq: 5, agent: 'stg-a', pathKey: DB, verdict: 'violation' });
    const before = snapshot(sim.state);
    for (const seq of [5, 3]) {
      const again = sim.apply(batch, seq);
      expect(again).toEqual({ effects: { paths: [], findings: [], agents: [], notifications: [], transitions: [] }, history: [] });
    }
    expect(snapshot(sim.state)).toBe(before);
    expect(sim.state.checkpoint.streamSeq).toBe(5);
    expect(sim.state.counters).toMatchObject({ messages: 1, observations: 1 });
  });

  it('the same messages in the same order give the same state, whatever the wall clock', () => {
    const run = (now: Date) => {
      const sim = new Sim(makePlan(), now);
      sim.heartbeat('stg-a', t(0));
      sim.play('stg-a', 0, 'obbbobbbobb');
      sim.play('stg-b', 11, 'oeb');
      sim.play('stg-a', 14, 'bb', 'prod-api');
      sim.results('stg-a', t(16), [['stg-web', 'refused']], { failed: ['stg-web'] });
      return sim;
    };
    const a = run(new Date('2020-01-01T00:00:00Z'));
    const b = run(new Date('2035-06-30T12:34:56Z'));
    expect(a.state.findings.size).toBeGreaterThan(2);
    expect(snapshot(b.state)).toBe(snapshot(a.state));
    expect(JSON.stringify(b.notes)).toBe(JSON.stringify(a.notes));
  });

  it('effects are snapshots: later changes to the state do not alter them', () => {
    const sim = new Sim(makePlan());
    const { effects } = sim.results('stg-a', t(0), [['prod-db', 'open']]);
    sim.play('stg-a', 1, 'bbb');
    expect(effects.paths[0]).toMatchObject({ state: 'firing', openers: ['stg-a'] });
    expect(effects.findings[0]).toMatchObject({ status: 'firing' });
  });
});
