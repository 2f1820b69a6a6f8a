import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import tls, { type TLSSocket } from 'node:tls';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ProbeResult } from '../../core/outcome.js';
import type { TargetOf } from '../../core/plan.js';
import { probeHttp } from '../../probes/http.js';
import { freePort } from '../helpers/free-port.js';
import { listen, noConnectionsWithin, stop } from '../helpers/listen.js';
import { unavailable } from '../helpers/need.js';
import { openssl, selfSignedCert } from '../helpers/tls-cert.js';

const TIMEOUT_MS = 400;

function target(url: string, extra: Partial<TargetOf<'http'>> = {}): TargetOf<'http'> {
  return { name: 'web', env: 'prod', probe: 'http', url, method: 'GET', ...extra };
}

/** Runs the probe against 127.0.0.1:port and checks the result against the strict schema. */
async function probe(url: string, port: number, extra: Partial<TargetOf<'http'>> = {}, signal = AbortSignal.timeout(TIMEOUT_MS)) {
  const started = performance.now();
  const result = await probeHttp({ target: target(url, extra), address: '127.0.0.1', port }, signal);
  const elapsedMs = performance.now() - started;
  expect(ProbeResult.safeParse(result).error).toBeUndefined();
  return { result, elapsedMs };
}

/** As `probe`, for an address that was resolved from `host`. */
async function probeWithHost(url: string, port: number, host: string) {
  const result = await probeHttp({ target: target(url), address: '127.0.0.1', port, host }, AbortSignal.timeout(TIMEOUT_MS));
  expect(ProbeResult.safeParse(result).error).toBeUndefined();
  return { result };
}

interface Seen {
  method: string;
  path: string;
  host: string | undefined;
  connection: string | undefined;
  userAgent: string | undefined;
}

/** Routes of the plain test server; every request is recorded. */
function routes(seen: Seen[]) {
  return (req: http.IncomingMessage, res: http.ServerResponse) => {
    seen.push({ method: req.method ?? '', path: req.url ?? '', host: req.headers.host, connection: req.headers.connection, userAgent: req.headers['user-agent'] });
    res.setHeader('server', 'test-server/1.0');
    switch (req.url) {
      case '/ok':
        res.setHeader('content-type', 'text/plain');
        res.end('hello');
        return;
      case '/forbidden':
        res.writeHead(403).end('no');
        return;
      case '/redirect':
        res.writeHead(302, { location: '/target' }).end();
        return;
      case '/error':
        res.writeHead(500).end();
        return;
      case '/big':
        res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(Buffer.alloc(1 << 20));
        return;
      case '/stall':
        // Headers and a little body, then nothing: the probe must not wait for the rest.
        res.writeHead(200, { 'content-length': '100000' });
        res.write('partial');
        return;
      default:
        res.writeHead(404).end();
    }
  };
}

