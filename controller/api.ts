// The controller's HTTP API: health, paths, findings, agents, the plan in force, counters and deliveries, all
// read from memory; plus silences, the one thing it writes. Every answer is JSON, and no input can make it throw.
import { timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import { isIP, type AddressInfo } from 'node:net';
import type { LoadedPlan } from '../core/plan-load.js';
import type { Silence } from './delivery/model.js';
import { parseSilence } from './delivery/silences.js';
import type { ControllerState, PathState } from './model.js';

/** Silences and delivery figures: the dispatcher supplies them. */
export interface DeliveryView {
  snapshot(): Record<string, unknown>;
  readonly silences: readonly Silence[];
  addSilence(silence: Silence): Promise<void>;
  expireSilence(id: string): Promise<Silence | undefined>;
  now(): number;
}

/** What the API reads; the controller supplies it. */
export interface ApiView {
  state(): ControllerState;
  plan(): LoadedPlan;
  health(): { natsConnected: boolean; lastCommitAt: string | null; committedSeq: number; failure: string | null; store: string };
  delivery?: DeliveryView;
  /** When set, writes need `Authorization: Bearer <token>`; when not, writes are accepted from loopback only. */
  writeToken?: string;
}

const MAX_BODY_BYTES = 64 * 1024;

export interface ApiServer {
  readonly host: string;
  readonly port: number;
  close(): Promise<void>;
}

const PATH_STATES: readonly PathState[] = ['ok', 'pending', 'firing', 'resolved'];
const FINDING_STATUSES = ['firing', 'resolved'] as const;

type Answer = readonly [status: number, body: unknown];

/** Routes one request; pure apart from reading the view, so it is easy to test and cannot leave a socket hanging. */
export function route(view: ApiView, method: string, rawUrl: string): Answer {
  let url: URL;
  try {
    url = new URL(rawUrl, 'http://controller.invalid');
  } catch {
    return [400, { error: 'malformed request target' }];
  }
  const handler = ROUTES[url.pathname];
  if (handler === undefined) return [404, { error: `no such endpoint: ${url.pathname}`, endpoints: Object.keys(ROUTES) }];
  if (method !== 'GET' && method !== 'HEAD') return [405, { error: `${method} not allowed here: only /v1/silences accepts writes` }];
  return handler(view, url.searchParams);
}

function oneOf<T extends string>(params: URLSearchParams, name: string, allowed: readonly T[]): T | undefined | Error {
  const value = params.get(name);
  if (value === null) return undefined;
  return (allowed as readonly string[]).includes(value) ? (value as T) : new Error(`${name}: expected one of ${allowed.join(', ')}, got ${JSON.stringify(value.slice(0, 40))}`);
}

const ROUTES: Record<string, (view: ApiView, params: URLSearchParams) => Answer> = {
  '/healthz': (view) => {
    const h = view.health();
    const ok = h.natsConnected && h.failure === null;
    return [ok ? 200 : 503, { ok, ...h }];
  },
  '/v1/paths': (view, params) => {
    const state = oneOf(params, 'state', PATH_STATES);
    if (state instanceof Error) return [400, { error: state.message }];
    const paths = [...view.state().paths.values()].filter((p) => state === undefined || p.state === state);
    return [200, { count: paths.length, paths }];
  },
  '/v1/findings': (view, params) => {
    const status = oneOf(params, 'status', FINDING_STATUSES);
    if (status instanceof Error) return [400, { error: status.message }];
    const findings = [...view.state().findings.values()].filter((f) => status === undefined || f.status === status);
    return [200, { count: findings.length, findings }];
  },
  '/v1/agents': (view) => {
    const agents = [...view.state().agents.values()];
    return [200, { count: agents.length, agents }];
  },
  '/v1/silences': (view, params) => {
    if (!view.delivery) return [404, { error: 'no delivery in this controller' }];
    const now = view.delivery.now();
    const all = params.get('all') === 'true';
    const silences = view.delivery.silences.filter((s) => all || Date.parse(s.endsAt) > now);
    return [200, { count: silences.length, silences }];
  },
  '/v1/deliveries': (view) => (view.delivery ? [200, view.delivery.snapshot()] : [404, { error: 'no delivery in this controller' }]),
  '/v1/plan': (view) => {
    const { path, sha256 } = view.plan();
    return [200, { path, sha256 }];
  },
  '/v1/stats': (view) => {
    const s = view.state();
    const h = view.health();
    const firing = (states: Iterable<{ state?: string; status?: string }>) => [...states].filter((x) => (x.state ?? x.status) === 'firing').length;
    return [
      200,
      {
        counters: s.counters,
        checkpoint: { streamSeq: s.checkpoint.streamSeq, committed: h.committedSeq },
        outbox: { pending: s.outbox.size },
        paths: { total: s.paths.size, firing: firing(s.paths.values()) },
        findings: { total: s.findings.size, firing: firing(s.findings.values()) },
        agents: { total: s.agents.size, silent: [...s.agents.values()].filter((a) => a.silent).length },
        lastCommitAt: h.lastCommitAt,
        store: h.store,
      },
    ];
  },
};

/** Listens on host:port (port 0: any free port) and serves the view until close(). */
export async function startApi(view: ApiView, listen: { host: string; port: number }): Promise<ApiServer> {
  const server = http.createServer((req, res) => {
    const reply = ([status, b]: Answer) => {
      const body = `${JSON.stringify(b)}\n`;
      res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', 'content-length': Buffer.byteLength(body) });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    const failed = (err: unknown): Answer => [500, { error: 'internal error', detail: (err as Error).message }];
    const method = req.method ?? 'GET';
    if (method === 'POST' || method === 'DELETE') {
      write(view, req).then(reply, (err) => reply(failed(err)));
      return;
    }
    try {
      reply(route(view, method, req.url ?? '/'));
    } catch (err) {
      reply(failed(err));
    }
  });
  server.headersTimeout = 10_000;
  server.requestTimeout = 15_000;
  server.keepAliveTimeout = 5_000;
  // A malformed request line gets a 400 and the socket closed, never an exception.
  server.on('clientError', (_err, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
    else socket.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen.port, listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  return {
    host: address.address,
    port: address.port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** POST /v1/silences creates a silence; DELETE /v1/silences/<id> expires one. */
async function write(view: ApiView, req: http.IncomingMessage): Promise<Answer> {
  const path = new URL(req.url ?? '/', 'http://controller.invalid').pathname;
  const match = /^\/v1\/silences(?:\/(sil_[0-9a-f]{16}))?$/.exec(path);
  if (!match) return [405, { error: `${req.method} not allowed here: only /v1/silences accepts writes` }];
  const denied = authorize(view, req);
  if (denied) return denied;
  if (!view.delivery) return [404, { error: 'no delivery in this controller' }];
  if (req.method === 'DELETE') {
    if (match[1] === undefined) return [400, { error: 'DELETE needs a silence id: /v1/silences/<id>' }];
    const ended = await view.delivery.expireSilence(match[1]);
    return ended ? [200, { silence: ended }] : [404, { error: `no silence ${match[1]}` }];
  }
  if (match[1] !== undefined) return [405, { error: 'POST to /v1/silences, not to a silence' }];
  const text = await readBody(req);
  if (text === undefined) return [413, { error: `body larger than ${MAX_BODY_BYTES} bytes` }];
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return [400, { error: 'body: expected JSON' }];
  }
  const silence = parseSilence(body, view.delivery.now());
  if ('problems' in silence) return [400, { error: 'invalid silence', problems: silence.problems }];
  await view.delivery.addSilence(silence);
  return [201, { silence }];
}

function authorize(view: ApiView, req: http.IncomingMessage): Answer | undefined {
  if (view.writeToken !== undefined) {
    const given = Buffer.from(/^bearer +(.+)$/i.exec(req.headers.authorization ?? '')?.[1]?.trim() ?? '');
    const wanted = Buffer.from(view.writeToken);
    return given.length === wanted.length && timingSafeEqual(given, wanted) ? undefined : [401, { error: 'writes need Authorization: Bearer <token>' }];
  }
  const remote = req.socket.remoteAddress ?? '';
  const loopback = remote === '::1' || remote.startsWith('127.') || remote.startsWith('::ffff:127.');
  return loopback && isIP(remote) !== 0 ? undefined : [403, { error: 'writes are accepted from loopback only unless the controller has an API token (--api-token-file)' }];
}

/** The request body as text, or undefined when it exceeds MAX_BODY_BYTES. */
function readBody(req: http.IncomingMessage): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size <= MAX_BODY_BYTES) chunks.push(chunk);
    });
    req.on('end', () => resolve(size > MAX_BODY_BYTES ? undefined : Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}
