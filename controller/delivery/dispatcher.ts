// Delivery of the persisted outbox (SPEC §7 Alerting): notifications are grouped per receiver and environment pair,
// held for group_wait (then group_interval), checked against silences and folded by storm control, and handed to
// the receiver's lane, which rate-limits and retries. Every settlement (delivered, dead letter, folded, silenced) is
// committed to the store, so after a restart only what was never settled is sent again.
import type { Alerting } from '../../core/plan.js';
import type { Log } from '../ingest.js';
import type { ControllerState, FindingLabels, Notification } from '../model.js';
import type { ReceiverRuntime } from '../receivers/config.js';
import { timingsFor } from '../routes.js';
import type { StateStore } from '../store.js';
import type { Clock, Timer } from './clock.js';
import { Lane, toSends, type Post, type Send, type SendResult } from './lane.js';
import { Ledger, type DeadLetter } from './ledger.js';
import type { DeliveryCommit, DeliveryState, Settled, Silence, StormRecord } from './model.js';
import { partitionSilenced, SilenceBook } from './silences.js';
import { anyFiring, groupKey, reminders } from './reminders.js';
import { planFlush } from './storm.js';

/** Alertmanager forgets a firing alert at its endsAt (5 min): re-send well before that. */
const ALERTMANAGER_RESEND_MS = 2 * 60_000;
/** A failed delivery commit is retried this much later, with the notifications back in their group. */
const COMMIT_RETRY_MS = 5_000;

export interface DispatcherDeps {
  readonly store: Pick<StateStore, 'commitDelivery'>;
  readonly state: ControllerState;
  readonly alerting: () => Alerting;
  readonly receivers: () => readonly ReceiverRuntime[];
  readonly clock: Clock;
  readonly random: () => number;
  readonly log: Log;
  readonly post: Post;
  readonly print: (line: string) => void;
  /** A receiver refused a notification for good: raise its receiver-failed finding (routed to the others). */
  readonly receiverFailed: (receiver: string, reason: string) => void;
  /** A receiver accepted a request: its receiver-failed finding, if firing, can resolve. */
  readonly receiverWorks: (receiver: string) => void;
}

interface Group {
  readonly key: string;
  readonly receiver: string;
  readonly from_env: string | undefined;
  readonly to_env: string | undefined;
  /** The labels of the first finding seen in the group: they pick the route whose timings apply. */
  readonly labels: FindingLabels;
  readonly pending: Map<string, Notification>;
  pendingSince: number | null;
  lastFlushAt: number | null;
  timer: Timer | undefined;
  timerAt: number;
  flushing: boolean;
  again: boolean;
  reminder: Timer | undefined;
}


const ACTION_ORDER = { trigger: 0, update: 1, resolve: 2 } as const;
/** Oldest first; within one finding and incident, trigger before update before resolve. */
const inOrder = (a: Notification, b: Notification): number =>
  a.createdAt.localeCompare(b.createdAt) || a.incident - b.incident || ACTION_ORDER[a.action] - ACTION_ORDER[b.action] || a.id.localeCompare(b.id);

/** Sends the outbox: one instance per controller, fed by ingest after each commit. */
export class Dispatcher {
  private readonly groups = new Map<string, Group>();
  private readonly lanes = new Map<string, Lane>();
  private readonly storms = new Map<string, StormRecord>();
  private readonly book: SilenceBook;
  private readonly ledger = new Ledger();
  private receiverMap = new Map<string, ReceiverRuntime>();
  private stopped = false;
  private commits: Promise<void> = Promise.resolve();

  constructor(
    private readonly deps: DispatcherDeps,
    delivery: DeliveryState,
  ) {
    for (const s of delivery.storms) this.storms.set(s.key, structuredClone(s));
    // When a silence ends, every group holding notifications flushes.
    this.book = new SilenceBook(deps.clock, (silence) => this.commit({ silences: [silence] }), delivery.silences, () => {
      for (const g of this.groups.values()) if (g.pending.size > 0) this.schedule(g, this.deps.clock.now());
    });
    this.reconfigure();
  }

