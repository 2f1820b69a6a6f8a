// Benchmark of controller ingest: N observations already in the RESULTS stream, consumed by the real controller
// process (dist/cli/bulkhead.js), judged, and committed with their history into PostgreSQL. Reports
// observations/s per run and the median, and the CPU each side spent, which says where the time went.
//   node dist/bench/ingest.js [--observations 100000] [--per-message 400] [--paths 2000] [--runs 3] [--cpu-prof DIR]
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import pg from 'pg';
import { ensureResultsStream } from '../controller/ingest.js';
import { startNatsServer, startPostgresServer, type NatsInstance, type PostgresInstance } from './servers.js';
import { WORKLOAD_ENV, workload } from './workload.js';

const CLI = join(import.meta.dirname, '../cli/bulkhead.js');
const ADDRESSES = 4;
const CATCH_UP_LIMIT_MS = 600_000;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const TICKS_PER_S = 100; // USER_HZ on Linux

interface Run {
  observationsPerS: number;
  endToEndPerS: number;
  ingestS: number;
  startupS: number;
  controllerCpuS: number;
  postgresCpuS: number;
  commits: number;
}

/** utime + stime of a process in seconds, from /proc (0 when it is gone). */
function cpuSeconds(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(fields[11]) + Number(fields[12])) / TICKS_PER_S;
  } catch {
    return 0;
  }
}

/** CPU seconds of the postmaster and all its children (backends, WAL writer, checkpointer…). */
function postgresCpu(postmaster: number): number {
  let total = cpuSeconds(postmaster);
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (Number(stat.split(') ')[1]!.split(' ')[1]) === postmaster) total += cpuSeconds(Number(entry));
    } catch {
      // exited meanwhile
    }
  }
  return total;
}

async function publishAll(nats: NatsInstance, w: ReturnType<typeof workload>, messages: number): Promise<number> {
  const nc = await connect({ servers: nats.url, user: 'controller', pass: nats.passwords.controller });
  try {
    await ensureResultsStream(await jetstreamManager(nc), () => undefined);
    const js = jetstream(nc);
    const enc = new TextEncoder();
    const started = performance.now();
    const window = 64;
    for (let i = 0; i < messages; i += window) {
      const acks = [];
      for (let j = i; j < Math.min(messages, i + window); j++) {
        const { subject, batch } = w.message(j);
        acks.push(js.publish(subject, enc.encode(JSON.stringify(batch)), { msgID: batch.id }));
      }
      await Promise.all(acks);
    }
    process.stdout.write(`published ${messages} messages in ${((performance.now() - started) / 1000).toFixed(2)} s\n`);
    return (await (await jetstreamManager(nc)).streams.info('RESULTS')).state.last_seq;
  } finally {
    await nc.close();
  }
}

