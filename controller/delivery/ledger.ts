// What the delivery side has done, for the API: per-receiver counts and the most recent dead letters (PostgreSQL
// keeps every dead letter; this keeps the newest, including those of earlier runs loaded at start).
import type { Notification } from '../model.js';

const DEAD_LETTERS_KEPT = 100;

export interface ReceiverStats {
  delivered: number;
  dead: number;
  folded: number;
  silenced: number;
  reminders: number;
}

export interface DeadLetter {
  readonly id: string;
  readonly receiver: string;
  readonly at: string;
  readonly reason: string;
  readonly finding: string;
  readonly action: string;
}

/** Counts per receiver and the newest dead letters first. */
export class Ledger {
  private readonly stats = new Map<string, ReceiverStats>();
  private readonly dead: DeadLetter[] = [];

  /** The receiver's counters, created at zero on first use. */
  count(receiver: string): ReceiverStats {
    let s = this.stats.get(receiver);
    if (s === undefined) this.stats.set(receiver, (s = { delivered: 0, dead: 0, folded: 0, silenced: 0, reminders: 0 }));
    return s;
  }

  /** Notifications a receiver refused for good, just now. */
  deadLettered(receiver: string, notifications: readonly Notification[], reason: string, at: string): void {
    for (const n of notifications) this.dead.unshift({ id: n.id, receiver, at, reason, finding: n.findingKey, action: n.action });
    this.dead.splice(DEAD_LETTERS_KEPT);
  }

  /** Dead letters of earlier runs, newest first, listed after the ones of this run. */
  remember(deadLetters: readonly DeadLetter[]): void {
    this.dead.push(...deadLetters.filter((d) => !this.dead.some((known) => known.id === d.id)));
    this.dead.splice(DEAD_LETTERS_KEPT);
  }

  deadLetters(): DeadLetter[] {
    return [...this.dead];
  }
}
