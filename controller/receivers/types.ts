// The one interface every alert receiver implements: pure builders from notifications to an HTTP request, and a
// classifier from the vendor's answer to a verdict. Sending, retrying and rate limiting belong to the caller.
import type { Notification } from '../model.js';

export interface OutgoingRequest {
  readonly method: 'POST';
  readonly url: string;
  readonly headers: Record<string, string>;
  readonly body: string;
}

/** Renders one or more notifications for the same receiver (a group) into the HTTP request the vendor expects. */
export type RenderFn<C> = (notifications: readonly Notification[], config: C, now: Date) => OutgoingRequest;

/** How the vendor's answer classifies: delivered, retry (with an optional Retry-After in ms), or permanent failure. */
export type Verdict = { kind: 'delivered' } | { kind: 'retry'; afterMs?: number; reason: string } | { kind: 'permanent'; reason: string };

export type ClassifyFn = (status: number, headers: Record<string, string | string[] | undefined>, body: string) => Verdict;
