// Silences: label matchers with an expiry, created through the controller's API. A silenced finding is still
// tracked; only sending waits. The API's input is parsed here with the same strictness as the plan.
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { FINDING_KINDS, SEVERITIES, parseDurationMs } from '../../core/plan.js';
import type { FindingLabels, Notification } from '../model.js';
import type { Clock, Timer } from './clock.js';
import type { Silence, SilenceMatchers } from './model.js';

/** A silence longer than this is a forgotten silence: use a plan change instead. */
export const MAX_SILENCE_MS = 30 * 24 * 3_600_000;

const Name = z.string().regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, { error: 'expected a name (lowercase letters, digits, - and _)' });
// One value or a list of them; a bad value is reported at its index (matchers.kind.1), not as a failed union.
const list = <T extends z.ZodType>(item: T) => z.preprocess((v) => (Array.isArray(v) ? v : [v]), z.array(item).min(1, { error: 'expected at least one value' }));

const SilenceInput = z
  .strictObject({
    matchers: z
      .strictObject({
        from_env: list(Name).optional(),
        to_env: list(Name).optional(),
        target: list(Name).optional(),
        kind: list(z.enum(FINDING_KINDS, { error: `expected one of ${FINDING_KINDS.join(', ')}` })).optional(),
        severity: list(z.enum(SEVERITIES, { error: `expected one of ${SEVERITIES.join(', ')}` })).optional(),
      })
      .refine((m) => Object.values(m).some((v) => v !== undefined), { error: 'expected at least one matcher: a silence for everything hides every alert' }),
    /** `2h`, `30m`: from now (or from starts_at). */
    duration: z.string().refine((v) => parseDurationMs(v) !== undefined, { error: 'expected a duration such as 30m or 2h' }).optional(),
    starts_at: z.iso.datetime({ offset: true }).optional(),
    ends_at: z.iso.datetime({ offset: true }).optional(),
    created_by: z.string({ error: 'say who is silencing' }).trim().min(1, { error: 'say who is silencing' }).max(200),
    comment: z.string({ error: 'say why (a ticket, a maintenance window)' }).trim().min(1, { error: 'say why (a ticket, a maintenance window)' }).max(2000),
  })
  .refine((s) => (s.duration === undefined) !== (s.ends_at === undefined), { error: 'give exactly one of duration and ends_at', path: ['ends_at'] });

/** Parses an API request body into a silence starting now (or at starts_at); problems name the field. */
export function parseSilence(body: unknown, now: number): Silence | { problems: string[] } {
  const parsed = SilenceInput.safeParse(body);
  if (!parsed.success) {
    // The plan's wording: an unknown key is named, not "Unrecognized key".
    const problems = parsed.error.issues.flatMap((i) =>
      i.code === 'unrecognized_keys' ? i.keys.map((k) => `${[...i.path, k].join('.')}: unknown key`) : [`${i.path.join('.') || '(body)'}: ${i.message}`],
    );
    return { problems };
  }
  const input = parsed.data;
  const startsMs = input.starts_at !== undefined ? Date.parse(input.starts_at) : now;
  const endsMs = input.ends_at !== undefined ? Date.parse(input.ends_at) : startsMs + parseDurationMs(input.duration!)!;
  if (endsMs <= Math.max(now, startsMs)) return { problems: ['ends_at: must be in the future and after starts_at'] };
  if (endsMs - startsMs > MAX_SILENCE_MS) return { problems: [`ends_at: a silence may last at most ${MAX_SILENCE_MS / 86_400_000} days`] };
  const { duration: _d, starts_at: _s, ends_at: _e, created_by: createdBy, comment, matchers } = input;
  return {
    id: `sil_${randomBytes(8).toString('hex')}`,
    matchers: matchers as SilenceMatchers,
    startsAt: new Date(startsMs).toISOString(),
    endsAt: new Date(endsMs).toISOString(),
    createdBy,
    comment,
    createdAt: new Date(now).toISOString(),
  };
}

const LABELS = ['from_env', 'to_env', 'target', 'kind', 'severity'] as const;

/** Active at `now` and every given matcher equals one of its values (a label the finding lacks does not match). */
export function silences(silence: Silence, labels: FindingLabels, now: number): boolean {
  if (now < Date.parse(silence.startsAt) || now >= Date.parse(silence.endsAt)) return false;
  return LABELS.every((name) => {
    const wanted = silence.matchers[name] as readonly string[] | undefined;
    if (wanted === undefined) return true;
    const value = labels[name];
    return value !== undefined && wanted.includes(value);
  });
}

/**
 * Splits a flush by silences. Triggers and updates of silenced findings are held; a resolve whose trigger is held
 * settles with it (nothing was ever sent); a resolve whose trigger already went out is sent, or the receiver would
 * page forever.
 */
export function partitionSilenced(
  all: readonly Notification[],
  isSilenced: (n: Notification) => boolean,
): { held: Notification[]; silenced: Notification[]; sendable: Notification[] } {
  const incident = (n: Notification) => `${n.findingKey}#${n.incident}`;
  const held = all.filter((n) => n.action !== 'resolve' && isSilenced(n));
  const heldTriggers = new Set(held.filter((n) => n.action === 'trigger').map(incident));
  const closed = new Set(all.filter((n) => n.action === 'resolve' && heldTriggers.has(incident(n))).map(incident));
  return {
    held: held.filter((n) => !closed.has(incident(n))),
    silenced: all.filter((n) => closed.has(incident(n))),
    sendable: all.filter((n) => !held.includes(n) && !closed.has(incident(n))),
  };
}

/** The silences in force: persisted through `persist` before they apply, with a timer at each end. */
export class SilenceBook {
  private readonly all = new Map<string, Silence>();
  private readonly timers = new Map<string, Timer>();

  constructor(
    private readonly clock: Clock,
    private readonly persist: (silence: Silence) => Promise<void>,
    initial: readonly Silence[],
    private readonly ended: () => void,
  ) {
    for (const s of initial) this.track(structuredClone(s));
  }

  list(): Silence[] {
    return [...this.all.values()].sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  }

  matches(labels: FindingLabels, now: number): boolean {
    for (const s of this.all.values()) if (silences(s, labels, now)) return true;
    return false;
  }

  async add(silence: Silence): Promise<void> {
    await this.persist(silence);
    this.track(silence);
  }

  /** Ends a silence now (never later than it would have); undefined when there is no such silence. */
  async expire(id: string): Promise<Silence | undefined> {
    const silence = this.all.get(id);
    if (silence === undefined) return undefined;
    const ended = { ...silence, endsAt: new Date(Math.min(this.clock.now(), Date.parse(silence.endsAt))).toISOString() };
    await this.persist(ended);
    this.track(ended);
    return ended;
  }

  stop(): void {
    for (const t of this.timers.values()) t.cancel();
  }

  private track(silence: Silence): void {
    this.all.set(silence.id, silence);
    this.timers.get(silence.id)?.cancel();
    this.timers.set(silence.id, this.clock.after(Math.max(0, Date.parse(silence.endsAt) - this.clock.now()), this.ended));
  }
}
