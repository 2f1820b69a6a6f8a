// What the delivery side of the controller persists beside the outbox: how each notification was settled,
// silences, and storm incidents (one incident per receiver and environment pair when many paths open at once).
// Plain JSON-serialisable records, like controller/model.ts, so both stores can keep them as they are.
import type { FindingKind, Severity } from '../../core/plan.js';
import type { Notification } from '../model.js';

/**
 * How a notification left the outbox: delivered (the vendor accepted it), dead (a permanent refusal, kept as a
 * dead letter), folded (carried by a storm incident instead), silenced (trigger and resolve both fell inside a silence).
 */
export type Settlement = 'delivered' | 'dead' | 'folded' | 'silenced';

export interface Settled {
  readonly id: string;
  readonly outcome: Settlement;
  /** Why: the vendor's answer for a dead letter, the storm for a folded one. */
  readonly reason: string | null;
}

/** A silence matches a finding when every given label is one of the listed values (like route matchers). */
export interface SilenceMatchers {
  readonly from_env?: readonly string[];
  readonly to_env?: readonly string[];
  readonly target?: readonly string[];
  readonly kind?: readonly FindingKind[];
  readonly severity?: readonly Severity[];
}

export interface Silence {
  /** `sil_<hex>` */
  readonly id: string;
  readonly matchers: SilenceMatchers;
  readonly startsAt: string;
  /** Expiring a silence early sets endsAt to the moment it was expired. */
  endsAt: string;
  readonly createdBy: string;
  readonly comment: string;
  readonly createdAt: string;
}

/** One storm incident of one receiver for one environment pair. */
export interface StormRecord {
  /** `<receiver>|<from_env>→<to_env>` */
  readonly key: string;
  readonly receiver: string;
  readonly from_env: string;
  readonly to_env: string;
  /** Increments each time a storm starts for this receiver and pair. */
  incident: number;
  status: 'firing' | 'resolved';
  since: string;
  updatedAt: string;
  /** Finding keys folded into this incident. */
  members: string[];
  /** Members whose resolve has not arrived yet: the incident resolves when this is empty. */
  open: string[];
}

export interface DeliveryState {
  readonly silences: readonly Silence[];
  readonly storms: readonly StormRecord[];
}

/**
 * One atomic unit of delivery bookkeeping: notifications settled, notifications newly owed (storm incidents), and
 * upserted storm and silence records. After a crash either all of it is there or none of it.
 */
export interface DeliveryCommit {
  readonly at: string;
  readonly settled: readonly Settled[];
  readonly owed: readonly Notification[];
  readonly storms: readonly StormRecord[];
  readonly silences: readonly Silence[];
}

export function emptyDeliveryState(): DeliveryState {
  return { silences: [], storms: [] };
}
