// Both stores against real servers: what is committed is what loads back, a failed commit leaves nothing
// behind, history is idempotent, and a second writer is refused.
import pg from 'pg';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { workload } from '../../bench/workload.js';
import { applyResults } from '../../controller/lifecycle.js';
import { emptyState, type ControllerState, type HistoryRow } from '../../controller/model.js';
import type { Commit, Snapshot } from '../../controller/store.js';
import { KvStore } from '../../controller/store-kv.js';
import { pgJson, PostgresStore, safeTime } from '../../controller/store-postgres.js';
import { natsMissing, startNats, type NatsServer } from '../helpers/nats-server.js';
import { postgresMissing, startPostgres, type PostgresServer } from '../helpers/postgres-server.js';

const HBA = 'local all all trust\nhost all all 127.0.0.1/32 trust\n';
const w = workload({ targets: 6, addresses: 2, messages: 40, observationsPerMessage: 12, startMs: Date.parse('2026-11-22T12:00:00Z'), stepMs: 60_000, flappingShare: 0.5 });

/** Applies messages [from, to) to `state` and returns them as one commit, as the ingest loop would. */
function commitOf(state: ControllerState, from: number, to: number): Commit {
  const paths = new Map();
  const findings = new Map();
  const agents = new Map();
  const notifications = new Map();
  const transitions = [];
  const history: HistoryRow[] = [];
  for (let i = from; i < to; i++) {
    const { effects, history: h } = applyResults(state, w.message(i).batch, i + 1, { plan: w.plan.plan, now: new Date() });
    for (const p of effects.paths) paths.set(p.key, p);
    for (const f of effects.findings) findings.set(f.key, f);
    for (const a of effects.agents) agents.set(a.key, a);
    for (const n of effects.notifications) notifications.set(n.id, n);
    transitions.push(...effects.transitions);
    history.push(...h);
  }
  const effects = { paths: [...paths.values()], findings: [...findings.values()], agents: [...agents.values()], notifications: [...notifications.values()], transitions };
  return { streamSeq: state.checkpoint.streamSeq, effects, history, counters: structuredClone(state.counters) };
}

const byKey = <T extends { key?: string; id?: string }>(xs: readonly T[]) => [...xs].sort((a, b) => String(a.key ?? a.id).localeCompare(String(b.key ?? b.id)));

/** The state as a snapshot would show it, sorted for comparison. */
function expected(state: ControllerState): Snapshot {
  return {
    paths: byKey([...state.paths.values()]),
    findings: byKey([...state.findings.values()]),
    agents: byKey([...state.agents.values()]),
    outbox: byKey([...state.outbox.values()]),
    checkpoint: { ...state.checkpoint },
    counters: state.counters,
  };
}
const sorted = (s: Snapshot): Snapshot => ({ ...s, paths: byKey(s.paths), findings: byKey(s.findings), agents: byKey(s.agents), outbox: byKey(s.outbox) });

/** Expects a sorted, loaded snapshot to hold the paths, findings, agents and counters of `state`, at `streamSeq` (not the outbox). */
function expectLoaded(loaded: Snapshot, state: ControllerState, streamSeq: number): void {
  const want = expected(state);
  expect(loaded.paths).toEqual(want.paths);
  expect(loaded.findings).toEqual(want.findings);
  expect(loaded.agents).toEqual(want.agents);
  expect(loaded.checkpoint).toEqual({ streamSeq });
  expect(loaded.counters).toEqual(want.counters);
}

describe('values made safe for PostgreSQL', () => {
  it.each([
    ['2026-11-22T12:00:00.123Z', '2026-11-22T12:00:00.123Z'],
    ['2026-11-22T12:00:00Z', '2026-11-22T12:00:00Z'],
    ['2024-02-29T00:00:00.000Z', '2024-02-29T00:00:00.000Z'],
    ['2025-02-29T00:00:00.000Z', null],
    ['2025-04-31T10:00:00Z', null],
    ['2025-01-01T24:00:00Z', null],
    ['0000-01-01T00:00:00Z', null],
    ['2026-11-22T13:00:00+01:00', '2026-11-22T12:00:00.000Z'],
    ['+275760-09-13T00:00:00.000Z', null],
    ['yesterday', null],
    ['', null],
    [null, null],
  ])('safeTime(%j) is %j', (input, output) => {
    expect(safeTime(input)).toBe(output);
  });

  it.each([
    [{ s: 'a\u0000b' }, '{"s":"a\\ufffdb"}'],
    [{ s: 'x\ud800y' }, '{"s":"x\\ufffdy"}'],
    [{ s: '\ud83d\ude00' }, '{"s":"\ud83d\ude00"}'],
    [{ s: '\\u0000 typed by hand' }, '{"s":"\\\\u0000 typed by hand"}'],
    [{ s: '\\\u0000' }, '{"s":"\\\\\\ufffd"}'],
  ])('pgJson(%j) is %s', (input, output) => {
    expect(pgJson(input)).toBe(output);
  });
});

