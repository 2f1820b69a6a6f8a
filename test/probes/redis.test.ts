import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ProbeResult } from '../../core/outcome.js';
import type { TargetOf } from '../../core/plan.js';
import { probeRedis } from '../../probes/redis.js';
import { freePort } from '../helpers/free-port.js';
import { fakeServer, replyOnData } from '../helpers/listen.js';
import { postgresMissing, startPostgres, type PostgresServer } from '../helpers/postgres-server.js';
import { redisMissing, startRedis, type RedisServer } from '../helpers/redis-server.js';
import { openssl, selfSignedCert } from '../helpers/tls-cert.js';
import { unavailable } from '../helpers/need.js';

const TIMEOUT_MS = 300;

/** Runs the probe and checks the result against the strict schema, so stray evidence fields fail the test. */
async function probe(port: number, opts: { tls?: boolean; host?: string; signal?: AbortSignal } = {}) {
  const target: TargetOf<'redis'> = { name: 'cache', env: 'prod', probe: 'redis', port, tls: opts.tls ?? false };
  const started = performance.now();
  const result = await probeRedis(
    { target, address: '127.0.0.1', port, ...(opts.host ? { host: opts.host } : {}) },
    opts.signal ?? AbortSignal.timeout(TIMEOUT_MS),
  );
  const elapsedMs = performance.now() - started;
  expect(ProbeResult.safeParse(result).error).toBeUndefined();
  return { result, elapsedMs };
}

const redisSkip = redisMissing();

describe.skipIf(redisSkip)('redis probe against real Redis', () => {
  let open: RedisServer;
  let locked: RedisServer;
  beforeAll(async () => {
    [open, locked] = await Promise.all([startRedis(), startRedis({ requirepass: 'correct horse battery staple' })]);
  });
  afterAll(async () => {
    await Promise.all([open?.stop(), locked?.stop()]);
  });

  it('without a password: +PONG, open at the app layer', async () => {
    const { result } = await probe(open.port, { host: 'cache.prod.test' });
    expect(result).toMatchObject({
      outcome: 'open',
      layer: 'app',
      evidence: { redis: { reply: '+PONG' }, host: 'cache.prod.test', remoteAddress: '127.0.0.1', remotePort: open.port, localAddress: '127.0.0.1' },
    });
    expect(result.evidence.protocol).toBeUndefined();
    expect(result.timings.firstByteMs).toBeGreaterThanOrEqual(result.timings.connectMs!);
    expect(result.timings.totalMs).toBeGreaterThanOrEqual(result.timings.firstByteMs!);
  });

  it('with requirepass: -NOAUTH is open too (an auth error proves the path)', async () => {
    const { result } = await probe(locked.port);
    expect(result).toMatchObject({ outcome: 'open', layer: 'app', evidence: { redis: { reply: '-NOAUTH Authentication required.' } } });
  });

  it('asking for TLS from a plaintext Redis: TCP connected, the handshake fails: open, mismatch', async () => {
    const { result } = await probe(open.port, { tls: true });
    expect(result).toMatchObject({ outcome: 'open', layer: 'tcp', evidence: { protocol: 'mismatch' } });
    expect(result.evidence.redis).toBeUndefined();
  });
});

describe.skipIf(redisSkip ?? unavailable('openssl', openssl === undefined, 'install openssl'))('redis probe against real Redis over TLS', () => {
  let secure: RedisServer;
  beforeAll(async () => {
    secure = await startRedis({ tls: true });
  });
  afterAll(async () => {
    await secure?.stop();
  });

  it('PING over TLS: +PONG at the app layer, with the certificate and TLS timing', async () => {
    const { result } = await probe(secure.port, { tls: true, host: 'localhost' });
    expect(result).toMatchObject({ outcome: 'open', layer: 'app', evidence: { redis: { reply: '+PONG' }, tls: { subject: 'CN=localhost' } } });
    expect(result.timings.tlsMs).toBeGreaterThan(0);
  });

  it('plaintext PING to a TLS-only Redis: it closes without a RESP reply: open, mismatch', async () => {
    const { result } = await probe(secure.port);
    expect(result).toMatchObject({ outcome: 'open', layer: 'tcp', evidence: { protocol: 'mismatch' } });
    expect(result.evidence.redis).toBeUndefined();
  });
});

