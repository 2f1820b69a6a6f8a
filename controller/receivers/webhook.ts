// Generic webhook in the Standard Webhooks format: a JSON body {type, timestamp, data} signed with HMAC-SHA256 over
// "{webhook-id}.{webhook-timestamp}.{body}". The id names the notifications, so a retry carries the same id and the
// receiver can drop the duplicate; the timestamp and signature are fresh on every attempt.
import { createHash, createHmac } from 'node:crypto';
import { ReceiverError, classifyHttp, nonEmpty } from './shared.js';
import type { ClassifyFn, OutgoingRequest, RenderFn } from './types.js';

export const WEBHOOK_TYPE = 'bulkhead.notification';

export interface WebhookConfig {
  readonly url: string;
  /**
   * The signing secret. A string `whsec_<base64>` (the spec's format, as the receiver's library generates it) is
   * base64-decoded; any other string is used as its UTF-8 bytes, and a Uint8Array as the bytes themselves.
   */
  readonly secret: string | Uint8Array;
}

/** The key bytes a secret stands for (see WebhookConfig.secret). */
export function webhookKey(secret: string | Uint8Array): Buffer {
  if (typeof secret !== 'string') return Buffer.from(secret);
  if (!secret.startsWith('whsec_')) {
    if (secret.length === 0) throw new ReceiverError('RECEIVER_CONFIG', 'webhook: the signing secret is empty');
    return Buffer.from(secret, 'utf8');
  }
  const encoded = secret.slice('whsec_'.length);
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(encoded) || encoded.length % 4 !== 0) {
    throw new ReceiverError('RECEIVER_CONFIG', 'webhook: a whsec_ secret must be followed by standard base64');
  }
  return Buffer.from(encoded, 'base64');
}

/**
 * `msg_<hex>`: a hash of the sorted notification names, the same for the same group however often it is rendered.
 * Callers name a notification by its id and creation time, so a controller whose state was wiped (incident numbers
 * start again) never reuses the id of an earlier, different delivery.
 */
export function webhookId(ids: readonly string[]): string {
  return `msg_${createHash('sha256').update([...ids].sort().join('\n')).digest('hex').slice(0, 32)}`;
}

/** `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` */
export function webhookSignature(key: Uint8Array, id: string, timestampS: number, body: string): string {
  return `v1,${createHmac('sha256', key).update(`${id}.${timestampS}.${body}`).digest('base64')}`;
}

/**
 * Renders a group as one signed delivery. `data.notifications` carries each notification whole (the finding as it
 * was when owed); the spec asks for small payloads (about 20 KB), which a big group can exceed: no hard cap applies.
 */
export const renderWebhook: RenderFn<WebhookConfig> = (notifications, config, now): OutgoingRequest => {
  nonEmpty(notifications, 'webhook');
  const id = webhookId(notifications.map((n) => `${n.id}@${n.createdAt}`));
  const timestampS = Math.floor(now.getTime() / 1000);
  const data = {
    id,
    notifications: notifications.map((n) => ({
      id: n.id,
      receiver: n.receiver,
      action: n.action,
      finding_key: n.findingKey,
      incident: n.incident,
      dedup_key: n.dedupKey,
      created_at: n.createdAt,
      finding: n.finding,
    })),
  };
  const body = JSON.stringify({ type: WEBHOOK_TYPE, timestamp: now.toISOString(), data });
  return {
    method: 'POST',
    url: config.url,
    headers: {
      'content-type': 'application/json',
      'webhook-id': id,
      'webhook-timestamp': String(timestampS),
      'webhook-signature': webhookSignature(webhookKey(config.secret), id, timestampS, body),
    },
    body,
  };
};

/** 2xx delivered; 429 (honouring Retry-After) and 5xx retried; any other answer is permanent. */
export const classifyWebhook: ClassifyFn = (status, headers, body) => classifyHttp(status, headers, body);
