/**
 * Boundary validators: each turns untrusted input into a typed value or throws a
 * `ValidationError` naming the field and the value. Services call them before touching the store.
 */
import { randomBytes } from 'node:crypto';
import { ValidationError } from './errors.js';
import { isId } from './ids.js';
import { formatIp, parseIp, type IpAddress, type IpFamily } from '../net/ip.js';

/** An inclusive range of ports. */
export interface PortRange {
  readonly start: number;
  readonly end: number;
}

const NAME = /^[A-Za-z0-9](?:[A-Za-z0-9 ._-]{0,62}[A-Za-z0-9._-])?$/;
// spaces inside, not at either end: vSphere port groups have them (ESXi's default is "VM Network")
const NETWORK = /^[A-Za-z0-9](?:[A-Za-z0-9 ._:-]{0,62}[A-Za-z0-9._:-])?$/;
const MAC = /^[0-9a-f]{2}(?::[0-9a-f]{2}){5}$/;

/** A display name: 1–64 characters, letters, digits, space, `.`, `_`, `-`, no leading/trailing space. */
export function validName(field: string, value: string): string {
  if (typeof value !== 'string' || !NAME.test(value)) {
    throw new ValidationError(field, value, 'must be 1-64 characters of letters, digits, space, ".", "_" or "-", starting with a letter or digit');
  }
  return value;
}

/** A bridge or network name as the hypervisor spells it. */
export function validNetworkName(field: string, value: string): string {
  if (typeof value !== 'string' || !NETWORK.test(value)) {
    throw new ValidationError(field, value, 'must be 1-64 characters of letters, digits, ".", "_", ":", "-" or inner spaces');
  }
  return value;
}

/** An object id. */
export function validId(field: string, value: string): string {
  if (typeof value !== 'string' || !isId(value)) throw new ValidationError(field, value, 'is not a valid id');
  return value;
}

/** An IP address, optionally of a given family; returned parsed. */
export function validIp(field: string, value: string, family?: IpFamily): IpAddress {
  const parsed = parseIp(value);
  if ('error' in parsed) throw new ValidationError(field, value, parsed.error);
  if (family && parsed.family !== family) throw new ValidationError(field, value, `is an IPv${parsed.family} address, expected IPv${family}`);
  return parsed;
}

/** A unicast address a host can own: not unspecified, loopback, multicast or link-local. */
export function validUnicastIp(field: string, value: string): string {
  const addr = validIp(field, value);
  const problem = specialAddressProblem(addr);
  if (problem) throw new ValidationError(field, value, problem);
  return formatIp(addr);
}

/** Why an address cannot be used as a host or instance address, or undefined when it can. */
export function specialAddressProblem(addr: IpAddress): string | undefined {
  const v = addr.value;
  if (addr.family === 4) {
    if (v === 0n) return 'is the unspecified address';
    if (v >> 24n === 127n) return 'is a loopback address';
    if (v >> 28n === 0xen) return 'is a multicast address';
    if (v >> 16n === 0xa9fen) return 'is a link-local address';
    if (v === 0xffffffffn) return 'is the broadcast address';
    return undefined;
  }
  if (v === 0n) return 'is the unspecified address';
  if (v === 1n) return 'is the loopback address';
  if (v >> 120n === 0xffn) return 'is a multicast address';
  if (v >> 118n === 0x3fan) return 'is a link-local address';
  return undefined;
}

/** A port number 1–65535. */
export function validPort(field: string, value: number): number {
  if (!Number.isInteger(value) || value < 1 || value > 65535) throw new ValidationError(field, value, 'must be an integer from 1 to 65535');
  return value;
}

/** `"22"` or `"8000-9000"`. */
export function parsePortRange(field: string, value: string): PortRange {
  const m = typeof value === 'string' ? /^\s*([0-9]{1,5})\s*(?:-\s*([0-9]{1,5})\s*)?$/.exec(value) : null;
  if (!m) throw new ValidationError(field, value, 'must be a port "22" or a range "8000-9000"');
  const start = validPort(field, Number(m[1]));
  const end = m[2] === undefined ? start : validPort(field, Number(m[2]));
  if (end < start) throw new ValidationError(field, value, 'is a reversed range (start after end)');
  return { start, end };
}

/** A list of ports and ranges, merged and sorted; overlapping entries are refused. */
export function parsePortRanges(field: string, values: readonly string[]): PortRange[] {
  const ranges = values.map((v, i) => parsePortRange(`${field}[${i}]`, v)).sort((a, b) => a.start - b.start);
  for (let i = 1; i < ranges.length; i++) {
    const prev = ranges[i - 1]!;
    const cur = ranges[i]!;
    if (cur.start <= prev.end) throw new ValidationError(field, values, `has overlapping entries ${prev.start}-${prev.end} and ${cur.start}-${cur.end}`);
  }
  return ranges;
}

/** A MAC address in any common spelling, returned as lower-case colon-separated. */
export function validMac(field: string, value: string): string {
  const normalised = typeof value === 'string' ? value.trim().toLowerCase().replace(/-/g, ':') : '';
  if (!MAC.test(normalised)) throw new ValidationError(field, value, 'is not a MAC address (expected six hex octets such as 52:54:00:12:34:56)');
  const first = parseInt(normalised.slice(0, 2), 16);
  if (first & 1) throw new ValidationError(field, value, 'is a multicast MAC address');
  if (normalised === '00:00:00:00:00:00') throw new ValidationError(field, value, 'is the all-zero MAC address');
  return normalised;
}

/** A random locally administered unicast MAC. */
export function generateMac(): string {
  const bytes = randomBytes(6);
  bytes[0] = ((bytes[0] ?? 0) & 0xfc) | 0x02;
  return [...bytes].map((b) => b.toString(16).padStart(2, '0')).join(':');
}

/** A non-negative integer quota, or null for unlimited. */
export function validQuota(field: string, value: number | null | undefined): number | null {
  if (value === null || value === undefined) return null;
  if (!Number.isInteger(value) || value < 0 || value > 1_000_000_000)
    throw new ValidationError(field, value, 'must be an integer from 0 to 1000000000, or null for unlimited');
  return value;
}

/** Free-form note: at most 256 characters, no control characters. */
export function validNote(field: string, value: string | null | undefined): string {
  if (value === null || value === undefined) return '';
  // eslint-disable-next-line no-control-regex
  if (typeof value !== 'string' || value.length > 256 || /[\u0000-\u001f\u007f]/.test(value)) {
    throw new ValidationError(field, value, 'must be at most 256 characters without control characters');
  }
  return value;
}

/** An idempotency key chosen by the client: 1–128 printable ASCII characters. */
export function validIdempotencyKey(field: string, value: string | null | undefined): string | null {
  if (value === null || value === undefined) return null;
  if (typeof value !== 'string' || !/^[\x21-\x7e]{1,128}$/.test(value)) throw new ValidationError(field, value, 'must be 1-128 printable ASCII characters');
  return value;
}
