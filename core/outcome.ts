// What one probe attempt found: the outcome taxonomy of SPEC §3 and the evidence that backs it.
// Schemas are the single source of truth; the types below are inferred from them.
import { z } from 'zod';

export const OUTCOMES = ['open', 'refused', 'filtered', 'unreachable', 'unresolved', 'error'] as const;
export const Outcome = z.enum(OUTCOMES);
export type Outcome = z.infer<typeof Outcome>;

/** The deepest layer an attempt reached: the name lookup, the TCP handshake, TLS, or the application. */
export const Layer = z.enum(['dns', 'tcp', 'tls', 'app']);
export type Layer = z.infer<typeof Layer>;

/** Per-phase durations of one attempt, in milliseconds, measured from the start of the attempt. */
export const Timings = z.strictObject({
  resolveMs: z.number().nonnegative().optional(),
  connectMs: z.number().nonnegative().optional(),
  tlsMs: z.number().nonnegative().optional(),
  firstByteMs: z.number().nonnegative().optional(),
  totalMs: z.number().nonnegative(),
});
export type Timings = z.infer<typeof Timings>;

const short = z.string().max(2048);

export const TlsEvidence = z.strictObject({
  protocol: short.optional(),
  subject: short.optional(),
  issuer: short.optional(),
  subjectAltName: short.optional(),
  fingerprint256: short.optional(),
  validFrom: short.optional(),
  validTo: short.optional(),
  /** Whether the chain verified against the system CAs; probes record, they do not require. */
  authorized: z.boolean().optional(),
  authorizationError: short.optional(),
});
export type TlsEvidence = z.infer<typeof TlsEvidence>;

export const DnsAnswer = z.strictObject({
  name: short,
  type: short,
  ttl: z.number().int().nonnegative().optional(),
  data: short,
});
export type DnsAnswer = z.infer<typeof DnsAnswer>;

export const Evidence = z.strictObject({
  /** The name an address was resolved from, when the target named a host. */
  host: short.optional(),
  localAddress: short.optional(),
  localPort: z.number().int().optional(),
  remoteAddress: short.optional(),
  remotePort: z.number().int().optional(),
  /** The system or library error code that decided a non-open outcome (ECONNREFUSED, UND_ERR_…). */
  errno: short.optional(),
  /** One human-readable sentence about what happened. */
  detail: short.optional(),
  /** Set when TCP connected but the peer did not speak the probe's protocol: the path is still open. */
  protocol: z.enum(['mismatch']).optional(),
  http: z
    .strictObject({
      status: z.number().int(),
      server: short.optional(),
      location: short.optional(),
      contentType: short.optional(),
    })
    .optional(),
  tls: TlsEvidence.optional(),
  postgres: z
    .strictObject({
      /** The one-byte answer to SSLRequest: S (TLS available) or N (no TLS). */
      sslResponse: z.enum(['S', 'N']).optional(),
      /** Authentication method the server asked for in startup mode. */
      auth: short.optional(),
      sqlstate: short.optional(),
      severity: short.optional(),
      message: short.optional(),
    })
    .optional(),
  redis: z.strictObject({ reply: short }).optional(),
  dns: z
    .strictObject({
      resolver: short,
      query: short,
      qtype: short,
      rcode: short.optional(),
      transport: z.enum(['udp', 'tcp']),
      truncated: z.boolean().optional(),
      answers: z.array(DnsAnswer).max(64),
      /** Answers that fall inside another environment's networks. */
      leaks: z.array(z.strictObject({ address: short, env: short, network: short })).max(64).optional(),
    })
    .optional(),
});
export type Evidence = z.infer<typeof Evidence>;

/** The result of one attempt, as every probe returns it. Probes never throw; failure is an outcome. */
export const ProbeResult = z.strictObject({
  outcome: Outcome,
  layer: Layer,
  evidence: Evidence,
  timings: Timings,
});
export type ProbeResult = z.infer<typeof ProbeResult>;

/** How a path stands given one outcome. */
export type PathState = 'open' | 'blocked' | 'inconclusive';

/** Maps an outcome to whether the path is open, blocked, or unknown (SPEC §3, last column). */
export function pathState(outcome: Outcome): PathState {
  switch (outcome) {
    case 'open':
      return 'open';
    case 'refused':
    case 'filtered':
    case 'unreachable':
    case 'unresolved':
      return 'blocked';
    case 'error':
      return 'inconclusive';
    default:
      return assertNever(outcome);
  }
}

/** Compile-time exhaustiveness check for switches over unions. */
export function assertNever(value: never): never {
  throw new Error(`unexpected value: ${JSON.stringify(value)}`);
}
