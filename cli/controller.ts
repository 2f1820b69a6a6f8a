// `bulkhead controller`: run the controller until SIGTERM/SIGINT; SIGHUP reloads the plan.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { BulkheadError, PlanError, UsageError } from '../core/errors.js';
import { Controller, jsonLog } from '../controller/controller.js';

const DEFAULT_LISTEN = '127.0.0.1:9470';

/** `host:port` for the API; port 0 picks a free one. IPv6 hosts go in brackets. */
export function parseListen(value: string): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:\s]+)):(\d{1,5})$/.exec(value);
  const port = Number(match?.[3]);
  if (!match || port > 65535) throw new UsageError(`--listen: expected host:port such as ${DEFAULT_LISTEN}, got "${value}"`);
  return { host: match[1] ?? match[2]!, port };
}

/** The API write token: the file's first line, at least 16 characters (a token anyone can guess protects nothing). */
function readToken(path: string): string {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new UsageError(`--api-token-file: cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  const token = text.split(/\r?\n/, 1)[0]!.trim();
  if (token.length < 16) throw new UsageError(`--api-token-file: ${path}: expected a token of at least 16 characters on its first line`);
  return token;
}

/** Runs the controller; resolves with the exit code (0 after SIGTERM/SIGINT, 1 when it had to stop). */
export async function controllerCommand(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      strict: true,
      options: {
        plan: { type: 'string' },
        nats: { type: 'string' },
        'nats-creds': { type: 'string' },
        'nats-ca': { type: 'string' },
        'database-url': { type: 'string' },
        listen: { type: 'string', default: DEFAULT_LISTEN },
        'api-token-file': { type: 'string' },
      },
    }));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (values.plan === undefined) throw new UsageError('controller needs --plan FILE');
  if (values.nats === undefined) throw new UsageError('controller needs --nats URL');
  // The URL may carry a password: an environment variable keeps it out of `ps`.
  const databaseUrl = values['database-url'] ?? process.env.BULKHEAD_DATABASE_URL;
  const listen = parseListen(values.listen);
  const apiToken = values['api-token-file'] !== undefined ? readToken(values['api-token-file']) : undefined;
  const log = jsonLog(process.stderr);

  // Installed before start-up so that a SIGTERM during it still ends in a clean stop.
  let signalled: NodeJS.Signals | undefined;
  let wakeOnSignal: (() => void) | undefined;
  const onStop = (signal: NodeJS.Signals) => {
    signalled ??= signal;
    wakeOnSignal?.();
  };
  // SIGHUP's default action is to terminate: catch it from the start too, and reload once running.
  let controller: Controller | undefined;
  let reloadWanted = false;
  const onHup = () => (controller ? void controller.reloadPlan() : (reloadWanted = true));
  const handlers = [
    ['SIGTERM', onStop],
    ['SIGINT', onStop],
    ['SIGHUP', onHup],
  ] as const;
  for (const [signal, handler] of handlers) process.on(signal, handler);
  const release = () => {
    for (const [signal, handler] of handlers) process.off(signal, handler);
  };
  let running: Controller;
  try {
    running = await Controller.start(
      {
        planPath: values.plan,
        natsUrl: values.nats,
        listen,
        ...(values['nats-creds'] !== undefined ? { natsCreds: values['nats-creds'] } : {}),
        ...(values['nats-ca'] !== undefined ? { natsCa: values['nats-ca'] } : {}),
        ...(databaseUrl !== undefined ? { databaseUrl } : {}),
        ...(apiToken !== undefined ? { apiToken } : {}),
      },
      log,
    );
  } catch (err) {
    release();
    if (err instanceof PlanError || err instanceof UsageError) throw err;
    const code = err instanceof BulkheadError ? err.code : (err as NodeJS.ErrnoException).code;
    log('error', 'controller could not start', { error: (err as Error).message, ...(code !== undefined ? { code } : {}) });
    return 1;
  }

  controller = running;
  if (reloadWanted) await running.reloadPlan();
  const stopped = new Promise<void>((resolve) => {
    wakeOnSignal = resolve;
    if (signalled !== undefined) resolve();
  });
  await Promise.race([stopped, running.finished()]);
  release();
  if (signalled !== undefined) log('info', 'stopping', { signal: signalled });
  await running.stop().catch((err: unknown) => log('error', 'stop failed', { error: (err as Error).message }));
  return running.ingest.failure === undefined ? 0 : 1;
}
