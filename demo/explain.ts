// Explains a demo audit report in plain sentences, one per finding, from report.json.
import { readFileSync } from 'node:fs';
import { whatAnswered, where } from '../cli/describe.js';
import type { AuditReport } from '../cli/report.js';

const report = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as AuditReport;
const lines: string[] = [];
for (const o of report.observations) {
  const path = `${o.from} → ${o.target} (${where(o)}, ${o.probe})`;
  const evidence = whatAnswered(o).replace(/\.$/, '');
  if (o.verdict === 'violation') {
    const note = o.evidence.postgres?.sqlstate || o.evidence.redis?.reply.startsWith('-') ? ' An authentication error still proves the path exists.' : '';
    lines.push(`  LEAK     ${path}: outcome ${o.outcome}: ${evidence}. The policy denies it.${note}`);
  } else if (o.expectation === 'allow' && o.verdict === 'pass') {
    lines.push(`  ALLOWED  ${path}: open, covered by ${o.rule.id} (${'reason' in o.rule ? o.rule.reason : ''}).`);
  } else if (o.expectation === 'deny' && o.verdict === 'pass') {
    lines.push(`  SEALED   ${path}: ${o.outcome} (${evidence}).`);
  } else if (o.expectation === 'control') {
    lines.push(`  CONTROL  ${path}: ${o.verdict === 'pass' ? 'reachable, so the blocked results above are trustworthy' : `NOT reachable (${o.outcome}): blocked results prove nothing`}.`);
  } else {
    lines.push(`  ${o.verdict.toUpperCase()}  ${path}: ${o.outcome} (${evidence}).`);
  }
}
const order = ['  LEAK', '  ALLOWED', '  SEALED', '  CONTROL'];
lines.sort((a, b) => order.findIndex((p) => a.startsWith(p)) - order.findIndex((p) => b.startsWith(p)));
process.stdout.write(`${lines.join('\n')}\n\n`);
const exitMeaning = { sealed: 'sealed (exit 0)', violations: 'NOT sealed: violations (exit 1)', inconclusive: 'inconclusive (exit 2)' }[report.summary.result];
process.stdout.write(
  `Result: ${exitMeaning}. In CI, that exit code fails the job.\n` +
    `Evidence for auditors: report.json, report.md and junit.xml in ${process.argv[2]!.replace(/\/report\.json$/, '')}/\n`,
);
