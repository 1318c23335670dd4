/**
 * IP address and prefix arithmetic on bigint, IPv4 and IPv6, with strict parsing.
 *
 * Every address that enters Gatehouse goes through `parseIp`/`parseCidr`, and every address
 * stored or shown comes out of `formatIp`, so the database only ever holds one canonical
 * spelling per address (RFC 5952 for IPv6) and equality is string equality.
 */

/** Address family. */
export type IpFamily = 4 | 6;

/** A parsed IP address. */
export interface IpAddress {
  readonly family: IpFamily;
  readonly value: bigint;
}

/** A parsed prefix: `address` is the first address of the prefix (host bits are zero). */
export interface IpCidr {
  readonly family: IpFamily;
  readonly network: bigint;
  readonly prefixLength: number;
}

/** Why a string is not an address; `parseIp` returns it instead of throwing. */
export interface IpParseFailure {
  readonly error: string;
}

/** Number of bits in an address of the family. */
export function familyBits(family: IpFamily): number {
  return family === 4 ? 32 : 128;
}

const IPV4_PART = /^(0|[1-9][0-9]{0,2})$/;
const IPV6_GROUP = /^[0-9a-fA-F]{1,4}$/;

function parseIpv4(text: string): bigint | undefined {
  const parts = text.split('.');
  if (parts.length !== 4) return undefined;
  let value = 0n;
  for (const part of parts) {
    if (!IPV4_PART.test(part)) return undefined;
    const n = Number(part);
    if (n > 255) return undefined;
    value = (value << 8n) | BigInt(n);
  }
  return value;
}

function parseIpv6(text: string): bigint | undefined {
  if (text.length > 45) return undefined;
  let head = text;
  let tailV4: bigint | undefined;
  const lastColon = text.lastIndexOf(':');
  if (lastColon >= 0 && text.indexOf('.', lastColon) > lastColon) {
    tailV4 = parseIpv4(text.slice(lastColon + 1));
    if (tailV4 === undefined) return undefined;
    // keep the colon so "::1.2.3.4" still splits around "::"
    head = text.slice(0, lastColon + 1) + '0:0';
  }
  const halves = head.split('::');
  if (halves.length > 2) return undefined;
  const splitGroups = (s: string): string[] | undefined => {
    if (s === '') return [];
    const groups = s.split(':');
    return groups.every((g) => IPV6_GROUP.test(g)) ? groups : undefined;
  };
  const left = splitGroups(halves[0] ?? '');
  const right = halves.length === 2 ? splitGroups(halves[1] ?? '') : [];
  if (!left || !right) return undefined;
  let groups: string[];
  if (halves.length === 2) {
    const missing = 8 - left.length - right.length;
    if (missing < 1) return undefined;
    groups = [...left, ...Array<string>(missing).fill('0'), ...right];
  } else {
    groups = left;
  }
  if (groups.length !== 8) return undefined;
  let value = 0n;
  for (const g of groups) value = (value << 16n) | BigInt(parseInt(g, 16));
  if (tailV4 !== undefined) value = (value & ~0xffffffffn) | tailV4;
  return value;
}

/** Parses an IPv4 or IPv6 address; zone ids, leading zeros in IPv4 and prefixes are refused. */
export function parseIp(text: string): IpAddress | IpParseFailure {
  if (typeof text !== 'string' || text.length === 0) return { error: 'is empty' };
  if (text.includes(':')) {
    const value = parseIpv6(text);
    return value === undefined ? { error: 'is not a valid IPv6 address' } : { family: 6, value };
  }
  const value = parseIpv4(text);
  return value === undefined ? { error: 'is not a valid IPv4 address' } : { family: 4, value };
}

/** Parses a prefix such as `10.0.0.0/24`; host bits must be zero unless `allowHostBits`. */
export function parseCidr(text: string, options: { allowHostBits?: boolean } = {}): IpCidr | IpParseFailure {
  if (typeof text !== 'string') return { error: 'is not a string' };
  const slash = text.indexOf('/');
  if (slash < 0) return { error: 'has no prefix length (expected address/length)' };
  const addr = parseIp(text.slice(0, slash));
  if ('error' in addr) return addr;
  const lengthText = text.slice(slash + 1);
  if (!/^(0|[1-9][0-9]{0,2})$/.test(lengthText)) return { error: 'has an invalid prefix length' };
  const prefixLength = Number(lengthText);
  const bits = familyBits(addr.family);
  if (prefixLength > bits) return { error: `has a prefix length over ${bits}` };
  const network = addr.value & prefixMask(addr.family, prefixLength);
  if (network !== addr.value && !options.allowHostBits) {
    return { error: `has host bits set (the network is ${formatIp({ family: addr.family, value: network })}/${prefixLength})` };
  }
  return { family: addr.family, network, prefixLength };
}

/** The netmask of a prefix length as a bigint. */
export function prefixMask(family: IpFamily, prefixLength: number): bigint {
  const bits = BigInt(familyBits(family));
  const all = (1n << bits) - 1n;
  return (all << (bits - BigInt(prefixLength))) & all;
}

/** Parses a dotted IPv4 netmask (255.255.255.0) into a prefix length; non-contiguous masks fail. */
export function netmaskToPrefixLength(text: string): number | IpParseFailure {
  const addr = parseIp(text);
  if ('error' in addr) return addr;
  if (addr.family !== 4) return { error: 'is not an IPv4 netmask' };
  for (let len = 0; len <= 32; len++) {
    if (prefixMask(4, len) === addr.value) return len;
  }
  return { error: 'is not a contiguous netmask' };
}

/** Formats an address canonically: dotted quad, or RFC 5952 lower-case compressed IPv6. */
export function formatIp(addr: IpAddress): string {
  if (addr.family === 4) {
    const v = Number(addr.value);
    return [v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255].join('.');
  }
  const groups: number[] = [];
  for (let i = 7; i >= 0; i--) groups.push(Number((addr.value >> BigInt(i * 16)) & 0xffffn));
  // longest run of two or more zero groups, first one on ties
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

/** Formats a prefix as `address/length`. */
export function formatCidr(cidr: IpCidr): string {
  return `${formatIp({ family: cidr.family, value: cidr.network })}/${cidr.prefixLength}`;
}

/** Number of addresses in a prefix. */
export function cidrSize(cidr: IpCidr): bigint {
  return 1n << BigInt(familyBits(cidr.family) - cidr.prefixLength);
}

/** Last address of a prefix. */
export function cidrLast(cidr: IpCidr): bigint {
  return cidr.network + cidrSize(cidr) - 1n;
}

/** Whether the address lies in the prefix. */
export function cidrContains(cidr: IpCidr, addr: IpAddress): boolean {
  return addr.family === cidr.family && addr.value >= cidr.network && addr.value <= cidrLast(cidr);
}

/** Whether two inclusive ranges of the same family overlap. */
export function rangesOverlap(a: { start: bigint; end: bigint }, b: { start: bigint; end: bigint }): boolean {
  return a.start <= b.end && b.start <= a.end;
}

/** Normalises an address string; throws nothing, returns undefined when invalid. */
export function canonicalIp(text: string): string | undefined {
  const addr = parseIp(text);
  return 'error' in addr ? undefined : formatIp(addr);
}
