// Turning a plan into the concrete paths one environment must try: every other environment's targets,
// each declared or resolved address as its own path, plus this environment's own targets as controls.
import { lookup } from 'node:dns/promises';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { performance } from 'node:perf_hooks';
import { parseHostPort } from '../core/net.js';
import type { ProbeResult } from '../core/outcome.js';
import type { Plan, Target } from '../core/plan.js';
import { errorCode } from '../probes/errors.js';
import { queryDns } from '../probes/dns-query.js';
import { round } from '../probes/connect.js';

/** One path to attempt; `decided` is set when the attempt is settled without probing (the name did not resolve). */
export interface PlannedPath {
  readonly target: Target;
  /** A target in the probing environment itself: it must be reachable, or the run proves nothing. */
  readonly control: boolean;
  readonly host?: string;
  readonly address: string | null;
  readonly port: number | null;
  readonly resolveMs?: number;
  readonly decided?: ProbeResult;
}

/** How a host name resolved from here: addresses, or why not (`unresolved` = the DNS said no; `error` = could not ask). */
export type Resolution =
  | { readonly ok: true; readonly addresses: readonly string[]; readonly ms: number }
  | { readonly ok: false; readonly outcome: 'unresolved' | 'error'; readonly code: string; readonly rcode?: string; readonly ms: number };

export type ResolveHost = (host: string, signal: AbortSignal) => Promise<Resolution>;

/** Name servers from /etc/resolv.conf, as `address:53` strings. */
export function systemResolvers(path = '/etc/resolv.conf'): string[] {
  try {
    return readFileSync(path, 'utf8')
      .split('\n')
      .map((line) => /^\s*nameserver\s+(\S+)/.exec(line)?.[1])
      .filter((v): v is string => v !== undefined && isIP(v) !== 0);
  } catch {
    return [];
  }
}

/**
 * A resolver for one environment: the environment's declared resolvers (asked with dns-packet, so the
 * rcode is exact), else the operating system's (getaddrinfo, which also reads /etc/hosts).
 */
export function resolverFor(plan: Plan, from: string): ResolveHost {
  const declared = plan.environments[from]?.resolvers ?? [];
  if (declared.length === 0) return resolveWithSystem;
  return async (host, signal) => {
    const started = performance.now();
    let last: Resolution | undefined;
    for (const resolver of declared) {
      const { host: address, port } = parseHostPort(resolver, 53)!;
      const answers = await Promise.all(
        (['A', 'AAAA'] as const).map((type) => queryDns({ name: host, type, address, port, signal })),
      );
      const addresses = answers.flatMap((a) =>
        a.kind === 'answer' ? a.answers.filter((r) => r.type === 'A' || r.type === 'AAAA').map((r) => r.data) : [],
      );
      const ms = round(performance.now() - started);
      if (addresses.length > 0) return { ok: true, addresses: [...new Set(addresses)], ms };
      const answered = answers.find((a) => a.kind === 'answer');
      if (answered && answered.kind === 'answer') {
        // The resolver answered: the name does not resolve from here (NXDOMAIN, NODATA, REFUSED, SERVFAIL).
        return { ok: false, outcome: 'unresolved', code: answered.rcode === 'NOERROR' ? 'NODATA' : answered.rcode, rcode: answered.rcode, ms };
      }
      const failed = answers.find((a) => a.kind === 'failed');
      last = { ok: false, outcome: 'error', code: failed && failed.kind === 'failed' ? failed.code : 'UNKNOWN', ms };
    }
    return last!;
  };
}

const SYSTEM_UNRESOLVED = new Set(['ENOTFOUND', 'ENODATA', 'ENONAME', 'EAI_NONAME', 'EAI_NODATA']);

