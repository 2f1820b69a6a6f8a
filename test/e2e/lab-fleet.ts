// The fleet inside the namespace lab: the real controller in mgmt (PostgreSQL in mgmt for its state and history, its
// API on the host link), one real agent per environment, and fake PagerDuty and Slack on the host end of the host
// link. The test process reaches only the host link: the controller's API, its database and NATS (all in mgmt), and
// the fakes it runs itself.
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect, usernamePasswordAuthenticator, type NatsConnection } from '@nats-io/transport-node';
import pg from 'pg';
import { fakePagerDuty, fakeSlack, type Fake, type FakePagerDuty, type PagerDutyEvent, type SlackMessage } from '../helpers/fake-receivers.js';
import { stopChild } from '../helpers/process.js';
import { sleep, until } from '../helpers/wait.js';
import { ENVS, PORT, type Env, type Lab, type LabProcess } from './lab.js';

/** The controller's API port on the mgmt end of the host link. */
const API_PORT = 9470;
const READY_MS = 20_000;
/** Where the plan finds the receivers' secrets: the controller's environment, never the plan. */
export const SECRET_ENV = { pagerduty: 'BULKHEAD_E2E_PD_KEY', slack: 'BULKHEAD_E2E_SLACK_URL' } as const;


/** What /v1/paths, /v1/findings and /v1/agents answer (controller/model.ts), as far as the test reads it. */
export interface PathView {
  key: string;
  from: string;
  env: string;
  target: string;
  probe: string;
  address: string | null;
  port: number | null;
  expectation: 'deny' | 'allow' | 'control';
  state: 'ok' | 'pending' | 'firing' | 'resolved';
  stale: boolean;
  last: { agent: string; at: string; outcome: string; layer: string; verdict: string; evidence: Record<string, any> };
}
export interface FindingView {
  key: string;
  kind: string;
  status: 'firing' | 'resolved';
  incident: number;
  stale: boolean;
  labels: Record<string, string>;
  details: Record<string, any>;
  receivers: string[];
}
export interface AgentView {
  key: string;
  silent: boolean;
  lastHeartbeatAt: string | null;
  lastResultsAt: string | null;
  controls: { total: number; failed: string[] } | null;
  outbox: { pending: number; dropped: number };
}

/** The controller, the agents, the fakes and the test's own clients of the database and NATS. */
export class LabFleet {
  readonly agents = {} as Record<Env, LabProcess>;
  /** The controller running now (the last one started). */
  controller: LabProcess | undefined;
  /** Every controller process started, killed ones included: their logs must never show a secret. */
  readonly controllers: LabProcess[] = [];
  readonly api: string;
  private readonly pdKey = `R${randomBytes(16).toString('hex').slice(0, 31)}`; // 32 characters, as PagerDuty's

  private constructor(
    readonly lab: Lab,
    readonly pd: FakePagerDuty,
    readonly slack: Fake<SlackMessage>,
    readonly databaseUrl: string,
    readonly db: pg.Client,
    readonly nc: NatsConnection,
  ) {
    this.api = `http://${lab.hostLink!.mgmt}:${API_PORT}`;
  }

  /** Starts the fakes on the host link, PostgreSQL in mgmt, and connects the test's database and NATS clients over the host link. */
  static async start(lab: Lab): Promise<LabFleet> {
    const link = lab.hostLink;
    if (link === undefined) throw new Error('the fleet needs the lab built with its host link');
    const [pd, slack] = await Promise.all([fakePagerDuty(link.host), fakeSlack(link.host)]);
    const closeFakes = () => Promise.all([pd.close(), slack.close()]);
    try {
      const database = await lab.startDatabase('mgmt', link.mgmt);
      // Accepting TCP is not accepting sessions yet ("the database system is starting up"): retry until a query works.
      const db = await until('the controller database to accept a session over the host link', READY_MS, async () => {
        const client = new pg.Client({ connectionString: database.url, connectionTimeoutMillis: 2_000 });
        client.on('error', () => undefined);
        try {
          await client.connect();
          await client.query('SELECT 1');
          return client;
        } catch (err) {
          await client.end().catch(() => undefined);
          throw err;
        }
      }, { context: () => database.process.log() });
      const nc = await connect({
        servers: `nats://${link.mgmt}:${PORT.nats}`,
        authenticator: usernamePasswordAuthenticator('controller', lab.nats.passwords.controller),
        timeout: 5_000,
      }).catch(async (err: unknown) => {
        await db.end().catch(() => undefined);
        throw err;
      });
      return new LabFleet(lab, pd, slack, database.url, db, nc);
    } catch (err) {
      await closeFakes();
      throw err;
    }
  }

  /** The `alerting` receivers section that points at the fakes, secrets by environment variable. */
  receivers(): Record<string, unknown>[] {
    return [
      { name: 'pd', type: 'pagerduty', routing_key: { env: SECRET_ENV.pagerduty }, url: this.pd.url },
      { name: 'slack', type: 'slack', url: { env: SECRET_ENV.slack } },
    ];
  }

  /** The routing key the controller was given. */
  get routingKey(): string {
    return this.pdKey;
  }

