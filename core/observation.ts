// One probe attempt from one environment to one target address: the unit agents report and audits record.
import { z } from 'zod';
import { Evidence, Layer, Outcome, Timings } from './outcome.js';

export const PROBE_KIND_NAMES = ['dns', 'tcp', 'http', 'postgres', 'redis'] as const;

export const Observation = z.strictObject({
  /** Target name from the plan. */
  target: z.string().max(63),
  /** Environment that owns the target. */
  env: z.string().max(63),
  /** Environment the attempt was made from. */
  from: z.string().max(63),
  probe: z.enum(PROBE_KIND_NAMES),
  /** The address tried (for `dns`, the resolver); null when the name never resolved to one. */
  address: z.string().max(64).nullable(),
  port: z.number().int().min(1).max(65535).nullable(),
  outcome: Outcome,
  layer: Layer,
  evidence: Evidence,
  timings: Timings,
  /** How many attempts were made; only non-open attempts are retried. */
  attempts: z.number().int().min(0).max(10),
  /** ISO-8601 time the first attempt started. */
  at: z.iso.datetime(),
});
export type Observation = z.infer<typeof Observation>;

/** A stable key for a path: source environment, target, address. */
export function pathKey(o: Pick<Observation, 'from' | 'target' | 'address' | 'port'>): string {
  return `${o.from}→${o.target}@${o.address ?? '-'}:${o.port ?? '-'}`;
}
