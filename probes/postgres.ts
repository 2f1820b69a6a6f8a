// The postgres probe (SPEC §4), raw protocol, no credentials. `ssl` mode sends the 8-byte SSLRequest and
// reads the one-byte S/N answer; `startup` mode logs in as a role that does not exist and presents bogus
// credentials, so the server's SQLSTATE (28P01, 28000) proves the path without our ever knowing a password.
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import tls from 'node:tls';
import type { Evidence, Layer, ProbeResult } from '../core/outcome.js';
import { abortCode, errorCode } from './errors.js';
import { openConnection, printable, readReply, round, tlsEvidence, type ReadEnd } from './connect.js';
import type { ProbeFn } from './types.js';

type PostgresEvidence = NonNullable<Evidence['postgres']>;

const SSL_REQUEST = Buffer.from('0000000804d2162f', 'hex');
const PROTOCOL_3_0 = 196608;
const PROBE_ROLE = 'bulkhead_probe_nonexistent';
// Longer than any authentication or error message a server sends before login.
const MAX_MESSAGE = 16_384;
// What a backend may send before and right after authentication.
const BACKEND_TYPES = new Set(['R', 'E', 'N', 'v', 'S', 'K', 'Z']);
// How long to wait for the server to acknowledge our goodbye, so it logs nothing.
const CLOSE_GRACE_MS = 250;

/** Sends an SSLRequest (or, in startup mode, a StartupMessage for a non-existent role) and classifies the answer. */
export const probePostgres: ProbeFn<'postgres'> = async (req, signal) => {
  const startedAt = performance.now();
  const connection = await openConnection({ address: req.address, port: req.port, signal, startedAt });
  const named = req.host !== undefined ? { host: req.host } : {};
  if (!connection.ok) return { ...connection.result, evidence: { ...connection.result.evidence, ...named } };

  const session: Session = {
    socket: connection.socket,
    signal,
    startedAt,
    connectMs: connection.connectMs,
    evidence: { ...connection.evidence, ...named },
    pending: Buffer.alloc(0),
  };
  try {
    return req.target.mode === 'startup' ? await startup(session) : await sslRequest(session, req.host);
  } finally {
    await closeGracefully(session.socket, signal);
  }
};

interface Session {
  socket: net.Socket;
  readonly signal: AbortSignal;
  readonly startedAt: number;
  readonly connectMs: number;
  tlsMs?: number;
  firstByteAt?: number;
  evidence: Evidence;
  /** Bytes received but not yet consumed as a message. */
  pending: Buffer;
}

async function sslRequest(s: Session, host: string | undefined): Promise<ProbeResult> {
  s.socket.write(SSL_REQUEST);
  const reply = await readReply(s.socket, s.signal, (data) => data.length >= 1, MAX_MESSAGE);
  s.firstByteAt = reply.firstByteAt;
  if (reply.data.length === 0) return noAnswer(s, reply.end, reply.code);
  const first = reply.data[0];
  // A real server sends exactly one byte and then waits; more bytes (an SSH banner starts with S) is something else.
  if (reply.data.length === 1 && first === 0x4e) return answered(s, 'app', { postgres: { sslResponse: 'N' } });
  if (reply.data.length === 1 && first === 0x53) return acceptTls(s, host);
  // Very old servers, and a postmaster that cannot fork, answer the SSLRequest with an error.
  if (first === 0x45) {
    s.pending = reply.data;
    const frame = await readFrame(s);
    if (frame.kind === 'message' && frame.type === 'E') return answered(s, 'app', { postgres: errorFields(frame.body) });
    if (frame.kind === 'error-v2') return answered(s, 'app', { postgres: { message: frame.message } });
  }
  return mismatch(s, reply.data);
}

/**
 * After `S` the backend waits in SSL_accept; dropping the connection there makes it log "could not accept
 * SSL connection: EOF detected". Completing the handshake and closing cleanly logs nothing, and shows the certificate.
 */
