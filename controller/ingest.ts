// The controller's ingest: results from the RESULTS stream in stream order, heartbeats from core NATS, and a
// tick, all applied by one loop that commits to the store and only then acknowledges. The only controller file
// that talks to JetStream (store-kv.ts aside).
import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  jetstream,
  jetstreamManager,
  JetStreamApiCodes,
  JetStreamApiError,
  ReplayPolicy,
  RetentionPolicy,
  StorageType,
  type ConsumerMessages,
  type JetStreamManager,
  type JsMsg,
} from '@nats-io/jetstream';
import { connect, nanos, type NatsConnection, type Subscription } from '@nats-io/transport-node';
import { BulkheadError } from '../core/errors.js';
import { readNatsCredentials } from '../core/nats-credentials.js';
import { LIVENESS, securityOptions } from '../core/nats-options.js';
import type { Plan } from '../core/plan.js';
import { Heartbeat, MAX_MESSAGE_BYTES, parseMessage, parseSubject, ResultBatch, subjects, type DropReason } from '../core/wire.js';
import { applyHeartbeat, applyImpersonation, applyResults, tick, type LifecycleContext } from './lifecycle.js';
import type { ControllerState, Effects, HistoryRow } from './model.js';
import type { Commit, StateStore } from './store.js';

export const STREAM = 'RESULTS';
export const CONSUMER = 'controller';
const DAY_MS = 86_400_000;

export type Log = (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;

export interface NatsOptions {
  readonly url: string;
  readonly credsFile?: string;
  readonly caFile?: string;
  readonly name?: string;
}

/** Connects with the credentials file (user:password, nkey seed or .creds) and reconnects forever afterwards. */
export async function connectNats(opts: NatsOptions): Promise<NatsConnection> {
  const credentials = opts.credsFile !== undefined ? await readNatsCredentials(opts.credsFile) : undefined;
  return connect({
    servers: opts.url,
    name: opts.name ?? 'bulkhead-controller',
    maxReconnectAttempts: -1,
    timeout: 10_000,
    ...LIVENESS,
    ...securityOptions(opts.url, credentials, opts.caFile),
  });
}

/** Creates the RESULTS stream, or checks an existing one and raises what is too low; fails on what cannot change. */
export async function ensureResultsStream(jsm: JetStreamManager, log: Log): Promise<{ lastSeq: number }> {
  const wanted = {
    subjects: [subjects.allResults],
    duplicate_window: nanos(3_600_000),
    max_msg_size: MAX_MESSAGE_BYTES,
    max_age: nanos(7 * DAY_MS),
  };
  let info;
  try {
    info = await jsm.streams.info(STREAM);
  } catch (err) {
    if (!(err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamNotFound)) throw err;
    const created = await jsm.streams.add({
      name: STREAM, ...wanted, storage: StorageType.File, retention: RetentionPolicy.Limits, discard: DiscardPolicy.Old, num_replicas: 1,
    });
    log('info', 'created stream', { stream: STREAM });
    return { lastSeq: created.state.last_seq };
  }
  const c = info.config;
  const wrong: string[] = [];
  if (c.storage !== StorageType.File) wrong.push(`storage is ${c.storage}, not file`);
  if (c.retention !== RetentionPolicy.Limits) wrong.push(`retention is ${c.retention}, not limits`);
  if (wrong.length > 0) {
    throw new BulkheadError('STREAM_INCOMPATIBLE', `stream ${STREAM} exists with settings that cannot be changed: ${wrong.join('; ')}. Delete it or move it aside`);
  }
  const fixes: Record<string, unknown> = {};
  if (!c.subjects.includes(subjects.allResults)) fixes.subjects = [...c.subjects, subjects.allResults];
  if (c.duplicate_window < wanted.duplicate_window) fixes.duplicate_window = wanted.duplicate_window;
  if (c.max_msg_size !== -1 && c.max_msg_size < MAX_MESSAGE_BYTES) fixes.max_msg_size = MAX_MESSAGE_BYTES;
  if (Object.keys(fixes).length > 0) {
    await jsm.streams.update(STREAM, { ...c, ...fixes });
    log('info', 'updated stream', { stream: STREAM, changed: Object.keys(fixes) });
  }
  return { lastSeq: info.state.last_seq };
}

/**
 * (Re)creates the durable consumer so that it starts right after the store's checkpoint. A consumer left by a
 * crashed process would hand out newer messages first and the dead one's unacknowledged ones only after
 * ack_wait; starting from the checkpoint keeps stream order, and the checkpoint skips whatever is replayed.
 */
export async function resetConsumer(jsm: JetStreamManager, fromSeq: number, opts: { ackWaitMs: number; maxAckPending: number }): Promise<void> {
  try {
    await jsm.consumers.delete(STREAM, CONSUMER);
  } catch (err) {
    if (!(err instanceof JetStreamApiError && err.code === JetStreamApiCodes.ConsumerNotFound)) throw err;
  }
  await jsm.consumers.add(STREAM, {
    durable_name: CONSUMER,
    description: 'bulkhead controller: positioned at its committed checkpoint at every start',
    ack_policy: AckPolicy.Explicit,
    ack_wait: nanos(opts.ackWaitMs),
    max_ack_pending: opts.maxAckPending,
    max_deliver: -1,
    filter_subject: subjects.allResults,
    replay_policy: ReplayPolicy.Instant,
    ...(fromSeq > 1 ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: fromSeq } : { deliver_policy: DeliverPolicy.All }),
  });
}

