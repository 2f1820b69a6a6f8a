// Rendering an audit report for people: the terminal table and report.md share the matrix and sections.
import type { Verdict } from '../core/policy.js';
import { ruleText, whatAnswered, where } from './describe.js';
import type { AuditReport, JudgedObservation } from './report.js';

interface Cell {
  readonly text: string;
  readonly bad: boolean;
}

/** One cell of the environment matrix: what the paths from `from` into `env` amount to. */
function matrixCell(report: AuditReport, from: string, env: string): Cell {
  const obs = report.observations.filter((o) => o.from === from && o.env === env);
  if (obs.length === 0) return { text: '—', bad: false };
  const count = (v: Verdict) => obs.filter((o) => o.verdict === v).length;
  if (env === from) {
    const ok = count('pass');
    return { text: `controls ${ok}/${obs.length} ok`, bad: ok !== obs.length };
  }
  const violations = count('violation');
  if (violations > 0) return { text: `OPEN ${violations} of ${obs.length}`, bad: true };
  const inconclusive = count('inconclusive');
  if (inconclusive > 0) return { text: `UNKNOWN ${inconclusive} of ${obs.length}`, bad: true };
  const allowed = obs.filter((o) => o.expectation === 'allow').length;
  const blocked = obs.length - allowed;
  return { text: `sealed ${blocked}/${blocked}${allowed > 0 ? `, ${allowed} allowed` : ''}`, bad: count('expected-path-down') > 0 };
}

function matrixRows(report: AuditReport): string[][] {
  const froms = [...new Set(report.observations.map((o) => o.from))];
  if (froms.length === 0) froms.push(report.from);
  return [['from \\ to', ...report.environments], ...froms.map((from) => [from, ...report.environments.map((env) => matrixCell(report, from, env).text)])];
}

const SECTIONS: readonly { verdict: Verdict; title: string; why: string }[] = [
  { verdict: 'violation', title: 'Violations', why: 'paths the policy denies that are open' },
  { verdict: 'inconclusive', title: 'Inconclusive', why: 'attempts that prove nothing: local errors, or blocked results while controls failed' },
  { verdict: 'expected-path-down', title: 'Expected paths down', why: 'controls and allowed paths that are not open' },
];

function row(o: JudgedObservation): string[] {
  return [`${o.from} → ${o.target} (${o.env})`, o.probe, where(o), o.outcome, whatAnswered(o), ruleText(o.rule)];
}

function table(rows: readonly string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  return rows.map((r) => r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]!))).join('  ').trimEnd()).join('\n');
}

const GAP_TEXT = {
  'no-agent': 'no agent of this environment answered, so nothing was verified from it',
  'no-answer': 'this live agent did not accept the run request',
  incomplete: 'this agent accepted but its results did not all arrive before the deadline',
} as const;

const RESULT_TEXT = {
  sealed: 'SEALED: every denied path is blocked and every control is reachable',
  violations: 'NOT SEALED: denied paths are open',
  inconclusive: 'INCONCLUSIVE: some results prove nothing, or some environments were not covered (see above)',
} as const;

