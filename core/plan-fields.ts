// Field primitives shared by every section of the plan (SPEC §5), and the shape of a plan problem.
// Imports nothing from plan*.ts, so every section module can build on it without a cycle.
import { isIP } from 'node:net';
import { z } from 'zod';
import { isCidr } from './net.js';

export const NAME_RE = /^[a-z0-9][a-z0-9_-]{0,62}$/;
const HOSTNAME_RE = /^(?=.{1,253}\.?$)([a-zA-Z0-9_]([a-zA-Z0-9_-]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9_]([a-zA-Z0-9_-]{0,61}[a-zA-Z0-9])?)*\.?$/;
const DURATION_RE = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/;
const UNIT_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as const;

/** Parses `500ms`, `3s`, `2m`, `1h` into milliseconds; undefined when malformed. */
export function parseDurationMs(text: string): number | undefined {
  const match = DURATION_RE.exec(text);
  if (!match) return undefined;
  return Math.round(Number(match[1]) * UNIT_MS[match[2] as keyof typeof UNIT_MS]);
}

export const Name = z
  .string({ error: 'expected a name (lowercase letters, digits, - and _)' })
  .regex(NAME_RE, { error: 'expected a name (lowercase letters, digits, - and _, at most 63)' });

export const Host = z
  .string({ error: 'expected a host name or IP address' })
  .refine((v) => isIP(v) !== 0 || HOSTNAME_RE.test(v), { error: 'expected a host name or IP address' });

export const IpAddress = z
  .string({ error: 'expected an IP address' })
  .refine((v) => isIP(v) !== 0, { error: 'expected an IP address' });

export const Cidr = z
  .string({ error: 'expected a network in CIDR notation such as 10.10.0.0/16' })
  .refine(isCidr, { error: 'expected a network in CIDR notation such as 10.10.0.0/16' });

/** An integer in [min, max], every failure (type, fraction, range) worded the same so the message names the range. */
export const intIn = (min: number, max: number) => {
  const error = `expected an integer ${min}–${max}`;
  return z.number({ error }).int({ error }).min(min, { error }).max(max, { error });
};

export const Port = intIn(1, 65535);

export const Duration = z
  .string({ error: 'expected a duration such as 500ms, 3s, 2m or 1h' })
  .refine((v) => parseDurationMs(v) !== undefined, { error: 'expected a duration such as 500ms, 3s, 2m or 1h' })
  .transform((v) => parseDurationMs(v)!);

/** One item or a list of them, as written; one message for both, so a bad value is not reported twice. */
export const oneOrMany = <T extends z.ZodType>(item: T, what: string) =>
  z.union([item, z.array(item)], { error: `expected ${what} or a list of them` });

const HTTP_URL_ERROR = 'expected an http:// or https:// URL';
/** Whether `text` is an absolute http(s) URL: what every receiver endpoint must be. */
export const isHttpUrl = (text: string): boolean => URL.canParse(text) && /^https?:$/.test(new URL(text).protocol);
export const HttpUrl = z.string({ error: HTTP_URL_ERROR }).refine(isHttpUrl, { error: HTTP_URL_ERROR });
export const AnyUrl = z.string({ error: 'expected a URL' }).refine((v) => URL.canParse(v), { error: 'expected a URL' });

/** One thing wrong with a plan: where (a path into the document) and what. */
export type Problem = { path: (string | number)[]; message: string };

/** One problem as every plan error reads: `plan.yaml: alerting.receivers[1].routing_key: message`. */
export function formatProblem(label: string, problem: Problem): string {
  let at = '';
  for (const part of problem.path) at += typeof part === 'number' ? `[${part}]` : at === '' ? part : `.${part}`;
  return `${label}: ${at === '' ? '(top level)' : at}: ${problem.message}`;
}

// Readers for the raw document, used by the cross-field rules: these run before (and regardless of) the schema,
// so every value may be of any type.

/** A duration field's milliseconds: its default when absent, undefined when malformed (the schema reports that). */
export const ms = (v: unknown, fallback: number) => (v === undefined ? fallback : typeof v === 'string' ? parseDurationMs(v) : undefined);
/** The value as a plain object, or undefined when it is anything else (a list, null, a scalar). */
export const asRecord = (v: unknown): Record<string, unknown> | undefined =>
  v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
/** The value as a list, or an empty one when it is anything else. */
export const asList = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
