// The JetStream KV store, for small installs without a database: the whole snapshot is one JSON value,
// written with an expected revision so a second controller gets an error instead of overwriting the first.
// No history is kept here (use PostgreSQL for audit history), and the snapshot must fit in one NATS message.
import { JetStreamApiCodes, JetStreamApiError, StorageType } from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import { isDeepStrictEqual } from 'node:util';
import { BulkheadError } from '../core/errors.js';
import type { DeliveryCommit, Silence, StormRecord } from './delivery/model.js';
import { emptyCounters, emptyState, type AgentRecord, type Counters, type Finding, type Notification, type PathRecord } from './model.js';
import type { Commit, Snapshot, StateStore } from './store.js';

export const KV_BUCKET = 'bulkhead_controller';
const KEY = 'snapshot';
// Room for the message headers (expected-revision) and the protocol line around the value.
const HEADROOM_BYTES = 4096;

export interface KvStoreOptions {
  readonly bucket?: string;
  /** Overrides the server's max_payload as the size limit (tests). */
  readonly maxValueBytes?: number;
}

/**
 * What the value under `snapshot` holds. `v` lets a later version read (or refuse) an older layout; `storms` and
 * `silences` came later within v1 and are missing from documents written before them.
 */
interface KvDocument {
  readonly v: 1;
  readonly committedAt: string;
  readonly paths: PathRecord[];
  readonly findings: Finding[];
  readonly agents: AgentRecord[];
  readonly outbox: Notification[];
  readonly checkpoint: { streamSeq: number };
  readonly counters: Counters;
  readonly storms?: StormRecord[];
  readonly silences?: Silence[];
}

interface Maps {
  paths: Map<string, PathRecord>;
  findings: Map<string, Finding>;
  agents: Map<string, AgentRecord>;
  outbox: Map<string, Notification>;
  checkpoint: { streamSeq: number };
  counters: Counters;
  storms: Map<string, StormRecord>;
  silences: Map<string, Silence>;
}

const emptyMaps = (): Maps => ({ ...emptyState(), storms: new Map(), silences: new Map() });