  /** Applies the receivers of the plan in force: new lanes, new configs; a removed receiver's queue is dead-lettered. */
  reconfigure(): void {
    this.receiverMap = new Map(this.deps.receivers().map((r) => [r.name, r]));
    for (const [name, lane] of this.lanes) {
      const receiver = this.receiverMap.get(name);
      if (receiver) lane.update(receiver);
      else {
        this.lanes.delete(name);
        void lane.stop().then((sends) => {
          for (const send of sends) this.done(name, send, { kind: 'dead', reason: `receiver ${name} is no longer in the plan` });
        });
      }
    }
  }

  /**
   * Starts from what the store holds: the unsettled outbox is sent again (after its group wait) and every group
   * with something firing gets its reminders back (Alertmanager forgets alerts that are not re-sent).
   */
  resume(): void {
    this.enqueue(this.deps.state.outbox.values());
    const firing: [string, FindingLabels][] = [];
    for (const f of this.deps.state.findings.values()) {
      if (f.status === 'firing') for (const r of f.receivers) firing.push([r, f.labels]);
    }
    for (const s of this.storms.values()) {
      if (s.status === 'firing') firing.push([s.receiver, { kind: 'violation', severity: 'critical', from_env: s.from_env, to_env: s.to_env }]);
    }
    for (const [receiver, labels] of firing) {
      const g = this.groupFor(receiver, labels);
      const runtime = this.receiverMap.get(receiver);
      // The first reminder comes a full interval after the restart; the last flush time is unknown, so assume one.
      g.lastFlushAt ??= this.deps.clock.now();
      if (runtime) this.remind(g, runtime);
    }
  }

  /** Takes committed notifications (the outbox at start, then each commit's new ones). */
  enqueue(notifications: Iterable<Notification>): void {
    const now = this.deps.clock.now();
    for (const n of notifications) {
      if (this.stopped || n.deliveredAt !== null) continue;
      const g = this.group(n);
      if (g.pending.has(n.id)) continue;
      g.pending.set(n.id, n);
      const created = Date.parse(n.createdAt);
      // Group wait counts from the event, so a restart does not add another wait to what already waited.
      g.pendingSince = Math.min(g.pendingSince ?? now, Number.isNaN(created) ? now : Math.min(created, now));
      this.schedule(g, this.dueAt(g, n));
    }
  }

  /** Stops timers and lanes (the request in flight finishes); what is unsent stays in the store's outbox. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const g of this.groups.values()) {
      g.timer?.cancel();
      g.reminder?.cancel();
    }
    this.book.stop();
    await Promise.all([...this.lanes.values()].map((lane) => lane.stop()));
    await this.commits;
  }

  /** Dead letters of earlier runs, newest first, shown by the API after the ones of this run. */
  remember(deadLetters: readonly DeadLetter[]): void {
    this.ledger.remember(deadLetters);
  }

  // ---- silences ------------------------------------------------------------------------------------------------

  get silences(): Silence[] {
    return this.book.list();
  }

  /** Persists and applies a silence; held notifications are looked at again when it ends. */
  addSilence(silence: Silence): Promise<void> {
    return this.book.add(silence);
  }

  /** Ends a silence now; undefined when there is no such silence. */
  expireSilence(id: string): Promise<Silence | undefined> {
    return this.book.expire(id);
  }

  private silenced(n: Notification, now: number): boolean {
    return this.book.matches(n.finding.labels, now);
  }

  // ---- what the API shows --------------------------------------------------------------------------------------

  snapshot(): { receivers: Record<string, unknown>; storms: StormRecord[]; deadLetters: DeadLetter[] } {
    const receivers: Record<string, unknown> = {};
    for (const name of this.receiverMap.keys()) {
      const lane = this.lanes.get(name);
      const pending = [...this.groups.values()].filter((g) => g.receiver === name).reduce((sum, g) => sum + g.pending.size, 0);
      const waiting = lane?.waiting;
      receivers[name] = {
        type: this.receiverMap.get(name)!.type,
        pending,
        queued: lane?.depth ?? 0,
        requests: lane?.requests ?? 0,
        retries: lane?.retries ?? 0,
        ...this.ledger.count(name),
        retrying: waiting ? { until: new Date(waiting.until).toISOString(), error: waiting.error } : null,
      };
    }
    return { receivers, storms: [...this.storms.values()], deadLetters: this.ledger.deadLetters() };
  }

  // ---- grouping ------------------------------------------------------------------------------------------------

