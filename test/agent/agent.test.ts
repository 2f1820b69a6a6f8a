// The agent against a real nats-server started from deploy/nats/nats-server.conf: batches in the RESULTS
// stream with their msgID, heartbeats, permissions, run requests, an outage, the outbox bound, the CLI.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { connect, nkeys, PermissionViolationError, RequestError, usernamePasswordAuthenticator, type NatsConnection } from '@nats-io/transport-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent, type Logger } from '../../agent/agent.js';
import { buildBatches } from '../../agent/batches.js';
import { NatsLink } from '../../agent/nats-link.js';
import type { Observation } from '../../core/observation.js';
import { parsePlanText } from '../../core/plan-load.js';
import { Heartbeat, MAX_MESSAGE_BYTES, ResultBatch, RunAccepted } from '../../core/wire.js';
import { defaultAgentName } from '../../cli/agent.js';
import { CredentialsError, parseNatsCredentials } from '../../core/nats-credentials.js';
import { findExecutable, unavailable } from '../helpers/need.js';
import { freePort } from '../helpers/free-port.js';
import { natsMissing, startNats, type NatsServer, type NatsUser } from '../helpers/nats-server.js';

const root = join(import.meta.dirname, '../..');
const skip = natsMissing();

interface LogLine {
  level: string;
  msg: string;
  fields?: Record<string, unknown>;
}
function recorder(): { log: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  return { lines, log: (level, msg, fields) => void lines.push({ level, msg, ...(fields ? { fields } : {}) }) };
}

async function waitFor<T>(what: string, probe: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A control target that accepts (open) and a cross-environment one that refuses. */
function planText(controlPort: number, refusedPort: number, schedule = '{ interval: 1s, timeout: 200ms, attempts: 1 }'): string {
  return `version: 1
environments: { prod: {}, staging: {} }
targets:
  - { name: stg-ctl, env: staging, probe: tcp, host: 127.0.0.1, port: ${controlPort} }
  - { name: prod-db, env: prod, probe: tcp, host: 127.0.0.1, port: ${refusedPort} }
schedule: ${schedule}
`;
}

async function natsAs(server: NatsServer, user: NatsUser): Promise<NatsConnection> {
  const name = user === 'controller' || user === 'auditor' ? user : `agent-${user}`;
  return connect({ servers: server.url, authenticator: usernamePasswordAuthenticator(name, server.passwords[user]), maxReconnectAttempts: -1, reconnectTimeWait: 250 });
}

/** The controller's stream, as the controller creates it. */
async function createResultsStream(jsm: JetStreamManager): Promise<void> {
  await jsm.streams.add({ name: 'RESULTS', subjects: ['bulkhead.results.>'], duplicate_window: 3_600_000_000_000 });
}

interface Stored {
  msgId: string | undefined;
  batch: ResultBatch;
}
async function storedResults(jsm: JetStreamManager, subject: string): Promise<Stored[]> {
  const info = await jsm.streams.info('RESULTS');
  const out: Stored[] = [];
  for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
    const m = await jsm.streams.getMessage('RESULTS', { seq });
    if (!m || m.subject !== subject) continue;
    out.push({ msgId: m.header?.get('Nats-Msg-Id'), batch: ResultBatch.parse(m.json()) });
  }
  return out;
}

const cycleNumber = (cycleId: string) => Number(cycleId.slice(cycleId.lastIndexOf('-') + 1));