/** State and outbox as one KV value; every write names the revision it replaces. */
export class KvStore implements StateStore {
  readonly kind = 'kv';
  private kv: KV | undefined;
  private revision = 0;
  private current: Maps = emptyMaps();
  // Commits and delivery commits both rewrite the one value: they must not race each other for the revision.
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly nc: NatsConnection,
    private readonly options: KvStoreOptions = {},
  ) {}

  get bucket(): string {
    return this.options.bucket ?? KV_BUCKET;
  }

  async load(): Promise<Snapshot> {
    this.kv = await new Kvm(this.nc).create(this.bucket, { history: 1, storage: StorageType.File });
    const entry = await this.kv.get(KEY);
    if (entry === null || entry.operation !== 'PUT') {
      this.revision = entry?.revision ?? 0;
      return structuredClone(toSnapshot(this.current));
    }
    let doc: KvDocument;
    try {
      doc = entry.json<KvDocument>();
    } catch (err) {
      throw new BulkheadError('STORE_SCHEMA', `KV bucket ${this.bucket}, key ${KEY}: not JSON (${(err as Error).message})`, { cause: err });
    }
    if (doc.v !== 1) throw new BulkheadError('STORE_SCHEMA', `KV bucket ${this.bucket}, key ${KEY}: unknown snapshot version ${String(doc.v)}`);
    const empty = emptyCounters();
    this.current = {
      paths: new Map(doc.paths.map((p) => [p.key, p])),
      findings: new Map(doc.findings.map((f) => [f.key, f])),
      agents: new Map(doc.agents.map((a) => [a.key, a])),
      outbox: new Map(doc.outbox.map((n) => [n.id, n])),
      checkpoint: { streamSeq: doc.checkpoint.streamSeq },
      counters: { ...empty, ...doc.counters, dropped: { ...empty.dropped, ...doc.counters.dropped } },
      storms: new Map((doc.storms ?? []).map((r) => [r.key, r])),
      silences: new Map((doc.silences ?? []).map((r) => [r.id, r])),
    };
    this.revision = entry.revision;
    // The caller's state mutates in place; the store keeps its own copy of what is committed.
    return structuredClone(toSnapshot(this.current));
  }

  /** Writes the snapshot with the commit applied; history is not kept in KV. */
  commit(commit: Commit): Promise<void> {
    // The write may wait behind another one while the caller goes on mutating its records: copy them now.
    const effects = structuredClone(commit.effects);
    const counters = structuredClone(commit.counters);
    return this.serially(async () => {
      const next: Maps = {
        ...this.current,
        paths: new Map(this.current.paths),
        findings: new Map(this.current.findings),
        agents: new Map(this.current.agents),
        outbox: new Map(this.current.outbox),
        checkpoint: { streamSeq: commit.streamSeq },
        counters,
      };
      for (const p of effects.paths) next.paths.set(p.key, p);
      for (const f of effects.findings) next.findings.set(f.key, f);
      for (const a of effects.agents) next.agents.set(a.key, a);
      for (const n of effects.notifications) if (n.deliveredAt === null) next.outbox.set(n.id, n);
      await this.write(next);
    });
  }

  /**
   * Settled notifications simply leave the snapshot (KV keeps no record of what was sent, so an owed id is added
   * unless present); storms and silences are upserted. Writes nothing when nothing changes.
   */
  commitDelivery(commit: DeliveryCommit): Promise<void> {
    const { settled, owed, storms, silences } = structuredClone(commit);
    return this.serially(async () => {
      const outbox = new Map(this.current.outbox);
      const stormMap = new Map(this.current.storms);
      const silenceMap = new Map(this.current.silences);
      const settledIds = new Set(settled.map((s) => s.id));
      let changed = false;
      const change = <K, V>(map: Map<K, V>, key: K, value: V) => {
        if (isDeepStrictEqual(map.get(key), value)) return;
        map.set(key, value);
        changed = true;
      };
      for (const id of settledIds) changed = outbox.delete(id) || changed;
      // An id both owed and settled in one commit ends settled, as in PostgreSQL.
      for (const n of owed) if (!outbox.has(n.id) && !settledIds.has(n.id)) change(outbox, n.id, n);
      for (const r of storms) change(stormMap, r.key, r);
      for (const r of silences) change(silenceMap, r.id, r);
      if (changed) await this.write({ ...this.current, outbox, storms: stormMap, silences: silenceMap });
    });
  }

  async close(): Promise<void> {
    await this.queue.catch(() => undefined);
  }

  private serially<T>(job: () => Promise<T>): Promise<T> {
    const run = this.queue.then(job, job);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async write(next: Maps): Promise<void> {
    const kv = this.kv;
    if (!kv) throw new BulkheadError('STORE_STATE', 'commit() before load()');
    const { delivery, ...state } = toSnapshot(next);
    const doc = { v: 1, committedAt: new Date().toISOString(), ...state, ...delivery } as KvDocument;
    const bytes = Buffer.from(JSON.stringify(doc));
    const limit = this.options.maxValueBytes ?? (this.nc.info?.max_payload ?? 1024 * 1024) - HEADROOM_BYTES;
    if (bytes.byteLength > limit) {
      throw new BulkheadError(
        'STORE_TOO_LARGE',
        `the controller state is ${bytes.byteLength} bytes, more than one NATS message can carry (${limit} bytes): ` +
          `${next.paths.size} paths, ${next.findings.size} findings, ${next.outbox.size} notifications owed. Use --database-url (PostgreSQL) for an install this size`,
      );
    }
    try {
      this.revision = this.revision === 0 ? await kv.create(KEY, bytes) : await kv.update(KEY, bytes, this.revision);
    } catch (err) {
      if (err instanceof JetStreamApiError && (err.code === JetStreamApiCodes.StreamWrongLastSequence || err.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown)) {
        throw new BulkheadError(
          'STORE_CONFLICT',
          `KV bucket ${this.bucket} was written by someone else since revision ${this.revision}: another controller is using it`,
          { cause: err },
        );
      }
      throw err;
    }
    this.current = next;
  }
}

function toSnapshot(m: Maps): Snapshot {
  return {
    paths: [...m.paths.values()],
    findings: [...m.findings.values()],
    agents: [...m.agents.values()],
    outbox: [...m.outbox.values()],
    checkpoint: { streamSeq: m.checkpoint.streamSeq },
    counters: m.counters,
    delivery: { silences: [...m.silences.values()], storms: [...m.storms.values()] },
  };
}
