// One receiver's sending lane: a FIFO of requests sent one at a time (so a resolve never overtakes its trigger),
// paced by a token bucket (the receiver's rate limit), retried on 429/5xx/network errors — honouring Retry-After,
// otherwise exponential backoff with jitter — and never retried on a permanent refusal.
import { request } from 'undici';
import type { Log } from '../ingest.js';
import type { Notification } from '../model.js';
import type { ReceiverRuntime } from '../receivers/config.js';
import {
  classifyAlertmanager,
  classifyPagerDuty,
  classifySlack,
  classifyWebhook,
  renderAlertmanager,
  renderConsole,
  renderPagerDuty,
  renderSlack,
  renderWebhook,
  type OutgoingRequest,
  type Verdict,
} from '../receivers/index.js';
import type { Clock, Timer } from './clock.js';

export const REQUEST_TIMEOUT_MS = 10_000;
/** Webhook and Alertmanager requests carry at most this many notifications each. */
const BATCH = 100;
const BACKOFF_BASE_MS = 1_000;
const BACKOFF_CAP_MS = 60_000;
/** A Retry-After beyond this is a vendor mistake or an attack on our queue: wait this long instead. */
const RETRY_AFTER_CAP_MS = 3_600_000;
const MAX_BODY_BYTES = 64 * 1024;

/** One request's worth of notifications; a reminder re-sends firing findings and settles nothing. */
export interface Send {
  readonly notifications: readonly Notification[];
  readonly reminder: boolean;
  attempts: number;
  notBefore: number;
  lastError: string | null;
}

export type SendResult = { readonly kind: 'delivered' } | { readonly kind: 'dead'; readonly reason: string };

export interface HttpAnswer {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: string;
}

export type Post = (req: OutgoingRequest, timeoutMs: number) => Promise<HttpAnswer>;

export interface LaneDeps {
  readonly clock: Clock;
  readonly random: () => number;
  readonly log: Log;
  readonly post: Post;
  /** Where the console receiver writes its lines. */
  readonly print: (line: string) => void;
  /** Called once per send, when it leaves the lane. */
  readonly done: (receiver: string, send: Send, result: SendResult) => void;
}

/** POSTs with undici; reads at most 64 KiB of the answer (vendors put their error code at the start). */
export const httpPost: Post = async (req, timeoutMs) => {
  const res = await request(req.url, {
    method: req.method,
    headers: req.headers,
    body: req.body,
    headersTimeout: timeoutMs,
    bodyTimeout: timeoutMs,
    signal: AbortSignal.timeout(timeoutMs),
  });
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of res.body as AsyncIterable<Buffer>) {
    if (size < MAX_BODY_BYTES) chunks.push(chunk);
    size += chunk.length;
  }
  return { status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('utf8').slice(0, MAX_BODY_BYTES) };
};

/** 1 s, 2 s, 4 s … capped at 60 s, each scaled by a random factor in [0.5, 1) so retries from many lanes spread out. */
export function backoffMs(attempts: number, random: () => number): number {
  const base = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** Math.max(0, attempts - 1));
  return Math.round(base * (0.5 + random() * 0.5));
}

/** The request a receiver's vendor expects for these notifications. */
export function renderFor(receiver: ReceiverRuntime, notifications: readonly Notification[], now: Date): OutgoingRequest | undefined {
  switch (receiver.type) {
    case 'console':
      return undefined;
    case 'slack':
      return renderSlack(notifications, receiver.config, now);
    case 'pagerduty':
      return renderPagerDuty(notifications, receiver.config, now);
    case 'webhook':
      return renderWebhook(notifications, receiver.config, now);
    case 'alertmanager':
      return renderAlertmanager(notifications, receiver.config, now);
  }
}

const CLASSIFY = { slack: classifySlack, pagerduty: classifyPagerDuty, webhook: classifyWebhook, alertmanager: classifyAlertmanager } as const;

/** Sends one receiver's requests in order, within its rate limit, retrying what may succeed later. */
export class Lane {
  private readonly queue: Send[] = [];
  private tokens: number;
  private refilledAt: number;
  private blockedUntil = 0;
  private busy: Promise<void> | undefined;
  private timer: Timer | undefined;
  private timerAt = Infinity;
  private stopped = false;
  /** Requests made, for the stats endpoint. */
  requests = 0;
  retries = 0;

  constructor(
    private receiver: ReceiverRuntime,
    private readonly deps: LaneDeps,
  ) {
    this.tokens = receiver.rateLimit.requests;
    this.refilledAt = deps.clock.now();
  }

