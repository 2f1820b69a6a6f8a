// The PostgreSQL store: current state, the outbox, the checkpoint and the audit history, each commit (and each
// delivery commit) one statement and so one transaction. Rows go in as one JSON document per table
// (json_to_recordset), so a commit of thousands of observations is one round trip, not one INSERT per row.
import pg from 'pg';
import { BulkheadError } from '../core/errors.js';
import type { DeliveryCommit, Settlement, Silence, StormRecord } from './delivery/model.js';
import { migrate, SCHEMA } from './migrations.js';
import { emptyCounters, type AgentRecord, type Counters, type Finding, type Notification, type PathRecord } from './model.js';
import type { Commit, Snapshot, StateStore } from './store.js';

export interface PostgresStoreOptions {
  /** postgres://user:password@host:port/database */
  readonly url: string;
  /** How long load() waits for another controller to release the database (default 10 s). */
  readonly lockWaitMs?: number;
  /** Server-side limit per statement (default 60 s): every wait on the database is bounded. */
  readonly statementTimeoutMs?: number;
}

// pg_advisory_lock key: one controller per database (migrations.ts has the migrators' key).
const CONTROLLER_LOCK = 0x42484b31; // "BHK1"
const MAX_TIME_MS = Date.parse('9999-12-31T23:59:59.999Z');

// The shape agents send (toISOString): checked field by field, which is cheaper than parsing and re-printing.
const ISO_UTC = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.\d{1,6})?Z$/;
const DAYS = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
const daysIn = (year: number, month: number) => (month === 2 && year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0) ? 29 : DAYS[month - 1]!);

/** An ISO time PostgreSQL accepts, or null: agent-supplied times are not trusted to be valid timestamps. */
export function safeTime(value: string | null | undefined): string | null {
  if (value === null || value === undefined) return null;
  const m = ISO_UTC.exec(value);
  if (m) {
    const [year, month, day, hour, minute, second] = [Number(m[1]), Number(m[2]), Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6])];
    // Date.parse would roll 2025-02-30 over into March; an impossible date is no time at all.
    const valid = year >= 1 && month >= 1 && month <= 12 && day >= 1 && day <= daysIn(year, month) && hour <= 23 && minute <= 59 && second <= 59;
    return valid ? value : null;
  }
  // Other forms Date.parse understands (offsets, no milliseconds) are normalised to UTC.
  const ms = Date.parse(value);
  return Number.isFinite(ms) && ms >= Date.parse('0001-01-01T00:00:00Z') && ms <= MAX_TIME_MS ? new Date(ms).toISOString() : null;
}

// jsonb refuses \u0000 and lone surrogates, which JSON.stringify writes as \udXXX escapes. One such string in
// one agent's evidence must not make every later commit fail, so they become U+FFFD.
const UNSTORABLE = /(?<!\\)((?:\\\\)*)\\u(?:0000|d[89a-f][0-9a-f]{2})/gi;

/** JSON text PostgreSQL's json/jsonb input accepts. */
export function pgJson(value: unknown): string {
  const text = JSON.stringify(value);
  return text.includes('\\u') ? text.replace(UNSTORABLE, '$1\\ufffd') : text;
}

// Each table's rows arrive as one JSON array parameter; `$n` is filled in when the statement is assembled.
const insert = (table: string, columns: string, recordset: string, tail: string) => (param: number): string =>
  `INSERT INTO ${SCHEMA}.${table} (${columns}) SELECT ${columns} FROM json_to_recordset($${param}::json) AS x(${recordset}) ${tail}`;
// Ingest commits write only if the checkpoint moved (see commitStatement).
const upsert = (table: string, columns: string, recordset: string, conflict: string) =>
  insert(table, columns, recordset, `WHERE EXISTS (SELECT 1 FROM moved) ${conflict}`);

