// Helpers every receiver file uses: limit-safe truncation, Retry-After parsing, the common HTTP verdicts, and the
// few words a human reads first (FIRING/RESOLVED, which path).
import { BulkheadError } from '../../core/errors.js';
import type { Finding, Notification, NotificationAction } from '../model.js';
import type { Verdict } from './types.js';

/** A receiver used the wrong way (a programmer or configuration mistake, never a delivery failure). */
export class ReceiverError extends BulkheadError {
  constructor(code: 'RECEIVER_GROUP' | 'RECEIVER_CONFIG', message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

export const ELLIPSIS = '…';

/**
 * Cuts `text` to at most `max` UTF-16 units (what `.length` and the vendors' JSON validators count), ending with an
 * ellipsis when cut. Cuts on code-point boundaries so a surrogate pair is never split.
 */
export function truncate(text: string, max: number): string {
  if (text.length <= max) return text;
  const budget = max - ELLIPSIS.length;
  let out = '';
  for (const ch of text) {
    if (out.length + ch.length > budget) break;
    out += ch;
  }
  return out + ELLIPSIS;
}

export const utf8Bytes = (text: string): number => Buffer.byteLength(text, 'utf8');

/** One header's value, looked up case-insensitively (a repeated header yields its first value). */
export function header(headers: Record<string, string | string[] | undefined>, name: string): string | undefined {
  const wanted = name.toLowerCase();
  for (const [key, value] of Object.entries(headers)) {
    if (key.toLowerCase() === wanted) return Array.isArray(value) ? value[0] : value;
  }
  return undefined;
}

/**
 * `Retry-After` in ms. Only the delta-seconds form is read: an HTTP-date would need a clock, and classifiers are pure.
 * Vendors (Slack, PagerDuty) send seconds; a date or garbage falls back to the caller's backoff.
 */
export function retryAfterMs(headers: Record<string, string | string[] | undefined>): number | undefined {
  const value = header(headers, 'retry-after')?.trim();
  if (value === undefined || !/^\d{1,9}$/.test(value)) return undefined;
  return Number(value) * 1000;
}

/** The start of a response body for a verdict's reason: vendors put their error code there. */
export const snippet = (body: string): string => truncate(body.replace(/\s+/g, ' ').trim(), 200);

/** A retry verdict that carries Retry-After when the answer had one. */
export function retry(status: number, headers: Record<string, string | string[] | undefined>, body: string): Verdict {
  const afterMs = retryAfterMs(headers);
  const reason = `HTTP ${status}${body ? `: ${snippet(body)}` : ''}`;
  return afterMs === undefined ? { kind: 'retry', reason } : { kind: 'retry', afterMs, reason };
}

export function permanent(status: number, body: string): Verdict {
  return { kind: 'permanent', reason: `HTTP ${status}${body ? `: ${snippet(body)}` : ''}` };
}

/** The usual rule (Alertmanager's Retrier): 2xx delivered; 429 and 5xx retried; anything else is permanent. */
export function classifyHttp(status: number, headers: Record<string, string | string[] | undefined>, body: string): Verdict {
  if (status >= 200 && status < 300) return { kind: 'delivered' };
  if (status === 429 || status >= 500) return retry(status, headers, body);
  return permanent(status, body);
}

/** What a human reads first: an update (flapping) is still firing. */
export function statusWord(action: NotificationAction): 'FIRING' | 'RESOLVED' {
  return action === 'resolve' ? 'RESOLVED' : 'FIRING';
}

/** `staging → prod-db (prod)`, `staging → prod`, or just the environment a finding is about. */
export function pathOf(finding: Finding): string {
  const { from_env: from, to_env: to, target } = finding.labels;
  const dest = target !== undefined ? (to !== undefined ? `${target} (${to})` : target) : to;
  if (from !== undefined && dest !== undefined) return `${from} → ${dest}`;
  return from ?? dest ?? finding.key;
}

/** The flags a firing finding carries, for the one-line renderings. */
export function flagsOf(finding: Finding): string {
  return [finding.stale ? 'stale' : '', finding.flapping ? 'flapping' : ''].filter(Boolean).join(', ');
}


/** Refuses an empty group: there is nothing to render and it is always the caller's mistake. */
export function nonEmpty(notifications: readonly Notification[], receiver: string): asserts notifications is readonly [Notification, ...Notification[]] {
  if (notifications.length === 0) throw new ReceiverError('RECEIVER_GROUP', `${receiver}: nothing to render (empty group)`);
}

/** What a notification says in one line: a resolve repeats what fired, marked as over, so nobody reads it as open. */
export function sentence(action: NotificationAction, summary: string): string {
  return action === 'resolve' ? `closed again (it fired for: ${summary})` : summary;
}
