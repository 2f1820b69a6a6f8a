// The dns probe against a real dns-packet responder on 127.0.0.1 (and the real dnsmasq when installed).
import { spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import dnsPacket from 'dns-packet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ProbeResult } from '../../core/outcome.js';
import type { TargetOf } from '../../core/plan.js';
import { queryDns } from '../../probes/dns-query.js';
import { probeDns } from '../../probes/dns.js';
import type { ProbeRequest } from '../../probes/types.js';
import { startDnsServer, type DnsServer, type Zone } from '../helpers/dns-server.js';
import { findExecutable, unavailable } from '../helpers/need.js';

const LOOPBACK = '127.0.0.1';
const MANY_TXT = Array.from({ length: 40 }, (_, i) => ({ type: 'TXT' as const, data: `record-${String(i).padStart(2, '0')}-${'x'.repeat(24)}` }));

const ZONE: Zone = {
  'db.prod.test': [
    { type: 'A', data: '198.18.0.5', ttl: 30 },
    { type: 'A', data: '198.18.0.6', ttl: 30 },
  ],
  'alias.prod.test': [{ type: 'CNAME', data: 'db.prod.test' }],
  'dangling.prod.test': [{ type: 'CNAME', data: 'gone.prod.test' }],
  'spf.prod.test': [{ type: 'TXT', data: ['v=spf1 ', 'ip4:198.18.0.0/15 ', '-all'] }],
  'v6.prod.test': [{ type: 'AAAA', data: '2001:db8::5' }],
  'mixed.prod.test': [
    { type: 'A', data: '198.18.0.7' },
    { type: 'A', data: '198.19.4.4' },
    { type: 'A', data: '203.0.113.9' },
  ],
  'nx.prod.test': 'nxdomain',
  'refused.prod.test': 'refused',
  'servfail.prod.test': 'servfail',
  'notimp.prod.test': 'notimp',
  'empty.prod.test': 'nodata',
  'silent.prod.test': 'silent',
  'wrong-id.prod.test': 'wrong-id',
  'tc.prod.test': { truncate: [{ type: 'A', data: '198.18.0.8' }] },
  'many.prod.test': MANY_TXT,
};

const target = (query: string, type: TargetOf<'dns'>['type'] = 'A'): TargetOf<'dns'> => ({ name: 'prod-names', env: 'prod', probe: 'dns', query, type });

const request = (port: number, query: string, type: TargetOf<'dns'>['type'] = 'A', extra: Partial<ProbeRequest<'dns'>> = {}): ProbeRequest<'dns'> => ({
  target: target(query, type),
  address: LOOPBACK,
  port,
  ...extra,
});

/** Runs the probe and checks the result against the strict outcome schema, as the wire would. */
async function probe(req: ProbeRequest<'dns'>, signal: AbortSignal = AbortSignal.timeout(3000)): Promise<ProbeResult> {
  return ProbeResult.parse(await probeDns(req, signal));
}

/** A port on 127.0.0.1 that nothing listens on, UDP or TCP, at the moment of asking. */
async function closedPort(): Promise<number> {
  const socket = dgram.createSocket('udp4');
  await new Promise<void>((done) => socket.bind(0, LOOPBACK, () => done()));
  const { port } = socket.address();
  await new Promise<void>((done) => socket.close(() => done()));
  return port;
}

/** A UDP-only responder that always sets TC, on a port whose TCP side was just released: a TCP retry is refused. */
async function udpOnlyTruncating(records: number): Promise<{ port: number; close(): Promise<void> }> {
  const holder = net.createServer();
  await new Promise<void>((done) => holder.listen(0, LOOPBACK, () => done()));
  const port = (holder.address() as net.AddressInfo).port;
  const udp = dgram.createSocket('udp4');
  await new Promise<void>((done) => udp.bind(port, LOOPBACK, () => done()));
  await new Promise<void>((done) => holder.close(() => done()));
  udp.on('message', (message, from) => {
    const query = dnsPacket.decode(message);
    const answers = Array.from({ length: records }, () => ({ name: 'db.prod.test', type: 'A' as const, ttl: 5, data: '198.18.0.9' }));
    const reply = dnsPacket.encode({ type: 'response', id: query.id, flags: dnsPacket.TRUNCATED_RESPONSE, questions: query.questions, answers });
    udp.send(reply, from.port, from.address);
  });
  return { port, close: () => new Promise<void>((done) => udp.close(() => done())) };
}

const activeHandles = () => (process as unknown as { _getActiveHandles(): unknown[] })._getActiveHandles().length;

describe('probeDns against a dns-packet responder', () => {
  let server: DnsServer;
  beforeAll(async () => {
    server = await startDnsServer(ZONE);
  });
  afterAll(async () => {
    await server?.close();
  });

  it.each([
    { query: 'db.prod.test', type: 'A', answers: [['db.prod.test', 'A', '198.18.0.5'], ['db.prod.test', 'A', '198.18.0.6']] },
    { query: 'alias.prod.test', type: 'A', answers: [['alias.prod.test', 'CNAME', 'db.prod.test'], ['db.prod.test', 'A', '198.18.0.5'], ['db.prod.test', 'A', '198.18.0.6']] },
    { query: 'dangling.prod.test', type: 'A', answers: [['dangling.prod.test', 'CNAME', 'gone.prod.test']] },
    { query: 'spf.prod.test', type: 'TXT', answers: [['spf.prod.test', 'TXT', 'v=spf1 ip4:198.18.0.0/15 -all']] },
    { query: 'v6.prod.test', type: 'AAAA', answers: [['v6.prod.test', 'AAAA', '2001:db8::5']] },
  ] as const)('$query $type with records is open over UDP', async ({ query, type, answers }) => {
    const result = await probe(request(server.port, query, type));
    expect(result.outcome).toBe('open');
    expect(result.layer).toBe('dns');
    expect(result.evidence.dns).toMatchObject({ resolver: `127.0.0.1:${server.port}`, query, qtype: type, rcode: 'NOERROR', transport: 'udp', truncated: false });
    expect(result.evidence.dns?.answers.map((a) => [a.name, a.type, a.data])).toEqual(answers);
    expect(result.evidence.remoteAddress).toBe(LOOPBACK);
    expect(result.evidence.remotePort).toBe(server.port);
    expect(result.evidence.localAddress).toBe(LOOPBACK);
    expect(result.evidence.localPort).toBeGreaterThan(0);
    expect(result.evidence.errno).toBeUndefined();
    expect(result.timings.firstByteMs).toBeGreaterThanOrEqual(0);
    expect(result.timings.totalMs).toBeGreaterThanOrEqual(result.timings.firstByteMs!);
  });

  it('records the TTL of each answer', async () => {
    const result = await probe(request(server.port, 'db.prod.test'));
    expect(result.evidence.dns?.answers.map((a) => a.ttl)).toEqual([30, 30]);
  });

  it.each([
    { query: 'nx.prod.test', type: 'A', rcode: 'NXDOMAIN' },
    { query: 'unknown.prod.test', type: 'A', rcode: 'NXDOMAIN' },
    { query: 'refused.prod.test', type: 'A', rcode: 'REFUSED' },
    { query: 'servfail.prod.test', type: 'A', rcode: 'SERVFAIL' },
    { query: 'notimp.prod.test', type: 'A', rcode: 'NOTIMP' },
    { query: 'empty.prod.test', type: 'A', rcode: 'NOERROR' },
    // The name exists with A records but has no AAAA: NODATA.
    { query: 'db.prod.test', type: 'AAAA', rcode: 'NOERROR' },
  ] as const)('$query $type ($rcode, no records) is unresolved', async ({ query, type, rcode }) => {
    const result = await probe(request(server.port, query, type));
    expect(result.outcome).toBe('unresolved');
    expect(result.layer).toBe('dns');
    expect(result.evidence.dns).toMatchObject({ query, qtype: type, rcode, transport: 'udp', answers: [] });
    expect(result.evidence.errno).toBeUndefined();
    expect(result.evidence.detail).toContain(rcode);
  });

  it('a resolver that never answers is an error (TimeoutError) at the timeout, not filtered', async () => {
    const before = server.queries.filter((q) => q.name === 'silent.prod.test').length;
    const started = performance.now();
    const result = await probe(request(server.port, 'silent.prod.test'), AbortSignal.timeout(300));
    const elapsed = performance.now() - started;
    expect(result.outcome).toBe('error');
    expect(result.layer).toBe('dns');
    expect(result.evidence.errno).toBe('TimeoutError');
    expect(result.evidence.dns).toMatchObject({ query: 'silent.prod.test', transport: 'udp', answers: [] });
    expect(result.evidence.dns?.rcode).toBeUndefined();
    expect(elapsed).toBeGreaterThanOrEqual(250);
    expect(elapsed).toBeLessThan(1500);
    // The query did reach the server: silence, not a send failure.
    expect(server.queries.filter((q) => q.name === 'silent.prod.test').length).toBe(before + 1);
  });

  it.each([
    ['silent', 'filtered', 'TimeoutError'],
    ['closed', 'refused', 'ECONNREFUSED'],
  ] as const)('a %s resolver inside another environment\'s network is the path under test: %s, not error', async (kind, outcome, errno) => {
    // The resolver (127.0.0.1 here) sits in prod's network: a target naming prod's resolver probes the path to it.
    const leakNetworks = [{ env: 'prod', cidr: '127.0.0.0/8' }];
    const port = kind === 'silent' ? server.port : await closedPort();
    const result = await probe(request(port, kind === 'silent' ? 'silent.prod.test' : 'db.prod.test', 'A', { leakNetworks }), AbortSignal.timeout(300));
    expect(result).toMatchObject({ outcome, layer: 'dns', evidence: { errno } });
    expect(result.evidence.detail).toContain("in prod's network 127.0.0.0/8, so the path to it is blocked");
  });

  it('a truncated UDP reply is repeated over TCP and the full answer is open', async () => {
    const result = await probe(request(server.port, 'tc.prod.test'));
    expect(result.outcome).toBe('open');
    expect(result.evidence.dns).toMatchObject({ transport: 'tcp', truncated: true, rcode: 'NOERROR' });
    expect(result.evidence.dns?.answers.map((a) => a.data)).toEqual(['198.18.0.8']);
    expect(result.evidence.detail).toContain('TCP');
    const seen = server.queries.filter((q) => q.name === 'tc.prod.test').map((q) => q.transport);
    expect(seen).toEqual(['udp', 'tcp']);
  });

  it('a closed resolver port is an error (ECONNREFUSED), fast', async () => {
    const port = await closedPort();
    const started = performance.now();
    const result = await probe(request(port, 'db.prod.test'), AbortSignal.timeout(5000));
    expect(result.outcome).toBe('error');
    expect(result.evidence.errno).toBe('ECONNREFUSED');
    expect(result.evidence.remotePort).toBe(port);
    expect(result.evidence.dns).toMatchObject({ resolver: `127.0.0.1:${port}`, transport: 'udp', answers: [] });
    expect(performance.now() - started).toBeLessThan(1000);
  });

  it('flags A answers inside another environment\'s network, with that environment', async () => {
    const leakNetworks = [
      { env: 'prod', cidr: '198.18.0.0/24' },
      { env: 'staging', cidr: '198.19.0.0/16' },
    ];
    const result = await probe(request(server.port, 'mixed.prod.test', 'A', { leakNetworks }));
    expect(result.outcome).toBe('open');
    expect(result.evidence.dns?.leaks).toEqual([
      { address: '198.18.0.7', env: 'prod', network: '198.18.0.0/24' },
      { address: '198.19.4.4', env: 'staging', network: '198.19.0.0/16' },
    ]);
    expect(result.evidence.dns?.answers).toHaveLength(3);
  });

  it('flags AAAA answers too, and records no leaks when no answer is inside the networks', async () => {
    const v6 = await probe(request(server.port, 'v6.prod.test', 'AAAA', { leakNetworks: [{ env: 'dev', cidr: '2001:db8::/32' }] }));
    expect(v6.evidence.dns?.leaks).toEqual([{ address: '2001:db8::5', env: 'dev', network: '2001:db8::/32' }]);
    const none = await probe(request(server.port, 'db.prod.test', 'A', { leakNetworks: [{ env: 'dev', cidr: '10.30.0.0/16' }] }));
    expect(none.outcome).toBe('open');
    expect(none.evidence.dns).not.toHaveProperty('leaks');
  });

  it('a cancelled run (plain abort) is an error ABORTED, promptly', async () => {
    const controller = new AbortController();
    const started = performance.now();
    const pending = probe(request(server.port, 'silent.prod.test'), controller.signal);
    setTimeout(() => controller.abort(), 50);
    const result = await pending;
    expect(result.outcome).toBe('error');
    expect(result.evidence.errno).toBe('ABORTED');
    expect(performance.now() - started).toBeLessThan(1000);
  });

  it('an abort before the socket is even connected still settles as ABORTED', async () => {
    const controller = new AbortController();
    const pending = probe(request(server.port, 'db.prod.test'), controller.signal);
    controller.abort();
    expect((await pending).evidence.errno).toBe('ABORTED');
    const already = await probe(request(server.port, 'db.prod.test'), controller.signal);
    expect(already.evidence.errno).toBe('ABORTED');
  });

  it('a reply with the wrong id is ignored, and reported as BAD_REPLY when nothing better comes', async () => {
    const result = await probe(request(server.port, 'wrong-id.prod.test'), AbortSignal.timeout(300));
    expect(result.outcome).toBe('error');
    expect(result.evidence.errno).toBe('BAD_REPLY');
    expect(result.evidence.detail).toMatch(/does not match query id/);
  });

  it('does not leak sockets over 200 sequential queries (UDP and TCP)', async () => {
    // Warm up once so lazily created handles are not counted as a leak.
    await probe(request(server.port, 'tc.prod.test'));
    const before = activeHandles();
    for (let i = 0; i < 200; i++) {
      const query = i % 10 === 0 ? 'tc.prod.test' : i % 3 === 0 ? 'nx.prod.test' : 'db.prod.test';
      const result = await probe(request(server.port, query));
      expect(result.outcome).not.toBe('error');
    }
    // Closing is asynchronous: give handles a bounded moment to go away.
    const deadline = performance.now() + 1000;
    while (activeHandles() - before > 2 && performance.now() < deadline) await new Promise((done) => setTimeout(done, 20));
    const grown = activeHandles() - before;
    expect(grown).toBeLessThanOrEqual(2);
  });
});

describe('queryDns', () => {
  it('reassembles a multi-record TCP answer delivered in pieces after a truncated UDP reply', async () => {
    const server = await startDnsServer({ 'many.prod.test': MANY_TXT }, { tcpChunkBytes: 100 });
    try {
      const result = await queryDns({ name: 'many.prod.test', type: 'TXT', address: LOOPBACK, port: server.port, signal: AbortSignal.timeout(3000) });
      expect(result.kind).toBe('answer');
      if (result.kind !== 'answer') return;
      expect(result).toMatchObject({ rcode: 'NOERROR', transport: 'tcp', truncated: true });
      expect(result.answers.map((a) => a.data)).toEqual(MANY_TXT.map((r) => r.data));
      expect(result.answers.every((a) => a.type === 'TXT' && a.name === 'many.prod.test' && a.ttl === 60)).toBe(true);
      expect(server.queries.map((q) => q.transport)).toEqual(['udp', 'tcp']);
    } finally {
      await server.close();
    }
  });

  it.each([
    { records: 0, expected: { kind: 'failed', code: 'ECONNREFUSED', transport: 'tcp' } },
    // dnsmasq does this: a truncated UDP reply that still carries the records that fitted.
    { records: 1, expected: { kind: 'answer', rcode: 'NOERROR', transport: 'udp', truncated: true, answers: [{ name: 'db.prod.test', type: 'A', ttl: 5, data: '198.18.0.9' }] } },
  ])('when the TCP retry is refused, a truncated UDP reply with $records record(s) gives $expected.kind', async ({ records, expected }) => {
    const responder = await udpOnlyTruncating(records);
    try {
      const result = await queryDns({ name: 'db.prod.test', type: 'A', address: LOOPBACK, port: responder.port, signal: AbortSignal.timeout(3000) });
      expect(result).toMatchObject(expected);
    } finally {
      await responder.close();
    }
  });

  it('refuses to send a query it cannot encode, or to a resolver that is not an IP address', async () => {
    const signal = AbortSignal.timeout(1000);
    expect(await queryDns({ name: 'db.prod.test', type: 'NOPE', address: LOOPBACK, port: 53, signal })).toMatchObject({ kind: 'failed', code: 'EINVAL' });
    expect(await queryDns({ name: 'db.prod.test', type: 'A', address: 'resolver.example', port: 53, signal })).toMatchObject({ kind: 'failed', code: 'EINVAL' });
  });
});

const dnsmasqPath = findExecutable('dnsmasq', ['/usr/sbin']);
const noDnsmasq = unavailable('dnsmasq', dnsmasqPath === undefined, 'apt-get install dnsmasq-base');

describe.skipIf(noDnsmasq)('probeDns against the real dnsmasq', () => {
  let child: ChildProcess | undefined;
  let dir = '';
  let port = 0;
  let stderr = '';

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'bulkhead-dnsmasq-'));
    // A port free for both UDP and TCP: borrow the test responder's, then hand it to dnsmasq.
    const spare = await startDnsServer({});
    port = spare.port;
    await spare.close();
    const bigTxt = MANY_TXT.map((r) => `--txt-record=big.test,${r.data}`);
    child = spawn(
      dnsmasqPath!,
      [
        '--keep-in-foreground',
        '--no-daemon',
        '--conf-file=/dev/null',
        '--no-resolv',
        '--no-hosts',
        `--port=${port}`,
        '--listen-address=127.0.0.1',
        '--bind-interfaces',
        '--local=/test/',
        '--host-record=db.test,198.18.0.5',
        '--cname=alias.test,db.test',
        ...bigTxt,
        // dnsmasq 2.90 does not write this file in --no-daemon mode; the child's own pid is what we stop.
        `--pid-file=${join(dir, 'pid')}`,
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    let exited = false;
    child.once('exit', () => (exited = true));
    const deadline = performance.now() + 10_000;
    for (;;) {
      if (exited) throw new Error(`dnsmasq exited: ${stderr}`);
      const ready = await queryDns({ name: 'db.test', type: 'A', address: LOOPBACK, port, signal: AbortSignal.timeout(200) });
      if (ready.kind === 'answer') break;
      if (performance.now() > deadline) throw new Error(`dnsmasq did not answer within 10 s: ${stderr}`);
      await new Promise((done) => setTimeout(done, 50));
    }
  });

  afterAll(async () => {
    const pid = child?.pid;
    if (pid !== undefined && child?.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((done) => child!.once('exit', () => done()));
      process.kill(pid, 'SIGTERM');
      const timer = setTimeout(() => process.kill(pid, 'SIGKILL'), 3000);
      await exited;
      clearTimeout(timer);
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('db.test A is open with 198.18.0.5', async () => {
    const result = await probe(request(port, 'db.test'));
    expect(result.outcome).toBe('open');
    expect(result.evidence.dns).toMatchObject({ rcode: 'NOERROR', transport: 'udp', truncated: false });
    expect(result.evidence.dns?.answers.map((a) => [a.name, a.type, a.data])).toEqual([['db.test', 'A', '198.18.0.5']]);
  });

  it.each([
    { query: 'nx.test', type: 'A', rcode: 'NXDOMAIN' },
    { query: 'db.test', type: 'AAAA', rcode: 'NOERROR' },
    // No upstream: dnsmasq refuses names outside its local domains, without sending anything anywhere.
    { query: 'outside.example', type: 'A', rcode: 'REFUSED' },
  ] as const)('$query $type is unresolved ($rcode)', async ({ query, type, rcode }) => {
    const result = await probe(request(port, query, type));
    expect(result.outcome).toBe('unresolved');
    expect(result.evidence.dns).toMatchObject({ rcode, answers: [] });
  });

  it('follows a CNAME and counts it as records', async () => {
    const result = await probe(request(port, 'alias.test'));
    expect(result.outcome).toBe('open');
    expect(result.evidence.dns?.answers.map((a) => [a.type, a.data])).toEqual([
      ['CNAME', 'db.test'],
      ['A', '198.18.0.5'],
    ]);
  });

  it('an answer too large for UDP is truncated and fetched over TCP', async () => {
    const result = await probe(request(port, 'big.test', 'TXT'));
    expect(result.outcome).toBe('open');
    expect(result.evidence.dns).toMatchObject({ transport: 'tcp', truncated: true });
    expect(new Set(result.evidence.dns?.answers.map((a) => a.data))).toEqual(new Set(MANY_TXT.map((r) => r.data)));
  });
});
