// The plan of SPEC §5: one strict zod schema, parsed once at the edge, frozen, then trusted.
// This file holds environments, targets, policy and schedule; field primitives live in plan-fields.ts and the
// `alerting` section in plan-alerting.ts. Importers keep using this module: it re-exports what they need.
import { isIP } from 'node:net';
import { z } from 'zod';
import { parseHostPort } from './net.js';
import { Alerting, alertingProblems } from './plan-alerting.js';
import { asList, asRecord, Cidr, Duration, Host, HttpUrl, IpAddress, ms, Name, NAME_RE, Port, type Problem } from './plan-fields.js';

export { FINDING_KINDS, RECEIVER_TYPES, SEVERITIES } from './plan-alerting.js';
export type { Alerting, FindingKind, Receiver, ReceiverType, SecretRef, Severity } from './plan-alerting.js';
export { formatProblem, isHttpUrl, parseDurationMs, type Problem } from './plan-fields.js';

/** `10.0.0.2`, `10.0.0.2:5353`, `[fd00::2]:53`: an IP resolver with an optional port. */
const Resolver = z
  .string({ error: 'expected a resolver address such as 10.0.0.2 or 10.0.0.2:53' })
  .refine((v) => {
    const hp = parseHostPort(v, 53);
    return hp !== undefined && isIP(hp.host) !== 0;
  }, { error: 'expected a resolver address such as 10.0.0.2 or 10.0.0.2:53' });

const DNS_TYPES = ['A', 'AAAA', 'CNAME', 'TXT', 'MX', 'NS', 'SRV', 'PTR', 'SOA', 'CAA'] as const;

const Environment = z.strictObject({
  networks: z.array(Cidr).default([]),
  resolvers: z.array(Resolver).default([]),
  description: z.string().optional(),
});

const targetBase = {
  name: Name,
  env: Name,
  description: z.string().optional(),
};
/** Addresses declared beside a name: each one is probed as its own path (split-horizon DNS is not isolation). */
const addressed = {
  host: Host.optional(),
  addresses: z.array(IpAddress).min(1, { error: 'expected at least one address' }).optional(),
};

const DnsTarget = z.strictObject({
  ...targetBase,
  probe: z.literal('dns'),
  query: Host,
  type: z.enum(DNS_TYPES, { error: `expected one of ${DNS_TYPES.join(', ')}` }).default('A'),
  resolver: Resolver.optional(),
  leak_networks: z.array(Cidr).optional(),
});

const TcpTarget = z.strictObject({
  ...targetBase,
  ...addressed,
  probe: z.literal('tcp'),
  port: Port,
  tls: z.boolean().default(false),
  servername: Host.optional(),
});

const StatusCode = z.number({ error: 'expected an HTTP status 100–599' }).int().min(100).max(599);
const HttpTarget = z.strictObject({
  ...targetBase,
  probe: z.literal('http'),
  url: HttpUrl,
  method: z.enum(['GET', 'HEAD']).default('GET'),
  addresses: addressed.addresses,
  /** For positive controls: statuses that count as working. Cross-environment, any status is open. */
  expect_status: z.array(StatusCode).min(1).optional(),
});

const PostgresTarget = z.strictObject({
  ...targetBase,
  ...addressed,
  probe: z.literal('postgres'),
  port: Port.default(5432),
  mode: z.enum(['ssl', 'startup']).default('ssl'),
});

const RedisTarget = z.strictObject({
  ...targetBase,
  ...addressed,
  probe: z.literal('redis'),
  port: Port.default(6379),
  tls: z.boolean().default(false),
});

const Target = z.discriminatedUnion('probe', [DnsTarget, TcpTarget, HttpTarget, PostgresTarget, RedisTarget], {
  error: 'expected one of dns, tcp, http, postgres, redis',
});

const ExpiryDate = z
  .string({ error: 'expected a date such as 2027-03-31' })
  .refine((v) => /^\d{4}-\d{2}-\d{2}(T.*)?$/.test(v) && !Number.isNaN(Date.parse(v)), {
    error: 'expected a date such as 2027-03-31',
  });

const AllowRule = z.strictObject({
  from: z.union([Name, z.array(Name).min(1)]).transform((v) => (typeof v === 'string' ? [v] : v)),
  to: z.strictObject({ env: Name.optional(), target: Name.optional() }),
  reason: z.string({ error: 'an allow rule needs a reason' }).refine((v) => v.trim() !== '', { error: 'an allow rule needs a reason' }),
  ticket: z.string().optional(),
  expires: ExpiryDate.optional(),
});

const Policy = z.strictObject({
  default: z.literal('deny', { error: 'expected "deny": across environments everything is denied unless allowed' }).default('deny'),
  allow: z.array(AllowRule).default([]),
});

const Schedule = z.strictObject({
  interval: Duration.default(60_000),
  jitter: z.number({ error: 'expected a fraction 0–1' }).min(0).max(1).default(0.1),
  timeout: Duration.default(3_000),
  concurrency: z.number({ error: 'expected an integer 1–4096' }).int().min(1).max(4096).default(64),
  attempts: z.number({ error: 'expected an integer 1–10' }).int().min(1).max(10).default(2),
  stagger: Duration.default(0),
});

