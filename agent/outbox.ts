// The agent's outbox: a bounded FIFO of messages on disk, one file per entry, deleted only once the
// server acknowledged it. The NATS client silently drops publishes made while disconnected (SPEC §6), so
// nothing is handed to it that is not also here; an agent restart resumes where the last one stopped.
import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from './agent.js';

/** One message waiting for its acknowledgement. `id` is the JetStream message id (dedup). */
export interface OutboxEntry {
  readonly id: string;
  readonly subject: string;
  readonly payload: string;
}

/** An entry as read back: the payload's bytes as stored (handed to the client without a copy), and its position. */
export interface StoredEntry {
  readonly id: string;
  readonly subject: string;
  readonly payload: Buffer;
  readonly seq: number;
}

export interface OutboxOptions {
  /** Entry count bound: when full, the oldest entries are dropped (and counted) to make room. */
  readonly maxEntries: number;
  readonly log?: Logger;
}

const ENTRY_RE = /^(\d{16})-([A-Za-z0-9._-]{1,200})\.entry$/;
const ID_RE = /^[A-Za-z0-9._-]{1,200}$/;
const COUNTER_FILE = 'dropped.json';

interface Slot {
  readonly seq: number;
  readonly id: string;
}

/** A bounded on-disk FIFO; open it with `Outbox.open`. Mutations are serialised, reads are not. */
export class Outbox {
  readonly dir: string;
  readonly maxEntries: number;
  readonly #log: Logger | undefined;
  readonly #slots: Slot[];
  #nextSeq: number;
  #dropped: number;
  #lock: Promise<unknown> = Promise.resolve();
  readonly #waiters = new Set<() => void>();

  private constructor(dir: string, options: OutboxOptions, slots: Slot[], dropped: number) {
    this.dir = dir;
    this.maxEntries = options.maxEntries;
    this.#log = options.log;
    this.#slots = slots;
    this.#nextSeq = (slots.at(-1)?.seq ?? 0) + 1;
    this.#dropped = dropped;
  }

  /** Opens (creating) the outbox in `dir`: removes half-written temp files and trims to the bound. */
  static async open(dir: string, options: OutboxOptions): Promise<Outbox> {
    if (!Number.isInteger(options.maxEntries) || options.maxEntries < 1) throw new RangeError(`outbox bound must be a positive integer, got ${options.maxEntries}`);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const slots: Slot[] = [];
    for (const name of await readdir(dir)) {
      // A temp file is a write that never reached its rename: it was never acknowledged to anyone.
      if (name.endsWith('.tmp')) await unlink(join(dir, name)).catch(() => undefined);
      const match = ENTRY_RE.exec(name);
      if (match) slots.push({ seq: Number(match[1]), id: match[2]! });
    }
    slots.sort((a, b) => a.seq - b.seq);
    const outbox = new Outbox(dir, options, slots, await readCounter(dir, options.log));
    if (slots.length > options.maxEntries) await outbox.#serialised(() => outbox.#dropOldest(slots.length - options.maxEntries, 'outbox bound lowered'));
    return outbox;
  }

  /** Entries waiting for an acknowledgement. */
  get pending(): number {
    return this.#slots.length;
  }

  /** Entries dropped since the outbox was created (persisted across restarts). */
  get dropped(): number {
    return this.#dropped;
  }

