// From the plan's receivers to what the renderers take: secret references read, URLs checked, rate limits in ms.
// Runs when the controller starts or reloads a plan, so a missing key stops it there, not at the first page.
import { dirname } from 'node:path';
import { PlanError } from '../../core/errors.js';
import type { LoadedPlan } from '../../core/plan-load.js';
import { formatProblem, isHttpUrl, type Problem, type Receiver, type SecretRef } from '../../core/plan.js';
import { describeSecretRef, readSecret, SecretError } from '../../core/secrets.js';
import type { AlertmanagerConfig } from './alertmanager.js';
import type { PagerDutyConfig } from './pagerduty.js';
import { ReceiverError } from './shared.js';
import type { SlackConfig } from './slack.js';
import { webhookKey, type WebhookConfig } from './webhook.js';

/** At most `requests` sends per `perMs` milliseconds, for one receiver. */
export interface RateLimit {
  readonly requests: number;
  readonly perMs: number;
}

interface Base<T extends Receiver['type']> {
  readonly name: string;
  readonly type: T;
  readonly rateLimit: RateLimit;
}

/**
 * A receiver ready to send: its renderer's config with every secret read. `urlFromSecret` marks an endpoint that
 * came from a secret reference (so `secretsOf` redacts it); absent means the URL was written in the plan.
 */
export type ReceiverRuntime =
  | Base<'console'>
  | (Base<'slack'> & { readonly config: SlackConfig })
  | (Base<'pagerduty'> & { readonly config: PagerDutyConfig })
  | (Base<'webhook'> & { readonly config: WebhookConfig; readonly urlFromSecret?: boolean })
  | (Base<'alertmanager'> & { readonly config: AlertmanagerConfig; readonly urlFromSecret?: boolean });

/** The dead man's switch: a URL pinged every interval, or an alertmanager receiver sent an always-firing alert. */
export type WatchdogRuntime =
  | { readonly kind: 'url'; readonly url: string; readonly intervalMs: number; readonly urlFromSecret?: boolean }
  | { readonly kind: 'receiver'; readonly receiver: string; readonly intervalMs: number };

type Path = Problem['path'];

/** Reads references relative to the plan file and collects every failure as a problem instead of stopping at one. */
class SecretReader {
  readonly problems: Problem[] = [];
  private readonly baseDir: string;
  constructor(
    loaded: LoadedPlan,
    private readonly env: NodeJS.ProcessEnv,
  ) {
    this.baseDir = dirname(loaded.path);
  }

  secret(ref: SecretRef, path: Path): string | undefined {
    try {
      return readSecret(ref, this.baseDir, this.env);
    } catch (err) {
      if (!(err instanceof SecretError)) throw err;
      this.problems.push({ path, message: err.message });
      return undefined;
    }
  }

  /** A URL written in the plan (the schema checked it) or read from a secret, which must hold an http(s) URL. */
  url(value: string | SecretRef, path: Path): { url: string; fromSecret: boolean } | undefined {
    if (typeof value === 'string') return { url: value, fromSecret: false };
    // Whitespace around a URL is never part of it; a file written by hand may carry some.
    const url = this.secret(value, path)?.trim();
    if (url === undefined) return undefined;
    if (!isHttpUrl(url)) {
      this.problems.push({ path, message: `${describeSecretRef(value, this.baseDir)} does not hold an http:// or https:// URL` });
      return undefined;
    }
    return { url, fromSecret: true };
  }

  /** A webhook signing secret, checked now so a malformed `whsec_` value fails at start rather than at every send. */
  signingSecret(ref: SecretRef, path: Path): string | undefined {
    const secret = this.secret(ref, path);
    if (secret === undefined) return undefined;
    try {
      webhookKey(secret);
      return secret;
    } catch (err) {
      if (!(err instanceof ReceiverError)) throw err;
      this.problems.push({ path, message: `${describeSecretRef(ref, this.baseDir)}: ${err.message.replace(/^webhook: /, '')}` });
      return undefined;
    }
  }
}

function resolveOne(receiver: Receiver, index: number, reader: SecretReader): ReceiverRuntime | undefined {
  const at = (field: string): Path => ['alerting', 'receivers', index, field];
  const base = { name: receiver.name, rateLimit: { requests: receiver.rate_limit.requests, perMs: receiver.rate_limit.per } };
  switch (receiver.type) {
    case 'console':
      return { ...base, type: 'console' };
    case 'slack': {
      // The whole webhook URL is the credential: it is read like any secret, then checked like any URL.
      const url = reader.url(receiver.url, at('url'));
      return url && { ...base, type: 'slack', config: { url: url.url } };
    }
    case 'pagerduty': {
      const routingKey = reader.secret(receiver.routing_key, at('routing_key'));
      if (routingKey === undefined) return undefined;
      const config: PagerDutyConfig = {
        routingKey,
        ...(receiver.url !== undefined ? { url: receiver.url } : {}),
        ...(receiver.source !== undefined ? { source: receiver.source } : {}),
      };
      return { ...base, type: 'pagerduty', config };
    }
    case 'webhook': {
      const url = reader.url(receiver.url, at('url'));
      const secret = reader.signingSecret(receiver.secret, at('secret'));
      if (!url || secret === undefined) return undefined;
      return { ...base, type: 'webhook', config: { url: url.url, secret }, urlFromSecret: url.fromSecret };
    }
    case 'alertmanager': {
      const url = reader.url(receiver.url, at('url'));
      if (!url) return undefined;
      const config: AlertmanagerConfig = { url: url.url, ...(receiver.generator_url !== undefined ? { generatorUrl: receiver.generator_url } : {}) };
      return { ...base, type: 'alertmanager', config, urlFromSecret: url.fromSecret };
    }
    default:
      return assertNever(receiver);
  }
}

