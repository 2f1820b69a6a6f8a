// Polls the controller's read API until a violation fires (or the deadline passes) and prints the
// finding, the paths and the agents as an operator would look at them.
const [base, seconds] = [process.argv[2]!, Number(process.argv[3] ?? 30)];

async function get<T>(path: string): Promise<T> {
  const res = await fetch(`${base}${path}`);
  if (!res.ok) throw new Error(`GET ${path}: HTTP ${res.status}`);
  return (await res.json()) as T;
}

interface Finding { key: string; kind: string; status: string; summary: string; since: string; receivers: string[]; labels: Record<string, string> }
interface PathRecord { key: string; state: string; stale: boolean; expectation: string; last: { outcome: string; agent: string } }
interface Agent { key: string; version: string; planSha256: string; lastHeartbeatAt: string | null; silent: boolean; controls: { total: number; failed: string[] } | null }
const list = <T>(v: T[] | { items?: T[] } | Record<string, unknown>, key: string): T[] =>
  Array.isArray(v) ? v : (((v as Record<string, unknown>)[key] ?? (v as { items?: T[] }).items ?? []) as T[]);

const started = Date.now();
let violation: Finding | undefined;
while (Date.now() - started < seconds * 1000) {
  try {
    const findings = list<Finding>(await get('/v1/findings?status=firing'), 'findings');
    violation = findings.find((f) => f.kind === 'violation');
    if (violation) break;
  } catch {
    // the controller may still be starting
  }
  await new Promise((r) => setTimeout(r, 1000));
}
if (!violation) {
  console.log(`no violation within ${seconds} s: see the controller and agent logs`);
  process.exit(1);
}
console.log(`after ${((Date.now() - started) / 1000).toFixed(1)} s: FIRING ${violation.key}`);
console.log(`  ${violation.summary}`);
console.log(`  since ${violation.since}; notifications owed to: ${violation.receivers.join(', ') || '(no route)'}`);
console.log('\nPaths (GET /v1/paths):');
for (const p of list<PathRecord>(await get('/v1/paths'), 'paths')) {
  console.log(`  ${p.state.padEnd(8)} ${p.expectation.padEnd(7)} ${p.key}  (last: ${p.last.outcome} by ${p.last.agent})`);
}
console.log('\nAgents (GET /v1/agents):');
for (const a of list<Agent>(await get('/v1/agents'), 'agents')) {
  const controls = a.controls ? `controls ${a.controls.total - a.controls.failed.length}/${a.controls.total} ok` : 'no cycle yet';
  console.log(`  ${a.key.padEnd(18)} v${a.version} plan ${a.planSha256.slice(0, 12)} last heartbeat ${a.lastHeartbeatAt ?? 'never'} ${controls}${a.silent ? ' SILENT' : ''}`);
}
