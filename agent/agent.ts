// The long-running agent: owns time (one cycle at a time, every interval ± jitter, or now on request),
// turns each cycle into validated, size-capped result batches in the on-disk outbox, and reports its
// health in heartbeats. Shipping to NATS is nats-link's job; probing is the engine's.
import { randomBytes } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { mkdir, readFile, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BulkheadError, PlanError } from '../core/errors.js';
import type { NatsCredentials } from '../core/nats-credentials.js';
import { loadPlan, type LoadedPlan } from '../core/plan-load.js';
import { evaluateRun } from '../core/policy.js';
import { Heartbeat, parseMessage, RunAccepted, RunRequest, subjects } from '../core/wire.js';
import { bulkheadVersion } from '../cli/version.js';
import { buildBatches } from './batches.js';
import { runFrom } from './engine.js';
import { describeError, NatsLink, publishOutbox, redactUrl, type Inbound } from './nats-link.js';
import { Outbox } from './outbox.js';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
/** Structured log sink: one event, its level and fields. */
export type Logger = (level: LogLevel, msg: string, fields?: Record<string, unknown>) => void;

/** A logger writing one JSON object per line (time, level, msg, then the fields). */
export function jsonLogger(out: { write(line: string): unknown }, minLevel: LogLevel = 'info'): Logger {
  const rank = { debug: 0, info: 1, warn: 2, error: 3 } as const;
  return (level, msg, fields) => {
    if (rank[level] < rank[minLevel]) return;
    const event: Record<string, unknown> = { time: new Date().toISOString(), level, msg };
    for (const [key, value] of Object.entries(fields ?? {})) if (!(key in event)) event[key] = value;
    out.write(`${JSON.stringify(event)}\n`);
  };
}

export interface AgentOptions {
  readonly env: string;
  readonly name: string;
  /** The plan as loaded at start; `planPath` is re-read on reload. */
  readonly plan: LoadedPlan;
  readonly planPath: string;
  readonly natsUrl: string;
  readonly credentials?: NatsCredentials;
  readonly caFile?: string;
  readonly stateDir: string;
  readonly outboxMax: number;
  readonly log: Logger;
  /** PubAck wait per publish (default 5 s). */
  readonly ackTimeoutMs?: number;
  /** Upper bound of the heartbeat period (default 15 s; the period is min(interval, this)). */
  readonly heartbeatMaxMs?: number;
  /** How long shutdown may spend flushing the outbox (default 2 s). */
  readonly flushMs?: number;
}

interface Cycle {
  readonly id: string;
  readonly controller: AbortController;
  requestId?: string;
  /** Set once its batches are built: a run request arriving later needs a cycle of its own. */
  sealed?: boolean;
}


/** A running agent. Create with `Agent.start`; `stop()` resolves once it has flushed and disconnected. */
export class Agent {
  readonly env: string;
  readonly name: string;
  readonly bootId = randomBytes(4).toString('hex');
  readonly outbox: Outbox;
  readonly #o: AgentOptions;
  readonly #log: Logger;
  readonly #link: NatsLink;
  readonly #stop = new AbortController();
  readonly #publisherStop = new AbortController();
  #plan: LoadedPlan;
  #cycles = 0;
  #current: Cycle | undefined;
  #requested: Cycle | undefined;
  #nextAt = 0;
  #wake: (() => void) | undefined;
  #last: { controls: { total: number; failed: string[] }; at: string } | undefined;
  #invalidRequests = 0;
  #scheduler: Promise<void> = Promise.resolve();
  #heartbeats: Promise<void> = Promise.resolve();
  #publisher: Promise<void> = Promise.resolve();
  #stopping: Promise<void> | undefined;
  #resolveStopped: () => void = () => undefined;
  readonly #stoppedPromise = new Promise<void>((resolve) => (this.#resolveStopped = resolve));

