// `bulkhead audit`: run the plan once from this machine as one environment, print and write the report.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runFrom } from '../agent/engine.js';
import { UsageError } from '../core/errors.js';
import { parseDurationMs } from '../core/plan.js';
import { loadPlan, type LoadedPlan } from '../core/plan-load.js';
import { renderJunit } from './junit.js';
import { renderMarkdown, renderTable } from './render.js';
import { fleetAudit } from './fleet-audit.js';
import { buildReport, exitCodeFor, type AuditReport } from './report.js';
import { bulkheadVersion } from './version.js';

export interface AuditArgs {
  readonly plan: string;
  /** Local mode: the environment this machine acts as. */
  readonly from?: string;
  /** Fleet mode: ask the agents over NATS instead of probing from here. */
  readonly nats?: string;
  readonly natsCreds?: string;
  readonly natsCa?: string;
  readonly deadline?: string;
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

function duration(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const ms = parseDurationMs(value);
  if (ms === undefined || ms <= 0) throw new UsageError(`--${name}: expected a duration such as 500ms or 3s, got "${value}"`);
  return ms;
}

type AuditIo = { stdout: NodeJS.WritableStream; stderr: NodeJS.WriteStream };

/** Runs the audit, locally or across the fleet, and returns the exit code (0 sealed, 1 violations, 2 inconclusive). */
export async function audit(args: AuditArgs, io: AuditIo, signal: AbortSignal): Promise<number> {
  if (args.nats !== undefined && args.from !== undefined) throw new UsageError('--from and --nats exclude each other: audit from this machine, or ask the fleet');
  if (args.nats === undefined && args.from === undefined) throw new UsageError('audit needs --from ENV (the environment this machine is in) or --nats URL (ask the fleet)');
  const loaded = await loadPlan(args.plan);
  const progress = io.stderr.isTTY === true;
  if (args.nats !== undefined) {
    const deadlineMs = duration('deadline', args.deadline) ?? loaded.plan.schedule.intervalMs;
    const report = await fleetAudit(
      loaded,
      {
        url: args.nats,
        ...(args.natsCreds !== undefined ? { credsFile: args.natsCreds } : {}),
        ...(args.natsCa !== undefined ? { caFile: args.natsCa } : {}),
        deadlineMs,
        signal,
        onProgress: progress ? (text) => io.stderr.write(`\r\x1b[2K${text}`) : undefined,
      },
      bulkheadVersion(),
    );
    if (progress) io.stderr.write('\r\x1b[2K');
    return emit(report, args, io);
  }
  return auditFromHere(loaded, args.from!, args, io, signal);
}

async function auditFromHere(loaded: LoadedPlan, from: string, args: AuditArgs, io: AuditIo, signal: AbortSignal): Promise<number> {
  const { plan } = loaded;
  if (!(from in plan.environments)) {
    throw new UsageError(`--from: unknown environment "${from}" (the plan declares: ${Object.keys(plan.environments).join(', ')})`);
  }
  const timeoutMs = duration('timeout', args.timeout);
  const schedule = {
    ...(timeoutMs !== undefined ? { timeoutMs } : {}),
    ...(args.concurrency !== undefined ? { concurrency: positiveInt('concurrency', args.concurrency, 4096) } : {}),
    ...(args.attempts !== undefined ? { attempts: positiveInt('attempts', args.attempts, 10) } : {}),
  };

  const progress = io.stderr.isTTY === true;
  const run = await runFrom(plan, from, {
    signal,
    schedule,
    onObservation: progress
      ? (o, done, total) => io.stderr.write(`\r\x1b[2Kprobing from ${from}: ${done}/${total} (${o.target} ${o.outcome})`)
      : undefined,
  });
  if (progress) io.stderr.write('\r\x1b[2K');

  return emit(buildReport(loaded, run, new Date(), bulkheadVersion()), args, io);
}

/** Prints the report and writes the report files; returns the exit code. */
async function emit(report: AuditReport, args: AuditArgs, io: AuditIo): Promise<number> {
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
