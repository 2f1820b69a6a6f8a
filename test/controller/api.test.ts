// The API over real HTTP on a free loopback port: every read endpoint, filters, 404/405/400, health, requests a
// hostile client might send, and the one write: silences (loopback-only, or bearer token), with deliveries beside.
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { workload } from '../../bench/workload.js';
import { startApi, type ApiServer, type ApiView, type DeliveryView } from '../../controller/api.js';
import type { Silence } from '../../controller/delivery/model.js';
import { applyResults } from '../../controller/lifecycle.js';
import { emptyState } from '../../controller/model.js';

const w = workload({ targets: 4, addresses: 2, messages: 30, observationsPerMessage: 8, startMs: Date.parse('2026-11-22T12:00:00Z'), stepMs: 60_000, flappingShare: 0.5 });
const state = emptyState();
for (let i = 0; i < 30; i++) applyResults(state, w.message(i).batch, i + 1, { plan: w.plan.plan, now: new Date() });
state.counters.dropped.schema = 2;

const health = { natsConnected: true, lastCommitAt: '2026-11-22T12:30:00.000Z', committedSeq: 30, failure: null as string | null, store: 'postgres' };
const view: ApiView = { state: () => state, plan: () => w.plan, health: () => health };

describe('controller read API', () => {
  let api: ApiServer;
  const get = async (path: string, init?: RequestInit) => {
    const res = await fetch(`http://127.0.0.1:${api.port}${path}`, init);
    const text = await res.text();
    return { status: res.status, type: res.headers.get('content-type'), body: text === '' ? undefined : (JSON.parse(text) as Record<string, any>) };
  };

  beforeAll(async () => {
    api = await startApi(view, { host: '127.0.0.1', port: 0 });
  });
  afterAll(async () => {
    await api?.close();
  });

  it('healthz is 200 when connected and committing, 503 otherwise', async () => {
    expect(await get('/healthz')).toMatchObject({ status: 200, type: 'application/json; charset=utf-8', body: { ok: true, natsConnected: true, lastCommitAt: health.lastCommitAt } });
    health.natsConnected = false;
    expect(await get('/healthz')).toMatchObject({ status: 503, body: { ok: false, natsConnected: false } });
    health.natsConnected = true;
    health.failure = 'commit failed';
    expect(await get('/healthz')).toMatchObject({ status: 503, body: { ok: false, failure: 'commit failed' } });
    health.failure = null;
  });

  it.each([
    ['/v1/paths', () => state.paths.size],
    ['/v1/paths?state=firing', () => [...state.paths.values()].filter((p) => p.state === 'firing').length],
    ['/v1/paths?state=ok', () => [...state.paths.values()].filter((p) => p.state === 'ok').length],
    ['/v1/findings', () => state.findings.size],
    ['/v1/findings?status=firing', () => [...state.findings.values()].filter((f) => f.status === 'firing').length],
    ['/v1/findings?status=resolved', () => [...state.findings.values()].filter((f) => f.status === 'resolved').length],
    ['/v1/agents', () => state.agents.size],
  ])('%s lists what the state holds', async (path, count) => {
    const { status, body } = await get(path);
    expect(status).toBe(200);
    const list = (body!.paths ?? body!.findings ?? body!.agents) as unknown[];
    expect(body!.count).toBe(count());
    expect(list).toHaveLength(count());
  });

  it('the filters select something and exclude the rest', async () => {
    const firing = (await get('/v1/paths?state=firing')).body!.paths as { state: string }[];
    expect(firing.length).toBeGreaterThan(0);
    expect(firing.length).toBeLessThan(state.paths.size);
    expect(firing.every((p) => p.state === 'firing')).toBe(true);
    const resolved = (await get('/v1/findings?status=resolved')).body!.findings as { status: string }[];
    expect(resolved.length).toBeGreaterThan(0);
    expect(resolved.every((f) => f.status === 'resolved')).toBe(true);
  });

  it('agents carry last heartbeat, version, plan hash and silence', async () => {
    const agents = (await get('/v1/agents')).body!.agents as Record<string, unknown>[];
    expect(agents.map((a) => a.key).sort()).toEqual(['dev/d1', 'staging/s1']);
    for (const a of agents) expect(Object.keys(a)).toEqual(expect.arrayContaining(['lastHeartbeatAt', 'version', 'planSha256', 'silent']));
  });

  it('plan and stats', async () => {
    expect((await get('/v1/plan')).body).toEqual({ path: 'workload.json', sha256: w.plan.sha256 });
    const stats = (await get('/v1/stats')).body!;
    expect(stats.counters).toEqual(state.counters);
    expect(stats.counters.dropped.schema).toBe(2);
    expect(stats.outbox).toEqual({ pending: state.outbox.size });
    expect(stats.checkpoint).toEqual({ streamSeq: 30, committed: 30 });
    expect(stats.paths.total).toBe(state.paths.size);
  });

  it.each([
    ['/', 404],
    ['/v1', 404],
    ['/v1/paths/extra', 404],
    ['/V1/PATHS', 404],
    ['/v1/paths?state=burning', 400],
    ['/v1/findings?status=', 400],
    ['/v1/paths?state=firing&state=ok', 200],
    ['/v1/paths?%zz=1', 200],
    ['/v1/agents?unknown=1', 200],
  ])('%s answers %i with a JSON body', async (path, status) => {
    const res = await get(path);
    expect(res.status).toBe(status);
    expect(res.type).toBe('application/json; charset=utf-8');
    expect(res.body).toBeDefined();
  });

  it('is read-only: other methods get 405', async () => {
    expect((await get('/v1/paths', { method: 'POST', body: '{}' })).status).toBe(405);
    expect((await get('/v1/paths', { method: 'DELETE' })).status).toBe(405);
    expect((await get('/nothing', { method: 'PUT' })).status).toBe(404);
  });

  it('survives a garbage request line and keeps serving', async () => {
    const reply = await new Promise<string>((resolve, reject) => {
      const socket = net.connect({ host: '127.0.0.1', port: api.port });
      let data = '';
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error('no answer within 5 s'));
      }, 5_000);
      socket.on('data', (d) => (data += d.toString()));
      socket.on('close', () => {
        clearTimeout(timer);
        resolve(data);
      });
      socket.on('error', () => undefined);
      socket.write('\u0000\u0001 GARBAGE\r\n\r\n');
    });
    expect(reply).toMatch(/^HTTP\/1\.1 400/);
    expect((await get('/healthz')).status).toBe(200);
  });
});

