// A test that needs a real server it cannot start fails under CI=true; locally it skips with the reason.
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

export const inCI = process.env.CI === 'true';

/** Absolute path of an executable found on PATH or in `extraDirs`, or undefined. */
export function findExecutable(name: string, extraDirs: readonly string[] = []): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), ...extraDirs];
  for (const dir of dirs) {
    if (!dir) continue;
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/**
 * Returns the reason a dependency is missing so the caller can `describe.skipIf(reason)`; under CI it
 * throws instead, so the run goes red rather than silently skipping.
 */
export function unavailable(what: string, missing: boolean, hint: string): string | undefined {
  if (!missing) return undefined;
  const reason = `${what} is not available (${hint})`;
  if (inCI) throw new Error(`CI=true and ${reason}: the test cannot run`);
  console.warn(`skipping: ${reason}`);
  return reason;
}
