// Wiring of the controller process: plan, NATS, store, ingest loop and read API, started in that order and
// stopped in reverse. SIGHUP reloads the plan; a failed commit stops ingest and the process exits non-zero.
import type { NatsConnection } from '@nats-io/transport-node';
import { PlanError } from '../core/errors.js';
import { loadPlan, type LoadedPlan } from '../core/plan-load.js';
import { startApi, type ApiServer } from './api.js';
import { connectNats, Ingest, type IngestOptions, type Log } from './ingest.js';
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

/** A running controller. */
export class Controller {
  private natsConnected = true;

  private constructor(
    private loaded: LoadedPlan,
    private readonly options: ControllerOptions,
    private readonly log: Log,
    readonly nc: NatsConnection,
    readonly store: StateStore & { readonly kind: string },
    readonly state: ControllerState,
    readonly ingest: Ingest,
    private api: ApiServer | undefined,
  ) {}

  /** Starts everything; on failure closes what was opened and rethrows. */
  static async start(options: ControllerOptions, log: Log): Promise<Controller> {
    const loaded = await loadPlan(options.planPath);
    const nc = await connectNats({ url: options.natsUrl, credsFile: options.natsCreds, caFile: options.natsCa });
    const store =
      options.databaseUrl !== undefined ? new PostgresStore({ url: options.databaseUrl }) : new KvStore(nc, { ...(options.kvBucket ? { bucket: options.kvBucket } : {}) });
    let controller: Controller | undefined;
    try {
      const state = stateFromSnapshot(await store.load());
      const ingestOptions: IngestOptions = { minCommitIntervalMs: store.kind === 'kv' ? 250 : 0, ...options.ingest };
      const ingest = new Ingest({ nc, store, state, plan: () => controller!.loaded.plan, log }, ingestOptions);
      controller = new Controller(loaded, options, log, nc, store, state, ingest, undefined);
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
        },
        options.listen,
      );
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
      this.loaded = next;
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
    await this.ingest.stop();
    await this.api?.close();
    await this.store.close();
    await this.nc.drain().catch(() => this.nc.close());
    this.log('info', 'controller stopped', { checkpoint: this.state.checkpoint.streamSeq });
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
