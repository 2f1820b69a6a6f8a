// The one probe signature (SPEC §4). A probe attempts one target address once and never throws.
import type { ProbeResult } from '../core/outcome.js';
import type { ProbeKind, TargetOf } from '../core/plan.js';

/** One attempt to make: which target, which concrete address and port, and the timeout the signal enforces. */
export interface ProbeRequest<K extends ProbeKind = ProbeKind> {
  readonly target: TargetOf<K>;
  /** The IP address to connect to; for `dns`, the resolver's address. */
  readonly address: string;
  /** The port to connect to; for `dns`, the resolver's port. */
  readonly port: number;
  /** The host name the address came from, if any: sent as SNI and HTTP Host. */
  readonly host?: string;
  /** For `dns`: networks of other environments; answers inside them are flagged as leaks. */
  readonly leakNetworks?: readonly { env: string; cidr: string }[];
}

/**
 * A probe: attempts `req` once and resolves with its outcome. The signal aborts with a
 * `TimeoutError` reason at the per-attempt timeout, or another reason when the run is cancelled.
 */
export type ProbeFn<K extends ProbeKind = ProbeKind> = (req: ProbeRequest<K>, signal: AbortSignal) => Promise<ProbeResult>;
