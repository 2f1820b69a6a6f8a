import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runFrom, type ProbeLoader } from '../../agent/engine.js';
import type { Resolution } from '../../agent/paths.js';
import type { ProbeResult } from '../../core/outcome.js';
import { parsePlanText } from '../../core/plan-load.js';
import type { ProbeFn, ProbeRequest } from '../../probes/types.js';
import { buildReport } from '../../cli/report.js';

const planOf = (yaml: string) => parsePlanText(yaml, 'engine.yaml');
const result = (outcome: ProbeResult['outcome']): ProbeResult => ({ outcome, layer: 'tcp', evidence: {}, timings: { totalMs: 0 } });

/** A loader whose every kind is the given fake probe: the engine's seam for tests. */
function loaderOf(fn: ProbeFn): ProbeLoader {
  const load = async () => fn as never;
  return { dns: load, tcp: load, http: load, postgres: load, redis: load };
}

function manyTargets(n: number, extra = ''): string {
  const targets = Array.from({ length: n }, (_, i) => `  - { name: t${i}, env: prod, probe: tcp, host: 198.18.${Math.floor(i / 250)}.${(i % 250) + 1}, port: 80 }`);
  return `version: 1\nenvironments: { prod: {}, staging: {} }\ntargets:\n${targets.join('\n')}\n${extra}`;
}

describe('engine scheduling', () => {
  it('never has more attempts in flight than the concurrency', async () => {
    let inFlight = 0;
    let peak = 0;
    const probe: ProbeFn = async () => {
      inFlight++;
      peak = Math.max(peak, inFlight);
      await new Promise((r) => setTimeout(r, 5));
      inFlight--;
      return result('refused');
    };
    const { plan } = planOf(manyTargets(60));
    const run = await runFrom(plan, 'staging', { probes: loaderOf(probe), schedule: { concurrency: 7, attempts: 1 } });
    expect(run.observations).toHaveLength(60);
    expect(peak).toBe(7);
  });

  it('retries only non-open attempts, and one open attempt makes the path open', async () => {
    const sequences: Record<string, ProbeResult['outcome'][]> = {
      '198.18.0.1': ['filtered', 'open', 'refused'],
      '198.18.0.2': ['open', 'refused', 'refused'],
      '198.18.0.3': ['refused', 'refused', 'refused'],
      '198.18.0.4': ['error', 'filtered', 'error'],
    };
    const calls: Record<string, number> = {};
    const probe: ProbeFn = async (req) => {
      const i = (calls[req.address] = (calls[req.address] ?? 0) + 1) - 1;
      return result(sequences[req.address]![i]!);
    };
    const { plan } = planOf(manyTargets(4));
    const run = await runFrom(plan, 'staging', { probes: loaderOf(probe), schedule: { attempts: 3 } });
    const by = Object.fromEntries(run.observations.map((o) => [o.address, o]));
    expect([by['198.18.0.1']!.outcome, by['198.18.0.1']!.attempts]).toEqual(['open', 2]);
    expect([by['198.18.0.2']!.outcome, by['198.18.0.2']!.attempts]).toEqual(['open', 1]);
    expect([by['198.18.0.3']!.outcome, by['198.18.0.3']!.attempts]).toEqual(['refused', 3]);
    // a real blocked answer beats a local error
    expect([by['198.18.0.4']!.outcome, by['198.18.0.4']!.attempts]).toEqual(['filtered', 3]);
  });

  it('aborts each attempt at the timeout with a TimeoutError reason', async () => {
    const reasons: string[] = [];
    const probe: ProbeFn = (_req, signal) =>
      new Promise((resolve) => {
        signal.addEventListener('abort', () => {
          reasons.push((signal.reason as Error).name);
          resolve(result('filtered'));
        });
      });
    const { plan } = planOf(manyTargets(3));
    const started = Date.now();
    const run = await runFrom(plan, 'staging', { probes: loaderOf(probe), schedule: { timeoutMs: 150, attempts: 2, concurrency: 3 } });
    const elapsed = Date.now() - started;
    expect(reasons).toEqual(Array(6).fill('TimeoutError'));
    expect(run.observations.every((o) => o.outcome === 'filtered' && o.attempts === 2)).toBe(true);
    expect(elapsed).toBeGreaterThanOrEqual(295);
  });

  it('a cancelled run ends promptly and its attempts are errors, not blocked', async () => {
    const probe: ProbeFn = (_req, signal) =>
      new Promise((resolve) => signal.addEventListener('abort', () => resolve({ ...result('error'), evidence: { errno: 'ABORTED' } })));
    const { plan } = planOf(manyTargets(10));
    const controller = new AbortController();
    setTimeout(() => controller.abort(new DOMException('stop', 'AbortError')), 50);
    const run = await runFrom(plan, 'staging', { probes: loaderOf(probe), signal: controller.signal, schedule: { timeoutMs: 10_000, concurrency: 2 } });
    expect(run.observations.every((o) => o.outcome === 'error')).toBe(true);
  });

  it('spreads starts over the stagger window', async () => {
    const starts: number[] = [];
    const probe: ProbeFn = async () => {
      starts.push(Date.now());
      return result('refused');
    };
    const { plan } = planOf(manyTargets(10));
    await runFrom(plan, 'staging', { probes: loaderOf(probe), schedule: { staggerMs: 400, concurrency: 10, attempts: 1 } });
    const spread = Math.max(...starts) - Math.min(...starts);
    expect(spread).toBeGreaterThanOrEqual(300); // the 10th start is due at 9/10 of the window
    expect(spread).toBeLessThan(1000);
  });
});