export interface IngestOptions {
  /** Messages above this are dropped as oversized (default MAX_MESSAGE_BYTES; tests lower it). */
  readonly maxMessageBytes?: number;
  /** At most this many stream messages, and about this many observations, per commit. */
  readonly batchMessages?: number;
  readonly batchObservations?: number;
  readonly tickMs?: number;
  /** Lets messages accumulate between commits (the KV store rewrites its whole value per commit). */
  readonly minCommitIntervalMs?: number;
  readonly ackWaitMs?: number;
  readonly maxAckPending?: number;
  readonly clock?: () => Date;
}

export interface IngestDeps {
  readonly nc: NatsConnection;
  readonly store: StateStore;
  readonly state: ControllerState;
  readonly plan: () => Plan;
  readonly log: Log;
  /** Called after each commit with the notifications it persisted: only committed notifications may be sent. */
  readonly committed?: (notifications: Effects['notifications']) => void;
}

/** A change the controller itself makes (a receiver failed, or works again), applied and committed like a message. */
export type InternalEvent = (state: ControllerState, ctx: LifecycleContext) => Effects;

interface InFlight {
  readonly promise: Promise<void>;
  readonly unit: { readonly commit: Commit; readonly acks: readonly JsMsg[] };
}

interface Delivered {
  readonly seq: number;
  readonly subject: string;
  readonly data: Uint8Array;
  readonly msg: JsMsg;
}

/** Collects the effects of several messages into one commit; the last copy of a record wins. */
class Accumulated {
  readonly paths = new Map<string, Effects['paths'][number]>();
  readonly findings = new Map<string, Effects['findings'][number]>();
  readonly agents = new Map<string, Effects['agents'][number]>();
  readonly notifications = new Map<string, Effects['notifications'][number]>();
  readonly transitions: Effects['transitions'][number][] = [];
  readonly history: HistoryRow[] = [];
  add(e: Effects): void {
    for (const p of e.paths) this.paths.set(p.key, p);
    for (const f of e.findings) this.findings.set(f.key, f);
    for (const a of e.agents) this.agents.set(a.key, a);
    for (const n of e.notifications) this.notifications.set(n.id, n);
    for (const t of e.transitions) this.transitions.push(t);
  }
  effects(): Effects {
    const values = <T>(m: Map<string, T>) => [...m.values()];
    return { paths: values(this.paths), findings: values(this.findings), agents: values(this.agents), notifications: values(this.notifications), transitions: this.transitions };
  }
}

const MAX_PENDING_HEARTBEATS = 10_000;
const YIELD_AFTER_MS = 5;
const LOG_BUDGET_PER_MINUTE = 60;

