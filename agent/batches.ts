// Turning one probe cycle into result messages: chunks bounded by count and by serialised size, each
// validated against the wire schema before it may be queued.
import type { Observation } from '../core/observation.js';
import { MAX_MESSAGE_BYTES, MAX_OBSERVATIONS_PER_MESSAGE, ResultBatch } from '../core/wire.js';
import type { Logger } from './agent.js';

/** Messages larger than this are split further; the margin leaves room for headers under max_payload. */
const BATCH_BYTES = MAX_MESSAGE_BYTES - 16 * 1024;

export interface BatchHeader {
  readonly env: string;
  readonly agent: string;
  readonly cycleId: string;
  readonly startedAt: string;
  readonly finishedAt: string;
  readonly planSha256: string;
  readonly controls: { total: number; failed: string[] };
  readonly requestId?: string;
}

/**
 * Splits one cycle into ResultBatch messages of at most MAX_OBSERVATIONS_PER_MESSAGE observations and
 * BATCH_BYTES serialised, each validated against the schema: a bug here must not reach the wire.
 */
export function buildBatches(header: BatchHeader, observations: readonly Observation[], log: Logger): { id: string; payload: string }[] {
  const make = (group: readonly Observation[], chunk: number, chunks: number): ResultBatch => ({
    v: 1,
    type: 'results',
    env: header.env,
    agent: header.agent,
    id: `${header.cycleId}.${chunk}`,
    cycle: {
      id: header.cycleId,
      startedAt: header.startedAt,
      finishedAt: header.finishedAt,
      ...(header.requestId !== undefined ? { requestId: header.requestId } : {}),
      chunk,
      chunks,
    },
    planSha256: header.planSha256,
    controls: header.controls,
    observations: group as Observation[],
  });
  // A message serialises as its envelope plus each observation and a comma: size the groups from that,
  // without building a near-1 MB string per attempt. The envelope is measured with room for large chunk numbers.
  const envelopeBytes = Buffer.byteLength(JSON.stringify(make([], 99_999, 99_999)));
  const budget = BATCH_BYTES - envelopeBytes;
  const groups: Observation[][] = [];
  let group: Observation[] = [];
  let bytes = 0;
  for (const observation of observations) {
    const size = Buffer.byteLength(JSON.stringify(observation)) + 1;
    if (size > budget) {
      log('error', 'bug: one observation exceeds the message size cap; not sent', { cycle: header.cycleId, target: observation.target, bytes: size });
      continue;
    }
    if (group.length >= MAX_OBSERVATIONS_PER_MESSAGE || bytes + size > budget) {
      groups.push(group);
      group = [];
      bytes = 0;
    }
    group.push(observation);
    bytes += size;
  }
  // An empty cycle still sends one (empty) batch: the controller sees that the agent ran.
  if (group.length > 0 || groups.length === 0) groups.push(group);
  const out: { id: string; payload: string }[] = [];
  groups.forEach((members, chunk) => {
    const checked = ResultBatch.safeParse(make(members, chunk, groups.length));
    if (!checked.success) {
      const issue = checked.error.issues[0];
      log('error', 'bug: invalid result batch not sent', { cycle: header.cycleId, chunk, issue: issue ? `${issue.path.join('.')}: ${issue.message}` : 'invalid' });
      return;
    }
    out.push({ id: checked.data.id, payload: JSON.stringify(checked.data) });
  });
  return out;
}
