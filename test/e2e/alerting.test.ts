// The end-to-end proof of alerting (root): in the namespace lab, agents inside prod, staging and dev report over
// nats-server to the real controller in mgmt (PostgreSQL history), which pages a fake PagerDuty and posts to a fake
// Slack on the host link. Scenarios run in order on one lab: a sealed baseline pages nobody; a firewall hole pages
// and its fix resolves; a DNS forwarding leak does the same; REJECT instead of DROP changes outcomes and pages nobody;
// a killed agent is a finding and resolves nothing; a partitioned agent loses nothing; a controller killed in the
// middle of an incident neither pages twice nor forgets the resolve. Each wait's deadline comes from the plan's
// timings. Prints a timeline per scenario: what changed when, and when each alert arrived.
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { address, CLI, createLab, labUnavailable, ENVS, PORT, type Lab, type RuleHandle } from './lab.js';
import { sleep, until } from '../helpers/wait.js';
import { agentKeys, LabFleet, type PathView } from './lab-fleet.js';

const skip = labUnavailable();

// The plan's timings, and the deadlines that follow from them.
const INTERVAL_MS = 2_000;
const JITTER = 0.1;
const TIMEOUT_MS = 500;
const ATTEMPTS = 2;
const STAGGER_MS = 200;
const GROUP_WAIT_MS = 1_000;
const GROUP_INTERVAL_MS = 2_000;
const RESOLVE_AFTER = 2;
const SILENT_AFTER = 3;
/** The controller's tick (controller/ingest.ts, fixed): silent agents and stale paths are noticed on it. */
const TICK_MS = 5_000;
/** A loaded two-core machine: process start, a commit, an HTTP request. */
const MARGIN_MS = 4_000;
/** From a change until the n-th cycle after it has finished: the next start is at most interval × (1 + jitter) away. */
const cycles = (n: number) => n * INTERVAL_MS * (1 + JITTER) + STAGGER_MS + ATTEMPTS * TIMEOUT_MS;
const DEADLINE = {
  trigger: cycles(1) + GROUP_INTERVAL_MS + MARGIN_MS,
  resolve: cycles(RESOLVE_AFTER) + GROUP_INTERVAL_MS + MARGIN_MS,
  silent: SILENT_AFTER * INTERVAL_MS + TICK_MS + GROUP_INTERVAL_MS + MARGIN_MS,
  stale: SILENT_AFTER * INTERVAL_MS + TICK_MS + MARGIN_MS,
};
const PARTITION_MS = 60_000;

/** What the controller sends as the dedup key, computed here independently of controller/findings.ts. */
const dedupKeyOf = (findingKey: string) => `bulkhead:v1:${createHash('sha256').update(findingKey).digest('hex')}`;
const pathKey = (from: string, target: string, host: string, port: number) => `${from}→${target}@${host}:${port}`;
const violation = (from: string, target: string, host: string, port: number) => `violation:${pathKey(from, target, host, port)}`;
/** Denied paths whose attempt crossed the router (not a name that did not resolve, not a question to one's own resolver). */
const acrossRouter = (paths: PathView[]) => paths.filter((p) => p.expectation === 'deny' && p.address !== null && p.probe !== 'dns');

const t0 = performance.now();
const wallT0 = Date.now();
const seconds = (ms = performance.now() - t0) => (ms / 1000).toFixed(1).padStart(6);
const timeline: string[] = [];
/** Called before each entry, so an alert that has arrived is on the timeline before whatever the test does next. */
let beforeMark = () => {};
/** Records what happened now, or at `wallMs` (a time read from a process's log). */
const mark = (what: string, wallMs?: number) => {
  beforeMark();
  timeline.push(`${seconds(wallMs === undefined ? undefined : wallMs - wallT0)} s  ${what}`);
};
/** Timeline lines in time order (entries dated from logs are added after the fact). */
const inOrder = (lines: string[]) => lines.map((line, i) => ({ line, i, t: Number(line.slice(0, 6)) })).sort((a, b) => a.t - b.t || a.i - b.i).map((x) => x.line);

