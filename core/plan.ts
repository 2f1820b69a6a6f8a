// The plan of SPEC §5: one strict zod schema, parsed once at the edge, frozen, then trusted.
import { isIP } from 'node:net';
import { z } from 'zod';
import { isCidr, parseHostPort } from './net.js';

const NAME_RE = /^[a-z0-9][a-z0-9_-]{0,62}$/;
const HOSTNAME_RE = /^(?=.{1,253}\.?$)([a-zA-Z0-9_]([a-zA-Z0-9_-]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9_]([a-zA-Z0-9_-]{0,61}[a-zA-Z0-9])?)*\.?$/;
const DURATION_RE = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/;
const UNIT_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as const;

/** Parses `500ms`, `3s`, `2m`, `1h` into milliseconds; undefined when malformed. */
export function parseDurationMs(text: string): number | undefined {
  const match = DURATION_RE.exec(text);
  if (!match) return undefined;
  return Math.round(Number(match[1]) * UNIT_MS[match[2] as keyof typeof UNIT_MS]);
}

const Name = z
  .string({ error: 'expected a name (lowercase letters, digits, - and _)' })
  .regex(NAME_RE, { error: 'expected a name (lowercase letters, digits, - and _, at most 63)' });

const Host = z
  .string({ error: 'expected a host name or IP address' })
  .refine((v) => isIP(v) !== 0 || HOSTNAME_RE.test(v), { error: 'expected a host name or IP address' });

const IpAddress = z
  .string({ error: 'expected an IP address' })
  .refine((v) => isIP(v) !== 0, { error: 'expected an IP address' });

const Cidr = z
  .string({ error: 'expected a network in CIDR notation such as 10.10.0.0/16' })
  .refine(isCidr, { error: 'expected a network in CIDR notation such as 10.10.0.0/16' });

const Port = z
  .number({ error: 'expected an integer 1–65535' })
  .int({ error: 'expected an integer 1–65535' })
  .min(1, { error: 'expected an integer 1–65535' })
  .max(65535, { error: 'expected an integer 1–65535' });

/** `10.0.0.2`, `10.0.0.2:5353`, `[fd00::2]:53`: an IP resolver with an optional port. */
const Resolver = z
  .string({ error: 'expected a resolver address such as 10.0.0.2 or 10.0.0.2:53' })
  .refine((v) => {
    const hp = parseHostPort(v, 53);
    return hp !== undefined && isIP(hp.host) !== 0;
  }, { error: 'expected a resolver address such as 10.0.0.2 or 10.0.0.2:53' });

const Duration = z
  .string({ error: 'expected a duration such as 500ms, 3s, 2m or 1h' })
  .refine((v) => parseDurationMs(v) !== undefined, { error: 'expected a duration such as 500ms, 3s, 2m or 1h' })
  .transform((v) => parseDurationMs(v)!);

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
  url: z
    .string({ error: 'expected an http:// or https:// URL' })
    .refine((v) => URL.canParse(v) && /^https?:$/.test(new URL(v).protocol), {
      error: 'expected an http:// or https:// URL',
    }),
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

export const FINDING_KINDS = ['violation', 'agent-silent', 'control-failed', 'expected-path-down', 'exception-expired', 'impersonation', 'receiver-failed'] as const;
export const SEVERITIES = ['critical', 'error', 'warning', 'info'] as const;
export const RECEIVER_TYPES = ['console', 'slack', 'pagerduty', 'webhook', 'alertmanager'] as const;

const intIn = (min: number, max: number) => {
  const error = `expected an integer ${min}–${max}`;
  return z.number({ error }).int({ error }).min(min, { error }).max(max, { error });
};
const oneOrMany = <T extends z.ZodType>(item: T, what: string) =>
  z.union([item, z.array(item)], { error: `expected ${what} or a list of them` });

