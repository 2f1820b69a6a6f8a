// One DNS question to one resolver, with dns-packet: UDP first, TCP when the reply is truncated.
// Shared by the dns probe and by the engine when it resolves target host names through a declared resolver.
import { randomInt } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import dnsPacket from 'dns-packet';
import type { Answer, DecodedPacket, Packet, RecordType } from 'dns-packet';
import type { DnsAnswer } from '../core/outcome.js';
import { round } from './connect.js';
import { abortCode, errorCode, isTimeout } from './errors.js';

export type DnsTransport = 'udp' | 'tcp';

export interface DnsQueryOptions {
  readonly name: string;
  /** Record type such as A, AAAA, CNAME, TXT; case-insensitive. */
  readonly type: string;
  /** The resolver's IP address: the query never resolves a name to find its resolver. */
  readonly address: string;
  readonly port: number;
  readonly signal: AbortSignal;
  /** `performance.now()` at the start of the attempt; defaults to the call. */
  readonly startedAt?: number;
}

interface Local {
  readonly localAddress?: string;
  readonly localPort?: number;
}

/** What the resolver said, or why nothing usable came back. `code` is an errno, TimeoutError, ABORTED, BAD_REPLY or EINVAL. */
export type DnsQueryResult =
  | (Local & {
      readonly kind: 'answer';
      readonly rcode: string;
      readonly transport: DnsTransport;
      /** The UDP reply carried TC, so the query was repeated over TCP (or TCP failed and the partial UDP answer stands). */
      readonly truncated: boolean;
      readonly answers: DnsAnswer[];
      readonly firstByteMs: number;
    })
  | (Local & { readonly kind: 'failed'; readonly code: string; readonly transport: DnsTransport; readonly detail?: string });

type Exchange =
  | { readonly ok: true; readonly reply: DecodedPacket; readonly firstByteAt: number; readonly local: Local }
  | { readonly ok: false; readonly code: string; readonly detail?: string; readonly local: Local };

interface Asked {
  readonly packet: Packet;
  readonly name: string;
  readonly type: string;
}

// Evidence strings are capped at 2048 characters by the outcome schema.
const MAX_DATA = 2048;

/** Asks `address:port` one question; resolves with the answer or the failure, never throws, and closes its sockets. */
export async function queryDns(opts: DnsQueryOptions): Promise<DnsQueryResult> {
  const startedAt = opts.startedAt ?? performance.now();
  const { signal } = opts;
  if (signal.aborted) return { kind: 'failed', code: abortCode(signal), transport: 'udp' };
  const family = net.isIP(opts.address);
  if (family === 0) {
    return { kind: 'failed', code: 'EINVAL', transport: 'udp', detail: `resolver address ${opts.address} is not an IP address` };
  }
  const asked = question(opts.name, opts.type);
  if (!asked) return { kind: 'failed', code: 'EINVAL', transport: 'udp', detail: `cannot encode a ${opts.type} query for ${opts.name}` };

  const udp = await exchangeUdp(asked, family, opts);
  if (!udp.ok) return { kind: 'failed', code: udp.code, transport: 'udp', ...detailOf(udp.detail), ...udp.local };
  const firstByteMs = round(udp.firstByteAt - startedAt);
  if (!udp.reply.flag_tc) return answered(udp.reply, 'udp', false, firstByteMs, udp.local);

  const tcp = await exchangeTcp(asked, opts);
  if (tcp.ok) return answered(tcp.reply, 'tcp', true, firstByteMs, tcp.local);
  // Records in a truncated UDP reply are still records the resolver gave out; a cancelled run is not an answer.
  if (tcp.code !== 'ABORTED' && (udp.reply.answers?.length ?? 0) > 0) return answered(udp.reply, 'udp', true, firstByteMs, udp.local);
  return { kind: 'failed', code: tcp.code, transport: 'tcp', ...detailOf(tcp.detail), ...tcp.local };
}

