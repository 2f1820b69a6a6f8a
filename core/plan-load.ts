// Reading a plan file: YAML or JSON text → validated, frozen Plan, or a PlanError listing every problem.
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import type { z } from 'zod';
import { PlanError } from './errors.js';
import { crossFieldProblems, formatProblem, PlanSchema, type Plan, type Problem } from './plan.js';

/** A plan together with where it came from and the hash that identifies it in reports and heartbeats. */
export interface LoadedPlan {
  readonly plan: Plan;
  readonly path: string;
  readonly sha256: string;
}

/** Reads and validates a plan file; throws PlanError naming the file and every bad field. */
export async function loadPlan(path: string): Promise<LoadedPlan> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'unknown error';
    throw new PlanError([`${path}: cannot read the plan (${code})`], { cause: err });
  }
  return parsePlanText(text, path);
}

/** Validates plan text; `label` is the file name used in error messages. */
export function parsePlanText(text: string, label: string): LoadedPlan {
  const sha256 = createHash('sha256').update(text).digest('hex');
  const raw = parseText(text, label);
  const result = PlanSchema.safeParse(raw, { reportInput: true });
  const problems = [...(result.success ? [] : toProblems(result.error.issues)), ...crossFieldProblems(raw)];
  if (!result.success || problems.length > 0) {
    problems.sort((a, b) => comparePaths(a.path, b.path, raw));
    throw new PlanError(problems.map((p) => formatProblem(label, p)));
  }
  return { plan: deepFreeze(result.data), path: label, sha256 };
}

function parseText(text: string, label: string): unknown {
  if (/\.json$/i.test(label)) {
    try {
      return JSON.parse(text);
    } catch (err) {
      throw new PlanError([`${label}: invalid JSON: ${(err as Error).message}`], { cause: err });
    }
  }
  // YAML 1.2 core schema: `2027-03-31` stays a string, `on`/`yes` are not booleans.
  // Loaded on first use: a JSON plan (agents, benchmarks) never pays the YAML parser's memory.
  const { parseDocument } = createRequire(import.meta.url)('yaml') as typeof import('yaml');
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new PlanError(
      doc.errors.map((e) => {
        const at = e.linePos?.[0];
        return `${label}${at ? `:${at.line}:${at.col}` : ''}: invalid YAML: ${e.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '')}`;
      }),
    );
  }
  return doc.toJS();
}

/** Turns zod issues into `path: message, got value` problems, one per bad field. */
function toProblems(issues: readonly z.core.$ZodIssue[]): Problem[] {
  const lines: Problem[] = [];
  for (const issue of issues) {
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) lines.push({ path: [...issue.path, key] as Problem['path'], message: 'unknown key' });
      continue;
    }
    if (issue.code === 'invalid_union' && issue.errors.length > 0) {
      // Report the branch that got furthest rather than every alternative.
      const best = [...issue.errors].sort((a, b) => a.length - b.length)[0]!;
      lines.push(...toProblems(best.map((sub) => ({ ...sub, path: [...issue.path, ...sub.path] }))));
      continue;
    }
    let message = issue.message;
    if (issue.code === 'invalid_union' && issue.discriminator !== undefined) {
      const input = issue.input as Record<string, unknown> | undefined;
      const value = input?.[issue.discriminator];
      lines.push({ path: issue.path as Problem['path'], message: `${issue.message}, got ${value === undefined ? 'nothing' : describe(value)}` });
      continue;
    }
    if (issue.code === 'invalid_type' && issue.input === undefined) {
      message = `required (${message})`;
    } else if ('input' in issue && issue.input !== undefined && /^(expected|an allow rule)/.test(message)) {
      message += `, got ${describe(issue.input)}`;
    }
    lines.push({ path: issue.path as Problem['path'], message });
  }
  return lines;
}

/** Orders problems as their fields appear in the document (key order of the parsed YAML/JSON). */
function comparePaths(a: Problem['path'], b: Problem['path'], raw: unknown): number {
  let node = raw;
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const x = a[i]!;
    const y = b[i]!;
    if (x !== y) {
      if (typeof x === 'number' && typeof y === 'number') return x - y;
      const keys = node !== null && typeof node === 'object' ? Object.keys(node) : [];
      const rank = (k: string | number) => (keys.includes(String(k)) ? keys.indexOf(String(k)) : keys.length);
      return rank(x) - rank(y);
    }
    node = node !== null && typeof node === 'object' ? (node as Record<string, unknown>)[String(x)] : undefined;
  }
  return a.length - b.length;
}

function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 60 ? `${value.slice(0, 57)}...` : value);
  if (Array.isArray(value)) return 'a list';
  if (value === null) return 'null';
  if (typeof value === 'object') return 'an object';
  return String(value);
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}