const SQL = {
  paths: upsert('paths', 'key, data', 'key text, data jsonb', 'ON CONFLICT (key) DO UPDATE SET data = excluded.data, updated_at = now()'),
  findings: upsert(
    'findings',
    'key, kind, status, data',
    'key text, kind text, status text, data jsonb',
    'ON CONFLICT (key) DO UPDATE SET kind = excluded.kind, status = excluded.status, data = excluded.data, updated_at = now()',
  ),
  agents: upsert('agents', 'key, data', 'key text, data jsonb', 'ON CONFLICT (key) DO UPDATE SET data = excluded.data, updated_at = now()'),
  outbox: upsert('outbox', 'id, receiver, data, created_at', 'id text, receiver text, data jsonb, created_at timestamptz', 'ON CONFLICT (id) DO NOTHING'),
  transitions: upsert(
    'transitions',
    'id, stream_seq, at, key, from_state, to_state, reason',
    'id text, stream_seq bigint, at timestamptz, key text, from_state text, to_state text, reason text',
    'ON CONFLICT (id) DO NOTHING',
  ),
  observations: upsert(
    'observations',
    'id, stream_seq, agent, env, from_env, target, address, port, outcome, verdict, at, data',
    'id text, stream_seq bigint, agent text, env text, from_env text, target text, address text, port integer, outcome text, verdict text, at timestamptz, data jsonb',
    'ON CONFLICT (id) DO NOTHING',
  ),
};

const DELIVERY_SQL = {
  // Only rows still owed: settling twice is a no-op, and the first outcome stands.
  settled: (param: number) =>
    `UPDATE ${SCHEMA}.outbox AS o SET delivered_at = x.at, outcome = x.outcome, reason = x.reason ` +
    `FROM json_to_recordset($${param}::json) AS x(id text, outcome text, reason text, at timestamptz) WHERE o.id = x.id AND o.delivered_at IS NULL`,
  // An id already owed or already settled is never revived.
  owed: insert(
    'outbox',
    'id, receiver, data, created_at, delivered_at, outcome, reason',
    'id text, receiver text, data jsonb, created_at timestamptz, delivered_at timestamptz, outcome text, reason text',
    'ON CONFLICT (id) DO NOTHING',
  ),
  storms: insert(
    'storms',
    'key, data, updated_at',
    'key text, data jsonb, updated_at timestamptz',
    'ON CONFLICT (key) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at',
  ),
  silences: insert('silences', 'id, data, ends_at', 'id text, data jsonb, ends_at timestamptz', 'ON CONFLICT (id) DO UPDATE SET data = excluded.data, ends_at = excluded.ends_at'),
};

/** One SQL statement with its parameters. */
export interface Statement {
  readonly text: string;
  readonly values: unknown[];
}

/** Keeps the last record per key: one statement may not upsert the same row twice. */
function lastByKey<T>(items: readonly T[], key: (item: T) => string): T[] {
  return [...new Map(items.map((item) => [key(item), item])).values()];
}

/**
 * The whole commit as ONE statement of data-modifying CTEs: atomic by itself, and a single round trip, so the
 * database works through it while the controller applies the next batch. Every write depends on `moved`, the
 * checkpoint update that only matches the revision this store last saw; `moved = 0` means another writer.
 * Built synchronously, so records mutated after commit() was called cannot leak in.
 */
