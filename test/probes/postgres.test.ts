import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ProbeResult } from '../../core/outcome.js';
import type { TargetOf } from '../../core/plan.js';
import { probePostgres } from '../../probes/postgres.js';
import { freePort } from '../helpers/free-port.js';
import { fakeServer, replyOnData } from '../helpers/listen.js';
import { postgresMissing, startPostgres, type PostgresOptions, type PostgresServer } from '../helpers/postgres-server.js';
import { redisMissing, startRedis, type RedisServer } from '../helpers/redis-server.js';

const TIMEOUT_MS = 300;
const ROLE = 'bulkhead_probe_nonexistent';

type Mode = TargetOf<'postgres'>['mode'];

/** Runs the probe and checks the result against the strict schema, so stray evidence fields fail the test. */
async function probe(port: number, mode: Mode, signal: AbortSignal = AbortSignal.timeout(TIMEOUT_MS)) {
  const target: TargetOf<'postgres'> = { name: 'db', env: 'prod', probe: 'postgres', port, mode };
  const started = performance.now();
  const result = await probePostgres({ target, address: '127.0.0.1', port }, signal);
  const elapsedMs = performance.now() - started;
  expect(ProbeResult.safeParse(result).error).toBeUndefined();
  return { result, elapsedMs };
}

/** A protocol-3 ErrorResponse: S, V, C, M fields. */
function errorResponse(severity: string, sqlstate: string, message: string): Buffer {
  const fields = Buffer.from(`S${severity}\0V${severity}\0C${sqlstate}\0M${message}\0\0`);
  const head = Buffer.alloc(5);
  head.write('E');
  head.writeUInt32BE(fields.length + 4, 1);
  return Buffer.concat([head, fields]);
}

const pgSkip = postgresMissing();

