// Where the controller's state lives between restarts. Two implementations: PostgreSQL (state, outbox
// and history in one transaction) and JetStream KV (small installs without a database).
import type { DeliveryCommit, DeliveryState } from './delivery/model.js';
import type { AgentRecord, Counters, Effects, Finding, HistoryRow, Notification, PathRecord } from './model.js';

/** Everything needed to resume: current records, undelivered notifications, the checkpoint, counters. */
export interface Snapshot {
  readonly paths: readonly PathRecord[];
  readonly findings: readonly Finding[];
  readonly agents: readonly AgentRecord[];
  readonly outbox: readonly Notification[];
  readonly checkpoint: { readonly streamSeq: number };
  readonly counters: Counters;
  /** Silences and storm incidents (empty on first start and for stores written before they existed). */
  readonly delivery: DeliveryState;
}

/** One atomic unit: the effects of messages up to `streamSeq`, their history, and the counters after them. */
export interface Commit {
  readonly streamSeq: number;
  readonly effects: Effects;
  readonly history: readonly HistoryRow[];
  readonly counters: Counters;
}

export interface StateStore {
  /** Reads the last committed snapshot (empty on first start); creates or migrates the schema first. */
  load(): Promise<Snapshot>;
  /** Persists a commit atomically: after a crash either all of it is there or none of it. */
  commit(commit: Commit): Promise<void>;
  /**
   * Persists delivery bookkeeping atomically: settled notifications leave the outbox (PostgreSQL keeps them with
   * their outcome and reason as the record of what was sent), owed ones join it, storm and silence records are upserted.
   */
  commitDelivery(commit: DeliveryCommit): Promise<void>;
  close(): Promise<void>;
}
