// Benchmark of the agent's memory: `bulkhead agent` (the real CLI, as a child process) with a 1,000-target
// plan against a real nats-server, RSS sampled every second from /proc; prints the steady state after the
// first cycle. Targets are loopback addresses 127.0.1.1–127.0.4.250 on port 9, where nothing listens: every
// attempt is refused at once, so the figure is the agent's own cost, not sockets waiting on timeouts.
//
//   node dist/bench/agent-rss.js [--targets 1000] [--interval 5] [--cycles 6] [--plan-format yaml|json]
//                                [--node-flag=--max-semi-space-size=1 --node-flag=--no-opt --node-flag=--expose-gc]
//
// Exit status 0 when the steady-state maximum is within 70 MB, 1 when not, 2 when it could not run.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { accessSync, constants, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect, usernamePasswordAuthenticator } from '@nats-io/transport-node';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BIN = join(ROOT, 'dist/cli/bulkhead.js');
const NATS_CONFIG = join(ROOT, 'deploy/nats/nats-server.conf');
const USERS = ['controller', 'auditor', 'prod', 'staging', 'dev', 'mgmt'] as const;
const TARGET_MB = 70;

function findNatsServer(): string | undefined {
  for (const dir of [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/usr/local/bin']) {
    if (!dir) continue;
    try {
      accessSync(join(dir, 'nats-server'), constants.X_OK);
      return join(dir, 'nats-server');
    } catch {
      // not here
    }
  }
  return undefined;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port: 0, exclusive: true }, () => {
      const port = (server.address() as net.AddressInfo).port;
      server.close(() => resolve(port));
    });
  });
}

