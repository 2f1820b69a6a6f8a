// The lab's router firewall: one nftables table in the router namespace whose forward chain is the isolation
// policy (nothing between environments; each environment may reach NATS in mgmt), plus the knobs the
// scenarios turn: allow one port, drop or reject what is denied, cut a namespace off from another.
import { nftIn, run } from '../../bench/netns.js';

export type DenyMode = 'drop' | 'reject' | 'prohibit';
export type Proto = 'tcp' | 'udp';

/** One rule added at run time; `remove()` deletes exactly that rule (by its nft handle), once. */
export interface RuleHandle {
  readonly handle: number;
  readonly description: string;
  remove(): void;
}

const TABLE = 'bulkhead';

/**
 * The ruleset. The forward chain runs, in order: `partition` (cuts, which must also stop established flows,
 * so they come before conntrack), established/related, `allow` (NATS and rules added at run time), and
 * `deny` (empty in drop mode, so the chain's drop policy decides; reject rules otherwise).
 */
function ruleset(interfaces: readonly string[], mgmt: string, natsPort: number): string {
  const nats = interfaces
    .filter((i) => i !== mgmt)
    .map((i) => `    iifname "${i}" oifname "${mgmt}" tcp dport ${natsPort} accept comment "agents report to NATS"`);
  return `table inet ${TABLE} {
  chain forward {
    type filter hook forward priority filter; policy drop;
    jump partition
    ct state established,related accept
    jump allow
    jump deny
  }
  chain partition {
  }
  chain allow {
${nats.join('\n')}
  }
  chain deny {
  }
}
`;
}

/** What each deny mode puts in the `deny` chain; see `setDenyMode`. */
const DENY_RULES: Record<DenyMode, readonly string[]> = {
  drop: [],
  reject: ['meta l4proto tcp reject with tcp reset', 'reject with icmpx type admin-prohibited'],
  prohibit: ['reject with icmpx type admin-prohibited'],
};

/** The router's nftables table, driven with `nft` inside the router namespace. */
export class Firewall {
  private readonly partitions = new Map<string, RuleHandle[]>();
  private mode: DenyMode = 'drop';

  constructor(
    private readonly routerNs: string,
    /** The router's interface towards each environment namespace and mgmt, named after it. */
    private readonly interfaces: readonly string[],
    mgmt: string,
    natsPort: number,
  ) {
    // Start from a clean table even if a half-built one exists in this namespace.
    nftIn({ name: routerNs }, `table inet ${TABLE}\ndelete table inet ${TABLE}\n${ruleset(interfaces, mgmt, natsPort)}`);
  }

  /** The deny behaviour now in force. */
  get denyMode(): DenyMode {
    return this.mode;
  }

  /** Lets `from` open `proto` connections to `port` in `to` (a deliberate hole); returns the rule to remove. */
  allow(from: string, to: string, proto: Proto, port: number): RuleHandle {
    this.known(from, to);
    return this.add('allow', `iifname "${from}" oifname "${to}" ${proto} dport ${port} accept`, `allow ${from}→${to} ${proto}/${port}`);
  }

  /**
   * How denied traffic is treated. `drop`: silently (probes see `filtered`). `reject`: TCP gets a reset
   * from the router (`refused`), anything else ICMP administratively prohibited. `prohibit`: ICMP
   * administratively prohibited for everything, TCP included (`unreachable`: EHOSTUNREACH).
   */
  setDenyMode(mode: DenyMode): void {
    const rules = DENY_RULES[mode].map((rule) => `add rule inet ${TABLE} deny ${rule}\n`).join('');
    // One transaction: there is no moment where the chain is empty while switching between reject kinds.
    nftIn({ name: this.routerNs }, `flush chain inet ${TABLE} deny\n${rules}`);
    this.mode = mode;
  }

  /** Cuts `a` and `b` apart both ways, established flows included (silently: dropped, not rejected). */
  partition(a: string, b: string): void {
    this.known(a, b);
    const key = pairKey(a, b);
    if (this.partitions.has(key)) return;
    this.partitions.set(key, [
      this.add('partition', `iifname "${a}" oifname "${b}" drop`, `cut ${a}→${b}`),
      this.add('partition', `iifname "${b}" oifname "${a}" drop`, `cut ${b}→${a}`),
    ]);
  }

  /** Undoes `partition(a, b)`; a no-op when they are not cut apart. */
  heal(a: string, b: string): void {
    const key = pairKey(a, b);
    for (const rule of this.partitions.get(key) ?? []) rule.remove();
    this.partitions.delete(key);
  }

  /** The table as `nft list` prints it (with handles), for failure messages. */
  list(): string {
    return run('ip', ['netns', 'exec', this.routerNs, 'nft', '-a', 'list', 'table', 'inet', TABLE]);
  }

  private add(chain: string, rule: string, description: string): RuleHandle {
    const echoed = run('ip', ['netns', 'exec', this.routerNs, 'nft', '--echo', '--handle', 'add', 'rule', 'inet', TABLE, chain, rule]);
    const handle = Number(/# handle (\d+)/.exec(echoed)?.[1]);
    if (!Number.isInteger(handle)) throw new Error(`nft did not report a handle for "${rule}": ${echoed}`);
    let removed = false;
    return {
      handle,
      description,
      remove: () => {
        if (removed) return;
        removed = true;
        run('ip', ['netns', 'exec', this.routerNs, 'nft', 'delete', 'rule', 'inet', TABLE, chain, 'handle', String(handle)]);
      },
    };
  }

  private known(...names: string[]): void {
    for (const name of names) {
      if (!this.interfaces.includes(name)) throw new Error(`the lab has no namespace "${name}" (it has ${this.interfaces.join(', ')})`);
    }
  }
}

function pairKey(a: string, b: string): string {
  return [a, b].sort().join('|');
}
