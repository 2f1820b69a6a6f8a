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

/** Wall-clock time and Node timers; timers never keep the process alive on their own. */
export const systemClock: Clock = {
  now: () => Date.now(),
  after(ms, fn) {
    const handle = setTimeout(fn, Math.max(0, ms));
    handle.unref();
    return { cancel: () => clearTimeout(handle) };
  },
};
