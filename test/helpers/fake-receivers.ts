// Fake alert receivers: real HTTP servers on 127.0.0.1:0 (or another local address, such as the e2e lab's host
// link) that check every request against the vendor's published format and limits (see
// /work/shared/reference/alert-receivers.md), answer as the vendor does, and record what they accepted. `script()`
// queues canned answers (429, 410, 500, …) for the next requests.
import { createHmac, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { listen, stop } from './listen.js';

export interface Answer {
  readonly status: number;
  readonly headers?: Record<string, string>;
  readonly body: string;
}

export interface Received {
  readonly method: string;
  readonly path: string;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: string;
}

export interface Fake<A> {
  readonly url: string;
  /** Every request, in arrival order, whatever the answer. */
  readonly received: Received[];
  /** What the fake accepted, parsed. */
  readonly accepted: A[];
  /** Requests the fake refused, with the problems it found. */
  readonly rejected: { received: Received; problems: string[] }[];
  /** Answers the next requests with these, in order, before any validation. */
  script(...answers: Answer[]): void;
  /** While down, every connection is reset as soon as a request arrives (a receiver outage); requests are not recorded. */
  down(on: boolean): void;
  close(): Promise<void>;
}

type Handler<A> = (req: Received) => { answer: Answer; accepted?: A; problems?: string[] };

const LOOPBACK = '127.0.0.1';

/** Listens on `host`:0; 127.0.0.1 goes through listen.ts as before, another address gets the same socket tracking here. */
async function listenOn(server: http.Server, host: string): Promise<{ port: number; close: () => Promise<void> }> {
  if (host === LOOPBACK) return { port: await listen(server), close: () => stop(server) };
  const sockets = new Set<Socket>();
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () => {
      for (const socket of sockets) socket.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

async function startFake<A>(basePath: string, handle: Handler<A>, host = LOOPBACK): Promise<Fake<A>> {
  const received: Received[] = [];
  const accepted: A[] = [];
  const rejected: { received: Received; problems: string[] }[] = [];
  const queue: Answer[] = [];
  let isDown = false;
  const server = http.createServer((req, res) => {
    if (isDown) {
      req.socket.destroy();
      return;
    }
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const r: Received = { method: req.method ?? '', path: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString('utf8') };
      received.push(r);
      let answer = queue.shift();
      if (answer === undefined) {
        const result = handle(r);
        answer = result.answer;
        if (result.accepted !== undefined) accepted.push(result.accepted);
        if (result.problems !== undefined && result.problems.length > 0) rejected.push({ received: r, problems: result.problems });
      }
      res.writeHead(answer.status, answer.headers ?? {});
      res.end(answer.body);
    });
  });
  const { port, close } = await listenOn(server, host);
  return {
    url: `http://${host.includes(':') ? `[${host}]` : host}:${port}${basePath}`,
    received,
    accepted,
    rejected,
    script: (...answers) => queue.push(...answers),
    down: (on) => void (isDown = on),
    close,
  };
}

// ---- small validators: each returns problems, never throws -------------------------------------------------------

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isIso = (v: unknown): boolean => typeof v === 'string' && /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/.test(v) && !Number.isNaN(Date.parse(v));

function str(problems: string[], where: string, v: unknown, opts: { required?: boolean; min?: number; max?: number; oneOf?: readonly string[] } = {}): void {
  if (v === undefined) {
    if (opts.required) problems.push(`${where}: required`);
    return;
  }
  if (typeof v !== 'string') return void problems.push(`${where}: expected a string`);
  if (opts.min !== undefined && v.length < opts.min) problems.push(`${where}: shorter than ${opts.min}`);
  if (opts.max !== undefined && v.length > opts.max) problems.push(`${where}: longer than ${opts.max} (${v.length})`);
  if (opts.oneOf && !opts.oneOf.includes(v)) problems.push(`${where}: not one of ${opts.oneOf.join('|')}`);
}

function parseJson(body: string): { ok: true; value: unknown } | { ok: false } {
  try {
    return { ok: true, value: JSON.parse(body) as unknown };
  } catch {
    return { ok: false };
  }
}

const json = (status: number, value: unknown, headers: Record<string, string> = {}): Answer => ({
  status,
  headers: { 'content-type': 'application/json', ...headers },
  body: JSON.stringify(value),
});
const text = (status: number, body: string, headers: Record<string, string> = {}): Answer => ({ status, headers: { 'content-type': 'text/plain', ...headers }, body });

// ---- PagerDuty Events API v2 ---------------------------------------------------------------------------------

export interface PagerDutyEvent {
  routing_key: string;
  event_action: 'trigger' | 'acknowledge' | 'resolve';
  dedup_key?: string;
  payload?: {
    summary: string;
    source: string;
    severity: string;
    timestamp?: string;
    component?: string;
    group?: string;
    class?: string;
    custom_details?: Record<string, unknown>;
  };
  [k: string]: unknown;
}

export interface FakePagerDuty extends Fake<PagerDutyEvent> {
  /** Open alerts by `routing_key/dedup_key`. */
  readonly open: Map<string, PagerDutyEvent>;
  /** Follow-ups (ack/resolve) whose key matched no open alert: PagerDuty answers 202 and drops them. */
  readonly dropped: PagerDutyEvent[];
  /** Triggers that hit an already open alert (folded into it, no new page). */
  readonly updates: PagerDutyEvent[];
  /** Distinct alerts ever opened. */
  readonly opened: PagerDutyEvent[];
}

const PD_SEVERITIES = ['critical', 'error', 'warning', 'info'] as const;

export function validatePagerDuty(body: string): { event?: PagerDutyEvent; problems: string[] } {
  const problems: string[] = [];
  if (Buffer.byteLength(body) >= 512_000) problems.push(`body: ${Buffer.byteLength(body)} bytes, must be under 512 KB`);
  const parsed = parseJson(body);
  if (!parsed.ok || !isObject(parsed.value)) return { problems: [...problems, 'body: not a JSON object'] };
  const e = parsed.value;
  str(problems, 'routing_key', e.routing_key, { required: true, min: 32, max: 32 });
  str(problems, 'event_action', e.event_action, { required: true, oneOf: ['trigger', 'acknowledge', 'resolve'] });
  str(problems, 'dedup_key', e.dedup_key, { required: e.event_action !== 'trigger', min: 1, max: 255 });
  if (e.event_action === 'trigger') {
    if (!isObject(e.payload)) problems.push('payload: required on trigger');
    else {
      const p = e.payload;
      str(problems, 'payload.summary', p.summary, { required: true, min: 1, max: 1024 });
      str(problems, 'payload.source', p.source, { required: true, min: 1 });
      str(problems, 'payload.severity', p.severity, { required: true, oneOf: PD_SEVERITIES });
      if (p.timestamp !== undefined && !isIso(p.timestamp)) problems.push('payload.timestamp: not ISO-8601');
      for (const k of ['component', 'group', 'class'] as const) str(problems, `payload.${k}`, p[k]);
      if (p.custom_details !== undefined && !isObject(p.custom_details)) problems.push('payload.custom_details: expected an object');
    }
  }
  return problems.length === 0 ? { event: e as PagerDutyEvent, problems } : { problems };
}

/** PagerDuty at `{url}` = `http://127.0.0.1:port/v2/enqueue` (or `host` instead of 127.0.0.1). */
export async function fakePagerDuty(host = LOOPBACK): Promise<FakePagerDuty> {
  const open = new Map<string, PagerDutyEvent>();
  const dropped: PagerDutyEvent[] = [];
  const updates: PagerDutyEvent[] = [];
  const opened: PagerDutyEvent[] = [];
  const fake = await startFake<PagerDutyEvent>('/v2/enqueue', (req) => {
    const problems: string[] = [];
    if (req.method !== 'POST' || req.path !== '/v2/enqueue') problems.push(`${req.method} ${req.path}: expected POST /v2/enqueue`);
    if (!String(req.headers['content-type']).startsWith('application/json')) problems.push('content-type: expected application/json');
    const v = validatePagerDuty(req.body);
    problems.push(...v.problems);
    if (problems.length > 0 || v.event === undefined) {
      return { answer: json(400, { status: 'invalid event', message: 'Event object is invalid', errors: problems }), problems };
    }
    const e = v.event;
    const key = `${e.routing_key}/${e.dedup_key ?? crypto.randomUUID()}`;
    if (e.event_action === 'trigger') {
      if (open.has(key)) updates.push(e);
      else opened.push(e);
      open.set(key, e);
    } else if (!open.delete(key)) {
      dropped.push(e);
    }
    return { answer: json(202, { status: 'success', message: 'Event processed', dedup_key: key.split('/')[1] }), accepted: e };
  }, host);
  return Object.assign(fake, { open, dropped, updates, opened });
}

// ---- Slack incoming webhook ----------------------------------------------------------------------------------

export interface SlackMessage {
  text: string;
  blocks?: Record<string, unknown>[];
}

function textObject(problems: string[], where: string, v: unknown, max: number, types: readonly string[] = ['plain_text', 'mrkdwn']): number {
  if (!isObject(v)) return void problems.push(`${where}: expected a text object`), 0;
  str(problems, `${where}.type`, v.type, { required: true, oneOf: types });
  str(problems, `${where}.text`, v.text, { required: true, min: 1, max });
  return typeof v.text === 'string' ? v.text.length : 0;
}

/** Block Kit limits: ≤50 blocks, header ≤150 (plain_text), section text ≤3000, fields ≤10 × ≤2000, context ≤10 elements, ~13 k characters. */
export function validateSlack(body: string): { message?: SlackMessage; error?: string; problems: string[] } {
  const parsed = parseJson(body);
  if (!parsed.ok || !isObject(parsed.value)) return { error: 'invalid_payload', problems: ['body: not a JSON object'] };
  const m = parsed.value;
  const problems: string[] = [];
  // Slack accepts blocks without text, but we require the fallback: notifications show it.
  if (typeof m.text !== 'string' || m.text.length === 0) return { error: 'no_text', problems: ['text: required (fallback)'] };
  if (m.text.length > 40_000) problems.push('text: longer than 40000');
  let chars = 0;
  if (m.blocks !== undefined) {
    if (!Array.isArray(m.blocks)) problems.push('blocks: expected an array');
    else {
      if (m.blocks.length > 50) problems.push(`blocks: ${m.blocks.length} > 50`);
      m.blocks.forEach((b: unknown, i) => {
        const where = `blocks[${i}]`;
        if (!isObject(b)) return void problems.push(`${where}: expected an object`);
        str(problems, `${where}.block_id`, b.block_id, { max: 255 });
        switch (b.type) {
          case 'header':
            chars += textObject(problems, `${where}.text`, b.text, 150, ['plain_text']);
            break;
          case 'section':
            if (b.text === undefined && b.fields === undefined) problems.push(`${where}: needs text or fields`);
            if (b.text !== undefined) chars += textObject(problems, `${where}.text`, b.text, 3000);
            if (b.fields !== undefined) {
              if (!Array.isArray(b.fields) || b.fields.length === 0 || b.fields.length > 10) problems.push(`${where}.fields: expected 1–10 items`);
              else b.fields.forEach((f: unknown, j) => (chars += textObject(problems, `${where}.fields[${j}]`, f, 2000)));
            }
            break;
          case 'context':
            if (!Array.isArray(b.elements) || b.elements.length === 0 || b.elements.length > 10) problems.push(`${where}.elements: expected 1–10 items`);
            else b.elements.forEach((e: unknown, j) => (chars += textObject(problems, `${where}.elements[${j}]`, e, 3000)));
            break;
          case 'divider':
            break;
          default:
            problems.push(`${where}.type: unknown block type ${String(b.type)}`);
        }
      });
    }
  }
  if (chars > 13_000) return { error: 'msg_blocks_too_long', problems: [`blocks: ${chars} characters`] };
  return problems.length === 0 ? { message: m as unknown as SlackMessage, problems } : { error: 'invalid_blocks', problems };
}

/** A Slack incoming webhook at `http://127.0.0.1:port/services/T000/B000/XXXX` (or `host`): 200 `ok`, or 400 with Slack's error code. */
export async function fakeSlack(host = LOOPBACK): Promise<Fake<SlackMessage>> {
  return startFake<SlackMessage>('/services/T000/B000/XXXX', (req) => {
    if (req.method !== 'POST' || req.path !== '/services/T000/B000/XXXX') return { answer: text(404, 'no_service'), problems: ['unknown hook'] };
    const v = validateSlack(req.body);
    if (v.message === undefined) return { answer: text(400, v.error ?? 'invalid_payload'), problems: v.problems };
    return { answer: text(200, 'ok'), accepted: v.message };
  }, host);
}

// ---- Standard Webhooks ----------------------------------------------------------------------------------------

export interface WebhookDelivery {
  id: string;
  timestampS: number;
  body: { type: string; timestamp: string; data: Record<string, unknown> };
}

export interface FakeWebhook extends Fake<WebhookDelivery> {
  /** Deliveries whose webhook-id was already accepted (a retry): a real receiver drops them as duplicates. */
  readonly duplicates: WebhookDelivery[];
}

const TOLERANCE_S = 5 * 60;

/**
 * A Standard Webhooks receiver: verifies the signature with `secret` (`whsec_<base64>` or raw UTF-8) and a
 * timestamp within 5 minutes of `clock()`; 401 for a bad signature or stale timestamp, 400 for a malformed body.
 */
export async function fakeWebhook(secret: string, clock: () => number = Date.now): Promise<FakeWebhook> {
  // Decoded here independently of the code under test.
  const key = secret.startsWith('whsec_') ? Buffer.from(secret.slice(6), 'base64') : Buffer.from(secret, 'utf8');
  const seen = new Set<string>();
  const duplicates: WebhookDelivery[] = [];
  const fake = await startFake<WebhookDelivery>('/hooks/bulkhead', (req) => {
    const h = (name: string) => (typeof req.headers[name] === 'string' ? (req.headers[name] as string) : undefined);
    const id = h('webhook-id');
    const ts = h('webhook-timestamp');
    const sig = h('webhook-signature');
    if (id === undefined || ts === undefined || sig === undefined) return { answer: text(400, 'missing webhook headers'), problems: ['headers: webhook-id, webhook-timestamp and webhook-signature are required'] };
    if (!/^\d+$/.test(ts)) return { answer: text(400, 'bad timestamp'), problems: ['webhook-timestamp: not integer seconds'] };
    const timestampS = Number(ts);
    if (Math.abs(clock() / 1000 - timestampS) > TOLERANCE_S) return { answer: text(401, 'timestamp outside tolerance'), problems: ['webhook-timestamp: stale'] };
    const expected = createHmac('sha256', key).update(`${id}.${ts}.${req.body}`).digest();
    const ok = sig.split(' ').some((s) => {
      const [version, b64] = s.split(',', 2);
      if (version !== 'v1' || b64 === undefined) return false;
      const given = Buffer.from(b64, 'base64');
      return given.length === expected.length && timingSafeEqual(given, expected);
    });
    if (!ok) return { answer: text(401, 'invalid signature'), problems: ['webhook-signature: does not verify'] };
    const parsed = parseJson(req.body);
    const problems: string[] = [];
    if (!parsed.ok || !isObject(parsed.value)) return { answer: text(400, 'not json'), problems: ['body: not a JSON object'] };
    const b = parsed.value;
    str(problems, 'type', b.type, { required: true, min: 1 });
    if (!isIso(b.timestamp)) problems.push('timestamp: not ISO-8601');
    if (!isObject(b.data)) problems.push('data: expected an object');
    if (problems.length > 0) return { answer: text(400, problems.join('; ')), problems };
    const delivery: WebhookDelivery = { id, timestampS, body: b as WebhookDelivery['body'] };
    if (seen.has(id)) duplicates.push(delivery);
    seen.add(id);
    return { answer: text(204, ''), accepted: delivery };
  });
  return Object.assign(fake, { duplicates });
}

// ---- Alertmanager API v2 --------------------------------------------------------------------------------------

export interface PostableAlert {
  labels: Record<string, string>;
  annotations?: Record<string, string>;
  startsAt?: string;
  endsAt?: string;
  generatorURL?: string;
}

export interface FakeAlertmanager extends Fake<PostableAlert[]> {
  /** The latest alert per label set (Alertmanager's identity), keyed by its sorted labels. */
  readonly alerts: Map<string, PostableAlert>;
  /** Whether the alert with these labels is resolved at `clock()` (endsAt ≤ now). */
  resolved(labels: Record<string, string>): boolean | undefined;
}

const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
export const labelKey = (labels: Record<string, string>): string => JSON.stringify(Object.entries(labels).sort(([a], [b]) => a.localeCompare(b)));

export function validateAlerts(body: string): { alerts?: PostableAlert[]; problems: string[] } {
  const parsed = parseJson(body);
  if (!parsed.ok || !Array.isArray(parsed.value)) return { problems: ['body: expected a JSON array of alerts'] };
  const problems: string[] = [];
  parsed.value.forEach((a: unknown, i) => {
    const where = `[${i}]`;
    if (!isObject(a)) return void problems.push(`${where}: expected an object`);
    if (!isObject(a.labels) || Object.keys(a.labels).length === 0) problems.push(`${where}.labels: at least one label required`);
    else {
      for (const [name, value] of Object.entries(a.labels)) {
        if (!LABEL_NAME.test(name)) problems.push(`${where}.labels: invalid name ${name}`);
        str(problems, `${where}.labels.${name}`, value, { required: true, min: 1 });
      }
    }
    if (a.annotations !== undefined) {
      if (!isObject(a.annotations)) problems.push(`${where}.annotations: expected an object`);
      else for (const [name, value] of Object.entries(a.annotations)) str(problems, `${where}.annotations.${name}`, value);
    }
    for (const k of ['startsAt', 'endsAt'] as const) if (a[k] !== undefined && !isIso(a[k])) problems.push(`${where}.${k}: not a date-time`);
    if (isIso(a.startsAt) && isIso(a.endsAt) && Date.parse(a.endsAt as string) < Date.parse(a.startsAt as string)) problems.push(`${where}: endsAt before startsAt`);
    if (a.generatorURL !== undefined && (typeof a.generatorURL !== 'string' || !URL.canParse(a.generatorURL))) problems.push(`${where}.generatorURL: not a URI`);
  });
  return problems.length === 0 ? { alerts: parsed.value as PostableAlert[], problems } : { problems };
}

/** Alertmanager at `http://127.0.0.1:port` (POST /api/v2/alerts): 200, or 400 naming the invalid alerts. */
export async function fakeAlertmanager(clock: () => number = Date.now): Promise<FakeAlertmanager> {
  const alerts = new Map<string, PostableAlert>();
  const fake = await startFake<PostableAlert[]>('', (req) => {
    if (req.method !== 'POST' || req.path !== '/api/v2/alerts') return { answer: text(404, 'not found'), problems: [`${req.method} ${req.path}`] };
    const v = validateAlerts(req.body);
    if (v.alerts === undefined) return { answer: json(400, v.problems.join('; ')), problems: v.problems };
    for (const a of v.alerts) alerts.set(labelKey(a.labels), a);
    return { answer: text(200, ''), accepted: v.alerts };
  });
  const resolved = (labels: Record<string, string>) => {
    const a = alerts.get(labelKey(labels));
    return a === undefined ? undefined : a.endsAt !== undefined && Date.parse(a.endsAt) <= clock();
  };
  return Object.assign(fake, { alerts, resolved });
}