async function waitForPort(port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = net.connect({ host: '127.0.0.1', port });
      socket.once('connect', () => (socket.destroy(), resolve(true)));
      socket.once('error', () => (socket.destroy(), resolve(false)));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listened on ${port} within ${timeoutMs} ms`);
    await sleep(50);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function stop(child: ChildProcess, signal: NodeJS.Signals, timeoutMs: number): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve(code);
    });
    child.kill(signal);
  });
}

/** User + system CPU seconds a process has used so far (from /proc/<pid>/stat, in clock ticks of 1/100 s). */
function cpuSecondsOf(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '').split(' ');
    // After "(comm) ", field 3 of the line is index 0 here: utime and stime are fields 14 and 15.
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return NaN;
  }
}

/** VmRSS and VmHWM of a process, in MB. */
function memoryOf(pid: number): { rssMb: number; hwmMb: number } | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
    return { rssMb: kb('VmRSS') / 1024, hwmMb: kb('VmHWM') / 1024 };
  } catch {
    return undefined;
  }
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** The plan as YAML (one flow mapping per target) or as the equivalent JSON. */
function planText(targets: number, controlPort: number, intervalS: number, format: 'yaml' | 'json'): string {
  const list = [{ name: 'ctl', env: 'staging', probe: 'tcp', host: '127.0.0.1', port: controlPort }];
  for (let i = 0; i < targets; i++) {
    list.push({ name: `t${i}`, env: 'prod', probe: 'tcp', host: `127.0.${1 + Math.floor(i / 250)}.${1 + (i % 250)}`, port: 9 });
  }
  const schedule = { interval: `${intervalS}s`, timeout: '1s', attempts: 1 };
  if (format === 'json') return JSON.stringify({ version: 1, environments: { prod: {}, staging: {} }, targets: list, schedule }, null, 1);
  const flow = (o: object) => `{ ${Object.entries(o).map(([k, v]) => `${k}: ${v}`).join(', ')} }`;
  return `version: 1
environments: { prod: {}, staging: {} }
targets:
${list.map((t) => `  - ${flow(t)}`).join('\n')}
schedule: ${flow(schedule)}
`;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      targets: { type: 'string', default: '1000' },
      interval: { type: 'string', default: '5' },
      cycles: { type: 'string', default: '6' },
      'plan-format': { type: 'string', default: 'yaml' },
      'node-flag': { type: 'string', multiple: true, default: [] },
    },
  });
  const targets = Number(values.targets);
  const intervalS = Number(values.interval);
  const cycles = Number(values.cycles);
  if (targets > 1000) throw new Error('at most 1,000 targets (127.0.1.1–127.0.4.250)');
  const format = values['plan-format'];
  if (format !== 'yaml' && format !== 'json') throw new Error('--plan-format: yaml or json');
  const natsServer = findNatsServer();
  if (!natsServer) {
    console.error('nats-server is not installed (apt-get install nats-server)');
    return 2;
  }
  accessSync(BIN, constants.R_OK);

  const dir = mkdtempSync(join(tmpdir(), 'bulkhead-agent-rss-'));
  // A leading letter: nats-server parses $VAR values as config values, and "7e3f…" would read as a number.
  const passwords = Object.fromEntries(USERS.map((u) => [u, `pw${randomBytes(12).toString('hex')}`])) as Record<(typeof USERS)[number], string>;
  const env = { ...process.env, ...Object.fromEntries(USERS.map((u) => [`BULKHEAD_PW_${u.toUpperCase()}`, passwords[u]])) };
  const port = await freePort();
  const nats = spawn(natsServer, ['-c', NATS_CONFIG, '-a', '127.0.0.1', '-p', String(port), '-sd', join(dir, 'js')], { env, stdio: 'ignore' });
  const control = net.createServer((s) => s.destroy());
  await new Promise<void>((r) => control.listen(0, '127.0.0.1', r));
  let agent: ChildProcess | undefined;
  try {
    await waitForPort(port, 10_000);
    const url = `nats://127.0.0.1:${port}`;
    const nc = await connect({ servers: url, authenticator: usernamePasswordAuthenticator('controller', passwords.controller) });
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: 'RESULTS', subjects: ['bulkhead.results.>'], duplicate_window: 3_600_000_000_000 });

    const planPath = join(dir, `plan.${format}`);
    writeFileSync(planPath, planText(targets, (control.address() as net.AddressInfo).port, intervalS, format));
    const creds = join(dir, 'staging.creds');
    writeFileSync(creds, `agent-staging:${passwords.staging}\n`, { mode: 0o600 });
    const args = [...values['node-flag'], BIN, 'agent', '--env', 'staging', '--plan', planPath, '--nats', url, '--nats-creds', creds, '--name', 'rss', '--state-dir', join(dir, 'state')];
    agent = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    const cycleEnds: { at: number; observations: number; durationMs: number }[] = [];
    let buffered = '';
    agent.stderr!.on('data', (d: Buffer) => {
      buffered += d.toString();
      let nl;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        try {
          const event = JSON.parse(line) as { msg?: string; level?: string; observations?: number; durationMs?: number };
          if (event.msg === 'cycle done') cycleEnds.push({ at: Date.now(), observations: event.observations ?? 0, durationMs: event.durationMs ?? 0 });
          else if (event.level === 'error') console.error(`agent: ${line}`);
        } catch {
          console.error(`agent: ${line}`);
        }
      }
    });

    const samples: { at: number; rssMb: number }[] = [];
    const started = Date.now();
    const limit = started + (cycles + 2) * intervalS * 1000 + 10_000;
    while (cycleEnds.length < cycles && Date.now() < limit && agent.exitCode === null) {
      const m = memoryOf(agent.pid!);
      if (m) samples.push({ at: Date.now(), rssMb: m.rssMb });
      await sleep(1000);
    }
    const hwm = memoryOf(agent.pid!)?.hwmMb ?? NaN;
    const cpuS = cpuSecondsOf(agent.pid!);
    const stopStarted = Date.now();
    const code = await stop(agent, 'SIGTERM', 10_000);
    const stopMs = Date.now() - stopStarted;
    const info = await jsm.streams.info('RESULTS');
    await nc.close();

    if (cycleEnds.length === 0) throw new Error('the agent completed no cycle');
    const steady = samples.filter((s) => s.at > cycleEnds[0]!.at).map((s) => s.rssMb);
    const beforeFirst = samples.filter((s) => s.at <= cycleEnds[0]!.at).map((s) => s.rssMb);
    console.log(`agent RSS with ${targets} targets + 1 control (${format} plan), interval ${intervalS} s, node ${process.version} ${values['node-flag'].join(' ')}`.trimEnd());
    console.log(`cycles completed   ${cycleEnds.length} (observations per cycle ${cycleEnds.map((c) => c.observations).join(', ')}; duration ms ${cycleEnds.map((c) => c.durationMs).join(', ')})`);
    console.log(`results in stream  ${info.state.messages} messages, ${(info.state.bytes / 1024).toFixed(0)} KiB`);
    console.log(`before 1st cycle   median ${median(beforeFirst).toFixed(1)} MB, max ${Math.max(...beforeFirst).toFixed(1)} MB (${beforeFirst.length} samples)`);
    console.log(`steady state       median ${median(steady).toFixed(1)} MB, max ${Math.max(...steady).toFixed(1)} MB (${steady.length} samples after the first cycle)`);
    console.log(`peak (VmHWM)       ${hwm.toFixed(1)} MB`);
    console.log(`agent CPU          ${cpuS.toFixed(2)} s in ${((Date.now() - started) / 1000).toFixed(0)} s (startup and ${cycleEnds.length} cycles)`);
    console.log(`SIGTERM → exit     ${code} in ${stopMs} ms`);
    const pass = Math.max(...steady) <= TARGET_MB;
    console.log(`target             steady-state max ≤ ${TARGET_MB} MB: ${pass ? 'met' : 'MISSED'}`);
    return pass ? 0 : 1;
  } finally {
    if (agent) await stop(agent, 'SIGKILL', 5000);
    await stop(nats, 'SIGTERM', 5000);
    await new Promise((r) => control.close(r));
    rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  (code) => (process.exitCode = code),
  (err: unknown) => {
    console.error(err);
    process.exitCode = 2;
  },
);
