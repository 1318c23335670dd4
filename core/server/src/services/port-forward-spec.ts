/**
 * The pure part of a port forward: turning what a client sent (a GraphQL input or a CSV row)
 * into a checked forward for a given host and target, and deciding whether two forwards overlap.
 * `PortForwardService.create` and the CSV import share it, so both refuse exactly the same input.
 */
import { checkPortForward, type DesiredRateLimit } from '@gatehouse/sdk';
import type { ForwardBalanceJson, portForwards } from '../db/schema.js';
import { ValidationError } from '../support/errors.js';
import { newId } from '../support/ids.js';
import { formatIp, parseCidr, type IpFamily } from '../net/ip.js';
import { parsePortRange, validIp, validNote, type PortRange } from '../support/validate.js';
import { requireCapability } from './capability-check.js';
import type { Host } from './host-service.js';
import type { InstanceTarget } from './ownership.js';

/** A port forward row. */
export type PortForward = typeof portForwards.$inferSelect;

/** Forwarded protocols. */
export type ForwardProtocol = 'tcp' | 'udp' | 'both';

/** What a client asks for. */
export interface ForwardSpec {
  protocol: ForwardProtocol;
  hostPort?: string | null;
  targetPort: string;
  hostAddress?: string | null;
  sourceCidrs?: readonly string[] | null;
  /** New-connection rate limits; absent or null: none. */
  rateLimit?: RateLimitSpec | null;
  /** Several targets, already resolved (`resolveBalance`); absent or null: the target alone. */
  balance?: ForwardBalanceJson | null;
  note?: string | null;
}

/** Rate limits as a client sends them: at least one rate; burst and action have defaults. */
export interface RateLimitSpec {
  perSource?: number | null;
  total?: number | null;
  burst?: number | null;
  action?: DesiredRateLimit['action'] | null;
}

const MAX_RATE = 1_000_000;
/** Burst when none is given: a tenth of the highest rate, at least 5 connections. */
export const defaultBurst = (limit: { perSource: number | null; total: number | null }) =>
  Math.max(5, Math.ceil(Math.max(limit.perSource ?? 0, limit.total ?? 0) / 10));

/** Checks a rate limit spec; null when none is asked for. */
export function validRateLimit(field: string, spec: RateLimitSpec | null | undefined): DesiredRateLimit | null {
  if (spec == null) return null;
  const rate = (key: 'perSource' | 'total' | 'burst', min: number) => {
    const v = spec[key];
    if (v == null) return null;
    if (!Number.isInteger(v) || v < min || v > MAX_RATE) throw new ValidationError(`${field}.${key}`, v, `must be an integer from ${min} to ${MAX_RATE}`);
    return v;
  };
  const perSource = rate('perSource', 1);
  const total = rate('total', 1);
  if (perSource === null && total === null) throw new ValidationError(field, spec, 'needs perSource or total (new connections per second)');
  return { perSource, total, burst: rate('burst', 0) ?? defaultBurst({ perSource, total }), action: spec.action ?? 'drop' };
}

/** Spec fields, named per boundary (`input.hostPort`, `row 7 host_port`). */
export type SpecField = 'protocol' | 'hostPort' | 'targetPort' | 'targetAddress' | 'hostAddress' | 'sourceCidrs' | 'rateLimit' | 'targets' | 'note';
/** Maps a spec field to the name the client knows it by. */
export type FieldNamer = (field: SpecField) => string;

/** An instance address a forward can point to. */
export type ForwardTarget = InstanceTarget;

/** The keys of the `port_forwards_no_overlap` exclusion constraint, plus the host ports. */
export interface OverlapKeys {
  protoLo: number;
  protoHi: number;
  addrLo: string;
  addrHi: string;
}

/** A spec checked against its host and target; `hostPorts` is null when the host port is to be chosen. */
export interface PlacedForward extends OverlapKeys {
  protocol: ForwardProtocol;
  hostPorts: PortRange | null;
  targetPorts: PortRange;
  hostAddress: string | null;
  sourceCidrs: string[];
  rateLimit: DesiredRateLimit | null;
  balance: ForwardBalanceJson | null;
  note: string;
}

