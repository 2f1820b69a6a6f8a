// Fresh TCP (and optional TLS) connections with timings and evidence, shared by the tcp, http, postgres
// and redis probes. One socket per attempt, never pooled: an established flow can survive a firewall change.
import net from 'node:net';
import tls from 'node:tls';
import { performance } from 'node:perf_hooks';
import type { Evidence, ProbeResult, TlsEvidence } from '../core/outcome.js';
import { abortCode, errorCode, isTimeout, outcomeForConnectError } from './errors.js';

export interface ConnectOptions {
  readonly address: string;
  readonly port: number;
  /** Perform a TLS handshake after TCP connects; verification is recorded, never required. */
  readonly tls?: { readonly servername?: string; readonly alpn?: readonly string[] };
  readonly signal: AbortSignal;
  /** `performance.now()` at the start of the attempt; timings are measured from it. */
  readonly startedAt: number;
}

export interface Connection {
  readonly ok: true;
  readonly socket: net.Socket;
  readonly evidence: Evidence;
  readonly connectMs: number;
  readonly tlsMs?: number;
}

/** Either a live connection, or the finished result of an attempt that ended during connect or TLS. */
export type ConnectResult = Connection | { readonly ok: false; readonly result: ProbeResult };

const sinceMs = (startedAt: number) => round(performance.now() - startedAt);
/** Rounds a duration to 0.01 ms. */
export const round = (ms: number) => Math.round(ms * 100) / 100;

/** Opens one fresh connection to address:port; resolves, never rejects. */
export function openConnection(opts: ConnectOptions): Promise<ConnectResult> {
  const { address, port, signal, startedAt } = opts;
  const evidence: Evidence = { remoteAddress: address, remotePort: port };
  if (signal.aborted) {
    return Promise.resolve({ ok: false, result: notConnected(abortCode(signal), evidence, startedAt) });
  }
  return new Promise((resolve) => {
    const socket = net.connect({ host: address, port, noDelay: true });
    let settled = false;
    const finish = (value: ConnectResult) => {
      if (settled) return;
      settled = true;
      signal.removeEventListener('abort', onAbort);
      socket.removeListener('error', onError);
      if (!value.ok) socket.destroy();
      resolve(value);
    };
    const onError = (err: unknown) => finish({ ok: false, result: notConnected(errorCode(err), evidence, startedAt) });
    const onAbort = () => finish({ ok: false, result: notConnected(abortCode(signal), evidence, startedAt) });
    signal.addEventListener('abort', onAbort, { once: true });
    socket.once('error', onError);
    socket.once('connect', () => {
      const connectMs = sinceMs(startedAt);
      evidence.localAddress = socket.localAddress;
      evidence.localPort = socket.localPort;
      if (!opts.tls) {
        finish({ ok: true, socket, evidence, connectMs });
        return;
      }
      // From here on the path is open whatever happens: TCP connected.
      socket.removeListener('error', onError);
      signal.removeEventListener('abort', onAbort);
      settled = true;
      upgradeToTls(socket, opts, evidence, connectMs).then(resolve);
    });
  });
}

function upgradeToTls(raw: net.Socket, opts: ConnectOptions, evidence: Evidence, connectMs: number): Promise<ConnectResult> {
  const { signal, startedAt } = opts;
  return new Promise((resolve) => {
    const servername = opts.tls?.servername && net.isIP(opts.tls.servername) === 0 ? opts.tls.servername : undefined;
    const socket = tls.connect({
      socket: raw,
      servername,
      rejectUnauthorized: false,
      ALPNProtocols: opts.tls?.alpn ? [...opts.tls.alpn] : undefined,
    });
    let settled = false;
    const finish = (value: ConnectResult) => {
      if (settled) return;
      settled = true;
      signal.removeEventListener('abort', onAbort);
      socket.removeListener('error', onError);
      if (!value.ok) socket.destroy();
      resolve(value);
    };
    const openWithoutTls = (code: string, detail: string): ConnectResult => ({
      ok: false,
      result: {
        outcome: 'open',
        layer: 'tcp',
        evidence: { ...evidence, errno: code, protocol: 'mismatch', detail },
        timings: { connectMs, totalMs: sinceMs(startedAt) },
      },
    });
    const onError = (err: unknown) => {
      const code = errorCode(err);
      finish(openWithoutTls(code, `TCP connected but the TLS handshake failed (${code})`));
    };
    const onAbort = () => {
      const detail = isTimeout(signal) ? 'TCP connected but the TLS handshake did not finish before the timeout' : 'attempt cancelled during the TLS handshake';
      finish(openWithoutTls(abortCode(signal), detail));
    };
    signal.addEventListener('abort', onAbort, { once: true });
    socket.once('error', onError);
    socket.once('secureConnect', () => {
      evidence.tls = tlsEvidence(socket);
      finish({ ok: true, socket, evidence, connectMs, tlsMs: round(sinceMs(startedAt) - connectMs) });
    });
  });
}

