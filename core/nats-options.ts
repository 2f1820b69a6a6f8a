// Connection options shared by every NATS client of Bulkhead (agent, controller, fleet audit): the
// authenticator for a credentials file, and TLS verified against a CA file, for the address dialled.
import { isIP } from 'node:net';
import { checkServerIdentity, type PeerCertificate } from 'node:tls';
import { jwtAuthenticator, nkeyAuthenticator, usernamePasswordAuthenticator, type Authenticator, type NodeConnectionOptions } from '@nats-io/transport-node';
import type { NatsCredentials } from './nats-credentials.js';

/** The client authenticator for parsed credentials. */
export function authenticatorFor(credentials: NatsCredentials): Authenticator {
  const bytes = (text: string) => new TextEncoder().encode(text);
  switch (credentials.kind) {
    case 'user-password':
      return usernamePasswordAuthenticator(credentials.user, credentials.password);
    case 'nkey':
      return nkeyAuthenticator(bytes(credentials.seed));
    case 'creds':
      return jwtAuthenticator(credentials.jwt, bytes(credentials.seed));
  }
}

/**
 * TLS verified against `caFile`. For an IP address the client sends no server name and Node would check the
 * certificate against "localhost"; check it against the address actually dialled instead.
 */
export function tlsOptions(caFile: string, firstServer: string | undefined): NonNullable<NodeConnectionOptions['tls']> {
  const host = firstServer === undefined ? undefined : hostOf(firstServer);
  if (host === undefined || isIP(host) === 0) return { caFile };
  return { caFile, checkServerIdentity: (_name: string, cert: PeerCertificate) => checkServerIdentity(host, cert) } as NonNullable<NodeConnectionOptions['tls']>;
}

function hostOf(server: string): string | undefined {
  try {
    return new URL(server.includes('://') ? server : `nats://${server}`).hostname.replace(/^\[|\]$/g, '');
  } catch {
    return undefined;
  }
}

/** Authentication and TLS options for `servers` (comma-separated URLs), from a parsed credentials file and a CA file. */
export function securityOptions(servers: string, credentials: NatsCredentials | undefined, caFile: string | undefined): Partial<NodeConnectionOptions> {
  const first = servers.split(',')[0]?.trim();
  return {
    ...(credentials ? { authenticator: authenticatorFor(credentials) } : {}),
    ...(caFile !== undefined ? { tls: tlsOptions(caFile, first) } : {}),
  };
}

/**
 * Ping every 10 s and give up after 2 unanswered: a connection cut by a partition (no FIN, no RST) is noticed within
 * ~30 s and re-established as soon as the network heals. With the client's default (2 min) a dead connection lingers,
 * and what was queued on it waits for TCP's retransmission backoff (measured ~50 s after a 60 s cut).
 */
export const LIVENESS = { pingInterval: 10_000, maxPingOut: 2 } as const;