/** The single writer: consumes, applies, commits, then acks. Any commit failure stops it (see `failure`). */
export class Ingest {
  lastCommitAt: string | null = null;
  /** The stream sequence the store has committed (the in-memory state runs ahead of it during a commit). */
  committedSeq: number;
  failure: Error | undefined;
  private readonly opts: Required<Omit<IngestOptions, 'clock'>> & { clock: () => Date };
  private jsm: JetStreamManager | undefined;
  private queue: Delivered[] = [];
  private heartbeats = new Map<string, Heartbeat>();
  private impersonations = new Map<string, { subject: string; claimedEnv: string; claimedAgent: string; detail: string }>();
  private internal: InternalEvent[] = [];
  private dirty = false;
  private tickDue = false;
  private resyncWanted = false;
  private acceptGap = true;
  private lastApplied: number;
  private generation = 0;
  private messages: ConsumerMessages | undefined;
  private heartbeatSub: Subscription | undefined;
  private ticker: NodeJS.Timeout | undefined;
  private wake: (() => void) | undefined;
  private stopping = false;
  private done: Promise<void> = Promise.resolve();
  private logBudget = { windowStart: 0, used: 0, suppressed: 0 };

  constructor(
    private readonly deps: IngestDeps,
    options: IngestOptions = {},
  ) {
    this.opts = {
      maxMessageBytes: options.maxMessageBytes ?? MAX_MESSAGE_BYTES,
      batchMessages: options.batchMessages ?? 250,
      batchObservations: options.batchObservations ?? 10_000,
      tickMs: options.tickMs ?? 5_000,
      minCommitIntervalMs: options.minCommitIntervalMs ?? 0,
      ackWaitMs: options.ackWaitMs ?? 30_000,
      maxAckPending: options.maxAckPending ?? 256,
      clock: options.clock ?? (() => new Date()),
    };
    this.lastApplied = deps.state.checkpoint.streamSeq;
    this.committedSeq = deps.state.checkpoint.streamSeq;
  }

  /** Sets up the stream and consumer, subscribes, and starts the loop; `finished` settles when it stops. */
  async start(): Promise<void> {
    const { nc, state, log } = this.deps;
    this.jsm = await jetstreamManager(nc);
    const { lastSeq } = await ensureResultsStream(this.jsm, log);
    if (state.checkpoint.streamSeq > lastSeq) {
      throw new BulkheadError(
        'CHECKPOINT_AHEAD',
        `the store has committed up to stream sequence ${state.checkpoint.streamSeq}, but stream ${STREAM} ends at ${lastSeq}: ` +
          'the stream was recreated, or this store belongs to another NATS deployment',
      );
    }
    await this.openFeed();
    this.heartbeatSub = nc.subscribe(subjects.allHeartbeats, { callback: (err, msg) => (err ? log('warn', 'heartbeat subscription', { error: err.message }) : this.onHeartbeat(msg.subject, msg.data)) });
    this.ticker = setInterval(() => {
      this.tickDue = true;
      this.wake?.();
    }, this.opts.tickMs);
    this.done = this.loop();
  }

  /** Settles when the loop has stopped: after stop(), or after a commit failed. */
  finished(): Promise<void> {
    return this.done;
  }

  /** Stops consuming and lets the commit in progress finish. */
  async stop(): Promise<void> {
    this.stopping = true;
    clearInterval(this.ticker);
    this.heartbeatSub?.unsubscribe();
    this.wake?.();
    await this.done;
    await this.messages?.close().catch(() => undefined);
  }

  /** Queues a change the controller makes itself; it is committed with the next batch, then its notifications sent. */
  submit(event: InternalEvent): void {
    this.internal.push(event);
    this.wake?.();
  }

  /** Asks the loop to start consuming again from the checkpoint (after a reconnect: deliveries may have been lost). */
  requestResync(): void {
    this.resyncWanted = true;
    this.wake?.();
  }

  private async openFeed(): Promise<void> {
    const gen = ++this.generation;
    this.queue = [];
    await this.messages?.close().catch(() => undefined);
    this.messages = undefined;
    const from = this.deps.state.checkpoint.streamSeq + 1;
    await resetConsumer(this.jsm!, from, this.opts);
    this.lastApplied = from - 1;
    this.acceptGap = true;
    const consumer = await jetstream(this.deps.nc).consumers.get(STREAM, CONSUMER);
    const messages = await consumer.consume({
      // The client pulls more as messages arrive, not as they are processed: max_ack_pending is what bounds the
      // messages held in memory (256 × at most 1 MB; result batches of 400 observations are ~300 KB).
      max_messages: Math.max(1, Math.floor(this.opts.maxAckPending / 2)),
      callback: (msg) => {
        if (gen !== this.generation) return; // a straggler from the consumer we replaced
        this.queue.push({ seq: msg.seq, subject: msg.subject, data: msg.data, msg });
        this.wake?.();
      },
    });
    this.messages = messages;
    void (async () => {
      for await (const s of messages.status()) {
        if (s.type === 'consumer_deleted' || s.type === 'consumer_not_found') {
          this.deps.log('warn', 'consumer lost, recreating it', { status: s.type });
          this.requestResync();
        }
      }
    })().catch(() => undefined);
  }

