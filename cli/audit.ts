// `bulkhead audit`: run the plan once from this machine as one environment, print and write the report.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runFrom } from '../agent/engine.js';
import { UsageError } from '../core/errors.js';
import { parseDurationMs } from '../core/plan.js';
import { loadPlan } from '../core/plan-load.js';
import { renderJunit } from './junit.js';
import { renderMarkdown, renderTable } from './render.js';
import { buildReport, exitCodeFor } from './report.js';
import { bulkheadVersion } from './version.js';

export interface AuditArgs {
  readonly plan: string;
  readonly from: string;
  readonly format: 'table' | 'json';
  readonly report?: string;
  readonly timeout?: string;
  readonly concurrency?: string;
  readonly attempts?: string;
  readonly verbose: boolean;
}

function positiveInt(name: string, value: string | undefined, max: number): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > max) throw new UsageError(`--${name}: expected an integer 1–${max}, got "${value}"`);
  return n;
}

/** Runs the audit and returns the exit code (0 sealed, 1 violations, 2 inconclusive). */
export async function audit(args: AuditArgs, io: { stdout: NodeJS.WritableStream; stderr: NodeJS.WriteStream }, signal: AbortSignal): Promise<number> {
  const loaded = await loadPlan(args.plan);
  const { plan } = loaded;
  if (!(args.from in plan.environments)) {
    throw new UsageError(`--from: unknown environment "${args.from}" (the plan declares: ${Object.keys(plan.environments).join(', ')})`);
  }
  const timeoutMs = args.timeout === undefined ? undefined : parseDurationMs(args.timeout);
  if (args.timeout !== undefined && (timeoutMs === undefined || timeoutMs <= 0)) {
    throw new UsageError(`--timeout: expected a duration such as 500ms or 3s, got "${args.timeout}"`);
  }
  const schedule = {
    ...(timeoutMs !== undefined ? { timeoutMs } : {}),
    ...(args.concurrency !== undefined ? { concurrency: positiveInt('concurrency', args.concurrency, 4096) } : {}),
    ...(args.attempts !== undefined ? { attempts: positiveInt('attempts', args.attempts, 10) } : {}),
  };

  const progress = io.stderr.isTTY === true;
  const run = await runFrom(plan, args.from, {
    signal,
    schedule,
    onObservation: progress
      ? (o, done, total) => io.stderr.write(`\r\x1b[2Kprobing from ${args.from}: ${done}/${total} (${o.target} ${o.outcome})`)
      : undefined,
  });
  if (progress) io.stderr.write('\r\x1b[2K');

  const report = buildReport(loaded, run, new Date(), bulkheadVersion());
  io.stdout.write(args.format === 'json' ? `${JSON.stringify(report, null, 2)}\n` : `${renderTable(report, args.verbose)}\n`);
  if (args.report !== undefined) {
    await mkdir(args.report, { recursive: true });
    await Promise.all([
      writeFile(join(args.report, 'report.json'), `${JSON.stringify(report, null, 2)}\n`),
      writeFile(join(args.report, 'report.md'), renderMarkdown(report)),
      writeFile(join(args.report, 'junit.xml'), renderJunit(report)),
    ]);
    if (args.format === 'table') io.stdout.write(`\nReport written to ${args.report}/ (report.json, report.md, junit.xml)\n`);
  }
  return exitCodeFor(report);
}
