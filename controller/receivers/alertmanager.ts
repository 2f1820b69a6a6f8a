// Prometheus Alertmanager API v2: POST {url}/api/v2/alerts with one alert per notification. An alert's identity is
// its label set, so the labels carry the dedup key; a resolve is the same labels with endsAt ≤ now. Alertmanager
// does not persist alerts: the caller re-sends firing alerts before endsAt and resolves for about 5 minutes.
import type { Notification } from '../model.js';
import { classifyHttp, flagsOf, nonEmpty, truncate } from './shared.js';
import type { ClassifyFn, OutgoingRequest, RenderFn } from './types.js';

/** A firing alert's endsAt: Alertmanager's own resolve_timeout default, so an alert nobody re-sends expires. */
export const ALERTMANAGER_FIRING_FOR_MS = 5 * 60_000;
const MAX_DESCRIPTION = 4000;

export interface AlertmanagerConfig {
  /** The Alertmanager base URL, e.g. `http://alertmanager:9093`. */
  readonly url: string;
  /** A link back to where the finding can be read, sent as every alert's generatorURL. */
  readonly generatorUrl?: string;
}

export interface AlertmanagerAlert {
  labels: Record<string, string>;
  annotations: { summary: string; description: string };
  startsAt: string;
  endsAt: string;
  generatorURL?: string;
}

function alert(n: Notification, config: AlertmanagerConfig, now: Date): AlertmanagerAlert {
  const f = n.finding;
  const labels: Record<string, string> = { alertname: `bulkhead_${f.kind.replace(/-/g, '_')}` };
  // Absent and empty mean the same to Alertmanager: only labels with a value are sent.
  for (const [name, value] of Object.entries({ from_env: f.labels.from_env, to_env: f.labels.to_env, target: f.labels.target })) {
    if (value) labels[name] = value;
  }
  labels.severity = f.labels.severity;
  labels.dedup_key = n.dedupKey;
  const flags = flagsOf(f);
  const description = `${f.kind} finding ${f.key}, incident ${f.incident} since ${f.since}${flags ? ` (${flags})` : ''}. Details: ${JSON.stringify(f.details)}`;
  const since = Date.parse(f.since);
  // Alertmanager rejects endsAt < startsAt: a resolve clamps startsAt so a skewed clock cannot make it invalid.
  const startsMs = n.action === 'resolve' ? Math.min(since, now.getTime()) : since;
  const endsMs = n.action === 'resolve' ? now.getTime() : Math.max(now.getTime(), since) + ALERTMANAGER_FIRING_FOR_MS;
  return {
    labels,
    annotations: { summary: f.summary, description: truncate(description, MAX_DESCRIPTION) },
    startsAt: new Date(startsMs).toISOString(),
    endsAt: new Date(endsMs).toISOString(),
    ...(config.generatorUrl !== undefined ? { generatorURL: config.generatorUrl } : {}),
  };
}

/** Renders a group as one array of alerts: resolves end now, firing alerts (trigger, update) end in 5 minutes. */
export const renderAlertmanager: RenderFn<AlertmanagerConfig> = (notifications, config, now): OutgoingRequest => {
  nonEmpty(notifications, 'alertmanager');
  return {
    method: 'POST',
    url: `${config.url.replace(/\/+$/, '')}/api/v2/alerts`,
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(notifications.map((n) => alert(n, config, now))),
  };
};

/** 200 delivered; 400 (some alerts invalid, the valid ones were stored) permanent; 429 and 5xx retried. */
export const classifyAlertmanager: ClassifyFn = (status, headers, body) => classifyHttp(status, headers, body);