  private onHeartbeat(subject: string, data: Uint8Array): void {
    const parts = parseSubject(subject);
    if (data.byteLength > this.opts.maxMessageBytes) return this.drop('oversized', subject, `${data.byteLength} bytes > ${this.opts.maxMessageBytes}`);
    if (parts?.kind !== 'heartbeat') return this.drop('subject', subject, `unexpected subject ${subject}`);
    const parsed = parseMessage(Heartbeat, subject, data);
    if (!parsed.ok) {
      if (parsed.reason === 'impersonation' && this.impersonations.size < MAX_PENDING_HEARTBEATS) this.impersonations.set(subject, claimed(subject, data, parsed.detail));
      return this.drop(parsed.reason, subject, parsed.detail);
    }
    if (this.heartbeats.size >= MAX_PENDING_HEARTBEATS && !this.heartbeats.has(subject)) return;
    this.heartbeats.set(subject, parsed.message);
    this.wake?.();
  }

  private drop(reason: DropReason, subject: string, detail: string, seq?: number): void {
    this.deps.state.counters.dropped[reason]++;
    this.dirty = true;
    const now = Date.now();
    const b = this.logBudget;
    if (now - b.windowStart >= 60_000) {
      if (b.suppressed > 0) this.deps.log('warn', 'dropped messages not logged', { count: b.suppressed });
      Object.assign(b, { windowStart: now, used: 0, suppressed: 0 });
    }
    if (b.used++ < LOG_BUDGET_PER_MINUTE) this.deps.log('warn', 'dropped message', { reason, subject, ...(seq !== undefined ? { seq } : {}), detail });
    else b.suppressed++;
  }

  private hasWork(): boolean {
    return (
      this.queue.length > 0 ||
      this.heartbeats.size > 0 ||
      this.impersonations.size > 0 ||
      this.internal.length > 0 ||
      this.tickDue ||
      this.resyncWanted ||
      this.dirty
    );
  }

