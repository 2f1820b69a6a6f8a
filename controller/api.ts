// The controller's read-only HTTP API: health, paths, findings, agents, the plan in force, and counters.
// It only reads the in-memory state; every answer is JSON, and no input can make it throw.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { LoadedPlan } from '../core/plan-load.js';
import type { ControllerState, PathState } from './model.js';

/** What the API reads; the controller supplies it. */
export interface ApiView {
  state(): ControllerState;
  plan(): LoadedPlan;
  health(): { natsConnected: boolean; lastCommitAt: string | null; committedSeq: number; failure: string | null; store: string };
}

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
  if (method !== 'GET' && method !== 'HEAD') return [405, { error: `${method} not allowed: this API is read-only` }];
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
    let status: number;
    let body: string;
    try {
      const [s, b] = route(view, req.method ?? 'GET', req.url ?? '/');
      status = s;
      body = `${JSON.stringify(b)}\n`;
    } catch (err) {
      status = 500;
      body = `${JSON.stringify({ error: 'internal error', detail: (err as Error).message })}\n`;
    }
    res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', 'content-length': Buffer.byteLength(body) });
    res.end(req.method === 'HEAD' ? undefined : body);
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
