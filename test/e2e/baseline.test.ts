// End to end in network namespaces (root): the lab's firewall seals prod, staging and dev from each other, and
// the real `bulkhead audit`, run inside each environment, proves it; then one hole, a REJECT policy and a
// DNS forwarding leak each change exactly the outcomes they should. Prints a timeline of the run.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { namespacePids, namespacesWithPrefix, removeStaleRuns, run } from '../../bench/netns.js';
import type { AuditReport, JudgedObservation } from '../../cli/report.js';
import { address, CLI, createLab, labUnavailable, ENVS, PORT, PREFIX, type Env, type Lab } from './lab.js';

const skip = labUnavailable();

const t0 = performance.now();
const timeline: string[] = [];
const mark = (what: string) => timeline.push(`${((performance.now() - t0) / 1000).toFixed(1).padStart(6)} s  ${what}`);

// A bare NATS client: one TCP connection, CONNECT with a password, PING every 100 ms, PONGs echoed to stdout.
const NATS_SESSION = `
const [host, port, pass] = process.argv.slice(1);
const socket = require('node:net').connect({ host, port: Number(port) });
socket.once('data', () => {
  socket.write('CONNECT ' + JSON.stringify({ user: 'agent-dev', pass, verbose: false, pedantic: false }) + '\\r\\n');
  setInterval(() => socket.write('PING\\r\\n'), 100);
});
socket.on('data', (d) => process.stdout.write(d.toString().replace(/^PING\\r\\n/gm, '')));
socket.on('close', () => { process.stdout.write('closed\\n'); process.exit(1); });
socket.on('error', (e) => process.stdout.write('-ERR ' + e.code + '\\n'));
const parent = process.ppid;
setInterval(() => { if (process.ppid !== parent) process.exit(0); }, 500).unref();
`;

interface Audit {
  readonly code: number;
  readonly report: AuditReport;
}

/** Where a denied path's attempt went: to the firewall, to the prober's own resolver, or nowhere (the name did not resolve). */
const through = (o: JudgedObservation) => (o.address === null ? 'name' : o.probe === 'dns' ? 'own-resolver' : 'firewall');
const key = (o: JudgedObservation) => `${o.target}@${o.address ?? o.evidence.host}`;
const denied = (r: AuditReport) => r.observations.filter((o) => o.expectation === 'deny');
/** Outcomes of the denied paths that crossed the router, by path. */
const acrossRouter = (r: AuditReport) => Object.fromEntries(denied(r).filter((o) => through(o) === 'firewall').map((o) => [key(o), o.outcome]));

