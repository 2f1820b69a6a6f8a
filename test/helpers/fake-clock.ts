// A fake Clock for the delivery tests: time moves only when the test advances it, and the timers that fall due
// run in time order. Real I/O (HTTP to the fake receivers) still happens in real time between advances.
import type { Clock, Timer } from '../../controller/delivery/clock.js';

interface Pending {
  readonly at: number;
  readonly seq: number;
  readonly fn: () => void;
  cancelled: boolean;
}

export interface FakeClock extends Clock {
  /** Moves time forward by `ms`, running every timer due on the way (at its own due time). */
  advance(ms: number): Promise<void>;
  /** Timers not yet run or cancelled. */
  pending(): number;
}

export function fakeClock(start = Date.parse('2026-11-22T10:00:00Z')): FakeClock {
  let now = start;
  let seq = 0;
  const timers: Pending[] = [];
  const settle = () => new Promise<void>((resolve) => setImmediate(resolve));
  return {
    now: () => now,
    after(ms: number, fn: () => void): Timer {
      const t: Pending = { at: now + Math.max(0, ms), seq: seq++, fn, cancelled: false };
      timers.push(t);
      return { cancel: () => void (t.cancelled = true) };
    },
    async advance(ms: number) {
      const end = now + ms;
      for (;;) {
        await settle();
        const due = timers.filter((t) => !t.cancelled && t.at <= end).sort((a, b) => a.at - b.at || a.seq - b.seq)[0];
        if (due === undefined) break;
        timers.splice(timers.indexOf(due), 1);
        now = Math.max(now, due.at);
        due.fn();
      }
      now = end;
      await settle();
    },
    pending: () => timers.filter((t) => !t.cancelled).length,
  };
}
