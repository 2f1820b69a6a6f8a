// The agent's only door to NATS: one long-lived connection (re-created if the client ever gives up),
// JetStream publishes that resolve to a classified outcome instead of throwing, and the publisher loop
// that moves the outbox to the server in order, deleting an entry only once its PubAck arrived.
import { jetstream, JetStreamApiError, type JetStreamClient } from '@nats-io/jetstream';
import {
  AuthorizationError,
  ClosedConnectionError,
  connect,
  ConnectionError,
  DrainingConnectionError,
  PermissionViolationError,
  RequestError,
  TimeoutError,
  type Msg,
  type NatsConnection,
  type NodeConnectionOptions,
} from '@nats-io/transport-node';
import type { NatsCredentials } from '../core/nats-credentials.js';
import { LIVENESS, securityOptions } from '../core/nats-options.js';
import type { Logger } from './agent.js';
import type { Outbox } from './outbox.js';

export interface LinkOptions {
  /** One URL or a comma-separated list: `nats://host:4222`. */
  readonly url: string;
  /** Client name shown by the server's monitoring: `bulkhead-agent-<env>-<name>`. */
  readonly name: string;
  readonly credentials?: NatsCredentials;
  /** PEM CA bundle that signs the server certificate; turns TLS on. */
  readonly caFile?: string;
  readonly log: Logger;
}

/** What became of one acknowledged publish. `permission` means our credentials do not match our subjects. */
export type PublishResult =
  | { readonly ok: true; readonly seq: number; readonly duplicate: boolean }
  | { readonly ok: false; readonly kind: PublishFailure; readonly error: unknown };
export type PublishFailure = 'disconnected' | 'timeout' | 'no-stream' | 'permission' | 'rejected' | 'closed' | 'other';

/** An inbound message as handlers see it; `respond` is false when there is no reply subject or no connection. */
export interface Inbound {
  readonly subject: string;
  readonly data: Uint8Array;
  respond(payload: string): boolean;
}

/** The connection, supervised: `connected` follows the client's status, handlers survive reconnects. */
export class NatsLink {
  readonly #options: LinkOptions;
  readonly #stop = new AbortController();
  readonly #subscriptions: { subject: string; handler: (msg: Inbound) => void }[] = [];
  readonly #onConnect: (() => void)[] = [];
  #waiters = new Set<() => void>();
  #nc: NatsConnection | undefined;
  #js: JetStreamClient | undefined;
  #connected = false;
  readonly #supervisor: Promise<void>;

  private constructor(options: LinkOptions) {
    this.#options = options;
    this.#supervisor = this.#supervise();
  }

  /** Starts connecting in the background; the agent works (into its outbox) until the server is reachable. */
  static start(options: LinkOptions): NatsLink {
    return new NatsLink(options);
  }

  get connected(): boolean {
    return this.#connected;
  }