/** The delivery side as the API sees it: silences kept in memory, a fixed clock, a canned deliveries snapshot. */
class MemoryDelivery implements DeliveryView {
  readonly list: Silence[] = [];
  nowMs = Date.parse('2026-11-22T12:00:00Z');
  failWrites = false;
  snapshot() {
    return {
      receivers: { pd: { type: 'pagerduty', pending: 0, queued: 1, requests: 3, retries: 2, delivered: 1, dead: 0, retrying: { until: '2026-11-22T12:00:04.000Z', error: 'HTTP 503' } } },
      storms: [],
      deadLetters: [{ id: 'violation:staging→prod-db@10.0.0.1:5432#1:trigger:slack', receiver: 'slack', reason: 'HTTP 410: channel_is_archived' }],
    };
  }
  get silences() {
    return this.list;
  }
  async addSilence(silence: Silence) {
    if (this.failWrites) throw new Error('database is down');
    this.list.push(silence);
  }
  async expireSilence(id: string) {
    const silence = this.list.find((s) => s.id === id);
    if (silence === undefined) return undefined;
    silence.endsAt = new Date(Math.min(this.nowMs, Date.parse(silence.endsAt))).toISOString();
    return silence;
  }
  now() {
    return this.nowMs;
  }
}

describe('controller API: silences and deliveries', () => {
  const delivery = new MemoryDelivery();
  const token = 'b4d9c0e1f2a3b4c5d6e7f8a9';
  let open: ApiServer;
  let guarded: ApiServer;
  let bare: ApiServer;
  const call = async (server: ApiServer, path: string, init: { method?: string; body?: string; headers?: Record<string, string> } = {}) => {
    const res = await fetch(`http://127.0.0.1:${server.port}${path}`, { method: init.method ?? 'GET', headers: { 'content-type': 'application/json', ...init.headers }, body: init.body });
    const text = await res.text();
    return { status: res.status, body: text === '' ? undefined : (JSON.parse(text) as Record<string, any>) };
  };
  const post = (body: unknown, server = open, headers: Record<string, string> = {}) =>
    call(server, '/v1/silences', { method: 'POST', body: typeof body === 'string' ? body : JSON.stringify(body), headers });
  const valid = { matchers: { from_env: 'staging', to_env: ['prod'] }, duration: '2h', created_by: 'alice', comment: '  CHG-42 firewall maintenance  ' };

  beforeAll(async () => {
    open = await startApi({ ...view, delivery }, { host: '127.0.0.1', port: 0 });
    guarded = await startApi({ ...view, delivery, writeToken: token }, { host: '127.0.0.1', port: 0 });
    bare = await startApi(view, { host: '127.0.0.1', port: 0 });
  });
  afterAll(async () => {
    await open?.close();
    await guarded?.close();
    await bare?.close();
  });

  it('GET /v1/deliveries answers the delivery snapshot; a controller without delivery answers 404', async () => {
    expect(await call(open, '/v1/deliveries')).toEqual({ status: 200, body: delivery.snapshot() });
    expect(await call(bare, '/v1/deliveries')).toMatchObject({ status: 404, body: { error: 'no delivery in this controller' } });
    expect(await call(bare, '/v1/silences')).toMatchObject({ status: 404 });
    expect(await call(bare, '/v1/silences', { method: 'POST', body: JSON.stringify(valid) })).toMatchObject({ status: 404 });
  });

  it('POST /v1/silences from loopback creates a silence from now for the duration: 201, listed, then expired by DELETE', async () => {
    const created = await post(valid);
    expect(created.status).toBe(201);
    const silence = created.body!.silence;
    expect(silence).toEqual({
      id: expect.stringMatching(/^sil_[0-9a-f]{16}$/),
      matchers: { from_env: ['staging'], to_env: ['prod'] },
      startsAt: '2026-11-22T12:00:00.000Z',
      endsAt: '2026-11-22T14:00:00.000Z',
      createdBy: 'alice',
      comment: 'CHG-42 firewall maintenance',
      createdAt: '2026-11-22T12:00:00.000Z',
    });
    expect(delivery.list.map((s) => s.id)).toContain(silence.id);
    expect((await call(open, '/v1/silences')).body!.silences.map((s: Silence) => s.id)).toContain(silence.id);

    // An explicit window that starts later.
    const later = await post({ matchers: { kind: 'violation', severity: ['critical', 'error'] }, starts_at: '2026-11-22T13:00:00Z', ends_at: '2026-11-22T15:00:00+01:00', created_by: 'bob', comment: 'window' });
    expect(later.status).toBe(201);
    expect(later.body!.silence).toMatchObject({ startsAt: '2026-11-22T13:00:00.000Z', endsAt: '2026-11-22T14:00:00.000Z', matchers: { kind: ['violation'], severity: ['critical', 'error'] } });

    delivery.nowMs += 30 * 60_000;
    const expired = await call(open, `/v1/silences/${silence.id}`, { method: 'DELETE' });
    expect(expired).toEqual({ status: 200, body: { silence: { ...silence, endsAt: '2026-11-22T12:30:00.000Z' } } });
    const active = (await call(open, '/v1/silences')).body!;
    expect(active.silences.map((s: Silence) => s.id)).not.toContain(silence.id);
    expect(active.count).toBe(active.silences.length);
    expect((await call(open, '/v1/silences?all=true')).body!.silences.map((s: Silence) => s.id)).toEqual(expect.arrayContaining([silence.id, later.body!.silence.id]));
  });

  it.each([
    ['the silence id is unknown', 'DELETE', `/v1/silences/sil_${'a'.repeat(16)}`, 404, /^no silence sil_a{16}$/],
    ['DELETE names no silence', 'DELETE', '/v1/silences', 400, /^DELETE needs a silence id/],
    ['the id is malformed', 'DELETE', '/v1/silences/sil_NOT-AN-ID', 405, /only \/v1\/silences accepts writes/],
    ['POST names a silence', 'POST', `/v1/silences/sil_${'b'.repeat(16)}`, 405, /^POST to \/v1\/silences, not to a silence$/],
    ['POST goes elsewhere', 'POST', '/v1/findings', 405, /only \/v1\/silences accepts writes/],
    ['PUT goes to silences', 'PUT', '/v1/silences', 405, /not allowed/],
  ])('%s: %s %s answers %i', async (_what, method, path, status, error) => {
    const res = await call(open, path, { method, body: method === 'DELETE' ? undefined : JSON.stringify(valid) });
    expect(res.status).toBe(status);
    expect(res.body!.error).toMatch(error);
  });

  it.each([
    ['missing fields', {}, ['matchers: ', 'created_by: say who is silencing', 'comment: say why']],
    ['not an object', [], ['(body): ']],
    [
      'an empty matcher set, a bad duration, a blank author and an unknown key',
      { matchers: {}, duration: 'forever', created_by: ' ', extra: 1 },
      [
        'matchers: expected at least one matcher: a silence for everything hides every alert',
        'duration: expected a duration such as 30m or 2h',
        'created_by: say who is silencing',
        'comment: say why (a ticket, a maintenance window)',
        'extra: unknown key',
      ],
    ],
    [
      'bad label values',
      { matchers: { from_env: 'Staging!', severity: 'loud', kind: ['violation', 'nope'], team: 'x' }, duration: '1h', created_by: 'me', comment: 'why' },
      [
        'matchers.from_env.0: expected a name (lowercase letters, digits, - and _)',
        'matchers.kind.1: expected one of violation, agent-silent',
        'matchers.severity.0: expected one of critical, error, warning, info',
        'matchers.team: unknown key',
      ],
    ],
    ['both duration and ends_at', { matchers: { to_env: 'prod' }, duration: '1h', ends_at: '2026-11-23T00:00:00Z', created_by: 'me', comment: 'why' }, ['ends_at: give exactly one of duration and ends_at']],
    ['an end in the past', { matchers: { to_env: 'prod' }, ends_at: '2026-11-22T11:00:00Z', created_by: 'me', comment: 'why' }, ['ends_at: must be in the future and after starts_at']],
    ['an end before the start', { matchers: { to_env: 'prod' }, starts_at: '2026-11-24T00:00:00Z', ends_at: '2026-11-23T23:00:00Z', created_by: 'me', comment: 'why' }, ['ends_at: must be in the future and after starts_at']],
    ['more than 30 days', { matchers: { to_env: 'prod' }, duration: '745h', created_by: 'me', comment: 'why' }, ['ends_at: a silence may last at most 30 days']],
  ])('a silence with %s is refused with 400, each problem naming its field', async (_what, body, expected) => {
    const before = delivery.list.length;
    const res = await post(body);
    expect(res.status).toBe(400);
    expect(res.body!.error).toBe('invalid silence');
    const problems = res.body!.problems as string[];
    expect(problems).toHaveLength(expected.length);
    for (const [i, want] of expected.entries()) expect(problems[i]!.startsWith(want), `${problems[i]} starts with ${want}`).toBe(true);
    expect(delivery.list).toHaveLength(before);
  });

  it('a body that is not JSON is a 400, one over 64 KiB a 413, and a failed write a 500: never a crash', async () => {
    expect(await post('{"matchers":')).toEqual({ status: 400, body: { error: 'body: expected JSON' } });
    expect(await post({ ...valid, comment: 'x'.repeat(70_000) })).toMatchObject({ status: 413, body: { error: expect.stringMatching(/larger than 65536 bytes/) } });
    delivery.failWrites = true;
    const before = delivery.list.length;
    expect(await post(valid)).toEqual({ status: 500, body: { error: 'internal error', detail: 'database is down' } });
    delivery.failWrites = false;
    expect(delivery.list).toHaveLength(before);
    expect((await call(open, '/healthz')).status).toBe(200);
  });

  it('with a write token, writes need "Authorization: Bearer <token>" even from loopback; reads do not', async () => {
    const before = delivery.list.length;
    const wrong: Record<string, string>[] = [{}, { authorization: `Bearer ${token}x` }, { authorization: `Bearer ${token.slice(0, -1)}` }, { authorization: token }, { authorization: `Basic ${token}` }];
    for (const headers of wrong) {
      expect(await post(valid, guarded, headers)).toEqual({ status: 401, body: { error: 'writes need Authorization: Bearer <token>' } });
    }
    expect((await call(guarded, `/v1/silences/sil_${'c'.repeat(16)}`, { method: 'DELETE' })).status).toBe(401);
    expect(delivery.list).toHaveLength(before);
    expect((await call(guarded, '/v1/silences')).status).toBe(200);
    expect((await call(guarded, '/v1/deliveries')).status).toBe(200);

    const created = await post(valid, guarded, { authorization: `Bearer ${token}` });
    expect(created.status).toBe(201);
    const expired = await call(guarded, `/v1/silences/${created.body!.silence.id}`, { method: 'DELETE', headers: { authorization: `Bearer ${token}` } });
    expect(expired.status).toBe(200);
  });
});