describe.skipIf(postgresMissing())('PostgresStore', () => {
  let server: PostgresServer;
  let admin: pg.Client;
  let n = 0;
  const url = (db: string) => `postgres://postgres@127.0.0.1:${server.port}/${db}`;
  const freshDb = async () => {
    const db = `store_${++n}`;
    await admin.query(`CREATE DATABASE ${db}`);
    return db;
  };
  /** A store on `db` that has loaded (migrated the schema, taken the writer lock). */
  const openStore = async (db: string, opts: { lockWaitMs?: number } = {}) => {
    const store = new PostgresStore({ url: url(db), ...opts });
    await store.load();
    return store;
  };
  /** Runs one statement on its own connection to `db`, as another client would, and returns the rows. */
  const query = async (db: string, sql: string) => {
    const client = new pg.Client({ connectionString: url(db) });
    await client.connect();
    try {
      return (await client.query(sql)).rows;
    } finally {
      await client.end();
    }
  };

  beforeAll(async () => {
    server = await startPostgres({ hba: HBA });
    admin = new pg.Client({ connectionString: url('postgres') });
    await admin.connect();
  });
  afterAll(async () => {
    await admin?.end();
    await server?.stop();
  });

  it('loads empty, then loads back exactly what was committed', async () => {
    const db = await freshDb();
    const store = new PostgresStore({ url: url(db) });
    const empty = await store.load();
    expect(empty).toEqual({ paths: [], findings: [], agents: [], outbox: [], checkpoint: { streamSeq: 0 }, counters: emptyState().counters });
    const state = emptyState();
    await store.commit(commitOf(state, 0, 20));
    await store.commit(commitOf(state, 20, 40));
    await store.close();
    expect(state.findings.size).toBeGreaterThan(0);
    expect(state.outbox.size).toBeGreaterThan(0);

    const again = new PostgresStore({ url: url(db) });
    const loaded = sorted(await again.load());
    expectLoaded(loaded, state, 40);
    expect(loaded.outbox).toEqual(expected(state).outbox);
    await again.close();

    expect(await query(db, 'SELECT count(*)::int AS n FROM bulkhead.observations')).toEqual([{ n: 40 * 12 }]);
    expect(await query(db, 'SELECT version FROM bulkhead.schema_migrations')).toEqual([{ version: 1 }]);
  });

  it('a commit that fails half-way leaves nothing of itself behind', async () => {
    const db = await freshDb();
    const store = await openStore(db);
    const state = emptyState();
    await store.commit(commitOf(state, 0, 10));
    const good = commitOf(state, 10, 20);
    // The last history row violates NOT NULL: every statement before it in the transaction must vanish.
    const bad: Commit = { ...good, history: [...good.history.slice(0, -1), { ...good.history.at(-1)!, agent: null as unknown as string }] };
    await expect(store.commit(bad)).rejects.toThrow(/null value/);

    const one = async (sql: string) => (await query(db, sql))[0];
    expect(await one('SELECT stream_seq::int AS s FROM bulkhead.checkpoint')).toEqual({ s: 10 });
    expect(await one('SELECT count(*)::int AS n FROM bulkhead.observations')).toEqual({ n: 10 * 12 });
    expect(await one(`SELECT count(*)::int AS n FROM bulkhead.observations WHERE stream_seq > 10`)).toEqual({ n: 0 });
    expect(await one(`SELECT count(*)::int AS n FROM bulkhead.transitions WHERE stream_seq > 10`)).toEqual({ n: 0 });
    expect(await one(`SELECT (data->>'messages')::int AS m FROM bulkhead.counters`)).toEqual({ m: 10 });

    // The same store can commit the corrected unit: the failed one did not move the revision.
    await store.commit(good);
    expect(await one('SELECT stream_seq::int AS s FROM bulkhead.checkpoint')).toEqual({ s: 20 });
    expect(await one('SELECT count(*)::int AS n FROM bulkhead.observations')).toEqual({ n: 20 * 12 });
    await store.close();
  });

  it('history is idempotent: the same rows committed again add nothing', async () => {
    const db = await freshDb();
    const first = await openStore(db);
    const commit = commitOf(emptyState(), 0, 8);
    await first.commit(commit);
    await first.close();
    const second = await openStore(db);
    await second.commit(commit);
    await second.commit(commit);
    await second.close();
    const counts = await query(
      db,
      `SELECT (SELECT count(*) FROM bulkhead.observations)::int AS o, (SELECT count(*) FROM bulkhead.transitions)::int AS t, (SELECT count(*) FROM bulkhead.outbox)::int AS n`,
    );
    expect(counts).toEqual([{ o: 8 * 12, t: commit.effects.transitions.length, n: commit.effects.notifications.length }]);
    expect(commit.effects.transitions.length).toBeGreaterThan(0);
  });

  it('refuses a second controller on the same database, and a concurrent writer', async () => {
    const db = await freshDb();
    const a = await openStore(db);
    const b = new PostgresStore({ url: url(db), lockWaitMs: 300 });
    await expect(b.load()).rejects.toMatchObject({ code: 'STORE_LOCKED' });
    await b.close();
    await a.close();
    const c = await openStore(db, { lockWaitMs: 300 });
    // A writer that bypassed the lock (moved the revision) makes the next commit fail instead of overwriting.
    await query(db, 'UPDATE bulkhead.checkpoint SET revision = revision + 1');
    await expect(c.commit(commitOf(emptyState(), 0, 1))).rejects.toMatchObject({ code: 'STORE_CONFLICT' });
    await c.close();
  });

  it('stores agent strings jsonb refuses (NUL, lone surrogates) and times that are not times', async () => {
    const db = await freshDb();
    const store = await openStore(db);
    const commit = commitOf(emptyState(), 0, 1);
    const row = commit.history[0]!;
    const nasty = { ...row, id: 'nasty#0', observation: { ...row.observation, at: 'yesterday', evidence: { detail: 'a\u0000b\ud800c \\u0000 literal' } } };
    await store.commit({ ...commit, history: [...commit.history, nasty] });
    const got = await query(db, `SELECT at, data->'evidence'->>'detail' AS detail FROM bulkhead.observations WHERE id = 'nasty#0'`);
    expect(got).toEqual([{ at: null, detail: 'a\ufffdb\ufffdc \\u0000 literal' }]);
    await store.close();
  });

  it('refuses a database whose schema is newer than the controller', async () => {
    const db = await freshDb();
    const store = await openStore(db);
    await store.close();
    await query(db, `INSERT INTO bulkhead.schema_migrations (version, name) VALUES (99, 'from the future')`);
    const again = new PostgresStore({ url: url(db) });
    await expect(again.load()).rejects.toMatchObject({ code: 'STORE_SCHEMA' });
    await again.close();
  });
});

