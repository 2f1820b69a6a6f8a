// The real `bulkhead` binary (dist/, built by `make test`) against real servers: exit codes, JSON, report files.
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../helpers/free-port.js';

const root = join(import.meta.dirname, '../..');
const bin = join(root, 'dist/cli/bulkhead.js');

function bulkhead(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [bin, ...args], { cwd: root, timeout: 20_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? -1) : 0, stdout, stderr });
    });
  });
}

let web: http.Server;
let webPort: number;
let tcp: net.Server;
let tcpPort: number;
let closedPort: number;
let dir: string;

function writePlan(name: string, targets: string, policy = ''): string {
  const path = join(dir, name);
  writeFileSync(
    path,
    `version: 1
environments: { prod: {}, staging: {} }
targets:
${targets}
${policy}
schedule: { timeout: 500ms, attempts: 1 }
`,
  );
  return path;
}

beforeAll(async () => {
  if (!existsSync(bin)) throw new Error(`${bin} is missing: run "make build" (make test does it)`);
  dir = mkdtempSync(join(tmpdir(), 'bulkhead-cli-'));
  web = http.createServer((_req, res) => res.writeHead(200, { server: 'stg' }).end('ok'));
  await new Promise<void>((r) => web.listen(0, '127.0.0.1', r));
  webPort = (web.address() as net.AddressInfo).port;
  tcp = net.createServer((s) => s.destroy());
  await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', r));
  tcpPort = (tcp.address() as net.AddressInfo).port;
  closedPort = await freePort();
});
afterAll(async () => {
  await new Promise((r) => web.close(r));
  await new Promise((r) => tcp.close(r));
  rmSync(dir, { recursive: true, force: true });
});

const control = () => `  - { name: stg-web, env: staging, probe: http, url: "http://127.0.0.1:${webPort}/", expect_status: [200] }`;

describe('bulkhead validate', () => {
  it('exits 0 on a valid plan and 3 with every error on an invalid one', async () => {
    const ok = await bulkhead(['validate', 'test/fixtures/plans/valid-spec-example.yaml']);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(/valid \(2 environments, 4 targets, 1 allow rules; sha256 [0-9a-f]{64}\)/);
    const bad = await bulkhead(['validate', 'test/fixtures/plans/invalid-references.yaml']);
    expect(bad.code).toBe(3);
    const expected = readFileSync(join(root, 'test/fixtures/plans/invalid-references.errors'), 'utf8').trimEnd().split('\n');
    for (const line of expected) expect(bad.stderr).toContain(line.replace('invalid-references.yaml', 'test/fixtures/plans/invalid-references.yaml'));
  });

  it('exits 3 on a missing file, naming it', async () => {
    const r = await bulkhead(['validate', 'nope.yaml']);
    expect(r.code).toBe(3);
    expect(r.stderr).toContain('nope.yaml: cannot read the plan (ENOENT)');
  });
});

