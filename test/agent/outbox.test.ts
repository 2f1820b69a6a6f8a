// The agent's on-disk outbox, without NATS: order, atomic files, restarts, the bound and its drop counter.
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Logger } from '../../agent/agent.js';
import { Outbox, type OutboxEntry } from '../../agent/outbox.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'bulkhead-outbox-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

const entry = (n: number): OutboxEntry => ({ id: `a-boot-${n}.0`, subject: 'bulkhead.results.staging.a', payload: JSON.stringify({ n }) });

function recorder(): { log: Logger; lines: { level: string; msg: string; fields?: Record<string, unknown> }[] } {
  const lines: { level: string; msg: string; fields?: Record<string, unknown> }[] = [];
  return { lines, log: (level, msg, fields) => void lines.push({ level, msg, ...(fields ? { fields } : {}) }) };
}

/** Pops every entry in order, removing each as an acknowledged publish would. */
async function drain(outbox: Outbox): Promise<string[]> {
  const ids: string[] = [];
  for (let e = await outbox.oldest(); e; e = await outbox.oldest()) {
    ids.push(e.id);
    await outbox.remove(e.seq);
  }
  return ids;
}

describe('outbox', () => {
  it('is first in, first out, and an entry reads back exactly as appended', async () => {
    const outbox = await Outbox.open(dir, { maxEntries: 10 });
    for (const n of [1, 2, 3]) await outbox.append(entry(n));
    expect(outbox.pending).toBe(3);
    const first = await outbox.oldest();
    expect({ id: first!.id, subject: first!.subject, payload: first!.payload.toString('utf8') }).toEqual(entry(1));
    // oldest() does not consume: only remove() does, after the ack
    expect((await outbox.oldest())!.id).toBe(entry(1).id);
    expect(await drain(outbox)).toEqual([1, 2, 3].map((n) => entry(n).id));
    expect(outbox.pending).toBe(0);
    expect(await outbox.oldest()).toBeUndefined();
  });

  it('stores the payload byte for byte: newlines, quotes and non-ASCII survive', async () => {
    const outbox = await Outbox.open(dir, { maxEntries: 10 });
    const payload = '{"detail":"line one\nline two \\"quoted\\" ü ✓"}\n\n';
    await outbox.append({ ...entry(1), payload });
    const back = await (await Outbox.open(dir, { maxEntries: 10 })).oldest();
    expect(back!.payload.equals(Buffer.from(payload, 'utf8'))).toBe(true);
  });

  it('keeps order for appends issued concurrently', async () => {
    const outbox = await Outbox.open(dir, { maxEntries: 100 });
    await Promise.all(Array.from({ length: 20 }, (_, i) => outbox.append(entry(i))));
    expect(await drain(outbox)).toEqual(Array.from({ length: 20 }, (_, i) => entry(i).id));
  });

  it('writes one file per entry through a temp file and rename, and deletes it on remove', async () => {
    const outbox = await Outbox.open(dir, { maxEntries: 10 });
    await outbox.append(entry(1));
    await outbox.append(entry(2));
    const files = readdirSync(dir).sort();
    expect(files).toEqual([`0000000000000001-${entry(1).id}.entry`, `0000000000000002-${entry(2).id}.entry`]);
    // A JSON header line, then the payload bytes verbatim.
    expect(readFileSync(join(dir, files[0]!), 'utf8')).toBe(`${JSON.stringify({ id: entry(1).id, subject: entry(1).subject })}\n${entry(1).payload}`);
    const first = await outbox.oldest();
    await outbox.remove(first!.seq);
    expect(readdirSync(dir)).toEqual([files[1]]);
  });

  it('ignores and cleans up a write that never reached its rename (a crash mid-write)', async () => {
    const outbox = await Outbox.open(dir, { maxEntries: 10 });
    await outbox.append(entry(1));
    writeFileSync(join(dir, `.0000000000000002-${entry(2).id}.entry.abcd1234.tmp`), '{"id":"a-bo');
    const reopened = await Outbox.open(dir, { maxEntries: 10 });
    expect(reopened.pending).toBe(1);
    expect(readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    expect(await drain(reopened)).toEqual([entry(1).id]);
  });

  it('survives a restart: pending entries come back in order and new ones go after them', async () => {
    const outbox = await Outbox.open(dir, { maxEntries: 10 });
    for (const n of [1, 2, 3]) await outbox.append(entry(n));
    await outbox.remove((await outbox.oldest())!.seq);
    const reopened = await Outbox.open(dir, { maxEntries: 10 });
    expect(reopened.pending).toBe(2);
    await reopened.append(entry(4));
    expect(await drain(reopened)).toEqual([2, 3, 4].map((n) => entry(n).id));
  });

  it('when full drops the oldest, counts and logs it, and the count survives a restart', async () => {
    const { log, lines } = recorder();
    const outbox = await Outbox.open(dir, { maxEntries: 3, log });
    for (const n of [1, 2, 3, 4, 5]) await outbox.append(entry(n));
    expect(outbox.pending).toBe(3);
    expect(outbox.dropped).toBe(2);
    const warnings = lines.filter((l) => l.level === 'warn');
    expect(warnings).toHaveLength(2);
    expect(warnings.map((w) => w.fields?.ids)).toEqual([[entry(1).id], [entry(2).id]]);
    expect(readdirSync(dir).filter((f) => f.endsWith('.entry'))).toHaveLength(3);

    const reopened = await Outbox.open(dir, { maxEntries: 3 });
    expect(reopened.dropped).toBe(2);
    await reopened.append(entry(6));
    expect(reopened.dropped).toBe(3);
    expect(await drain(reopened)).toEqual([4, 5, 6].map((n) => entry(n).id));
    expect((await Outbox.open(dir, { maxEntries: 3 })).dropped).toBe(3);
  });

  it('trims to a lowered bound at open, oldest first, and counts it', async () => {
    const outbox = await Outbox.open(dir, { maxEntries: 10 });
    for (const n of [1, 2, 3, 4]) await outbox.append(entry(n));
    const smaller = await Outbox.open(dir, { maxEntries: 2 });
    expect([smaller.pending, smaller.dropped]).toEqual([2, 2]);
    expect(await drain(smaller)).toEqual([3, 4].map((n) => entry(n).id));
  });

  it('removing an entry that was dropped for room while in flight is a no-op', async () => {
    const outbox = await Outbox.open(dir, { maxEntries: 2 });
    await outbox.append(entry(1));
    const inFlight = await outbox.oldest();
    await outbox.append(entry(2));
    await outbox.append(entry(3)); // drops entry 1 while "in flight"
    await outbox.remove(inFlight!.seq);
    expect(await drain(outbox)).toEqual([2, 3].map((n) => entry(n).id));
  });

  it('drops and counts an unreadable entry instead of blocking the queue behind it', async () => {
    const { log, lines } = recorder();
    const outbox = await Outbox.open(dir, { maxEntries: 10, log });
    await outbox.append(entry(1));
    await outbox.append(entry(2));
    const [firstFile] = readdirSync(dir).filter((f) => f.endsWith('.entry')).sort();
    writeFileSync(join(dir, firstFile!), 'garbage');
    expect((await outbox.oldest())!.id).toBe(entry(2).id);
    expect(outbox.dropped).toBe(1);
    expect(lines.some((l) => l.level === 'error' && /unreadable/.test(l.msg))).toBe(true);
  });

  it('whenNotEmpty waits for an append, or for the abort', async () => {
    const outbox = await Outbox.open(dir, { maxEntries: 10 });
    let woke = false;
    const waiting = outbox.whenNotEmpty(new AbortController().signal).then(() => (woke = true));
    await new Promise((r) => setTimeout(r, 20));
    expect(woke).toBe(false);
    await outbox.append(entry(1));
    await waiting;
    expect(woke).toBe(true);

    const empty = await Outbox.open(join(dir, 'other'), { maxEntries: 10 });
    const controller = new AbortController();
    const aborted = empty.whenNotEmpty(controller.signal);
    controller.abort();
    await aborted;
  });

  it('refuses ids that cannot be file names and bounds that are not positive', async () => {
    const outbox = await Outbox.open(dir, { maxEntries: 10 });
    await expect(outbox.append({ ...entry(1), id: '../escape' })).rejects.toThrow(TypeError);
    await expect(Outbox.open(dir, { maxEntries: 0 })).rejects.toThrow(RangeError);
    expect(outbox.pending).toBe(0);
  });
});
