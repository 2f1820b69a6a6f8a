// Alert delivery through the real binaries: a staging agent probes a prod TCP listener the test opens and closes,
// reports over nats-server (deploy/ config, per-user credentials) to the controller process on PostgreSQL, and the
// controller pages a fake PagerDuty and posts to a fake Slack (both checking the vendor formats). The controller is
// SIGKILLed between a state change and its delivery, refused for good by Slack, silenced over its HTTP API, and
// started without a secret. Each scenario (scenario.ts) has its own nats-server, database, fakes and listeners.
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { natsMissing } from '../helpers/nats-server.js';
import { postgresMissing, startPostgres, type PostgresServer } from '../helpers/postgres-server.js';
import { sleep, until } from '../helpers/wait.js';
import { api, killAll, requireBuild, spawnCli } from './harness.js';
import { PD_KEY, Scenario } from './scenario.js';

const skip = natsMissing() ?? postgresMissing();
const HBA = 'local all all trust\nhost all all 127.0.0.1/32 trust\n';
/** group_wait 1s plus a request and a commit: nothing arrives later than this after it is due. */
const GRACE_MS = 2_500;

/** What the controller sends as the PagerDuty dedup key, computed here independently of controller/findings.ts. */
const dedupKeyOf = (findingKey: string) => `bulkhead:v1:${createHash('sha256').update(findingKey).digest('hex')}`;

