// The controller in-process against a real nats-server and PostgreSQL: results become paths and findings,
// bad messages are dropped and counted (never a crash), forged ones raise impersonation, a failed commit
// acknowledges nothing, and a NATS restart loses nothing.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { WORKLOAD_ENV, workload } from '../../bench/workload.js';
import { Controller, type ControllerOptions } from '../../controller/controller.js';
import type { Log } from '../../controller/ingest.js';
import { subjects, type Heartbeat } from '../../core/wire.js';
import { natsMissing, type NatsServer } from '../helpers/nats-server.js';
import { startNats } from '../helpers/nats-server.js';
import { postgresMissing, startPostgres, type PostgresServer } from '../helpers/postgres-server.js';

const HBA = 'local all all trust\nhost all all 127.0.0.1/32 trust\n';
const START = Date.now() - 600_000;
const w = workload({ targets: 5, addresses: 2, messages: 60, observationsPerMessage: 10, startMs: START, stepMs: 1000, flappingShare: 0.5 });
const enc = new TextEncoder();

async function waitFor<T>(what: string, probe: () => T | Promise<T>, timeoutMs = 15_000): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

describe.skipIf(natsMissing() ?? postgresMissing())('controller ingest', () => {
  let nats: NatsServer;
  let postgres: PostgresServer;
  let admin: pg.Client;
  let dir: string;
  let planPath: string;
  let publisher: NatsConnection;
  let dbCount = 0;
  const running: Controller[] = [];
  const lines: Record<string, unknown>[] = [];
  const log: Log = (level, msg, fields) => lines.push({ level, msg, ...fields });

  const url = (db: string) => `postgres://postgres@127.0.0.1:${postgres.port}/${db}`;
  async function start(extra: Partial<ControllerOptions> = {}): Promise<{ controller: Controller; db: string }> {
    const db = `ingest_${++dbCount}`;
    await admin.query(`CREATE DATABASE ${db}`);
    const controller = await Controller.start(
      {
        planPath,
        natsUrl: nats.url,
        natsCreds: nats.credsFile('controller'),
        databaseUrl: url(db),
        listen: { host: '127.0.0.1', port: 0 },
        env: WORKLOAD_ENV,
        ingest: { tickMs: 200, ...extra.ingest },
        ...extra,
      },
      log,
    );
    running.push(controller);
    return { controller, db };
  }
  const api = async (controller: Controller, path: string) => {
    const { host, port } = controller.apiAddress!;
    const res = await fetch(`http://${host}:${port}${path}`);
    return { status: res.status, body: (await res.json()) as Record<string, any> };
  };
  const lastSeq = async () => (await (await jetstreamManager(publisher)).streams.info('RESULTS')).state.last_seq;
  const caughtUp = async (controller: Controller) => {
    const target = await lastSeq();
    await waitFor(`checkpoint ${target}`, () => controller.ingest.committedSeq >= target);
  };
  async function publishAs(user: 'staging' | 'dev' | 'controller', subject: string, data: Uint8Array, msgID: string): Promise<void> {
    const nc = await connect({ servers: nats.url, user: user === 'controller' ? 'controller' : `agent-${user}`, pass: nats.passwords[user] });
    await jetstream(nc).publish(subject, data, { msgID });
    await nc.close();
  }
  const publishMessages = async (from: number, to: number) => {
    const js = jetstream(publisher);
    for (let i = from; i < to; i++) {
      const { subject, batch } = w.message(i);
      await js.publish(subject, enc.encode(JSON.stringify(batch)), { msgID: batch.id });
    }
  };

  beforeAll(async () => {
    nats = await startNats();
    postgres = await startPostgres({ hba: HBA });
    admin = new pg.Client({ connectionString: url('postgres') });
    await admin.connect();
    dir = mkdtempSync(join(tmpdir(), 'bulkhead-ingest-'));
    planPath = join(dir, 'plan.json');
    writeFileSync(planPath, w.planText);
    publisher = await connect({ servers: nats.url, user: 'controller', pass: nats.passwords.controller });
  });
  afterEach(async () => {
    for (const c of running.splice(0)) await c.stop().catch(() => undefined);
  });
  afterAll(async () => {
    await publisher?.close();
    await admin?.end();
    await Promise.all([nats?.stop(), postgres?.stop()]);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('turns result batches into paths, findings and history, once each', async () => {
    const { controller, db } = await start();
    await publishMessages(0, 30);
    await caughtUp(controller);
    const { state } = controller;
    expect(state.counters.messages).toBe(30);
    expect(state.counters.observations).toBe(300);
    expect(state.paths.size).toBe(w.paths);
    expect([...state.findings.values()].some((f) => f.kind === 'violation' && f.status === 'firing')).toBe(true);
    expect([...state.findings.values()].some((f) => f.kind === 'expected-path-down')).toBe(true);
    const rows = await new pg.Client({ connectionString: url(db) });
    await rows.connect();
    expect((await rows.query('SELECT count(*)::int AS n FROM bulkhead.observations')).rows[0].n).toBe(300);
    expect((await rows.query('SELECT stream_seq::int AS s FROM bulkhead.checkpoint')).rows[0].s).toBe(await lastSeq());
    await rows.end();

    const paths = await api(controller, '/v1/paths?state=firing');
    expect(paths.status).toBe(200);
    expect(paths.body.paths.every((p: { state: string }) => p.state === 'firing')).toBe(true);
    expect(paths.body.count).toBe([...state.paths.values()].filter((p) => p.state === 'firing').length);
    const health = await api(controller, '/healthz');
    expect(health).toMatchObject({ status: 200, body: { ok: true, natsConnected: true, store: 'postgres' } });
  });

  it('drops malformed, invalid and oversized messages, counts them and keeps going', async () => {
    const { controller } = await start({ ingest: { maxMessageBytes: 512 * 1024 } });
    const subject = subjects.results('staging', 's1');
    const valid = w.message(30).batch;
    const invalid = { ...valid, id: 'schema-bad', observations: [{ ...valid.observations[0], outcome: 'maybe' }] };
    const oversized = { ...valid, id: 'big', cycle: { ...valid.cycle, id: 'x'.repeat(100) }, padding: 'p'.repeat(900 * 1024) };
    await publishAs('controller', subject, enc.encode('{"v":1, not json'), 'garbage');
    await publishAs('controller', subject, enc.encode(JSON.stringify(invalid)), 'schema-bad');
    await publishAs('controller', subject, enc.encode(JSON.stringify(oversized)), 'big');
    await publishAs('controller', 'bulkhead.results.staging.s1.extra', enc.encode(JSON.stringify(valid)), 'subject-bad');
    await publishMessages(30, 32);
    await caughtUp(controller);
    expect(controller.state.counters.dropped).toMatchObject({ 'not-json': 1, schema: 1, oversized: 1, subject: 1 });
    // The stream's history before this controller's database existed counts too: messages 0–29 plus the two.
    expect(controller.state.counters.messages).toBe(32);
    const stats = await api(controller, '/v1/stats');
    expect(stats.body.counters.dropped).toMatchObject({ 'not-json': 1, schema: 1, oversized: 1, subject: 1, impersonation: 0 });
    const drops = lines.filter((l) => l.msg === 'dropped message').map((l) => l.reason);
    expect(drops).toEqual(expect.arrayContaining(['not-json', 'schema', 'oversized', 'subject']));
    expect((await api(controller, '/healthz')).status).toBe(200);
  });

  it('raises impersonation for a forged payload and for a forged heartbeat', async () => {
    const { controller } = await start();
    const forged = { ...w.message(0).batch, id: 'forged', env: 'prod' };
    // Published with the controller's own credentials: only the payload gives it away.
    await publishAs('controller', subjects.results('staging', 'a1'), enc.encode(JSON.stringify(forged)), 'forged');
    await caughtUp(controller);
    const staging = await connect({ servers: nats.url, user: 'agent-staging', pass: nats.passwords.staging });
    const hb: Heartbeat = {
      v: 1, type: 'heartbeat', env: 'staging', agent: 's1', version: '9.9.9', planSha256: w.plan.sha256, at: new Date().toISOString(),
      intervalMs: 60_000, controls: { total: 1, failed: [] }, lastCycleAt: null, outbox: { pending: 2, dropped: 0 },
    };
    staging.publish(subjects.heartbeat('staging', 's1'), enc.encode(JSON.stringify(hb)));
    staging.publish(subjects.heartbeat('staging', 's2'), enc.encode(JSON.stringify({ ...hb, agent: 's9' })));
    staging.publish(subjects.heartbeat('staging', 's3'), enc.encode('nope'));
    await staging.flush();
    await staging.close();
    await waitFor('heartbeats applied', () => controller.state.agents.get('staging/s1')?.version === '9.9.9' && controller.state.counters.dropped.impersonation >= 2);
    const findings = (await api(controller, '/v1/findings?status=firing')).body.findings as { kind: string; details: Record<string, unknown> }[];
    const imp = findings.filter((f) => f.kind === 'impersonation');
    expect(imp.map((f) => f.details.subject).sort()).toEqual(['bulkhead.heartbeat.staging.s2', 'bulkhead.results.staging.a1']);
    expect(imp.find((f) => f.details.subject === 'bulkhead.results.staging.a1')?.details.claimedEnv).toBe('prod');
    const agents = (await api(controller, '/v1/agents')).body.agents as { key: string; version: string; planSha256: string; silent: boolean }[];
    expect(agents.find((a) => a.key === 'staging/s1')).toMatchObject({ version: '9.9.9', planSha256: w.plan.sha256, silent: false });
    await waitFor('counted', () => controller.state.counters.dropped['not-json'] >= 1);
    expect(controller.state.counters.dropped.impersonation).toBe(2);
  });

  it('a failed commit acknowledges nothing; the next controller applies those messages exactly once', async () => {
    const first = await start();
    await caughtUp(first.controller);
    const before = first.controller.state.checkpoint.streamSeq;
    const db = new pg.Client({ connectionString: url(first.db) });
    await db.connect();
    // Someone else writes: the next commit must fail rather than overwrite.
    await db.query('UPDATE bulkhead.checkpoint SET revision = revision + 1');
    await publishMessages(32, 40);
    await waitFor('ingest to stop', () => first.controller.ingest.failure);
    expect(first.controller.ingest.failure).toMatchObject({ code: 'STORE_CONFLICT' });
    expect((await api(first.controller, '/healthz')).status).toBe(503);
    await first.controller.stop();
    running.splice(running.indexOf(first.controller), 1);
    expect((await db.query('SELECT stream_seq::int AS s FROM bulkhead.checkpoint')).rows[0].s).toBe(before);

    const second = await Controller.start(
      { planPath, natsUrl: nats.url, natsCreds: nats.credsFile('controller'), databaseUrl: url(first.db), listen: { host: '127.0.0.1', port: 0 }, env: WORKLOAD_ENV },
      log,
    );
    running.push(second);
    await caughtUp(second);
    const n = (await db.query(`SELECT count(*)::int AS n FROM bulkhead.observations WHERE stream_seq > $1`, [before])).rows[0].n;
    expect(n).toBe(8 * 10);
    await db.end();
  });

  it('loses nothing across a NATS restart', async () => {
    const { controller, db } = await start();
    await caughtUp(controller);
    const base = controller.state.counters.observations;
    await publishMessages(40, 45);
    await nats.kill();
    await nats.start();
    await waitFor('publisher reconnected', async () => {
      try {
        await publishMessages(45, 60);
        return true;
      } catch {
        return false;
      }
    });
    await caughtUp(controller);
    expect(controller.state.counters.observations - base).toBe(20 * 10);
    const rows = new pg.Client({ connectionString: url(db) });
    await rows.connect();
    const distinct = (await rows.query(`SELECT count(DISTINCT stream_seq)::int AS n FROM bulkhead.observations`)).rows[0].n;
    expect(distinct).toBe(controller.state.counters.messages);
    await rows.end();
    expect(lines.some((l) => l.msg === 'NATS reconnected')).toBe(true);
  });

  it('SIGHUP semantics: an invalid plan is refused and the old one kept', async () => {
    const { controller } = await start();
    const before = controller.plan.sha256;
    writeFileSync(planPath, '{"version": 2}');
    expect(await controller.reloadPlan()).toBe(false);
    expect(controller.plan.sha256).toBe(before);
    expect(lines.some((l) => l.msg === 'plan reload refused, keeping the plan in force')).toBe(true);
    writeFileSync(planPath, `${w.planText}\n`);
    expect(await controller.reloadPlan()).toBe(true);
    expect(controller.plan.sha256).not.toBe(before);
    expect((await api(controller, '/v1/plan')).body).toEqual({ path: planPath, sha256: controller.plan.sha256 });
    writeFileSync(planPath, w.planText);
  });
});