const HTTP_URL_ERROR = 'expected an http:// or https:// URL';
/** Whether `text` is an absolute http(s) URL: what every receiver endpoint must be. */
export const isHttpUrl = (text: string): boolean => URL.canParse(text) && /^https?:$/.test(new URL(text).protocol);
const HttpUrl = z.string({ error: HTTP_URL_ERROR }).refine(isHttpUrl, { error: HTTP_URL_ERROR });
const AnyUrl = z.string({ error: 'expected a URL' }).refine((v) => URL.canParse(v), { error: 'expected a URL' });

const SECRET_FORMS = '{ env: VAR } or { file: PATH }';
/**
 * A reference to a secret held outside the plan: an environment variable or a file (relative to the plan's
 * directory). A plan is shared, committed and pushed to agents, so a literal value is refused, and the refusal never
 * echoes it.
 */
const SecretRefFields = z
  .strictObject(
    {
      env: z
        .string({ error: 'expected an environment variable name such as BULKHEAD_PD_KEY' })
        .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, { error: 'expected an environment variable name such as BULKHEAD_PD_KEY' })
        .optional(),
      file: z.string({ error: 'expected a file path' }).min(1, { error: 'expected a file path' }).optional(),
    },
    {
      error: (issue) =>
        issue.input === undefined || issue.input === null || typeof issue.input === 'object'
          ? `expected ${SECRET_FORMS}`
          : `a secret cannot be written in the plan: give ${SECRET_FORMS}`,
    },
  )
  .refine((ref) => (ref.env === undefined) !== (ref.file === undefined), {
    error: (issue) => {
      const ref = issue.input as { env?: unknown; file?: unknown };
      return ref.env !== undefined && ref.file !== undefined ? 'give env or file, not both' : `expected ${SECRET_FORMS}`;
    },
  });
const toSecretRef = (ref: z.output<typeof SecretRefFields>): { env: string } | { file: string } =>
  ref.env !== undefined ? { env: ref.env } : { file: ref.file! };
const SecretRef = SecretRefFields.transform(toSecretRef);

/**
 * An endpoint that may be written in the plan or, when the URL itself carries a token, kept as a secret. The
 * reference is narrowed after the union: a transform inside it would hide which branch the input was meant for.
 */
const UrlOrSecret = z.union([HttpUrl, SecretRefFields]).transform((v) => (typeof v === 'string' ? v : toSecretRef(v)));

/** Sends at most `requests` per `per`; the defaults sit under each vendor's documented limit. */
const RateLimit = z.strictObject({ requests: intIn(1, 10_000), per: Duration });
const rateLimit = (requests: number, perMs: number) => RateLimit.default({ requests, per: perMs });

const receiverBase = { name: Name };
const Receiver = z.discriminatedUnion(
  'type',
  [
    z.strictObject({ ...receiverBase, type: z.literal('console'), rate_limit: rateLimit(1000, 1000) }),
    /** The incoming-webhook URL is itself the credential. Slack allows about one message per second per webhook. */
    z.strictObject({ ...receiverBase, type: z.literal('slack'), url: SecretRef, rate_limit: rateLimit(1, 1000) }),
    /** PagerDuty allows about 120 events a minute per routing key: 60 leaves headroom. */
    z.strictObject({
      ...receiverBase,
      type: z.literal('pagerduty'),
      routing_key: SecretRef,
      url: HttpUrl.optional(),
      source: z.string({ error: 'expected a text' }).min(1, { error: 'expected a non-empty text' }).optional(),
      rate_limit: rateLimit(60, 60_000),
    }),
    z.strictObject({ ...receiverBase, type: z.literal('webhook'), url: UrlOrSecret, secret: SecretRef, rate_limit: rateLimit(10, 1000) }),
    z.strictObject({
      ...receiverBase,
      type: z.literal('alertmanager'),
      url: UrlOrSecret,
      generator_url: AnyUrl.optional(),
      rate_limit: rateLimit(10, 1000),
    }),
  ],
  { error: `expected one of ${RECEIVER_TYPES.join(', ')}` },
);