describe('http probe, plain HTTP', () => {
  const seen: Seen[] = [];
  const server = http.createServer(routes(seen));
  let connections = 0;
  server.on('connection', () => connections++);
  let port = 0;
  const url = (path: string) => `http://127.0.0.1:${port}${path}`;
  beforeAll(async () => {
    port = await listen(server);
  });
  beforeEach(() => {
    seen.length = 0;
  });
  afterAll(() => stop(server));

  it.each([
    { path: '/ok', method: 'GET' as const, status: 200, http: { server: 'test-server/1.0', contentType: 'text/plain' } },
    { path: '/ok', method: 'HEAD' as const, status: 200, http: { server: 'test-server/1.0', contentType: 'text/plain' } },
    { path: '/forbidden', method: 'GET' as const, status: 403, http: { server: 'test-server/1.0' } },
    { path: '/missing', method: 'GET' as const, status: 404, http: { server: 'test-server/1.0' } },
    { path: '/error', method: 'GET' as const, status: 500, http: { server: 'test-server/1.0' } },
  ])('$method $path answering $status is open at the app layer', async ({ path, method, status, http: expected }) => {
    const { result } = await probe(url(path), port, { method });
    expect(result).toMatchObject({
      outcome: 'open',
      layer: 'app',
      evidence: { http: { status, ...expected }, localAddress: '127.0.0.1', remoteAddress: '127.0.0.1', remotePort: port },
    });
    expect(result.evidence.protocol).toBeUndefined();
    expect(result.evidence.errno).toBeUndefined();
    const t = result.timings;
    expect(t.connectMs).toBeGreaterThanOrEqual(0);
    expect(t.firstByteMs).toBeGreaterThanOrEqual(t.connectMs!);
    expect(t.totalMs).toBeGreaterThanOrEqual(t.firstByteMs!);
    expect(seen).toEqual([{ method, path, host: `127.0.0.1:${port}`, connection: 'close', userAgent: 'bulkhead-probe/0.1' }]);
  });

  it('records a redirect and does not follow it', async () => {
    const { result } = await probe(url('/redirect'), port);
    expect(result).toMatchObject({ outcome: 'open', layer: 'app', evidence: { http: { status: 302, location: '/target' } } });
    await noConnectionsWithin(server, 1000);
    expect(seen.map((s) => s.path)).toEqual(['/redirect']);
  });

  it('sends the URL host as Host while connecting to the given address', async () => {
    const { result } = await probeWithHost(`http://api.prod.test:${port}/ok?probe=1`, port, 'api.prod.test');
    expect(result).toMatchObject({ outcome: 'open', evidence: { host: 'api.prod.test', remoteAddress: '127.0.0.1' } });
    expect(seen).toMatchObject([{ path: '/ok?probe=1', host: `api.prod.test:${port}` }]);
  });

  it('uses a fresh connection per attempt and leaves none open', async () => {
    const before = connections;
    for (let i = 0; i < 2; i++) {
      const { result } = await probe(url('/ok'), port);
      expect(result.evidence.http?.status).toBe(200);
      await noConnectionsWithin(server, 1000);
    }
    expect(connections - before).toBe(2);
    expect(seen.map((s) => s.connection)).toEqual(['close', 'close']);
  });

  it.each([
    { path: '/big', what: 'a 1 MiB body' },
    { path: '/stall', what: 'a body that stalls' },
  ])('does not wait for $what once the status is in', async ({ path }) => {
    const { result, elapsedMs } = await probe(url(path), port, {}, AbortSignal.timeout(2000));
    expect(result).toMatchObject({ outcome: 'open', layer: 'app', evidence: { http: { status: 200 } } });
    expect(elapsedMs).toBeLessThan(1000);
    await noConnectionsWithin(server, 1000);
  });

  it('reports a closed port as refused', async () => {
    const closed = await freePort();
    const { result } = await probe(`http://127.0.0.1:${closed}/`, closed);
    expect(result).toMatchObject({ outcome: 'refused', layer: 'tcp', evidence: { errno: 'ECONNREFUSED' } });
    expect(result.evidence.http).toBeUndefined();
  });

  it('reports an https URL against a plain HTTP port as open with a TLS mismatch', async () => {
    const { result } = await probe(`https://127.0.0.1:${port}/ok`, port);
    expect(result).toMatchObject({ outcome: 'open', layer: 'tcp', evidence: { protocol: 'mismatch' } });
    expect(result.evidence.http).toBeUndefined();
    expect(seen).toEqual([]);
  });
});

describe('http probe, peers that do not speak HTTP', () => {
  const garbage = net.createServer((socket) => socket.on('error', () => {}).once('data', () => socket.end('SSH-2.0-OpenSSH_9.6\r\n')));
  const hangUp = net.createServer((socket) => socket.on('error', () => {}).resume().end());
  const silent = net.createServer((socket) => socket.on('error', () => {}).resume());
  const ports = { garbage: 0, hangUp: 0, silent: 0 };
  beforeAll(async () => {
    ports.garbage = await listen(garbage);
    ports.hangUp = await listen(hangUp);
    ports.silent = await listen(silent);
  });
  afterAll(() => Promise.all([stop(garbage), stop(hangUp), stop(silent)]));

  it.each([
    { peer: 'a server writing a non-HTTP banner', server: () => garbage, port: () => ports.garbage, errno: 'UND_ERR_HTTP_PARSER' },
    { peer: 'a server that hangs up without answering', server: () => hangUp, port: () => ports.hangUp, errno: 'UND_ERR_SOCKET' },
  ])('$peer is open with a protocol mismatch', async ({ server, port, errno }) => {
    const { result, elapsedMs } = await probe(`http://127.0.0.1:${port()}/`, port());
    expect(result).toMatchObject({ outcome: 'open', layer: 'tcp', evidence: { protocol: 'mismatch', errno } });
    expect(result.evidence.detail).toContain(errno);
    expect(result.evidence.http).toBeUndefined();
    expect(elapsedMs).toBeLessThan(TIMEOUT_MS);
    await noConnectionsWithin(server(), 1000);
  });

  it('a silent server is open with a mismatch, decided by the timeout', async () => {
    const { result, elapsedMs } = await probe(`http://127.0.0.1:${ports.silent}/`, ports.silent);
    expect(result).toMatchObject({ outcome: 'open', layer: 'tcp', evidence: { protocol: 'mismatch', errno: 'TimeoutError' } });
    expect(result.evidence.detail).toMatch(/silent/);
    expect(elapsedMs).toBeGreaterThanOrEqual(TIMEOUT_MS - 5);
    expect(elapsedMs).toBeLessThan(TIMEOUT_MS + 500);
    await noConnectionsWithin(silent, 1000);
  });

  it('a cancelled run after connecting is still open, without claiming a mismatch', async () => {
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 50);
    const { result, elapsedMs } = await probe(`http://127.0.0.1:${ports.silent}/`, ports.silent, {}, controller.signal);
    expect(result).toMatchObject({ outcome: 'open', layer: 'tcp', evidence: { errno: 'ABORTED' } });
    expect(result.evidence.protocol).toBeUndefined();
    expect(elapsedMs).toBeLessThan(TIMEOUT_MS);
    await noConnectionsWithin(silent, 1000);
  });

  it('a run cancelled before connecting is an error', async () => {
    const controller = new AbortController();
    controller.abort();
    const { result } = await probe(`http://127.0.0.1:${ports.silent}/`, ports.silent, {}, controller.signal);
    expect(result).toMatchObject({ outcome: 'error', layer: 'tcp', evidence: { errno: 'ABORTED' } });
  });
});

