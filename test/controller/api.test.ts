// The read API over real HTTP on a free loopback port: every endpoint, filters, 404/405/400, health, and
// requests a hostile client might send.
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { workload } from '../../bench/workload.js';
import { startApi, type ApiServer, type ApiView } from '../../controller/api.js';
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