export function commitStatement(commit: Commit, revision: number): Statement {
  const { effects, history, streamSeq } = commit;
  const now = new Date().toISOString();
  const values: unknown[] = [streamSeq, revision, pgJson(commit.counters)];
  const ctes = [
    `moved AS (UPDATE ${SCHEMA}.checkpoint SET stream_seq = $1, revision = revision + 1, committed_at = now() WHERE id = 1 AND revision = $2 RETURNING revision)`,
    `counted AS (UPDATE ${SCHEMA}.counters SET data = $3::jsonb WHERE id = 1 AND EXISTS (SELECT 1 FROM moved))`,
  ];
  const add = (name: string, sql: (param: number) => string, rows: unknown[]) => {
    if (rows.length === 0) return;
    values.push(pgJson(rows));
    ctes.push(`${name} AS (${sql(values.length)})`);
  };
  add('p', SQL.paths, lastByKey(effects.paths, (p) => p.key).map((p) => ({ key: p.key, data: p })));
  add('f', SQL.findings, lastByKey(effects.findings, (f) => f.key).map((f) => ({ key: f.key, kind: f.kind, status: f.status, data: f })));
  add('a', SQL.agents, lastByKey(effects.agents, (a) => a.key).map((a) => ({ key: a.key, data: a })));
  add(
    'n',
    SQL.outbox,
    lastByKey(effects.notifications, (n) => n.id).map((n) => ({ id: n.id, receiver: n.receiver, data: n, created_at: safeTime(n.createdAt) ?? now })),
  );
  // Transitions carry no id: their content is one, numbered when the same change happens twice in a commit.
  const seen = new Map<string, number>();
  add(
    't',
    SQL.transitions,
    effects.transitions.map((t) => {
      const base = `${t.key}|${t.at}|${t.from}>${t.to}`;
      const n = (seen.get(base) ?? 0) + 1;
      seen.set(base, n);
      return { id: n === 1 ? base : `${base}#${n}`, stream_seq: streamSeq, at: safeTime(t.at), key: t.key, from_state: t.from, to_state: t.to, reason: t.reason };
    }),
  );
  add(
    'o',
    SQL.observations,
    history.map((h) => {
      // What has a column of its own is not repeated in `data`: half the bytes to send and for jsonb to parse.
      const { target, env, from, address, port, outcome, at, ...rest } = h.observation;
      const time = safeTime(at);
      return {
        id: h.id,
        stream_seq: h.streamSeq,
        agent: h.agent,
        env,
        from_env: from,
        target,
        address,
        port,
        outcome,
        verdict: h.verdict,
        at: time,
        data: { ...rest, pathKey: h.pathKey, ...(time === null ? { at } : {}) },
      };
    }),
  );
  return { text: `WITH ${ctes.join(',\n')}\nSELECT count(*)::int AS moved FROM moved`, values };
}

/**
 * A delivery commit as ONE statement of data-modifying CTEs, or undefined when there is nothing to write. It does not
 * touch the checkpoint: its revision orders ingest commits, and the advisory lock already keeps a second controller
 * out. An id both owed and settled here is inserted settled (the CTEs all see the table as it was before).
 * Built synchronously, like commitStatement.
 */
export function deliveryStatement(commit: DeliveryCommit): Statement | undefined {
  const at = safeTime(commit.at) ?? new Date().toISOString();
  const settled = new Map(commit.settled.map((s) => [s.id, s]));
  const values: unknown[] = [];
  const ctes: string[] = [];
  const add = (name: string, sql: (param: number) => string, rows: unknown[]) => {
    if (rows.length === 0) return;
    values.push(pgJson(rows));
    ctes.push(`${name} AS (${sql(values.length)})`);
  };
  add('s', DELIVERY_SQL.settled, [...settled.values()].map((s) => ({ id: s.id, outcome: s.outcome, reason: s.reason, at })));
  add(
    'n',
    DELIVERY_SQL.owed,
    lastByKey(commit.owed, (n) => n.id).map((n) => {
      const s = settled.get(n.id);
      return {
        id: n.id,
        receiver: n.receiver,
        data: n,
        created_at: safeTime(n.createdAt) ?? at,
        delivered_at: s ? at : null,
        outcome: s?.outcome ?? null,
        reason: s?.reason ?? null,
      };
    }),
  );
  add('st', DELIVERY_SQL.storms, lastByKey(commit.storms, (r) => r.key).map((r) => ({ key: r.key, data: r, updated_at: safeTime(r.updatedAt) ?? at })));
  add(
    'si',
    DELIVERY_SQL.silences,
    lastByKey(commit.silences, (r) => r.id).map((r) => {
      const endsAt = safeTime(r.endsAt);
      if (endsAt === null) throw new BulkheadError('STORE_STATE', `silence ${r.id}: endsAt ${JSON.stringify(r.endsAt)} is not a time`);
      return { id: r.id, data: r, ends_at: endsAt };
    }),
  );
  if (ctes.length === 0) return undefined;
  return { text: `WITH ${ctes.join(',\n')}\nSELECT 1`, values };
}