describe('paths', () => {
  const yaml = `
version: 1
environments: { prod: {}, staging: {} }
targets:
  - { name: stg-web, env: staging, probe: tcp, host: 198.18.9.9, port: 80 }
  - { name: prod-db, env: prod, probe: postgres, host: db.prod.test, addresses: [198.18.1.9] }
  - { name: prod-gone, env: prod, probe: redis, host: gone.prod.test, addresses: [198.18.1.8] }
  - { name: prod-dark, env: prod, probe: tcp, host: dark.prod.test, port: 22 }
  - { name: prod-api, env: prod, probe: http, url: "https://api.prod.test:8443/x" }
`;
  const resolutions: Record<string, Resolution> = {
    'db.prod.test': { ok: true, addresses: ['198.18.1.1', '198.18.1.9', '198.18.1.2'], ms: 1 },
    'gone.prod.test': { ok: false, outcome: 'unresolved', code: 'NXDOMAIN', rcode: 'NXDOMAIN', ms: 1 },
    'dark.prod.test': { ok: false, outcome: 'error', code: 'TimeoutError', ms: 1 },
    'api.prod.test': { ok: true, addresses: ['198.18.1.3'], ms: 1 },
  };
  const seen: ProbeRequest[] = [];
  const probe: ProbeFn = async (req) => {
    seen.push(req);
    return result('refused');
  };

  it('probes each declared or resolved address as its own path, controls first, the name too when it does not resolve', async () => {
    const { plan } = planOf(yaml);
    const run = await runFrom(plan, 'staging', { probes: loaderOf(probe), resolve: async (h) => resolutions[h]! });
    const rows = run.observations.map((o) => [o.target, o.address, o.port, o.outcome]);
    expect(rows).toEqual([
      ['stg-web', '198.18.9.9', 80, 'refused'],
      ['prod-db', '198.18.1.1', 5432, 'refused'],
      ['prod-db', '198.18.1.9', 5432, 'refused'],
      ['prod-db', '198.18.1.2', 5432, 'refused'],
      ['prod-gone', null, 6379, 'unresolved'],
      ['prod-gone', '198.18.1.8', 6379, 'refused'],
      ['prod-dark', null, 22, 'error'],
      ['prod-api', '198.18.1.3', 8443, 'refused'],
    ]);
    expect(seen.find((r) => r.target.name === 'prod-api')?.host).toBe('api.prod.test');
    expect(run.observations.find((o) => o.target === 'prod-gone' && o.address === null)?.evidence.errno).toBe('NXDOMAIN');
  });

  it('when controls fail, blocked results are inconclusive and the audit says so', async () => {
    const { plan } = planOf(yaml);
    const loaded = planOf(yaml);
    const run = await runFrom(plan, 'staging', { probes: loaderOf(probe), resolve: async (h) => resolutions[h]! });
    const report = buildReport(loaded, run, new Date(), 'test');
    expect(report.summary.result).toBe('inconclusive');
    expect(report.summary.controls).toEqual({ total: 1, failed: ['stg-web'] });
    expect(report.observations.filter((o) => o.env === 'prod').every((o) => o.verdict === 'inconclusive')).toBe(true);
  });
});