  private constructor(options: AgentOptions, outbox: Outbox) {
    this.#o = options;
    this.env = options.env;
    this.name = options.name;
    this.#log = options.log;
    this.#plan = options.plan;
    this.outbox = outbox;
    this.#link = NatsLink.start({
      url: options.natsUrl,
      name: `bulkhead-agent-${options.env}-${options.name}`,
      log: options.log,
      ...(options.credentials ? { credentials: options.credentials } : {}),
      ...(options.caFile !== undefined ? { caFile: options.caFile } : {}),
    });
  }

  /** Opens the state directory and outbox, connects in the background and starts the schedule. */
  static async start(options: AgentOptions): Promise<Agent> {
    if (!(options.env in options.plan.plan.environments)) {
      throw new PlanError([`${options.planPath}: environment "${options.env}" is not in the plan`]);
    }
    let outbox: Outbox;
    try {
      await mkdir(options.stateDir, { recursive: true, mode: 0o700 });
      await claimStateDir(options.stateDir);
      outbox = await Outbox.open(join(options.stateDir, 'outbox'), { maxEntries: options.outboxMax, log: options.log });
    } catch (error) {
      if (error instanceof BulkheadError) throw error;
      await releaseStateDir(options.stateDir);
      const code = (error as NodeJS.ErrnoException).code ?? String(error);
      throw new BulkheadError('STATE_DIR_UNUSABLE', `${options.stateDir}: cannot use the state directory (${code})`, { cause: error });
    }
    const agent = new Agent(options, outbox);
    agent.#begin();
    return agent;
  }

  /** Hash of the plan in use (the last good one). */
  get planSha256(): string {
    return this.#plan.sha256;
  }

  /** Run requests dropped as invalid since start. */
  get invalidRequests(): number {
    return this.#invalidRequests;
  }

  #begin(): void {
    const { plan } = this.#plan;
    this.#log('info', 'agent started', {
      env: this.env,
      agent: this.name,
      bootId: this.bootId,
      version: bulkheadVersion(),
      plan: this.#o.planPath,
      planSha256: this.#plan.sha256,
      intervalMs: plan.schedule.intervalMs,
      nats: redactUrl(this.#o.natsUrl),
      outbox: { pending: this.outbox.pending, dropped: this.outbox.dropped, max: this.outbox.maxEntries },
    });
    if (this.outbox.pending > 0) this.#log('info', 'outbox holds entries from a previous run; sending them first', { pending: this.outbox.pending });
    this.#warnWithoutControls();
    this.#link.subscribe(subjects.run(this.env), (msg) => this.#onRunRequest(msg));
    this.#link.onConnect(() => this.#sendHeartbeat());
    // A fleet restarted at once should not probe in lockstep: the first cycle waits a random part of the jitter.
    this.#nextAt = Date.now() + Math.random() * plan.schedule.jitter * plan.schedule.intervalMs;
    this.#scheduler = this.#schedule();
    this.#heartbeats = this.#heartbeatLoop();
    this.#publisher = publishOutbox(this.#link, this.outbox, {
      log: this.#log,
      signal: this.#publisherStop.signal,
      ackTimeoutMs: this.#o.ackTimeoutMs ?? 5000,
    });
  }

  #warnWithoutControls(): void {
    if (this.#plan.plan.targets.some((t) => t.env === this.env)) return;
    // SPEC §3 rule 4: without a control that must succeed, a blocked result cannot be told from a broken prober.
    this.#log('warn', `the plan has no control targets in ${this.env}: blocked results from this agent prove little`, { planSha256: this.#plan.sha256 });
  }

  async #schedule(): Promise<void> {
    while (!this.#stop.signal.aborted) {
      await this.#sleepUntil(this.#nextAt);
      if (this.#stop.signal.aborted) break;
      let cycle = this.#requested;
      this.#requested = undefined;
      if (cycle === undefined) {
        if (Date.now() < this.#nextAt) continue; // woken early (reload) without a request
        cycle = this.#newCycle();
      }
      this.#current = cycle;
      const startedAt = Date.now();
      try {
        await this.#runCycle(cycle);
      } catch (error) {
        this.#log('error', 'cycle failed', { cycle: cycle.id, error: describeError(error) });
      } finally {
        this.#current = undefined;
      }
      // Interval between starts; a cycle longer than the interval is followed at once, never overlapped.
      this.#nextAt = Math.max(Date.now(), startedAt + this.#jitteredInterval());
    }
  }

  #newCycle(requestId?: string): Cycle {
    this.#cycles++;
    return { id: `${this.name}-${this.bootId}-${this.#cycles}`, controller: new AbortController(), ...(requestId ? { requestId } : {}) };
  }

  #jitteredInterval(): number {
    const { intervalMs, jitter } = this.#plan.plan.schedule;
    return Math.round(intervalMs * (1 + jitter * (2 * Math.random() - 1)));
  }

  async #runCycle(cycle: Cycle): Promise<void> {
    const loaded = this.#plan;
    const { plan } = loaded;
    const signal = AbortSignal.any([this.#stop.signal, cycle.controller.signal]);
    // The engine listens on it once per run, plus once per worker waiting out the stagger and per name lookup.
    setMaxListeners(2 * plan.schedule.concurrency + 16, signal);
    // Spread the cycle's starts over the stagger window (controls come first, so they start first).
    const staggerMs = plan.schedule.staggerMs > 0 ? plan.schedule.staggerMs : Math.floor(plan.schedule.intervalMs / 2);
    const run = await runFrom(plan, this.env, { signal, schedule: { staggerMs } });
    if (signal.aborted) {
      this.#log('info', 'cycle cancelled; its partial results are not sent', { cycle: cycle.id });
      return;
    }
    const evaluation = evaluateRun(plan, run.observations, run.finishedAt);
    const controls = { total: evaluation.controlCount, failed: evaluation.failedControls };
    const batches = buildBatches(
      {
        env: this.env,
        agent: this.name,
        cycleId: cycle.id,
        startedAt: run.startedAt.toISOString(),
        finishedAt: run.finishedAt.toISOString(),
        planSha256: loaded.sha256,
        controls,
        ...(cycle.requestId !== undefined ? { requestId: cycle.requestId } : {}),
      },
      run.observations,
      this.#log,
    );
    cycle.sealed = true;
    const subject = subjects.results(this.env, this.name);
    for (const batch of batches) {
      await this.outbox.append({ id: batch.id, subject, payload: batch.payload });
    }
    this.#last = { controls, at: run.finishedAt.toISOString() };
    const open = run.observations.filter((o) => o.outcome === 'open' && o.from !== o.env).length;
    this.#log(controls.failed.length > 0 ? 'warn' : 'info', 'cycle done', {
      cycle: cycle.id,
      ...(cycle.requestId !== undefined ? { requestId: cycle.requestId } : {}),
      observations: run.observations.length,
      crossEnvOpen: open,
      controlsFailed: controls.failed,
      batches: batches.length,
      durationMs: run.finishedAt.getTime() - run.startedAt.getTime(),
      outbox: { pending: this.outbox.pending, dropped: this.outbox.dropped },
    });
    this.#sendHeartbeat();
    // With --expose-gc, collect once per cycle: V8 otherwise lets a cycle's garbage pile up in the old
    // generation for several cycles before compacting, and RSS follows the pile (bench/agent-rss.ts).
    (globalThis as { gc?: () => void }).gc?.();
  }

  #onRunRequest(msg: Inbound): void {
    const parsed = parseMessage(RunRequest, msg.subject, msg.data);
    if (!parsed.ok) {
      this.#invalidRequests++;
      this.#log('warn', 'run request dropped', { reason: parsed.reason, detail: parsed.detail, dropped: this.#invalidRequests });
      return;
    }
    if (this.#stop.signal.aborted) return;
    const { requestId } = parsed.message;
    // Join the cycle that is running (or about to): never two cycles at once.
    let cycle = this.#current?.sealed ? this.#requested : (this.#current ?? this.#requested);
    if (cycle) {
      cycle.requestId ??= requestId;
    } else {
      cycle = this.#newCycle(requestId);
      this.#requested = cycle;
      this.#wake?.();
    }
    const reply: RunAccepted = { v: 1, type: 'run-accepted', env: this.env, agent: this.name, requestId, cycleId: cycle.id, planSha256: this.#plan.sha256 };
    const answered = msg.respond(JSON.stringify(RunAccepted.parse(reply)));
    this.#log('info', 'run requested', { requestId, cycle: cycle.id, answered });
  }

  async #heartbeatLoop(): Promise<void> {
    while (!this.#stop.signal.aborted) {
      await sleep(Math.min(this.#plan.plan.schedule.intervalMs, this.#o.heartbeatMaxMs ?? 15_000), this.#stop.signal);
      if (!this.#stop.signal.aborted) this.#sendHeartbeat();
    }
  }

  #sendHeartbeat(): void {
    const beat: Heartbeat = {
      v: 1,
      type: 'heartbeat',
      env: this.env,
      agent: this.name,
      version: bulkheadVersion().slice(0, 40),
      planSha256: this.#plan.sha256,
      at: new Date().toISOString(),
      intervalMs: this.#plan.plan.schedule.intervalMs,
      controls: this.#last?.controls ?? null,
      lastCycleAt: this.#last?.at ?? null,
      outbox: { pending: this.outbox.pending, dropped: this.outbox.dropped },
    };
    const checked = Heartbeat.safeParse(beat);
    if (!checked.success) {
      this.#log('error', 'bug: invalid heartbeat not sent', { issue: checked.error.issues[0]?.message });
      return;
    }
    this.#link.publish(subjects.heartbeat(this.env, this.name), JSON.stringify(checked.data));
  }

  /** Re-reads the plan file; an invalid plan is logged in full and the last good one stays in use. */
  async reload(): Promise<boolean> {
    let loaded: LoadedPlan;
    try {
      loaded = await loadPlan(this.#o.planPath);
      if (!(this.env in loaded.plan.environments)) throw new PlanError([`${this.#o.planPath}: environment "${this.env}" is not in the plan`]);
    } catch (error) {
      const problems = error instanceof PlanError ? error.problems : [String(error)];
      for (const problem of problems) this.#log('error', 'plan reload: invalid plan', { problem });
      this.#log('error', 'plan reload failed: keeping the last good plan', { planSha256: this.#plan.sha256, problems: problems.length });
      return false;
    }
    if (loaded.sha256 === this.#plan.sha256) {
      this.#log('info', 'plan reload: unchanged', { planSha256: loaded.sha256 });
      return true;
    }
    const previous = this.#plan.sha256;
    this.#plan = loaded;
    this.#nextAt = Math.min(this.#nextAt, Date.now() + this.#jitteredInterval());
    this.#wake?.();
    this.#log('info', 'plan reloaded', { planSha256: loaded.sha256, previous, intervalMs: loaded.plan.schedule.intervalMs });
    this.#warnWithoutControls();
    this.#sendHeartbeat();
    return true;
  }

  /** Stops scheduling, cancels a running cycle, flushes the outbox for a moment and disconnects. Idempotent. */
  stop(): Promise<void> {
    this.#stopping ??= this.#shutdown();
    this.#stopping.then(this.#resolveStopped, this.#resolveStopped);
    return this.#stopping;
  }

  /** Resolves once the agent has stopped, whoever asked it to. */
  get stopped(): Promise<void> {
    return this.#stoppedPromise;
  }

  async #shutdown(): Promise<void> {
    this.#log('info', 'stopping', { cycle: this.#current?.id });
    this.#stop.abort();
    this.#current?.controller.abort();
    this.#wake?.();
    await this.#scheduler;
    await this.#heartbeats;
    await this.outbox.settled();
    // Whatever is not acknowledged by then stays on disk and goes first after the next start.
    const deadline = Date.now() + (this.#o.flushMs ?? 2000);
    while (this.outbox.pending > 0 && this.#link.connected && Date.now() < deadline) await sleep(25);
    this.#publisherStop.abort();
    await this.#publisher;
    await this.#link.close(1000);
    await releaseStateDir(this.#o.stateDir);
    this.#log('info', 'stopped', { pending: this.outbox.pending, dropped: this.outbox.dropped });
  }

  #sleepUntil(at: number): Promise<void> {
    return new Promise((resolve) => {
      if (this.#requested || this.#stop.signal.aborted) return resolve();
      const timer = setTimeout(done, Math.max(0, at - Date.now()));
      const self = this;
      function done() {
        clearTimeout(timer);
        self.#wake = undefined;
        resolve();
      }
      this.#wake = done;
    });
  }
}

/** One agent per state directory: two would send each other's outbox and fight over deletions. */
async function claimStateDir(dir: string): Promise<void> {
  const file = join(dir, 'agent.pid');
  try {
    await writeFile(file, `${process.pid}\n`, { flag: 'wx', mode: 0o600 });
    return;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
  const pid = Number((await readFile(file, 'utf8').catch(() => '')).trim());
  if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && (await isAgent(pid))) {
    throw new BulkheadError('STATE_DIR_IN_USE', `${dir}: state directory in use by another agent (pid ${pid}); give this one its own --state-dir`);
  }
  await writeFile(file, `${process.pid}\n`, { mode: 0o600 });
}

async function releaseStateDir(dir: string): Promise<void> {
  await unlink(join(dir, 'agent.pid')).catch(() => undefined);
}

/** Whether `pid` is alive and, where /proc says, a node process: after a crash the pid may belong to anything. */
async function isAgent(pid: number): Promise<boolean> {
  try {
    process.kill(pid, 0);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => undefined);
  return cmdline === undefined || /node|bulkhead/.test(cmdline);
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}
