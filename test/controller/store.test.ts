// Both stores against real servers: what is committed is what loads back, a failed commit leaves nothing
// behind, history is idempotent, a second writer is refused, and delivery commits (settled, owed, storms,
// silences) are atomic and never revive what was settled.
import pg from 'pg';
import { Kvm } from '@nats-io/kv';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { workload } from '../../bench/workload.js';
import { emptyDeliveryState, type DeliveryCommit, type Silence, type StormRecord } from '../../controller/delivery/model.js';
import { applyResults } from '../../controller/lifecycle.js';
import { migrate, MIGRATIONS } from '../../controller/migrations.js';
import { emptyState, type ControllerState, type HistoryRow, type Notification } from '../../controller/model.js';
import type { Commit, Snapshot } from '../../controller/store.js';
import { KvStore } from '../../controller/store-kv.js';
import { commitStatement, pgJson, PostgresStore, safeTime } from '../../controller/store-postgres.js';
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
    delivery: emptyDeliveryState(),
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

const AT = '2026-11-22T13:00:00.000Z';
const LATER = '2026-11-22T13:05:00.000Z';
const delivery = (d: Partial<DeliveryCommit>): DeliveryCommit => ({ at: AT, settled: [], owed: [], storms: [], silences: [], ...d });
const storm = (receiver: string, from_env: string, to_env: string, over: Partial<StormRecord> = {}): StormRecord => ({
  key: `${receiver}|${from_env}→${to_env}`,
  receiver,
  from_env,
  to_env,
  incident: 1,
  status: 'firing',
  since: AT,
  updatedAt: AT,
  members: ['violation:a', 'violation:b'],
  open: ['violation:a', 'violation:b'],
  ...over,
});
const silence = (id: string, over: Partial<Silence> = {}): Silence => ({
  id,
  matchers: { from_env: ['dev'], kind: ['violation'] },
  startsAt: AT,
  endsAt: '2026-11-22T15:00:00.000Z',
  createdBy: 'ops@example.com',
  comment: 'firewall maintenance',
  createdAt: AT,
  ...over,
});
/** A storm incident's notification, shaped like one the ingest loop owes (same finding, another id). */
const owedLike = (base: Notification, id: string): Notification => ({ ...structuredClone(base), id, receiver: 'pd', dedupKey: id });
const ids = (s: Snapshot) => s.outbox.map((n) => n.id);

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
  const query = async (db: string, sql: string, values: unknown[] = []) => {
    const client = new pg.Client({ connectionString: url(db) });
    await client.connect();
    try {
      return (await client.query(sql, values)).rows;
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
    expect(empty).toEqual({
      paths: [],
      findings: [],
      agents: [],
      outbox: [],
      checkpoint: { streamSeq: 0 },
      counters: emptyState().counters,
      delivery: { silences: [], storms: [] },
    });
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
    expect(await query(db, 'SELECT version FROM bulkhead.schema_migrations ORDER BY version')).toEqual([{ version: 1 }, { version: 2 }]);
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

  it('settles notifications: gone from load(), kept with outcome, reason and time; settling again is a no-op', async () => {
    const db = await freshDb();
    const store = await openStore(db);
    const state = emptyState();
    await store.commit(commitOf(state, 0, 20));
    const [a, b, c, d] = [...state.outbox.keys()];
    expect(d).toBeDefined();
    await store.commitDelivery(
      delivery({
        settled: [
          { id: a!, outcome: 'delivered', reason: null },
          { id: b!, outcome: 'dead', reason: 'HTTP 400: invalid routing key' },
          { id: c!, outcome: 'folded', reason: 'storm pd|dev→prod #1' },
          { id: 'never-owed', outcome: 'delivered', reason: null },
        ],
      }),
    );
    // Settled again with other outcomes and a later time: the first settlement stands.
    await store.commitDelivery(delivery({ at: LATER, settled: [{ id: a!, outcome: 'dead', reason: 'late' }, { id: b!, outcome: 'silenced', reason: null }] }));
    await store.commitDelivery(delivery({ at: LATER, settled: [{ id: d!, outcome: 'dead', reason: 'HTTP 404' }] }));
    // Delivery commits leave the ingest revision alone: the next ingest commit still passes its check.
    await store.commit(commitOf(state, 20, 25));
    await store.close();

    const rows = await query(db, `SELECT id, outcome, reason, delivered_at FROM bulkhead.outbox WHERE id = ANY($1)`, [[a, b, c, d, 'never-owed']]);
    expect(Object.fromEntries(rows.map(({ id, ...rest }) => [id, rest]))).toEqual({
      [a!]: { outcome: 'delivered', reason: null, delivered_at: new Date(AT) },
      [b!]: { outcome: 'dead', reason: 'HTTP 400: invalid routing key', delivered_at: new Date(AT) },
      [c!]: { outcome: 'folded', reason: 'storm pd|dev→prod #1', delivered_at: new Date(AT) },
      [d!]: { outcome: 'dead', reason: 'HTTP 404', delivered_at: new Date(LATER) },
    });
    const again = new PostgresStore({ url: url(db) });
    const loaded = await again.load();
    for (const id of [a, b, c, d]) expect(ids(loaded)).not.toContain(id);
    expect(loaded.outbox.length).toBe(state.outbox.size - 4);
    expect(loaded.checkpoint).toEqual({ streamSeq: 25 });
    // Dead letters for the API, newest first, each with the notification it was.
    const dead = await again.deadLetters();
    expect(dead.map(({ id, outcome, reason, at }) => ({ id, outcome, reason, at }))).toEqual([
      { id: d, outcome: 'dead', reason: 'HTTP 404', at: LATER },
      { id: b, outcome: 'dead', reason: 'HTTP 400: invalid routing key', at: AT },
    ]);
    expect(dead[1]!.notification).toEqual(state.outbox.get(b!));
    expect(dead[1]!.receiver).toBe(state.outbox.get(b!)!.receiver);
    expect((await again.deadLetters(1)).map((x) => x.id)).toEqual([d]);
    await again.close();
  });

  it('owed notifications join the outbox, and a settled id is never revived (by delivery or by ingest)', async () => {
    const db = await freshDb();
    const store = await openStore(db);
    const state = emptyState();
    const first = commitOf(state, 0, 10);
    await store.commit(first);
    const base = [...state.outbox.values()][0]!;
    const stormTrigger = owedLike(base, 'storm:pd|dev→prod#1:trigger:pd');
    const both = owedLike(base, 'storm:pd|dev→prod#1:update:pd');
    // Owing an id that ingest already owes changes nothing about it.
    const changed = { ...structuredClone(base), receiver: 'somebody-else' };
    await store.commitDelivery(delivery({ owed: [stormTrigger, changed, both], settled: [{ id: both.id, outcome: 'silenced', reason: null }] }));
    await store.close();

    let again = new PostgresStore({ url: url(db) });
    let loaded = await again.load();
    expect(loaded.outbox.find((n) => n.id === stormTrigger.id)).toEqual(stormTrigger);
    expect(loaded.outbox.find((n) => n.id === base.id)).toEqual(base);
    // Owed and settled in the same commit: inserted settled.
    expect(ids(loaded)).not.toContain(both.id);
    expect(await query(db, `SELECT outcome, delivered_at FROM bulkhead.outbox WHERE id = $1`, [both.id])).toEqual([{ outcome: 'silenced', delivered_at: new Date(AT) }]);

    await again.commitDelivery(delivery({ settled: [{ id: stormTrigger.id, outcome: 'delivered', reason: null }, { id: base.id, outcome: 'delivered', reason: null }] }));
    await again.commitDelivery(delivery({ owed: [stormTrigger, base] }));
    // The ingest loop sending the same notifications again (a replayed commit) does not revive them either.
    await again.commit({ ...first, effects: { ...first.effects, notifications: [...first.effects.notifications, stormTrigger] } });
    await again.close();

    again = new PostgresStore({ url: url(db) });
    loaded = await again.load();
    expect(ids(loaded)).not.toContain(stormTrigger.id);
    expect(ids(loaded)).not.toContain(base.id);
    expect(loaded.outbox.length).toBe(state.outbox.size - 1);
    await again.close();
  });

  it('storms and silences round-trip and are upserted whole', async () => {
    const db = await freshDb();
    const store = await openStore(db);
    const s1 = storm('pd', 'dev', 'prod');
    const s2 = storm('slack', 'staging', 'prod');
    const quiet = silence('sil_01');
    await store.commitDelivery(delivery({ storms: [s1, s2], silences: [quiet, silence('sil_02', { comment: 'other' })] }));
    // The storm resolves; the silence is expired early, which replaces the record.
    const s1Resolved = { ...s1, status: 'resolved' as const, open: [], updatedAt: LATER };
    const expired = { ...quiet, endsAt: LATER, comment: 'done early' };
    await store.commitDelivery(delivery({ at: LATER, storms: [s1Resolved], silences: [expired] }));
    await store.close();

    const again = new PostgresStore({ url: url(db) });
    expect((await again.load()).delivery).toEqual({ storms: [s1Resolved, s2], silences: [expired, silence('sil_02', { comment: 'other' })] });
    await again.close();
    expect(await query(db, `SELECT id, ends_at FROM bulkhead.silences ORDER BY id`)).toEqual([
      { id: 'sil_01', ends_at: new Date(LATER) },
      { id: 'sil_02', ends_at: new Date('2026-11-22T15:00:00.000Z') },
    ]);
    expect(await query(db, `SELECT key, updated_at FROM bulkhead.storms ORDER BY key`)).toEqual([
      { key: s1.key, updated_at: new Date(LATER) },
      { key: s2.key, updated_at: new Date(AT) },
    ]);
  });

  it('delivery commits made without waiting land in the order they were made, beside ingest commits', async () => {
    const db = await freshDb();
    const store = await openStore(db);
    const state = emptyState();
    const versions = Array.from({ length: 30 }, (_, i) => storm('pd', 'dev', 'prod', { incident: i + 1 }));
    await Promise.all([...versions.map((v) => store.commitDelivery(delivery({ storms: [v] }))), store.commit(commitOf(state, 0, 5))]);
    await store.close();
    const again = new PostgresStore({ url: url(db) });
    const loaded = await again.load();
    expect(loaded.delivery.storms).toEqual([versions.at(-1)]);
    expect(loaded.checkpoint).toEqual({ streamSeq: 5 });
    await again.close();
  });

  it('a delivery commit that fails half-way leaves nothing of itself behind', async () => {
    const db = await freshDb();
    const store = await openStore(db);
    const state = emptyState();
    await store.commit(commitOf(state, 0, 10));
    const base = [...state.outbox.values()][0]!;
    const good = owedLike(base, 'storm:pd|dev→prod#1:trigger:pd');
    const commit = delivery({
      settled: [{ id: base.id, outcome: 'dead', reason: 'HTTP 400' }],
      owed: [good, { ...owedLike(base, 'storm:broken'), receiver: null as unknown as string }],
      storms: [storm('pd', 'dev', 'prod')],
      silences: [silence('sil_01')],
    });
    // The last owed row violates NOT NULL: the settlement, the other row, the storm and the silence must vanish with it.
    await expect(store.commitDelivery(commit)).rejects.toThrow(/null value/);
    const one = async (sql: string) => (await query(db, sql))[0];
    expect(await one(`SELECT count(*)::int AS n FROM bulkhead.outbox WHERE delivered_at IS NOT NULL OR outcome IS NOT NULL`)).toEqual({ n: 0 });
    expect(await one(`SELECT count(*)::int AS n FROM bulkhead.outbox WHERE id LIKE 'storm:%'`)).toEqual({ n: 0 });
    expect(await one(`SELECT (SELECT count(*) FROM bulkhead.storms)::int AS s, (SELECT count(*) FROM bulkhead.silences)::int AS q`)).toEqual({ s: 0, q: 0 });

    // A silence whose end is no time is refused before anything is sent.
    await expect(store.commitDelivery(delivery({ ...commit, owed: [good], silences: [silence('sil_bad', { endsAt: 'tomorrow' })] }))).rejects.toMatchObject({
      code: 'STORE_STATE',
    });
    await store.commitDelivery({ ...commit, owed: [good] });
    expect(await one(`SELECT count(*)::int AS n FROM bulkhead.outbox WHERE outcome = 'dead'`)).toEqual({ n: 1 });
    expect(await one(`SELECT (SELECT count(*) FROM bulkhead.storms)::int AS s, (SELECT count(*) FROM bulkhead.silences)::int AS q`)).toEqual({ s: 1, q: 1 });
    await store.close();
  });

  it('refuses a delivery commit once the database lock is lost', async () => {
    const db = await freshDb();
    const store = await openStore(db);
    // Another session ends the lock holder's backend, as a DBA or a failover would.
    const [holder] = await query(db, `SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE l.locktype = 'advisory' AND a.datname = $1`, [db]);
    await query(db, 'SELECT pg_terminate_backend($1)', [holder!.pid]);
    const deadline = Date.now() + 5000;
    let error: unknown;
    while (error === undefined && Date.now() < deadline) {
      error = await store.commitDelivery(delivery({ silences: [silence('sil_01')] })).then(
        () => undefined,
        (err: unknown) => err,
      );
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect(error).toMatchObject({ code: 'STORE_LOCK_LOST' });
    await store.close();
  });

  it('migration 2 applies over a database an older controller filled, keeping its outbox', async () => {
    const db = await freshDb();
    const state = emptyState();
    const client = new pg.Client({ connectionString: url(db) });
    await client.connect();
    // The database as the previous controller left it: migration 1, one commit, one notification delivered.
    expect(await migrate(client, MIGRATIONS.slice(0, 1))).toBe(1);
    const statement = commitStatement(commitOf(state, 0, 10), 0);
    expect((await client.query(statement.text, statement.values)).rows).toEqual([{ moved: 1 }]);
    const [sent, owed] = [...state.outbox.keys()];
    await client.query(`UPDATE bulkhead.outbox SET delivered_at = $2 WHERE id = $1`, [sent, AT]);
    await client.end();

    const store = new PostgresStore({ url: url(db) });
    const loaded = sorted(await store.load());
    expectLoaded(loaded, state, 10);
    expect(ids(loaded)).toContain(owed);
    expect(ids(loaded)).not.toContain(sent);
    expect(loaded.outbox.length).toBe(state.outbox.size - 1);
    expect(loaded.delivery).toEqual({ silences: [], storms: [] });
    expect(await query(db, 'SELECT version FROM bulkhead.schema_migrations ORDER BY version')).toEqual([{ version: 1 }, { version: 2 }]);
    // What was delivered before outcomes existed is recorded as delivered.
    expect(await query(db, `SELECT outcome, reason, delivered_at FROM bulkhead.outbox WHERE delivered_at IS NOT NULL`)).toEqual([
      { outcome: 'delivered', reason: null, delivered_at: new Date(AT) },
    ]);
    // Both kinds of commit work on the migrated database.
    await store.commitDelivery(delivery({ settled: [{ id: owed!, outcome: 'dead', reason: 'HTTP 400' }], storms: [storm('pd', 'dev', 'prod')] }));
    await store.commit(commitOf(state, 10, 12));
    await store.close();
    const again = new PostgresStore({ url: url(db) });
    const after = await again.load();
    expect(after.checkpoint).toEqual({ streamSeq: 12 });
    expect(ids(after)).not.toContain(owed);
    expect(after.delivery.storms).toEqual([storm('pd', 'dev', 'prod')]);
    await again.close();
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
    expect(await store.load()).toEqual({
      paths: [],
      findings: [],
      agents: [],
      outbox: [],
      checkpoint: { streamSeq: 0 },
      counters: emptyState().counters,
      delivery: { silences: [], storms: [] },
    });
    const state = emptyState();
    const c1 = commitOf(state, 0, 20);
    await store.commit(c1);
    await store.commit(commitOf(state, 20, 40));
    const owed = c1.effects.notifications.map((x) => x.id);
    expect(owed.length).toBeGreaterThan(1);
    await store.commitDelivery(delivery({ settled: [{ id: owed[0]!, outcome: 'delivered', reason: null }] }));

    const loaded = sorted(await new KvStore(nc, { bucket: name }).load());
    expectLoaded(loaded, state, 40);
    expect(loaded.outbox.map((x) => x.id)).toContain(owed[1]);
    expect(loaded.outbox.map((x) => x.id)).not.toContain(owed[0]);
  });

  it('delivery commits settle, owe and upsert; one that changes nothing writes nothing', async () => {
    const name = bucket();
    const revision = async () => (await (await new Kvm(nc).open(name)).get('snapshot'))?.revision;
    const store = new KvStore(nc, { bucket: name });
    await store.load();
    const state = emptyState();
    await store.commit(commitOf(state, 0, 20));
    const [a, b] = [...state.outbox.values()];
    const stormTrigger = owedLike(a!, 'storm:pd|dev→prod#1:trigger:pd');
    const both = owedLike(a!, 'storm:pd|dev→prod#1:update:pd');
    const s1 = storm('pd', 'dev', 'prod');
    await store.commitDelivery(
      delivery({
        settled: [{ id: a!.id, outcome: 'folded', reason: 'storm' }, { id: both.id, outcome: 'silenced', reason: null }],
        // b is already owed: its stored copy stays as it is.
        owed: [stormTrigger, both, { ...b!, receiver: 'somebody-else' }],
        storms: [s1],
        silences: [silence('sil_01')],
      }),
    );
    let loaded = await new KvStore(nc, { bucket: name }).load();
    expect(ids(loaded)).toContain(stormTrigger.id);
    expect(ids(loaded)).not.toContain(a!.id);
    expect(ids(loaded)).not.toContain(both.id);
    expect(loaded.outbox.find((n) => n.id === b!.id)).toEqual(b);
    expect(loaded.outbox.length).toBe(state.outbox.size);
    expect(loaded.delivery).toEqual({ storms: [s1], silences: [silence('sil_01')] });

    // Settling again, owing what is owed, and upserting equal records: no write at all.
    const before = await revision();
    await store.commitDelivery(
      delivery({ settled: [{ id: a!.id, outcome: 'delivered', reason: null }], owed: [stormTrigger], storms: [storm('pd', 'dev', 'prod')], silences: [silence('sil_01')] }),
    );
    await store.commitDelivery(delivery({}));
    expect(await revision()).toBe(before);

    // Upserts replace the record whole; ingest commits keep storms and silences.
    const resolved = { ...s1, status: 'resolved' as const, open: [], updatedAt: LATER };
    await store.commitDelivery(delivery({ storms: [resolved], silences: [silence('sil_01', { endsAt: LATER })] }));
    await store.commit(commitOf(state, 20, 25));
    expect(await revision()).toBe(before! + 2);
    loaded = await new KvStore(nc, { bucket: name }).load();
    expect(loaded.delivery).toEqual({ storms: [resolved], silences: [silence('sil_01', { endsAt: LATER })] });
    expect(loaded.checkpoint).toEqual({ streamSeq: 25 });
  });

  it('reads a snapshot written before storms and silences existed', async () => {
    const name = bucket();
    const writer = new KvStore(nc, { bucket: name });
    await writer.load();
    const state = emptyState();
    await writer.commit(commitOf(state, 0, 5));
    // Rewrite the value as the previous version wrote it: v1 without storms and silences.
    const kv = await new Kvm(nc).open(name);
    const { storms: _s, silences: _q, ...old } = (await kv.get('snapshot'))!.json<Record<string, unknown>>();
    expect(_s).toEqual([]);
    await kv.put('snapshot', JSON.stringify(old));

    const store = new KvStore(nc, { bucket: name });
    const loaded = sorted(await store.load());
    expectLoaded(loaded, state, 5);
    expect(loaded.delivery).toEqual({ silences: [], storms: [] });
    await store.commitDelivery(delivery({ storms: [storm('pd', 'dev', 'prod')] }));
    const value = (await kv.get('snapshot'))!.json<Record<string, unknown>>();
    expect(value).toMatchObject({ v: 1, storms: [storm('pd', 'dev', 'prod')], silences: [] });
  });

  it('a second writer gets a conflict instead of overwriting', async () => {
    const name = bucket();
    const a = new KvStore(nc, { bucket: name });
    const b = new KvStore(nc, { bucket: name });
    await a.load();
    await b.load();
    await a.commit(commitOf(emptyState(), 0, 2));
    await expect(b.commit(commitOf(emptyState(), 0, 3))).rejects.toMatchObject({ code: 'STORE_CONFLICT' });
    await expect(b.commitDelivery(delivery({ storms: [storm('pd', 'dev', 'prod')] }))).rejects.toMatchObject({ code: 'STORE_CONFLICT' });
    expect((await new KvStore(nc, { bucket: name }).load()).checkpoint).toEqual({ streamSeq: 2 });
  });

  it('fails loudly when the snapshot outgrows one message, and keeps the last good one', async () => {
    const name = bucket();
    const store = new KvStore(nc, { bucket: name, maxValueBytes: 40_000 });
    await store.load();
    const state = emptyState();
    await store.commit(commitOf(state, 0, 1));
    await expect(store.commit(commitOf(state, 1, 40))).rejects.toThrow(/more than one NATS message can carry.*--database-url/);
    const huge = silence('sil_huge', { comment: 'x'.repeat(50_000) });
    await expect(store.commitDelivery(delivery({ silences: [huge], storms: [storm('pd', 'dev', 'prod')] }))).rejects.toThrow(/more than one NATS message can carry/);
    const loaded = await new KvStore(nc, { bucket: name }).load();
    expect(loaded.checkpoint).toEqual({ streamSeq: 1 });
    expect(loaded.delivery).toEqual({ silences: [], storms: [] });
    // The store goes on from the last good value.
    await store.commitDelivery(delivery({ silences: [silence('sil_01')] }));
    expect((await new KvStore(nc, { bucket: name }).load()).delivery.silences).toEqual([silence('sil_01')]);
  });
});