async function runOnce(index: number, nats: NatsInstance, postgres: PostgresInstance, planPath: string, lastSeq: number, observations: number, cpuProf?: string): Promise<Run> {
  const db = `bench_${index}`;
  const admin = new pg.Client({ connectionString: postgres.url('postgres') });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${db}`);
  await admin.end();
  const probe = new pg.Client({ connectionString: postgres.url(db) });
  await probe.connect();

  const pgCpuBefore = postgresCpu(postgres.pid);
  const spawnedAt = Date.now();
  const nodeArgs = cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${cpuProf}`] : [];
  const child = spawn(
    process.execPath,
    [...nodeArgs, CLI, 'controller', '--plan', planPath, '--nats', nats.url, '--nats-creds', nats.credsFile('controller'), '--database-url', postgres.url(db), '--listen', '127.0.0.1:0'],
    { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...WORKLOAD_ENV } },
  );
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  try {
    const deadline = Date.now() + CATCH_UP_LIMIT_MS;
    let committed = 0;
    while (committed < lastSeq) {
      if (Date.now() > deadline || child.exitCode !== null) throw new Error(`controller did not catch up (at ${committed} of ${lastSeq}):\n${stderr.slice(-3000)}`);
      await sleep(10);
      try {
        committed = Number((await probe.query('SELECT stream_seq FROM bulkhead.checkpoint')).rows[0]?.stream_seq ?? 0);
      } catch {
        // not migrated yet
      }
    }
    const doneAt = Date.now();
    const controllerCpuS = cpuSeconds(child.pid!);
    const postgresCpuS = postgresCpu(postgres.pid) - pgCpuBefore;
    const rows = await probe.query<{ n: number; revision: string; last: Date }>(
      'SELECT (SELECT count(*)::int FROM bulkhead.observations) AS n, revision, committed_at AS last FROM bulkhead.checkpoint',
    );
    const { n, revision } = rows.rows[0]!;
    if (n !== observations) throw new Error(`expected ${observations} history rows, found ${n}`);
    const startedLine = stderr.split('\n').find((l) => l.includes('"controller started"'));
    const startedAt = startedLine ? Date.parse((JSON.parse(startedLine) as { at: string }).at) : spawnedAt;
    const ingestS = (doneAt - startedAt) / 1000;
    return {
      observationsPerS: observations / ingestS,
      endToEndPerS: observations / ((doneAt - spawnedAt) / 1000),
      ingestS,
      startupS: (startedAt - spawnedAt) / 1000,
      controllerCpuS,
      postgresCpuS,
      commits: Number(revision),
    };
  } finally {
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(timer);
    await probe.end();
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      observations: { type: 'string', default: '100000' },
      'per-message': { type: 'string', default: '400' },
      paths: { type: 'string', default: '2000' },
      runs: { type: 'string', default: '3' },
      'cpu-prof': { type: 'string' },
    },
  });
  const observations = Number(values.observations);
  const perMessage = Number(values['per-message']);
  const paths = Number(values.paths);
  const runs = Number(values.runs);
  const messages = Math.ceil(observations / perMessage);
  // Two source environments: each owns half the paths, spread over targets of ADDRESSES addresses each.
  const w = workload({ targets: Math.ceil(paths / 2 / ADDRESSES), addresses: ADDRESSES, messages, observationsPerMessage: perMessage, startMs: Date.now() - 600_000, stepMs: 60_000 });
  process.stdout.write(`controller ingest: ${messages} messages × ${perMessage} observations = ${messages * perMessage} over ${w.paths} paths, ${runs} runs\n`);

  const dir = mkdtempSync(join(tmpdir(), 'bulkhead-bench-ingest-'));
  const planPath = join(dir, 'plan.json');
  writeFileSync(planPath, w.planText);
  let nats: NatsInstance | undefined;
  let postgres: PostgresInstance | undefined;
  try {
    nats = await startNatsServer();
    postgres = await startPostgresServer();
    const lastSeq = await publishAll(nats, w, messages);
    const results: Run[] = [];
    for (let i = 1; i <= runs; i++) {
      const r = await runOnce(i, nats, postgres, planPath, lastSeq, messages * perMessage, values['cpu-prof']);
      results.push(r);
      process.stdout.write(
        `run ${i}: ${Math.round(r.observationsPerS)} obs/s (ingest ${r.ingestS.toFixed(2)} s in ${r.commits} commits; start-up ${r.startupS.toFixed(2)} s, ` +
          `${Math.round(r.endToEndPerS)} obs/s end to end); cpu: controller ${r.controllerCpuS.toFixed(2)} s, postgres ${r.postgresCpuS.toFixed(2)} s\n`,
      );
    }
    const m = median(results.map((r) => r.observationsPerS));
    process.stdout.write(`median: ${Math.round(m)} observations/s (target ≥ 20000)\n`);
    return m >= 20_000 ? 0 : 1;
  } finally {
    await postgres?.stop();
    await nats?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  (code) => (process.exitCode = code),
  (err: unknown) => {
    process.stderr.write(`bench failed: ${(err as Error).stack ?? String(err)}\n`);
    process.exitCode = 2;
  },
);