describe.skipIf(skip)('agent with a real nats-server', () => {
  let nats: NatsServer;
  let ctl: NatsConnection;
  let jsm: JetStreamManager;
  let control: net.Server;
  let controlPort: number;
  let refusedPort: number;
  let dir: string;
  const agents: Agent[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'bulkhead-agent-'));
    nats = await startNats();
    ctl = await natsAs(nats, 'controller');
    jsm = await jetstreamManager(ctl);
    await createResultsStream(jsm);
    control = net.createServer((s) => s.destroy());
    await new Promise<void>((r) => control.listen(0, '127.0.0.1', r));
    controlPort = (control.address() as net.AddressInfo).port;
    refusedPort = await freePort();
  });
  afterAll(async () => {
    await Promise.all(agents.map((a) => a.stop()));
    await ctl?.close();
    await nats?.stop();
    if (control) await new Promise((r) => control.close(r));
    rmSync(dir, { recursive: true, force: true });
  });

  async function startAgent(name: string, server: NatsServer, extra: { outboxMax?: number; schedule?: string; user?: NatsUser } = {}) {
    const { log, lines } = recorder();
    const planPath = join(dir, `${name}.yaml`);
    const text = planText(controlPort, refusedPort, extra.schedule);
    writeFileSync(planPath, text);
    const agent = await Agent.start({
      env: 'staging',
      name,
      plan: parsePlanText(text, planPath),
      planPath,
      natsUrl: server.url,
      credentials: { kind: 'user-password', user: `agent-${extra.user ?? 'staging'}`, password: server.passwords[extra.user ?? 'staging'] },
      stateDir: join(dir, `state-${name}`),
      outboxMax: extra.outboxMax ?? 10_000,
      log,
      ackTimeoutMs: 500,
    });
    agents.push(agent);
    return { agent, lines };
  }

  it('publishes each cycle as batches in the RESULTS stream with msgID = batch id, and heartbeats with the plan hash and controls', async () => {
    const beats: Heartbeat[] = [];
    const sub = ctl.subscribe('bulkhead.heartbeat.staging.pub1', { callback: (_e, m) => void beats.push(Heartbeat.parse(m.json())) });
    await ctl.flush();
    const { agent } = await startAgent('pub1', nats);
    const subject = 'bulkhead.results.staging.pub1';
    const stored = await waitFor('three cycles in the stream', async () => {
      const s = await storedResults(jsm, subject);
      return s.length >= 3 ? s : undefined;
    });
    await waitFor('a heartbeat after a cycle', () => beats.some((b) => b.controls !== null));
    const stopStarted = Date.now();
    await agent.stop();
    expect(Date.now() - stopStarted).toBeLessThan(3000);
    sub.unsubscribe();

    for (const { msgId, batch } of stored) {
      expect(msgId).toBe(batch.id);
      expect(batch.id).toBe(`${batch.cycle.id}.${batch.cycle.chunk}`);
      expect(batch.cycle.id).toMatch(new RegExp(`^pub1-${agent.bootId}-\\d+$`));
      expect(batch.planSha256).toBe(agent.planSha256);
      expect(batch.controls).toEqual({ total: 1, failed: [] });
      expect(batch.observations.map((o) => [o.target, o.outcome])).toEqual([
        ['stg-ctl', 'open'],
        ['prod-db', 'refused'],
      ]);
      // Starts are staggered over half the interval: the second of two paths starts ~250 ms after the first.
      const [first, second] = batch.observations;
      expect(Date.parse(second!.at) - Date.parse(first!.at)).toBeGreaterThanOrEqual(200);
    }
    expect(stored.map((s) => cycleNumber(s.batch.cycle.id))).toEqual([1, 2, 3].concat(stored.slice(3).map((_, i) => i + 4)));
    // A cycle every interval ± 10 %: starts 0.9–1.1 s apart (plus scheduling slack).
    const starts = stored.map((s) => Date.parse(s.batch.cycle.startedAt));
    for (let i = 1; i < starts.length; i++) {
      expect(starts[i]! - starts[i - 1]!).toBeGreaterThanOrEqual(880);
      expect(starts[i]! - starts[i - 1]!).toBeLessThanOrEqual(1300);
    }
    expect(agent.outbox.pending).toBe(0);

    const withControls = beats.filter((b) => b.controls !== null);
    expect(beats[0]!.controls).toBeNull(); // the first heartbeat goes out on connect, before any cycle
    expect(withControls[0]).toMatchObject({ env: 'staging', agent: 'pub1', planSha256: agent.planSha256, intervalMs: 1000, controls: { total: 1, failed: [] } });
    expect(withControls[0]!.lastCycleAt).not.toBeNull();
    expect(withControls[0]!.outbox.dropped).toBe(0);
  });

  it('refuses a state directory held by a running agent; takes over one whose pid is dead or not node', async () => {
    const pidFile = join(dir, 'state-lock1', 'agent.pid');
    const holders = [spawn(process.execPath, ['-e', 'setTimeout(() => {}, 20000)']), spawn('sleep', ['20'])];
    try {
      const { agent } = await startAgent('lock1', nats);
      await agent.stop();
      writeFileSync(pidFile, `${holders[0]!.pid}\n`); // another node process holds it
      await expect(startAgent('lock1', nats)).rejects.toMatchObject({ code: 'STATE_DIR_IN_USE' });
      for (const stale of [String(holders[1]!.pid), '4194300']) {
        writeFileSync(pidFile, `${stale}\n`); // a recycled pid (not node), or no such process: left by a crash
        const { agent: next } = await startAgent('lock1', nats);
        await next.stop();
      }
    } finally {
      for (const h of holders) h.kill('SIGKILL');
    }
  });

  it('a staging agent cannot publish as prod: the server refuses and nothing reaches the stream', async () => {
    const staging = await natsAs(nats, 'staging');
    const statusErrors: Error[] = [];
    void (async () => {
      for await (const s of staging.status()) if (s.type === 'error') statusErrors.push(s.error);
    })();
    const before = (await jsm.streams.info('RESULTS')).state.messages;
    staging.publish('bulkhead.results.prod.x', JSON.stringify({ forged: true }));
    await staging.flush();
    const refused = await waitFor('a permissions violation status', () => statusErrors.find((e) => e instanceof PermissionViolationError));
    expect(refused).toMatchObject({ operation: 'publish', subject: 'bulkhead.results.prod.x' });
    // With an ack requested the refusal is an error of the publish itself.
    const js = jetstream(staging);
    const err = await js.publish('bulkhead.results.prod.x', 'forged', { msgID: 'forged-1', timeout: 1000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RequestError);
    expect((err as Error).cause).toBeInstanceOf(PermissionViolationError);
    // The connection survives: its own subject still works.
    const ack = await js.publish('bulkhead.results.staging.perm', 'ok', { msgID: 'perm-ok-1', timeout: 1000 });
    expect(ack.stream).toBe('RESULTS');
    expect((await jsm.streams.info('RESULTS')).state.messages).toBe(before + 1);
    expect(await jsm.streams.getMessage('RESULTS', { last_by_subj: 'bulkhead.results.prod.x' }).catch(() => null)).toBeNull();
    await staging.close();

    // An agent started with another environment's credentials says so loudly, keeps its results and retries.
    const { agent: misconfigured, lines } = await startAgent('perm1', nats, { user: 'prod' });
    const loud = await waitFor('the misconfiguration logged', () => lines.find((l) => l.msg.startsWith('NATS refused our own results subject')));
    expect(loud).toMatchObject({ level: 'error', fields: { kind: 'permission', subject: 'bulkhead.results.staging.perm1' } });
    expect(lines.some((l) => l.level === 'error' && l.msg.startsWith('NATS refused: permissions violation'))).toBe(true);
    expect(misconfigured.outbox.pending).toBeGreaterThan(0);
    await misconfigured.stop();
    expect(await storedResults(jsm, 'bulkhead.results.staging.perm1')).toEqual([]);

    // The agent's link classifies it as a permission failure.
    const { log } = recorder();
    const link = NatsLink.start({ url: nats.url, name: 'perm-test', log, credentials: { kind: 'user-password', user: 'agent-staging', password: nats.passwords.staging } });
    await link.whenConnected(AbortSignal.timeout(5000));
    const result = await link.publishAcked('bulkhead.results.prod.x', 'forged', 'forged-2', 1000);
    expect(result).toMatchObject({ ok: false, kind: 'permission' });
    await link.close();
  });

  it('answers a run request with RunAccepted and tags that cycle\'s batches with the request id; malformed requests are dropped', async () => {
    const { agent, lines } = await startAgent('run1', nats);
    const auditor = await natsAs(nats, 'auditor');
    try {
      await waitFor('the agent connected', () => lines.some((l) => l.msg === 'connected to NATS'));
      auditor.publish('bulkhead.run.staging', 'not json {');
      auditor.publish('bulkhead.run.staging', JSON.stringify({ v: 1, type: 'run' }));
      auditor.publish('bulkhead.run.staging', JSON.stringify({ v: 2, type: 'run', requestId: 'x' }));
      await auditor.flush();
      await waitFor('three dropped requests', () => agent.invalidRequests === 3);
      const reasons = lines.filter((l) => l.msg === 'run request dropped').map((l) => l.fields?.reason);
      expect(reasons).toEqual(['not-json', 'schema', 'schema']);

      const reply = await auditor.request('bulkhead.run.staging', JSON.stringify({ v: 1, type: 'run', requestId: 'audit-42' }), { timeout: 2000 });
      const accepted = RunAccepted.parse(reply.json());
      expect(accepted).toMatchObject({ env: 'staging', agent: 'run1', requestId: 'audit-42', planSha256: agent.planSha256 });
      expect(accepted.cycleId).toMatch(new RegExp(`^run1-${agent.bootId}-\\d+$`));
      const tagged = await waitFor('the requested cycle in the stream', async () => {
        const s = await storedResults(jsm, 'bulkhead.results.staging.run1');
        return s.find((x) => x.batch.cycle.id === accepted.cycleId);
      });
      expect(tagged.batch.cycle.requestId).toBe('audit-42');
      expect(agent.invalidRequests).toBe(3);
    } finally {
      await auditor.close();
      await agent.stop();
    }
  });

  it('a 60 s NATS outage loses nothing: every cycle\'s batches land exactly once, in order, after the restart', { timeout: 150_000 }, async () => {
    const server = await startNats();
    try {
      const c = await natsAs(server, 'controller');
      const m = await jetstreamManager(c);
      await createResultsStream(m);
      const subject = 'bulkhead.results.staging.outage';
      const { agent, lines } = await startAgent('outage', server);
      await waitFor('two cycles stored before the outage', async () => (await storedResults(m, subject)).length >= 2);
      await c.close();

      await server.kill();
      const cyclesAtKill = lines.filter((l) => l.msg === 'cycle done').length;
      await new Promise((r) => setTimeout(r, 60_000));
      const cyclesDuringOutage = lines.filter((l) => l.msg === 'cycle done').length - cyclesAtKill;
      expect(cyclesDuringOutage).toBeGreaterThanOrEqual(50);
      expect(agent.outbox.pending).toBeGreaterThanOrEqual(50);
      expect(lines.some((l) => l.msg.startsWith('disconnected from NATS'))).toBe(true);

      await server.start();
      await waitFor('the outbox to empty after the restart', () => agent.outbox.pending === 0, 30_000);
      await agent.stop();
      const lastCycle = Math.max(...lines.filter((l) => l.msg === 'cycle done').map((l) => cycleNumber(String(l.fields?.cycle))));

      const c2 = await natsAs(server, 'controller');
      const stored = await storedResults(await jetstreamManager(c2), subject);
      await c2.close();
      const ids = stored.map((s) => s.batch.id);
      expect(new Set(ids).size).toBe(ids.length); // no duplicates
      expect(stored.every((s) => s.msgId === s.batch.id)).toBe(true);
      // Contiguous cycles 1..last, in order, each complete (one chunk each here).
      expect(stored.map((s) => cycleNumber(s.batch.cycle.id))).toEqual(Array.from({ length: lastCycle }, (_, i) => i + 1));
      expect(stored.every((s) => s.batch.cycle.chunks === 1)).toBe(true);
      expect(agent.outbox.dropped).toBe(0);
    } finally {
      await server.stop();
    }
  });

  it('with --outbox-max 5 an outage drops the oldest results, counts them, and the next heartbeat reports it', { timeout: 60_000 }, async () => {
    const server = await startNats();
    let c: NatsConnection | undefined;
    try {
      c = await natsAs(server, 'controller');
      await createResultsStream(await jetstreamManager(c));
      const subject = 'bulkhead.results.staging.bound';
      const { agent, lines } = await startAgent('bound', server, { outboxMax: 5, schedule: '{ interval: 400ms, timeout: 200ms, attempts: 1 }' });
      await waitFor('a first cycle stored', async () => (await storedResults(await jetstreamManager(c!), subject)).length >= 1);
      // Subscriptions come back by themselves after the restart; heartbeats sent while the server is down are lost.
      const beats: Heartbeat[] = [];
      c.subscribe('bulkhead.heartbeat.staging.bound', { callback: (_e, msg) => void beats.push(Heartbeat.parse(msg.json())) });
      await c.flush();
      await server.kill();
      await waitFor('at least three results dropped', () => agent.outbox.dropped >= 3, 20_000);
      await agent.outbox.settled();
      expect(agent.outbox.pending).toBe(5);
      expect(lines.some((l) => l.level === 'warn' && l.msg.startsWith('outbox: dropped'))).toBe(true);
      expect(beats.every((b) => b.outbox.dropped === 0)).toBe(true);

      await server.start();
      const beat = await waitFor('a heartbeat reporting drops', () => beats.find((b) => b.outbox.dropped > 0), 15_000);
      expect(beat.outbox.dropped).toBeGreaterThanOrEqual(3);
      await waitFor('the outbox to empty', () => agent.outbox.pending === 0, 15_000);
      await agent.stop();
      const dropped = agent.outbox.dropped;
      const lastCycle = Math.max(...lines.filter((l) => l.msg === 'cycle done').map((l) => cycleNumber(String(l.fields?.cycle))));

      // The dropped cycles are one block of the oldest pending ones: the five newest before the restart, and all later, made it.
      const numbers = (await storedResults(await jetstreamManager(c), subject)).map((s) => cycleNumber(s.batch.cycle.id));
      expect(numbers).toEqual([...numbers].sort((a, b) => a - b));
      const missing = Array.from({ length: lastCycle }, (_, i) => i + 1).filter((n) => !numbers.includes(n));
      expect(missing.length).toBe(dropped);
      expect(missing).toEqual(Array.from({ length: dropped }, (_, i) => missing[0]! + i));
      expect(lastCycle - missing.at(-1)!).toBeGreaterThanOrEqual(5);
    } finally {
      await c?.close();
      await server.stop();
    }
  });

  describe('the real CLI (dist/cli/bulkhead.js)', () => {
    const bin = join(root, 'dist/cli/bulkhead.js');

    function spawnAgent(args: string[]): { child: ChildProcess; lines: LogLine[]; exited: Promise<number | null> } {
      const child = spawn(process.execPath, [bin, 'agent', ...args], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
      const lines: LogLine[] = [];
      let buffered = '';
      child.stderr!.on('data', (d: Buffer) => {
        buffered += d.toString();
        let nl;
        while ((nl = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, nl);
          buffered = buffered.slice(nl + 1);
          try {
            const { level, msg, ...fields } = JSON.parse(line) as Record<string, unknown>;
            lines.push({ level: String(level), msg: String(msg), fields });
          } catch {
            lines.push({ level: 'raw', msg: line });
          }
        }
      });
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      return { child, lines, exited };
    }

    beforeAll(() => {
      if (!existsSync(bin)) throw new Error(`${bin} is missing: run "make build" (make test does it)`);
    });

    it('exits 3 for usage and plan errors at start', async () => {
      const planPath = join(dir, 'cli-usage.yaml');
      writeFileSync(planPath, planText(controlPort, refusedPort));
      const cases: string[][] = [
        ['--plan', planPath, '--nats', nats.url], // no --env
        ['--env', 'qa', '--plan', planPath, '--nats', nats.url], // env not in the plan
        ['--env', 'staging', '--plan', join(dir, 'missing.yaml'), '--nats', nats.url],
        ['--env', 'staging', '--plan', planPath, '--nats', nats.url, '--outbox-max', '0'],
        ['--env', 'staging', '--plan', planPath, '--nats', nats.url, '--bogus'],
      ];
      for (const args of cases) {
        const { exited, child } = spawnAgent(args);
        const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
        expect(await exited, args.join(' ')).toBe(3);
        clearTimeout(timer);
      }
    });

    it('SIGHUP with a broken plan keeps the last good plan; a good one is taken; SIGTERM exits 0 promptly', { timeout: 40_000 }, async () => {
      const planPath = join(dir, 'cli.yaml');
      const good = planText(controlPort, refusedPort);
      writeFileSync(planPath, good);
      const goodSha = createHash('sha256').update(good).digest('hex');
      const beats: Heartbeat[] = [];
      const sub = ctl.subscribe('bulkhead.heartbeat.staging.cli1', { callback: (_e, m) => void beats.push(Heartbeat.parse(m.json())) });
      await ctl.flush();
      const { child, lines, exited } = spawnAgent([
        '--env', 'staging', '--plan', planPath, '--nats', nats.url, '--name', 'cli1',
        '--nats-creds', nats.credsFile('staging'), '--state-dir', join(dir, 'state-cli1'),
      ]);
      try {
        await waitFor('a heartbeat with the good plan', () => beats.some((b) => b.planSha256 === goodSha && b.controls !== null), 15_000);

        writeFileSync(planPath, `${good}\nbogus: true\ntargets: nope\n`);
        child.kill('SIGHUP');
        await waitFor('the reload refused', () => lines.some((l) => l.msg === 'plan reload failed: keeping the last good plan'));
        const problems = lines.filter((l) => l.msg === 'plan reload: invalid plan');
        expect(problems.length).toBeGreaterThanOrEqual(1);
        expect(problems.every((l) => l.level === 'error' && String(l.fields?.problem).startsWith(planPath))).toBe(true);
        const after = beats.length;
        await waitFor('two more heartbeats', () => beats.length >= after + 2, 5000);
        expect(beats.slice(after).every((b) => b.planSha256 === goodSha)).toBe(true);

        const changed = good.replace('interval: 1s', 'interval: 2s');
        writeFileSync(planPath, changed);
        child.kill('SIGHUP');
        const changedSha = createHash('sha256').update(changed).digest('hex');
        const newer = await waitFor('a heartbeat with the new plan', () => beats.find((b) => b.planSha256 === changedSha), 5000);
        expect(newer.intervalMs).toBe(2000);

        const t0 = Date.now();
        child.kill('SIGTERM');
        expect(await exited).toBe(0);
        expect(Date.now() - t0).toBeLessThan(4000);
        expect(lines.some((l) => l.msg === 'stopped')).toBe(true);
        expect(lines.filter((l) => l.level === 'raw')).toEqual([]);
      } finally {
        sub.unsubscribe();
        if (child.exitCode === null) child.kill('SIGKILL');
      }
    });
  });
});