async function acceptTls(s: Session, host: string | undefined): Promise<ProbeResult> {
  const ssl = { sslResponse: 'S' as const };
  const handshakeAt = performance.now();
  // SNI carries names only; an IP there makes Node warn and servers ignore it.
  const servername = host !== undefined && net.isIP(host) === 0 ? host : undefined;
  const secure = tls.connect({ socket: s.socket, servername, rejectUnauthorized: false });
  s.socket = secure;
  const end = await new Promise<{ ok: true } | { ok: false; code: string }>((resolve) => {
    const finish = (value: { ok: true } | { ok: false; code: string }) => {
      s.signal.removeEventListener('abort', onAbort);
      secure.removeListener('error', onError);
      resolve(value);
    };
    const onError = (err: unknown) => finish({ ok: false, code: errorCode(err) });
    const onAbort = () => finish({ ok: false, code: abortCode(s.signal) });
    if (s.signal.aborted) return onAbort();
    s.signal.addEventListener('abort', onAbort, { once: true });
    secure.once('error', onError);
    secure.once('secureConnect', () => finish({ ok: true }));
  });
  // Errors after this point (the peer resetting while we close) must not go unhandled.
  secure.on('error', () => undefined);
  if (!end.ok) {
    return answered(s, 'app', { postgres: ssl, errno: end.code, detail: `the server offered TLS but the handshake did not complete (${end.code})` });
  }
  // The handshake alone: it starts after the S byte, not at connect as in openConnection.
  s.tlsMs = round(performance.now() - handshakeAt);
  return answered(s, 'app', { postgres: ssl, tls: tlsEvidence(secure) });
}

async function startup(s: Session): Promise<ProbeResult> {
  s.socket.write(startupMessage());
  const pg: PostgresEvidence = {};
  let spoke = false;
  let clientNonce: string | undefined;
  let loggedIn = false;
  // Enough for SASL (three round trips) plus notices; a server that keeps talking is cut off here.
  for (let step = 0; step < 8; step++) {
    const frame = await readFrame(s);
    if (frame.kind === 'end') return spoke ? interrupted(s, pg, frame.end, frame.code) : noAnswer(s, frame.end, frame.code);
    if (frame.kind === 'foreign') {
      if (!spoke) return mismatch(s, frame.data);
      return answered(s, 'app', { postgres: pg, detail: `after answering in Postgres the server sent: ${printable(frame.data)}` });
    }
    spoke = true;
    if (frame.kind === 'error-v2') return answered(s, 'app', { postgres: { ...pg, message: frame.message } });
    const { type, body } = frame;
    if (type === 'E') return answered(s, 'app', { postgres: { ...pg, ...errorFields(body) } });
    if (type === 'N' || type === 'v') continue;
    if (type !== 'R') {
      // ParameterStatus, BackendKeyData, ReadyForQuery: we are in a session; leave the way the protocol asks.
      if (loggedIn) s.socket.write(Buffer.from('5800000004', 'hex'));
      return answered(s, 'app', {
        postgres: pg,
        detail: loggedIn ? 'the server let a non-existent role in without a password' : `unexpected message ${type} during authentication`,
      });
    }
    if (body.length < 4) return answered(s, 'app', { postgres: pg, detail: 'truncated authentication request' });
    const code = body.readUInt32BE(0);
    switch (code) {
      case 0:
        pg.auth = pg.auth === undefined ? 'Ok' : `${pg.auth}, then Ok`;
        loggedIn = true;
        continue;
      case 3:
        pg.auth = 'CleartextPassword';
        s.socket.write(message('p', cstring('bulkhead-probe')));
        continue;
      case 5:
        pg.auth = 'MD5Password';
        s.socket.write(message('p', cstring(`md5${'0'.repeat(32)}`)));
        continue;
      case 10: {
        const mechanisms = cstrings(body.subarray(4));
        pg.auth = `SASL ${mechanisms.join(' ')}`.slice(0, 200);
        if (!mechanisms.includes('SCRAM-SHA-256')) {
          return answered(s, 'app', { postgres: pg, detail: 'no SASL mechanism the probe can answer without channel binding' });
        }
        clientNonce = randomBytes(18).toString('base64');
        const clientFirst = Buffer.from(`n,,n=,r=${clientNonce}`);
        s.socket.write(message('p', cstring('SCRAM-SHA-256'), int32(clientFirst.length), clientFirst));
        continue;
      }
      case 11: {
        // server-first-message: r=<client nonce + server nonce>,s=<salt>,i=<iterations>
        const attrs = new Map(body.subarray(4).toString('utf8').split(',').map((kv) => [kv.slice(0, 2), kv.slice(2)] as const));
        const serverNonce = attrs.get('r=');
        if (!clientNonce || !serverNonce?.startsWith(clientNonce) || !attrs.has('s=') || !attrs.has('i=')) {
          return answered(s, 'app', { postgres: pg, detail: 'malformed SCRAM server-first-message' });
        }
        // A random proof: the server must reject it, and says so with 28P01.
        const clientFinal = `c=biws,r=${serverNonce},p=${randomBytes(32).toString('base64')}`;
        s.socket.write(message('p', Buffer.from(clientFinal)));
        continue;
      }
      case 12:
        continue;
      default:
        pg.auth = AUTH_NAMES[code] ?? `method ${code}`;
        return answered(s, 'app', { postgres: pg, detail: `the server asked for ${pg.auth}, which the probe does not answer` });
    }
  }
  return answered(s, 'app', { postgres: pg, detail: 'the server kept talking; the probe stopped reading' });
}