describe('dns leak networks', () => {
  it("passes the other environments' networks and the target's own leak_networks to the DNS probe", async () => {
    const seen: ProbeRequest[] = [];
    const probe: ProbeFn = async (req) => {
      seen.push(req);
      return result('unresolved');
    };
    const { plan } = planOf(`
version: 1
environments: { prod: { networks: [198.18.10.0/24] }, staging: { networks: [198.18.20.0/24] } }
targets:
  - { name: prod-names, env: prod, probe: dns, query: db.prod.test, resolver: 198.18.20.2, leak_networks: [198.19.0.0/16] }
`);
    await runFrom(plan, 'staging', { probes: loaderOf(probe) });
    expect(seen[0]!.leakNetworks).toEqual([
      { env: 'prod', cidr: '198.18.10.0/24' },
      { env: 'prod', cidr: '198.19.0.0/16' },
    ]);
  });
});

describe('engine against real sockets', () => {
  let open: net.Server;
  let openPort: number;
  let closedPort: number;
  beforeAll(async () => {
    open = net.createServer((s) => s.destroy());
    await new Promise<void>((r) => open.listen(0, '127.0.0.1', r));
    openPort = (open.address() as net.AddressInfo).port;
    const tmp = net.createServer();
    await new Promise<void>((r) => tmp.listen(0, '127.0.0.1', r));
    closedPort = (tmp.address() as net.AddressInfo).port;
    await new Promise((r) => tmp.close(r));
  });
  afterAll(() => new Promise((r) => open.close(r)));

  it('classifies a real open and a real closed port and judges them', async () => {
    const loaded = planOf(`
version: 1
environments: { prod: {}, staging: {} }
targets:
  - { name: stg-self, env: staging, probe: tcp, host: 127.0.0.1, port: ${openPort} }
  - { name: prod-open, env: prod, probe: tcp, host: 127.0.0.1, port: ${openPort} }
  - { name: prod-closed, env: prod, probe: tcp, host: 127.0.0.1, port: ${closedPort} }
schedule: { timeout: 1s }
`);
    const run = await runFrom(loaded.plan, 'staging');
    const report = buildReport(loaded, run, new Date(), 'test');
    const by = Object.fromEntries(report.observations.map((o) => [o.target, o]));
    expect(by['prod-open']).toMatchObject({ outcome: 'open', verdict: 'violation', attempts: 1 });
    expect(by['prod-closed']).toMatchObject({ outcome: 'refused', verdict: 'pass', attempts: 2 });
    expect(by['stg-self']).toMatchObject({ outcome: 'open', verdict: 'pass', expectation: 'control' });
    expect(by['prod-open']!.evidence.localAddress).toBe('127.0.0.1');
    expect(report.summary.result).toBe('violations');
  });
});

describe('listeners on the caller’s signal', () => {
  it('many concurrent name lookups and staggered starts add one listener to the caller’s signal, and no leak warning', async () => {
    const hosts = Array.from({ length: 30 }, (_, i) => `h${i}.prod.test`);
    const yaml = `
version: 1
environments: { prod: {}, staging: {} }
targets:
${hosts.map((h, i) => `  - { name: t${i}, env: prod, probe: tcp, host: ${h}, port: 22 }`).join('\n')}
schedule: { concurrency: 30, stagger: 200ms, attempts: 1 }
`;
    const caller = new AbortController();
    let listening = 0;
    const add = caller.signal.addEventListener.bind(caller.signal);
    caller.signal.addEventListener = ((...args: Parameters<typeof add>) => {
      if (args[0] === 'abort') listening++;
      return add(...args);
    }) as typeof add;
    const warnings: Error[] = [];
    const onWarning = (w: Error) => void warnings.push(w);
    process.on('warning', onWarning);
    try {
      // Each lookup listens on the signal it is given, as the real resolvers do.
      const resolve = (_h: string, signal: AbortSignal) =>
        new Promise<Resolution>((done) => {
          const onAbort = () => done({ ok: false, outcome: 'error', code: 'AbortError', ms: 0 });
          signal.addEventListener('abort', onAbort, { once: true });
          setTimeout(() => {
            signal.removeEventListener('abort', onAbort);
            done({ ok: true, addresses: ['198.18.1.1'], ms: 1 });
          }, 20);
        });
      const run = await runFrom(planOf(yaml).plan, 'staging', { probes: loaderOf(async () => result('refused')), resolve, signal: caller.signal });
      expect(run.observations).toHaveLength(30);
      await new Promise((r) => setImmediate(r));
    } finally {
      process.off('warning', onWarning);
    }
    expect(listening).toBe(1);
    expect(warnings.filter((w) => w.name === 'MaxListenersExceededWarning')).toEqual([]);
  });
});