const noOpenssl = unavailable('openssl', openssl === undefined, 'TLS test certificates are made with openssl');
describe.skipIf(noOpenssl)('http probe, HTTPS', () => {
  const cn = 'api.prod.test';
  const seen: Seen[] = [];
  const servernames: (string | false | null)[] = [];
  let server: https.Server;
  let port = 0;
  // Completes the TLS handshake, then reads and never answers.
  let silentTls: tls.Server;
  let silentTlsPort = 0;
  beforeAll(async () => {
    const cert = selfSignedCert(cn);
    server = https.createServer(cert, routes(seen));
    server.on('secureConnection', (socket: TLSSocket) => servernames.push(socket.servername));
    port = await listen(server);
    silentTls = tls.createServer(cert, (socket) => socket.on('error', () => {}).resume());
    silentTlsPort = await listen(silentTls);
  });
  beforeEach(() => {
    seen.length = 0;
    servernames.length = 0;
  });
  afterAll(() => Promise.all([stop(server), stop(silentTls)]));

  it('answers over TLS with a self-signed certificate: open, certificate recorded, not authorized', async () => {
    const { result } = await probe(`https://${cn}:${port}/healthz`, port);
    expect(result).toMatchObject({
      outcome: 'open',
      layer: 'app',
      evidence: { http: { status: 404, server: 'test-server/1.0' }, tls: { subject: `CN=${cn}`, issuer: `CN=${cn}`, authorized: false } },
    });
    expect(result.evidence.tls?.authorizationError).toBeTruthy();
    expect(result.evidence.tls?.fingerprint256).toMatch(/^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
    expect(result.timings.tlsMs).toBeGreaterThan(0);
    expect(result.timings.firstByteMs).toBeGreaterThanOrEqual(result.timings.connectMs! + result.timings.tlsMs!);
    await noConnectionsWithin(server, 1000);
  });

  it('sends the URL host as SNI and Host while connecting to the given address', async () => {
    const { result } = await probe(`https://${cn}:${port}/ok`, port);
    expect(result.evidence.http?.status).toBe(200);
    expect(servernames).toEqual([cn]);
    expect(seen).toMatchObject([{ path: '/ok', host: `${cn}:${port}`, connection: 'close' }]);
  });

  it('sends no SNI when the URL host is an address', async () => {
    const { result } = await probe(`https://127.0.0.1:${port}/ok`, port);
    expect(result.evidence.http?.status).toBe(200);
    expect(servernames).toEqual([false]);
  });

  it('an http URL against the TLS port is open with a mismatch', async () => {
    const { result } = await probe(`http://127.0.0.1:${port}/ok`, port);
    expect(result).toMatchObject({ outcome: 'open', layer: 'tcp', evidence: { protocol: 'mismatch' } });
    expect(seen).toEqual([]);
  });

  it('a peer that completes TLS and then stays silent is open with a mismatch at the tls layer', async () => {
    const { result, elapsedMs } = await probe(`https://${cn}:${silentTlsPort}/`, silentTlsPort);
    expect(result).toMatchObject({
      outcome: 'open',
      layer: 'tls',
      evidence: { protocol: 'mismatch', errno: 'TimeoutError', tls: { subject: `CN=${cn}` } },
    });
    expect(result.evidence.detail).toMatch(/^TLS completed .*silent/);
    expect(elapsedMs).toBeGreaterThanOrEqual(TIMEOUT_MS - 5);
    await noConnectionsWithin(silentTls, 1000);
  });
});
