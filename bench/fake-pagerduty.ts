// A fake PagerDuty Events API v2 for benchmarks: a real HTTP server on 127.0.0.1 that checks every event against the
// published format (PagerDuty/api-schema events-v2; see /work/shared/reference/alert-receivers.md §1), answers as
// PagerDuty does (202 or 400 "invalid event"), and records when each accepted event arrived. test/helpers has a
// fuller fake for the tests; test/ is not compiled into dist/, so the benchmark carries its own.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';

const ACTIONS = ['trigger', 'acknowledge', 'resolve'] as const;
const SEVERITIES = ['critical', 'error', 'warning', 'info'];
const TOP_LEVEL = new Set(['routing_key', 'event_action', 'dedup_key', 'payload', 'client', 'client_url', 'links', 'images']);
const PAYLOAD = new Set(['summary', 'source', 'severity', 'timestamp', 'component', 'group', 'class', 'custom_details']);
const MAX_BODY_BYTES = 512_000;

export interface PagerDutyEvent {
  readonly action: (typeof ACTIONS)[number];
  readonly dedupKey: string;
  /** performance.now() when the request body had fully arrived. */
  readonly arrivedAt: number;
  /** payload.timestamp of a trigger (the controller sets it to the observation's time), as epoch ms. */
  readonly timestampMs: number | undefined;
  readonly summary: string | undefined;
  /** For a resolve: whether it closed an open alert (PagerDuty silently drops one that does not). */
  readonly closed: boolean;
}

export interface FakePagerDuty {
  readonly url: string;
  readonly events: PagerDutyEvent[];
  /** Requests refused with 400, and why. */
  readonly rejected: { body: string; problems: string[] }[];
  /** Resolves with the first event (already recorded or arriving later) that matches, or undefined after `timeoutMs`. */
  waitFor(match: (e: PagerDutyEvent) => boolean, timeoutMs: number): Promise<PagerDutyEvent | undefined>;
  close(): Promise<void>;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isIso = (v: unknown): boolean => typeof v === 'string' && /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/.test(v) && !Number.isNaN(Date.parse(v));
const nonEmpty = (v: unknown): v is string => typeof v === 'string' && v.length > 0;

/** Every way an event breaks the Events API v2 format; empty when it is valid. */
export function problemsOf(event: unknown, routingKey: string): string[] {
  if (!isObject(event)) return ['the body is not a JSON object'];
  const problems: string[] = [];
  for (const key of Object.keys(event)) if (!TOP_LEVEL.has(key)) problems.push(`unknown field ${key}`);
  if (typeof event.routing_key !== 'string' || event.routing_key.length !== 32) problems.push('routing_key: expected 32 characters');
  else if (event.routing_key !== routingKey) problems.push('routing_key: not this integration\'s key');
  if (!ACTIONS.includes(event.event_action as (typeof ACTIONS)[number])) problems.push(`event_action: expected one of ${ACTIONS.join(', ')}`);
  if (event.dedup_key !== undefined && (!nonEmpty(event.dedup_key) || event.dedup_key.length > 255)) problems.push('dedup_key: expected 1–255 characters');
  if (event.event_action !== 'trigger') {
    if (event.dedup_key === undefined) problems.push('dedup_key: required unless the action is trigger');
    if (event.payload !== undefined) problems.push('payload: only a trigger carries one');
    return problems;
  }
  const p = event.payload;
  if (!isObject(p)) return [...problems, 'payload: required on trigger'];
  for (const key of Object.keys(p)) if (!PAYLOAD.has(key)) problems.push(`unknown field payload.${key}`);
  if (!nonEmpty(p.summary) || p.summary.length > 1024) problems.push('payload.summary: expected 1–1024 characters');
  if (!nonEmpty(p.source)) problems.push('payload.source: required');
  if (!SEVERITIES.includes(p.severity as string)) problems.push(`payload.severity: expected one of ${SEVERITIES.join(', ')}`);
  if (p.timestamp !== undefined && !isIso(p.timestamp)) problems.push('payload.timestamp: expected ISO 8601');
  if (p.custom_details !== undefined && !isObject(p.custom_details)) problems.push('payload.custom_details: expected an object');
  return problems;
}

/** Starts the fake on 127.0.0.1 (a free port) at /v2/enqueue, accepting events for `routingKey` only. */
export async function startFakePagerDuty(routingKey: string): Promise<FakePagerDuty> {
  const events: PagerDutyEvent[] = [];
  const rejected: FakePagerDuty['rejected'] = [];
  const open = new Set<string>();
  const waiters = new Set<(e: PagerDutyEvent) => void>();
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= MAX_BODY_BYTES) chunks.push(c);
    });
    req.on('end', () => {
      const arrivedAt = performance.now();
      const body = Buffer.concat(chunks).toString('utf8');
      const reply = (status: number, answer: object) => res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(answer));
      let event: unknown;
      let problems: string[];
      if (req.method !== 'POST' || req.url !== '/v2/enqueue') problems = [`${req.method} ${req.url}: expected POST /v2/enqueue`];
      else if (size > MAX_BODY_BYTES) problems = [`body of ${size} bytes: PagerDuty accepts less than ${MAX_BODY_BYTES}`];
      else {
        try {
          event = JSON.parse(body);
          problems = problemsOf(event, routingKey);
        } catch {
          problems = ['the body is not JSON'];
        }
      }
      if (problems.length > 0) {
        rejected.push({ body: body.slice(0, 2000), problems });
        return reply(400, { status: 'invalid event', message: 'Event object is invalid', errors: problems });
      }
      const e = event as { event_action: PagerDutyEvent['action']; dedup_key?: string; payload?: { timestamp?: string; summary?: string } };
      // PagerDuty makes up a key for a trigger without one; the controller always sends its own.
      const dedupKey = e.dedup_key ?? `pd-${events.length}`;
      let closed = false;
      if (e.event_action === 'trigger') open.add(dedupKey);
      else if (e.event_action === 'resolve') closed = open.delete(dedupKey);
      const recorded: PagerDutyEvent = {
        action: e.event_action,
        dedupKey,
        arrivedAt,
        timestampMs: e.payload?.timestamp !== undefined ? Date.parse(e.payload.timestamp) : undefined,
        summary: e.payload?.summary,
        closed,
      };
      events.push(recorded);
      for (const wake of waiters) wake(recorded);
      reply(202, { status: 'success', message: 'Event processed', dedup_key: dedupKey });
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v2/enqueue`,
    events,
    rejected,
    waitFor(match, timeoutMs) {
      const already = events.find(match);
      if (already) return Promise.resolve(already);
      return new Promise((resolve) => {
        const wake = (e: PagerDutyEvent) => {
          if (!match(e)) return;
          finish(e);
        };
        const finish = (e: PagerDutyEvent | undefined) => {
          clearTimeout(timer);
          waiters.delete(wake);
          resolve(e);
        };
        const timer = setTimeout(() => finish(undefined), timeoutMs);
        waiters.add(wake);
      });
    },
    close() {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
