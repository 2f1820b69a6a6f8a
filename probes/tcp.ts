// The tcp probe (SPEC §4): one fresh connection to address:port, optionally completing a TLS handshake.
// A completed handshake is the whole question; nothing is written to the peer.
import { performance } from 'node:perf_hooks';
import type { ProbeFn } from './types.js';
import { openConnection, round } from './connect.js';

/** Connects once to req.address:req.port (TLS when the target asks) and reports whether the path is open. */
export const probeTcp: ProbeFn<'tcp'> = async (req, signal) => {
  const startedAt = performance.now();
  const { target } = req;
  const servername = target.servername ?? req.host;
  const connection = await openConnection({
    address: req.address,
    port: req.port,
    tls: target.tls ? { servername } : undefined,
    signal,
    startedAt,
  });
  const named = req.host !== undefined ? { host: req.host } : {};
  if (!connection.ok) return { ...connection.result, evidence: { ...connection.result.evidence, ...named } };

  // Connected is all we wanted to know: do not leave the flow open for anything to ride on.
  connection.socket.destroy();
  return {
    outcome: 'open',
    layer: target.tls ? 'tls' : 'tcp',
    evidence: { ...connection.evidence, ...named },
    timings: {
      connectMs: connection.connectMs,
      ...(connection.tlsMs !== undefined ? { tlsMs: connection.tlsMs } : {}),
      totalMs: round(performance.now() - startedAt),
    },
  };
};