const AUTH_NAMES: Record<number, string> = { 2: 'KerberosV5', 6: 'SCMCredential', 7: 'GSS', 8: 'GSSContinue', 9: 'SSPI' };

type Frame =
  | { kind: 'message'; type: string; body: Buffer; size: number }
  | { kind: 'error-v2'; message: string; size: number }
  | { kind: 'foreign'; data: Buffer }
  | { kind: 'partial' };

/** Splits one backend message off the front of `buf`, or says it is incomplete or not Postgres at all. */
function parseFrame(buf: Buffer): Frame {
  if (buf.length === 0) return { kind: 'partial' };
  const type = String.fromCharCode(buf[0]!);
  if (!BACKEND_TYPES.has(type)) return { kind: 'foreign', data: buf };
  if (buf.length < 5) return { kind: 'partial' };
  const length = buf.readUInt32BE(1);
  if (length >= 4 && length <= MAX_MESSAGE) {
    return buf.length >= 1 + length ? { kind: 'message', type, body: buf.subarray(5, 1 + length), size: 1 + length } : { kind: 'partial' };
  }
  // Protocol-2 style "E<text>\0": what a postmaster still sends when it cannot fork a backend.
  if (type === 'E') {
    const nul = buf.indexOf(0, 1);
    const text = buf.subarray(1, nul < 0 ? buf.length : nul).toString('latin1');
    if (!/^[\x20-\x7e\t\n]*$/.test(text)) return { kind: 'foreign', data: buf };
    return nul < 0 ? { kind: 'partial' } : { kind: 'error-v2', message: text.trim().slice(0, 512), size: nul + 1 };
  }
  return { kind: 'foreign', data: buf };
}

type ReadFrame = Exclude<Frame, { kind: 'partial' }> | { kind: 'end'; end: ReadEnd; code?: string };

/** The next backend message, reading more from the socket only when what is buffered is incomplete. */
async function readFrame(s: Session): Promise<ReadFrame> {
  let frame = parseFrame(s.pending);
  if (frame.kind === 'partial') {
    // A peer that already closed would never fire 'close' again for readReply.
    if (s.socket.readableEnded || s.socket.destroyed) return { kind: 'end', end: 'closed' };
    const reply = await readReply(s.socket, s.signal, (data) => parseFrame(Buffer.concat([s.pending, data])).kind !== 'partial', MAX_MESSAGE + 5);
    s.firstByteAt ??= reply.firstByteAt;
    s.pending = Buffer.concat([s.pending, reply.data]);
    frame = parseFrame(s.pending);
    if (frame.kind === 'partial') {
      if (reply.end === 'complete') return { kind: 'foreign', data: s.pending };
      if (s.pending.length > 0 && reply.end === 'closed') return { kind: 'foreign', data: s.pending };
      return { kind: 'end', end: reply.end, code: reply.code };
    }
  }
  if (frame.kind === 'message' || frame.kind === 'error-v2') s.pending = s.pending.subarray(frame.size);
  return frame;
}

