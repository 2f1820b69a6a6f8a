// The redis probe (SPEC §4): an inline `PING` over a fresh connection (TLS when the target asks), classified
// by the first reply line. Any RESP reply is open: -NOAUTH and -DENIED prove the path as well as +PONG does.
import { performance } from 'node:perf_hooks';
import { assertNever, type Evidence, type Layer, type ProbeResult } from '../core/outcome.js';
import { openConnection, printable, readReply, round, type Connection, type ReadEnd } from './connect.js';
import type { ProbeFn } from './types.js';

const PING = Buffer.from('PING\r\n');
// A PING reply is one short line; a peer that sends more without a line break is not speaking RESP.
const MAX_LINE_BYTES = 512;
const MAX_REPLY_CHARS = 200;
// RESP2 and RESP3 type markers: simple string, error, integer, bulk, array, null, double, boolean,
// blob error, verbatim, big number, map, set, push, attribute.
const RESP_TYPES = new Set('+-:$*_,#!=(%~>|');

/** Sends `PING` to req.address:req.port and reports whether anything answered, and in which protocol. */
export const probeRedis: ProbeFn<'redis'> = async (req, signal) => {
  const startedAt = performance.now();
  const { target } = req;
  const connection = await openConnection({
    address: req.address,
    port: req.port,
    tls: target.tls ? { servername: req.host } : undefined,
    signal,
    startedAt,
  });
  const named = req.host !== undefined ? { host: req.host } : {};
  if (!connection.ok) return { ...connection.result, evidence: { ...connection.result.evidence, ...named } };

  const { socket } = connection;
  // A peer resetting after we stop listening must not become an unhandled 'error'.
  socket.on('error', () => undefined);
  try {
    socket.write(PING);
    const reply = await readReply(socket, signal, (data) => data.includes('\r\n'), MAX_LINE_BYTES);
    return classify(connection, { ...connection.evidence, ...named }, reply, startedAt, target.tls ? 'tls' : 'tcp');
  } finally {
    socket.destroy();
  }
};

interface Reply {
  readonly data: Buffer;
  readonly end: ReadEnd;
  readonly firstByteAt?: number;
  readonly code?: string;
}

function classify(connection: Connection, evidence: Evidence, reply: Reply, startedAt: number, transport: Layer): ProbeResult {
  const result = (layer: Layer, extra: Partial<Evidence>): ProbeResult => ({
    outcome: 'open',
    layer,
    evidence: { ...evidence, ...extra },
    timings: {
      connectMs: connection.connectMs,
      ...(connection.tlsMs !== undefined ? { tlsMs: connection.tlsMs } : {}),
      ...(reply.firstByteAt !== undefined ? { firstByteMs: round(reply.firstByteAt - startedAt) } : {}),
      totalMs: round(performance.now() - startedAt),
    },
  });
  const reached = transport === 'tls' ? 'TLS completed' : 'TCP connected';
  const { data } = reply;
  const lineEnd = data.indexOf('\r\n');

  if (data.length > 0 && RESP_TYPES.has(String.fromCharCode(data[0]!)) && lineEnd > 0) {
    return result('app', { redis: { reply: printable(data.subarray(0, lineEnd), MAX_REPLY_CHARS) } });
  }
  if (data.length > 0) {
    // Something answered, in another protocol (HTTP, NATS INFO, a banner): the path is open all the same.
    return result(transport, { protocol: 'mismatch', detail: `${reached} but the peer answered in another protocol: ${printable(data)}` });
  }
  switch (reply.end) {
    case 'aborted':
      return result(transport, { errno: reply.code, detail: `${reached}; attempt cancelled before the peer answered` });
    case 'timeout':
      return result(transport, { errno: reply.code, protocol: 'mismatch', detail: `${reached} but the peer stayed silent until the timeout` });
    case 'error':
      return result(transport, {
        errno: reply.code,
        protocol: 'mismatch',
        detail: `${reached} but the connection failed (${reply.code}) before the peer answered`,
      });
    case 'closed':
    case 'complete':
      return result(transport, { protocol: 'mismatch', detail: `${reached} but the peer closed the connection without answering` });
    default:
      return assertNever(reply.end);
  }
}