const MAX_SOURCE_CIDRS = 64;
const PROTOCOL_RANGE: Record<ForwardProtocol, [number, number]> = { tcp: [1, 1], udp: [2, 2], both: [1, 2] };
// exclusion keys put IPv6 at [0, 2^128) and IPv4 above it, so the families never overlap
const IPV4_BASE = 1n << 128n;
// the keys of every address of a family, as strings once (most forwards have no host address)
const ANY_IPV6: readonly [string, string] = ['0', ((1n << 128n) - 1n).toString()];
const ANY_IPV4: readonly [string, string] = [IPV4_BASE.toString(), (IPV4_BASE + (1n << 32n) - 1n).toString()];

function addressKey(family: IpFamily, address: bigint | null): readonly [string, string] {
  if (address === null) return family === 6 ? ANY_IPV6 : ANY_IPV4;
  const v = (family === 6 ? address : IPV4_BASE + address).toString();
  return [v, v];
}

/** "22" or "8000-8010". */
export function portRangeText(r: PortRange): string {
  return r.start === r.end ? String(r.start) : `${r.start}-${r.end}`;
}

function validSourceCidrs(field: string, values: readonly string[]): string[] {
  if (values.length > MAX_SOURCE_CIDRS) throw new ValidationError(field, `${values.length} entries`, `lists more than ${MAX_SOURCE_CIDRS} prefixes`);
  const out = values.map((v, i) => {
    const cidr = parseCidr(v.includes('/') ? v : `${v}/${v.includes(':') ? 128 : 32}`);
    if ('error' in cidr) throw new ValidationError(`${field}[${i}]`, v, cidr.error);
    return `${formatIp({ family: cidr.family, value: cidr.network })}/${cidr.prefixLength}`;
  });
  const dup = out.find((c, i) => out.indexOf(c) !== i);
  if (dup) throw new ValidationError(field, values, `lists ${dup} twice`);
  return out;
}

/** Host ports a forward holds, counted per protocol (what `quotaForwardedPorts` counts). */
export function heldPorts(protocol: ForwardProtocol, ports: PortRange): number {
  return (ports.end - ports.start + 1) * (protocol === 'both' ? 2 : 1);
}

/**
 * Checks a spec against the host it lands on and the target it points to. `tenant`: the caller
 * is not an admin, so the host's `maxForwardPorts` bounds the forward's width. `action` names
 * the change in a CAPABILITY_NOT_SUPPORTED message.
 */
