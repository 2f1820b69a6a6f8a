// Wiring of the controller process: plan, NATS, store, ingest loop and read API, started in that order and
// stopped in reverse. SIGHUP reloads the plan; a failed commit stops ingest and the process exits non-zero.
import type { NatsConnection } from '@nats-io/transport-node';
import { PlanError } from '../core/errors.js';
import { loadPlan, type LoadedPlan } from '../core/plan-load.js';
import { startApi, type ApiServer } from './api.js';
import { systemClock, type Clock } from './delivery/clock.js';
import { Dispatcher } from './delivery/dispatcher.js';
import { httpPost } from './delivery/lane.js';
import { connectNats, Ingest, type IngestOptions, type Log } from './ingest.js';
import { applyReceiverFailed, applyReceiverWorks } from './lifecycle.js';
import { redact, resolveAlerting, secretsOf, type ReceiverRuntime, type WatchdogRuntime } from './receivers/config.js';
import { Watchdog } from './watchdog.js';
import type { ControllerState } from './model.js';
import type { Snapshot, StateStore } from './store.js';
import { KvStore } from './store-kv.js';
import { PostgresStore } from './store-postgres.js';

export interface ControllerOptions {
  readonly planPath: string;
  readonly natsUrl: string;
  readonly natsCreds?: string;
  readonly natsCa?: string;
  /** PostgreSQL; without it the state lives in JetStream KV (no history). */
  readonly databaseUrl?: string;
  readonly listen: { readonly host: string; readonly port: number };
  readonly ingest?: IngestOptions;
  readonly kvBucket?: string;
  /** Where the console receiver prints (default: stdout). */
  readonly print?: (line: string) => void;
  /** Writes to the API (silences) need this bearer token; without it they are accepted from loopback only. */
  readonly apiToken?: string;
  /** Where secret references of the form { env: NAME } are looked up (default: process.env). */
  readonly env?: NodeJS.ProcessEnv;
  /** The delivery side's clock (tests). */
  readonly clock?: Clock;
}

/** One JSON object per line on `stream`: easy to grep, easy to ship. */
export function jsonLog(stream: NodeJS.WritableStream): Log {
  return (level, msg, fields = {}) => {
    stream.write(`${JSON.stringify({ at: new Date().toISOString(), level, msg, ...fields })}\n`);
  };
}

/** The in-memory state a snapshot describes. */
export function stateFromSnapshot(s: Snapshot): ControllerState {
  return {
    paths: new Map(s.paths.map((p) => [p.key, p])),
    findings: new Map(s.findings.map((f) => [f.key, f])),
    agents: new Map(s.agents.map((a) => [a.key, a])),
    outbox: new Map(s.outbox.map((n) => [n.id, n])),
    checkpoint: { streamSeq: s.checkpoint.streamSeq },
    counters: structuredClone(s.counters),
  };
}

function redactDeep<T>(value: T, secrets: readonly string[]): T {
  if (typeof value === 'string') return redact(value, secrets) as T;
  if (Array.isArray(value)) return value.map((v) => redactDeep(v, secrets)) as T;
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, redactDeep(v, secrets)])) as T;
  }
  return value;
}

/** A running controller. */
export class Controller {
  private natsConnected = true;
  private dispatcher: Dispatcher | undefined;
  private watchdog: Watchdog | undefined;
  /** The secrets the log redacts; replaced in place when a reload brings new ones. */
  private secrets: string[] = [];

  private constructor(
    private loaded: LoadedPlan,
    private receivers: readonly ReceiverRuntime[],
    private readonly options: ControllerOptions,
    private readonly log: Log,
    readonly nc: NatsConnection,
    readonly store: StateStore & { readonly kind: string },
    readonly state: ControllerState,
    readonly ingest: Ingest,
    private api: ApiServer | undefined,
  ) {}

