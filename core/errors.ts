// The few exceptions Bulkhead throws: configuration and usage mistakes, each with a stable code.
// Network failures are never exceptions; probes return them as outcomes.

/** Base class: a stable machine-readable `code`, a human message, an optional `cause`. */
export class BulkheadError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** A plan that cannot be used; `problems` lists every error, each naming the file and path. */
export class PlanError extends BulkheadError {
  readonly problems: readonly string[];
  constructor(problems: readonly string[], options?: { cause?: unknown }) {
    super('PLAN_INVALID', problems.join('\n'), options);
    this.problems = problems;
  }
}

/** A command line that cannot be acted on. */
export class UsageError extends BulkheadError {
  constructor(message: string) {
    super('USAGE', message);
  }
}