  /** Resolves true once connected, false if `signal` aborts first. */
  whenConnected(signal: AbortSignal): Promise<boolean> {
    if (this.#connected) return Promise.resolve(true);
    if (signal.aborted) return Promise.resolve(false);
    return new Promise((resolve) => {
      const done = () => {
        this.#waiters.delete(done);
        signal.removeEventListener('abort', done);
        resolve(this.#connected);
      };
      this.#waiters.add(done);
      signal.addEventListener('abort', done, { once: true });
    });
  }

  /** Runs `fn` after every (re)connection: the heartbeat uses it to report as soon as the server is back. */
  onConnect(fn: () => void): void {
    this.#onConnect.push(fn);
  }

  /** Subscribes now and on every later connection; a handler that throws is logged, never fatal. */
  subscribe(subject: string, handler: (msg: Inbound) => void): void {
    this.#subscriptions.push({ subject, handler });
    if (this.#nc) this.#subscribeOn(this.#nc, subject, handler);
  }

  /** Core publish, fire and forget: false when not connected (the client would drop it silently anyway). */
  publish(subject: string, payload: string): boolean {
    if (!this.#connected || !this.#nc) return false;
    try {
      this.#nc.publish(subject, payload);
      return true;
    } catch {
      return false;
    }
  }

  /** JetStream publish with a message id, waiting for the PubAck; never throws. */
  async publishAcked(subject: string, payload: string | Uint8Array, msgID: string, timeoutMs: number): Promise<PublishResult> {
    const js = this.#js;
    if (!this.#connected || !js) return { ok: false, kind: 'disconnected', error: new Error('not connected') };
    try {
      const ack = await js.publish(subject, payload, { msgID, timeout: timeoutMs });
      return { ok: true, seq: ack.seq, duplicate: ack.duplicate };
    } catch (error) {
      return { ok: false, kind: classify(error), error };
    }
  }

  /** Drains the connection (bounded by `graceMs`) and stops reconnecting. */
  async close(graceMs = 1000): Promise<void> {
    this.#stop.abort();
    const nc = this.#nc;
    if (nc && !nc.isClosed()) {
      if (this.#connected) await withTimeout(nc.drain().catch(() => undefined), graceMs);
      if (!nc.isClosed()) await nc.close().catch(() => undefined);
    }
    // A first connection still being dialled is closed by the supervisor as soon as the dial ends.
    await withTimeout(this.#supervisor, graceMs);
    this.#setConnected(false);
  }

  async #supervise(): Promise<void> {
    const { log } = this.#options;
    let failures = 0;
    while (!this.#stop.signal.aborted) {
      let nc: NatsConnection;
      try {
        nc = await connect(this.#connectOptions());
      } catch (error) {
        if (this.#stop.signal.aborted) return;
        failures++;
        const retryMs = backoffMs(failures, 1000, 30_000);
        // A server that is down is an outage (warn); bad credentials or TLS are configuration mistakes (error).
        // Either way keep trying: the server may come back or be fixed, and results wait in the outbox.
        const refused = error instanceof ConnectionError && errorCodeOf(error.cause) === 'ECONNREFUSED';
        log(refused ? 'warn' : 'error', 'cannot connect to NATS; will retry', { url: redactUrl(this.#options.url), error: describeError(error), retryMs });
        await sleep(retryMs, this.#stop.signal);
        continue;
      }
      if (this.#stop.signal.aborted) {
        await nc.close().catch(() => undefined);
        return;
      }
      failures = 0;
      this.#attach(nc);
      log('info', 'connected to NATS', { server: nc.getServer(), name: this.#options.name });
      const closedWith = await nc.closed();
      this.#nc = undefined;
      this.#js = undefined;
      this.#setConnected(false);
      if (this.#stop.signal.aborted) return;
      // The client gave up (e.g. authorization failed twice after a reconnect); start over with a fresh one.
      log('error', 'NATS connection closed by the client; connecting again', { error: describeError(closedWith) });
      await sleep(1000, this.#stop.signal);
    }
  }

  #connectOptions(): NodeConnectionOptions {
    const { url, name, credentials, caFile } = this.#options;
    const servers = url.split(',').map((s) => s.trim()).filter((s) => s !== '');
    // Not waitOnFirstConnect: with it, a first connection that fails TLS verification retries forever without
    // a word (measured with 3.4.0), and cannot be cancelled. The supervisor retries instead, logging each reason.
    const options: NodeConnectionOptions = {
      servers,
      name,
      maxReconnectAttempts: -1,
      waitOnFirstConnect: false,
      timeout: 10_000,
      // Spread a fleet's reconnects after a server restart.
      reconnectJitter: 1000,
      ...LIVENESS,
    };
    return { ...options, ...securityOptions(servers.join(','), credentials, caFile) };
  }

  #attach(nc: NatsConnection): void {
    this.#nc = nc;
    this.#js = jetstream(nc);
    for (const { subject, handler } of this.#subscriptions) this.#subscribeOn(nc, subject, handler);
    void this.#watchStatus(nc);
    this.#setConnected(true);
  }

  async #watchStatus(nc: NatsConnection): Promise<void> {
    const { log } = this.#options;
    for await (const status of nc.status()) {
      switch (status.type) {
        case 'disconnect':
          this.#setConnected(false);
          log('warn', 'disconnected from NATS; results wait in the outbox', { server: status.server });
          break;
        case 'reconnect':
          log('info', 'reconnected to NATS', { server: status.server });
          this.#setConnected(true);
          break;
        case 'error':
          if (status.error instanceof PermissionViolationError) {
            log('error', 'NATS refused: permissions violation. This agent\'s credentials do not allow its own subjects: check --env and --nats-creds', {
              operation: status.error.operation,
              subject: status.error.subject,
            });
          } else {
            log('warn', 'NATS server error', { error: describeError(status.error) });
          }
          break;
        case 'staleConnection':
        case 'slowConsumer':
        case 'ldm':
          log('warn', `NATS ${status.type}`);
          break;
        default:
          break;
      }
    }
  }

  #subscribeOn(nc: NatsConnection, subject: string, handler: (msg: Inbound) => void): void {
    const { log } = this.#options;
    nc.subscribe(subject, {
      callback: (err, msg: Msg) => {
        if (err) {
          log('error', 'subscription failed', { subject, error: describeError(err) });
          return;
        }
        try {
          handler({ subject: msg.subject, data: msg.data, respond: (payload) => (msg.reply ? msg.respond(payload) : false) });
        } catch (error) {
          log('error', 'message handler failed', { subject, error: describeError(error) });
        }
      },
    });
  }

  #setConnected(value: boolean): void {
    const was = this.#connected;
    this.#connected = value;
    if (!value) return;
    for (const wake of this.#waiters) wake();
    this.#waiters = new Set();
    if (!was) {
      for (const fn of this.#onConnect) {
        try {
          fn();
        } catch (error) {
          this.#options.log('error', 'on-connect hook failed', { error: describeError(error) });
        }
      }
    }
  }
}

export interface PublisherOptions {
  readonly log: Logger;
  readonly signal: AbortSignal;
  /** How long to wait for each PubAck. */
  readonly ackTimeoutMs: number;
}

/**
 * Sends the outbox to JetStream, oldest first, one at a time so order is kept; an entry is deleted only
 * after its PubAck (a duplicate ack counts: the stream already holds it). Any failure backs off with jitter
 * and retries the same entry, forever, until `signal` aborts.
 */
export async function publishOutbox(link: NatsLink, outbox: Outbox, options: PublisherOptions): Promise<void> {
  const { log, signal } = options;
  let failures = 0;
  let lastKind: PublishFailure | undefined;
  let lastLoggedAt = 0;
  while (!signal.aborted) {
    await outbox.whenNotEmpty(signal);
    if (signal.aborted) break;
    if (!(await link.whenConnected(signal))) continue;
    let entry;
    try {
      entry = await outbox.oldest();
    } catch (error) {
      log('error', 'outbox unreadable', { error: describeError(error) });
      await sleep(backoffMs(++failures, 250, 5000), signal);
      continue;
    }
    if (!entry) continue;
    const result = await raceAbort(link.publishAcked(entry.subject, entry.payload, entry.id, options.ackTimeoutMs), signal);
    if (result === undefined) break;
    if (result.ok) {
      try {
        await outbox.remove(entry.seq);
      } catch (error) {
        log('error', 'cannot delete an acknowledged outbox entry (it will be sent again, deduplicated)', { id: entry.id, error: describeError(error) });
      }
      if (failures > 0) log('info', 'publishing resumed', { afterFailures: failures, pending: outbox.pending });
      failures = 0;
      lastKind = undefined;
      continue;
    }
    failures++;
    // Log a new kind of failure at once, a repeated one every 30 s: an outage must not flood the log.
    const now = Date.now();
    if (result.kind !== lastKind || now - lastLoggedAt >= 30_000) {
      const fields = { id: entry.id, subject: entry.subject, kind: result.kind, failures, pending: outbox.pending, error: describeError(result.error) };
      if (result.kind === 'permission') {
        log('error', 'NATS refused our own results subject: the credentials do not match --env (misconfiguration); retrying', fields);
      } else {
        log('warn', 'publish not acknowledged; will retry', fields);
      }
      lastKind = result.kind;
      lastLoggedAt = now;
    }
    await sleep(backoffMs(failures, 250, 5000), signal);
  }
}

function classify(error: unknown): PublishFailure {
  if (error instanceof TimeoutError) return 'timeout';
  if (error instanceof ClosedConnectionError || error instanceof DrainingConnectionError) return 'closed';
  if (error instanceof JetStreamApiError) return 'rejected';
  if (error instanceof RequestError) {
    if (error.cause instanceof PermissionViolationError) return 'permission';
    if (error.isNoResponders()) return 'no-stream';
  }
  // JetStreamNotEnabled (not exported by @nats-io/jetstream): no stream captures the subject, or JetStream is down.
  if (error instanceof Error && error.cause instanceof RequestError && error.cause.isNoResponders()) return 'no-stream';
  if (error instanceof Error && error.cause instanceof PermissionViolationError) return 'permission';
  return 'other';
}

/** The URL without any user:password part, for logs. */
export function redactUrl(url: string): string {
  return url.replace(/\/\/[^/@,]*@/g, '//***@');
}

/** An error as log fields: class name, message and the cause's, never a stack. */
export function describeError(error: unknown): Record<string, string> | string | undefined {
  if (error === undefined || error === null) return undefined;
  if (!(error instanceof Error)) return String(error);
  const out: Record<string, string> = { name: error.name, message: error.message };
  if (error instanceof AuthorizationError) out.hint = 'check --nats-creds';
  const cause = error.cause;
  if (cause instanceof Error) out.cause = `${cause.name}: ${cause.message}`;
  const code = (error as NodeJS.ErrnoException).code;
  if (typeof code === 'string') out.code = code;
  return out;
}

function errorCodeOf(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | undefined)?.code;
  return typeof code === 'string' ? code : undefined;
}

function backoffMs(failures: number, minMs: number, maxMs: number): number {
  const base = Math.min(maxMs, minMs * 2 ** Math.min(failures - 1, 16));
  return Math.round(base / 2 + (Math.random() * base) / 2);
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}

function raceAbort<T>(promise: Promise<T>, signal: AbortSignal): Promise<T | undefined> {
  if (signal.aborted) return Promise.resolve(undefined);
  return new Promise((resolve) => {
    const onAbort = () => resolve(undefined);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      () => resolve(undefined),
    );
  });
}

async function withTimeout(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([promise.catch(() => undefined), new Promise((r) => (timer = setTimeout(r, ms)))]);
  clearTimeout(timer);
}