const PlanShape = z.strictObject({
  version: z.literal(1, { error: 'expected 1' }),
  environments: z.record(Name, Environment).refine((r) => Object.keys(r).length > 0, {
    error: 'expected at least one environment',
  }),
  targets: z.array(Target).default([]),
  policy: Policy.prefault({}),
  schedule: Schedule.prefault({}),
  alerting: Alerting.prefault({}),
});

/** The plan schema. Cross-field rules live in `crossFieldProblems` so they are reported even when a field is bad. */
export const PlanSchema = PlanShape.transform(({ schedule, ...rest }) => ({
  ...rest,
  schedule: {
    intervalMs: schedule.interval,
    jitter: schedule.jitter,
    timeoutMs: schedule.timeout,
    concurrency: schedule.concurrency,
    attempts: schedule.attempts,
    staggerMs: schedule.stagger,
  },
}));

export type Plan = z.output<typeof PlanSchema>;
export type Target = Plan['targets'][number];
export type ProbeKind = Target['probe'];
export type AllowRule = Plan['policy']['allow'][number];
export type Schedule = Plan['schedule'];
export type TargetOf<K extends ProbeKind> = Extract<Target, { probe: K }>;
export const PROBE_KINDS = Target.options.map((o) => o.shape.probe.value) as readonly ProbeKind[];

/**
 * Rules that span fields (references between environments, targets, allow rules and receivers; timeout < interval;
 * repeat_interval ≥ group_interval; the watchdog's url or receiver).
 * They run on the raw document so that all errors are listed at once, even when some fields are malformed.
 */
export function crossFieldProblems(raw: unknown): Problem[] {
  const problems: Problem[] = [];
  const doc = asRecord(raw);
  if (!doc) return problems;
  const envs = Object.keys(asRecord(doc.environments) ?? {});
  const envList = envs.join(', ');
  const checkEnv = (value: unknown, path: (string | number)[]) => {
    if (typeof value === 'string' && NAME_RE.test(value) && !envs.includes(value)) {
      problems.push({ path, message: `unknown environment "${value}" (declared: ${envList})` });
    }
  };
  const targetEnvs = new Map<string, unknown>();
  const firstByName = new Map<string, number>();

  asList(doc.targets).forEach((item, i) => {
    const target = asRecord(item);
    if (!target) return;
    checkEnv(target.env, ['targets', i, 'env']);
    if (typeof target.name === 'string') {
      const first = firstByName.get(target.name);
      if (first !== undefined) {
        problems.push({ path: ['targets', i, 'name'], message: `duplicate target name "${target.name}" (first at targets[${first}])` });
      } else {
        firstByName.set(target.name, i);
        targetEnvs.set(target.name, target.env);
      }
    }
    const needsHost = target.probe === 'tcp' || target.probe === 'postgres' || target.probe === 'redis';
    if (needsHost && target.host === undefined && target.addresses === undefined) {
      problems.push({ path: ['targets', i], message: `a ${String(target.probe)} target needs host or addresses` });
    }
  });

  asList(asRecord(doc.policy)?.allow).forEach((item, i) => {
    const rule = asRecord(item);
    if (!rule) return;
    const from = typeof rule.from === 'string' ? [rule.from] : asList(rule.from);
    from.forEach((env, j) => checkEnv(env, typeof rule.from === 'string' ? ['policy', 'allow', i, 'from'] : ['policy', 'allow', i, 'from', j]));
    const to = asRecord(rule.to);
    if (!to) return;
    if (to.env === undefined && to.target === undefined) {
      problems.push({ path: ['policy', 'allow', i, 'to'], message: 'expected env or target' });
    }
    checkEnv(to.env, ['policy', 'allow', i, 'to', 'env']);
    if (typeof to.target === 'string') {
      if (!targetEnvs.has(to.target)) {
        problems.push({ path: ['policy', 'allow', i, 'to', 'target'], message: `unknown target "${to.target}"` });
      } else if (typeof to.env === 'string' && targetEnvs.get(to.target) !== to.env) {
        problems.push({
          path: ['policy', 'allow', i, 'to', 'target'],
          message: `target "${to.target}" belongs to environment "${String(targetEnvs.get(to.target))}", not "${to.env}"`,
        });
      }
    }
  });

  const alerting = asRecord(doc.alerting);
  if (alerting) problems.push(...alertingProblems(alerting));

  const schedule = asRecord(doc.schedule) ?? {};
  const intervalMs = ms(schedule.interval, 60_000);
  const timeoutMs = ms(schedule.timeout, 3_000);
  const staggerMs = ms(schedule.stagger, 0);
  if (intervalMs !== undefined && timeoutMs !== undefined && timeoutMs >= intervalMs) {
    problems.push({ path: ['schedule', 'timeout'], message: `must be shorter than schedule.interval (${timeoutMs} ms ≥ ${intervalMs} ms)` });
  }
  if (intervalMs !== undefined && staggerMs !== undefined && staggerMs > intervalMs) {
    problems.push({ path: ['schedule', 'stagger'], message: `must not exceed schedule.interval (${staggerMs} ms > ${intervalMs} ms)` });
  }
  return problems;
}