/** Label matchers: a finding matches when every given label equals one of the listed values. */
const Matchers = z.strictObject({
  from_env: oneOrMany(Name, 'an environment name').optional(),
  to_env: oneOrMany(Name, 'an environment name').optional(),
  target: oneOrMany(Name, 'a target name').optional(),
  kind: oneOrMany(z.enum(FINDING_KINDS, { error: `expected one of ${FINDING_KINDS.join(', ')}` }), 'a finding kind').optional(),
  severity: oneOrMany(z.enum(SEVERITIES, { error: `expected one of ${SEVERITIES.join(', ')}` }), 'a severity').optional(),
});

const Route = z.strictObject({
  match: Matchers.default({}),
  receivers: z.array(Name).min(1, { error: 'expected at least one receiver name' }),
  /** Keep evaluating later routes after this one matched. */
  continue: z.boolean().default(false),
  /** Grouping timings for this route's findings; absent means alerting's own value. */
  group_wait: Duration.optional(),
  group_interval: Duration.optional(),
  repeat_interval: Duration.optional(),
});

/** A dead man's switch: proof, every interval, that the alerting pipeline itself is alive. Exactly one of url / receiver. */
const Watchdog = z.strictObject({
  /** Pinged every interval (a healthchecks-style URL, often carrying its own token, hence a secret allowed). */
  url: UrlOrSecret.optional(),
  /** An alertmanager receiver that is sent an always-firing watchdog alert. */
  receiver: Name.optional(),
  interval: Duration.default(60_000),
});

