// The single place where library and system errors become outcomes, by error code, never by message text.
import type { Outcome } from '../core/outcome.js';

const REFUSED = new Set(['ECONNREFUSED', 'ECONNRESET']);
const UNREACHABLE = new Set(['EHOSTUNREACH', 'ENETUNREACH', 'EHOSTDOWN', 'ENETDOWN', 'EPERM', 'EACCES', 'EPROTO_ICMP']);
const FILTERED = new Set(['ETIMEDOUT', 'UND_ERR_CONNECT_TIMEOUT']);
// Local resource or setup problems: the attempt says nothing about the path.
const LOCAL = new Set(['EMFILE', 'ENFILE', 'ENOBUFS', 'ENOMEM', 'EADDRNOTAVAIL', 'EADDRINUSE', 'EINVAL', 'EAFNOSUPPORT']);

/** The error code of a Node, undici or DOM error, or `UNKNOWN`. */
export function errorCode(err: unknown): string {
  if (err !== null && typeof err === 'object') {
    const code = (err as { code?: unknown }).code;
    if (typeof code === 'string' && code !== '') return code;
    const name = (err as { name?: unknown }).name;
    if (name === 'TimeoutError' || name === 'AbortError') return name;
    const cause = (err as { cause?: unknown }).cause;
    if (cause !== undefined && cause !== err) return errorCode(cause);
  }
  return 'UNKNOWN';
}

/** Outcome of an attempt that failed *before* a connection was established, from the error's code. */
export function outcomeForConnectError(code: string): Outcome {
  if (REFUSED.has(code)) return 'refused';
  if (UNREACHABLE.has(code)) return 'unreachable';
  if (FILTERED.has(code) || code === 'TimeoutError') return 'filtered';
  if (LOCAL.has(code)) return 'error';
  return 'error';
}

/** True when the signal fired because the per-attempt timeout elapsed (not because the run was cancelled). */
export function isTimeout(signal: AbortSignal): boolean {
  return signal.aborted && (signal.reason as { name?: unknown } | undefined)?.name === 'TimeoutError';
}

/** The code to record for an aborted attempt: `TimeoutError` for the timeout, `ABORTED` for cancellation. */
export function abortCode(signal: AbortSignal): string {
  return isTimeout(signal) ? 'TimeoutError' : 'ABORTED';
}
