// Address helpers shared by the plan schema, the engine and the DNS leak check.
import { BlockList, isIP } from 'node:net';

/** True when `value` is `a.b.c.d/n` or `x::y/n` with a prefix length valid for its family. */
export function isCidr(value: string): boolean {
  const slash = value.lastIndexOf('/');
  if (slash < 0) return false;
  const family = isIP(value.slice(0, slash));
  const bitsText = value.slice(slash + 1);
  if (family === 0 || !/^\d{1,3}$/.test(bitsText)) return false;
  const bits = Number(bitsText);
  return bits <= (family === 4 ? 32 : 128);
}

/** Splits `host`, `host:port`, `[v6]` or `[v6]:port` into address and port (default `defaultPort`). */
export function parseHostPort(value: string, defaultPort: number): { host: string; port: number } | undefined {
  let host = value;
  let portText: string | undefined;
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(value);
  if (bracketed) {
    host = bracketed[1]!;
    portText = bracketed[2];
  } else if (isIP(value) !== 6) {
    const colon = value.lastIndexOf(':');
    if (colon >= 0) {
      host = value.slice(0, colon);
      portText = value.slice(colon + 1);
    }
  }
  if (host === '') return undefined;
  if (portText === undefined) return { host, port: defaultPort };
  if (!/^\d{1,5}$/.test(portText)) return undefined;
  const port = Number(portText);
  return port >= 1 && port <= 65535 ? { host, port } : undefined;
}

/** A set of named CIDR networks that can say which one contains an address. */
export class NetworkIndex {
  private readonly entries: { name: string; cidr: string; list: BlockList }[] = [];

  add(name: string, cidr: string): void {
    const slash = cidr.lastIndexOf('/');
    const address = cidr.slice(0, slash);
    const family = isIP(address) === 6 ? 'ipv6' : 'ipv4';
    const list = new BlockList();
    list.addSubnet(address, Number(cidr.slice(slash + 1)), family);
    this.entries.push({ name, cidr, list });
  }

  /** The first network containing `address`, or undefined. */
  find(address: string): { name: string; cidr: string } | undefined {
    const family = isIP(address);
    if (family === 0) return undefined;
    const type = family === 6 ? 'ipv6' : 'ipv4';
    const hit = this.entries.find((entry) => entry.list.check(address, type));
    return hit ? { name: hit.name, cidr: hit.cidr } : undefined;
  }
}