describe.skipIf(skip)('the namespace lab: audits from inside each environment', () => {
  let lab: Lab;
  let plan: string;

  const audit = async (env: Env): Promise<Audit> => {
    const started = performance.now();
    const result = await lab.exec(env, ['audit', '--plan', plan, '--from', env, '--format', 'json']);
    let report: AuditReport;
    try {
      report = JSON.parse(result.stdout) as AuditReport;
    } catch {
      throw new Error(`audit from ${env} exited ${result.code} without a JSON report:\n${result.stderr}\n${result.stdout}`);
    }
    const { verdicts } = report.summary;
    mark(`audit from ${env}: exit ${result.code}, ${report.summary.result} (${verdicts.pass} pass, ${verdicts.violation} violation, ${verdicts.inconclusive} inconclusive) in ${Math.round(performance.now() - started)} ms`);
    return { code: result.code, report };
  };

  /** Everything a sealed audit must show: exit 0, every control open, NATS allowed and open, every denied path blocked. */
  const expectSealed = (env: Env, { code, report }: Audit, crossing: 'filtered' | 'refused' | 'unreachable') => {
    expect(report.from).toBe(env);
    expect(report.summary.controls.failed).toEqual([]);
    const controls = report.observations.filter((o) => o.expectation === 'control');
    expect(controls.length).toBeGreaterThanOrEqual(2);
    expect(controls.filter((o) => o.outcome !== 'open').map(key)).toEqual([]);
    expect(report.observations.filter((o) => o.expectation === 'allow').map((o) => [o.target, o.outcome, o.verdict])).toEqual([['mgmt-nats', 'open', 'pass']]);
    const paths = denied(report);
    // Names of other environments are refused by this environment's resolver; addresses die at the router.
    expect(paths.filter((o) => through(o) !== 'firewall' && o.outcome !== 'unresolved').map(key)).toEqual([]);
    expect(paths.filter((o) => through(o) === 'own-resolver' && o.evidence.dns?.rcode !== 'REFUSED').map(key)).toEqual([]);
    const crossed = acrossRouter(report);
    // Every address of another environment's target: 4 in prod plus one web service per other environment.
    expect(Object.keys(crossed)).toHaveLength(env === 'prod' ? 2 : 5);
    expect(Object.entries(crossed).filter(([, outcome]) => outcome !== crossing), `from ${env}: paths across the router that are not ${crossing}`).toEqual([]);
    expect(paths.every((o) => o.verdict === 'pass')).toBe(true);
    expect([code, report.summary.result]).toEqual([0, 'sealed']);
  };

  beforeAll(async () => {
    if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run "make build" first (make e2e does it)`);
    lab = await createLab();
    plan = lab.plan().path;
    mark(`lab up: ${ENVS.length + 2} namespaces, PostgreSQL, Redis, HTTPS, 3 dnsmasq, 2 HTTP, nats-server (${lab.id})`);
  }, 90_000);

  afterAll(() => {
    try {
      if (lab) {
        lab.destroy();
        mark('lab destroyed');
      }
    } finally {
      console.log(`e2e timeline:\n${timeline.join('\n')}`);
    }
  });

  it('baseline: from every environment, every cross-environment path is filtered or unresolved and the audit exits 0', async () => {
    const audits = await Promise.all(ENVS.map(audit));
    ENVS.forEach((env, i) => expectSealed(env, audits[i]!, 'filtered'));
    // prod's own servers are what the lab says they are: Redis wants a password, the API speaks TLS as api.prod.internal.
    const prod = Object.fromEntries(audits[0]!.report.observations.filter((o) => o.expectation === 'control').map((o) => [o.target, o.evidence]));
    expect(prod['prod-cache']?.redis?.reply).toMatch(/^-NOAUTH/);
    expect(prod['prod-api']).toMatchObject({ http: { status: 200, server: 'bulkhead-lab' }, tls: { subject: expect.stringContaining('CN=api.prod.internal') } });
    expect(prod['prod-db']?.postgres?.sslResponse).toBe('N');
    expect(prod['prod-names']?.dns?.answers.map((a) => a.data)).toEqual([address('prod', 'db')]);
  });

  it('a rule letting staging reach prod:5432 opens prod-db (a Postgres answer) and only it; removing it seals again', async () => {
    const before = acrossRouter((await audit('staging')).report);
    const hole = lab.allow('staging', 'prod', 'tcp', 5432);
    mark(`nft: ${hole.description} (handle ${hole.handle})`);
    let opened: Audit;
    try {
      opened = await audit('staging');
    } finally {
      hole.remove();
      mark(`nft: removed handle ${hole.handle}`);
    }
    const violations = opened.report.observations.filter((o) => o.verdict === 'violation');
    expect(violations.map((o) => [key(o), o.outcome, o.layer])).toEqual([[`prod-db@${address('prod', 'db')}`, 'open', 'app']]);
    // SSLRequest answered with N: the server said something in its own protocol, without credentials.
    expect(violations[0]!.evidence.postgres?.sslResponse).toBe('N');
    expect(acrossRouter(opened.report)).toEqual({ ...before, [`prod-db@${address('prod', 'db')}`]: 'open' });
    expect(opened.code).toBe(1);
    expectSealed('staging', await audit('staging'), 'filtered');
  });

  it('REJECT instead of DROP: TCP resets make denied paths refused, ICMP admin-prohibited makes them unreachable; still exit 0', async () => {
    try {
      lab.setDenyMode('reject');
      mark('nft: deny chain → reject with tcp reset (icmpx admin-prohibited for the rest)');
      const rejected = await Promise.all(ENVS.map(audit));
      ENVS.forEach((env, i) => expectSealed(env, rejected[i]!, 'refused'));
      lab.setDenyMode('prohibit');
      mark('nft: deny chain → reject with icmpx admin-prohibited');
      const prohibited = await audit('staging');
      expectSealed('staging', prohibited, 'unreachable');
      expect(new Set(denied(prohibited.report).filter((o) => through(o) === 'firewall').map((o) => o.evidence.errno))).toEqual(new Set(['EHOSTUNREACH']));
    } finally {
      lab.setDenyMode('drop');
      mark('nft: deny chain → drop');
    }
  });

  it("staging's resolver forwarding prod.internal to prod's DNS: prod names resolve from staging, flagged as prod addresses", async () => {
    let leaked: Audit;
    let dev: Audit;
    try {
      await lab.forwardProdInternal(true);
      mark('staging dnsmasq: server=/prod.internal/ → prod DNS, with nft udp+tcp 53 staging → prod');
      [leaked, dev] = await Promise.all([audit('staging'), audit('dev')]);
    } finally {
      await lab.forwardProdInternal(false);
      mark('staging dnsmasq: forwarding removed, nft rules removed');
    }
    const violations = leaked.report.observations.filter((o) => o.verdict === 'violation');
    // The name answers through staging's own resolver, and the resolver path it needs is now open too.
    expect(violations.map((o) => [o.target, o.outcome]).sort()).toEqual([['prod-dns', 'open'], ['prod-names', 'open']]);
    const names = violations.find((o) => o.target === 'prod-names')!;
    expect(names.evidence.dns?.answers.map((a) => a.data)).toEqual([address('prod', 'db')]);
    expect(names.evidence.dns?.leaks).toEqual([{ address: address('prod', 'db'), env: 'prod', network: '198.18.10.0/24' }]);
    // prod-db's name now resolves from staging, so no `unresolved` name path is left; its address stays filtered.
    expect(leaked.report.observations.filter((o) => o.target === 'prod-db').map((o) => [o.address, o.outcome])).toEqual([[address('prod', 'db'), 'filtered']]);
    expect(leaked.code).toBe(1);
    expectSealed('dev', dev, 'filtered');
    expectSealed('staging', await audit('staging'), 'filtered');
  });

  it('partition(dev, mgmt) cuts dev off from NATS, established connections included, and only dev; heal() restores it', async () => {
    // A NATS client session opened before the cut (as an agent's is): CONNECT as agent-dev, then PING every 100 ms.
    const session = lab.start('dev', 'dev nats session', process.execPath, ['-e', NATS_SESSION, address('mgmt', 'nats'), String(PORT.nats), lab.nats.passwords.dev]);
    const pongs = () => (session.log().match(/PONG/g) ?? []).length;
    let cut: Audit[];
    let during: number[];
    try {
      await expect.poll(pongs, { timeout: 5_000 }).toBeGreaterThan(2);
      lab.partition('dev');
      mark('nft: dev ⇹ mgmt cut both ways');
      const atCut = pongs();
      cut = await Promise.all([audit('dev'), audit('staging')]);
      // At most one PONG already in flight when the rules landed; none for the seconds after.
      during = [atCut, pongs()];
    } finally {
      lab.heal('dev');
      mark('nft: dev ⇹ mgmt healed');
    }
    expect(during[1]! - during[0]!).toBeLessThanOrEqual(1);
    // The same TCP connection carries PONGs again once healed (retransmission brings the queued PINGs).
    await expect.poll(pongs, { timeout: 10_000 }).toBeGreaterThan(during[1]! + 2);
    expect(session.log()).not.toMatch(/-ERR|closed/);
    await session.stop();
    const nats = (a: Audit) => a.report.observations.filter((o) => o.target === 'mgmt-nats').map((o) => [o.outcome, o.verdict]);
    expect(nats(cut[0]!)).toEqual([['filtered', 'expected-path-down']]);
    expect(nats(cut[1]!)).toEqual([['open', 'pass']]);
    expectSealed('dev', await audit('dev'), 'filtered');
  });

  it('the host link reaches nats-server in mgmt, which runs deploy/nats/nats-server.conf (auth required, JetStream)', async () => {
    const link = lab.hostLink!;
    const info = await new Promise<string>((resolve, reject) => {
      const socket = net.connect({ host: link.mgmt, port: PORT.nats });
      const timer = setTimeout(() => socket.destroy(new Error(`no INFO from ${link.mgmt}:${PORT.nats} within 3 s`)), 3_000);
      socket.once('data', (data) => {
        clearTimeout(timer);
        socket.destroy();
        resolve(data.toString());
      });
      socket.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
    expect(info).toMatch(/^INFO /);
    expect(JSON.parse(info.slice(5))).toMatchObject({ auth_required: true, jetstream: true, port: PORT.nats });
  });

  it('destroy() stops every process and removes every namespace of the lab, the host link included', async () => {
    const pids = (['prod', 'staging', 'dev', 'mgmt', 'router'] as const).flatMap((role) => namespacePids(lab.ns(role)));
    expect(pids.length).toBeGreaterThanOrEqual(8);
    const hostIf = `${lab.id}h`;
    expect(run('ip', ['-o', 'link', 'show', hostIf])).toContain(hostIf);
    lab.destroy();
    mark('lab destroyed');
    expect(namespacesWithPrefix(`${lab.id}-`)).toEqual([]);
    // Stopped synchronously; the exited children are reaped once the event loop runs again.
    await expect.poll(() => pids.filter((pid) => existsSync(`/proc/${pid}`)), { timeout: 5_000 }).toEqual([]);
    expect(spawnSync('ip', ['link', 'show', hostIf]).status).not.toBe(0);
    lab = undefined as unknown as Lab;
  });

  it("a dead run's namespaces, and the processes left in them, are removed by the next run", async () => {
    const dead = spawnSync('true').pid!;
    const name = `${PREFIX}${dead}-prod`;
    run('ip', ['netns', 'add', name]);
    const orphan = spawn('ip', ['netns', 'exec', name, 'sleep', '60'], { stdio: 'ignore' });
    const exited = new Promise<void>((resolve) => orphan.once('exit', () => resolve()));
    try {
      await expect.poll(() => namespacePids(name), { timeout: 5_000 }).toEqual([orphan.pid]);
      expect(removeStaleRuns(PREFIX)).toContain(name);
      await exited;
      expect(namespacesWithPrefix(name)).toEqual([]);
    } finally {
      if (orphan.exitCode === null && orphan.signalCode === null) orphan.kill('SIGKILL');
      spawnSync('ip', ['netns', 'del', name]);
    }
  });
});
