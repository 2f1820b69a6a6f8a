// PagerDuty Events API v2: one event per request. A trigger opens (or, while open, updates) the alert named by the
// dedup key; a resolve with the same routing key and dedup key closes it.
import { createHash } from 'node:crypto';
import type { Severity } from '../../core/plan.js';
import type { Notification } from '../model.js';
import { ReceiverError, classifyHttp, pathOf, truncate, utf8Bytes } from './shared.js';
import type { ClassifyFn, OutgoingRequest, RenderFn } from './types.js';

export const PAGERDUTY_EVENTS_URL = 'https://events.pagerduty.com/v2/enqueue';
export const PAGERDUTY_MAX_SUMMARY = 1024;
export const PAGERDUTY_MAX_DEDUP_KEY = 255;
/** The documented 512 KB cap, counted in decimal kilobytes as Alertmanager's notifier does (the stricter reading). */
export const PAGERDUTY_MAX_BODY_BYTES = 512_000;

export interface PagerDutyConfig {
  /** The integration (routing) key; follow-up events reach the open alert only under the same key. */
  readonly routingKey: string;
  /** Defaults to the public Events API; tests point it at a fake. */
  readonly url?: string;
  /** `payload.source` when the finding names no target or environment. */
  readonly source?: string;
}

type PagerDutySeverity = 'critical' | 'error' | 'warning' | 'info';
const SEVERITY = { critical: 'critical', error: 'error', warning: 'warning', info: 'info' } as const satisfies Record<Severity, PagerDutySeverity>;

/** The dedup key as sent: the controller's key, or (never expected, but PagerDuty would reject it) its hash when too long. */
export function pagerDutyDedupKey(dedupKey: string): string {
  return dedupKey.length <= PAGERDUTY_MAX_DEDUP_KEY ? dedupKey : `bulkhead:v1:${createHash('sha256').update(dedupKey).digest('hex')}`;
}

function customDetails(n: Notification): Record<string, unknown> {
  const f = n.finding;
  return {
    finding: f.key,
    incident: f.incident,
    kind: f.kind,
    labels: f.labels,
    since: f.since,
    updated_at: f.updatedAt,
    stale: f.stale,
    flapping: f.flapping,
    notification: n.id,
    details: f.details,
  };
}

/**
 * Renders exactly one notification: the Events API takes one event per request, so a group is the caller's mistake.
 *
 * `update` (e.g. the finding started flapping) is sent as a trigger with the same dedup_key: while the alert is
 * open PagerDuty folds it into that alert as a new log entry instead of paging again. The controller only owes
 * updates for firing findings, so this never reopens a resolved alert. `now` is unused: every time comes from
 * the notification, so a retry renders the same body.
 */
export const renderPagerDuty: RenderFn<PagerDutyConfig> = (notifications, config, _now): OutgoingRequest => {
  if (notifications.length !== 1) {
    throw new ReceiverError('RECEIVER_GROUP', `pagerduty: the Events API takes exactly one event per request, got ${notifications.length} notifications`);
  }
  const n = notifications[0]!;
  const f = n.finding;
  const base = { routing_key: config.routingKey, dedup_key: pagerDutyDedupKey(n.dedupKey) };
  if (n.action === 'resolve') {
    return request(config, { ...base, event_action: 'resolve' });
  }
  const prefix = n.action === 'update' && f.flapping ? '[flapping] ' : f.stale ? '[stale] ' : '';
  const payload = {
    summary: truncate(prefix + f.summary, PAGERDUTY_MAX_SUMMARY),
    source: f.labels.target ?? f.labels.to_env ?? f.labels.from_env ?? config.source ?? 'bulkhead',
    severity: SEVERITY[f.labels.severity],
    timestamp: new Date(n.createdAt).toISOString(),
    component: f.labels.target ?? f.labels.to_env ?? f.kind,
    group: pathOf(f),
    class: f.kind,
    custom_details: customDetails(n),
  };
  const event = { ...base, event_action: 'trigger', client: 'Bulkhead', payload };
  const body = JSON.stringify(event);
  if (utf8Bytes(body) < PAGERDUTY_MAX_BODY_BYTES) return request(config, event, body);
  // Too big (huge evidence): keep every required field and say where the full finding can be read.
  const note = {
    truncated: `custom_details removed: the event was ${utf8Bytes(body)} bytes, PagerDuty accepts less than ${PAGERDUTY_MAX_BODY_BYTES}`,
    finding: f.key,
    incident: f.incident,
    notification: n.id,
  };
  return request(config, { ...event, payload: { ...payload, custom_details: note } });
};

function request(config: PagerDutyConfig, event: object, body = JSON.stringify(event)): OutgoingRequest {
  return { method: 'POST', url: config.url ?? PAGERDUTY_EVENTS_URL, headers: { 'content-type': 'application/json' }, body };
}

/** 202 delivered; 429 (honouring Retry-After) and 5xx retried; any other 4xx (400 invalid event) is permanent. */
export const classifyPagerDuty: ClassifyFn = (status, headers, body) => classifyHttp(status, headers, body);