function assertNever(value: never): never {
  throw new Error(`unhandled receiver ${JSON.stringify(value)}`);
}

function watchdogOf(loaded: LoadedPlan, reader: SecretReader): WatchdogRuntime | undefined {
  const watchdog = loaded.plan.alerting.watchdog;
  if (watchdog === undefined) return undefined;
  const intervalMs = watchdog.interval;
  // The loader's cross-field rules allow exactly one of url / receiver (and only an alertmanager receiver).
  if (watchdog.receiver !== undefined) return { kind: 'receiver', receiver: watchdog.receiver, intervalMs };
  if (watchdog.url === undefined) return undefined;
  const url = reader.url(watchdog.url, ['alerting', 'watchdog', 'url']);
  return url && { kind: 'url', url: url.url, intervalMs, urlFromSecret: url.fromSecret };
}

function receiversOf(loaded: LoadedPlan, reader: SecretReader): ReceiverRuntime[] {
  return loaded.plan.alerting.receivers.map((r, i) => resolveOne(r, i, reader)).filter((r): r is ReceiverRuntime => r !== undefined);
}

function throwIfProblems(loaded: LoadedPlan, reader: SecretReader): void {
  if (reader.problems.length > 0) throw new PlanError(reader.problems.map((p) => formatProblem(loaded.path, p)));
}

/** Every receiver of the plan ready to send; else one PlanError listing every secret that is missing or malformed. */
export function resolveReceivers(loaded: LoadedPlan, env: NodeJS.ProcessEnv = process.env): ReceiverRuntime[] {
  const reader = new SecretReader(loaded, env);
  const receivers = receiversOf(loaded, reader);
  throwIfProblems(loaded, reader);
  return receivers;
}

/** The plan's watchdog with its URL secret read, or undefined when the plan has none. */
export function resolveWatchdog(loaded: LoadedPlan, env: NodeJS.ProcessEnv = process.env): WatchdogRuntime | undefined {
  const reader = new SecretReader(loaded, env);
  const watchdog = watchdogOf(loaded, reader);
  throwIfProblems(loaded, reader);
  return watchdog;
}

/** Receivers and watchdog together, so a controller start reports the problems of both in one error. */
export function resolveAlerting(
  loaded: LoadedPlan,
  env: NodeJS.ProcessEnv = process.env,
): { receivers: ReceiverRuntime[]; watchdog: WatchdogRuntime | undefined } {
  const reader = new SecretReader(loaded, env);
  const receivers = receiversOf(loaded, reader);
  const watchdog = watchdogOf(loaded, reader);
  throwIfProblems(loaded, reader);
  return { receivers, watchdog };
}

/** A URL secret as given and as a URL parser prints it (lowercased host, added `/`), so either form is redacted. */
const urlForms = (url: string): string[] => [url, new URL(url).href];

/** The secret values the receivers (and watchdog) hold: what `redact` must hide from logs, reports and the API. */
export function secretsOf(receivers: readonly ReceiverRuntime[], watchdog?: WatchdogRuntime): string[] {
  const secrets: string[] = [];
  for (const r of receivers) {
    switch (r.type) {
      case 'console':
        break;
      case 'slack':
        secrets.push(...urlForms(r.config.url));
        break;
      case 'pagerduty':
        secrets.push(r.config.routingKey);
        break;
      case 'webhook':
        if (typeof r.config.secret === 'string') secrets.push(r.config.secret);
        if (r.urlFromSecret) secrets.push(...urlForms(r.config.url));
        break;
      case 'alertmanager':
        if (r.urlFromSecret) secrets.push(...urlForms(r.config.url));
        break;
      default:
        assertNever(r);
    }
  }
  if (watchdog?.kind === 'url' && watchdog.urlFromSecret) secrets.push(...urlForms(watchdog.url));
  return [...new Set(secrets)];
}

/**
 * `text` with every occurrence of each secret replaced by `[redacted]`. Longest first, so a secret that contains
 * another is hidden whole; values under 4 characters are skipped (they would blank ordinary words, and no real
 * key or URL is that short).
 */
export function redact(text: string, secrets: readonly string[]): string {
  const hidden = [...new Set(secrets)].filter((s) => s.length >= 4).sort((a, b) => b.length - a.length);
  let out = text;
  for (const secret of hidden) out = out.split(secret).join('[redacted]');
  return out;
}
