// The dead man's switch over real HTTP, with the delivery side's clock faked: beats every interval while healthy,
// none while unhealthy, an always-firing Alertmanager alert that expires three intervals after the last beat, and
// failing endpoints counted without ever throwing.
import http from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { systemClock } from '../../controller/delivery/clock.js';
import { httpPost } from '../../controller/delivery/lane.js';
import type { ReceiverRuntime, WatchdogRuntime } from '../../controller/receivers/config.js';
import { WATCHDOG_ALERTNAME, Watchdog, type WatchdogDeps } from '../../controller/watchdog.js';
import { fakeClock, type FakeClock } from '../helpers/fake-clock.js';
import { fakeAlertmanager, type FakeAlertmanager } from '../helpers/fake-receivers.js';
import { freePort } from '../helpers/free-port.js';
import { listen, stop } from '../helpers/listen.js';

const MIN = 60_000;
const START = Date.parse('2026-11-22T10:00:00Z');
const INSTANCE = '127.0.0.1:9470';

/** A heartbeat URL (healthchecks-style): records each request and answers `status`, or never answers while `hang`. */
interface Heartbeat {
  readonly url: string;
  readonly hits: { method: string; path: string; type: string | undefined; body: any }[];
  status: number;
  hang: boolean;
  close(): Promise<void>;
}

async function heartbeatServer(): Promise<Heartbeat> {
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      hb.hits.push({ method: req.method ?? '', path: req.url ?? '', type: req.headers['content-type'], body: text === '' ? undefined : JSON.parse(text) });
      if (hb.hang) return;
      res.writeHead(hb.status, { 'content-type': 'text/plain' });
      res.end('OK');
    });
  });
  const port = await listen(server);
  const hb: Heartbeat = { url: `http://127.0.0.1:${port}/ping/3f2a`, hits: [], status: 200, hang: false, close: () => stop(server) };
  return hb;
}

