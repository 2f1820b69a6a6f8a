// The demo's webhook receiver: what a team's own endpoint for Bulkhead's `webhook` receiver looks like. A Standard
// Webhooks consumer on 127.0.0.1 that checks webhook-signature (HMAC-SHA256 over "{id}.{timestamp}.{body}") with the
// shared secret, refuses a bad or stale signature with 401, and prints one line per notification it accepted.
// Written against the Standard Webhooks spec, not with the controller's signing code, so it checks the controller
// rather than agreeing with it by construction.
//
//   BULKHEAD_DEMO_WEBHOOK_SECRET=whsec_… node dist/demo/receiver.js [PORT]     (default 19471)
import { createHmac, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import { pathToFileURL } from 'node:url';

/** How far webhook-timestamp may be from our clock (the spec's suggested tolerance): an older one is a replay. */
export const TOLERANCE_S = 300;
const MAX_BODY_BYTES = 1024 * 1024;
const SEEN_KEPT = 1000;

/** The key bytes of a secret: `whsec_<base64>` as the spec formats it, any other string as its UTF-8 bytes. */
export function keyOf(secret: string): Buffer {
  return secret.startsWith('whsec_') ? Buffer.from(secret.slice('whsec_'.length), 'base64') : Buffer.from(secret, 'utf8');
}

export type Verification = { ok: true } | { ok: false; reason: string };

/**
 * Checks a delivery as the spec says: the three headers present, the timestamp within tolerance, and one of the
 * space-separated `v1,<base64>` signatures equal (in constant time) to HMAC-SHA256(key, "{id}.{ts}.{body}").
 */
export function verify(headers: http.IncomingHttpHeaders, body: string, key: Buffer, nowS: number): Verification {
  const id = headers['webhook-id'];
  const ts = headers['webhook-timestamp'];
  const signatures = headers['webhook-signature'];
  if (typeof id !== 'string' || typeof ts !== 'string' || typeof signatures !== 'string') {
    return { ok: false, reason: 'missing webhook-id, webhook-timestamp or webhook-signature' };
  }
  if (!/^\d{1,12}$/.test(ts)) return { ok: false, reason: `webhook-timestamp is not a number of seconds: ${JSON.stringify(ts.slice(0, 20))}` };
  if (Math.abs(nowS - Number(ts)) > TOLERANCE_S) return { ok: false, reason: `webhook-timestamp ${ts} is more than ${TOLERANCE_S} s from now` };
  const expected = createHmac('sha256', key).update(`${id}.${ts}.${body}`).digest();
  for (const candidate of signatures.split(' ')) {
    const [version, value] = candidate.split(',', 2);
    if (version !== 'v1' || value === undefined) continue;
    const given = Buffer.from(value, 'base64');
    if (given.length === expected.length && timingSafeEqual(given, expected)) return { ok: true };
  }
  return { ok: false, reason: 'no v1 signature matches the secret' };
}

interface Delivered {
  action?: string;
  dedup_key?: string;
  incident?: number;
  finding?: { kind?: string; summary?: string; labels?: { from_env?: string; to_env?: string; target?: string; severity?: string } };
}

/** `staging → prod-db (prod)`: the path a notification is about, from the finding's labels. */
function pathOf(n: Delivered): string {
  const l = n.finding?.labels ?? {};
  const dest = l.target !== undefined ? `${l.target}${l.to_env !== undefined ? ` (${l.to_env})` : ''}` : l.to_env;
  return [l.from_env, dest].filter((x) => x !== undefined).join(' → ') || (n.finding?.kind ?? '?');
}

/** One human line per notification: what, which path, why, and how to correlate it with the controller. */
export function describe(n: Delivered, webhookId: string): string {
  const word = n.action === 'resolve' ? 'RESOLVED' : n.action === 'update' ? 'FIRING (update)' : 'FIRING';
  const summary = (n.finding?.summary ?? '').replace(/\s+/g, ' ').trim();
  // A resolve carries the finding as it fired: its summary says what was wrong, no longer what is.
  const said = n.action === 'resolve' ? `closed again (it fired for: ${summary})` : summary;
  return `${word} ${pathOf(n)}: ${said} [dedup ${n.dedup_key ?? '?'} #${n.incident ?? '?'}] webhook-id ${webhookId}, signature verified`;
}

/** Starts the receiver; resolves once it listens. `print` gets every line (accepted, refused, duplicate). */
export function startReceiver(options: { port: number; secret: string; print: (line: string) => void; now?: () => number }): Promise<http.Server> {
  const key = keyOf(options.secret);
  const nowS = () => Math.floor((options.now ?? Date.now)() / 1000);
  const seen: string[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= MAX_BODY_BYTES) chunks.push(c);
    });
    req.on('end', () => {
      const answer = (status: number, text: string) => res.writeHead(status, { 'content-type': 'text/plain' }).end(`${text}\n`);
      if (req.method !== 'POST') return answer(405, 'POST only');
      if (size > MAX_BODY_BYTES) return answer(413, 'body too large');
      const body = Buffer.concat(chunks).toString('utf8');
      const checked = verify(req.headers, body, key, nowS());
      if (!checked.ok) {
        options.print(`REFUSED (401) ${req.url ?? ''}: ${checked.reason}`);
        return answer(401, checked.reason);
      }
      const id = req.headers['webhook-id'] as string;
      // The id is the idempotency key: a retry of something already handled is acknowledged and not acted on twice.
      if (seen.includes(id)) {
        options.print(`duplicate delivery of ${id} (a retry): acknowledged, not shown again`);
        return answer(200, 'duplicate');
      }
      let notifications: Delivered[];
      try {
        const parsed = JSON.parse(body) as { data?: { notifications?: Delivered[] } };
        notifications = parsed.data?.notifications ?? [];
        if (!Array.isArray(notifications)) throw new Error('data.notifications is not a list');
      } catch (err) {
        options.print(`REFUSED (400) ${id}: ${(err as Error).message}`);
        return answer(400, 'expected {type, timestamp, data: {notifications: [...]}}');
      }
      seen.push(id);
      seen.splice(0, Math.max(0, seen.length - SEEN_KEPT));
      for (const n of notifications) options.print(describe(n, id));
      answer(200, 'ok');
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, '127.0.0.1', () => resolve(server));
  });
}

async function main(): Promise<void> {
  const secret = process.env.BULKHEAD_DEMO_WEBHOOK_SECRET;
  if (!secret) {
    process.stderr.write('receiver: set BULKHEAD_DEMO_WEBHOOK_SECRET to the webhook receiver\'s signing secret\n');
    process.exit(2);
  }
  const port = Number(process.argv[2] ?? 19471);
  const print = (line: string) => void process.stdout.write(`${new Date().toISOString()} ${line}\n`);
  await startReceiver({ port, secret, print });
  process.stderr.write(`receiver: listening on http://127.0.0.1:${port}/\n`);
  // Keep-alive connections from the controller would hold server.close() open: just go.
  process.on('SIGTERM', () => process.exit(0));
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err: Error) => {
    process.stderr.write(`receiver: ${err.message}\n`);
    process.exit(1);
  });
}