function errorFields(body: Buffer): PostgresEvidence {
  const out: PostgresEvidence = {};
  let severity: string | undefined;
  for (let at = 0; at < body.length && body[at] !== 0; ) {
    const code = String.fromCharCode(body[at]!);
    const end = body.indexOf(0, at + 1);
    const value = body.subarray(at + 1, end < 0 ? body.length : end).toString('utf8').slice(0, 512);
    if (code === 'V') out.severity = value;
    if (code === 'S') severity = value;
    if (code === 'C') out.sqlstate = value;
    if (code === 'M') out.message = value;
    if (end < 0) break;
    at = end + 1;
  }
  // V is the untranslated severity (9.6+); S may be localized.
  out.severity ??= severity;
  return out;
}

function answered(s: Session, layer: Layer, extra: Partial<Evidence>): ProbeResult {
  const now = performance.now();
  return {
    outcome: 'open',
    layer,
    evidence: { ...s.evidence, ...extra },
    timings: {
      connectMs: s.connectMs,
      ...(s.tlsMs !== undefined ? { tlsMs: s.tlsMs } : {}),
      ...(s.firstByteAt !== undefined ? { firstByteMs: round(s.firstByteAt - s.startedAt) } : {}),
      totalMs: round(now - s.startedAt),
    },
  };
}

/** Something answered, but not in Postgres: the path is open all the same; app is reserved for Postgres itself. */
function mismatch(s: Session, data: Buffer): ProbeResult {
  return answered(s, 'tcp', { protocol: 'mismatch', detail: `the server answered in another protocol: ${printable(data)}` });
}

/** TCP connected but nothing Postgres-like came back: still open (SPEC §3 rule 3), at the tcp layer. */
function noAnswer(s: Session, end: ReadEnd, code?: string): ProbeResult {
  if (end === 'aborted') {
    return answered(s, 'tcp', { errno: code, detail: 'attempt cancelled after TCP connected, before the server answered' });
  }
  const detail =
    end === 'timeout'
      ? 'TCP connected but the server stayed silent until the timeout'
      : end === 'error'
        ? `TCP connected but the connection failed (${code}) before the server answered`
        : 'TCP connected but the server closed the connection without answering';
  return answered(s, 'tcp', { protocol: 'mismatch', detail, ...(code ? { errno: code } : {}) });
}

/** The server spoke Postgres, then went quiet or away mid-authentication: open at the app layer. */
function interrupted(s: Session, pg: PostgresEvidence, end: ReadEnd, code?: string): ProbeResult {
  const why = end === 'timeout' ? 'stopped answering' : end === 'aborted' ? 'was still talking when the attempt was cancelled' : 'closed the connection';
  return answered(s, 'app', { postgres: pg, detail: `the server ${why} during authentication`, ...(code ? { errno: code } : {}) });
}

/** Ends our side and waits briefly for the server to close, so it sees a clean EOF rather than a reset. */
async function closeGracefully(socket: net.Socket, signal: AbortSignal): Promise<void> {
  if (socket.destroyed || signal.aborted) {
    socket.destroy();
    return;
  }
  socket.on('error', () => undefined);
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, CLOSE_GRACE_MS);
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    socket.once('close', done);
    signal.addEventListener('abort', done, { once: true });
    socket.end();
    socket.resume();
  });
  socket.destroy();
}

function startupMessage(): Buffer {
  const params = ['user', PROBE_ROLE, 'database', PROBE_ROLE, 'application_name', 'bulkhead'];
  return message(null, int32(PROTOCOL_3_0), ...params.map(cstring), Buffer.from([0]));
}

/** A frontend message: optional type byte, then an int32 length that counts itself. */
function message(type: string | null, ...parts: Buffer[]): Buffer {
  const body = Buffer.concat(parts);
  const head = type === null ? int32(body.length + 4) : Buffer.concat([Buffer.from(type), int32(body.length + 4)]);
  return Buffer.concat([head, body]);
}

function int32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n);
  return b;
}

const cstring = (text: string) => Buffer.from(`${text}\0`, 'utf8');

function cstrings(buf: Buffer): string[] {
  return buf
    .toString('utf8')
    .split('\0')
    .filter((v) => v !== '');
}