const Alerting = z.strictObject({
  /** Open observations of a deny path before its finding fires. */
  open_threshold: intIn(1, 100).default(1),
  /** Consecutive blocked observations, from every agent that saw the path open, before it resolves. */
  resolve_after: intIn(1, 100).default(3),
  /** This many state flips within the window set the flapping flag instead of paging again. */
  flapping: z.strictObject({ transitions: intIn(2, 100).default(4), window: Duration.default(1_800_000) }).prefault({}),
  /** Intervals without a heartbeat (or without results, for paths) before an agent is silent and its paths stale. */
  silent_after: intIn(2, 100).default(3),
  /** Alertmanager's grouping: wait before a group's first notification, then between updates, then between repeats. */
  group_wait: Duration.default(30_000),
  group_interval: Duration.default(300_000),
  repeat_interval: Duration.default(14_400_000),
  /** This many paths of one environment pair opening within one group flush become one incident. */
  storm_threshold: intIn(2, 100_000).default(25),
  watchdog: Watchdog.optional(),
  receivers: z.array(Receiver).prefault([{ name: 'console', type: 'console' }]),
  routes: z.array(Route).default([{ match: {}, receivers: ['console'], continue: false }]),
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
export type Alerting = Plan['alerting'];
export type Receiver = Alerting['receivers'][number];
export type ReceiverType = Receiver['type'];
export type SecretRef = z.output<typeof SecretRef>;
export type FindingKind = (typeof FINDING_KINDS)[number];
export type Severity = (typeof SEVERITIES)[number];
export type TargetOf<K extends ProbeKind> = Extract<Target, { probe: K }>;
export const PROBE_KINDS = Target.options.map((o) => o.shape.probe.value) as readonly ProbeKind[];

export type Problem = { path: (string | number)[]; message: string };

/** One problem as every plan error reads: `plan.yaml: alerting.receivers[1].routing_key: message`. */
export function formatProblem(label: string, problem: Problem): string {
  let at = '';
  for (const part of problem.path) at += typeof part === 'number' ? `[${part}]` : at === '' ? part : `.${part}`;
  return `${label}: ${at === '' ? '(top level)' : at}: ${problem.message}`;
}
/** A duration field's milliseconds: its default when absent, undefined when malformed (the schema reports that). */
const ms = (v: unknown, fallback: number) => (v === undefined ? fallback : typeof v === 'string' ? parseDurationMs(v) : undefined);
const asRecord = (v: unknown): Record<string, unknown> | undefined =>
  v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
const asList = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);

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

/** Receiver references (routes, watchdog), duplicate receiver names, and Alertmanager's repeat ≥ group interval rule. */
function alertingProblems(alerting: Record<string, unknown>): Problem[] {
  const problems: Problem[] = [];
  const receivers = alerting.receivers === undefined ? [{ name: 'console', type: 'console' }] : asList(alerting.receivers).map(asRecord);
  const names = receivers.map((r) => r?.name);
  const declared = [...new Set(names.filter((n): n is string => typeof n === 'string'))].join(', ');
  names.forEach((name, i) => {
    if (typeof name === 'string' && names.indexOf(name) !== i) {
      problems.push({ path: ['alerting', 'receivers', i, 'name'], message: `duplicate receiver name "${name}"` });
    }
  });
  const checkReceiver = (name: unknown, path: Problem['path']) => {
    const known = typeof name === 'string' && names.includes(name);
    if (typeof name === 'string' && !known) problems.push({ path, message: `unknown receiver "${name}" (declared: ${declared})` });
    return known;
  };

  const groupIntervalMs = ms(alerting.group_interval, 300_000);
  const repeatIntervalMs = ms(alerting.repeat_interval, 14_400_000);
  // Alertmanager's rule: a repeat sooner than the group's next update could never be sent on time.
  if (groupIntervalMs !== undefined && repeatIntervalMs !== undefined && repeatIntervalMs < groupIntervalMs) {
    problems.push({
      path: ['alerting', 'repeat_interval'],
      message: `must not be shorter than alerting.group_interval (${repeatIntervalMs} ms < ${groupIntervalMs} ms)`,
    });
  }

  asList(alerting.routes).forEach((item, i) => {
    const route = asRecord(item);
    if (!route) return;
    asList(route.receivers).forEach((name, j) => checkReceiver(name, ['alerting', 'routes', i, 'receivers', j]));
    if (route.group_interval === undefined && route.repeat_interval === undefined) return;
    const group = ms(route.group_interval, groupIntervalMs ?? NaN);
    const repeat = ms(route.repeat_interval, repeatIntervalMs ?? NaN);
    if (group !== undefined && repeat !== undefined && repeat < group) {
      const [field, other] = route.repeat_interval !== undefined ? ['repeat_interval', 'group_interval'] : ['group_interval', 'repeat_interval'];
      const from = (key: string) => (route[key] !== undefined ? "the route's" : "alerting's");
      problems.push({
        path: ['alerting', 'routes', i, field],
        message:
          field === 'repeat_interval'
            ? `must not be shorter than ${from(other)} group_interval (${repeat} ms < ${group} ms)`
            : `must not be longer than ${from(other)} repeat_interval (${group} ms > ${repeat} ms)`,
      });
    }
  });

  const watchdog = asRecord(alerting.watchdog);
  if (watchdog) {
    if (watchdog.url !== undefined && watchdog.receiver !== undefined) {
      problems.push({ path: ['alerting', 'watchdog'], message: 'give url or receiver, not both' });
    } else if (watchdog.url === undefined && watchdog.receiver === undefined) {
      problems.push({ path: ['alerting', 'watchdog'], message: 'expected url or receiver' });
    }
    if (checkReceiver(watchdog.receiver, ['alerting', 'watchdog', 'receiver'])) {
      const type = receivers[names.indexOf(watchdog.receiver)]?.type;
      if (type !== 'alertmanager') {
        problems.push({
          path: ['alerting', 'watchdog', 'receiver'],
          message: `receiver "${String(watchdog.receiver)}" is of type ${typeof type === 'string' ? type : '(none)'}: the watchdog needs an alertmanager receiver`,
        });
      }
    }
  }
  return problems;
}