export function placeForward(
  spec: ForwardSpec,
  host: Host,
  target: ForwardTarget,
  name: FieldNamer,
  tenant = false,
  action = 'creating port forward',
): PlacedForward {
  const targetPorts = parsePortRange(name('targetPort'), spec.targetPort);
  const length = targetPorts.end - targetPorts.start;
  if (tenant && length + 1 > host.maxForwardPorts) {
    const field = spec.hostPort != null ? 'hostPort' : 'targetPort';
    throw new ValidationError(
      name(field),
      field === 'hostPort' ? spec.hostPort : spec.targetPort,
      `spans ${length + 1} ports; host "${host.name}" allows at most ${host.maxForwardPorts} per forward`,
    );
  }
  let hostPorts: PortRange | null = null;
  if (spec.hostPort != null) {
    hostPorts = parsePortRange(name('hostPort'), spec.hostPort);
    if (hostPorts.end - hostPorts.start !== length) {
      throw new ValidationError(
        name('hostPort'),
        spec.hostPort,
        `has ${hostPorts.end - hostPorts.start + 1} ports but ${name('targetPort')} "${spec.targetPort}" has ${length + 1}`,
      );
    }
    if (hostPorts.start < host.portRangeStart || hostPorts.end > host.portRangeEnd) {
      throw new ValidationError(name('hostPort'), spec.hostPort, `is outside host "${host.name}"'s allowed range ${host.portRangeStart}-${host.portRangeEnd}`);
    }
    const reserved = host.reservedPorts.find((r) => r.start <= hostPorts!.end && hostPorts!.start <= r.end);
    if (reserved) throw new ValidationError(name('hostPort'), spec.hostPort, `is reserved on host "${host.name}" (${portRangeText(reserved)})`);
  }
  let hostAddress: bigint | null = null;
  if (spec.hostAddress != null) {
    const addr = validIp(name('hostAddress'), spec.hostAddress);
    if (!host.publicAddresses.includes(formatIp(addr))) {
      throw new ValidationError(
        name('hostAddress'),
        spec.hostAddress,
        `is not a public address of host "${host.name}" (${host.publicAddresses.join(', ') || 'none configured'})`,
      );
    }
    if (addr.family !== target.family) {
      throw new ValidationError(name('hostAddress'), spec.hostAddress, `is IPv${addr.family} but the target ${target.address} is IPv${target.family}`);
    }
    hostAddress = addr.value;
  }
  const [addrLo, addrHi] = addressKey(target.family, hostAddress);
  const [protoLo, protoHi] = PROTOCOL_RANGE[spec.protocol];
  const sourceCidrs = validSourceCidrs(name('sourceCidrs'), spec.sourceCidrs ?? []);
  const rateLimit = validRateLimit(name('rateLimit'), spec.rateLimit);
  const balance = spec.balance ?? null;
  const needs = { protocol: spec.protocol, ipv6: target.family === 6, targetAddress: target.address, hostPorts, targetPorts, sourceCidrs, rateLimit, balance };
  requireCapability(
    host,
    action,
    (caps) => checkPortForward(caps, needs),
    (field) => name(field as SpecField),
  );
  return {
    protocol: spec.protocol,
    hostPorts,
    targetPorts,
    hostAddress: hostAddress === null ? null : formatIp({ family: target.family, value: hostAddress }),
    sourceCidrs,
    rateLimit,
    balance,
    note: validNote(name('note'), spec.note),
    protoLo,
    protoHi,
    addrLo,
    addrHi,
  };
}

/** The row to insert for a placed forward on its final host ports, created in the host's desired revision `changedRevision`. */
export function forwardRow(
  placed: PlacedForward,
  hostPorts: PortRange,
  hostId: string,
  target: ForwardTarget,
  changedRevision: number,
  createdAt = new Date(),
): PortForward {
  return {
    id: newId(),
    hostId,
    instanceId: target.instanceId,
    ownerId: target.ownerId,
    protocol: placed.protocol,
    hostAddress: placed.hostAddress,
    hostPortStart: hostPorts.start,
    hostPortEnd: hostPorts.end,
    targetAddressId: target.id,
    targetAddress: target.address,
    targetPortStart: placed.targetPorts.start,
    sourceCidrs: placed.sourceCidrs,
    rateLimit: placed.rateLimit,
    rateLimitedConnections: 0,
    rateLimitedSince: null,
    rateLimitedEpoch: null,
    rateLimitedRaw: null,
    balance: placed.balance,
    note: placed.note,
    status: 'pending',
    statusError: null,
    changedRevision,
    protoLo: placed.protoLo,
    protoHi: placed.protoHi,
    addrLo: placed.addrLo,
    addrHi: placed.addrHi,
    importId: null,
    createdAt,
  };
}

/** Whether two forwards' protocols and host addresses overlap, their ports aside (the exclusion constraint's test without ports). */
export function keysOverlap(a: OverlapKeys, b: OverlapKeys): boolean {
  if (a.protoLo > b.protoHi || b.protoLo > a.protoHi) return false;
  if (a.addrLo === b.addrLo && a.addrHi === b.addrHi) return true;
  return BigInt(a.addrLo) <= BigInt(b.addrHi) && BigInt(b.addrLo) <= BigInt(a.addrHi);
}