describe.skipIf(skip)('alerting end to end: agents in prod, staging and dev, the controller in mgmt, PagerDuty and Slack on the host link', () => {
  let lab: Lab;
  let fleet: LabFleet;
  let plan: string;
  let watcher: NodeJS.Timeout | undefined;
  /** Finding keys by dedup key, learnt from triggers (a resolve carries only the dedup key). */
  const findingOf = new Map<string, string>();

  /** Records each request the fakes receive in the timeline as it arrives (polled every 50 ms, and before every entry). */
  const watchArrivals = () => {
    let pdSeen = 0;
    let slackSeen = 0;
    const arrived = (what: string) => timeline.push(`${seconds()} s    ${what}`);
    const scan = () => {
      for (; pdSeen < fleet.pd.received.length; pdSeen++) {
        const event = JSON.parse(fleet.pd.received[pdSeen]!.body) as { event_action?: string; dedup_key?: string; payload?: { custom_details?: { finding?: string } } };
        const finding = event.payload?.custom_details?.finding;
        if (finding !== undefined && event.dedup_key !== undefined) findingOf.set(event.dedup_key, finding);
        arrived(`PagerDuty ← ${event.event_action} ${findingOf.get(event.dedup_key ?? '') ?? event.dedup_key}`);
      }
      for (; slackSeen < fleet.slack.received.length; slackSeen++) {
        const text = (JSON.parse(fleet.slack.received[slackSeen]!.body) as { text?: string }).text ?? '';
        arrived(`Slack ← ${text.split('\n')[0]}`);
      }
    };
    beforeMark = scan;
    watcher = setInterval(scan, 50);
  };

  /** Firewall holes a scenario opened and has not closed yet: closed when it ends, so a failure does not spill over. */
  const holes = new Set<RuleHandle>();

  /** A scenario: its timeline is printed when it ends, passed or not. */
  const scenario = (name: string, body: () => Promise<void>, timeoutMs = 90_000) =>
    it(name, async () => {
      const from = timeline.length;
      mark(`— ${name}`);
      let passed = false;
      try {
        await body();
        // Whatever this scenario owed has arrived before the next one counts what arrives.
        await wait('every notification owed to be delivered', DEADLINE.trigger, () => fleet.deliveriesSettled());
        passed = true;
      } finally {
        for (const hole of holes) close(hole);
        // After a failure, still let what is owed arrive, so the next scenario is judged on its own alerts.
        if (!passed) await until('deliveries to settle after a failure', DEADLINE.resolve, () => fleet?.deliveriesSettled()).catch(() => undefined);
        console.log(`${inOrder(timeline.slice(from)).join('\n')}\n`);
      }
    }, timeoutMs);

  const controllerLog = () => `controller log:\n${fleet.controller?.log().slice(-4000) ?? '(none)'}`;
  const wait = <T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined | false> | T | undefined | false) => until(what, timeoutMs, probe, { context: controllerLog });
  const finding = async (key: string) => (await fleet.findings()).find((f) => f.key === key);
  const firing = async () => (await fleet.findings()).filter((f) => f.status === 'firing').map((f) => f.key).sort();
  /** Waits for a PagerDuty event of `action` for this finding; returns it once accepted. */
  const pagerDuty = (action: 'trigger' | 'resolve', findingKey: string, timeoutMs: number, nth = 1) =>
    wait(`PagerDuty ${action} #${nth} for ${findingKey}`, timeoutMs, () => fleet.pdEvents(dedupKeyOf(findingKey)).filter((e) => e.event_action === action)[nth - 1]);
  const slackSince = (from: number) => fleet.slack.accepted.slice(from).map((m) => m.text);
  const noRejections = () => {
    expect(fleet.pd.rejected.map((r) => r.problems)).toEqual([]);
    expect(fleet.slack.rejected.map((r) => r.problems)).toEqual([]);
  };
  function allow(...args: Parameters<Lab['allow']>): RuleHandle {
    const rule = lab.allow(...args);
    holes.add(rule);
    mark(`nft: ${rule.description}`);
    return rule;
  }
  function close(rule: RuleHandle): void {
    rule.remove();
    holes.delete(rule);
    mark(`nft: removed ${rule.description}`);
  }

  beforeAll(async () => {
    if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run "make build" first (make e2e does it)`);
    lab = await createLab();
    fleet = await LabFleet.start(lab);
    watchArrivals();
    plan = lab.plan({
      schedule: { interval: `${INTERVAL_MS}ms`, jitter: JITTER, timeout: `${TIMEOUT_MS}ms`, concurrency: 64, attempts: ATTEMPTS, stagger: `${STAGGER_MS}ms` },
      alerting: {
        open_threshold: 1,
        resolve_after: RESOLVE_AFTER,
        silent_after: SILENT_AFTER,
        group_wait: `${GROUP_WAIT_MS}ms`,
        group_interval: `${GROUP_INTERVAL_MS}ms`,
        receivers: fleet.receivers(),
        routes: [{ receivers: ['pd', 'slack'] }],
      },
    }).path;
    await fleet.startController(plan);
    for (const env of ENVS) fleet.startAgent(env, plan);
    mark(`lab up (${lab.id}): controller in mgmt on PostgreSQL, agents in ${ENVS.join(', ')}, PagerDuty and Slack at ${lab.hostLink!.host}`);
    console.log(`${timeline.join('\n')}\n`);
  }, 120_000);

  afterAll(async () => {
    if (watcher) clearInterval(watcher);
    try {
      await fleet?.close();
    } finally {
      // Stops every process the lab started (controller, agents, servers) by pid and removes the namespaces.
      lab?.destroy();
      console.log(`${seconds()} s  lab destroyed`);
    }
  });

  scenario('1. sealed baseline: every cross-environment path blocked, every control passing, nobody paged', async () => {
    await wait('three cycles from every agent, every control passing', cycles(3) + 2 * MARGIN_MS, async () => {
      const agents = await fleet.agentViews();
      const batches = await fleet.db.query<{ agent: string; n: string }>(`SELECT agent, count(DISTINCT split_part(id, '#', 1)) AS n FROM bulkhead.observations GROUP BY agent`);
      const seen = Object.fromEntries(batches.rows.map((r) => [r.agent, Number(r.n)]));
      return agentKeys().every((key) => agents.find((a) => a.key === key)?.controls?.failed.length === 0) && ENVS.every((env) => (seen[`${env}-1`] ?? 0) >= 3);
    });
    mark('every agent has reported 3 cycles');
    await sleep(GROUP_INTERVAL_MS + MARGIN_MS); // anything owed by now would have been sent
    const paths = await fleet.paths();
    const agents = await fleet.agentViews();
    expect(agents.map((a) => [a.key, a.silent, a.controls?.failed]).sort()).toEqual(agentKeys().map((key) => [key, false, []]).sort());
    expect(await firing()).toEqual([]);
    expect((await fleet.findings()).filter((f) => f.kind === 'control-failed')).toEqual([]);
    // 2 from prod (staging's and dev's web services), 5 each from staging and dev (prod's four servers, the other's web).
    const crossing = acrossRouter(paths);
    expect(crossing).toHaveLength(12);
    expect(crossing.filter((p) => p.last.outcome !== 'filtered' || p.state !== 'ok').map((p) => [p.key, p.last.outcome, p.state])).toEqual([]);
    // Every other denied path is a name that does not resolve here: refused by this environment's resolver.
    expect(paths.filter((p) => p.expectation === 'deny' && !crossing.includes(p) && p.last.outcome !== 'unresolved').map((p) => p.key)).toEqual([]);
    expect(paths.filter((p) => p.expectation === 'control' && p.last.outcome !== 'open').map((p) => p.key)).toEqual([]);
    expect(paths.filter((p) => p.expectation === 'allow').map((p) => [p.key, p.last.outcome, p.state]).sort()).toEqual(
      ENVS.map((env) => [pathKey(env, 'mgmt-nats', address('mgmt', 'nats'), PORT.nats), 'open', 'ok']).sort(),
    );
    expect(fleet.pd.received).toEqual([]);
    expect(fleet.slack.received).toEqual([]);
    mark(`sealed: ${crossing.length} paths across the router filtered, 0 findings, 0 alerts`);
  });

  const prodDb = violation('staging', 'prod-db', address('prod', 'db'), PORT.postgres);
  let prodDbHole: RuleHandle | undefined;
  let pdAfterTrigger = 0;

  scenario('2. misconfiguration: staging → prod:5432 pages PagerDuty and Slack for exactly that path', async () => {
    const slackFrom = fleet.slack.accepted.length;
    prodDbHole = allow('staging', 'prod', 'tcp', PORT.postgres);
    holes.delete(prodDbHole); // scenario 3 closes it: that is the fix
    const trigger = await pagerDuty('trigger', prodDb, DEADLINE.trigger);
    await wait('the FIRING message at Slack', DEADLINE.trigger, () => slackSince(slackFrom).some((t) => t.startsWith('FIRING')));
    expect(trigger).toMatchObject({
      routing_key: fleet.routingKey,
      payload: { severity: 'critical', class: 'violation', custom_details: { finding: prodDb, details: { outcome: 'open', layer: 'app', evidence: { postgres: { sslResponse: 'N' } } } } },
    });
    // The controller's own record says the same: the path is open through the Postgres handshake.
    expect(await finding(prodDb)).toMatchObject({
      kind: 'violation',
      status: 'firing',
      incident: 1,
      labels: { from_env: 'staging', to_env: 'prod', target: 'prod-db' },
      details: { outcome: 'open', layer: 'app', evidence: { postgres: { sslResponse: 'N' } } },
      receivers: ['pd', 'slack'],
    });
    // Nothing else: another cycle and group interval later, still only this path fires and only it was sent.
    await sleep(cycles(1) + GROUP_INTERVAL_MS);
    expect(await firing()).toEqual([prodDb]);
    expect(fleet.pd.accepted.map((e) => [e.event_action, e.dedup_key])).toEqual([['trigger', dedupKeyOf(prodDb)]]);
    const texts = slackSince(slackFrom);
    expect(texts).toHaveLength(1);
    expect(texts[0]).toMatch(/^FIRING: staging → prod-db \(prod\)/);
    noRejections();
    pdAfterTrigger = fleet.pd.accepted.length;
  });

  scenario('3. the fix: removing the rule resolves it at PagerDuty (same routing and dedup key) and Slack', async () => {
    expect(prodDbHole, 'scenario 2 opened the hole').toBeDefined();
    const slackFrom = fleet.slack.accepted.length;
    close(prodDbHole!);
    const resolve = await pagerDuty('resolve', prodDb, DEADLINE.resolve);
    await wait('the RESOLVED message at Slack', DEADLINE.resolve, () => slackSince(slackFrom).some((t) => t.startsWith('RESOLVED')));
    const trigger = fleet.pdEvents(dedupKeyOf(prodDb))[0]!;
    expect(resolve).toEqual({ routing_key: trigger.routing_key, dedup_key: trigger.dedup_key, event_action: 'resolve' });
    expect(fleet.pd.accepted.slice(pdAfterTrigger).map((e) => e.event_action)).toEqual(['resolve']);
    expect(fleet.pd.open.size).toBe(0);
    expect(fleet.pd.dropped).toEqual([]);
    expect(slackSince(slackFrom)).toEqual([expect.stringMatching(/^RESOLVED: staging → prod-db \(prod\)/)]);
    expect(await finding(prodDb)).toMatchObject({ status: 'resolved', incident: 1 });
    expect(await firing()).toEqual([]);
    noRejections();
  });

  scenario("4. DNS leak: staging's resolver forwarding prod.internal pages for the prod names; turning it off resolves", async () => {
    const pdFrom = fleet.pd.accepted.length;
    const slackFrom = fleet.slack.accepted.length;
    let names: string | undefined;
    // The forwarding needs udp+tcp 53 staging → prod, so prod's resolver itself (prod-dns over TCP) opens too.
    const dns = violation('staging', 'prod-dns', address('prod', 'dns'), PORT.dns);
    try {
      await lab.forwardProdInternal(true);
      mark('staging dnsmasq: server=/prod.internal/ → prod DNS, with nft udp+tcp 53 staging → prod');
      const leak = await wait('the prod-names violation', DEADLINE.trigger, async () => (await fleet.findings()).find((f) => f.labels.target === 'prod-names' && f.labels.from_env === 'staging' && f.status === 'firing'));
      names = leak.key;
      expect(leak.details).toMatchObject({ outcome: 'open', layer: 'dns' });
      expect(leak.details.evidence.dns.answers.map((a: { data: string }) => a.data)).toEqual([address('prod', 'db')]);
      expect(leak.details.evidence.dns.leaks).toEqual([{ address: address('prod', 'db'), env: 'prod', network: '198.18.10.0/24' }]);
      await pagerDuty('trigger', names, DEADLINE.trigger);
      await pagerDuty('trigger', dns, DEADLINE.trigger);
      await wait('a FIRING message at Slack', DEADLINE.trigger, () => slackSince(slackFrom).some((t) => t.startsWith('FIRING')));
      expect(await firing()).toEqual([names, dns].sort());
    } finally {
      await lab.forwardProdInternal(false);
      mark('staging dnsmasq: forwarding removed, nft rules removed');
    }
    await pagerDuty('resolve', names!, DEADLINE.resolve);
    await pagerDuty('resolve', dns, DEADLINE.resolve);
    await wait('a RESOLVED message at Slack', DEADLINE.resolve, () => slackSince(slackFrom).some((t) => t.startsWith('RESOLVED')));
    const sent = fleet.pd.accepted.slice(pdFrom).map((e) => `${e.event_action} ${findingOf.get(e.dedup_key!)}`);
    expect(sent.sort()).toEqual([`resolve ${dns}`, `resolve ${names}`, `trigger ${dns}`, `trigger ${names}`].sort());
    expect(slackSince(slackFrom).join('\n')).toContain('prod-names');
    expect(await firing()).toEqual([]);
    noRejections();
  });

  scenario('5. REJECT instead of DROP: outcomes turn refused, then unreachable, and nobody is paged', async () => {
    const pdFrom = fleet.pd.received.length;
    const slackFrom = fleet.slack.received.length;
    const crossingAfter = (since: string, outcome: string) =>
      wait(`every path across the router to be ${outcome}`, cycles(1) + MARGIN_MS, async () => {
        const crossing = acrossRouter(await fleet.paths());
        return crossing.length === 12 && crossing.every((p) => p.last.at > since && p.last.outcome === outcome) && crossing;
      });
    try {
      let since = new Date().toISOString();
      lab.setDenyMode('reject');
      mark('nft: deny chain → reject with tcp reset');
      const refused = await crossingAfter(since, 'refused');
      mark(`all ${refused.length} paths across the router refused`);
      since = new Date().toISOString();
      lab.setDenyMode('prohibit');
      mark('nft: deny chain → icmpx admin-prohibited');
      const unreachable = await crossingAfter(since, 'unreachable');
      mark(`all ${unreachable.length} paths across the router unreachable`);
      expect(new Set(unreachable.map((p) => p.last.evidence.errno))).toEqual(new Set(['EHOSTUNREACH']));
      // Blocked is blocked: nothing fires or is pending (paths resolved earlier stay resolved, which counts as ok).
      expect([...refused, ...unreachable].filter((p) => !['ok', 'resolved'].includes(p.state) || p.last.verdict !== 'pass').map((p) => p.key)).toEqual([]);
    } finally {
      const since = new Date().toISOString();
      lab.setDenyMode('drop');
      mark('nft: deny chain → drop');
      await crossingAfter(since, 'filtered');
    }
    await sleep(GROUP_INTERVAL_MS + MARGIN_MS);
    expect(await firing()).toEqual([]);
    expect(fleet.pd.received.slice(pdFrom)).toEqual([]);
    expect(fleet.slack.received.slice(slackFrom)).toEqual([]);
    mark('no alert');
  });

  const devCache = violation('dev', 'prod-cache', address('prod', 'cache'), PORT.redis);
  const devSilent = 'agent-silent:dev/dev-1';

  scenario('6. agent loss: SIGKILLed, the dev agent is a silent-agent finding, and none of its paths resolves on silence', async () => {
    const hole = allow('dev', 'prod', 'tcp', PORT.redis);
    await pagerDuty('trigger', devCache, DEADLINE.trigger);
    const before = new Map((await fleet.paths()).filter((p) => p.from === 'dev').map((p) => [p.key, p.state]));
    expect(before.get(pathKey('dev', 'prod-cache', address('prod', 'cache'), PORT.redis))).toBe('firing');
    const pid = await fleet.kill(fleet.agents.dev);
    mark(`dev agent SIGKILLed (pid ${pid})`);
    close(hole); // nothing can observe the path now: only silence could (wrongly) close it
    await pagerDuty('trigger', devSilent, DEADLINE.silent);
    expect(await finding(devSilent)).toMatchObject({ kind: 'agent-silent', status: 'firing', labels: { from_env: 'dev' }, receivers: ['pd', 'slack'] });
    expect((await fleet.agentViews()).find((a) => a.key === 'dev/dev-1')).toMatchObject({ silent: true });
    // The firing path goes stale and keeps firing; nothing of dev's moves to resolved.
    await wait('the dev → prod-cache violation to be stale', DEADLINE.stale, async () => (await finding(devCache))?.stale === true);
    const after = (await fleet.paths()).filter((p) => p.from === 'dev');
    expect(after.filter((p) => p.state === 'resolved' && before.get(p.key) !== 'resolved').map((p) => p.key)).toEqual([]);
    expect(after.filter((p) => before.get(p.key) === 'firing').map((p) => [p.key, p.state, p.stale])).toEqual([[pathKey('dev', 'prod-cache', address('prod', 'cache'), PORT.redis), 'firing', true]]);
    expect(await finding(devCache)).toMatchObject({ status: 'firing', stale: true, incident: 1 });
    expect(fleet.pdEvents(dedupKeyOf(devCache)).map((e) => e.event_action)).toEqual(['trigger']);
    mark(`dev → prod-cache still firing (stale), agent-silent firing`);
    noRejections();
  });

  const devApi = violation('dev', 'prod-api', address('prod', 'web'), PORT.https);
  const devNats = `expected-path-down:${pathKey('dev', 'mgmt-nats', address('mgmt', 'nats'), PORT.nats)}`;

  scenario(
    '7. partition: dev cut off from mgmt for 60 s while a dev path opens and closes; afterwards every observation arrives once, and the alert and its resolve are sent',
    async () => {
      fleet.startAgent('dev', plan);
      mark(`dev agent started again (pid ${fleet.agents.dev.child.pid})`);
      // Back: its heartbeat ends the silence, and its blocked observations resolve what it saw open.
      await pagerDuty('resolve', devSilent, DEADLINE.resolve + MARGIN_MS);
      await pagerDuty('resolve', devCache, DEADLINE.resolve + MARGIN_MS);
      const bootId = await wait('the dev agent boot id', 5_000, () => /"bootId":"([0-9a-f]+)"/.exec(fleet.agents.dev.log())?.[1]);

      lab.partition('dev');
      const cutAt = performance.now();
      mark('nft: dev ⇹ mgmt cut both ways');
      let healedAt: string;
      try {
        await sleep(2 * INTERVAL_MS);
        const hole = allow('dev', 'prod', 'tcp', PORT.https);
        await sleep(3 * INTERVAL_MS);
        close(hole);
        await sleep(PARTITION_MS - (performance.now() - cutAt));
        // The controller heard nothing of it, and said so: dev's agent went silent.
        expect(fleet.pdEvents(dedupKeyOf(devApi))).toEqual([]);
        expect(fleet.pdEvents(dedupKeyOf(devSilent)).map((e) => e.event_action)).toEqual(['trigger', 'resolve', 'trigger']);
      } finally {
        healedAt = new Date().toISOString();
        lab.heal('dev');
        mark('nft: dev ⇹ mgmt healed');
      }

      // The agent's NATS connection outlives the cut (the client pings every 2 min), so what it queued goes out when
      // TCP retransmits: its backoff doubles, so the first retransmission after a minute of loss comes within about
      // another minute. Then the controller needs what any change needs.
      const drained = PARTITION_MS + DEADLINE.resolve;
      await pagerDuty('trigger', devApi, drained);
      await pagerDuty('resolve', devApi, drained);
      await pagerDuty('resolve', devSilent, drained, 2);
      await pagerDuty('resolve', devNats, drained);
      await wait("the dev agent's outbox to be empty", drained, async () => {
        const dev = (await fleet.agentViews()).find((a) => a.key === 'dev/dev-1');
        return dev !== undefined && dev.lastHeartbeatAt !== null && dev.lastHeartbeatAt > healedAt && dev.outbox.pending === 0 && dev.outbox.dropped === 0;
      });
      mark("dev agent's outbox empty");
      // What the agent itself saw of NATS, from its log.
      for (const line of fleet.agents.dev.log().split('\n')) {
        const entry = /^\{.*\}$/.test(line) ? (JSON.parse(line) as { time?: string; msg?: string }) : undefined;
        if (entry?.time !== undefined && /NATS|outbox/.test(entry.msg ?? '')) mark(`  dev agent log: ${entry.msg}`, Date.parse(entry.time));
      }
      const opened = fleet.pdEvents(dedupKeyOf(devApi))[0]!;
      expect(opened.payload?.custom_details).toMatchObject({ finding: devApi, details: { outcome: 'open', layer: 'app' } });
      expect(fleet.pdEvents(dedupKeyOf(devApi)).map((e) => e.event_action)).toEqual(['trigger', 'resolve']);
      // NATS, which dev may reach, was down for dev during the cut: an expected path down, and back up.
      expect(fleet.pdEvents(dedupKeyOf(devNats)).map((e) => e.event_action)).toEqual(['trigger', 'resolve']);

      // The history has every cycle of every boot of dev's agent exactly once, the minute of the partition included.
      const subject = 'bulkhead.results.dev.dev-1';
      const rows = await wait('the history to hold every batch the stream holds, and the stream no duplicate', 10_000, async () => {
        const published = await fleet.streamMessages(subject);
        const rows = await fleet.history('dev', 'dev-1');
        return new Set(rows.map((r) => r.id.split('#')[0])).size === published && rows;
      });
      const boots = new Map<string, Map<number, { ids: Set<string>; seqs: Set<number> }>>();
      for (const { id, seq } of rows) {
        const [, boot, cycle] = /^dev-1-([0-9a-f]+)-(\d+)\.\d+#\d+$/.exec(id) ?? [];
        expect(boot, `history id ${id}`).toBeDefined();
        const perBoot = boots.get(boot!) ?? new Map();
        boots.set(boot!, perBoot);
        const c = perBoot.get(Number(cycle)) ?? { ids: new Set<string>(), seqs: new Set<number>() };
        perBoot.set(Number(cycle), c);
        c.ids.add(id);
        c.seqs.add(seq);
      }
      expect(boots.has(bootId)).toBe(true);
      const perCycle = new Set<number>();
      for (const [boot, perBoot] of boots) {
        const numbers = [...perBoot.keys()].sort((a, b) => a - b);
        expect(numbers, `boot ${boot}: cycles 1…n, no gap`).toEqual(numbers.map((_, i) => i + 1));
        for (const c of perBoot.values()) {
          perCycle.add(c.ids.size);
          expect(c.seqs.size, `boot ${boot}: one stream message per cycle`).toBe(1);
        }
      }
      expect([...perCycle], 'every cycle holds the same observations').toHaveLength(1);
      const partitionCycles = Math.floor((PARTITION_MS / (INTERVAL_MS * (1 + JITTER))) * 0.9);
      expect(boots.get(bootId)!.size).toBeGreaterThanOrEqual(partitionCycles);
      mark(`history: ${boots.size} boots of dev-1, ${rows.length} observations, boot ${bootId} cycles 1…${boots.get(bootId)!.size} contiguous, none twice`);
      expect(await firing()).toEqual([]);
      noRejections();
    },
    PARTITION_MS + 180_000,
  );

  const stagingCache = violation('staging', 'prod-cache', address('prod', 'cache'), PORT.redis);

  scenario('8. controller killed mid-incident: after restart on the same database, no second trigger and the resolve is sent', async () => {
    const slackFrom = fleet.slack.accepted.length;
    const hole = allow('staging', 'prod', 'tcp', PORT.redis);
    await pagerDuty('trigger', stagingCache, DEADLINE.trigger);
    await wait('the trigger settled in the outbox', 5_000, async () => {
      const rows = await fleet.outbox(stagingCache);
      return rows.length === 2 && rows.every((r) => r.outcome === 'delivered');
    });
    const pid = await fleet.kill(fleet.controller!);
    mark(`controller SIGKILLed (pid ${pid})`);
    close(hole);
    await sleep(cycles(RESOLVE_AFTER + 1)); // the closing observations wait in JetStream
    await fleet.startController(plan);
    mark(`controller started again on the same database (pid ${fleet.controller!.child.pid})`);
    await pagerDuty('resolve', stagingCache, DEADLINE.resolve);
    await wait('the RESOLVED message at Slack', DEADLINE.resolve, () => slackSince(slackFrom).some((t) => t.startsWith('RESOLVED')));
    await sleep(GROUP_INTERVAL_MS + MARGIN_MS); // a duplicate would have arrived by now
    const trigger = fleet.pdEvents(dedupKeyOf(stagingCache))[0]!;
    expect(fleet.pdEvents(dedupKeyOf(stagingCache))).toEqual([trigger, { routing_key: fleet.routingKey, dedup_key: trigger.dedup_key, event_action: 'resolve' }]);
    expect(fleet.pd.updates.filter((e) => e.dedup_key === trigger.dedup_key)).toEqual([]);
    expect(fleet.pd.dropped).toEqual([]);
    expect(fleet.pd.open.size).toBe(0);
    expect(slackSince(slackFrom)).toEqual([expect.stringMatching(/^FIRING: staging → prod-cache/), expect.stringMatching(/^RESOLVED: staging → prod-cache/)]);
    expect(await fleet.outbox(stagingCache)).toEqual(
      ['resolve:pd', 'resolve:slack', 'trigger:pd', 'trigger:slack'].map((s) => ({ id: `${stagingCache}#1:${s}`, outcome: 'delivered' })),
    );
    expect(await firing()).toEqual([]);
    // Two controller lifetimes of logs, deliveries included, and neither secret in them.
    const logs = fleet.controllers.map((c) => c.log()).join('\n');
    expect(logs).toContain('controller started');
    expect(logs).not.toContain(fleet.routingKey);
    expect(logs).not.toContain(fleet.slack.url);
    noRejections();
  });
});