/** The terminal rendering: header, matrix, one section per non-passing verdict, summary line. */
export function renderTable(report: AuditReport, verbose = false): string {
  const out: string[] = [];
  const s = report.summary;
  out.push(`Bulkhead audit from ${report.from === 'fleet' ? `the fleet (${(report.agents ?? []).map((a) => `${a.env}/${a.agent}`).join(', ') || 'no agent answered'})` : report.from}, plan ${report.plan.path} (sha256 ${report.plan.sha256.slice(0, 12)})`);
  out.push('');
  out.push(table(matrixRows(report)).replace(/^/gm, '  '));
  for (const section of SECTIONS) {
    const obs = report.observations.filter((o) => o.verdict === section.verdict);
    if (obs.length === 0) continue;
    out.push('', `${section.title} (${obs.length}): ${section.why}`);
    out.push(table(obs.map(row)).replace(/^/gm, '  '));
  }
  const allowed = report.observations.filter((o) => o.expectation === 'allow' && o.verdict === 'pass');
  if (allowed.length > 0) {
    out.push('', `Allowed by exception (${allowed.length})`);
    out.push(table(allowed.map(row)).replace(/^/gm, '  '));
  }
  for (const e of report.exceptions.filter((x) => x.expired)) {
    out.push('', `Expired exception ${e.rule} "${e.reason}"${e.ticket ? ` ${e.ticket}` : ''} (expired ${e.expires}): its paths are denied again`);
  }
  if (verbose) {
    out.push('', `All paths (${report.observations.length})`);
    out.push(table([['path', 'probe', 'address', 'outcome', 'evidence', 'rule', 'verdict'], ...report.observations.map((o) => [...row(o), o.verdict])]).replace(/^/gm, '  '));
  }
  for (const gap of report.coverageGaps ?? []) {
    out.push('', `Coverage gap: ${gap.env}${gap.agent ? ` agent ${gap.agent}` : ''}: ${GAP_TEXT[gap.reason]}`);
  }
  if (s.controls.total === 0 && report.from !== 'fleet') out.push('', `Warning: ${report.from} has no targets of its own, so no control proves the probes could reach anything.`);
  out.push('');
  out.push(
    `${s.paths} paths: ${s.verdicts.pass} pass, ${s.verdicts.violation} violation, ${s.verdicts.inconclusive} inconclusive, ` +
      `${s.verdicts['expected-path-down']} expected-path-down; controls ${s.controls.total - s.controls.failed.length}/${s.controls.total} ok`,
  );
  out.push(RESULT_TEXT[s.result]);
  return out.join('\n');
}

const mdEscape = (text: string) => text.replace(/\|/g, '\\|');
function mdTable(rows: readonly string[][]): string {
  const [head, ...body] = rows;
  return [`| ${head!.map(mdEscape).join(' | ')} |`, `|${head!.map(() => ' --- ').join('|')}|`, ...body.map((r) => `| ${r.map(mdEscape).join(' | ')} |`)].join('\n');
}

/** report.md: the same content as the table, for auditors, with every observation listed. */
export function renderMarkdown(report: AuditReport): string {
  const s = report.summary;
  const out: string[] = [
    `# Bulkhead isolation audit: ${report.from}`,
    '',
    `- Result: **${RESULT_TEXT[s.result]}**`,
    `- Plan: \`${report.plan.path}\` (sha256 \`${report.plan.sha256}\`)`,
    `- Run: ${report.startedAt} to ${report.finishedAt}, from environment \`${report.from}\``,
    `- Paths: ${s.paths}; controls ${s.controls.total - s.controls.failed.length}/${s.controls.total} ok${s.controls.failed.length ? ` (failed: ${s.controls.failed.join(', ')})` : ''}`,
    '',
    '## Environment matrix',
    '',
    mdTable(matrixRows(report)),
  ];
  const head = ['path', 'probe', 'address', 'outcome', 'evidence', 'rule'];
  for (const section of SECTIONS) {
    const obs = report.observations.filter((o) => o.verdict === section.verdict);
    out.push('', `## ${section.title} (${obs.length})`, '', `${section.why}.`, '');
    if (obs.length > 0) out.push(mdTable([head, ...obs.map(row)]));
  }
  if (report.coverageGaps !== undefined) {
    out.push('', `## Coverage (${report.agents?.length ?? 0} agents answered, ${report.coverageGaps.length} gaps)`, '');
    if (report.coverageGaps.length > 0) {
      out.push(mdTable([['environment', 'agent', 'gap'], ...report.coverageGaps.map((g) => [g.env, g.agent ?? '(none)', GAP_TEXT[g.reason]])]));
    }
  }
  out.push('', '## Exceptions', '');
  if (report.exceptions.length === 0) out.push('No allow rule applies to this environment.');
  else {
    out.push(
      mdTable([
        ['rule', 'from', 'to', 'reason', 'ticket', 'expires', 'status'],
        ...report.exceptions.map((e) => [e.rule, e.from.join(', '), e.to.target ?? `env ${e.to.env}`, e.reason, e.ticket ?? '', e.expires ?? 'never', e.expired ? 'EXPIRED' : 'active']),
      ]),
    );
  }
  out.push('', `## All observations (${report.observations.length})`, '');
  out.push(mdTable([[...head, 'verdict', 'attempts', 'total ms'], ...report.observations.map((o) => [...row(o), o.verdict, String(o.attempts), String(o.timings.totalMs)])]));
  return `${out.join('\n')}\n`;
}