  private group(n: Notification): Group {
    return this.groupFor(n.receiver, n.finding.labels);
  }

  private groupFor(receiver: string, labels: FindingLabels): Group {
    const key = groupKey(receiver, { labels });
    let g = this.groups.get(key);
    if (g === undefined) {
      g = { key, receiver, from_env: labels.from_env, to_env: labels.to_env, labels, pending: new Map(), pendingSince: null, lastFlushAt: null, timer: undefined, timerAt: Infinity, flushing: false, again: false, reminder: undefined };
      this.groups.set(key, g);
    }
    return g;
  }

  /** Alertmanager's rule: a new group waits group_wait; a group that has flushed waits group_interval since. */
  private dueAt(g: Group, n: Notification): number {
    const t = timingsFor(n.finding.labels, g.receiver, this.deps.alerting());
    const since = g.pendingSince ?? this.deps.clock.now();
    return g.lastFlushAt === null ? since + t.groupWaitMs : Math.max(since, g.lastFlushAt + t.groupIntervalMs);
  }

  private schedule(g: Group, at: number): void {
    if (this.stopped || at >= g.timerAt) return;
    g.timer?.cancel();
    g.timerAt = at;
    g.timer = this.deps.clock.after(at - this.deps.clock.now(), () => {
      g.timer = undefined;
      g.timerAt = Infinity;
      this.runFlush(g);
    });
  }

  private runFlush(g: Group): void {
    if (g.flushing) {
      g.again = true;
      return;
    }
    g.flushing = true;
    this.flush(g)
      .catch((err: Error) => this.deps.log('error', 'delivery flush failed', { group: g.key, error: err.message }))
      .finally(() => {
        g.flushing = false;
        if (g.again) {
          g.again = false;
          this.schedule(g, this.deps.clock.now());
        }
      });
  }

  private async flush(g: Group): Promise<void> {
    const now = this.deps.clock.now();
    const at = new Date(now).toISOString();
    const all = [...g.pending.values()].sort(inOrder);
    if (all.length === 0) return;
    g.pending.clear();
    g.pendingSince = null;
    const receiver = this.receiverMap.get(g.receiver);
    if (receiver === undefined) {
      const reason = `receiver ${g.receiver} is not in the plan in force`;
      await this.settle(all.map((n) => ({ id: n.id, outcome: 'dead', reason })), g.receiver);
      return;
    }

    const { held: keep, silenced, sendable } = partitionSilenced(all, (n) => this.silenced(n, now));

    const plan =
      g.from_env !== undefined && g.to_env !== undefined
        ? planFlush({
            receiver: g.receiver,
            from_env: g.from_env,
            to_env: g.to_env,
            notifications: sendable,
            storm: this.storms.get(g.key),
            threshold: this.deps.alerting().storm_threshold,
            at,
            summaryOf: (key) => this.deps.state.findings.get(key)?.summary,
          })
        : { folded: [], owed: [], storm: undefined, send: sendable };

    const settled: Settled[] = [...silenced.map((n) => ({ id: n.id, outcome: 'silenced' as const, reason: 'trigger and resolve both fell inside a silence' })), ...plan.folded];
    if (settled.length > 0 || plan.owed.length > 0 || plan.storm !== undefined) {
      try {
        await this.commit({ settled, owed: plan.owed, storms: plan.storm ? [plan.storm] : [] });
      } catch (err) {
        // Nothing was persisted: put everything back and try again shortly.
        this.deps.log('error', 'could not persist a delivery decision, retrying', { group: g.key, error: (err as Error).message });
        for (const n of all) g.pending.set(n.id, n);
        g.pendingSince = now;
        this.schedule(g, now + COMMIT_RETRY_MS);
        return;
      }
      if (plan.storm) this.storms.set(plan.storm.key, plan.storm);
      for (const s of settled) this.deps.state.outbox.delete(s.id);
      for (const n of plan.owed) this.deps.state.outbox.set(n.id, n);
      const stats = this.ledger.count(g.receiver);
      stats.folded += plan.folded.length;
      stats.silenced += silenced.length;
      if (plan.owed.some((n) => n.action === 'trigger')) this.deps.log('warn', 'storm: one incident for the pair', { receiver: g.receiver, storm: plan.storm?.key, paths: plan.storm?.open.length });
    }

    // Like Alertmanager forgetting an empty group: once nothing fires in it, the next incident waits group_wait again.
    g.lastFlushAt = this.anyFiring(g) ? now : null;
    for (const send of toSends(receiver, [...plan.owed, ...plan.send])) this.lane(receiver).push(send);
    for (const n of keep) g.pending.set(n.id, n);
    if (keep.length > 0) g.pendingSince = now;
    this.remind(g, receiver);
  }

