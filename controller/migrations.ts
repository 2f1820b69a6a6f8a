// The controller's PostgreSQL schema, as numbered migrations applied in order at start. Append new
// migrations; never edit one that has shipped, because databases record which versions they have applied.

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
];
