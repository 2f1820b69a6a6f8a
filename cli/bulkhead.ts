#!/usr/bin/env node
// The `bulkhead` command line: parse arguments, dispatch, map failures to exit codes.
import { parseArgs } from 'node:util';
import { BulkheadError, PlanError, UsageError } from '../core/errors.js';
import { loadPlan } from '../core/plan-load.js';
import { audit } from './audit.js';
import { EXIT } from './report.js';
import { bulkheadVersion } from './version.js';

const HELP = `bulkhead: prove that environments are sealed from each other

Usage:
  bulkhead validate PLAN
      Check a plan file (YAML or JSON). Exit 0 when valid, 3 with every error listed.

  bulkhead audit --plan FILE --from ENV [options]
      Probe every other environment's targets from this machine, acting as ENV, once.
      --format table|json   stdout format (default table)
      --report DIR          also write DIR/report.json, report.md and junit.xml
      --timeout DURATION    per-attempt timeout (default: the plan's schedule.timeout)
      --concurrency N       attempts in flight (default: the plan's schedule.concurrency)
      --attempts N          attempts per path; only non-open attempts are retried
      --verbose             list every path in the table output

  bulkhead audit --plan FILE --nats URL [--nats-creds FILE] [--nats-ca FILE] [--deadline DURATION] [options]
      Ask every live agent of the fleet to run now and gather their results until the deadline
      (default: the plan's interval). Agents or environments that do not answer are coverage gaps (exit 2).

  bulkhead agent --env ENV --plan FILE --nats URL [--name NAME] [--nats-creds FILE] [--nats-ca FILE]
                 [--state-dir DIR] [--outbox-max N]
      Probe the other environments on the plan's schedule and report over NATS JetStream.
      SIGHUP reloads the plan (an invalid one is refused and the last good one kept); SIGTERM stops.

  bulkhead controller --plan FILE --nats URL [--nats-creds FILE] [--nats-ca FILE]
                      [--database-url postgres://…] [--listen 127.0.0.1:9470] [--api-token-file FILE]
      Consume the agents' results, track every path and finding, persist state and owed notifications,
      deliver alerts to the plan's receivers (secrets from env vars or files), serve the API (silences
      are written through it: loopback only, or with the bearer token in FILE).
      Without --database-url, state is kept in JetStream KV.

Exit codes: 0 sealed, 1 violations, 2 inconclusive (or controls failed), 3 usage or plan error.
`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(HELP);
    return command === undefined ? EXIT.usage : 0;
  }
  if (command === '--version' || command === '-V') {
    process.stdout.write(`${bulkheadVersion()}\n`);
    return 0;
  }
  switch (command) {
    case 'validate': {
      const { positionals } = parse(rest, {}, true);
      if (positionals.length !== 1) throw new UsageError('validate takes exactly one plan file');
      const loaded = await loadPlan(positionals[0]!);
      const p = loaded.plan;
      process.stdout.write(
        `${loaded.path}: valid (${Object.keys(p.environments).length} environments, ${p.targets.length} targets, ` +
          `${p.policy.allow.length} allow rules; sha256 ${loaded.sha256})\n`,
      );
      return 0;
    }
    case 'audit': {
      const { values } = parse(rest, {
        plan: { type: 'string' },
        from: { type: 'string' },
        format: { type: 'string', default: 'table' },
        report: { type: 'string' },
        timeout: { type: 'string' },
        concurrency: { type: 'string' },
        attempts: { type: 'string' },
        verbose: { type: 'boolean', default: false },
        nats: { type: 'string' },
        'nats-creds': { type: 'string' },
        'nats-ca': { type: 'string' },
        deadline: { type: 'string' },
      });
      if (values.plan === undefined) throw new UsageError('audit needs --plan FILE');
      if (values.format !== 'table' && values.format !== 'json') throw new UsageError(`--format: expected table or json, got "${values.format}"`);
      const controller = new AbortController();
      const stop = () => controller.abort(new DOMException('interrupted', 'AbortError'));
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      const { 'nats-creds': natsCreds, 'nats-ca': natsCa, ...others } = values;
      return audit(
        { ...others, natsCreds, natsCa, plan: values.plan, format: values.format, verbose: values.verbose === true } as Parameters<typeof audit>[0],
        { stdout: process.stdout, stderr: process.stderr },
        controller.signal,
      );
    }
    case 'agent':
      return (await import('./agent.js')).agentCommand(rest);
    case 'controller':
      return (await import('./controller.js')).controllerCommand(rest);
    default:
      throw new UsageError(`unknown command "${command}" (try: bulkhead --help)`);
  }
}

type Options = NonNullable<Parameters<typeof parseArgs>[0]>['options'];
function parse<T extends Options>(args: string[], options: T, allowPositionals = false) {
  try {
    return parseArgs({ args, options, allowPositionals, strict: true });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof PlanError) {
      process.stderr.write(`plan error:\n${err.problems.map((p) => `  ${p}`).join('\n')}\n`);
    } else if (err instanceof UsageError) {
      process.stderr.write(`usage error: ${err.message}\n(try: bulkhead --help)\n`);
    } else if (err instanceof BulkheadError) {
      process.stderr.write(`error: ${err.message}\n`);
    } else {
      process.stderr.write(`internal error: ${(err as Error)?.stack ?? String(err)}\n`);
      process.exitCode = 70;
      return;
    }
    process.exitCode = EXIT.usage;
  },
);