  // Pipelined: the next batch is applied in memory while the previous commit is in flight (stores take what
  // they need from a commit synchronously), but commits run one at a time and acks follow their own commit.
  private async loop(): Promise<void> {
    let lastCommit = 0;
    let inflight: InFlight | undefined;
    try {
      while (!this.stopping) {
        if (this.resyncWanted) {
          inflight = await this.settle(inflight);
          await this.resync();
          continue;
        }
        if (!this.hasWork()) {
          if (inflight) {
            inflight = await this.settle(inflight);
            continue;
          }
          await new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, 1_000);
            this.wake = () => {
              clearTimeout(timer);
              resolve();
            };
          });
          this.wake = undefined;
          continue;
        }
        const wait = lastCommit + this.opts.minCommitIntervalMs - Date.now();
        if (wait > 0 && this.queue.length < this.opts.batchMessages) {
          await new Promise((resolve) => setTimeout(resolve, Math.min(wait, 1_000)));
          continue;
        }
        const unit = await this.apply();
        inflight = await this.settle(inflight);
        if (unit.commit) {
          const promise = this.deps.store.commit(unit.commit);
          promise.catch(() => undefined); // awaited in settle(); this only keeps it from counting as unhandled meanwhile
          inflight = { promise, unit: { commit: unit.commit, acks: unit.acks } };
          lastCommit = Date.now();
        } else {
          for (const msg of unit.acks) msg.ack();
        }
      }
      await this.settle(inflight);
    } catch (err) {
      this.failure = err as Error;
      this.deps.log('error', 'ingest stopped: commit failed, nothing after the last commit was acknowledged', { error: (err as Error).message });
    }
  }

  /** Waits for a commit, then acknowledges the messages it covered. */
  private async settle(inflight: InFlight | undefined): Promise<undefined> {
    if (!inflight) return undefined;
    await inflight.promise;
    this.committedSeq = inflight.unit.commit.streamSeq;
    this.lastCommitAt = new Date().toISOString();
    for (const msg of inflight.unit.acks) msg.ack();
    if (inflight.unit.commit.effects.notifications.length > 0) this.deps.committed?.(inflight.unit.commit.effects.notifications);
    return undefined;
  }

  private async resync(): Promise<void> {
    try {
      await this.openFeed();
      this.resyncWanted = false;
      this.deps.log('info', 'consuming from the checkpoint', { fromSeq: this.deps.state.checkpoint.streamSeq + 1 });
    } catch (err) {
      this.deps.log('warn', 'could not recreate the consumer, retrying', { error: (err as Error).message });
      await new Promise((resolve) => setTimeout(resolve, 1_000));
    }
  }

  /** Applies what is queued to the state; returns the commit that persists it and the messages it covers. */
  private async apply(): Promise<{ commit: Commit | undefined; acks: JsMsg[] }> {
    const { state } = this.deps;
    const ctx: LifecycleContext = { plan: this.deps.plan(), now: this.opts.clock() };
    const acc = new Accumulated();
    const acks: JsMsg[] = [];
    const before = state.checkpoint.streamSeq;
    let taken = 0;
    let slice = performance.now();
    while (taken < this.queue.length && taken < this.opts.batchMessages && acc.history.length < this.opts.batchObservations) {
      // Let I/O run now and then: the commit in flight needs its request flushed and its answer read.
      if (performance.now() - slice > YIELD_AFTER_MS) {
        await new Promise((resolve) => setImmediate(resolve));
        slice = performance.now();
      }
      const m = this.queue[taken++]!;
      if (m.seq <= this.lastApplied) {
        acks.push(m.msg); // redelivered, and applied already
        continue;
      }
      if (m.seq !== this.lastApplied + 1) {
        if (!this.acceptGap) {
          // Deliveries lost in flight (a reconnect): never skip past them; commit what we have and start again.
          this.deps.log('warn', 'gap in the stream sequence, consuming again from the checkpoint', { expected: this.lastApplied + 1, got: m.seq });
          this.resyncWanted = true;
          taken = this.queue.length;
          break;
        }
        this.deps.log('warn', 'stream messages no longer exist (expired or deleted)', { from: this.lastApplied + 1, to: m.seq - 1 });
      }
      this.acceptGap = false;
      this.applyResult(m, ctx, acc);
      this.lastApplied = m.seq;
      if (state.checkpoint.streamSeq < m.seq) state.checkpoint.streamSeq = m.seq;
      acks.push(m.msg);
    }
    this.queue.splice(0, taken);

    for (const info of this.impersonations.values()) acc.add(applyImpersonation(state, info, ctx));
    this.impersonations.clear();
    for (const hb of this.heartbeats.values()) acc.add(applyHeartbeat(state, hb, ctx));
    this.heartbeats.clear();
    for (const event of this.internal.splice(0)) acc.add(event(state, ctx));
    if (this.tickDue) {
      this.tickDue = false;
      acc.add(tick(state, ctx));
    }

    const effects = acc.effects();
    const changed = this.dirty || state.checkpoint.streamSeq !== before || Object.values(effects).some((list) => list.length > 0);
    if (!changed) return { commit: undefined, acks };
    this.dirty = false;
    return { commit: { streamSeq: state.checkpoint.streamSeq, effects, history: acc.history, counters: state.counters }, acks };
  }

  private applyResult(m: Delivered, ctx: LifecycleContext, acc: Accumulated): void {
    const { state } = this.deps;
    if (m.data.byteLength > this.opts.maxMessageBytes) return this.drop('oversized', m.subject, `${m.data.byteLength} bytes > ${this.opts.maxMessageBytes}`, m.seq);
    const parsed = parseMessage(ResultBatch, m.subject, m.data);
    if (!parsed.ok) {
      if (parsed.reason === 'impersonation') acc.add(applyImpersonation(state, claimed(m.subject, m.data, parsed.detail), ctx));
      return this.drop(parsed.reason, m.subject, parsed.detail, m.seq);
    }
    const { effects, history } = applyResults(state, parsed.message, m.seq, ctx);
    acc.add(effects);
    for (const row of history) acc.history.push(row);
  }
}

/** Who an impersonating message claims to be (it passed the schema, so env and agent are there). */
function claimed(subject: string, data: Uint8Array, detail: string): { subject: string; claimedEnv: string; claimedAgent: string; detail: string } {
  const body = JSON.parse(Buffer.from(data).toString('utf8')) as { env: string; agent: string };
  return { subject, claimedEnv: body.env, claimedAgent: body.agent, detail };
}
