// What the lab's small company looks like: its environments, their /24s inside 198.18.0.0/15, which address
// and port each server has, and the plan that describes it all. Pure data: lab.ts builds it.

export const ENVS = ['prod', 'staging', 'dev'] as const;
export type Env = (typeof ENVS)[number];
/** A namespace with a network of its own behind the router. */
export type Site = Env | 'mgmt';
export type Role = Site | 'router';
export const SITES: readonly Site[] = [...ENVS, 'mgmt'];

const OCTET: Record<Site, number> = { prod: 10, staging: 20, dev: 30, mgmt: 40 };
/** Last octets inside each site's /24: .1 is the router, .2 the namespace itself (agents' source address). */
export const HOST = { router: 1, self: 2, db: 10, nats: 10, cache: 11, web: 12, dns: 53 } as const;
export const PORT = { postgres: 5432, redis: 6379, https: 443, http: 8080, dns: 53, nats: 4222 } as const;

/** The lab's address of `host` in `site`, e.g. address('prod', 'db') = 198.18.10.10. */
export function address(site: Site, host: keyof typeof HOST): string {
  return `198.18.${OCTET[site]}.${HOST[host]}`;
}

/** The /24 of a site. */
export function network(site: Site): string {
  return `198.18.${OCTET[site]}.0/24`;
}

/** Every address a site's namespace holds (all but the router's). */
export function siteAddresses(site: Site): string[] {
  return [...new Set((Object.keys(HOST) as (keyof typeof HOST)[]).filter((h) => h !== 'router').map((h) => address(site, h)))];
}

/** The names each resolver answers for: prod's zone names every prod server, staging's and dev's their web service. */
export function zone(env: Env): Record<string, string> {
  if (env !== 'prod') return { [`web.${env}.internal`]: address(env, 'web') };
  return {
    'db.prod.internal': address('prod', 'db'),
    'cache.prod.internal': address('prod', 'cache'),
    'api.prod.internal': address('prod', 'web'),
    'dns.prod.internal': address('prod', 'dns'),
  };
}

/**
 * The plan of the lab (before any `extra` keys): every server is a target, each environment's names resolve
 * only through its own resolver, and the policy denies everything across environments except NATS in mgmt.
 */
export function labPlan(): Record<string, unknown> {
  const env = (site: Site) => ({ networks: [network(site)], ...(site === 'mgmt' ? {} : { resolvers: [address(site, 'dns')] }) });
  return {
    version: 1,
    environments: Object.fromEntries(SITES.map((site) => [site, env(site)])),
    targets: [
      // Named and addressed: from elsewhere the name is `unresolved` (split DNS) and the address is the firewall's test.
      { name: 'prod-db', env: 'prod', probe: 'postgres', host: 'db.prod.internal', addresses: [address('prod', 'db')], port: PORT.postgres },
      { name: 'prod-cache', env: 'prod', probe: 'redis', host: 'cache.prod.internal', addresses: [address('prod', 'cache')], port: PORT.redis },
      { name: 'prod-api', env: 'prod', probe: 'http', url: 'https://api.prod.internal/healthz', addresses: [address('prod', 'web')], expect_status: [200] },
      // Asked of the prober's own resolver: from elsewhere, a prod name must not resolve at all.
      { name: 'prod-names', env: 'prod', probe: 'dns', query: 'db.prod.internal' },
      // prod's resolver itself, over TCP: a dns target naming a resolver elsewhere is `error` (inconclusive), not blocked, when dropped.
      { name: 'prod-dns', env: 'prod', probe: 'tcp', host: address('prod', 'dns'), port: PORT.dns },
      { name: 'staging-web', env: 'staging', probe: 'http', url: `http://web.staging.internal:${PORT.http}/`, addresses: [address('staging', 'web')], expect_status: [200] },
      { name: 'staging-names', env: 'staging', probe: 'dns', query: 'web.staging.internal' },
      { name: 'dev-web', env: 'dev', probe: 'http', url: `http://web.dev.internal:${PORT.http}/`, addresses: [address('dev', 'web')], expect_status: [200] },
      { name: 'dev-names', env: 'dev', probe: 'dns', query: 'web.dev.internal' },
      { name: 'mgmt-nats', env: 'mgmt', probe: 'tcp', host: address('mgmt', 'nats'), port: PORT.nats },
    ],
    policy: {
      default: 'deny',
      allow: [{ from: [...ENVS], to: { target: 'mgmt-nats' }, reason: 'agents report to the controller over NATS', ticket: 'LAB-1' }],
    },
    schedule: { interval: '3s', jitter: 0.1, timeout: '500ms', concurrency: 64, attempts: 2, stagger: '200ms' },
  };
}