function question(name: string, type: string): Asked | undefined {
  const wanted = type.toUpperCase();
  const packet: Packet = {
    type: 'query',
    id: randomInt(0, 0x10000),
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ name, type: wanted as RecordType, class: 'IN' }],
  };
  try {
    // dns-packet encodes an unknown type as 0 instead of failing: read the query back to be sure.
    const echoed = dnsPacket.decode(dnsPacket.encode(packet)).questions?.[0];
    if (!echoed || echoed.type !== wanted) return undefined;
    return { packet, name: echoed.name.toLowerCase(), type: wanted };
  } catch {
    return undefined;
  }
}

/** Why a reply cannot be the answer to our question, or undefined when it is. */
function mismatch(reply: DecodedPacket, asked: Asked): string | undefined {
  if (reply.type !== 'response') return 'the resolver sent a query instead of a response';
  if (reply.id !== asked.packet.id) return `reply id ${reply.id} does not match query id ${asked.packet.id}`;
  const q = reply.questions?.[0];
  // Some servers drop the question section from error replies; an answer without it cannot be trusted.
  if (!q) return (reply as { rcode?: string }).rcode === 'NOERROR' ? 'the reply has no question section' : undefined;
  if (q.name.toLowerCase() !== asked.name || q.type !== asked.type) return `the reply answers ${q.name} ${q.type}, not the question asked`;
  return undefined;
}

function decode(message: Buffer): DecodedPacket | undefined {
  try {
    return dnsPacket.decode(message);
  } catch {
    return undefined;
  }
}

function exchangeUdp(asked: Asked, family: number, opts: DnsQueryOptions): Promise<Exchange> {
  const { signal } = opts;
  return new Promise((resolve) => {
    const socket = dgram.createSocket(family === 6 ? 'udp6' : 'udp4');
    let settled = false;
    let local: Local = {};
    let ignored: string | undefined;
    const finish = (value: Exchange) => {
      if (settled) return;
      settled = true;
      signal.removeEventListener('abort', onAbort);
      try {
        socket.close();
      } catch {
        // already closed
      }
      resolve(value);
    };
    // A datagram with the wrong id may be a stale or forged reply: ignore it as resolvers do, but if nothing
    // better comes before the timeout, say that the resolver answered badly rather than not at all.
    const onAbort = () =>
      finish(
        ignored !== undefined && isTimeout(signal)
          ? { ok: false, code: 'BAD_REPLY', detail: ignored, local }
          : { ok: false, code: abortCode(signal), local },
      );
    // Stays attached after finish: a late ICMP error on a closing socket must not become an uncaught 'error'.
    socket.on('error', (err) => finish({ ok: false, code: errorCode(err), local }));
    socket.on('message', (message) => {
      const firstByteAt = performance.now();
      const reply = decode(message);
      if (!reply) return finish({ ok: false, code: 'BAD_REPLY', detail: 'the UDP reply is not a DNS message', local });
      const wrong = mismatch(reply, asked);
      if (wrong === undefined) return finish({ ok: true, reply, firstByteAt, local });
      if (reply.id !== asked.packet.id) ignored = wrong;
      else finish({ ok: false, code: 'BAD_REPLY', detail: wrong, local });
    });
    signal.addEventListener('abort', onAbort, { once: true });
    // Connected, so an ICMP port-unreachable surfaces as ECONNREFUSED instead of a silent timeout.
    socket.connect(opts.port, opts.address, () => {
      if (settled) return;
      try {
        const bound = socket.address();
        local = { localAddress: bound.address, localPort: bound.port };
      } catch {
        // not bound after all; leave the local address out
      }
      socket.send(dnsPacket.encode(asked.packet), (err) => {
        if (err) finish({ ok: false, code: errorCode(err), local });
      });
    });
  });
}

