// Slack incoming webhook: one message per group, in Block Kit within Slack's limits, with a plain `text` fallback
// for notifications and clients that cannot show blocks. A webhook cannot edit messages: a resolve is a new message.
import type { Notification } from '../model.js';
import { ELLIPSIS, flagsOf, header, nonEmpty, pathOf, permanent, retry, sentence, statusWord, truncate } from './shared.js';
import type { ClassifyFn, OutgoingRequest, RenderFn, Verdict } from './types.js';

export const SLACK_LIMITS = {
  blocks: 50,
  header: 150,
  sectionText: 3000,
  fields: 10,
  fieldText: 2000,
  contextElements: 10,
  /** Notifications listed one by one; the rest become a "+N more" line. */
  shown: 20,
  /** Slack answers msg_blocks_too_long at about 13 k characters of blocks: stay well below. */
  blocksChars: 11_000,
  /** `text` is truncated above 40 k; the fallback only needs to be a readable line or two. */
  text: 3000,
} as const;

export interface SlackConfig {
  /** The incoming webhook URL (`https://hooks.slack.com/services/T…/B…/…`). */
  readonly url: string;
}

type Text = { type: 'plain_text' | 'mrkdwn'; text: string };
type Block =
  | { type: 'header'; text: Text }
  | { type: 'section'; text: Text; fields?: Text[] }
  | { type: 'context'; elements: Text[] }
  | { type: 'divider' };

/** Slack's three control characters in mrkdwn; everything else is shown as typed. */
const escape = (text: string): string => text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** Escapes, then truncates without leaving half an entity (`&am…`) behind. */
function mrkdwn(text: string, max: number): Text {
  let out = truncate(escape(text), max);
  if (out.endsWith(ELLIPSIS)) out = out.slice(0, -ELLIPSIS.length).replace(/&[a-z]*$/, '') + ELLIPSIS;
  return { type: 'mrkdwn', text: out };
}

const plain = (text: string, max: number): Text => ({ type: 'plain_text', text: truncate(text, max) });

/** The group's path: the one path, the one environment pair, or how many there are. */
function groupPath(notifications: readonly Notification[]): string {
  const paths = new Set(notifications.map((n) => pathOf(n.finding)));
  if (paths.size === 1) return [...paths][0]!;
  const pairs = new Set(notifications.map((n) => `${n.finding.labels.from_env ?? '?'} → ${n.finding.labels.to_env ?? '?'}`));
  return pairs.size === 1 ? `${[...pairs][0]!} (${paths.size} paths)` : `${paths.size} paths`;
}

function headline(notifications: readonly [Notification, ...Notification[]]): string {
  const firing = notifications.filter((n) => n.action !== 'resolve').length;
  const resolved = notifications.length - firing;
  const status = firing > 0 ? 'FIRING' : 'RESOLVED';
  const counts = notifications.length === 1 ? '' : firing > 0 && resolved > 0 ? ` ${firing} firing, ${resolved} resolved` : ` ${notifications.length}`;
  return `${status}${counts}: ${groupPath(notifications)}`;
}

function line(n: Notification): string {
  const flags = flagsOf(n.finding);
  return `*${statusWord(n.action)}* ${n.finding.labels.severity} ${n.finding.kind}${flags ? ` (${flags})` : ''}: ${sentence(n.action, n.finding.summary)}`;
}

function fields(n: Notification): Text[] {
  const f = n.finding;
  const items: [string, string | undefined][] = [
    ['Severity', f.labels.severity],
    ['Kind', f.kind],
    ['From', f.labels.from_env],
    ['To', f.labels.to_env],
    ['Target', f.labels.target],
    ['Since', f.since],
    ['Incident', String(f.incident)],
  ];
  return items
    .filter((item): item is [string, string] => item[1] !== undefined)
    .slice(0, SLACK_LIMITS.fields)
    .map(([name, value]) => mrkdwn(`*${name}*\n${value}`, SLACK_LIMITS.fieldText));
}

/**
 * One message for the group: a header (FIRING/RESOLVED and the path), one section per notification for the first
 * 20 (a single notification also gets its fields), a "+N more" line, and a context line naming the dedup key.
 */
export const renderSlack: RenderFn<SlackConfig> = (notifications, config, now): OutgoingRequest => {
  nonEmpty(notifications, 'slack');
  const title = headline(notifications);
  const shown = notifications.slice(0, SLACK_LIMITS.shown);
  const more = notifications.length - shown.length;
  // Share the character budget so 20 long summaries cannot trip msg_blocks_too_long.
  const perSection = Math.min(SLACK_LIMITS.sectionText, Math.floor(SLACK_LIMITS.blocksChars / shown.length));
  const blocks: Block[] = [{ type: 'header', text: plain(title, SLACK_LIMITS.header) }];
  for (const n of shown) {
    const section: Block = { type: 'section', text: mrkdwn(line(n), perSection) };
    blocks.push(notifications.length === 1 ? { ...section, fields: fields(n) } : section);
  }
  if (more > 0) blocks.push({ type: 'section', text: mrkdwn(`+${more} more`, SLACK_LIMITS.sectionText) });
  const first = notifications[0];
  const context = [
    `Bulkhead · ${now.toISOString()}`,
    notifications.length === 1 ? `dedup \`${first.dedupKey}\`` : `${notifications.length} notifications`,
  ];
  blocks.push({ type: 'context', elements: context.slice(0, SLACK_LIMITS.contextElements).map((c) => mrkdwn(c, SLACK_LIMITS.sectionText)) });

  const fallback = [title, ...shown.slice(0, 5).map((n) => `${statusWord(n.action)} ${sentence(n.action, n.finding.summary)}`), ...(notifications.length > 5 ? [`+${notifications.length - 5} more`] : [])];
  const body = { text: truncate(fallback.join('\n'), SLACK_LIMITS.text), blocks: blocks.slice(0, SLACK_LIMITS.blocks) };
  return { method: 'POST', url: config.url, headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) };
};

/**
 * Only 200 with the plain-text body `ok` is delivered. 429 (honouring Retry-After) and 5xx are retried; the
 * documented errors (400 invalid_payload/no_text, 403 action_prohibited/invalid_token, 404 channel_not_found/
 * no_service, 410 channel_is_archived, …) and anything unexpected are permanent: the receiver needs a human.
 */
export const classifySlack: ClassifyFn = (status, headers, body): Verdict => {
  if (status === 200 && body === 'ok') return { kind: 'delivered' };
  if (status === 429 || status >= 500) return retry(status, headers, body);
  if (status === 200) return { kind: 'permanent', reason: `HTTP 200 without "ok" (${header(headers, 'content-type') ?? 'no content-type'}): not a Slack webhook?` };
  return permanent(status, body);
};
