// One isolated world for the alerting fleet tests: its own nats-server (deploy/ config, per-user credentials), its
// own database on the shared PostgreSQL cluster, a fake PagerDuty and a fake Slack, the prod listener the test opens
// and closes (the leak), a staging listener that stays open (the agent's control), and the controller and staging
// agent as real processes of the compiled CLI.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { fakePagerDuty, fakeSlack, type Fake, type FakePagerDuty, type SlackMessage } from '../helpers/fake-receivers.js';
import { freePort } from '../helpers/free-port.js';
import { startNats, type NatsServer } from '../helpers/nats-server.js';
import type { PostgresServer } from '../helpers/postgres-server.js';
import { until } from '../helpers/wait.js';
import { api, spawnCli, tcpSwitch, type CliProcess, type Switch } from './harness.js';

/** The PagerDuty routing key the controller reads from its environment: 32 characters, as PagerDuty's. */
export const PD_KEY = `R${randomBytes(16).toString('hex').slice(0, 31)}`;

export interface Finding {
  key: string;
  kind: string;
  status: 'firing' | 'resolved';
  incident: number;
  receivers: string[];
}

export interface OutboxRow {
  id: string;
  receiver: string;
  outcome: string | null;
  reason: string | null;
  delivered: boolean;
}

/** One isolated world: nats-server, a database, fake PagerDuty and Slack, the prod leak and a staging control. */
export class Scenario {
  readonly dir = mkdtempSync(join(tmpdir(), 'bulkhead-alerting-'));
  readonly planFile = join(this.dir, 'plan.yaml');
  controller: CliProcess | undefined;
  /** Every controller process this scenario started, the killed ones too. */
  readonly controllers: CliProcess[] = [];
  agent: CliProcess | undefined;
  base = '';
  private constructor(
    readonly name: string,
    readonly nats: NatsServer,
    readonly db: pg.Client,
    readonly databaseUrl: string,
    readonly pd: FakePagerDuty,
    readonly slack: Fake<SlackMessage>,
    /** prod-db: the path that must stay closed (the test opens it). */
    readonly leak: Switch,
    /** staging's own control target: open, so the agent's blocked results count. */
    readonly control: Switch,
  ) {}

  static async create(name: string, postgres: PostgresServer, admin: pg.Client): Promise<Scenario> {
    await admin.query(`CREATE DATABASE ${name}`);
    const databaseUrl = `postgres://postgres@127.0.0.1:${postgres.port}/${name}`;
    const db = new pg.Client({ connectionString: databaseUrl });
    db.on('error', () => undefined);
    await db.connect();
    const [nats, pd, slack, leak, control] = await Promise.all([startNats(), fakePagerDuty(), fakeSlack(), tcpSwitch(), tcpSwitch()]);
    await control.open();
    const s = new Scenario(name, nats, db, databaseUrl, pd, slack, leak, control);
    s.writePlan();
    return s;
  }

  /** Routes violations and receiver-failed findings to both receivers; everything else (agent-silent …) nowhere. */
  writePlan(): void {
    writeFileSync(
      this.planFile,
      `version: 1
environments: { prod: {}, staging: {} }
targets:
  - { name: prod-db, env: prod, probe: tcp, host: 127.0.0.1, port: ${this.leak.port} }
  - { name: staging-web, env: staging, probe: tcp, host: 127.0.0.1, port: ${this.control.port} }
schedule: { interval: 2s, jitter: 0, timeout: 500ms, attempts: 1 }
alerting:
  open_threshold: 1
  resolve_after: 2
  group_wait: 1s
  group_interval: 1s
  receivers:
    - { name: pd, type: pagerduty, routing_key: { env: BULKHEAD_TEST_PD_KEY }, url: "${this.pd.url}" }
    - { name: slack, type: slack, url: { env: BULKHEAD_TEST_SLACK_URL } }
  routes:
    - { match: { kind: [violation, receiver-failed] }, receivers: [pd, slack] }
`,
    );
  }

  /** Starts the controller on a fresh port with the secrets in its environment; resolves once /healthz answers 200. */
  async startController(extraArgs: string[] = []): Promise<CliProcess> {
    const listen = `127.0.0.1:${await freePort()}`;
    this.base = `http://${listen}`;
    const child = spawnCli(
      ['controller', '--plan', this.planFile, '--nats', this.nats.url, '--nats-creds', this.nats.credsFile('controller'), '--database-url', this.databaseUrl, '--listen', listen, ...extraArgs],
      { BULKHEAD_TEST_PD_KEY: PD_KEY, BULKHEAD_TEST_SLACK_URL: this.slack.url },
    );
    this.controller = child;
    this.controllers.push(child);
    const exited = child.exited.then(({ code, signal }) => {
      throw new Error(`the controller exited (${code ?? signal}) during start:\n${child.output().slice(-3000)}`);
    });
    exited.catch(() => undefined);
    await Promise.race([until('the controller API', 20_000, async () => (await api(this.base, '/healthz')).status === 200), exited]);
    return child;
  }

  startAgent(): CliProcess {
    this.agent = spawnCli(
      ['agent', '--env', 'staging', '--name', 'staging-1', '--plan', this.planFile, '--nats', this.nats.url, '--nats-creds', this.nats.credsFile('staging'), '--state-dir', join(this.dir, 'agent')],
      {},
    );
    return this.agent;
  }

  async findings(): Promise<Finding[]> {
    return (await api(this.base, '/v1/findings')).body.findings as Finding[];
  }

  /** The violation of staging → prod-db once it has `status`. */
  async violation(status: Finding['status'], timeoutMs = 15_000): Promise<Finding> {
    return until(`the violation to be ${status}`, timeoutMs, async () => (await this.findings()).find((f) => f.kind === 'violation' && f.status === status));
  }

  async deliveries(): Promise<{ receivers: Record<string, Record<string, any>>; deadLetters: Record<string, any>[] }> {
    return (await api(this.base, '/v1/deliveries')).body;
  }

  async outbox(): Promise<OutboxRow[]> {
    const { rows } = await this.db.query<OutboxRow>('SELECT id, receiver, outcome, reason, delivered_at IS NOT NULL AS delivered FROM bulkhead.outbox ORDER BY id');
    return rows;
  }

  private closed = false;
  /** Stops the processes (SIGTERM by pid), the servers and the database client; safe to call twice. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.agent?.stop();
    await this.controller?.stop();
    await this.db.end().catch(() => undefined);
    await Promise.all([this.nats.stop(), this.pd.close(), this.slack.close(), this.leak.close(), this.control.close()]);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

