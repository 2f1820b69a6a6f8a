// The demo's webhook receiver against requests the controller's own webhook renderer signs: accepted with the right
// secret, 401 with a wrong one, a tampered body or a stale timestamp, and a retry (same webhook-id) shown once.
import type { AddressInfo } from 'node:net';
import type http from 'node:http';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startReceiver, verify, keyOf, TOLERANCE_S } from '../../demo/receiver.js';
import type { Notification } from '../../controller/model.js';
import { renderWebhook } from '../../controller/receivers/webhook.js';
import { stop } from '../helpers/listen.js';

const SECRET = `whsec_${Buffer.from('a demo signing key of 32 bytes!!').toString('base64')}`;
const NOW = Date.parse('2026-11-22T05:00:00Z');

function notification(action: 'trigger' | 'resolve'): Notification {
  const finding = {
    key: 'violation:staging→prod-db@127.0.10.1:15432',
    kind: 'violation' as const,
    labels: { kind: 'violation' as const, severity: 'critical' as const, from_env: 'staging', to_env: 'prod', target: 'prod-db' },
    status: action === 'resolve' ? ('resolved' as const) : ('firing' as const),
    incident: 1,
    since: new Date(NOW).toISOString(),
    updatedAt: new Date(NOW).toISOString(),
    stale: false,
    flapping: false,
    summary: 'staging can reach prod-db (prod) at 127.0.10.1:15432',
    details: {},
    receivers: ['demo-webhook'],
  };
  return {
    id: `${finding.key}#1:${action}:demo-webhook`,
    receiver: 'demo-webhook',
    action,
    findingKey: finding.key,
    incident: 1,
    dedupKey: 'bulkhead:v1:abc',
    createdAt: new Date(NOW).toISOString(),
    finding,
    deliveredAt: null,
  };
}

let server: http.Server;
let url: string;
let lines: string[];

beforeEach(async () => {
  lines = [];
  server = await startReceiver({ port: 0, secret: SECRET, print: (l) => lines.push(l), now: () => NOW });
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/bulkhead`;
});
afterEach(async () => {
  server.closeAllConnections();
  await stop(server);
});

async function post(headers: Record<string, string>, body: string): Promise<number> {
  const res = await fetch(url, { method: 'POST', headers, body, signal: AbortSignal.timeout(5_000) });
  await res.text();
  return res.status;
}

describe('demo webhook receiver', () => {
  it('accepts what the controller signs and prints one FIRING line per notification', async () => {
    const req = renderWebhook([notification('trigger')], { url, secret: SECRET }, new Date(NOW));
    expect(await post(req.headers, req.body)).toBe(200);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^FIRING staging → prod-db \(prod\): staging can reach prod-db .* \[dedup bulkhead:v1:abc #1\] webhook-id msg_[0-9a-f]{32}, signature verified$/);
  });

  it('prints a resolve as RESOLVED, saying what it fired for', async () => {
    const req = renderWebhook([notification('resolve')], { url, secret: SECRET }, new Date(NOW));
    expect(await post(req.headers, req.body)).toBe(200);
    expect(lines[0]).toMatch(/^RESOLVED staging → prod-db \(prod\): closed again \(it fired for: staging can reach/);
  });

  it('refuses a request signed with another secret, a tampered body, or a stale timestamp with 401', async () => {
    const other = renderWebhook([notification('trigger')], { url, secret: 'another secret' }, new Date(NOW));
    expect(await post(other.headers, other.body)).toBe(401);
    const good = renderWebhook([notification('trigger')], { url, secret: SECRET }, new Date(NOW));
    expect(await post(good.headers, good.body.replace('prod-db', 'prod-dc'))).toBe(401);
    const stale = renderWebhook([notification('trigger')], { url, secret: SECRET }, new Date(NOW - (TOLERANCE_S + 1) * 1000));
    expect(await post(stale.headers, stale.body)).toBe(401);
    expect(await post({ 'content-type': 'application/json' }, good.body)).toBe(401);
    expect(lines).toHaveLength(4);
    expect(lines.every((l) => l.startsWith('REFUSED (401)'))).toBe(true);
  });

  it('shows a retry (same webhook-id, fresh signature) once', async () => {
    const first = renderWebhook([notification('trigger')], { url, secret: SECRET }, new Date(NOW));
    const retry = renderWebhook([notification('trigger')], { url, secret: SECRET }, new Date(NOW + 5_000));
    expect(retry.headers['webhook-id']).toBe(first.headers['webhook-id']);
    expect(await post(first.headers, first.body)).toBe(200);
    expect(await post(retry.headers, retry.body)).toBe(200);
    expect(lines.filter((l) => l.startsWith('FIRING'))).toHaveLength(1);
    expect(lines[1]).toMatch(/^duplicate delivery of msg_/);
  });

  it('verify: any one of several space-separated signatures may match; other schemes are ignored', () => {
    const req = renderWebhook([notification('trigger')], { url, secret: SECRET }, new Date(NOW));
    const key = keyOf(SECRET);
    const headers = { ...req.headers, 'webhook-signature': `v1a,xyz v1,AAAA ${req.headers['webhook-signature']}` };
    expect(verify(headers, req.body, key, NOW / 1000)).toEqual({ ok: true });
    const onlyBad = { ...req.headers, 'webhook-signature': 'v1,AAAA' };
    expect(verify(onlyBad, req.body, key, NOW / 1000)).toEqual({ ok: false, reason: 'no v1 signature matches the secret' });
  });
});