/** A notification a receiver refused for good, as the API lists it. */
export interface DeadLetter {
  readonly id: string;
  readonly receiver: string;
  readonly outcome: Settlement;
  readonly reason: string | null;
  /** When it was settled as dead (ISO). */
  readonly at: string;
  readonly notification: Notification;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** State, outbox and history in PostgreSQL; one controller per database, enforced by a session advisory lock. */
export class PostgresStore implements StateStore {
  readonly kind = 'postgres';
  private readonly pool: pg.Pool;
  private readonly config: pg.ClientConfig;
  private lockClient: pg.Client | undefined;
  private lockLost: Error | undefined;
  private revision = 0;
  private loaded = false;
  private committing = false;
  // Delivery commits upsert whole records: they must land in the order they were made, not race on the pool.
  private deliveries: Promise<unknown> = Promise.resolve();

  constructor(private readonly options: PostgresStoreOptions) {
    const statementTimeoutMs = options.statementTimeoutMs ?? 60_000;
    this.config = {
      connectionString: options.url,
      connectionTimeoutMillis: 10_000,
      statement_timeout: statementTimeoutMs,
      idle_in_transaction_session_timeout: statementTimeoutMs,
      // A backstop for a server that stops answering altogether (statement_timeout needs a live server).
      query_timeout: statementTimeoutMs + 15_000,
      keepAlive: true,
      application_name: 'bulkhead-controller',
    };
    this.pool = new pg.Pool({ ...this.config, max: 2, idleTimeoutMillis: 30_000 });
    // An idle client's error (server restart) would otherwise be an uncaught 'error' event.
    this.pool.on('error', () => undefined);
  }

  /** Takes the controller lock, migrates, and reads the last committed snapshot. */
  async load(): Promise<Snapshot> {
    await this.acquireLock();
    const client = await this.pool.connect();
    try {
      await migrate(client);
      await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      const data = async <T>(sql: string) => (await client.query<{ data: T }>(sql)).rows.map((r) => r.data);
      const paths = await data<PathRecord>(`SELECT data FROM ${SCHEMA}.paths ORDER BY key`);
      const findings = await data<Finding>(`SELECT data FROM ${SCHEMA}.findings ORDER BY key`);
      const agents = await data<AgentRecord>(`SELECT data FROM ${SCHEMA}.agents ORDER BY key`);
      const outbox = await data<Notification>(`SELECT data FROM ${SCHEMA}.outbox WHERE delivered_at IS NULL ORDER BY created_at, id`);
      const checkpoint = await client.query<{ stream_seq: string; revision: string }>(`SELECT stream_seq, revision FROM ${SCHEMA}.checkpoint WHERE id = 1`);
      const counters = await data<Partial<Counters>>(`SELECT data FROM ${SCHEMA}.counters WHERE id = 1`);
      const silences = await data<Silence>(`SELECT data FROM ${SCHEMA}.silences ORDER BY id`);
      const storms = await data<StormRecord>(`SELECT data FROM ${SCHEMA}.storms ORDER BY key`);
      await client.query('COMMIT');
      const row = checkpoint.rows[0];
      if (row === undefined) throw new BulkheadError('STORE_SCHEMA', `${SCHEMA}.checkpoint has no row: the schema was modified by hand`);
      this.revision = Number(row.revision);
      this.loaded = true;
      return {
        paths,
        findings,
        agents,
        outbox,
        checkpoint: { streamSeq: Number(row.stream_seq) },
        counters: mergeCounters(counters[0]),
        delivery: { silences, storms },
      };
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      client.release();
    }
  }

