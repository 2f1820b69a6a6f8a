// The dead man's switch: while the controller is healthy it says so every interval, either by POSTing to a
// heartbeat URL (healthchecks.io, Dead Man's Snitch, Cronitor…) or by re-sending an always-firing Alertmanager alert
// that expires by itself. A dead, hung or disconnected controller stops saying so, and that silence is the alert.
import type { Clock, Timer } from './delivery/clock.js';
import type { Post } from './delivery/lane.js';
import { REQUEST_TIMEOUT_MS } from './delivery/lane.js';
import type { Log } from './ingest.js';
import type { ReceiverRuntime, WatchdogRuntime } from './receivers/config.js';

/** The always-firing alert's name: route it to a dead-man's-switch integration in Alertmanager. */
export const WATCHDOG_ALERTNAME = 'bulkhead_watchdog';
/** The alert ends this many intervals after the last beat, so one lost request does not page. */
const EXPIRY_INTERVALS = 3;

export interface WatchdogDeps {
  readonly clock: Clock;
  readonly post: Post;
  readonly log: Log;
  /** NATS connected and ingest committing: only a healthy controller beats. */
  readonly healthy: () => boolean;
  readonly receivers: () => readonly ReceiverRuntime[];
  /** Names this controller in the beat (the API address). */
  readonly instance: string;
}

/** Beats every interval while healthy; the first beat goes out at start. */
export class Watchdog {
  private timer: Timer | undefined;
  private readonly startedAt: string;
  private inflight: Promise<void> | undefined;
  beats = 0;
  failures = 0;

  constructor(
    private runtime: WatchdogRuntime,
    private readonly deps: WatchdogDeps,
  ) {
    this.startedAt = new Date(deps.clock.now()).toISOString();
  }

  start(): void {
    this.tick();
  }

  /** A plan reload may change the URL, the receiver or the interval. */
  update(runtime: WatchdogRuntime): void {
    this.runtime = runtime;
  }

  async stop(): Promise<void> {
    this.timer?.cancel();
    this.timer = undefined;
    await this.inflight;
  }

  private tick(): void {
    if (this.deps.healthy() && this.inflight === undefined) {
      this.inflight = this.beat().finally(() => (this.inflight = undefined));
    }
    this.timer = this.deps.clock.after(this.runtime.intervalMs, () => this.tick());
  }

  private async beat(): Promise<void> {
    const now = this.deps.clock.now();
    const request = this.request(now);
    if (request === undefined) return;
    try {
      const answer = await this.deps.post(request, Math.min(REQUEST_TIMEOUT_MS, this.runtime.intervalMs));
      if (answer.status >= 200 && answer.status < 300) {
        this.beats++;
        return;
      }
      this.failed(`HTTP ${answer.status}`);
    } catch (err) {
      this.failed(`network error: ${(err as NodeJS.ErrnoException).code ?? (err as Error).name}`);
    }
  }

  private request(now: number) {
    const at = new Date(now).toISOString();
    const headers = { 'content-type': 'application/json' };
    if (this.runtime.kind === 'url') {
      return { method: 'POST' as const, url: this.runtime.url, headers, body: JSON.stringify({ status: 'ok', at, instance: this.deps.instance }) };
    }
    const name = this.runtime.receiver;
    const receiver = this.deps.receivers().find((r) => r.name === name);
    if (receiver?.type !== 'alertmanager') {
      this.failed(`receiver ${name} is not an alertmanager receiver in the plan in force`);
      return undefined;
    }
    const alert = {
      labels: { alertname: WATCHDOG_ALERTNAME, severity: 'none', instance: this.deps.instance },
      annotations: { summary: 'Bulkhead controller is alive: this alert always fires, and its absence is the alarm' },
      startsAt: this.startedAt,
      endsAt: new Date(now + EXPIRY_INTERVALS * this.runtime.intervalMs).toISOString(),
    };
    return { method: 'POST' as const, url: `${receiver.config.url.replace(/\/+$/, '')}/api/v2/alerts`, headers, body: JSON.stringify([alert]) };
  }

  private failed(reason: string): void {
    this.failures++;
    this.deps.log('warn', 'watchdog beat failed', { reason, failures: this.failures });
  }
}