async function resolveWithSystem(host: string, signal: AbortSignal): Promise<Resolution> {
  const started = performance.now();
  let onAbort: (() => void) | undefined;
  try {
    // getaddrinfo cannot be cancelled; the signal only stops us waiting for it.
    const lookedUp = lookup(host, { all: true, verbatim: true });
    const aborted = new Promise<never>((_, reject) => {
      onAbort = () => reject(signal.reason);
      if (signal.aborted) onAbort();
      else signal.addEventListener('abort', onAbort, { once: true });
    });
    lookedUp.catch(() => undefined);
    const results = await Promise.race([lookedUp, aborted]);
    return { ok: true, addresses: [...new Set(results.map((r) => r.address))], ms: round(performance.now() - started) };
  } catch (err) {
    const code = errorCode(err);
    const ms = round(performance.now() - started);
    return SYSTEM_UNRESOLVED.has(code) ? { ok: false, outcome: 'unresolved', code, ms } : { ok: false, outcome: 'error', code, ms };
  } finally {
    if (onAbort) signal.removeEventListener('abort', onAbort);
  }
}

/** The host name and port a target names, or its resolver for `dns`. */
function endpoint(target: Target, plan: Plan, from: string): { host?: string; port: number } | undefined {
  switch (target.probe) {
    case 'dns': {
      const resolver = target.resolver ?? plan.environments[from]?.resolvers[0] ?? systemResolvers()[0];
      return resolver === undefined ? undefined : parseHostPort(resolver, 53);
    }
    case 'http': {
      const url = new URL(target.url);
      const host = url.hostname.replace(/^\[|\]$/g, '');
      return { host, port: url.port ? Number(url.port) : url.protocol === 'https:' ? 443 : 80 };
    }
    case 'tcp':
    case 'postgres':
    case 'redis':
      return { host: target.host, port: target.port };
  }
}

function settled(outcome: 'unresolved' | 'error', code: string, detail: string, host: string | undefined, ms: number, rcode?: string): ProbeResult {
  return {
    outcome,
    layer: 'dns',
    evidence: { ...(host ? { host } : {}), errno: code, detail: rcode ? `${detail} (${rcode})` : detail },
    timings: { resolveMs: ms, totalMs: ms },
  };
}

/** Expands the plan into the paths `from` must attempt, controls first. Resolution happens once per host. */
export async function planPaths(plan: Plan, from: string, resolve: ResolveHost, signal: AbortSignal): Promise<PlannedPath[]> {
  const ordered = [...plan.targets.filter((t) => t.env === from), ...plan.targets.filter((t) => t.env !== from)];
  const cache = new Map<string, Promise<Resolution>>();
  const resolveOnce = (host: string) => {
    let pending = cache.get(host);
    if (!pending) cache.set(host, (pending = resolve(host, signal)));
    return pending;
  };

  const perTarget = await Promise.all(
    ordered.map(async (target): Promise<PlannedPath[]> => {
      const control = target.env === from;
      const ep = endpoint(target, plan, from);
      if (ep === undefined) {
        return [{ target, control, address: null, port: null, decided: settled('error', 'NO_RESOLVER', 'no resolver configured for this environment and none in /etc/resolv.conf', undefined, 0) }];
      }
      const host = ep.host;
      if (target.probe === 'dns' || (host !== undefined && isIP(host) !== 0)) {
        const declared = target.probe === 'dns' ? [] : (target.addresses ?? []);
        return [...new Set([host!, ...declared])].map((address) => ({ target, control, address, port: ep.port }));
      }
      const declared = target.addresses ?? [];
      if (host === undefined) return declared.map((address) => ({ target, control, address, port: ep.port }));
      const resolution = await resolveOnce(host);
      const resolved = resolution.ok ? resolution.addresses : [];
      const paths: PlannedPath[] = [...new Set([...resolved, ...declared])].map((address) => ({
        target,
        control,
        host,
        address,
        port: ep.port,
        ...(resolved.includes(address) ? { resolveMs: resolution.ms } : {}),
      }));
      if (!resolution.ok) {
        // The name itself is a path too: record that it did not resolve, beside any declared addresses.
        paths.unshift({
          target,
          control,
          host,
          address: null,
          port: ep.port,
          decided: settled(resolution.outcome, resolution.code, `${host} did not resolve from ${from}`, host, resolution.ms, resolution.rcode),
        });
      }
      return paths;
    }),
  );
  return perTarget.flat();
}
