// The delivery side's only source of time: the real clock in production, a fake one in tests (Retry-After,
// group waits, silences and receiver outages are tested minutes deep without waiting minutes).
export interface Timer {
  cancel(): void;
}

export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  /** Runs `fn` once after `ms` (≥ 0); the returned timer cancels it. */
  after(ms: number, fn: () => void): Timer;
}

/** setTimeout's ceiling: Node fires anything longer after 1 ms (a 30-day silence or a 720 h repeat_interval would). */
const MAX_TIMEOUT_MS = 2 ** 31 - 1;

/** Wall-clock time and Node timers, chained past setTimeout's ceiling; timers never keep the process alive on their own. */
export const systemClock: Clock = {
  now: () => Date.now(),
  after(ms, fn) {
    const due = Date.now() + Math.max(0, ms);
    let handle: NodeJS.Timeout;
    const arm = () => {
      const left = due - Date.now();
      handle = setTimeout(left > MAX_TIMEOUT_MS ? arm : fn, Math.min(Math.max(0, left), MAX_TIMEOUT_MS));
      handle.unref();
    };
    arm();
    return { cancel: () => clearTimeout(handle) };
  },
};
