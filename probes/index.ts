// The probe registry: the list of kinds exists once, in the plan schema, and this map must cover it.
// Probes load lazily so an agent only pays memory for the kinds its plan uses.
import type { ProbeKind } from '../core/plan.js';
import type { ProbeFn } from './types.js';

type Registry = { readonly [K in ProbeKind]: () => Promise<ProbeFn<K>> };

/** Loads the probe function for each kind on first use. */
export const PROBES = {
  dns: () => import('./dns.js').then((m) => m.probeDns),
  tcp: () => import('./tcp.js').then((m) => m.probeTcp),
  http: () => import('./http.js').then((m) => m.probeHttp),
  postgres: () => import('./postgres.js').then((m) => m.probePostgres),
  redis: () => import('./redis.js').then((m) => m.probeRedis),
} satisfies Registry;

export type { ProbeFn, ProbeRequest } from './types.js';
