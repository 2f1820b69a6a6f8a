// The plan's `alerting` section (SPEC §5, §7): receivers and their secrets, routes, grouping, the watchdog, and the
// rules between them that one field's schema cannot see.
import { z } from 'zod';
import { AnyUrl, asList, asRecord, Duration, HttpUrl, intIn, ms, Name, oneOrMany, type Problem } from './plan-fields.js';

export const FINDING_KINDS = ['violation', 'agent-silent', 'control-failed', 'expected-path-down', 'exception-expired', 'impersonation', 'receiver-failed'] as const;
export const SEVERITIES = ['critical', 'error', 'warning', 'info'] as const;
export const RECEIVER_TYPES = ['console', 'slack', 'pagerduty', 'webhook', 'alertmanager'] as const;

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
export const SecretRef = SecretRefFields.transform(toSecretRef);

/**
 * An endpoint that may be written in the plan or, when the URL itself carries a token, kept as a secret. The
 * reference is narrowed after the union: a transform inside it would hide which branch the input was meant for.
 */
const UrlOrSecret = z.union([HttpUrl, SecretRefFields]).transform((v) => (typeof v === 'string' ? v : toSecretRef(v)));

/** Sends at most `requests` per `per`; the defaults sit under each vendor's documented limit. */
const RateLimit = z.strictObject({ requests: intIn(1, 10_000), per: Duration });
const rateLimit = (requests: number, perMs: number) => RateLimit.default({ requests, per: perMs });

const receiverBase = { name: Name };
export const Receiver = z.discriminatedUnion(
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

/** The `alerting` section. Cross-field rules live in `alertingProblems`. */
export const Alerting = z.strictObject({
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

export type Alerting = z.output<typeof Alerting>;
export type Receiver = Alerting['receivers'][number];
export type ReceiverType = Receiver['type'];
export type SecretRef = z.output<typeof SecretRef>;
export type FindingKind = (typeof FINDING_KINDS)[number];
export type Severity = (typeof SEVERITIES)[number];

/** Receiver references (routes, watchdog), duplicate receiver names, and Alertmanager's repeat ≥ group interval rule. */
export function alertingProblems(alerting: Record<string, unknown>): Problem[] {
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
