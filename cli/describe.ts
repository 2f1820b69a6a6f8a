// Short human descriptions of observations, shared by the terminal table and the Markdown report.
import type { Observation } from '../core/observation.js';
import type { RuleRef } from '../core/policy.js';

/** `127.0.10.1:5432`, `[::1]:53`, or the host name when no address was reached. */
export function where(o: Observation): string {
  if (o.address === null) return `${o.evidence.host ?? '?'}${o.port !== null ? `:${o.port}` : ''}`;
  const address = o.address.includes(':') ? `[${o.address}]` : o.address;
  return o.port === null ? address : `${address}:${o.port}`;
}

/** What answered, in a few words: the evidence that backs the outcome. */
export function whatAnswered(o: Observation): string {
  const e = o.evidence;
  const parts: string[] = [];
  if (e.http) parts.push(`HTTP ${e.http.status}${e.http.server ? ` (${e.http.server})` : ''}${e.http.location ? ` → ${e.http.location}` : ''}`);
  if (e.postgres) {
    const pg = e.postgres;
    if (pg.sslResponse) parts.push(`Postgres answered SSLRequest with ${pg.sslResponse}`);
    if (pg.auth) parts.push(`asked for ${pg.auth}`);
    if (pg.sqlstate) parts.push(`SQLSTATE ${pg.sqlstate}`);
  }
  if (e.redis) parts.push(`Redis replied ${e.redis.reply.slice(0, 40)}`);
  if (e.dns) {
    const shown = e.dns.answers.slice(0, 3).map((a) => a.data).join(', ');
    parts.push(`${e.dns.rcode ?? 'no reply'}${e.dns.answers.length > 0 ? ` ${shown}${e.dns.answers.length > 3 ? ', …' : ''}` : ''} via ${e.dns.resolver}`);
    if (e.dns.leaks?.length) parts.push(`${e.dns.leaks.length} answer(s) inside ${[...new Set(e.dns.leaks.map((l) => l.env))].join(', ')} networks`);
  }
  if (e.tls?.subject && !e.http) parts.push(`TLS ${e.tls.subject}`);
  if (e.protocol === 'mismatch') parts.push('TCP connected, other protocol');
  if (parts.length === 0 && o.outcome === 'open') parts.push('TCP connected');
  if (o.outcome !== 'open' && e.errno) parts.push(e.errno);
  if (e.detail && o.outcome !== 'open' && !e.dns) parts.push(e.detail);
  return parts.join('; ');
}

/** The rule in a few words: `default deny`, `allow[0] "status page" SEC-123 until 2027-03-31`. */
export function ruleText(rule: RuleRef): string {
  switch (rule.kind) {
    case 'default-deny':
      return 'default deny';
    case 'control':
      return 'control (own environment)';
    case 'allow':
    case 'exception-expired': {
      const extra = [rule.ticket, rule.expires ? `until ${rule.expires}` : undefined].filter(Boolean).join(' ');
      return `${rule.kind === 'allow' ? '' : 'EXPIRED '}${rule.id} "${rule.reason}"${extra ? ` ${extra}` : ''}`;
    }
  }
}
