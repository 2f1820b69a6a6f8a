import net from 'node:net';
import tls from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ProbeResult } from '../../core/outcome.js';
import type { TargetOf } from '../../core/plan.js';
import { probeTcp } from '../../probes/tcp.js';
import { python3, startBlackhole, type Blackhole } from '../helpers/blackhole.js';
import { freePort } from '../helpers/free-port.js';
import { listen, noConnectionsWithin, stop } from '../helpers/listen.js';
import { unavailable } from '../helpers/need.js';
import { openssl, selfSignedCert } from '../helpers/tls-cert.js';

const TIMEOUT_MS = 300;

function target(port: number, extra: Partial<TargetOf<'tcp'>> = {}): TargetOf<'tcp'> {
  return { name: 'svc', env: 'prod', probe: 'tcp', port, tls: false, ...extra };
}

/** Runs the probe and checks the result against the strict schema, so stray evidence fields fail the test. */
async function probe(port: number, extra: Partial<TargetOf<'tcp'>> = {}, signal = AbortSignal.timeout(TIMEOUT_MS), host?: string) {
  const started = performance.now();
  const result = await probeTcp({ target: target(port, extra), address: '127.0.0.1', port, ...(host ? { host } : {}) }, signal);
  const elapsedMs = performance.now() - started;
  expect(ProbeResult.safeParse(result).error).toBeUndefined();
  return { result, elapsedMs };
}

describe('tcp probe, plain', () => {
  // The server reads (and drops) whatever arrives, so it notices at once when the probe hangs up.
  const server = net.createServer((socket) => socket.on('error', () => {}).resume());
  let port = 0;
  beforeAll(async () => {
    port = await listen(server);
  });
  afterAll(() => stop(server));

  it('reports a listening port as open, with the local and remote ends, and hangs up at once', async () => {
    const { result } = await probe(port, {}, AbortSignal.timeout(TIMEOUT_MS), 'db.prod.test');
    expect(result.outcome).toBe('open');
    expect(result.layer).toBe('tcp');
    expect(result.evidence).toMatchObject({ host: 'db.prod.test', localAddress: '127.0.0.1', remoteAddress: '127.0.0.1', remotePort: port });
    expect(result.evidence.localPort).toBeGreaterThan(0);
    expect(result.evidence.errno).toBeUndefined();
    expect(result.timings.connectMs).toBeGreaterThanOrEqual(0);
    expect(result.timings.totalMs).toBeGreaterThanOrEqual(result.timings.connectMs!);
    await noConnectionsWithin(server, 1000);
  });

  it('reports a closed port as refused (ECONNREFUSED) within 50 ms', async () => {
    const closed = await freePort();
    const { result, elapsedMs } = await probe(closed);
    expect(result).toMatchObject({ outcome: 'refused', layer: 'tcp', evidence: { errno: 'ECONNREFUSED', remotePort: closed } });
    expect(elapsedMs).toBeLessThan(50);
  });

  it('reports a cancelled run before connecting as error ABORTED', async () => {
    const controller = new AbortController();
    controller.abort();
    const { result } = await probe(port, {}, controller.signal);
    expect(result).toMatchObject({ outcome: 'error', layer: 'tcp', evidence: { errno: 'ABORTED' } });
  });
});

const noPython = unavailable('python3', python3 === undefined, 'the blackhole listener needs python3 on PATH');
describe.skipIf(noPython)('tcp probe, blackholed port', () => {
  let hole: Blackhole;
  beforeAll(async () => {
    hole = await startBlackhole();
  });
  afterAll(() => hole?.close());

  it('reports a port that never answers the handshake as filtered, at the timeout and not before', async () => {
    const { result, elapsedMs } = await probe(hole.port);
    expect(result).toMatchObject({ outcome: 'filtered', layer: 'tcp', evidence: { errno: 'TimeoutError', remotePort: hole.port } });
    expect(elapsedMs).toBeGreaterThanOrEqual(TIMEOUT_MS - 5);
    expect(elapsedMs).toBeLessThan(TIMEOUT_MS + 500);
    expect(result.timings.connectMs).toBeUndefined();
  });

  it('settles promptly as error ABORTED when the run is cancelled mid-connect', async () => {
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 50);
    const { result, elapsedMs } = await probe(hole.port, {}, controller.signal);
    expect(result).toMatchObject({ outcome: 'error', evidence: { errno: 'ABORTED' } });
    expect(elapsedMs).toBeLessThan(TIMEOUT_MS);
  });
});

