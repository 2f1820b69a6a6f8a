// The fleet end to end through the real binaries: agents → nats-server (deploy/ config) → controller →
// PostgreSQL, the read API, `bulkhead audit --nats` with coverage gaps, and a 60 s NATS outage after
// which the controller's history has every cycle exactly once.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../helpers/free-port.js';
import { natsMissing, startNats, type NatsServer } from '../helpers/nats-server.js';
import { postgresMissing, startPostgres, type PostgresServer } from '../helpers/postgres-server.js';
import { until } from '../helpers/wait.js';

const ROOT = join(import.meta.dirname, '../..');
const CLI = join(ROOT, 'dist/cli/bulkhead.js');
const skip = natsMissing() ?? postgresMissing();

const children: ChildProcess[] = [];
function bulkhead(args: string[], name: string): ChildProcess {
  const child = spawn(process.execPath, [CLI, ...args], { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr!.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-20_000)));
  child.once('exit', (code, signal) => {
    if (code !== 0 && signal !== 'SIGTERM') console.error(`${name} exited ${code ?? signal}:\n${log.slice(-3000)}`);
  });
  children.push(child);
  return child;
}

function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { cwd: ROOT, timeout: 60_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? -1) : 0, stdout, stderr }),
    );
  });
}


describe.skipIf(skip)('the fleet, end to end', () => {
  let nats: NatsServer;
  let postgres: PostgresServer;
  let db: pg.Client;
  let dir: string;
  let api: string;
  let leak: net.Server;
  let planFile: string;

  beforeAll(async () => {
    if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run "make build" (make test does it)`);
    dir = mkdtempSync(join(tmpdir(), 'bulkhead-fleet-'));
    nats = await startNats();
    postgres = await startPostgres({ hba: 'local all all trust\nhost all all 127.0.0.1/32 trust\n' });
    const databaseUrl = `postgres://postgres@127.0.0.1:${postgres.port}/postgres`;
    db = new pg.Client({ connectionString: databaseUrl });
    await db.connect();

    // prod's database port is reachable from staging (a listener on loopback): the deliberate leak.
    leak = net.createServer((s) => s.destroy());
    await new Promise<void>((r) => leak.listen(0, '127.0.0.1', r));
    const leakPort = (leak.address() as net.AddressInfo).port;
    const closed = await freePort();
    planFile = join(dir, 'plan.yaml');
    writeFileSync(
      planFile,
      `version: 1
environments: { prod: {}, staging: {}, dev: {} }
targets:
  - { name: prod-db, env: prod, probe: tcp, host: 127.0.0.1, port: ${leakPort} }
  - { name: staging-web, env: staging, probe: tcp, host: 127.0.0.2, port: ${leakPort} }
  - { name: dev-db, env: dev, probe: tcp, host: 127.0.0.3, port: ${closed} }
schedule: { interval: 1s, jitter: 0, timeout: 300ms, attempts: 1, stagger: 100ms }
alerting: { resolve_after: 2 }
`,
    );
    const listen = `127.0.0.1:${await freePort()}`;
    api = `http://${listen}`;
    bulkhead(['controller', '--plan', planFile, '--nats', nats.url, '--nats-creds', nats.credsFile('controller'), '--database-url', databaseUrl, '--listen', listen], 'controller');
    await until('the controller API', 20_000, async () => ((await fetch(`${api}/healthz`)).ok ? true : undefined));
    for (const env of ['prod', 'staging'] as const) {
      bulkhead(
        ['agent', '--env', env, '--name', `${env}-1`, '--plan', planFile, '--nats', nats.url, '--nats-creds', nats.credsFile(env), '--state-dir', join(dir, `agent-${env}`)],
        `agent ${env}`,
      );
    }
  });

  afterAll(async () => {
    for (const child of children) child.kill('SIGTERM');
    await Promise.all(children.map((c) => (c.exitCode !== null || c.signalCode !== null ? undefined : new Promise((r) => c.once('exit', r)))));
    await db?.end();
    await new Promise((r) => leak?.close(r));
    await nats?.stop();
    await postgres?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('the first open observation of a denied path fires a violation, with one notification owed per route', async () => {
    const finding = await until('the violation', 20_000, async () => {
      const body = (await (await fetch(`${api}/v1/findings?status=firing`)).json()) as { findings: { key: string; kind: string; receivers: string[] }[] };
      return body.findings.find((f) => f.kind === 'violation');
    });
    expect(finding.key).toMatch(/^violation:staging→prod-db@127\.0\.0\.1:\d+$/);
    expect(finding.receivers).toEqual(['console']);
    const owed = await db.query(`SELECT id FROM bulkhead.outbox WHERE id LIKE $1`, [`${finding.key}#%`]);
    expect(owed.rows.map((r) => r.id)).toEqual([`${finding.key}#1:trigger:console`]);
    // prod sees staging's control target open too (on loopback there is no firewall): both directions leak
    const agents = (await (await fetch(`${api}/v1/agents`)).json()) as { agents: { key: string; silent: boolean }[] };
    expect(agents.agents.map((a) => a.key).sort()).toEqual(['prod/prod-1', 'staging/staging-1']);
  });

  it('bulkhead audit --nats gathers every live agent; an environment without one and a live agent that does not answer are coverage gaps', async () => {
    const audit = run(['audit', '--plan', planFile, '--nats', nats.url, '--nats-creds', nats.credsFile('auditor'), '--deadline', '5s', '--format', 'json']);
    // A dev agent that heartbeats (real dev credentials) but never answers run requests.
    const { connect, usernamePasswordAuthenticator } = await import('@nats-io/transport-node');
    const ghost = await connect({ servers: nats.url, authenticator: usernamePasswordAuthenticator('agent-dev', nats.passwords.dev) });
    await new Promise((r) => setTimeout(r, 1500));
    const heartbeat = {
      v: 1, type: 'heartbeat', env: 'dev', agent: 'ghost-1', version: '0.1.0', planSha256: 'a'.repeat(64), at: new Date().toISOString(),
      intervalMs: 1000, controls: null, lastCycleAt: null, outbox: { pending: 0, dropped: 0 },
    };
    ghost.publish('bulkhead.heartbeat.dev.ghost-1', JSON.stringify(heartbeat));
    await ghost.flush();
    const r = await audit;
    await ghost.close();
    expect(r.stderr).toBe('');
    expect(r.code).toBe(1); // violations win over gaps
    const report = JSON.parse(r.stdout);
    expect(report.from).toBe('fleet');
    expect(report.agents.map((a: { agent: string }) => a.agent).sort()).toEqual(['prod-1', 'staging-1']);
    expect(report.coverageGaps).toEqual([
      { env: 'dev', agent: 'ghost-1', reason: 'no-answer' },
      { env: 'dev', agent: null, reason: 'no-agent' },
    ]);
    const froms = new Set(report.observations.map((o: { from: string }) => o.from));
    expect([...froms].sort()).toEqual(['prod', 'staging']);
    expect(report.observations.find((o: { from: string; target: string }) => o.from === 'staging' && o.target === 'prod-db').verdict).toBe('violation');
  });

  it('the auditor cannot publish results, and a staging agent cannot publish as prod', async () => {
    // Permissions are the server's job: check them with the real credentials through a client connection.
    const { connect, usernamePasswordAuthenticator } = await import('@nats-io/transport-node');
    const nc = await connect({ servers: nats.url, authenticator: usernamePasswordAuthenticator('agent-staging', nats.passwords.staging) });
    const errors: string[] = [];
    (async () => {
      for await (const s of nc.status()) if (s.type === 'error') errors.push(String(s.error));
    })().catch(() => undefined);
    nc.publish('bulkhead.results.prod.prod-1', '{}');
    await nc.flush();
    await until('the permission violation', 5_000, async () => (errors.length > 0 ? true : undefined));
    expect(errors[0]).toMatch(/Permissions Violation for Publish to "bulkhead\.results\.prod\.prod-1"/);
    await nc.close();
  });

  it('a 60 s NATS outage loses nothing: afterwards the history has every cycle of the staging agent exactly once', async () => {
    const cycleOf = (id: string) => /-(\d+)\.\d+#\d+$/.exec(id)?.[1];
    const cyclesIn = (rows: { id: string }[]) => [...new Set(rows.map((r) => Number(cycleOf(r.id))))].sort((a, b) => a - b);
    const before = cyclesIn((await db.query<{ id: string }>(`SELECT id FROM bulkhead.observations WHERE agent = 'staging-1'`)).rows);
    const lastBefore = before.at(-1) ?? 0;
    await nats.kill();
    const down = Date.now();
    await new Promise((r) => setTimeout(r, 60_000));
    await nats.start();
    const outageMs = Date.now() - down;
    // Cycles kept running during the outage (interval 1 s): their batches were in the agent's outbox.
    const rows = await until('the history to catch up', 60_000, async () => {
      const { rows } = await db.query<{ id: string }>(`SELECT id FROM bulkhead.observations WHERE agent = 'staging-1'`);
      const cycles = cyclesIn(rows);
      const contiguous = cycles.every((c, i) => i === 0 || c === cycles[i - 1]! + 1);
      // at least the cycles of the outage (one a second, less slack) have arrived, with no hole
      return (cycles.at(-1) ?? 0) >= lastBefore + Math.floor((outageMs / 1000) * 0.8) && contiguous ? rows : undefined;
    });
    const ids = rows.map((r) => r.id);
    expect(new Set(ids).size).toBe(ids.length); // no duplicate rows
    const cycles = [...new Set(ids.map((id) => Number(cycleOf(id))))].sort((a, b) => a - b);
    expect(cycles[0]).toBe(1);
    expect(cycles.at(-1)! - cycles[0]! + 1).toBe(cycles.length); // no gap: every cycle arrived
    // each cycle holds all three targets' observations: no partial batch either
    const perCycle = new Map<number, number>();
    for (const id of ids) perCycle.set(Number(cycleOf(id)), (perCycle.get(Number(cycleOf(id))) ?? 0) + 1);
    expect([...perCycle.values()].every((n) => n === 3)).toBe(true);
  }, 180_000);
});