  /** Starts `bulkhead controller` in mgmt (PostgreSQL store, API on the host link) and waits until /healthz answers 200. */
  async startController(planPath: string): Promise<LabProcess> {
    const env = {
      ...process.env,
      BULKHEAD_DATABASE_URL: this.databaseUrl,
      [SECRET_ENV.pagerduty]: this.pdKey,
      [SECRET_ENV.slack]: this.slack.url,
    };
    const argv = ['controller', '--plan', planPath, '--nats', this.lab.nats.url, '--nats-creds', this.lab.nats.credsFile('controller'), '--listen', `${this.lab.hostLink!.mgmt}:${API_PORT}`];
    const proc = this.lab.spawn('mgmt', 'controller', argv, { env });
    this.controller = proc;
    this.controllers.push(proc);
    await until('the controller API to answer /healthz with 200', READY_MS, async () => {
      if (proc.child.exitCode !== null || proc.child.signalCode !== null) throw new Error(`the controller exited (${proc.child.exitCode ?? proc.child.signalCode}):\n${proc.log().slice(-3000)}`);
      const res = await fetch(`${this.api}/healthz`, { signal: AbortSignal.timeout(1_000) });
      await res.body?.cancel();
      return res.status === 200;
    }, { context: () => proc.log().slice(-3000) });
    return proc;
  }

  /** Starts `bulkhead agent` named `<env>-1` inside `env` with that environment's NATS credentials and its own state directory. */
  startAgent(env: Env, planPath: string): LabProcess {
    const argv = ['agent', '--env', env, '--name', `${env}-1`, '--plan', planPath, '--nats', this.lab.nats.url, '--nats-creds', this.lab.nats.credsFile(env), '--state-dir', join(this.lab.dir, `agent-${env}`)];
    this.agents[env] = this.lab.spawn(env, `${env} agent`, argv);
    return this.agents[env];
  }

  /** SIGKILLs one process by its pid and waits for its exit. */
  async kill(proc: LabProcess): Promise<number> {
    const pid = proc.child.pid!;
    await stopChild(proc.child, 'SIGKILL', 1_000);
    return pid;
  }

  /** GET one API endpoint over the host link; anything but 200 throws. */
  async get<T>(path: string): Promise<T> {
    const res = await fetch(`${this.api}${path}`, { signal: AbortSignal.timeout(5_000) });
    if (res.status !== 200) throw new Error(`GET ${path}: HTTP ${res.status}`);
    return (await res.json()) as T;
  }

  /** Every path the controller tracks (/v1/paths). */
  async paths(): Promise<PathView[]> {
    return (await this.get<{ paths: PathView[] }>('/v1/paths')).paths;
  }

  /** Every finding, firing or resolved (/v1/findings). */
  async findings(): Promise<FindingView[]> {
    return (await this.get<{ findings: FindingView[] }>('/v1/findings')).findings;
  }

  /** Every agent the controller has heard of (/v1/agents). */
  async agentViews(): Promise<AgentView[]> {
    return (await this.get<{ agents: AgentView[] }>('/v1/agents')).agents;
  }

  /** Every history row of one agent of `from` (the env column is the target's): its id (`<agent>-<boot>-<cycle>.<chunk>#<index>`) and stream sequence. */
  async history(from: Env, agent: string): Promise<{ id: string; seq: number }[]> {
    const { rows } = await this.db.query<{ id: string; seq: string }>('SELECT id, stream_seq AS seq FROM bulkhead.observations WHERE from_env = $1 AND agent = $2', [from, agent]);
    return rows.map((r) => ({ id: r.id, seq: Number(r.seq) }));
  }

  /** Messages the RESULTS stream holds on `subject`, duplicates included: what the agent's outbox actually published. */
  async streamMessages(subject: string): Promise<number> {
    const jsm = await jetstreamManager(this.nc);
    const info = await jsm.streams.info('RESULTS', { subjects_filter: subject });
    return info.state.subjects?.[subject] ?? 0;
  }

  /** Whether every notification owed has left: nothing in the outbox, nothing grouped, queued or retrying at any receiver. */
  async deliveriesSettled(): Promise<boolean> {
    const stats = await this.get<{ outbox: { pending: number } }>('/v1/stats');
    const { receivers } = await this.get<{ receivers: Record<string, { pending: number; queued: number; retrying: unknown }> }>('/v1/deliveries');
    return stats.outbox.pending === 0 && Object.values(receivers).every((r) => r.pending === 0 && r.queued === 0 && r.retrying === null);
  }

  /** The outbox rows of one finding: id and whether it was settled as delivered. */
  async outbox(findingKey: string): Promise<{ id: string; outcome: string | null }[]> {
    const { rows } = await this.db.query<{ id: string; outcome: string | null }>('SELECT id, outcome FROM bulkhead.outbox WHERE id LIKE $1 ORDER BY id', [`${findingKey}#%`]);
    return rows;
  }

  /** Every PagerDuty event accepted with this dedup key, in arrival order. */
  pdEvents(dedupKey: string): PagerDutyEvent[] {
    return this.pd.accepted.filter((e) => e.dedup_key === dedupKey);
  }

  /** Closes the test's clients and the fakes (the processes belong to the lab: destroy() stops them by pid). */
  async close(): Promise<void> {
    const closing = Promise.allSettled([this.db.end(), this.nc.close(), this.pd.close(), this.slack.close()]);
    await Promise.race([closing, sleep(5_000)]); // the lab's destroy() comes next whatever happens here
  }
}

/** Every environment's agent key as the controller names it. */
export const agentKeys = (): string[] => ENVS.map((env) => `${env}/${env}-1`);
