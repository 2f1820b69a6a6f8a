// The console receiver: one line per notification for a human reading the controller's log. No HTTP.
import type { Notification } from '../model.js';
import { flagsOf, pathOf, sentence, statusWord } from './shared.js';

/** `<time> FIRING critical violation staging → prod-db (prod): <summary> [dedup …]` on one line. */
export function renderConsole(notification: Notification): string {
  const f = notification.finding;
  const flags = flagsOf(f);
  const summary = sentence(notification.action, f.summary.replace(/\s+/g, ' ').trim());
  return (
    `${notification.createdAt} ${statusWord(notification.action)}${notification.action === 'update' ? ' (update)' : ''} ` +
    `${f.labels.severity} ${f.kind}${flags ? ` [${flags}]` : ''} ${pathOf(f)}: ${summary} ` +
    `[${notification.dedupKey} #${notification.incident}]`
  );
}
