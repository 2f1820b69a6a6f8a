// The dns probe (SPEC §4): ask one resolver one question. Records coming back mean the name resolves from
// here (open); a resolver saying no is `unresolved`. A resolver we could not ask at all proves nothing (`error`)
// when it is our own instrument; when it sits in another environment's network, reaching it is the path under
// test, so not reaching it is a blocked outcome like any connect (filtered, refused, unreachable).
import { performance } from 'node:perf_hooks';
import { NetworkIndex } from '../core/net.js';
import type { DnsAnswer, Evidence, Outcome } from '../core/outcome.js';
import { round } from './connect.js';
import { queryDns, type DnsQueryResult } from './dns-query.js';
import { outcomeForConnectError } from './errors.js';
import type { ProbeFn, ProbeRequest } from './types.js';

const MAX_ANSWERS = 64;

// The resolver answered and said no: the name is blocked at DNS from here.
const UNRESOLVED_RCODES = new Set(['NXDOMAIN', 'NOERROR', 'REFUSED', 'SERVFAIL', 'NOTIMP']);

type Leak = NonNullable<NonNullable<Evidence['dns']>['leaks']>[number];

/** Queries req.target.query (of req.target.type) at the resolver req.address:req.port and classifies the reply. */
export const probeDns: ProbeFn<'dns'> = async (req, signal) => {
  const startedAt = performance.now();
  const { query, type } = req.target;
  const result = await queryDns({ name: query, type, address: req.address, port: req.port, signal, startedAt });
  const totalMs = round(performance.now() - startedAt);
  const resolver = req.address.includes(':') ? `[${req.address}]:${req.port}` : `${req.address}:${req.port}`;
  const evidence: Evidence = {
    remoteAddress: req.address,
    remotePort: req.port,
    ...(result.localAddress !== undefined ? { localAddress: result.localAddress } : {}),
    ...(result.localPort !== undefined ? { localPort: result.localPort } : {}),
  };

  if (result.kind === 'failed') {
    const elsewhere = homeOf(req.address, req.leakNetworks);
    const blocked = elsewhere !== undefined ? outcomeForConnectError(result.code) : 'error';
    const where = elsewhere !== undefined ? `; the resolver is in ${elsewhere.env}'s network ${elsewhere.cidr}, so the path to it is ${blocked === 'error' ? 'unknown' : 'blocked'}` : '';
    return {
      outcome: blocked,
      layer: 'dns',
      evidence: {
        ...evidence,
        errno: result.code,
        detail: failureDetail(result, resolver) + where,
        dns: { resolver, query, qtype: type, transport: result.transport, answers: [] },
      },
      timings: { totalMs },
    };
  }

  const answers = result.answers.slice(0, MAX_ANSWERS);
  const leaks = findLeaks(result.answers, req.leakNetworks);
  const outcome = classify(result.rcode, result.answers.length);
  return {
    outcome,
    layer: 'dns',
    evidence: {
      ...evidence,
      ...(outcome === 'error' ? { errno: result.rcode } : {}),
      detail: answerDetail(result, outcome, resolver),
      dns: {
        resolver,
        query,
        qtype: type,
        rcode: result.rcode,
        transport: result.transport,
        truncated: result.truncated,
        answers,
        ...(leaks.length > 0 ? { leaks } : {}),
      },
    },
    timings: { firstByteMs: result.firstByteMs, totalMs },
  };
};

function classify(rcode: string, answerCount: number): Outcome {
  // Any record is information the resolver gave out (a CNAME alone included): one success is a violation.
  if (answerCount > 0) return 'open';
  if (UNRESOLVED_RCODES.has(rcode)) return 'unresolved';
  // FORMERR and stranger codes say the resolver could not take our question, not that the name is blocked.
  return 'error';
}

/** The other environment whose network holds `address`, if any. */
function homeOf(address: string, networks: ProbeRequest['leakNetworks']): { env: string; cidr: string } | undefined {
  if (!networks || networks.length === 0) return undefined;
  const index = new NetworkIndex();
  for (const network of networks) index.add(network.env, network.cidr);
  const hit = index.find(address);
  return hit ? { env: hit.name, cidr: hit.cidr } : undefined;
}

function findLeaks(answers: readonly DnsAnswer[], networks: ProbeRequest['leakNetworks']): Leak[] {
  if (!networks || networks.length === 0) return [];
  const index = new NetworkIndex();
  for (const network of networks) index.add(network.env, network.cidr);
  const leaks: Leak[] = [];
  for (const answer of answers) {
    if (answer.type !== 'A' && answer.type !== 'AAAA') continue;
    const hit = index.find(answer.data);
    if (hit) leaks.push({ address: answer.data, env: hit.name, network: hit.cidr });
    if (leaks.length === MAX_ANSWERS) break;
  }
  return leaks;
}

function answerDetail(result: Extract<DnsQueryResult, { kind: 'answer' }>, outcome: Outcome, resolver: string): string {
  const via = result.truncated ? (result.transport === 'tcp' ? ' (truncated over UDP, repeated over TCP)' : ' (truncated over UDP; TCP failed)') : '';
  const count = result.answers.length;
  if (outcome === 'open') {
    const kept = count > MAX_ANSWERS ? `, first ${MAX_ANSWERS} recorded` : '';
    return `resolver ${resolver} answered ${result.rcode} with ${count} record${count === 1 ? '' : 's'}${kept}${via}`;
  }
  const why = result.rcode === 'NOERROR' ? 'NOERROR with no records (NODATA)' : result.rcode;
  return `resolver ${resolver} answered ${why}${via}`;
}

function failureDetail(result: Extract<DnsQueryResult, { kind: 'failed' }>, resolver: string): string {
  const over = result.transport.toUpperCase();
  switch (result.code) {
    case 'TimeoutError':
      return `resolver ${resolver} did not answer over ${over} before the timeout`;
    case 'ABORTED':
      return 'attempt cancelled before it could finish';
    case 'BAD_REPLY':
      return `resolver ${resolver} sent an unusable reply over ${over}: ${result.detail ?? 'malformed'}`;
    default:
      return result.detail ?? `could not query resolver ${resolver} over ${over} (${result.code})`;
  }
}