  /** Appends at the tail, dropping the oldest first when full; resolves once the entry is durable on disk. */
  append(entry: OutboxEntry): Promise<void> {
    if (!ID_RE.test(entry.id)) return Promise.reject(new TypeError(`outbox entry id must match ${ID_RE.source}: ${JSON.stringify(entry.id)}`));
    return this.#serialised(async () => {
      if (this.#slots.length >= this.maxEntries) await this.#dropOldest(this.#slots.length - this.maxEntries + 1, 'outbox full');
      const slot = { seq: this.#nextSeq++, id: entry.id };
      // A JSON header line, then the payload verbatim: no escaped copy of a message that may be near 1 MB.
      await writeAtomically(this.dir, fileName(slot), `${JSON.stringify({ id: entry.id, subject: entry.subject })}\n`, entry.payload);
      this.#slots.push(slot);
      for (const wake of this.#waiters) wake();
      this.#waiters.clear();
    });
  }

  /** The oldest entry, read from disk; undefined when empty. Unreadable entries are dropped and counted. */
  async oldest(): Promise<StoredEntry | undefined> {
    for (;;) {
      const slot = this.#slots[0];
      if (slot === undefined) return undefined;
      let bytes: Buffer;
      try {
        bytes = await readFile(join(this.dir, fileName(slot)));
      } catch (err) {
        // Dropped for room while we were reading: the next one is now the oldest.
        if ((err as NodeJS.ErrnoException).code === 'ENOENT' && this.#slots[0] !== slot) continue;
        throw err;
      }
      const entry = decode(bytes);
      if (entry && entry.id === slot.id) return { ...entry, seq: slot.seq };
      this.#log?.('error', 'outbox entry unreadable: dropped', { file: fileName(slot) });
      await this.#serialised(async () => {
        if (this.#slots[0] === slot) await this.#dropOldest(1, 'unreadable');
      });
    }
  }

  /** Deletes an acknowledged entry; a no-op when it was already dropped for room. */
  remove(seq: number): Promise<void> {
    return this.#serialised(async () => {
      const index = this.#slots.findIndex((s) => s.seq === seq);
      if (index < 0) return;
      const [slot] = this.#slots.splice(index, 1);
      await unlinkQuietly(join(this.dir, fileName(slot!)));
    });
  }

  /** Resolves when the outbox holds an entry, or when `signal` aborts. */
  whenNotEmpty(signal: AbortSignal): Promise<void> {
    if (this.#slots.length > 0 || signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        this.#waiters.delete(done);
        signal.removeEventListener('abort', done);
        resolve();
      };
      this.#waiters.add(done);
      signal.addEventListener('abort', done, { once: true });
    });
  }

  /** Waits for every queued mutation (appends in progress) to reach the disk. */
  settled(): Promise<void> {
    return this.#serialised(async () => undefined);
  }

  async #dropOldest(count: number, why: string): Promise<void> {
    const victims = this.#slots.splice(0, count);
    if (victims.length === 0) return;
    this.#dropped += victims.length;
    // The count goes to disk before the files go, so a crash in between over-counts rather than hides a loss.
    await writeAtomically(this.dir, COUNTER_FILE, JSON.stringify({ dropped: this.#dropped }));
    for (const slot of victims) await unlinkQuietly(join(this.dir, fileName(slot)));
    this.#log?.('warn', `outbox: dropped the oldest ${victims.length === 1 ? 'entry' : `${victims.length} entries`} (${why})`, {
      ids: victims.slice(0, 10).map((s) => s.id),
      dropped: this.#dropped,
      pending: this.#slots.length,
      max: this.maxEntries,
    });
  }

  #serialised<T>(task: () => Promise<T>): Promise<T> {
    const run = this.#lock.then(task, task);
    this.#lock = run.catch(() => undefined);
    return run;
  }
}

function fileName(slot: Slot): string {
  return `${String(slot.seq).padStart(16, '0')}-${slot.id}.entry`;
}

function decode(bytes: Buffer): Omit<StoredEntry, 'seq'> | undefined {
  const newline = bytes.indexOf(0x0a);
  if (newline < 0) return undefined;
  try {
    const header = JSON.parse(bytes.toString('utf8', 0, newline)) as Record<string, unknown>;
    if (typeof header.id === 'string' && typeof header.subject === 'string') {
      return { id: header.id, subject: header.subject, payload: bytes.subarray(newline + 1) };
    }
  } catch {
    // fall through: unreadable
  }
  return undefined;
}

async function readCounter(dir: string, log: Logger | undefined): Promise<number> {
  try {
    const value = JSON.parse(await readFile(join(dir, COUNTER_FILE), 'utf8')) as { dropped?: unknown };
    if (typeof value.dropped === 'number' && Number.isInteger(value.dropped) && value.dropped >= 0) return value.dropped;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
  }
  log?.('warn', 'outbox: drop counter unreadable, starting from 0', { file: join(dir, COUNTER_FILE) });
  return 0;
}

/** Write to a temp file, fsync, rename over the target, fsync the directory: all or nothing after a crash. */
async function writeAtomically(dir: string, name: string, ...parts: string[]): Promise<void> {
  const temp = join(dir, `.${name}.${randomBytes(4).toString('hex')}.tmp`);
  try {
    const handle = await open(temp, 'w', 0o600);
    try {
      for (const part of parts) await handle.writeFile(part, 'utf8');
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, join(dir, name));
  } catch (err) {
    await unlinkQuietly(temp).catch(() => undefined);
    throw err;
  }
  const dirHandle = await open(dir, 'r');
  try {
    await dirHandle.sync();
  } finally {
    await dirHandle.close();
  }
}

async function unlinkQuietly(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}
