// junit.xml for CI systems: one test suite per (from, to) environment pair, one test case per path.
import { ruleText, whatAnswered, where } from './describe.js';
import type { AuditReport, JudgedObservation } from './report.js';

const xml = (text: string) =>
  text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' })[c]!).replace(/[\x00-\x08\x0b\x0c\x0e-\x1f]/g, '');

function testCase(o: JudgedObservation): string {
  const name = xml(`${o.target} ${where(o)} (${o.probe})`);
  const seconds = (o.timings.totalMs / 1000).toFixed(3);
  const message = xml(`${o.outcome}: ${whatAnswered(o)} [${ruleText(o.rule)}]`);
  const open = `    <testcase classname="bulkhead.${xml(o.from)}.${xml(o.env)}" name="${name}" time="${seconds}">`;
  switch (o.verdict) {
    case 'pass':
      return `${open}</testcase>`;
    case 'violation':
    case 'expected-path-down':
      return `${open}\n      <failure type="${o.verdict}" message="${message}"/>\n    </testcase>`;
    case 'inconclusive':
      return `${open}\n      <error type="inconclusive" message="${message}"/>\n    </testcase>`;
  }
}

/** Renders the report as JUnit XML; violations and expected-path-down are failures, inconclusive are errors. */
export function renderJunit(report: AuditReport): string {
  const groups = new Map<string, JudgedObservation[]>();
  for (const o of report.observations) {
    const key = `${o.from} → ${o.env}`;
    groups.set(key, [...(groups.get(key) ?? []), o]);
  }
  const suites = [...groups].map(([name, obs]) => {
    const failures = obs.filter((o) => o.verdict === 'violation' || o.verdict === 'expected-path-down').length;
    const errors = obs.filter((o) => o.verdict === 'inconclusive').length;
    const time = obs.reduce((sum, o) => sum + o.timings.totalMs, 0) / 1000;
    return [
      `  <testsuite name="${xml(name)}" tests="${obs.length}" failures="${failures}" errors="${errors}" time="${time.toFixed(3)}" timestamp="${xml(report.startedAt)}">`,
      ...obs.map(testCase),
      '  </testsuite>',
    ].join('\n');
  });
  const s = report.summary;
  const failures = s.verdicts.violation + s.verdicts['expected-path-down'];
  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    `<testsuites name="bulkhead audit from ${xml(report.from)}" tests="${s.paths}" failures="${failures}" errors="${s.verdicts.inconclusive}">`,
    ...suites,
    '</testsuites>',
    '',
  ].join('\n');
}