describe.skipIf(skip)('alert delivery through the real controller, agent and nats-server', () => {
  let postgres: PostgresServer;
  let admin: pg.Client;
  const scenarios: Scenario[] = [];
  let restartedAfterDeadLetter: { scenario: Scenario; deadLetterId: string } | undefined;
  const scenario = async (name: string) => {
    const s = await Scenario.create(name, postgres, admin);
    scenarios.push(s);
    return s;
  };

  beforeAll(async () => {
    requireBuild();
    postgres = await startPostgres({ hba: HBA });
    admin = new pg.Client({ connectionString: `postgres://postgres@127.0.0.1:${postgres.port}/postgres` });
    admin.on('error', () => undefined);
    await admin.connect();
  });

  afterAll(async () => {
    for (const s of scenarios) await s.close().catch(() => undefined);
    await killAll();
    await admin?.end();
    await postgres?.stop();
  });

  it('a controller SIGKILLed between a state change and its delivery sends it exactly once after restart: trigger, then resolve', async () => {
    const s = await scenario('crash');
    const { pd, slack } = s;
    pd.down(true);
    slack.down(true);
    await s.leak.open();
    const first = await s.startController();
    s.startAgent();

    // The trigger is committed (firing in the API, owed in the outbox) but every attempt fails: the fakes reset.
    const firing = await s.violation('firing');
    expect(firing.key).toBe(`violation:staging→prod-db@127.0.0.1:${s.leak.port}`);
    expect(firing.receivers).toEqual(['pd', 'slack']);
    const retrying = await until('both receivers to be retrying the trigger', 10_000, async () => {
      const d = await s.deliveries();
      return d.receivers.pd?.retrying && d.receivers.slack?.retrying ? d : undefined;
    });
    expect(retrying.receivers.pd).toMatchObject({ delivered: 0, dead: 0, retrying: { error: expect.stringMatching(/^network error/) } });
    expect(retrying.receivers.slack).toMatchObject({ delivered: 0, dead: 0 });
    // The Slack webhook URL is a secret: the API's error text never carries it.
    expect(JSON.stringify(retrying)).not.toContain(slack.url);
    const trigger = (r: string) => `${firing.key}#1:trigger:${r}`;
    expect(await s.outbox()).toEqual([
      { id: trigger('pd'), receiver: 'pd', outcome: null, reason: null, delivered: false },
      { id: trigger('slack'), receiver: 'slack', outcome: null, reason: null, delivered: false },
    ]);

    expect((await first.kill()).signal).toBe('SIGKILL');
    pd.down(false);
    slack.down(false);
    await s.startController();
    await until('the trigger at PagerDuty and Slack', 10_000, () => pd.accepted.length >= 1 && slack.accepted.length >= 1);
    await until('the trigger settled in the outbox', 5_000, async () => (await s.outbox()).every((r) => r.delivered));
    await sleep(GRACE_MS); // a duplicate would have arrived by now
    expect(pd.rejected).toEqual([]);
    expect(slack.rejected).toEqual([]);
    expect(pd.accepted).toHaveLength(1);
    expect(pd.opened).toHaveLength(1);
    expect(pd.updates).toHaveLength(0);
    const opened = pd.opened[0]!;
    expect(opened).toMatchObject({ event_action: 'trigger', routing_key: PD_KEY, dedup_key: dedupKeyOf(firing.key), payload: { severity: 'critical', class: 'violation' } });
    expect(slack.accepted).toHaveLength(1);
    expect(slack.accepted[0]!.text).toMatch(/^FIRING: staging → prod-db \(prod\)/);

    // Now a resolve owed across a crash: the path closes while the receivers are down.
    pd.down(true);
    slack.down(true);
    await s.leak.close();
    const resolved = await s.violation('resolved', 20_000);
    expect(resolved.incident).toBe(1);
    await until('both receivers to be retrying the resolve', 10_000, async () => {
      const d = await s.deliveries();
      return d.receivers.pd?.retrying && d.receivers.slack?.retrying;
    });
    const resolve = (r: string) => `${firing.key}#1:resolve:${r}`;
    expect((await s.outbox()).filter((r) => !r.delivered).map((r) => r.id)).toEqual([resolve('pd'), resolve('slack')]);

    expect((await s.controller!.kill()).signal).toBe('SIGKILL');
    pd.down(false);
    slack.down(false);
    await s.startController();
    await until('the resolve at PagerDuty and Slack', 10_000, () => pd.accepted.length >= 2 && slack.accepted.length >= 2);
    await until('the resolve settled in the outbox', 5_000, async () => (await s.outbox()).every((r) => r.delivered));
    await sleep(GRACE_MS);
    expect(pd.rejected).toEqual([]);
    expect(slack.rejected).toEqual([]);
    expect(pd.accepted.map((e) => e.event_action)).toEqual(['trigger', 'resolve']);
    expect(pd.accepted[1]).toMatchObject({ routing_key: opened.routing_key, dedup_key: opened.dedup_key });
    expect(pd.open.size).toBe(0);
    expect(pd.dropped).toEqual([]);
    expect(slack.accepted).toHaveLength(2);
    expect(slack.accepted[1]!.text).toMatch(/^RESOLVED: staging → prod-db \(prod\)/);

    // Every notification ever owed was settled as delivered: nothing dead, folded, silenced or left behind.
    expect(await s.outbox()).toEqual(
      [resolve('pd'), resolve('slack'), trigger('pd'), trigger('slack')].map((id) => ({ id, receiver: id.split(':').at(-1), outcome: 'delivered', reason: null, delivered: true })),
    );
    const d = await s.deliveries();
    expect(d.deadLetters).toEqual([]);
    expect(d.receivers.pd).toMatchObject({ pending: 0, queued: 0, retrying: null });
    // Three controller lifetimes of logs, retries included, and neither secret in them.
    const logs = s.controllers.map((c) => c.output()).join('\n');
    expect(logs).toContain('delivery failed, will retry');
    expect(logs).not.toContain(PD_KEY);
    expect(logs).not.toContain(slack.url);
    await s.close();
  }, 90_000);

  it('a secret whose environment variable is not set stops the controller at start, naming the plan file and field, printing no secret', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'bulkhead-alerting-secret-'));
    try {
      const planFile = join(dir, 'plan.yaml');
      writeFileSync(
        planFile,
        `version: 1
environments: { prod: {}, staging: {} }
alerting:
  receivers:
    - { name: pd, type: pagerduty, routing_key: { env: BULKHEAD_TEST_UNSET_PD_KEY } }
    - { name: slack, type: slack, url: { env: BULKHEAD_TEST_SLACK_URL } }
    - { name: hook, type: webhook, url: "http://127.0.0.1:9/hook", secret: { env: BULKHEAD_TEST_HOOK_SECRET } }
    - { name: ops, type: webhook, url: { file: missing-url.txt }, secret: { env: BULKHEAD_TEST_EMPTY } }
  routes: [{ receivers: [pd, slack, hook, ops] }]
`,
      );
      const slackUrl = `http://127.0.0.1:9/services/T000/B000/${randomBytes(12).toString('hex')}`;
      const hookSecret = `whsec_${randomBytes(24).toString('base64')}`;
      // No nats-server: the secrets are read before anything connects.
      const child = spawnCli(['controller', '--plan', planFile, '--nats', 'nats://127.0.0.1:1', '--listen', '127.0.0.1:0'], {
        BULKHEAD_TEST_SLACK_URL: slackUrl,
        BULKHEAD_TEST_HOOK_SECRET: hookSecret,
        BULKHEAD_TEST_EMPTY: '',
      });
      const timer = setTimeout(() => void child.kill(), 15_000);
      const { code } = await child.exited;
      clearTimeout(timer);
      const output = child.output();
      expect(code).toBe(3);
      expect(output).toContain(`${planFile}: alerting.receivers[0].routing_key: environment variable BULKHEAD_TEST_UNSET_PD_KEY is not set`);
      // Every problem at once, each naming its field.
      expect(output).toContain(`${planFile}: alerting.receivers[3].url: cannot read secret file ${join(dir, 'missing-url.txt')} (ENOENT)`);
      expect(output).toContain(`${planFile}: alerting.receivers[3].secret: environment variable BULKHEAD_TEST_EMPTY is empty`);
      expect(output).not.toContain(slackUrl);
      expect(output).not.toContain(slackUrl.split('/').at(-1));
      expect(output).not.toContain(hookSecret);
      expect(output).not.toContain(hookSecret.slice(6));
      expect(output).not.toMatch(/controller started/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a silence over the HTTP API holds the trigger while the finding fires; expiring it sends the trigger; writes need the token when one is set', async () => {
    const s = await scenario('silence');
    const { pd, slack } = s;
    await s.startController();
    s.startAgent();

    const created = await api(s.base, '/v1/silences', {
      method: 'POST',
      body: { matchers: { from_env: 'staging' }, duration: '1h', created_by: 'alerting test', comment: 'CHG-42 firewall maintenance' },
    });
    expect(created.status).toBe(201);
    const silence = created.body.silence;
    expect(silence).toMatchObject({ id: expect.stringMatching(/^sil_[0-9a-f]{16}$/), matchers: { from_env: ['staging'] }, createdBy: 'alerting test' });
    expect(Date.parse(silence.endsAt) - Date.parse(silence.startsAt)).toBe(3_600_000);
    expect((await api(s.base, '/v1/silences')).body).toMatchObject({ count: 1, silences: [{ id: silence.id }] });
    expect((await s.db.query('SELECT id FROM bulkhead.silences')).rows).toEqual([{ id: silence.id }]);

    await s.leak.open();
    const firing = await s.violation('firing');
    await sleep(1_000 + GRACE_MS); // group_wait, then some
    expect(pd.received).toEqual([]);
    expect(slack.received).toEqual([]);
    const held = await s.deliveries();
    expect(held.receivers.pd).toMatchObject({ pending: 1, requests: 0, delivered: 0 });
    expect(held.receivers.slack).toMatchObject({ pending: 1, requests: 0, delivered: 0 });
    expect((await s.outbox()).filter((r) => !r.delivered).map((r) => r.id)).toEqual([`${firing.key}#1:trigger:pd`, `${firing.key}#1:trigger:slack`]);

    const expired = await api(s.base, `/v1/silences/${silence.id}`, { method: 'DELETE' });
    expect(expired.status).toBe(200);
    expect(Date.parse(expired.body.silence.endsAt)).toBeLessThanOrEqual(Date.now());
    await until('the trigger after the silence ended', 5_000, () => pd.opened.length === 1 && slack.accepted.length === 1);
    expect(pd.opened[0]).toMatchObject({ routing_key: PD_KEY, dedup_key: dedupKeyOf(firing.key) });
    expect((await api(s.base, '/v1/silences')).body.count).toBe(0);
    expect((await api(s.base, '/v1/silences?all=true')).body).toMatchObject({ count: 1, silences: [{ id: silence.id, endsAt: expired.body.silence.endsAt }] });
    expect(await api(s.base, `/v1/silences/sil_${'0'.repeat(16)}`, { method: 'DELETE' })).toMatchObject({ status: 404 });

    // Bad bodies: 400, and each problem names its field.
    const post = (body: unknown, token?: string) => api(s.base, '/v1/silences', { method: 'POST', body, ...(token !== undefined ? { token } : {}) });
    const bad = await post({ matchers: {}, duration: 'forever', created_by: ' ', extra: 1 });
    expect(bad.status).toBe(400);
    expect(bad.body.problems).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^matchers: expected at least one matcher/),
        expect.stringMatching(/^duration: expected a duration/),
        expect.stringMatching(/^created_by: /),
        expect.stringMatching(/^comment: /),
        expect.stringMatching(/extra/),
      ]),
    );
    const bothEnds = await post({ matchers: { kind: 'violation' }, duration: '1h', ends_at: '2099-01-01T00:00:00Z', created_by: 'me', comment: 'why' });
    expect(bothEnds).toMatchObject({ status: 400, body: { problems: [expect.stringMatching(/^ends_at: give exactly one of duration and ends_at/)] } });
    const badLabel = await post({ matchers: { from_env: 'Staging!', severity: 'loud' }, duration: '1h', created_by: 'me', comment: 'why' });
    expect(badLabel.status).toBe(400);
    expect(badLabel.body.problems).toEqual(expect.arrayContaining([expect.stringMatching(/^matchers\.from_env/), expect.stringMatching(/^matchers\.severity/)]));
    expect(await post('{"matchers":')).toMatchObject({ status: 400, body: { error: 'body: expected JSON' } });

    // With --api-token-file, the bearer token is what authorises a write (loopback alone is no longer enough).
    const token = randomBytes(24).toString('hex');
    const tokenFile = join(s.dir, 'api-token');
    writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
    expect((await s.controller!.stop()).code).toBe(0);
    await s.startController(['--api-token-file', tokenFile]);
    const body = { matchers: { target: 'prod-db' }, duration: '30m', created_by: 'alerting test', comment: 'token check' };
    expect(await post(body)).toMatchObject({ status: 401, body: { error: expect.stringMatching(/Bearer/) } });
    expect(await post(body, `${token}x`)).toMatchObject({ status: 401 });
    expect(await api(s.base, `/v1/silences/${silence.id}`, { method: 'DELETE' })).toMatchObject({ status: 401 });
    const authorised = await post(body, token);
    expect(authorised.status).toBe(201);
    // The silences survived the restart: the expired one and the new one.
    expect((await api(s.base, '/v1/silences?all=true')).body.silences.map((x: { id: string }) => x.id).sort()).toEqual([silence.id, authorised.body.silence.id].sort());
    await s.close();
  }, 60_000);

  it('a permanent refusal (Slack 410 channel_is_archived) is a dead letter, and PagerDuty hears of it as a receiver-failed finding', async () => {
    const s = await scenario('refusal');
    const { pd, slack } = s;
    slack.script({ status: 410, headers: { 'content-type': 'text/plain' }, body: 'channel_is_archived' });
    await s.leak.open();
    await s.startController();
    s.startAgent();

    const firing = await s.violation('firing');
    await until('the violation and receiver-failed at PagerDuty', 10_000, () => pd.opened.length >= 2);
    await sleep(GRACE_MS); // no retry of the refused request, no second page
    expect(pd.rejected).toEqual([]);
    expect(pd.opened.map((e) => e.payload?.class)).toEqual(['violation', 'receiver-failed']);
    expect(pd.opened[0]).toMatchObject({ dedup_key: dedupKeyOf(firing.key) });
    expect(pd.opened[1]).toMatchObject({
      routing_key: PD_KEY,
      dedup_key: dedupKeyOf('receiver-failed:slack'),
      payload: { severity: 'error', summary: expect.stringMatching(/receiver slack refused a notification for good \(HTTP 410: channel_is_archived\)/) },
    });
    expect(slack.received).toHaveLength(1);
    expect(slack.accepted).toEqual([]);

    const failed = (await s.findings()).find((f) => f.key === 'receiver-failed:slack');
    expect(failed).toMatchObject({ kind: 'receiver-failed', status: 'firing', receivers: ['pd'] });
    const d = await s.deliveries();
    expect(d.receivers.slack).toMatchObject({ dead: 1, delivered: 0, retries: 0, requests: 1, retrying: null });
    expect(d.deadLetters).toEqual([
      expect.objectContaining({ id: `${firing.key}#1:trigger:slack`, receiver: 'slack', finding: firing.key, action: 'trigger', reason: 'HTTP 410: channel_is_archived' }),
    ]);
    expect(await s.outbox()).toEqual([
      { id: `receiver-failed:slack#1:trigger:pd`, receiver: 'pd', outcome: 'delivered', reason: null, delivered: true },
      { id: `${firing.key}#1:trigger:pd`, receiver: 'pd', outcome: 'delivered', reason: null, delivered: true },
      { id: `${firing.key}#1:trigger:slack`, receiver: 'slack', outcome: 'dead', reason: 'HTTP 410: channel_is_archived', delivered: true },
    ]);

    // After a restart nothing is sent again, and the receiver-failed finding still fires.
    expect((await s.controller!.stop()).code).toBe(0);
    await s.startController();
    await sleep(GRACE_MS);
    expect(slack.received).toHaveLength(1);
    expect(pd.accepted).toHaveLength(2);
    expect((await s.findings()).find((f) => f.key === 'receiver-failed:slack')).toMatchObject({ status: 'firing' });
    expect((await s.outbox()).find((r) => r.receiver === 'slack')).toMatchObject({ outcome: 'dead' });
    restartedAfterDeadLetter = { scenario: s, deadLetterId: `${firing.key}#1:trigger:slack` };
  }, 60_000);

  // The dead letter is in bulkhead.outbox: the operator's view of "what never arrived" survives a restart.
  it('after a restart /v1/deliveries still lists the dead letter the store holds', async () => {
    if (restartedAfterDeadLetter === undefined) throw new Error('the refusal test did not get as far as the restart');
    const { scenario: s, deadLetterId } = restartedAfterDeadLetter;
    try {
      expect((await s.deliveries()).deadLetters).toEqual([expect.objectContaining({ id: deadLetterId, receiver: 'slack' })]);
    } finally {
      await s.close();
    }
  }, 60_000);
});
