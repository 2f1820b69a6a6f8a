import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { PlanError } from '../../core/errors.js';
import { parsePlanText } from '../../core/plan-load.js';
import { parseDurationMs } from '../../core/plan.js';

const dir = join(import.meta.dirname, '../fixtures/plans');
const fixtures = readdirSync(dir);

function problemsOf(file: string): readonly string[] {
  try {
    parsePlanText(readFileSync(join(dir, file), 'utf8'), file);
  } catch (err) {
    if (err instanceof PlanError) return err.problems;
    throw err;
  }
  return [];
}

describe('plan fixtures', () => {
  it.each(fixtures.filter((f) => f.startsWith('valid-')))('%s is accepted', (file) => {
    expect(problemsOf(file)).toEqual([]);
  });

  it.each(fixtures.filter((f) => f.startsWith('invalid-') && !f.endsWith('.errors')))('%s is rejected whole, with every error', (file) => {
    const expected = readFileSync(join(dir, file.replace(/\.(ya?ml|json)$/, '.errors')), 'utf8').trimEnd().split('\n');
    expect(problemsOf(file)).toEqual(expected);
  });
});

describe('plan schema', () => {
  it('applies defaults and converts durations to milliseconds', () => {
    const { plan } = parsePlanText('version: 1\nenvironments: { prod: {} }\n', 'min.yaml');
    expect(plan.schedule).toEqual({ intervalMs: 60_000, jitter: 0.1, timeoutMs: 3_000, concurrency: 64, attempts: 2, staggerMs: 0 });
    expect(plan.policy).toEqual({ default: 'deny', allow: [] });
    expect(plan.targets).toEqual([]);
  });

  it('keeps the SPEC example as written: dates stay strings, a single from becomes a list', () => {
    const { plan } = parsePlanText(readFileSync(join(dir, 'valid-spec-example.yaml'), 'utf8'), 'spec.yaml');
    expect(plan.policy.allow[0]).toEqual({ from: ['staging'], to: { target: 'prod-api' }, reason: 'status page', ticket: 'SEC-123', expires: '2027-03-31' });
    expect(plan.targets.map((t) => t.probe)).toEqual(['postgres', 'http', 'redis', 'dns']);
    expect(plan.targets[3]).toMatchObject({ type: 'A' });
    expect(plan.targets[0]).toMatchObject({ mode: 'ssl', port: 5432 });
  });

  it('freezes the parsed plan so nothing downstream can change it', () => {
    const { plan } = parsePlanText(readFileSync(join(dir, 'valid-spec-example.yaml'), 'utf8'), 'spec.yaml');
    expect(Object.isFrozen(plan.targets[0])).toBe(true);
    expect(() => (plan.targets as unknown[]).push({})).toThrow(TypeError);
  });

  it('hashes the exact bytes of the file', () => {
    const a = parsePlanText('version: 1\nenvironments: { prod: {} }\n', 'a.yaml');
    const b = parsePlanText('version: 1\nenvironments: { prod: {} }  \n', 'a.yaml');
    expect(a.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(a.sha256).not.toBe(b.sha256);
  });

  it('reports bad JSON with the file name', () => {
    expect(() => parsePlanText('{"version": 1,', 'p.json')).toThrow(/^p\.json: invalid JSON/);
  });

  it.each([
    ['500ms', 500],
    ['3s', 3000],
    ['1.5s', 1500],
    ['2m', 120_000],
    ['1h', 3_600_000],
    ['3', undefined],
    ['s', undefined],
    ['-1s', undefined],
  ])('parses duration %s', (text, ms) => {
    expect(parseDurationMs(text)).toBe(ms);
  });
});