describe('bulkhead audit', () => {
  it('exits 0 when sealed: the control answers and prod refuses', async () => {
    const plan = writePlan('sealed.yaml', `${control()}\n  - { name: prod-db, env: prod, probe: tcp, host: 127.0.0.1, port: ${closedPort} }`);
    const r = await bulkhead(['audit', '--plan', plan, '--from', 'staging']);
    expect(r.stdout).toContain('SEALED');
    expect(r.code).toBe(0);
  });

  it('exits 1 on a violation and lists it', async () => {
    const plan = writePlan('leak.yaml', `${control()}\n  - { name: prod-db, env: prod, probe: tcp, host: 127.0.0.1, port: ${tcpPort} }`);
    const r = await bulkhead(['audit', '--plan', plan, '--from', 'staging']);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/Violations \(1\)[\s\S]*staging → prod-db \(prod\)\s+tcp\s+127\.0\.0\.1:\d+\s+open/);
  });

  it('exits 2 when a control fails: blocked results prove nothing', async () => {
    const plan = writePlan(
      'blind.yaml',
      `  - { name: stg-web, env: staging, probe: tcp, host: 127.0.0.1, port: ${closedPort} }\n  - { name: prod-db, env: prod, probe: tcp, host: 127.0.0.1, port: ${closedPort} }`,
    );
    const r = await bulkhead(['audit', '--plan', plan, '--from', 'staging']);
    expect(r.code).toBe(2);
    expect(r.stdout).toContain('INCONCLUSIVE');
  });

  it.each([
    [['audit', '--from', 'staging'], 'audit needs --plan FILE'],
    [['audit', '--plan', 'test/fixtures/plans/valid-spec-example.yaml'], 'audit needs --from ENV'],
    [['audit', '--plan', 'test/fixtures/plans/valid-spec-example.yaml', '--from', 'qa'], '--from: unknown environment "qa" (the plan declares: prod, staging)'],
    [['audit', '--plan', 'test/fixtures/plans/valid-spec-example.yaml', '--from', 'prod', '--format', 'xml'], '--format: expected table or json, got "xml"'],
    [['audit', '--plan', 'test/fixtures/plans/valid-spec-example.yaml', '--from', 'prod', '--timeout', 'soon'], '--timeout: expected a duration'],
    [['audit', '--bogus'], "Unknown option '--bogus'"],
    [['frobnicate'], 'unknown command "frobnicate"'],
    [['audit', '--plan', 'test/fixtures/plans/invalid-fields.yaml', '--from', 'prod'], 'targets[0].port: expected an integer 1–65535, got "abc"'],
  ])('exits 3 on usage or plan errors: %j', async (args, message) => {
    const r = await bulkhead(args);
    expect(r.code).toBe(3);
    expect(r.stderr).toContain(message);
  });

  it('--format json prints one document with the plan hash, summary and every observation', async () => {
    const plan = writePlan(
      'json.yaml',
      `${control()}\n  - { name: prod-db, env: prod, probe: tcp, host: 127.0.0.1, port: ${tcpPort} }\n  - { name: prod-old, env: prod, probe: tcp, host: 127.0.0.1, port: ${closedPort} }`,
      `policy: { allow: [ { from: staging, to: { target: prod-db }, reason: "migration", ticket: CHG-7, expires: 2020-01-01 } ] }`,
    );
    const r = await bulkhead(['audit', '--plan', plan, '--from', 'staging', '--format', 'json']);
    expect(r.code).toBe(1);
    const doc = JSON.parse(r.stdout);
    expect(doc.plan).toEqual({ path: plan, sha256: expect.stringMatching(/^[0-9a-f]{64}$/) });
    expect(doc.from).toBe('staging');
    expect(Date.parse(doc.finishedAt)).toBeGreaterThanOrEqual(Date.parse(doc.startedAt));
    expect(doc.summary.verdicts).toEqual({ pass: 2, violation: 1, inconclusive: 0, 'expected-path-down': 0 });
    expect(doc.summary.outcomes).toMatchObject({ open: 2, refused: 1 });
    const leak = doc.observations.find((o: { target: string }) => o.target === 'prod-db');
    expect(Object.keys(leak)).toEqual(expect.arrayContaining(['target', 'env', 'probe', 'address', 'port', 'outcome', 'layer', 'verdict', 'rule', 'evidence', 'timings']));
    expect(leak).toMatchObject({ env: 'prod', probe: 'tcp', address: '127.0.0.1', port: tcpPort, outcome: 'open', layer: 'tcp', verdict: 'violation' });
    // the exception expired, so the path is denied again and the rule says why
    expect(leak.rule).toEqual({ id: 'allow[0]', kind: 'exception-expired', reason: 'migration', ticket: 'CHG-7', expires: '2020-01-01' });
    expect(doc.exceptions).toEqual([expect.objectContaining({ rule: 'allow[0]', expired: true })]);
  });

  it('--report writes report.json, report.md and junit.xml', async () => {
    const plan = writePlan('report.yaml', `${control()}\n  - { name: prod-db, env: prod, probe: tcp, host: 127.0.0.1, port: ${tcpPort} }`);
    const out = join(dir, 'evidence');
    const r = await bulkhead(['audit', '--plan', plan, '--from', 'staging', '--report', out]);
    expect(r.code).toBe(1);
    const json = JSON.parse(readFileSync(join(out, 'report.json'), 'utf8'));
    expect(json.observations).toHaveLength(2);
    const md = readFileSync(join(out, 'report.md'), 'utf8');
    expect(md).toContain('## Environment matrix');
    expect(md).toMatch(/## Violations \(1\)[\s\S]*prod-db/);
    const junit = readFileSync(join(out, 'junit.xml'), 'utf8');
    expect(junit).toMatch(/^<\?xml version="1.0" encoding="UTF-8"\?>/);
    expect(junit).toContain('<testsuites name="bulkhead audit from staging" tests="2" failures="1" errors="0">');
    expect(junit).toContain('<failure type="violation"');
  });
});