  // ---- reminders (repeat_interval) -------------------------------------------------------------------------------

  /**
   * While a group has firing findings, chat and webhook receivers get them again every repeat_interval, and
   * Alertmanager every 2 minutes (it forgets alerts nobody re-sends). PagerDuty gets none: an open incident already
   * pages, and a re-trigger would only add noise.
   */
  private remind(g: Group, receiver: ReceiverRuntime): void {
    if (receiver.type === 'pagerduty' || g.reminder !== undefined || this.stopped) return;
    const repeat = timingsFor(g.labels, g.receiver, this.deps.alerting()).repeatIntervalMs;
    const every = receiver.type === 'alertmanager' ? Math.min(repeat, ALERTMANAGER_RESEND_MS) : repeat;
    g.reminder = this.deps.clock.after(every, () => {
      g.reminder = undefined;
      const current = this.receiverMap.get(g.receiver);
      if (current === undefined) return;
      const firing = this.firing(g, this.deps.clock.now());
      if (firing.length === 0) return;
      this.ledger.count(g.receiver).reminders++;
      for (const send of toSends(current, firing, true)) this.lane(current).push(send);
      this.remind(g, current);
    });
  }

  private anyFiring(g: Group): boolean {
    return anyFiring(g.key, g.receiver, this.deps.state.findings.values(), this.storms.get(g.key));
  }

  /** What is firing in a group now, as update notifications, minus what a silence covers. */
  private firing(g: Group, now: number): Notification[] {
    return reminders(g.key, g.receiver, this.deps.state.findings, this.storms.get(g.key), new Date(now).toISOString()).filter((n) => !this.silenced(n, now));
  }

  // ---- settling ------------------------------------------------------------------------------------------------

  private lane(receiver: ReceiverRuntime): Lane {
    let lane = this.lanes.get(receiver.name);
    if (lane === undefined) {
      lane = new Lane(receiver, { ...this.deps, done: (name, send, result) => this.done(name, send, result) });
      this.lanes.set(receiver.name, lane);
    }
    return lane;
  }

  private done(receiver: string, send: Send, result: SendResult): void {
    if (result.kind === 'delivered') this.deps.receiverWorks(receiver);
    if (send.reminder) return;
    const settled: Settled[] = send.notifications.map((n) => ({ id: n.id, outcome: result.kind, reason: result.kind === 'dead' ? result.reason : null }));
    void this.settle(settled, receiver).catch((err: Error) =>
      // Delivered but not recorded: after a restart it is sent again (at least once; the dedup keys make it harmless).
      this.deps.log('error', 'could not record a delivery', { receiver, error: err.message }),
    );
    if (result.kind === 'dead') {
      this.ledger.deadLettered(receiver, send.notifications, result.reason, new Date(this.deps.clock.now()).toISOString());
      this.deps.log('error', 'delivery refused for good: dead letter', { receiver, notifications: send.notifications.length, reason: result.reason });
      this.deps.receiverFailed(receiver, result.reason);
    }
  }

  private async settle(settled: Settled[], receiver: string): Promise<void> {
    if (settled.length === 0) return;
    await this.commit({ settled });
    const stats = this.ledger.count(receiver);
    for (const s of settled) {
      this.deps.state.outbox.delete(s.id);
      if (s.outcome === 'delivered') stats.delivered++;
      else if (s.outcome === 'dead') stats.dead++;
    }
  }

  /** Delivery commits run one after another, in the order they were decided. */
  private commit(parts: Partial<Omit<DeliveryCommit, 'at'>>): Promise<void> {
    const commit: DeliveryCommit = { at: new Date(this.deps.clock.now()).toISOString(), settled: [], owed: [], storms: [], silences: [], ...parts };
    const next = this.commits.then(() => this.deps.store.commitDelivery(commit));
    this.commits = next.catch(() => undefined);
    return next;
  }
}
