// `bulkhead agent`: flags → a running Agent; SIGHUP reloads the plan, SIGTERM/SIGINT stop it cleanly (exit 0).
import { access, constants } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Agent, jsonLogger, type LogLevel } from '../agent/agent.js';
import { PlanError, UsageError } from '../core/errors.js';
import { readNatsCredentials } from '../core/nats-credentials.js';
import { loadPlan } from '../core/plan-load.js';

const NAME_RE = /^[a-z0-9][a-z0-9_-]{0,62}$/;
const LEVELS: readonly LogLevel[] = ['debug', 'info', 'warn', 'error'];

const USAGE = `Usage: bulkhead agent --env ENV --plan FILE --nats URL [--name NAME] [--nats-creds FILE]
                      [--nats-ca FILE] [--state-dir DIR] [--outbox-max N]
  --env ENV          the environment this agent runs in (must be in the plan)
  --plan FILE        plan file; SIGHUP re-reads it (an invalid plan is refused, the last good one kept)
  --nats URL         nats://host:4222 (comma-separated for several servers)
  --name NAME        agent name (default: the host name, lowercased, [a-z0-9_-])
  --nats-creds FILE  user:password, an SU… nkey seed, or a .creds file (JWT + seed)
  --nats-ca FILE     CA bundle for the server's TLS certificate (turns TLS on)
  --state-dir DIR    outbox and state (default .bulkhead/agent-ENV-NAME)
  --outbox-max N     results kept while NATS is unreachable; the oldest are dropped beyond (default 10000)
Logs: one JSON object per line on stderr; BULKHEAD_LOG_LEVEL=debug|info|warn|error (default info).
`;

/** The host name as an agent name: lowercase, anything outside [a-z0-9_-] becomes "-", at most 63. */
export function defaultAgentName(host = hostname()): string {
  const name = host
    .toLowerCase()
    .replace(/[^a-z0-9_-]+/g, '-')
    .replace(/^[^a-z0-9]+/, '')
    .slice(0, 63)
    .replace(/-+$/, '');
  return name === '' ? 'agent' : name;
}

/** Runs the agent until SIGTERM/SIGINT; throws UsageError/PlanError (exit 3) for a bad start. */
export async function agentCommand(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        env: { type: 'string' },
        plan: { type: 'string' },
        nats: { type: 'string' },
        name: { type: 'string' },
        'nats-creds': { type: 'string' },
        'nats-ca': { type: 'string' },
        'state-dir': { type: 'string' },
        'outbox-max': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const v = parsed.values;
  if (v.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (v.env === undefined) throw new UsageError('agent needs --env ENV (the environment this agent runs in)');
  if (v.plan === undefined) throw new UsageError('agent needs --plan FILE');
  if (v.nats === undefined) throw new UsageError('agent needs --nats URL');
  if (!NAME_RE.test(v.env)) throw new UsageError(`--env: expected a name (lowercase letters, digits, - and _), got "${v.env}"`);
  const name = v.name ?? defaultAgentName();
  if (!NAME_RE.test(name)) throw new UsageError(`--name: expected lowercase letters, digits, - and _ (at most 63), got "${name}"`);
  const outboxMax = v['outbox-max'] === undefined ? 10_000 : Number(v['outbox-max']);
  if (!Number.isInteger(outboxMax) || outboxMax < 1 || outboxMax > 1_000_000) {
    throw new UsageError(`--outbox-max: expected an integer 1–1000000, got "${v['outbox-max']}"`);
  }
  const levelText = process.env.BULKHEAD_LOG_LEVEL ?? 'info';
  if (!LEVELS.includes(levelText as LogLevel)) throw new UsageError(`BULKHEAD_LOG_LEVEL: expected one of ${LEVELS.join(', ')}, got "${levelText}"`);
  const caFile = v['nats-ca'];
  if (caFile !== undefined) {
    await access(caFile, constants.R_OK).catch(() => {
      throw new UsageError(`--nats-ca: cannot read ${caFile}`);
    });
  }

  const plan = await loadPlan(v.plan);
  if (!(v.env in plan.plan.environments)) {
    throw new PlanError([`${v.plan}: environment "${v.env}" is not in the plan (it has ${Object.keys(plan.plan.environments).join(', ')})`]);
  }
  const credentials = v['nats-creds'] === undefined ? undefined : await readNatsCredentials(v['nats-creds']);

  const log = jsonLogger(process.stderr, levelText as LogLevel);
  const agent = await Agent.start({
    env: v.env,
    name,
    plan,
    planPath: v.plan,
    natsUrl: v.nats,
    ...(credentials ? { credentials } : {}),
    ...(caFile !== undefined ? { caFile } : {}),
    stateDir: v['state-dir'] ?? join('.bulkhead', `agent-${v.env}-${name}`),
    outboxMax,
    log,
  });

  const onStop = (signal: NodeJS.Signals) => {
    log('info', `${signal} received: stopping`);
    void agent.stop();
  };
  const onHup = () => {
    log('info', 'SIGHUP received: reloading the plan');
    void agent.reload();
  };
  process.on('SIGTERM', onStop);
  process.on('SIGINT', onStop);
  process.on('SIGHUP', onHup);
  try {
    await agent.stopped;
  } finally {
    process.off('SIGTERM', onStop);
    process.off('SIGINT', onStop);
    process.off('SIGHUP', onHup);
  }
  return 0;
}