describe.skipIf(natsMissing())('KvStore', () => {
  let nats: NatsServer;
  let nc: NatsConnection;
  let n = 0;
  const bucket = () => `test_${++n}`;

  beforeAll(async () => {
    nats = await startNats();
    nc = await connect({ servers: nats.url, user: 'controller', pass: nats.passwords.controller });
  });
  afterAll(async () => {
    await nc?.close();
    await nats?.stop();
  });

  it('loads empty, then loads back exactly what was committed (outbox included, delivered removed)', async () => {
    const name = bucket();
    const store = new KvStore(nc, { bucket: name });
    expect(await store.load()).toEqual({ paths: [], findings: [], agents: [], outbox: [], checkpoint: { streamSeq: 0 }, counters: emptyState().counters });
    const state = emptyState();
    const c1 = commitOf(state, 0, 20);
    await store.commit(c1);
    await store.commit(commitOf(state, 20, 40));
    const owed = c1.effects.notifications.map((x) => x.id);
    expect(owed.length).toBeGreaterThan(1);
    await store.markDelivered(owed.slice(0, 1), new Date().toISOString());

    const loaded = sorted(await new KvStore(nc, { bucket: name }).load());
    expectLoaded(loaded, state, 40);
    expect(loaded.outbox.map((x) => x.id)).toContain(owed[1]);
    expect(loaded.outbox.map((x) => x.id)).not.toContain(owed[0]);
  });

  it('a second writer gets a conflict instead of overwriting', async () => {
    const name = bucket();
    const a = new KvStore(nc, { bucket: name });
    const b = new KvStore(nc, { bucket: name });
    await a.load();
    await b.load();
    await a.commit(commitOf(emptyState(), 0, 2));
    await expect(b.commit(commitOf(emptyState(), 0, 3))).rejects.toMatchObject({ code: 'STORE_CONFLICT' });
    expect((await new KvStore(nc, { bucket: name }).load()).checkpoint).toEqual({ streamSeq: 2 });
  });

  it('fails loudly when the snapshot outgrows one message, and keeps the last good one', async () => {
    const name = bucket();
    const store = new KvStore(nc, { bucket: name, maxValueBytes: 40_000 });
    await store.load();
    const state = emptyState();
    await store.commit(commitOf(state, 0, 1));
    await expect(store.commit(commitOf(state, 1, 40))).rejects.toThrow(/more than one NATS message can carry.*--database-url/);
    expect((await new KvStore(nc, { bucket: name }).load()).checkpoint).toEqual({ streamSeq: 1 });
  });
});