/** The result of an attempt that never connected: refused, filtered, unreachable or error by code. */
export function notConnected(code: string, evidence: Evidence, startedAt: number): ProbeResult {
  const outcome = code === 'ABORTED' ? 'error' : outcomeForConnectError(code);
  const detail = code === 'ABORTED' ? 'attempt cancelled before it could finish' : undefined;
  return {
    outcome,
    layer: 'tcp',
    evidence: { ...evidence, errno: code, ...(detail ? { detail } : {}) },
    timings: { totalMs: sinceMs(startedAt) },
  };
}

/** Certificate and protocol evidence of a completed TLS handshake. */
export function tlsEvidence(socket: tls.TLSSocket): TlsEvidence {
  const cert = socket.getPeerCertificate(false);
  const name = (fields: Record<string, unknown> | undefined) =>
    fields
      ? Object.entries(fields)
          .map(([k, v]) => `${k}=${Array.isArray(v) ? v.join('+') : String(v)}`)
          .join(', ')
      : undefined;
  const out: TlsEvidence = { protocol: socket.getProtocol() ?? undefined, authorized: socket.authorized };
  if (!socket.authorized && socket.authorizationError) out.authorizationError = String(socket.authorizationError);
  if (cert && Object.keys(cert).length > 0) {
    out.subject = name(cert.subject as unknown as Record<string, unknown>);
    out.issuer = name(cert.issuer as unknown as Record<string, unknown>);
    if (cert.subjectaltname) out.subjectAltName = cert.subjectaltname;
    out.fingerprint256 = cert.fingerprint256;
    out.validFrom = cert.valid_from;
    out.validTo = cert.valid_to;
  }
  return out;
}

export type ReadEnd = 'complete' | 'closed' | 'timeout' | 'aborted' | 'error';

/**
 * Reads from a connected socket until `complete(buffer)` says enough arrived, the peer closes, the
 * signal fires, or `maxBytes` is reached. Resolves with what arrived and why reading stopped.
 */
export function readReply(
  socket: net.Socket,
  signal: AbortSignal,
  complete: (data: Buffer) => boolean,
  maxBytes = 4096,
): Promise<{ data: Buffer; end: ReadEnd; firstByteAt?: number; code?: string }> {
  return new Promise((resolve) => {
    let data = Buffer.alloc(0);
    let firstByteAt: number | undefined;
    let settled = false;
    const finish = (end: ReadEnd, code?: string) => {
      if (settled) return;
      settled = true;
      socket.removeListener('data', onData);
      socket.removeListener('end', onClose);
      socket.removeListener('close', onClose);
      socket.removeListener('error', onError);
      signal.removeEventListener('abort', onAbort);
      resolve({ data, end, firstByteAt, code });
    };
    const onData = (chunk: Buffer) => {
      firstByteAt ??= performance.now();
      data = Buffer.concat([data, chunk]);
      if (complete(data) || data.length >= maxBytes) finish('complete');
    };
    const onClose = () => finish('closed');
    const onError = (err: unknown) => finish('error', errorCode(err));
    const onAbort = () => finish(isTimeout(signal) ? 'timeout' : 'aborted', abortCode(signal));
    if (signal.aborted) return onAbort();
    socket.on('data', onData);
    socket.once('end', onClose);
    socket.once('close', onClose);
    socket.once('error', onError);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** A short printable rendering of bytes a peer sent, for evidence. */
export function printable(data: Buffer, max = 120): string {
  const text = data.subarray(0, max).toString('latin1').replace(/[^\x20-\x7e]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
  return data.length > max ? `${text}…` : text;
}