  get depth(): number {
    return this.queue.length;
  }

  /** The next attempt's time and the last error, when the head is waiting to retry. */
  get waiting(): { until: number; error: string } | undefined {
    const head = this.queue[0];
    return head?.lastError ? { until: Math.max(head.notBefore, this.blockedUntil), error: head.lastError } : undefined;
  }

  /** A plan reload may change the endpoint, secret or rate limit; queued sends render with the new config. */
  update(receiver: ReceiverRuntime): void {
    this.receiver = receiver;
    this.tokens = Math.min(this.tokens, receiver.rateLimit.requests);
  }

  push(send: Send): void {
    this.queue.push(send);
    this.pump();
  }

  /** Stops sending; waits for the request in flight (bounded by its timeout). Returns what was still queued. */
  async stop(): Promise<Send[]> {
    this.stopped = true;
    this.timer?.cancel();
    await this.busy;
    return this.queue.splice(0);
  }

  private refill(now: number): void {
    const { requests, perMs: per } = this.receiver.rateLimit;
    this.tokens = Math.min(requests, this.tokens + ((now - this.refilledAt) * requests) / per);
    this.refilledAt = now;
  }

  private pump(): void {
    if (this.busy || this.stopped) return;
    const head = this.queue[0];
    if (head === undefined) return;
    const now = this.deps.clock.now();
    this.refill(now);
    const { requests, perMs: per } = this.receiver.rateLimit;
    const tokenAt = this.tokens >= 1 ? now : now + Math.ceil(((1 - this.tokens) * per) / requests);
    const at = Math.max(head.notBefore, this.blockedUntil, tokenAt);
    if (at > now) {
      if (at < this.timerAt) {
        this.timer?.cancel();
        this.timerAt = at;
        this.timer = this.deps.clock.after(at - now, () => {
          this.timerAt = Infinity;
          this.timer = undefined;
          this.pump();
        });
      }
      return;
    }
    this.tokens -= 1;
    this.busy = this.attempt(head).finally(() => {
      this.busy = undefined;
      this.pump();
    });
  }

  private async attempt(send: Send): Promise<void> {
    send.attempts++;
    const verdict = await this.deliver(send.notifications);
    const now = this.deps.clock.now();
    if (verdict.kind === 'retry') {
      this.retries++;
      const honoured = verdict.afterMs !== undefined ? Math.min(verdict.afterMs, RETRY_AFTER_CAP_MS) : undefined;
      const wait = honoured ?? backoffMs(send.attempts, this.deps.random);
      send.notBefore = now + wait;
      send.lastError = verdict.reason;
      // A 429 is about the receiver, not this request: nothing else goes to it before Retry-After either.
      if (honoured !== undefined) this.blockedUntil = Math.max(this.blockedUntil, send.notBefore);
      this.deps.log('warn', 'delivery failed, will retry', { receiver: this.receiver.name, attempt: send.attempts, retryInMs: wait, reason: verdict.reason });
      return;
    }
    this.queue.shift();
    this.deps.done(this.receiver.name, send, verdict.kind === 'delivered' ? { kind: 'delivered' } : { kind: 'dead', reason: verdict.reason });
  }

  private async deliver(notifications: readonly Notification[]): Promise<Verdict> {
    const receiver = this.receiver;
    if (receiver.type === 'console') {
      for (const n of notifications) this.deps.print(renderConsole(n));
      return { kind: 'delivered' };
    }
    let req: OutgoingRequest;
    try {
      req = renderFor(receiver, notifications, new Date(this.deps.clock.now()))!;
    } catch (err) {
      return { kind: 'permanent', reason: `could not render: ${(err as Error).message}` };
    }
    this.requests++;
    try {
      const answer = await this.deps.post(req, REQUEST_TIMEOUT_MS);
      return CLASSIFY[receiver.type](answer.status, answer.headers, answer.body);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      // The URL is not in the reason: for Slack it is the secret.
      return { kind: 'retry', reason: `network error: ${e.code ?? e.name}` };
    }
  }
}

/** PagerDuty takes one event per request; the console one line each; others up to BATCH notifications per request. */
export function* toSends(receiver: ReceiverRuntime, notifications: readonly Notification[], isReminder = false): Generator<Send> {
  const size = receiver.type === 'pagerduty' ? 1 : receiver.type === 'console' ? Infinity : BATCH;
  for (let i = 0; i < notifications.length; i += size) {
    yield { notifications: notifications.slice(i, i + size), reminder: isReminder, attempts: 0, notBefore: 0, lastError: null };
  }
}
