// A real DNS responder for tests: dns-packet over UDP and TCP on the same 127.0.0.1 port, answering from a
// programmable zone so each rcode, silence and truncation can be produced on demand.
import dgram from 'node:dgram';
import net from 'node:net';
import dnsPacket from 'dns-packet';
import type { Answer, DecodedPacket, Packet, RecordType } from 'dns-packet';

export interface ZoneRecord {
  readonly type: 'A' | 'AAAA' | 'CNAME' | 'TXT';
  /** Address or target; for TXT, one string or several character-strings. */
  readonly data: string | readonly string[];
  readonly ttl?: number;
}

/**
 * How the server treats one name: records (answered by type; other types get NODATA; a CNAME is always
 * given and followed inside the zone), an error rcode, no reply at all, a UDP reply with TC set and the
 * records only over TCP, or a UDP reply whose id is wrong.
 */
export type Behaviour =
  | readonly ZoneRecord[]
  | 'nxdomain'
  | 'refused'
  | 'servfail'
  | 'notimp'
  | 'nodata'
  | 'silent'
  | 'wrong-id'
  | { readonly truncate: readonly ZoneRecord[] };

export type Zone = Readonly<Record<string, Behaviour>>;

export interface SeenQuery {
  readonly name: string;
  readonly type: string;
  readonly transport: 'udp' | 'tcp';
}

export interface DnsServerOptions {
  /** Write each TCP reply as one byte, then chunks of this size a few ms apart, to exercise the client's reassembly. */
  readonly tcpChunkBytes?: number;
}

export interface DnsServer {
  readonly port: number;
  readonly queries: SeenQuery[];
  close(): Promise<void>;
}

// Without EDNS a UDP reply may carry 512 bytes; anything larger goes out truncated (RFC 1035 §4.2.1).
const UDP_LIMIT = 512;
const RCODE = { NOERROR: 0, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;

/** Starts the responder on a free port, UDP and TCP both; names are matched case-insensitively, without a trailing dot. */
export async function startDnsServer(zone: Zone, options: DnsServerOptions = {}): Promise<DnsServer> {
  const normalised = new Map(Object.entries(zone).map(([name, behaviour]) => [norm(name), behaviour]));
  const queries: SeenQuery[] = [];
  const connections = new Set<net.Socket>();

  const reply = (query: DecodedPacket, transport: 'udp' | 'tcp'): Buffer | undefined => {
    const q = query.questions?.[0];
    if (!q) return encode(query, RCODE.NOTIMP, []);
    queries.push({ name: q.name, type: q.type, transport });
    const behaviour = normalised.get(norm(q.name)) ?? 'nxdomain';
    if (behaviour === 'silent') return undefined;
    if (behaviour === 'nxdomain') return encode(query, RCODE.NXDOMAIN, []);
    if (behaviour === 'refused') return encode(query, RCODE.REFUSED, []);
    if (behaviour === 'servfail') return encode(query, RCODE.SERVFAIL, []);
    if (behaviour === 'notimp') return encode(query, RCODE.NOTIMP, []);
    if (behaviour === 'nodata') return encode(query, RCODE.NOERROR, []);
    if (behaviour === 'wrong-id') return encode({ ...query, id: ((query.id ?? 0) + 1) & 0xffff }, RCODE.NOERROR, []);
    if ('truncate' in behaviour && transport === 'udp') return encode(query, RCODE.NOERROR, [], true);
    const answers = resolve(normalised, q.name, q.type);
    const full = encode(query, RCODE.NOERROR, answers);
    return transport === 'udp' && full.length > UDP_LIMIT ? encode(query, RCODE.NOERROR, [], true) : full;
  };

  const tcp = net.createServer((socket) => {
    socket.setNoDelay(true);
    connections.add(socket);
    socket.on('close', () => connections.delete(socket));
    socket.on('error', () => socket.destroy());
    let buffered = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      while (buffered.length >= 2 && buffered.length >= 2 + buffered.readUInt16BE(0)) {
        const size = 2 + buffered.readUInt16BE(0);
        const query = decode(buffered.subarray(2, size));
        buffered = buffered.subarray(size);
        const answer = query && reply(query, 'tcp');
        if (answer) {
          const framed = Buffer.alloc(2 + answer.length);
          framed.writeUInt16BE(answer.length, 0);
          answer.copy(framed, 2);
          if (options.tcpChunkBytes) writeInChunks(socket, framed, options.tcpChunkBytes);
          else socket.write(framed);
        }
      }
    });
  });
  const makeUdp = () => {
    const socket = dgram.createSocket('udp4');
    socket.on('message', (message, from) => {
      const query = decode(message);
      const answer = query && reply(query, 'udp');
      if (answer) socket.send(answer, from.port, from.address);
    });
    return socket;
  };

  const { port, udp } = await listenOnSamePort(tcp, makeUdp);
  return {
    port,
    queries,
    close: async () => {
      for (const socket of connections) socket.destroy();
      await Promise.all([
        new Promise<void>((done) => tcp.close(() => done())),
        new Promise<void>((done) => udp.close(() => done())),
      ]);
    },
  };
}

