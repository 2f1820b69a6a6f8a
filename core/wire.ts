// The wire protocol between agents and the controller (SPEC §6): subjects and versioned, size-capped
// message schemas. Every message is parsed here; anything invalid is dropped and counted, never thrown.
import { z } from 'zod';
import { Observation } from './observation.js';

/** NATS's default max_payload; messages above it are refused by the server anyway. */
export const MAX_MESSAGE_BYTES = 1024 * 1024;
/** Observations per result message at most; the agent also splits by serialised size (DNS evidence can be large). */
export const MAX_OBSERVATIONS_PER_MESSAGE = 400;

const Name = z.string().regex(/^[a-z0-9][a-z0-9_-]{0,62}$/);

export const subjects = {
  results: (env: string, agent: string) => `bulkhead.results.${env}.${agent}`,
  heartbeat: (env: string, agent: string) => `bulkhead.heartbeat.${env}.${agent}`,
  run: (env: string) => `bulkhead.run.${env}`,
  allResults: 'bulkhead.results.>',
  allHeartbeats: 'bulkhead.heartbeat.>',
} as const;

/** Splits `bulkhead.<kind>.<env>.<agent>`; undefined when the subject is not of that shape. */
export function parseSubject(subject: string): { kind: string; env: string; agent: string } | undefined {
  const parts = subject.split('.');
  if (parts.length !== 4 || parts[0] !== 'bulkhead') return undefined;
  return { kind: parts[1]!, env: parts[2]!, agent: parts[3]! };
}

const Controls = z.strictObject({
  total: z.number().int().nonnegative(),
  /** Target names of controls that did not pass this cycle. */
  failed: z.array(Name).max(1000),
});

/** One probe cycle's observations, or a chunk of them (large cycles are split across messages). */
export const ResultBatch = z.strictObject({
  v: z.literal(1),
  type: z.literal('results'),
  env: Name,
  agent: Name,
  /** Unique per message and stable across re-sends: the JetStream message id (dedup). */
  id: z.string().min(1).max(200),
  cycle: z.strictObject({
    id: z.string().min(1).max(120),
    startedAt: z.iso.datetime(),
    finishedAt: z.iso.datetime(),
    /** The run request that triggered this cycle, if any (fleet audits). */
    requestId: z.string().max(120).optional(),
    chunk: z.number().int().nonnegative(),
    chunks: z.number().int().positive(),
  }),
  planSha256: z.string().regex(/^[0-9a-f]{64}$/),
  controls: Controls,
  observations: z.array(Observation).max(MAX_OBSERVATIONS_PER_MESSAGE),
});
export type ResultBatch = z.infer<typeof ResultBatch>;

export const Heartbeat = z.strictObject({
  v: z.literal(1),
  type: z.literal('heartbeat'),
  env: Name,
  agent: Name,
  version: z.string().max(40),
  planSha256: z.string().regex(/^[0-9a-f]{64}$/),
  at: z.iso.datetime(),
  intervalMs: z.number().int().positive(),
  /** Control status of the last completed cycle; null before the first cycle. */
  controls: Controls.nullable(),
  lastCycleAt: z.iso.datetime().nullable(),
  outbox: z.strictObject({ pending: z.number().int().nonnegative(), dropped: z.number().int().nonnegative() }),
});
export type Heartbeat = z.infer<typeof Heartbeat>;

export const RunRequest = z.strictObject({
  v: z.literal(1),
  type: z.literal('run'),
  requestId: z.string().min(1).max(120),
});
export type RunRequest = z.infer<typeof RunRequest>;

export const RunAccepted = z.strictObject({
  v: z.literal(1),
  type: z.literal('run-accepted'),
  env: Name,
  agent: Name,
  requestId: z.string().min(1).max(120),
  cycleId: z.string().min(1).max(120),
  planSha256: z.string().regex(/^[0-9a-f]{64}$/),
});
export type RunAccepted = z.infer<typeof RunAccepted>;

export type DropReason = 'oversized' | 'not-json' | 'schema' | 'subject' | 'impersonation';

export type Parsed<T> = { readonly ok: true; readonly message: T } | { readonly ok: false; readonly reason: DropReason; readonly detail: string };

/**
 * Parses one message: size cap, JSON, schema, and for subjects of the form bulkhead.<kind>.<env>.<agent>
 * that the subject's env and agent are the payload's (a mismatch is `impersonation`). Messages without
 * env/agent fields (run requests, whose environment is their subject) skip that last check.
 */
export function parseMessage<S extends z.ZodType>(schema: S, subject: string, data: Uint8Array): Parsed<z.infer<S>> {
  if (data.byteLength > MAX_MESSAGE_BYTES) return { ok: false, reason: 'oversized', detail: `${data.byteLength} bytes > ${MAX_MESSAGE_BYTES}` };
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('utf8'));
  } catch (err) {
    return { ok: false, reason: 'not-json', detail: (err as Error).message.slice(0, 200) };
  }
  const result = schema.safeParse(raw);
  if (!result.success) {
    const first = result.error.issues[0];
    return { ok: false, reason: 'schema', detail: first ? `${first.path.join('.') || '(root)'}: ${first.message}`.slice(0, 300) : 'invalid' };
  }
  const message = result.data as z.infer<S> & { env?: string; agent?: string };
  const parts = parseSubject(subject);
  if (parts && (message.env !== undefined || message.agent !== undefined)) {
    if (message.env !== parts.env || message.agent !== parts.agent) {
      return {
        ok: false,
        reason: 'impersonation',
        detail: `subject says ${parts.env}/${parts.agent}, payload says ${String(message.env)}/${String(message.agent)}`,
      };
    }
  } else if (!parts && subject.startsWith('bulkhead.results.')) {
    return { ok: false, reason: 'subject', detail: `unexpected subject ${subject}` };
  }
  return { ok: true, message };
}
