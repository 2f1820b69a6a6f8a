// Detection latency, end to end: how long after a denied path opens does the page arrive? A real nats-server (deploy
// configuration), the real controller (JetStream KV state) and one real staging agent, all through the CLI; the
// "prod database" is a TCP listener on 127.0.0.1 that the benchmark opens at a random moment within the probe
// interval, and the page is a PagerDuty Events v2 trigger received by a fake that checks its format. Each run then
// closes the listener and waits for the resolve, so the next run is a fresh incident of the same path.
//
//   node dist/bench/latency.js [--runs 8] [--interval 5] [--group-wait 1] [--resolve-after 1] [--jitter 0]
//
// Target: every run within interval + group_wait + 2 s (the worst case is a path that opens just after a probe:
// it waits a whole interval). Exit status 0 met, 1 missed, 2 could not run.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { accessSync, constants, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { startFakePagerDuty, type FakePagerDuty } from './fake-pagerduty.js';
import { freePort, startNatsServer, type NatsInstance } from './servers.js';

const CLI = join(import.meta.dirname, '../cli/bulkhead.js');
const SLACK_MS = 2_000;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Run {
  readonly latencyMs: number;
  /** Open → the probe that saw it (the trigger's payload.timestamp is the observation's time). */
  readonly toProbeMs: number;
  /** That probe → the trigger at PagerDuty: publish, ingest, group wait, send. */
  readonly toPageMs: number;
  readonly resolveMs: number | undefined;
}