describe.skipIf(pgSkip)('postgres probe against real PostgreSQL', () => {
  const HBA = {
    scram: 'host all all 127.0.0.1/32 scram-sha-256\n',
    md5: 'host all all 127.0.0.1/32 md5\n',
    password: 'host all all 127.0.0.1/32 password\n',
    trust: 'host all all 127.0.0.1/32 trust\n',
    reject: 'host all all 127.0.0.1/32 reject\n',
    noEntry: 'local all all trust\n',
  };
  const configs = {
    scram: { hba: HBA.scram },
    scramSsl: { hba: HBA.scram, ssl: true },
    md5: { hba: HBA.md5, passwordEncryption: 'md5' },
    // md5 in pg_hba for a role that does not exist: the mock exchange follows password_encryption.
    md5WithScramDefault: { hba: HBA.md5 },
    password: { hba: HBA.password },
    trust: { hba: HBA.trust },
    reject: { hba: HBA.reject },
    noEntry: { hba: HBA.noEntry },
  } satisfies Record<string, PostgresOptions>;
  type Name = keyof typeof configs;
  const servers = new Map<Name, PostgresServer>();
  const server = (name: Name) => servers.get(name)!;

  beforeAll(async () => {
    const started = await Promise.allSettled(
      Object.entries(configs).map(async ([name, opts]) => servers.set(name as Name, await startPostgres(opts))),
    );
    const failed = started.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) throw failed.reason;
  });
  afterAll(async () => {
    await Promise.all([...servers.values()].map((s) => s.stop()));
  });

  it.each<[Name, 'S' | 'N']>([
    ['scram', 'N'],
    ['scramSsl', 'S'],
    ['reject', 'N'],
  ])('ssl mode on %s answers %s, at the app layer, with no credentials sent', async (name, byte) => {
    const { result } = await probe(server(name).port, 'ssl');
    expect(result.outcome).toBe('open');
    expect(result.layer).toBe('app');
    expect(result.evidence.postgres).toEqual({ sslResponse: byte });
    expect(result.evidence.protocol).toBeUndefined();
    expect(result.evidence.remotePort).toBe(server(name).port);
    expect(result.evidence.localAddress).toBe('127.0.0.1');
    expect(result.timings.connectMs).toBeGreaterThanOrEqual(0);
    expect(result.timings.firstByteMs).toBeGreaterThanOrEqual(result.timings.connectMs!);
  });

  it('completes the TLS handshake after S and records the certificate', async () => {
    const { result } = await probe(server('scramSsl').port, 'ssl');
    expect(result.evidence.tls).toMatchObject({ subject: 'CN=localhost', issuer: 'CN=localhost', authorized: false });
    expect(result.evidence.tls?.fingerprint256).toMatch(/^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
    expect(result.timings.tlsMs).toBeGreaterThan(0);
  });

  it.each<[Name, { auth?: string; sqlstate: string; message: RegExp }]>([
    ['scram', { auth: 'SASL SCRAM-SHA-256', sqlstate: '28P01', message: /^password authentication failed for user "bulkhead_probe_nonexistent"$/ }],
    ['scramSsl', { auth: 'SASL SCRAM-SHA-256', sqlstate: '28P01', message: /^password authentication failed/ }],
    ['md5', { auth: 'MD5Password', sqlstate: '28P01', message: /^password authentication failed/ }],
    ['md5WithScramDefault', { auth: 'SASL SCRAM-SHA-256', sqlstate: '28P01', message: /^password authentication failed/ }],
    ['password', { auth: 'CleartextPassword', sqlstate: '28P01', message: /^password authentication failed/ }],
    ['trust', { auth: 'Ok', sqlstate: '28000', message: /^role "bulkhead_probe_nonexistent" does not exist$/ }],
    ['reject', { sqlstate: '28000', message: /^pg_hba.conf rejects connection for host "127.0.0.1", user "bulkhead_probe_nonexistent"/ }],
    ['noEntry', { sqlstate: '28000', message: /^no pg_hba.conf entry for host "127.0.0.1"/ }],
  ])('startup mode on %s: open, with the auth method and the SQLSTATE', async (name, want) => {
    const { result } = await probe(server(name).port, 'startup', AbortSignal.timeout(5000));
    expect(result.outcome).toBe('open');
    expect(result.layer).toBe('app');
    expect(result.evidence.protocol).toBeUndefined();
    expect(result.evidence.detail).toBeUndefined();
    const pg = result.evidence.postgres!;
    expect(pg.auth).toBe(want.auth);
    expect(pg.sqlstate).toBe(want.sqlstate);
    expect(pg.severity).toBe('FATAL');
    expect(pg.message).toMatch(want.message);
    expect(pg.sslResponse).toBeUndefined();
  });

  /** Lines the server logged after `from`, grouped by backend pid. */
  const pidsLogged = (s: PostgresServer, from: number) =>
    new Set([...s.log().slice(from).matchAll(/ UTC \[(\d+)\] /g)].map((m) => m[1]));

  async function waitForLog(s: PostgresServer, pattern: RegExp, from: number): Promise<void> {
    const deadline = Date.now() + 5000;
    while (!pattern.test(s.log().slice(from))) {
      if (Date.now() > deadline) throw new Error(`server never logged ${pattern}:\n${s.log().slice(from)}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  it.each<Name>(['scram', 'scramSsl'])('ssl mode leaves nothing in the server log of %s; startup mode leaves one FATAL', async (name) => {
    const s = server(name);
    const from = s.log().length;
    for (let i = 0; i < 3; i++) await probe(s.port, 'ssl');
    // The startup probe is the marker: once its FATAL is in the log, anything the ssl probes caused is too.
    await probe(s.port, 'startup', AbortSignal.timeout(5000));
    await waitForLog(s, new RegExp(`FATAL: +password authentication failed for user "${ROLE}"`), from);
    expect(pidsLogged(s, from).size).toBe(1);
    expect(s.log().slice(from)).not.toMatch(/SSL|could not|invalid|incomplete/);
  });
});

describe('postgres probe against peers that are not PostgreSQL', () => {
  const cases: { name: string; serve: (socket: net.Socket) => void; modes: Mode[]; detail: RegExp; errno?: string; layer: 'tcp' }[] = [
    { name: 'an HTTP server (400 and close)', serve: replyOnData('HTTP/1.1 400 Bad Request\r\n\r\n', true), modes: ['ssl', 'startup'], detail: /another protocol: HTTP\/1\.1 400 Bad Request\\x0d\\x0a/, layer: 'tcp' },
    { name: 'a NATS server (INFO first)', serve: (socket) => socket.write('INFO {"server_id":"x"}\r\n'), modes: ['ssl', 'startup'], detail: /another protocol: INFO \{"server_id"/, layer: 'tcp' },
    { name: 'an SSH server (banner starts with S)', serve: (socket) => socket.write('SSH-2.0-OpenSSH_9.2\r\n'), modes: ['ssl', 'startup'], detail: /another protocol: SSH-2\.0-OpenSSH_9\.2/, layer: 'tcp' },
    { name: 'a server that hangs up at once', serve: (socket) => socket.end(), modes: ['ssl', 'startup'], detail: /closed the connection without answering/, layer: 'tcp' },
    { name: 'a silent server', serve: () => {}, modes: ['ssl', 'startup'], detail: /stayed silent until the timeout/, errno: 'TimeoutError', layer: 'tcp' },
  ];
  for (const c of cases) {
    for (const mode of c.modes) {
      it(`${mode} mode against ${c.name}: open, protocol mismatch`, async () => {
        const server = await fakeServer(c.serve);
        try {
          const { result, elapsedMs } = await probe(server.port, mode);
          expect(result.outcome).toBe('open');
          expect(result.layer).toBe(c.layer);
          expect(result.evidence.protocol).toBe('mismatch');
          expect(result.evidence.detail).toMatch(c.detail);
          expect(result.evidence.errno).toBe(c.errno);
          expect(result.evidence.postgres).toBeUndefined();
          expect(elapsedMs).toBeLessThan(TIMEOUT_MS + 200);
        } finally {
          await server.close();
        }
      });
    }
  }

  it.each<Mode>(['ssl', 'startup'])('%s mode: an old-style ErrorResponse is Postgres speaking (open, app, SQLSTATE)', async (mode) => {
    const server = await fakeServer(replyOnData(errorResponse('FATAL', '08P01', 'unsupported frontend protocol'), true));
    try {
      const { result } = await probe(server.port, mode);
      expect(result).toMatchObject({ outcome: 'open', layer: 'app' });
      expect(result.evidence.postgres).toEqual({ severity: 'FATAL', sqlstate: '08P01', message: 'unsupported frontend protocol' });
      expect(result.evidence.protocol).toBeUndefined();
    } finally {
      await server.close();
    }
  });

  it.each<Mode>(['ssl', 'startup'])('%s mode: the postmaster\'s "could not fork" text error is Postgres speaking', async (mode) => {
    // What report_fork_failure_to_client() writes straight after accept: 'E', text, NUL; no length word.
    const server = await fakeServer((socket) => socket.end('Ecould not fork new process for connection: Resource temporarily unavailable\n\0'));
    try {
      const { result } = await probe(server.port, mode);
      expect(result).toMatchObject({ outcome: 'open', layer: 'app' });
      expect(result.evidence.postgres).toEqual({ message: 'could not fork new process for connection: Resource temporarily unavailable' });
    } finally {
      await server.close();
    }
  });

  it('startup mode: a server that asks for GSS is open with the method recorded, and we hang up', async () => {
    let closed!: Promise<void>;
    const gss = Buffer.from('520000000800000007', 'hex');
    const server = await fakeServer((socket) => {
      closed = new Promise((resolve) => socket.once('close', () => resolve()));
      replyOnData(gss, false)(socket);
    });
    try {
      const { result } = await probe(server.port, 'startup', AbortSignal.timeout(2000));
      expect(result).toMatchObject({ outcome: 'open', layer: 'app', evidence: { postgres: { auth: 'GSS' } } });
      expect(result.evidence.detail).toMatch(/asked for GSS/);
      await closed;
    } finally {
      await server.close();
    }
  });

  it('startup mode: silence in the middle of SCRAM is still open at the app layer, with what was seen', async () => {
    const sasl = Buffer.concat([Buffer.from('52000000170000000a', 'hex'), Buffer.from('SCRAM-SHA-256\0\0')]);
    const server = await fakeServer(replyOnData(sasl, false));
    try {
      const { result, elapsedMs } = await probe(server.port, 'startup');
      expect(result).toMatchObject({ outcome: 'open', layer: 'app', evidence: { postgres: { auth: 'SASL SCRAM-SHA-256' }, errno: 'TimeoutError' } });
      expect(result.evidence.detail).toMatch(/stopped answering during authentication/);
      expect(result.evidence.protocol).toBeUndefined();
      expect(elapsedMs).toBeLessThan(TIMEOUT_MS + 200);
    } finally {
      await server.close();
    }
  });

  it.each<Mode>(['ssl', 'startup'])('%s mode: a closed port is refused (ECONNREFUSED)', async (mode) => {
    const { result } = await probe(await freePort(), mode);
    expect(result).toMatchObject({ outcome: 'refused', layer: 'tcp', evidence: { errno: 'ECONNREFUSED' } });
  });

  it.each<Mode>(['ssl', 'startup'])('%s mode: cancelling the run after connect is still open (TCP connected), not a mismatch', async (mode) => {
    const server = await fakeServer(() => {});
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 50);
    try {
      const { result, elapsedMs } = await probe(server.port, mode, controller.signal);
      expect(result).toMatchObject({ outcome: 'open', layer: 'tcp', evidence: { errno: 'ABORTED' } });
      expect(result.evidence.protocol).toBeUndefined();
      expect(result.evidence.detail).toMatch(/cancelled after TCP connected/);
      expect(elapsedMs).toBeLessThan(250);
    } finally {
      await server.close();
    }
  });

  it('a run cancelled before the attempt is an error, never open', async () => {
    const server = await fakeServer(() => {});
    const controller = new AbortController();
    controller.abort();
    try {
      const { result } = await probe(server.port, 'ssl', controller.signal);
      expect(result).toMatchObject({ outcome: 'error', evidence: { errno: 'ABORTED' } });
    } finally {
      await server.close();
    }
  });
});

const redisSkip = redisMissing();

describe.skipIf(redisSkip)('postgres probe against a real Redis', () => {
  let redis: RedisServer;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    await redis?.stop();
  });

  it.each<Mode>(['ssl', 'startup'])('%s mode: Redis waits for a newline that never comes: open, mismatch, by the timeout', async (mode) => {
    const { result, elapsedMs } = await probe(redis.port, mode);
    expect(result).toMatchObject({ outcome: 'open', layer: 'tcp', evidence: { protocol: 'mismatch', errno: 'TimeoutError' } });
    expect(elapsedMs).toBeGreaterThanOrEqual(TIMEOUT_MS - 5);
    expect(elapsedMs).toBeLessThan(TIMEOUT_MS + 200);
  });
});