  /** Starts everything; on failure closes what was opened and rethrows. */
  static async start(options: ControllerOptions, rawLog: Log): Promise<Controller> {
    const loaded = await loadPlan(options.planPath);
    // Secrets are read now, so a missing one stops the start with the field named instead of failing at 3 a.m.
    const { receivers, watchdog } = resolveAlerting(loaded, options.env);
    // Whatever a library puts in an error message, a secret never reaches the log.
    const secrets = secretsOf(receivers, watchdog);
    const log: Log = (level, msg, fields) => rawLog(level, redact(msg, secrets), fields === undefined ? undefined : redactDeep(fields, secrets));
    const nc = await connectNats({ url: options.natsUrl, credsFile: options.natsCreds, caFile: options.natsCa });
    const store =
      options.databaseUrl !== undefined ? new PostgresStore({ url: options.databaseUrl }) : new KvStore(nc, { ...(options.kvBucket ? { bucket: options.kvBucket } : {}) });
    let controller: Controller | undefined;
    try {
      const snapshot = await store.load();
      const state = stateFromSnapshot(snapshot);
      const ingestOptions: IngestOptions = { minCommitIntervalMs: store.kind === 'kv' ? 250 : 0, ...options.ingest };
      const ingest = new Ingest(
        { nc, store, state, plan: () => controller!.loaded.plan, log, committed: (notifications) => controller?.dispatcher?.enqueue(notifications) },
        ingestOptions,
      );
      controller = new Controller(loaded, receivers, options, log, nc, store, state, ingest, undefined);
      const self = controller;
      self.secrets = secrets;
      self.dispatcher = new Dispatcher(
        {
          store,
          state,
          alerting: () => self.loaded.plan.alerting,
          receivers: () => self.receivers,
          clock: options.clock ?? systemClock,
          random: Math.random,
          log,
          post: httpPost,
          print: options.print ?? ((line) => void process.stdout.write(`${line}\n`)),
          receiverFailed: (receiver, reason) => ingest.submit((s, ctx) => applyReceiverFailed(s, receiver, reason, ctx)),
          receiverWorks: (receiver) => {
            if (state.findings.get(`receiver-failed:${receiver}`)?.status === 'firing') ingest.submit((s, ctx) => applyReceiverWorks(s, receiver, ctx));
          },
        },
        snapshot.delivery,
      );
      // What a previous run committed but never settled goes out first (after its group wait).
      self.dispatcher.resume();
      // Dead letters outlive the process that wrote them (PostgreSQL keeps them): the API lists them after a restart.
      if (store instanceof PostgresStore) {
        const dead = await store.deadLetters();
        self.dispatcher.remember(
          dead.map((d) => ({ id: d.id, receiver: d.receiver, at: d.at, reason: d.reason ?? '', finding: d.notification.findingKey, action: d.notification.action })),
        );
      }
      controller.watchConnection();
      await ingest.start();
      controller.api = await startApi(
        {
          state: () => state,
          plan: () => controller!.loaded,
          health: () => ({
            natsConnected: controller!.natsConnected,
            lastCommitAt: ingest.lastCommitAt,
            committedSeq: ingest.committedSeq,
            failure: ingest.failure?.message ?? null,
            store: store.kind,
          }),
          delivery: {
            snapshot: () => self.dispatcher!.snapshot(),
            get silences() {
              return self.dispatcher!.silences;
            },
            addSilence: (silence) => self.dispatcher!.addSilence(silence),
            expireSilence: (id) => self.dispatcher!.expireSilence(id),
            now: () => (options.clock ?? systemClock).now(),
          },
          ...(options.apiToken !== undefined ? { writeToken: options.apiToken } : {}),
        },
        options.listen,
      );
      if (watchdog) controller.startWatchdog(watchdog);
      log('info', 'controller started', {
        plan: loaded.path,
        planSha256: loaded.sha256,
        store: store.kind,
        checkpoint: state.checkpoint.streamSeq,
        paths: state.paths.size,
        listen: `${controller.api.host}:${controller.api.port}`,
      });
      return controller;
    } catch (err) {
      await controller?.ingest.stop().catch(() => undefined);
      await controller?.dispatcher?.stop().catch(() => undefined);
      await controller?.watchdog?.stop().catch(() => undefined);
      await store.close().catch(() => undefined);
      await nc.close().catch(() => undefined);
      throw err;
    }
  }

  get apiAddress(): { host: string; port: number } | undefined {
    return this.api ? { host: this.api.host, port: this.api.port } : undefined;
  }

  get plan(): LoadedPlan {
    return this.loaded;
  }

  /** Settles when ingest stops by itself (a failed commit); `ingest.failure` says why. */
  finished(): Promise<void> {
    return this.ingest.finished();
  }

  /** Reads the plan file again; an invalid plan is logged and the one in force kept. */
  async reloadPlan(): Promise<boolean> {
    try {
      const next = await loadPlan(this.options.planPath);
      const { receivers, watchdog } = resolveAlerting(next, this.options.env);
      this.secrets.push(...secretsOf(receivers, watchdog).filter((secret) => !this.secrets.includes(secret)));
      this.loaded = next;
      this.receivers = receivers;
      this.dispatcher?.reconfigure();
      if (watchdog && this.watchdog) this.watchdog.update(watchdog);
      else if (watchdog) this.startWatchdog(watchdog);
      else void this.watchdog?.stop().then(() => (this.watchdog = undefined));
      this.log('info', 'plan reloaded', { plan: next.path, planSha256: next.sha256 });
      return true;
    } catch (err) {
      const problems = err instanceof PlanError ? err.problems : [(err as Error).message];
      this.log('error', 'plan reload refused, keeping the plan in force', { planSha256: this.loaded.sha256, problems });
      return false;
    }
  }

  /** Stops consuming, lets the commit in progress finish, then closes the API, the store and NATS. */
  async stop(): Promise<void> {
    await this.watchdog?.stop();
    await this.ingest.stop();
    await this.dispatcher?.stop();
    await this.api?.close();
    await this.store.close();
    await this.nc.drain().catch(() => this.nc.close());
    this.log('info', 'controller stopped', { checkpoint: this.state.checkpoint.streamSeq });
  }

  private startWatchdog(runtime: WatchdogRuntime): void {
    const address = this.apiAddress;
    this.watchdog = new Watchdog(runtime, {
      clock: this.options.clock ?? systemClock,
      post: httpPost,
      log: this.log,
      healthy: () => this.natsConnected && this.ingest.failure === undefined,
      receivers: () => this.receivers,
      instance: address ? `${address.host}:${address.port}` : 'controller',
    });
    this.watchdog.start();
  }

  private watchConnection(): void {
    void (async () => {
      for await (const s of this.nc.status()) {
        if (s.type === 'disconnect') {
          this.natsConnected = false;
          this.log('warn', 'NATS disconnected');
        } else if (s.type === 'reconnect') {
          this.natsConnected = true;
          this.log('info', 'NATS reconnected');
          // Deliveries in flight during the outage are lost until ack_wait: consume again from the checkpoint now.
          this.ingest.requestResync();
        }
      }
    })().catch(() => undefined);
  }
}