function writeInChunks(socket: net.Socket, data: Buffer, size: number): void {
  // The first byte alone splits the 2-byte length prefix itself.
  const chunks = [data.subarray(0, 1)];
  for (let at = 1; at < data.length; at += size) chunks.push(data.subarray(at, at + size));
  const next = () => {
    const chunk = chunks.shift();
    if (chunk === undefined || socket.destroyed) return;
    socket.write(chunk);
    setTimeout(next, 2);
  };
  next();
}

function resolve(zone: Map<string, Behaviour>, name: string, type: string): Answer[] {
  const answers: Answer[] = [];
  let current = name;
  // Follow CNAMEs inside the zone, with a bound so a loop cannot hang the test.
  for (let hop = 0; hop < 8; hop++) {
    const behaviour = zone.get(norm(current));
    const records = Array.isArray(behaviour) ? behaviour : typeof behaviour === 'object' && 'truncate' in behaviour ? behaviour.truncate : [];
    const cname = records.find((r: ZoneRecord) => r.type === 'CNAME');
    if (cname && type !== 'CNAME') {
      answers.push(toAnswer(current, cname));
      current = String(cname.data);
      continue;
    }
    for (const record of records) if (record.type === type) answers.push(toAnswer(current, record));
    break;
  }
  return answers;
}

function toAnswer(name: string, record: ZoneRecord): Answer {
  const ttl = record.ttl ?? 60;
  if (record.type === 'TXT') {
    const parts = typeof record.data === 'string' ? [record.data] : [...record.data];
    return { name, type: 'TXT', ttl, class: 'IN', data: parts };
  }
  return { name, type: record.type as 'A' | 'AAAA' | 'CNAME', ttl, class: 'IN', data: String(record.data) };
}

function encode(query: Packet, rcode: number, answers: Answer[], truncated = false): Buffer {
  const rd = (query.flags ?? 0) & dnsPacket.RECURSION_DESIRED;
  const flags = rd | dnsPacket.RECURSION_AVAILABLE | dnsPacket.AUTHORITATIVE_ANSWER | (truncated ? dnsPacket.TRUNCATED_RESPONSE : 0) | rcode;
  return dnsPacket.encode({
    type: 'response',
    id: query.id ?? 0,
    flags,
    questions: (query.questions ?? []).map((q) => ({ name: q.name, type: q.type as RecordType, class: 'IN' })),
    answers,
  });
}

function decode(message: Buffer): DecodedPacket | undefined {
  try {
    return dnsPacket.decode(message);
  } catch {
    return undefined;
  }
}

function norm(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}

/** Binds TCP on an ephemeral port, then UDP on the same number; retries when UDP finds it taken. */
async function listenOnSamePort(tcp: net.Server, makeUdp: () => dgram.Socket): Promise<{ port: number; udp: dgram.Socket }> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const port = await new Promise<number>((done, fail) => {
      tcp.once('error', fail);
      tcp.listen(0, '127.0.0.1', () => {
        tcp.removeListener('error', fail);
        done((tcp.address() as net.AddressInfo).port);
      });
    });
    const udp = makeUdp();
    const bound = await new Promise<boolean>((done) => {
      const onError = () => done(false);
      udp.once('error', onError);
      udp.bind(port, '127.0.0.1', () => {
        udp.removeListener('error', onError);
        done(true);
      });
    });
    if (bound) return { port, udp };
    try {
      udp.close();
    } catch {
      // a failed bind may already have closed it
    }
    await new Promise<void>((done) => tcp.close(() => done()));
  }
  throw new Error('no port free for both UDP and TCP on 127.0.0.1 after 20 attempts');
}
