/**
 * The arithmetic of a pool: which subnet, which range, how big a slot is (one address, or one
 * delegated IPv6 prefix), how many slots, and which slots the system reserves. Pure functions,
 * validated at the boundary: `resolvePoolGeometry` throws `ValidationError`s naming the input field.
 */
import { ValidationError } from '../support/errors.js';
import {
  cidrContains,
  cidrLast,
  familyBits,
  formatCidr,
  formatIp,
  netmaskToPrefixLength,
  parseCidr,
  prefixMask,
  type IpAddress,
  type IpCidr,
  type IpFamily,
} from '../net/ip.js';
import { validIp } from '../support/validate.js';

/** The resolved shape of a pool. */
export interface PoolGeometry {
  readonly family: IpFamily;
  readonly subnet: IpCidr;
  /** First and last address of the range (inclusive). */
  readonly start: bigint;
  readonly end: bigint;
  /** Prefix length of one slot: 32/128 for single addresses, less for delegated IPv6 prefixes. */
  readonly slotPrefixLength: number;
  /** Addresses per slot. */
  readonly step: bigint;
  readonly slotCount: bigint;
  readonly gateway?: bigint;
}

/** A slot the system reserves when the pool is created. */
export interface SystemReservation {
  readonly slot: bigint;
  readonly note: string;
}

/** Pool input fields that define the geometry. */
export interface PoolGeometryInput {
  cidr?: string | null;
  start?: string | null;
  end?: string | null;
  netmask?: string | null;
  prefixLength?: number | null;
  gateway?: string | null;
  delegatedPrefixLength?: number | null;
}

/** Resolves and validates the geometry fields of a pool. */
export function resolvePoolGeometry(input: PoolGeometryInput): PoolGeometry {
  const subnet = resolveSubnet(input);
  const family = subnet.family;
  const start = input.start != null ? inSubnet('input.start', input.start, subnet).value : subnet.network;
  const end = input.end != null ? inSubnet('input.end', input.end, subnet).value : cidrLast(subnet);
  if (end < start) throw new ValidationError('input.end', input.end ?? '', `is before input.start ${input.start ?? ''} (reversed range)`);

  let slotPrefixLength = familyBits(family);
  if (input.delegatedPrefixLength != null) {
    const d = input.delegatedPrefixLength;
    if (family !== 6) throw new ValidationError('input.delegatedPrefixLength', d, 'applies to IPv6 pools only');
    if (!Number.isInteger(d) || d < subnet.prefixLength || d > 128) {
      throw new ValidationError('input.delegatedPrefixLength', d, `must be an integer from ${subnet.prefixLength} (the subnet's prefix length) to 128`);
    }
    slotPrefixLength = d;
  }
  const step = 1n << BigInt(familyBits(family) - slotPrefixLength);
  if ((start - subnet.network) % step !== 0n) {
    throw new ValidationError('input.start', input.start ?? '', `is not aligned to a /${slotPrefixLength} prefix boundary`);
  }
  if ((end + 1n - start) % step !== 0n) {
    throw new ValidationError('input.end', input.end ?? '', `does not end a /${slotPrefixLength} prefix`);
  }
  let gateway: bigint | undefined;
  if (input.gateway != null) {
    const g = inSubnet('input.gateway', input.gateway, subnet, 'outside the subnet');
    if (family === 4 && subnet.prefixLength <= 30 && (g.value === subnet.network || g.value === cidrLast(subnet))) {
      throw new ValidationError(
        'input.gateway',
        input.gateway,
        `is the ${g.value === subnet.network ? 'network' : 'broadcast'} address of ${formatCidr(subnet)}`,
      );
    }
    gateway = g.value;
  }
  const reserved = SPECIAL_RANGES.find((r) => r.family === family && start <= r.last && r.first <= end);
  if (reserved) {
    throw new ValidationError(
      input.cidr != null ? 'input.cidr' : 'input.start',
      input.cidr ?? input.start ?? '',
      `overlaps ${reserved.name}, which instances cannot hold`,
    );
  }
  return { family, subnet, start, end, slotPrefixLength, step, slotCount: (end - start + 1n) / step, gateway };
}

// addresses no instance may hold, so no forward, proxy or rule can ever target them through a pool
const SPECIAL_RANGES: { family: IpFamily; first: bigint; last: bigint; name: string }[] = [
  ['0.0.0.0/8', 'the "this network" block 0.0.0.0/8'],
  ['127.0.0.0/8', 'the loopback block 127.0.0.0/8'],
  ['169.254.0.0/16', 'the link-local block 169.254.0.0/16'],
  ['224.0.0.0/4', 'the multicast block 224.0.0.0/4'],
  ['255.255.255.255/32', 'the broadcast address'],
  ['::/127', 'the unspecified and loopback addresses ::/127'],
  ['fe80::/10', 'the link-local block fe80::/10'],
  ['ff00::/8', 'the multicast block ff00::/8'],
].map(([text, name]) => {
  const cidr = parseCidr(text!) as IpCidr;
  return { family: cidr.family, first: cidr.network, last: cidrLast(cidr), name: name! };
});

