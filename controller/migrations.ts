// The controller's PostgreSQL schema, as numbered migrations applied in order at start. Append new
// migrations; never edit one that has shipped, because databases record which versions they have applied.
import type pg from 'pg';
import { BulkheadError } from '../core/errors.js';

export interface Migration {
  readonly version: number;
  readonly name: string;
  readonly sql: string;
}

/** Everything lives in its own schema so the controller can share a database with other applications. */
export const SCHEMA = 'bulkhead';

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'state, outbox and history',
    sql: `
      -- Current state: one row per record, the record itself as jsonb (controller/model.ts).
      CREATE TABLE bulkhead.paths (
        key text PRIMARY KEY,
        data jsonb NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now()
      );
      CREATE TABLE bulkhead.findings (
        key text PRIMARY KEY,
        kind text NOT NULL,
        status text NOT NULL,
        data jsonb NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now()
      );
      CREATE TABLE bulkhead.agents (
        key text PRIMARY KEY,
        data jsonb NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now()
      );
      -- Notifications owed to receivers; delivered ones stay as the record of what was sent.
      CREATE TABLE bulkhead.outbox (
        id text PRIMARY KEY,
        receiver text NOT NULL,
        data jsonb NOT NULL,
        created_at timestamptz NOT NULL,
        delivered_at timestamptz
      );
      CREATE INDEX outbox_undelivered ON bulkhead.outbox (created_at) WHERE delivered_at IS NULL;
      -- The last JetStream stream sequence whose effects are committed, and a revision that every commit
      -- moves forward: a commit that does not find the revision it loaded was raced by another controller.
      CREATE TABLE bulkhead.checkpoint (
        id smallint PRIMARY KEY CHECK (id = 1),
        stream_seq bigint NOT NULL,
        revision bigint NOT NULL,
        committed_at timestamptz
      );
      INSERT INTO bulkhead.checkpoint (id, stream_seq, revision) VALUES (1, 0, 0);
      CREATE TABLE bulkhead.counters (
        id smallint PRIMARY KEY CHECK (id = 1),
        data jsonb NOT NULL
      );
      INSERT INTO bulkhead.counters (id, data) VALUES (1, '{}');
      -- Audit history: every judged observation, and every state change of a path or finding. An observation's
      -- data holds what has no column (probe, layer, evidence, timings, attempts) plus its pathKey, and its
      -- original 'at' text when that was not a valid time.
      CREATE TABLE bulkhead.observations (
        id text PRIMARY KEY,
        stream_seq bigint NOT NULL,
        agent text NOT NULL,
        env text NOT NULL,
        from_env text NOT NULL,
        target text NOT NULL,
        address text,
        port integer,
        outcome text NOT NULL,
        verdict text NOT NULL,
        at timestamptz,
        data jsonb NOT NULL
      );
      -- BRIN: history is appended roughly in time order, and a BRIN index costs almost nothing per insert.
      CREATE INDEX observations_at ON bulkhead.observations USING brin (at);
      CREATE TABLE bulkhead.transitions (
        id text PRIMARY KEY,
        stream_seq bigint NOT NULL,
        at timestamptz,
        key text NOT NULL,
        from_state text NOT NULL,
        to_state text NOT NULL,
        reason text NOT NULL
      );
      CREATE INDEX transitions_key_at ON bulkhead.transitions (key, at);
    `,
  },
  {
    version: 2,
    name: 'delivery outcomes, storms and silences',
    sql: `
      -- How each notification left the outbox (delivered, dead, folded, silenced) and why. Rows settled before
      -- outcomes were recorded were all delivered. Settled rows always have both a time and an outcome.
      ALTER TABLE bulkhead.outbox ADD COLUMN outcome text, ADD COLUMN reason text;
      UPDATE bulkhead.outbox SET outcome = 'delivered' WHERE delivered_at IS NOT NULL;
      ALTER TABLE bulkhead.outbox ADD CONSTRAINT outbox_settled CHECK ((delivered_at IS NULL) = (outcome IS NULL));
      -- Dead letters, newest first, for the API.
      CREATE INDEX outbox_dead ON bulkhead.outbox (delivered_at DESC) WHERE outcome = 'dead';
      -- Storm incidents (one per receiver and environment pair) and silences: the records themselves as jsonb
      -- (controller/delivery/model.ts), upserted whole.
      CREATE TABLE bulkhead.storms (
        key text PRIMARY KEY,
        data jsonb NOT NULL,
        updated_at timestamptz
      );
      CREATE TABLE bulkhead.silences (
        id text PRIMARY KEY,
        data jsonb NOT NULL,
        ends_at timestamptz NOT NULL
      );
    `,
  },
];

const MIGRATION_LOCK = 0x42484b32; // pg_advisory_xact_lock key "BHK2": one migrator at a time

/**
 * Applies missing migrations in one transaction under an advisory lock, so two starting controllers cannot race.
 * `migrations` is for tests that build a database as an older controller left it.
 */
export async function migrate(client: pg.ClientBase, migrations: readonly Migration[] = MIGRATIONS): Promise<number> {
  await client.query('BEGIN');
  try {
    await client.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
    await client.query(`CREATE SCHEMA IF NOT EXISTS ${SCHEMA}`);
    await client.query(
      `CREATE TABLE IF NOT EXISTS ${SCHEMA}.schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`,
    );
    const { rows } = await client.query<{ version: number }>(`SELECT version FROM ${SCHEMA}.schema_migrations`);
    const applied = new Set(rows.map((r) => r.version));
    const known = Math.max(...migrations.map((m) => m.version));
    const newest = Math.max(0, ...applied);
    if (newest > known) {
      throw new BulkheadError('STORE_SCHEMA', `the database schema is at version ${newest}, newer than this controller knows (${known}): upgrade the controller`);
    }
    for (const m of migrations) {
      if (applied.has(m.version)) continue;
      await client.query(m.sql);
      await client.query(`INSERT INTO ${SCHEMA}.schema_migrations (version, name) VALUES ($1, $2)`, [m.version, m.name]);
    }
    await client.query('COMMIT');
    return known;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}
