// Bounded waiting for tests that drive real processes: poll until something holds, or fail saying what never came.
export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export interface UntilOptions {
  /** Poll interval (default 100 ms). */
  readonly everyMs?: number;
  /** More to say on timeout, e.g. the tail of a process log. */
  readonly context?: () => string;
}

/**
 * Polls `probe` until it yields something other than undefined/false and returns that; a throwing probe counts as
 * not yet. After `timeoutMs` it throws, naming `what` and the last error.
 */
export async function until<T>(
  what: string,
  timeoutMs: number,
  probe: () => Promise<T | undefined | false> | T | undefined | false,
  options: UntilOptions = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined && value !== false) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      const why = lastError instanceof Error ? ` (last error: ${lastError.message})` : '';
      const more = options.context?.() ?? '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${why}${more ? `\n${more}` : ''}`);
    }
    await sleep(options.everyMs ?? 100);
  }
}
