// The http probe (SPEC §4): one request over a fresh connection, redirects not followed, the certificate
// recorded rather than verified. We open the socket ourselves so the timings and TLS evidence are ours,
// then lend it to an undici Client that can never open a second one.
import { isIP } from 'node:net';
import type net from 'node:net';
import { performance } from 'node:perf_hooks';
import { Client, errors } from 'undici';
import type { Evidence, Layer, ProbeResult } from '../core/outcome.js';
import type { TargetOf } from '../core/plan.js';
import type { ProbeFn } from './types.js';
import { openConnection, round, type Connection } from './connect.js';
import { abortCode, errorCode, isTimeout } from './errors.js';

const USER_AGENT = 'bulkhead-probe/0.1';
// The body is irrelevant to the verdict; read a little so the server sees a clean exchange, then hang up.
const DRAIN_BYTES = 4096;
const DRAIN_MS = 200;
const HEADER_MAX = 512;

/** Sends one request to req.address:req.port for the target URL and reports any HTTP answer as open. */
export const probeHttp: ProbeFn<'http'> = async (req, signal) => {
  const startedAt = performance.now();
  const url = new URL(req.target.url);
  const secure = url.protocol === 'https:';
  const hostname = url.hostname.replace(/^\[(.*)\]$/, '$1');
  const connection = await openConnection({
    address: req.address,
    port: req.port,
    tls: secure ? { servername: isIP(hostname) === 0 ? hostname : undefined, alpn: ['http/1.1'] } : undefined,
    signal,
    startedAt,
  });
  const named = req.host !== undefined ? { host: req.host } : {};
  const result = connection.ok ? await exchange(connection, url, req.target, signal, startedAt, secure ? 'tls' : 'tcp') : connection.result;
  return { ...result, evidence: { ...result.evidence, ...named } };
};

async function exchange(
  connection: Connection,
  url: URL,
  target: TargetOf<'http'>,
  signal: AbortSignal,
  startedAt: number,
  connectedLayer: Layer,
): Promise<ProbeResult> {
  const { socket } = connection;
  // Between our handshake and undici's listeners an error must not crash the agent; undici sees it anyway.
  socket.on('error', () => {});
  const client = new Client(url.origin, {
    connect: lendOnce(socket),
    pipelining: 1,
    allowH2: false,
    // The caller's signal is the only clock; undici's own timers would race it with other codes.
    headersTimeout: 0,
    bodyTimeout: 0,
  });
  const timings = () => ({
    connectMs: connection.connectMs,
    ...(connection.tlsMs !== undefined ? { tlsMs: connection.tlsMs } : {}),
  });
  try {
    const response = await client.request({
      method: target.method,
      path: `${url.pathname}${url.search}`,
      headers: { host: url.host, 'user-agent': USER_AGENT, connection: 'close' },
      signal,
    });
    const firstByteMs = round(performance.now() - startedAt);
    const drainSignal = AbortSignal.any([signal, AbortSignal.timeout(DRAIN_MS)]);
    await response.body.dump({ limit: DRAIN_BYTES, signal: drainSignal }).catch(() => {});
    const header = (name: string) => {
      const value = response.headers[name];
      const first = Array.isArray(value) ? value[0] : value;
      return first === undefined ? {} : { [name === 'content-type' ? 'contentType' : name]: first.slice(0, HEADER_MAX) };
    };
    return {
      outcome: 'open',
      layer: 'app',
      evidence: {
        ...connection.evidence,
        http: { status: response.statusCode, ...header('server'), ...header('location'), ...header('content-type') },
      },
      timings: { ...timings(), firstByteMs, totalMs: round(performance.now() - startedAt) },
    };
  } catch (err) {
    return {
      outcome: 'open',
      layer: connectedLayer,
      evidence: { ...connection.evidence, ...noAnswer(err, signal, connectedLayer) },
      timings: { ...timings(), totalMs: round(performance.now() - startedAt) },
    };
  } finally {
    await client.destroy().catch(() => {});
    socket.destroy();
  }
}

/** A connector that hands undici our socket once and refuses any reconnect: one attempt, one flow. */
function lendOnce(socket: net.Socket) {
  let lent = false;
  return (_options: unknown, callback: (...args: [null, net.Socket] | [Error, null]) => void) => {
    if (lent) {
      callback(Object.assign(new Error('the probe allows one connection per attempt'), { code: 'ECONNRESET' }), null);
      return;
    }
    lent = true;
    // Undici calls the connector from inside its dispatch loop and ignores a resume from within it:
    // a synchronous callback would leave the request queued forever.
    queueMicrotask(() => callback(null, socket));
  };
}

/** Evidence for a connected peer that gave no HTTP answer: a mismatch, or a cancelled run. */
function noAnswer(err: unknown, signal: AbortSignal, layer: Layer): Evidence {
  const reached = layer === 'tls' ? 'TLS completed' : 'TCP connected';
  if (signal.aborted && !isTimeout(signal)) {
    // A cancelled run proves nothing about what the peer speaks; the path is open all the same.
    return { errno: abortCode(signal), detail: `${reached}; attempt cancelled before an HTTP answer` };
  }
  if (isTimeout(signal)) {
    return { errno: abortCode(signal), protocol: 'mismatch', detail: `${reached} but the peer stayed silent until the timeout` };
  }
  const code = answerErrorCode(err);
  return { errno: code, protocol: 'mismatch', detail: `${reached} but the peer did not answer in HTTP (${code})` };
}

/** The code of an error from the exchange; undici 7 leaves HTTPParserError.code unset, so name it by its class. */
function answerErrorCode(err: unknown): string {
  const code = errorCode(err);
  // undici looks the llhttp error number up in a name-to-number table, so `code` comes out undefined.
  return code === 'UNKNOWN' && err instanceof errors.HTTPParserError ? 'UND_ERR_HTTP_PARSER' : code;
}