function exchangeTcp(asked: Asked, opts: DnsQueryOptions): Promise<Exchange> {
  const { signal } = opts;
  if (signal.aborted) return Promise.resolve({ ok: false, code: abortCode(signal), local: {} });
  return new Promise((resolve) => {
    const socket = net.connect({ host: opts.address, port: opts.port, noDelay: true });
    let settled = false;
    let local: Local = {};
    let received = Buffer.alloc(0);
    let firstByteAt: number | undefined;
    const finish = (value: Exchange) => {
      if (settled) return;
      settled = true;
      signal.removeEventListener('abort', onAbort);
      socket.destroy();
      resolve(value);
    };
    const onAbort = () => finish({ ok: false, code: abortCode(signal), local });
    socket.on('error', (err) => finish({ ok: false, code: errorCode(err), local }));
    socket.once('close', () => finish({ ok: false, code: 'BAD_REPLY', detail: 'the resolver closed the TCP connection before a complete reply', local }));
    socket.once('connect', () => {
      local = { localAddress: socket.localAddress, localPort: socket.localPort };
      socket.write(dnsPacket.streamEncode(asked.packet));
    });
    socket.on('data', (chunk: Buffer) => {
      firstByteAt ??= performance.now();
      received = Buffer.concat([received, chunk]);
      // TCP carries a 2-byte length prefix; the message may arrive in any number of chunks.
      if (received.length < 2 || received.length < 2 + received.readUInt16BE(0)) return;
      let reply: DecodedPacket | undefined;
      try {
        reply = (dnsPacket.streamDecode(received) as DecodedPacket | null) ?? undefined;
      } catch {
        reply = undefined;
      }
      if (!reply) return finish({ ok: false, code: 'BAD_REPLY', detail: 'the TCP reply is not a DNS message', local });
      const wrong = mismatch(reply, asked);
      finish(wrong === undefined ? { ok: true, reply, firstByteAt, local } : { ok: false, code: 'BAD_REPLY', detail: wrong, local });
    });
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

function answered(reply: DecodedPacket, transport: DnsTransport, truncated: boolean, firstByteMs: number, local: Local): DnsQueryResult {
  return {
    kind: 'answer',
    rcode: (reply as { rcode?: string }).rcode ?? 'UNKNOWN',
    transport,
    truncated,
    answers: (reply.answers ?? []).map(toDnsAnswer),
    firstByteMs,
    ...local,
  };
}

function toDnsAnswer(answer: Answer): DnsAnswer {
  const out: DnsAnswer = { name: clip(answer.name), type: clip(String(answer.type)), data: clip(dataOf(answer)) };
  if ('ttl' in answer && typeof answer.ttl === 'number') out.ttl = answer.ttl;
  return out;
}

function dataOf(answer: Answer): string {
  switch (answer.type) {
    case 'A':
    case 'AAAA':
    case 'CNAME':
    case 'DNAME':
    case 'NS':
    case 'PTR':
      return answer.data;
    case 'TXT': {
      const parts = Array.isArray(answer.data) ? answer.data : [answer.data];
      return parts.map((part) => (typeof part === 'string' ? part : part.toString('utf8'))).join('');
    }
    case 'MX':
      return `${answer.data.preference ?? 0} ${answer.data.exchange}`;
    case 'SRV':
      return `${answer.data.priority ?? 0} ${answer.data.weight ?? 0} ${answer.data.port} ${answer.data.target}`;
    default:
      return JSON.stringify('data' in answer ? answer.data : answer, (_key, value: unknown) =>
        isSerializedBuffer(value) ? Buffer.from(value.data).toString('hex') : value,
      );
  }
}

// JSON.stringify calls Buffer#toJSON before the replacer sees the value.
function isSerializedBuffer(value: unknown): value is { type: 'Buffer'; data: number[] } {
  return typeof value === 'object' && value !== null && (value as { type?: unknown }).type === 'Buffer' && Array.isArray((value as { data?: unknown }).data);
}

function clip(text: string): string {
  return text.length > MAX_DATA ? `${text.slice(0, MAX_DATA - 1)}…` : text;
}

function detailOf(detail: string | undefined): { detail?: string } {
  return detail === undefined ? {} : { detail };
}