function resolveSubnet(input: PoolGeometryInput): IpCidr {
  if (input.cidr != null) {
    if (input.netmask != null)
      throw new ValidationError('input.netmask', input.netmask, 'cannot be combined with input.cidr (the CIDR already gives the prefix length)');
    if (input.prefixLength != null)
      throw new ValidationError('input.prefixLength', input.prefixLength, 'cannot be combined with input.cidr (the CIDR already gives the prefix length)');
    const cidr = parseCidr(input.cidr);
    if ('error' in cidr) throw new ValidationError('input.cidr', input.cidr, cidr.error);
    return cidr;
  }
  if (input.start == null) throw new ValidationError('input.cidr', null, 'is required unless input.start, input.end and a netmask or prefixLength are given');
  const start = validIp('input.start', input.start);
  let prefixLength: number;
  if (input.netmask != null) {
    if (start.family !== 4) throw new ValidationError('input.netmask', input.netmask, 'applies to IPv4 pools only; give input.prefixLength for IPv6');
    const len = netmaskToPrefixLength(input.netmask);
    if (typeof len !== 'number') throw new ValidationError('input.netmask', input.netmask, len.error);
    prefixLength = len;
  } else if (input.prefixLength != null) {
    prefixLength = input.prefixLength;
    if (!Number.isInteger(prefixLength) || prefixLength < 0 || prefixLength > familyBits(start.family)) {
      throw new ValidationError('input.prefixLength', prefixLength, `must be an integer from 0 to ${familyBits(start.family)}`);
    }
  } else {
    throw new ValidationError('input.netmask', null, 'or input.prefixLength is required with input.start (or give input.cidr)');
  }
  return { family: start.family, network: start.value & prefixMask(start.family, prefixLength), prefixLength };
}

function inSubnet(field: string, text: string, subnet: IpCidr, problem = `outside the subnet`): IpAddress {
  const addr = validIp(field, text);
  if (addr.family !== subnet.family) {
    throw new ValidationError(field, text, `is an IPv${addr.family} address in an IPv${subnet.family} pool`);
  }
  if (!cidrContains(subnet, addr)) throw new ValidationError(field, text, `is ${problem} ${formatCidr(subnet)}`);
  return addr;
}

/** Slots reserved at creation: IPv4 network and broadcast, the IPv6 subnet-router anycast, and the gateway. */
export function systemReservations(g: PoolGeometry): SystemReservation[] {
  const out = new Map<bigint, string>();
  const reserveAddress = (addr: bigint, note: string) => {
    if (addr < g.start || addr > g.end) return;
    const slot = (addr - g.start) / g.step;
    if (!out.has(slot)) out.set(slot, note);
  };
  if (g.family === 4 && g.subnet.prefixLength <= 30) {
    reserveAddress(g.subnet.network, 'network address');
    reserveAddress(cidrLast(g.subnet), 'broadcast address');
  }
  if (g.family === 6 && g.step === 1n && g.subnet.prefixLength < 127) reserveAddress(g.subnet.network, 'subnet-router anycast address');
  if (g.gateway !== undefined) reserveAddress(g.gateway, 'gateway');
  return [...out].map(([slot, note]) => ({ slot, note }));
}

/** The address (network address of the prefix, for delegated prefixes) of a slot. */
export function slotAddress(g: PoolGeometry, slot: bigint): string {
  return formatIp({ family: g.family, value: g.start + slot * g.step });
}

/** The slot holding an address, or a reason why the address has none in this pool. */
export function slotOf(g: PoolGeometry, addr: IpAddress): bigint | { problem: string } {
  if (addr.family !== g.family) return { problem: `is an IPv${addr.family} address but the pool is IPv${g.family}` };
  if (addr.value < g.start || addr.value > g.end) {
    return { problem: `is outside the pool's range ${formatIp({ family: g.family, value: g.start })}-${formatIp({ family: g.family, value: g.end })}` };
  }
  const offset = addr.value - g.start;
  if (offset % g.step !== 0n) return { problem: `is not the first address of a /${g.slotPrefixLength} prefix` };
  return offset / g.step;
}

/** Whether two geometries' ranges overlap. */
export function geometriesOverlap(a: PoolGeometry, b: PoolGeometry): boolean {
  return a.family === b.family && a.start <= b.end && b.start <= a.end;
}

/** Rebuilds a geometry from stored pool columns (already validated when stored). */
export function storedGeometry(row: {
  subnet: string;
  rangeStart: string;
  rangeEnd: string;
  gateway: string | null;
  delegatedPrefixLength: number | null;
}): PoolGeometry {
  return resolvePoolGeometry({
    cidr: row.subnet,
    start: row.rangeStart,
    end: row.rangeEnd,
    gateway: row.gateway,
    delegatedPrefixLength: row.delegatedPrefixLength,
  });
}