  /** One statement (so one transaction): checkpoint with the revision check, counters, records, outbox, history. */
  async commit(commit: Commit): Promise<void> {
    this.assertWritable('commit()');
    // Each commit names the revision the previous one produced, so commits cannot overlap.
    if (this.committing) throw new BulkheadError('STORE_STATE', 'commit() while another commit is in flight');
    const statement = commitStatement(commit, this.revision);
    this.committing = true;
    try {
      const result = await this.pool.query<{ moved: number }>(statement.text, statement.values);
      if (result.rows[0]?.moved !== 1) {
        throw new BulkheadError('STORE_CONFLICT', `${SCHEMA}.checkpoint moved under us (expected revision ${this.revision}): another controller is writing to this database`);
      }
      this.revision++;
    } finally {
      this.committing = false;
    }
  }

  /** One statement (so one transaction): settled notifications, owed ones, storm and silence records. */
  async commitDelivery(commit: DeliveryCommit): Promise<void> {
    this.assertWritable('commitDelivery()');
    const statement = deliveryStatement(commit);
    if (!statement) return;
    const run = this.deliveries.then(() => this.pool.query(statement.text, statement.values));
    this.deliveries = run.catch(() => undefined);
    await run;
  }

  /** The newest dead letters first: notifications a receiver refused for good, with its answer. */
  async deadLetters(limit = 100): Promise<DeadLetter[]> {
    if (!this.loaded) throw new BulkheadError('STORE_STATE', 'deadLetters() before load()');
    const { rows } = await this.pool.query<{ id: string; receiver: string; outcome: Settlement; reason: string | null; at: Date; notification: Notification }>(
      `SELECT id, receiver, outcome, reason, delivered_at AS at, data AS notification FROM ${SCHEMA}.outbox ` +
        `WHERE outcome = 'dead' ORDER BY delivered_at DESC, id DESC LIMIT $1`,
      [Math.max(0, Math.floor(limit))],
    );
    return rows.map((r) => ({ ...r, at: r.at.toISOString() }));
  }

  async close(): Promise<void> {
    const lock = this.lockClient;
    this.lockClient = undefined;
    await this.pool.end().catch(() => undefined);
    // Ending the session releases the advisory lock.
    if (lock) await lock.end().catch(() => undefined);
  }

  private assertWritable(what: string): void {
    if (!this.loaded) throw new BulkheadError('STORE_STATE', `${what} before load()`);
    if (this.lockLost) throw new BulkheadError('STORE_LOCK_LOST', `lost the database lock (${this.lockLost.message}): another controller may be writing`);
  }

  private async acquireLock(): Promise<void> {
    if (this.lockClient) return;
    const client = new pg.Client(this.config);
    client.on('error', (err) => (this.lockLost ??= err));
    client.on('end', () => (this.lockLost ??= new Error('the lock session ended')));
    await client.connect();
    const deadline = Date.now() + (this.options.lockWaitMs ?? 10_000);
    try {
      for (;;) {
        const { rows } = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1) AS ok', [CONTROLLER_LOCK]);
        if (rows[0]?.ok) break;
        // A killed controller's session lingers until its backend notices the closed socket: wait a little.
        if (Date.now() >= deadline) {
          throw new BulkheadError('STORE_LOCKED', 'another controller holds this database (advisory lock): run one controller per database');
        }
        await sleep(200);
      }
    } catch (err) {
      await client.end().catch(() => undefined);
      throw err;
    }
    this.lockClient = client;
  }
}

function mergeCounters(stored: Partial<Counters> | undefined): Counters {
  const empty = emptyCounters();
  return { ...empty, ...stored, dropped: { ...empty.dropped, ...stored?.dropped } };
}