describe('result batches', () => {
  const base = { env: 'staging', agent: 'a1', cycleId: 'a1-0badf00d-7', startedAt: '2026-01-01T00:00:00.000Z', finishedAt: '2026-01-01T00:00:01.000Z', planSha256: 'a'.repeat(64), controls: { total: 1, failed: [] } };
  const observation = (i: number, detail = ''): Observation => ({
    target: `t${i}`,
    env: 'prod',
    from: 'staging',
    probe: 'tcp',
    address: '127.0.0.1',
    port: 9,
    outcome: 'refused',
    layer: 'tcp',
    evidence: { errno: 'ECONNREFUSED', ...(detail ? { detail, host: detail, localAddress: detail, remoteAddress: detail } : {}) },
    timings: { totalMs: 1 },
    attempts: 1,
    at: '2026-01-01T00:00:00.000Z',
  });

  it('splits by count into chunks of at most 400, ids <cycle>.<chunk>, in order', () => {
    const { log, lines } = recorder();
    const all = Array.from({ length: 900 }, (_, i) => observation(i));
    const batches = buildBatches(base, all, log).map((b) => ({ id: b.id, batch: ResultBatch.parse(JSON.parse(b.payload)) }));
    expect(batches.map((b) => [b.id, b.batch.cycle.chunk, b.batch.cycle.chunks, b.batch.observations.length])).toEqual([
      ['a1-0badf00d-7.0', 0, 3, 400],
      ['a1-0badf00d-7.1', 1, 3, 400],
      ['a1-0badf00d-7.2', 2, 3, 100],
    ]);
    expect(batches.flatMap((b) => b.batch.observations.map((o) => o.target))).toEqual(all.map((o) => o.target));
    expect(lines).toEqual([]);
  });

  it('splits further by size so that no message exceeds the cap', () => {
    const { log } = recorder();
    const all = Array.from({ length: 400 }, (_, i) => observation(i, 'x'.repeat(2000)));
    const batches = buildBatches({ ...base, requestId: 'r1' }, all, log);
    expect(batches.length).toBeGreaterThan(3);
    for (const b of batches) expect(Buffer.byteLength(b.payload)).toBeLessThanOrEqual(MAX_MESSAGE_BYTES - 16 * 1024);
    const parsed = batches.map((b) => ResultBatch.parse(JSON.parse(b.payload)));
    expect(parsed.map((p) => p.cycle.chunk)).toEqual(parsed.map((_, i) => i));
    expect(parsed.every((p) => p.cycle.chunks === batches.length && p.cycle.requestId === 'r1')).toBe(true);
    expect(parsed.flatMap((p) => p.observations.map((o) => o.target))).toEqual(all.map((o) => o.target));
  });

  it('an empty cycle still sends one batch; an invalid batch is never emitted', () => {
    const { log, lines } = recorder();
    expect(buildBatches(base, [], log).map((b) => b.id)).toEqual(['a1-0badf00d-7.0']);
    const broken = { ...observation(1), outcome: 'wide-open' } as unknown as Observation;
    expect(buildBatches(base, [broken], log)).toEqual([]);
    expect(lines.some((l) => l.level === 'error' && l.msg.startsWith('bug: invalid result batch'))).toBe(true);
  });
});