const noOpenssl = unavailable('openssl', openssl === undefined, 'TLS test certificates are made with openssl');
describe.skipIf(noOpenssl)('tcp probe, TLS', () => {
  const cn = 'db.prod.test';
  let cert: { key: string; cert: string };
  let tlsServer: tls.Server;
  let tlsPort = 0;
  // SNI as the server saw it in the ClientHello: the probe may hang up before the server finishes its side.
  const servernames: string[] = [];
  // Plain TCP peers: one reads and stays silent, one answers the ClientHello with a banner.
  const silent = net.createServer((socket) => socket.on('error', () => {}).resume());
  const banner = net.createServer((socket) => socket.on('error', () => {}).resume().end('SSH-2.0-OpenSSH_9.6\r\n'));
  let silentPort = 0;
  let bannerPort = 0;

  beforeAll(async () => {
    cert = selfSignedCert(cn);
    const context = tls.createSecureContext({ key: cert.key, cert: cert.cert });
    tlsServer = tls.createServer({
      key: cert.key,
      cert: cert.cert,
      SNICallback: (name, callback) => {
        servernames.push(name);
        callback(null, context);
      },
    });
    tlsServer.on('secureConnection', (socket) => socket.on('error', () => {}).resume());
    // The probe resets right after its handshake; the server reports that as a client error.
    tlsServer.on('tlsClientError', () => {});
    tlsPort = await listen(tlsServer);
    silentPort = await listen(silent);
    bannerPort = await listen(banner);
  });
  afterAll(() => Promise.all([stop(tlsServer), stop(silent), stop(banner)]));

  it('completes the handshake, records the certificate and hangs up', async () => {
    const x509 = new X509Certificate(cert.cert);
    const { result } = await probe(tlsPort, { tls: true, servername: cn });
    expect(result.outcome).toBe('open');
    expect(result.layer).toBe('tls');
    expect(result.timings.tlsMs).toBeGreaterThan(0);
    const evidence = result.evidence.tls!;
    expect(evidence.subject).toBe(`CN=${cn}`);
    expect(evidence.issuer).toBe(`CN=${cn}`);
    expect(evidence.subjectAltName).toBe(`DNS:${cn}`);
    expect(evidence.fingerprint256).toBe(x509.fingerprint256);
    expect(evidence.validTo).toBe(x509.validTo);
    expect(evidence.authorized).toBe(false);
    expect(evidence.protocol).toMatch(/^TLSv1\.[23]$/);
    expect(servernames.at(-1)).toBe(cn);
    await noConnectionsWithin(tlsServer, 1000);
  });

  it('sends the request host as SNI when the target names no servername', async () => {
    const { result } = await probe(tlsPort, { tls: true }, AbortSignal.timeout(TIMEOUT_MS), 'cache.prod.test');
    expect(result.outcome).toBe('open');
    expect(servernames.at(-1)).toBe('cache.prod.test');
  });

  it.each([
    { peer: 'a silent plain TCP server', server: () => silent, port: () => silentPort, errno: 'TimeoutError' },
    { peer: 'a plain TCP server sending a banner', server: () => banner, port: () => bannerPort, errno: 'ERR_SSL_WRONG_VERSION_NUMBER' },
  ])('reports $peer as open with a protocol mismatch', async ({ server, port, errno }) => {
    const { result } = await probe(port(), { tls: true, servername: cn });
    expect(result).toMatchObject({ outcome: 'open', layer: 'tcp', evidence: { protocol: 'mismatch', errno } });
    expect(result.evidence.tls).toBeUndefined();
    await noConnectionsWithin(server(), 1000);
  });
});