describe('redis probe: which replies count as RESP', () => {
  const long = 'x'.repeat(300);
  it.each<[string, string, string]>([
    ['protected mode', '-DENIED Redis is running in protected mode because protected mode is enabled\r\n', '-DENIED Redis is running in protected mode because protected mode is enabled'],
    ['an unknown command', "-ERR unknown command 'PING'\r\n", "-ERR unknown command 'PING'"],
    ['wrong password', '-WRONGPASS invalid username-password pair\r\n', '-WRONGPASS invalid username-password pair'],
    ['an integer', ':1\r\n', ':1'],
    ['a bulk string (first line only)', '$4\r\nPONG\r\n', '$4'],
    ['a RESP3 push', '>2\r\n', '>2'],
    ['a long error, truncated', `-ERR ${long}\r\n`, `-ERR ${long}`.slice(0, 200) + '…'],
    ['control bytes, escaped', '+PO\x01NG\r\n', '+PO\\x01NG'],
  ])('%s is open at the app layer', async (_name, sent, reply) => {
    const server = await fakeServer(replyOnData(sent));
    try {
      const { result } = await probe(server.port);
      expect(result).toMatchObject({ outcome: 'open', layer: 'app', evidence: { redis: { reply } } });
      expect(result.evidence.protocol).toBeUndefined();
    } finally {
      await server.close();
    }
  });
});

describe('redis probe against peers that are not Redis', () => {
  it.each<[string, (socket: net.Socket) => void, RegExp, string | undefined]>([
    ['an HTTP server (400 and close)', replyOnData('HTTP/1.1 400 Bad Request\r\n\r\n', true), /another protocol: HTTP\/1\.1 400 Bad Request/, undefined],
    ['a NATS server (INFO first)', (socket) => socket.write('INFO {"server_id":"x"}\r\n'), /another protocol: INFO \{"server_id"/, undefined],
    ['a RESP-looking first byte with no line end in 512 bytes', replyOnData(`+${'y'.repeat(600)}`), /another protocol: \+yyyy/, undefined],
    ['a server that hangs up at once', (socket) => socket.end(), /closed the connection without answering/, undefined],
    ['a silent server', () => {}, /stayed silent until the timeout/, 'TimeoutError'],
  ])('%s: open, protocol mismatch, at the tcp layer', async (_name, serve, detail, errno) => {
    const server = await fakeServer(serve);
    try {
      const { result, elapsedMs } = await probe(server.port);
      expect(result).toMatchObject({ outcome: 'open', layer: 'tcp', evidence: { protocol: 'mismatch' } });
      expect(result.evidence.detail).toMatch(detail);
      expect(result.evidence.errno).toBe(errno);
      expect(result.evidence.redis).toBeUndefined();
      expect(elapsedMs).toBeLessThan(TIMEOUT_MS + 200);
    } finally {
      await server.close();
    }
  });

  it('a closed port is refused (ECONNREFUSED)', async () => {
    const { result } = await probe(await freePort());
    expect(result).toMatchObject({ outcome: 'refused', layer: 'tcp', evidence: { errno: 'ECONNREFUSED' } });
  });

  it('cancelling the run after connect is still open (TCP connected), not a mismatch', async () => {
    const server = await fakeServer(() => {});
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 50);
    try {
      const { result, elapsedMs } = await probe(server.port, { signal: controller.signal });
      expect(result).toMatchObject({ outcome: 'open', layer: 'tcp', evidence: { errno: 'ABORTED' } });
      expect(result.evidence.protocol).toBeUndefined();
      expect(result.evidence.detail).toMatch(/cancelled before the peer answered/);
      expect(elapsedMs).toBeLessThan(250);
    } finally {
      await server.close();
    }
  });

  const tlsSkip = unavailable('openssl', openssl === undefined, 'install openssl');
  it.skipIf(tlsSkip)('TLS completed but the peer stays silent: open, mismatch, at the tls layer', async () => {
    const server = await fakeServer(() => {}, selfSignedCert('localhost'));
    try {
      const { result } = await probe(server.port, { tls: true });
      expect(result).toMatchObject({ outcome: 'open', layer: 'tls', evidence: { protocol: 'mismatch', errno: 'TimeoutError' } });
      expect(result.evidence.detail).toMatch(/^TLS completed but the peer stayed silent/);
      expect(result.evidence.tls?.subject).toBe('CN=localhost');
    } finally {
      await server.close();
    }
  });
});

const pgSkip = postgresMissing();

describe.skipIf(pgSkip)('redis probe against a real PostgreSQL', () => {
  let pg: PostgresServer;
  beforeAll(async () => {
    pg = await startPostgres({ hba: 'host all all 127.0.0.1/32 scram-sha-256\n' });
  });
  afterAll(async () => {
    await pg?.stop();
  });

  it('PING is an invalid startup packet: Postgres hangs up without a reply: open, mismatch', async () => {
    const { result } = await probe(pg.port);
    expect(result).toMatchObject({ outcome: 'open', layer: 'tcp', evidence: { protocol: 'mismatch' } });
    expect(result.evidence.detail).toMatch(/closed the connection without answering/);
  });
});