describe.skipIf(skip ?? unavailable('openssl', findExecutable('openssl') === undefined, 'apt-get install openssl'))('TLS with --nats-ca and nkey credentials', () => {
  let dir: string;
  let port: number;
  let server: ChildProcess;
  const user = nkeys.createUser();
  const seed = new TextDecoder().decode(user.getSeed());

  /** A self-signed certificate whose only name is the IP address 127.0.0.1. */
  function ipCert(name: string): { cert: string; key: string } {
    const cert = join(dir, `${name}.pem`);
    const key = join(dir, `${name}.key`);
    execFileSync(findExecutable('openssl')!, ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${name}`, '-days', '2',
      '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', key, '-out', cert], { stdio: 'ignore', timeout: 20_000 });
    return { cert, key };
  }

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'bulkhead-agent-tls-'));
    const { cert, key } = ipCert('nats-test');
    port = await freePort();
    const conf = join(dir, 'nats.conf');
    writeFileSync(conf, `listen: 127.0.0.1:${port}\ntls { cert_file: "${cert}", key_file: "${key}" }\nauthorization { users: [ { nkey: "${user.getPublicKey()}" } ] }\n`);
    server = spawn(findExecutable('nats-server', ['/usr/sbin', '/usr/bin', '/usr/local/bin'])!, ['-c', conf], { stdio: 'ignore' });
    await waitFor('nats-server with TLS to listen', () =>
      new Promise<boolean>((resolve) => {
        const socket = net.connect({ host: '127.0.0.1', port });
        socket.once('connect', () => (socket.destroy(), resolve(true)));
        socket.once('error', () => (socket.destroy(), resolve(false)));
      }),
    );
  });
  afterAll(async () => {
    if (server && server.exitCode === null) {
      const exited = new Promise((r) => server.once('exit', r));
      server.kill('SIGTERM');
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it('connects over TLS verified against the CA file, the certificate checked against the IP dialled, with an nkey seed', async () => {
    const { log } = recorder();
    const link = NatsLink.start({ url: `nats://127.0.0.1:${port}`, name: 'tls-test', log, caFile: join(dir, 'nats-test.pem'), credentials: parseNatsCredentials(`${seed}\n`, 'seed') });
    try {
      expect(await link.whenConnected(AbortSignal.timeout(5000))).toBe(true);
    } finally {
      await link.close();
    }
  });

  it('a wrong CA or a wrong key never connects, and says why in the log', async () => {
    ipCert('other');
    const cases = [
      { caFile: join(dir, 'other.pem'), credentials: parseNatsCredentials(seed, 'seed') },
      { caFile: join(dir, 'nats-test.pem'), credentials: parseNatsCredentials(new TextDecoder().decode(nkeys.createUser().getSeed()), 'seed') },
    ];
    const errors: unknown[] = [];
    for (const c of cases) {
      const { log, lines } = recorder();
      const link = NatsLink.start({ url: `nats://127.0.0.1:${port}`, name: 'tls-test', log, ...c });
      try {
        await waitFor('a connection error in the log', () => lines.find((l) => l.msg.startsWith('cannot connect to NATS')), 5000);
        expect(link.connected).toBe(false);
        const line = lines.find((l) => l.msg.startsWith('cannot connect to NATS'))!;
        expect(line.level).toBe('error');
        errors.push(line.fields?.error);
      } finally {
        await link.close();
      }
    }
    expect(errors[0]).toMatchObject({ code: 'DEPTH_ZERO_SELF_SIGNED_CERT' });
    expect(errors[1]).toMatchObject({ name: 'AuthorizationError' });
  });
});