/** A TCP listener that accepts and hangs up: "the database is reachable". Closing it ends every accepted socket. */
async function openTarget(port: number): Promise<{ close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    s.end();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port, exclusive: true }, resolve);
  });
  return {
    close() {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

function planText(o: { controlPort: number; targetPort: number; intervalS: number; jitter: number; groupWaitS: number; resolveAfter: number; pagerDutyUrl: string }): string {
  return `version: 1
environments: { prod: {}, staging: {} }
targets:
  - { name: staging-control, env: staging, probe: tcp, host: 127.0.0.1, port: ${o.controlPort} }
  - { name: prod-db, env: prod, probe: tcp, host: 127.0.0.1, port: ${o.targetPort} }
policy: { default: deny }
schedule: { interval: ${o.intervalS}s, jitter: ${o.jitter}, timeout: 1s, attempts: 1, stagger: 100ms }
alerting:
  open_threshold: 1
  resolve_after: ${o.resolveAfter}
  group_wait: ${o.groupWaitS}s
  group_interval: 1s
  # Every run opens and closes the same path: without this it would be flagged flapping after two runs and stop
  # starting new incidents.
  flapping: { transitions: 100 }
  receivers:
    - { name: pagerduty, type: pagerduty, routing_key: { env: BULKHEAD_BENCH_PD_KEY }, url: "${o.pagerDutyUrl}" }
  routes:
    - { match: { kind: violation }, receivers: [pagerduty] }
`;
}

/** Stops a child by its pid: SIGTERM, SIGKILL after 10 s. */
async function stopChild(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

/** Polls the controller's API until the path exists and its last outcome is `refused` (the listener is closed). */
async function waitForPathBlocked(api: string, pathKey: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      const { paths } = (await (await fetch(`${api}/v1/paths`, { signal: AbortSignal.timeout(2_000) })).json()) as { paths: { key: string; last: { outcome: string } }[] };
      if (paths.find((p) => p.key === pathKey)?.last.outcome === 'refused') return true;
    } catch {
      // not listening yet
    }
    await sleep(250);
  }
  return false;
}

const percentile = (sorted: readonly number[], p: number): number => sorted[Math.max(0, Math.ceil(p * sorted.length) - 1)]!;
const s = (ms: number | undefined): string => (ms === undefined || Number.isNaN(ms) ? '   -  ' : `${(ms / 1000).toFixed(2).padStart(6)}`);

async function measure(o: {
  runs: number;
  intervalMs: number;
  jitter: number;
  groupWaitMs: number;
  resolveAfter: number;
  fake: FakePagerDuty;
  targetPort: number;
  api: string;
  pathKey: string;
}): Promise<Run[]> {
  const runs: Run[] = [];
  const cycleMs = o.intervalMs * (1 + o.jitter);
  for (let i = 1; i <= o.runs; i++) {
    await sleep(Math.random() * o.intervalMs);
    const wallOpen = Date.now();
    const perfOpen = performance.now();
    const target = await openTarget(o.targetPort);
    const trigger = await o.fake.waitFor((e) => e.action === 'trigger' && e.arrivedAt > perfOpen, 2 * cycleMs + o.groupWaitMs + 15_000);
    const perfClose = performance.now();
    await target.close();
    if (!trigger) {
      console.log(`run ${i}: no trigger within ${((performance.now() - perfOpen) / 1000).toFixed(1)} s of opening; stopping`);
      break;
    }
    const latencyMs = trigger.arrivedAt - perfOpen;
    const toProbeMs = trigger.timestampMs !== undefined ? trigger.timestampMs - wallOpen : NaN;
    const resolve = await o.fake.waitFor((e) => e.action === 'resolve' && e.dedupKey === trigger.dedupKey && e.arrivedAt > perfClose, (o.resolveAfter + 2) * cycleMs + 15_000);
    const run: Run = { latencyMs, toProbeMs, toPageMs: latencyMs - toProbeMs, resolveMs: resolve ? resolve.arrivedAt - perfClose : undefined };
    runs.push(run);
    console.log(
      `run ${String(i).padStart(2)}: opened → trigger ${s(run.latencyMs)} s  (open → probe ${s(run.toProbeMs)} s, probe → PagerDuty ${s(run.toPageMs)} s)` +
        `   closed → resolve ${s(run.resolveMs)} s${resolve && !resolve.closed ? ' (resolve closed no open alert!)' : ''}`,
    );
    if (!resolve) {
      console.log(`run ${i}: no resolve; stopping (the next run would not be a fresh incident)`);
      break;
    }
  }
  return runs;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      runs: { type: 'string', default: '8' },
      interval: { type: 'string', default: '5' },
      'group-wait': { type: 'string', default: '1' },
      'resolve-after': { type: 'string', default: '1' },
      jitter: { type: 'string', default: '0' },
    },
  });
  const runs = Number(values.runs);
  const intervalS = Number(values.interval);
  const groupWaitS = Number(values['group-wait']);
  const resolveAfter = Number(values['resolve-after']);
  const jitter = Number(values.jitter);
  if (!(Number.isInteger(runs) && runs >= 1 && runs <= 50)) throw new Error('--runs: an integer 1–50');
  if (!(Number.isInteger(intervalS) && intervalS >= 2 && intervalS <= 60)) throw new Error('--interval: whole seconds 2–60');
  if (!(Number.isInteger(groupWaitS) && groupWaitS >= 0 && groupWaitS <= 30)) throw new Error('--group-wait: whole seconds 0–30');
  if (!(Number.isInteger(resolveAfter) && resolveAfter >= 1 && resolveAfter <= 5)) throw new Error('--resolve-after: an integer 1–5');
  if (!(jitter >= 0 && jitter <= 0.5)) throw new Error('--jitter: a fraction 0–0.5');
  accessSync(CLI, constants.R_OK);

  const dir = mkdtempSync(join(tmpdir(), 'bulkhead-bench-latency-'));
  const children: ChildProcess[] = [];
  let nats: NatsInstance | undefined;
  let fake: FakePagerDuty | undefined;
  const control = net.createServer((sock) => sock.destroy());
  let stopping: Promise<void> | undefined;
  const stopAll = () =>
    (stopping ??= (async () => {
      for (const child of children.reverse()) await stopChild(child);
      await nats?.stop();
      await fake?.close();
      control.close();
    })());
  const onSignal = () => void stopAll().then(() => process.exit(130));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    nats = await startNatsServer();
    const routingKey = randomBytes(16).toString('hex');
    fake = await startFakePagerDuty(routingKey);
    await new Promise<void>((resolve) => control.listen(0, '127.0.0.1', resolve));
    const targetPort = await freePort();
    const apiPort = await freePort();
    const planPath = join(dir, 'plan.yaml');
    writeFileSync(planPath, planText({ controlPort: (control.address() as net.AddressInfo).port, targetPort, intervalS, jitter, groupWaitS, resolveAfter, pagerDutyUrl: fake.url }));
    const stagingCreds = join(dir, 'staging.creds');
    writeFileSync(stagingCreds, `agent-staging:${nats.passwords.staging}\n`, { mode: 0o600 });
    const controllerLog = join(dir, 'controller.log');
    const agentLog = join(dir, 'agent.log');
    const api = `http://127.0.0.1:${apiPort}`;
    children.push(
      spawn(process.execPath, [CLI, 'controller', '--plan', planPath, '--nats', nats.url, '--nats-creds', nats.credsFile('controller'), '--listen', `127.0.0.1:${apiPort}`], {
        env: { ...process.env, BULKHEAD_BENCH_PD_KEY: routingKey },
        stdio: ['ignore', 'ignore', openSync(controllerLog, 'w')],
      }),
    );
    children.push(
      spawn(process.execPath, [CLI, 'agent', '--env', 'staging', '--name', 'latency', '--plan', planPath, '--nats', nats.url, '--nats-creds', stagingCreds, '--state-dir', join(dir, 'agent')], {
        stdio: ['ignore', 'ignore', openSync(agentLog, 'w')],
      }),
    );
    const pathKey = `staging→prod-db@127.0.0.1:${targetPort}`;
    const targetMs = (intervalS + groupWaitS) * 1000 + SLACK_MS;
    console.log(`plan: one staging agent, interval ${intervalS} s (jitter ${jitter}), group_wait ${groupWaitS} s, resolve_after ${resolveAfter}; target ≤ ${targetMs / 1000} s`);
    if (!(await waitForPathBlocked(api, pathKey, 30_000))) {
      console.error(`the controller did not report ${pathKey} as refused within 30 s`);
      console.error(`controller log:\n${readFileSync(controllerLog, 'utf8').slice(-2000)}\nagent log:\n${readFileSync(agentLog, 'utf8').slice(-2000)}`);
      return 2;
    }
    const results = await measure({ runs, intervalMs: intervalS * 1000, jitter, groupWaitMs: groupWaitS * 1000, resolveAfter, fake, targetPort, api, pathKey });
    if (fake.rejected.length > 0) console.log(`PagerDuty fake refused ${fake.rejected.length} request(s): ${JSON.stringify(fake.rejected[0]!.problems)}`);
    if (results.length === 0) return 1;
    const sorted = results.map((r) => r.latencyMs).sort((a, b) => a - b);
    const [median, p90, max] = [percentile(sorted, 0.5), percentile(sorted, 0.9), sorted[sorted.length - 1]!];
    const met = results.length === runs && max <= targetMs && fake.rejected.length === 0;
    console.log(`opened → trigger over ${results.length} runs: median ${s(median).trim()} s, p90 ${s(p90).trim()} s, max ${s(max).trim()} s`);
    console.log(`target ≤ ${targetMs / 1000} s (interval ${intervalS} + group_wait ${groupWaitS} + 2): ${met ? 'MET' : 'MISSED'}`);
    return met ? 0 : 1;
  } finally {
    await stopAll();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  (code) => process.exit(code),
  (err: Error) => {
    console.error(`latency: ${err.message}`);
    process.exit(2);
  },
);