/** Polls (real time) until `probe` holds; fails after `timeoutMs`. */
async function waitFor(what: string, probe: () => boolean, timeoutMs = 3_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Harness {
  readonly clock: FakeClock;
  readonly logs: { level: string; msg: string; fields: Record<string, unknown> }[];
  healthy: boolean;
  receivers: ReceiverRuntime[];
  /** Requests the watchdog has made that have not settled yet. */
  inFlight: number;
  readonly watchdog: Watchdog;
}

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function harness(runtime: WatchdogRuntime, overrides: Partial<WatchdogDeps> = {}): Harness {
  const h = { clock: fakeClock(START), logs: [], healthy: true, receivers: [], inFlight: 0 } as unknown as Harness;
  const deps: WatchdogDeps = {
    clock: h.clock,
    // Real HTTP; the counter only tells the test when a beat has settled.
    post: (req, timeoutMs) => {
      h.inFlight++;
      return httpPost(req, timeoutMs).finally(() => h.inFlight--);
    },
    log: (level, msg, fields = {}) => void h.logs.push({ level, msg, fields }),
    healthy: () => h.healthy,
    receivers: () => h.receivers,
    instance: INSTANCE,
    ...overrides,
  };
  const watchdog = new Watchdog(runtime, deps);
  Object.assign(h, { watchdog });
  cleanups.push(() => watchdog.stop());
  return h;
}

/** One interval of fake time, then (real time) until the beat or failure it starts has settled. */
async function step(h: Harness, ms: number): Promise<void> {
  await h.clock.advance(ms);
  await waitFor('the beat to settle', () => h.inFlight === 0);
}

describe('watchdog, url mode', () => {
  it('beats at start and every interval while healthy, stops while unhealthy, resumes when healthy again', async () => {
    const hb = await heartbeatServer();
    cleanups.push(hb.close);
    const h = harness({ kind: 'url', url: hb.url, intervalMs: MIN });
    h.watchdog.start();
    await waitFor('the first beat', () => h.watchdog.beats === 1);
    expect(hb.hits).toEqual([{ method: 'POST', path: '/ping/3f2a', type: 'application/json', body: { status: 'ok', at: '2026-11-22T10:00:00.000Z', instance: INSTANCE } }]);
    // One timer, never a pile of them.
    expect(h.clock.pending()).toBe(1);

    for (let i = 1; i <= 3; i++) {
      await step(h, MIN);
      expect(h.watchdog.beats).toBe(1 + i);
      expect(hb.hits.at(-1)!.body.at).toBe(new Date(START + i * MIN).toISOString());
      expect(h.clock.pending()).toBe(1);
    }

    h.healthy = false;
    for (let i = 0; i < 3; i++) await step(h, MIN);
    await sleep(100); // a beat that was wrongly sent would have arrived by now
    expect(hb.hits).toHaveLength(4);
    expect(h.watchdog).toMatchObject({ beats: 4, failures: 0 });
    // Still scheduled: an unhealthy controller keeps checking.
    expect(h.clock.pending()).toBe(1);

    h.healthy = true;
    await step(h, MIN);
    expect(hb.hits).toHaveLength(5);
    expect(hb.hits.at(-1)!.body.at).toBe(new Date(START + 7 * MIN).toISOString());
    expect(h.watchdog).toMatchObject({ beats: 5, failures: 0 });
    expect(h.logs).toEqual([]);
  });

  it('stop() ends the schedule; update() moves the next beat to a new URL', async () => {
    const [a, b] = await Promise.all([heartbeatServer(), heartbeatServer()]);
    cleanups.push(a.close, b.close);
    const h = harness({ kind: 'url', url: a.url, intervalMs: MIN });
    h.watchdog.start();
    await waitFor('the first beat', () => h.watchdog.beats === 1);
    h.watchdog.update({ kind: 'url', url: b.url, intervalMs: MIN });
    await step(h, MIN);
    expect([a.hits.length, b.hits.length]).toEqual([1, 1]);

    await h.watchdog.stop();
    expect(h.clock.pending()).toBe(0);
    await h.clock.advance(10 * MIN);
    await sleep(100);
    expect([a.hits.length, b.hits.length]).toEqual([1, 1]);
  });
});

describe('watchdog, receiver mode (Alertmanager)', () => {
  let am: FakeAlertmanager;
  const amReceiver = (url: string): ReceiverRuntime => ({ name: 'am', type: 'alertmanager', rateLimit: { requests: 10, perMs: 1000 }, config: { url } });
  const labels = { alertname: WATCHDOG_ALERTNAME, severity: 'none', instance: INSTANCE };

  it('posts an always-firing alert that ends 3 intervals after each beat; when beats stop, Alertmanager sees it end', async () => {
    const h = harness({ kind: 'receiver', receiver: 'am', intervalMs: MIN });
    am = await fakeAlertmanager(() => h.clock.now());
    cleanups.push(am.close);
    // A trailing slash in the configured URL does not double the path.
    h.receivers = [amReceiver(`${am.url}/`)];
    h.watchdog.start();
    await waitFor('the first beat', () => h.watchdog.beats === 1);
    expect(am.rejected).toEqual([]);
    expect(am.received.map((r) => `${r.method} ${r.path}`)).toEqual(['POST /api/v2/alerts']);
    expect(am.accepted).toEqual([
      [
        {
          labels,
          annotations: { summary: expect.stringContaining('always fires') },
          startsAt: new Date(START).toISOString(),
          endsAt: new Date(START + 3 * MIN).toISOString(),
        },
      ],
    ]);
    expect(am.resolved(labels)).toBe(false);

    await step(h, MIN);
    // Same identity (labels), same startsAt, endsAt pushed forward.
    expect(am.accepted[1]).toEqual([expect.objectContaining({ labels, startsAt: new Date(START).toISOString(), endsAt: new Date(START + 4 * MIN).toISOString() })]);
    expect(am.alerts.size).toBe(1);

    // The controller stops being healthy: no more beats. One or two missed beats do not end the alert…
    h.healthy = false;
    await step(h, MIN);
    await step(h, MIN);
    expect(am.accepted).toHaveLength(2);
    expect(am.resolved(labels)).toBe(false);
    // …the third does, and that silence is what Alertmanager's dead-man's-switch route pages on.
    await step(h, MIN);
    expect(am.accepted).toHaveLength(2);
    expect(am.resolved(labels)).toBe(true);
    expect(h.watchdog).toMatchObject({ beats: 2, failures: 0 });
  });

  it('a receiver that is missing or not an alertmanager is a counted failure, and no request is made', async () => {
    const h = harness({ kind: 'receiver', receiver: 'am', intervalMs: MIN });
    am = await fakeAlertmanager(() => h.clock.now());
    cleanups.push(am.close);
    h.receivers = [{ name: 'am', type: 'console', rateLimit: { requests: 1, perMs: 1000 } }];
    h.watchdog.start();
    await step(h, 0);
    h.receivers = [];
    await step(h, MIN);
    expect(h.watchdog).toMatchObject({ beats: 0, failures: 2 });
    expect(h.logs.map((l) => [l.level, l.msg, l.fields.reason])).toEqual([
      ['warn', 'watchdog beat failed', 'receiver am is not an alertmanager receiver in the plan in force'],
      ['warn', 'watchdog beat failed', 'receiver am is not an alertmanager receiver in the plan in force'],
    ]);
    // A reload that brings it back: the next interval beats.
    h.receivers = [amReceiver(am.url)];
    await step(h, MIN);
    expect(h.watchdog).toMatchObject({ beats: 1, failures: 2 });
    expect(am.received).toHaveLength(1);
  });
});

describe('watchdog, failing endpoints', () => {
  it('an HTTP error and a refused connection are counted and logged, never thrown, and the next interval tries again', async () => {
    const hb = await heartbeatServer();
    cleanups.push(hb.close);
    hb.status = 500;
    const h = harness({ kind: 'url', url: hb.url, intervalMs: MIN });
    h.watchdog.start();
    await waitFor('the first failure', () => h.watchdog.failures === 1);
    expect(h.logs).toEqual([{ level: 'warn', msg: 'watchdog beat failed', fields: { reason: 'HTTP 500', failures: 1 } }]);

    const closed = `http://127.0.0.1:${await freePort()}/ping`;
    h.watchdog.update({ kind: 'url', url: closed, intervalMs: MIN });
    await step(h, MIN);
    expect(h.watchdog).toMatchObject({ beats: 0, failures: 2 });
    expect(h.logs[1]!.fields.reason).toMatch(/^network error: ECONNREFUSED$/);
    // The URL may carry a token: it is in no log line.
    expect(JSON.stringify(h.logs)).not.toContain('/ping');

    hb.status = 200;
    h.watchdog.update({ kind: 'url', url: hb.url, intervalMs: MIN });
    await step(h, MIN);
    expect(h.watchdog).toMatchObject({ beats: 1, failures: 2 });
    expect(hb.hits).toHaveLength(2);
  });

  it('a hung endpoint times out within the interval, and no second request piles up behind it', async () => {
    const hb = await heartbeatServer();
    cleanups.push(hb.close);
    hb.hang = true;
    // The request timeout is min(10 s, interval): a 400 ms interval bounds it to 400 ms of real time.
    const h = harness({ kind: 'url', url: hb.url, intervalMs: 400 });
    const started = Date.now();
    h.watchdog.start();
    await waitFor('the request to arrive', () => hb.hits.length === 1);
    await h.clock.advance(400); // the next tick finds the first request still in flight: it skips
    await sleep(50);
    expect(hb.hits).toHaveLength(1);
    await waitFor('the timeout to be counted', () => h.watchdog.failures === 1, 5_000);
    expect(Date.now() - started).toBeLessThan(3_000);
    expect(h.logs[0]!.fields.reason).toMatch(/^network error: /);

    hb.hang = false;
    await step(h, 400);
    expect(h.watchdog).toMatchObject({ beats: 1, failures: 1 });
  });
});

describe('watchdog on the system clock', () => {
  // setTimeout turns any delay above 2^31-1 ms (24.8 days) into 1 ms; a watchdog interval, a repeat_interval or a
  // 30-day silence is longer than that, so systemClock chains timers.
  it('an interval longer than setTimeout can hold still waits that long', async () => {
    const hb = await heartbeatServer();
    cleanups.push(hb.close);
    const h = harness({ kind: 'url', url: hb.url, intervalMs: 25 * 86_400_000 }, { clock: systemClock });
    h.watchdog.start();
    // Stop at the second request if it comes (each premature tick prints a TimeoutOverflowWarning: keep them few).
    await waitFor('a second request', () => hb.hits.length >= 2, 300).catch(() => undefined);
    await h.watchdog.stop();
    expect(hb.hits).toHaveLength(1);
  });
});