describe('NATS credentials files', () => {
  const seed = new TextDecoder().decode(nkeys.createUser().getSeed());
  const jwt = 'eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.eyJzdWIiOiJVQUJDIn0.c2lnbmF0dXJl';
  const creds = `-----BEGIN NATS USER JWT-----\n${jwt}\n------END NATS USER JWT------\n\n************************* IMPORTANT *************************\nNKEY Seed printed below can be used to sign and prove identity.\n\n-----BEGIN USER NKEY SEED-----\n${seed}\n------END USER NKEY SEED------\n\n*************************************************************\n`;

  it.each([
    ['user:password', 'agent-staging:s3cr:et with spaces\n', { kind: 'user-password', user: 'agent-staging', password: 's3cr:et with spaces' }],
    ['user:password with a comment', '# staging agent\nagent-prod:pw\r\n', { kind: 'user-password', user: 'agent-prod', password: 'pw' }],
    ['nkey seed', `${seed}\n`, { kind: 'nkey', seed }],
    ['.creds file', creds, { kind: 'creds', jwt, seed }],
  ])('parses %s', (_name, text, expected) => {
    expect(parseNatsCredentials(text, 'creds.txt')).toEqual(expected);
  });

  it.each([
    ['empty', '', 'creds.txt: expected one line (user:password or an SU… nkey seed) or a .creds file, found 0 non-comment lines'],
    ['two lines', 'a:b\nc:d\n', 'creds.txt: expected one line (user:password or an SU… nkey seed) or a .creds file, found 2 non-comment lines'],
    ['no colon', 'justapassword', 'creds.txt: expected user:password or an SU… nkey seed'],
    ['empty password', 'agent-prod:', 'creds.txt: the password after "agent-prod:" is empty'],
    ['short seed', 'SUABC', 'creds.txt: the nkey seed is malformed (expected SU followed by 56 base32 characters)'],
    ['creds without seed', creds.replace(/-----BEGIN USER NKEY SEED-----[\s\S]*$/, ''), 'creds.txt: a .creds file needs a BEGIN USER NKEY SEED block'],
  ])('refuses %s without echoing the secret', (_name, text, message) => {
    let caught: unknown;
    try {
      parseNatsCredentials(text, 'creds.txt');
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(CredentialsError);
    expect((caught as Error).message).toBe(message);
  });
});

describe('agent name', () => {
  it.each([
    ['web-01.prod.example.com', 'web-01-prod-example-com'],
    ['WEB_01', 'web_01'],
    ['--odd..host--', 'odd-host'],
    ['', 'agent'],
    ['x'.repeat(80), 'x'.repeat(63)],
  ])('host %j becomes %j', (host, name) => {
    expect(defaultAgentName(host)).toBe(name);
  });
});
