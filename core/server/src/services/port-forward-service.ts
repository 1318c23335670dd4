/**
 * NAT port forwards: a host port or port range, on one or all public addresses of a host, to an
 * address and port (range) of an instance the user owns on that host.
 *
 * A port is forwarded once: the exclusion constraint `port_forwards_no_overlap` decides, so
 * concurrent claims and several controllers get exactly one winner. The host row is locked for
 * the rest of the transaction (the desired-state revision bump takes it), which also makes the
 * automatic choice of a free port race-free. Locks: owner (quota), then host.
 */
import { and, asc, count, eq, gt, inArray, sql, type SQL } from 'drizzle-orm';
import { inject, injectable } from 'tsyringe';
import { isAdmin, type Actor } from '../auth/actor.js';
import type { Database, Executor } from '../db/database.js';
import { hosts, instances, ipAllocations, nics, portForwards } from '../db/schema.js';
import { ConflictError, NotFoundError, PortConflictError, QuotaExceededError, ValidationError, postgresErrorOf } from '../errors.js';
import { newId } from '../ids.js';
import { formatIp, parseCidr, type IpFamily } from '../net/ip.js';
import { DatabaseToken } from '../tokens.js';
import { parsePortRange, validId, validIp, validNote, type PortRange } from '../validate.js';
import { AuditService, type RecordChange, type Tx } from './audit-service.js';
import type { Host } from './host-service.js';
import { loadOwnedInstance, lockOwner, type Instance } from './ownership.js';

/** A port forward row. */
export type PortForward = typeof portForwards.$inferSelect;
/** Forwarded protocols. */
export type ForwardProtocol = PortForward['protocol'];

/** Input of `createPortForward`. */
export interface CreatePortForwardInput {
  instanceId: string;
  protocol: ForwardProtocol;
  /** "10022" or "8000-8010"; absent: the lowest free port (range) of the host's allowed range. */
  hostPort?: string | null;
  /** "22" or "80-90"; a range must be as long as the host range. */
  targetPort: string;
  /** An address of the instance; absent: its first IPv4 address (else its first address). */
  targetAddress?: string | null;
  /** One of the host's public addresses; absent: all of them. */
  hostAddress?: string | null;
  sourceCidrs?: readonly string[] | null;
  note?: string | null;
}

/** Well-known services a UI offers as presets. */
export const COMMON_PORTS: readonly { service: string; port: number; protocol: ForwardProtocol }[] = [
  { service: 'SSH', port: 22, protocol: 'tcp' },
  { service: 'HTTP', port: 80, protocol: 'tcp' },
  { service: 'HTTPS', port: 443, protocol: 'tcp' },
  { service: 'RDP', port: 3389, protocol: 'tcp' },
  { service: 'MySQL', port: 3306, protocol: 'tcp' },
  { service: 'PostgreSQL', port: 5432, protocol: 'tcp' },
  { service: 'Redis', port: 6379, protocol: 'tcp' },
  { service: 'MongoDB', port: 27017, protocol: 'tcp' },
];

const MAX_SOURCE_CIDRS = 64;
const PROTOCOL_RANGE: Record<ForwardProtocol, [number, number]> = { tcp: [1, 1], udp: [2, 2], both: [1, 2] };
// exclusion keys put IPv6 at [0, 2^128) and IPv4 above it, so the families never overlap
const IPV4_BASE = 1n << 128n;

function addressKey(family: IpFamily, address: bigint | null): [string, string] {
  if (address === null) return family === 6 ? ['0', ((1n << 128n) - 1n).toString()] : [IPV4_BASE.toString(), (IPV4_BASE + (1n << 32n) - 1n).toString()];
  const v = family === 6 ? address : IPV4_BASE + address;
  return [v.toString(), v.toString()];
}

function rangeText(r: PortRange): string {
  return r.start === r.end ? String(r.start) : `${r.start}-${r.end}`;
}

@injectable()
export class PortForwardService {
  constructor(
    @inject(DatabaseToken) private readonly db: Database,
    @inject(AuditService) private readonly audit: AuditService,
  ) {}

  /** Creates a forward; answers PORT_CONFLICT when the host port is taken for that protocol and address. */
  async create(actor: Actor, input: CreatePortForwardInput): Promise<PortForward> {
    const protocol = input.protocol;
    const target = parsePortRange('input.targetPort', input.targetPort);
    const length = target.end - target.start;
    const explicit = input.hostPort != null ? parsePortRange('input.hostPort', input.hostPort) : null;
    if (explicit && explicit.end - explicit.start !== length) {
      throw new ValidationError(
        'input.hostPort',
        input.hostPort,
        `has ${explicit.end - explicit.start + 1} ports but input.targetPort "${input.targetPort}" has ${length + 1}`,
      );
    }
    const sourceCidrs = this.validSourceCidrs(input.sourceCidrs ?? []);
    const note = validNote('input.note', input.note);
    return this.audit.transact(actor, async (tx, record) => {
      const instance = await loadOwnedInstance(tx, actor, 'input.instanceId', input.instanceId);
      const owner = await lockOwner(tx, instance.ownerId);
      if (owner.quotaPortForwards !== null) {
        const [row] = await tx.select({ n: count() }).from(portForwards).where(eq(portForwards.ownerId, owner.id));
        const used = row?.n ?? 0;
        if (used + 1 > owner.quotaPortForwards)
          throw new QuotaExceededError('quotaPortForwards', owner.quotaPortForwards, used, 'input.instanceId', instance.id);
      }
      const host = await this.bumpRevision(tx, instance.hostId);
      const targetAddress = await this.targetOf(tx, instance, input.targetAddress);
      const family = targetAddress.family;
      let hostAddress: bigint | null = null;
      if (input.hostAddress != null) {
        const addr = validIp('input.hostAddress', input.hostAddress);
        const canonical = formatIp(addr);
        if (!host.publicAddresses.includes(canonical)) {
          throw new ValidationError(
            'input.hostAddress',
            input.hostAddress,
            `is not a public address of host "${host.name}" (${host.publicAddresses.join(', ') || 'none configured'})`,
          );
        }
        if (addr.family !== family)
          throw new ValidationError('input.hostAddress', input.hostAddress, `is IPv${addr.family} but the target ${targetAddress.address} is IPv${family}`);
        hostAddress = addr.value;
      }
      const [addrLo, addrHi] = addressKey(family, hostAddress);
      const [protoLo, protoHi] = PROTOCOL_RANGE[protocol];
      const overlapping = and(
        eq(portForwards.hostId, host.id),
        sql`int4range(${portForwards.protoLo}, ${portForwards.protoHi}, '[]') && int4range(${protoLo}, ${protoHi}, '[]')`,
        sql`numrange(${portForwards.addrLo}, ${portForwards.addrHi}, '[]') && numrange(${addrLo}::numeric, ${addrHi}::numeric, '[]')`,
      )!;
      const hostPorts = explicit
        ? await this.checkExplicitPort(tx, actor, host, explicit, protocol, overlapping, input.hostPort!)
        : await this.choosePort(tx, host, length, overlapping);
      const forward: PortForward = {
        id: newId(),
        hostId: host.id,
        instanceId: instance.id,
        ownerId: instance.ownerId,
        protocol,
        hostAddress: hostAddress === null ? null : formatIp({ family, value: hostAddress }),
        hostPortStart: hostPorts.start,
        hostPortEnd: hostPorts.end,
        targetAddressId: targetAddress.id,
        targetAddress: targetAddress.address,
        targetPortStart: target.start,
        sourceCidrs,
        note,
        status: 'pending',
        statusError: null,
        protoLo,
        protoHi,
        addrLo,
        addrHi,
        createdAt: new Date(),
      };
      try {
        await tx.insert(portForwards).values(forward);
      } catch (err) {
        // the constraint is the last word even if a check above were ever skipped
        if (postgresErrorOf(err)?.code === '23P01') {
          throw new PortConflictError(
            explicit ? 'input.hostPort' : 'input.instanceId',
            rangeText(hostPorts),
            `/${protocol} on host "${host.name}" is already forwarded`,
          );
        }
        throw err;
      }
      await record({ action: 'portForward.create', objectType: 'PortForward', objectId: forward.id, ownerId: forward.ownerId, after: forward });
      return forward;
    });
  }

  /** Deletes a forward the actor owns (admins: any). */
  async delete(actor: Actor, forwardId: string): Promise<PortForward> {
    const id = validId('input.portForwardId', forwardId);
    return this.audit.transact(actor, async (tx, record) => {
      const [forward] = await tx.select().from(portForwards).where(eq(portForwards.id, id));
      if (!forward || (!isAdmin(actor) && forward.ownerId !== actor.userId)) throw new NotFoundError('input.portForwardId', id, 'port forward');
      await this.bumpRevision(tx, forward.hostId);
      await tx.delete(portForwards).where(eq(portForwards.id, id));
      await record({ action: 'portForward.delete', objectType: 'PortForward', objectId: id, ownerId: forward.ownerId, before: forward });
      return forward;
    });
  }

  /** Removes the forwards that target the given addresses (NIC removed, instance deleted), with audit entries. */
  async removeForTargets(tx: Tx, record: RecordChange, allocationIds: readonly string[], reason: string): Promise<PortForward[]> {
    if (allocationIds.length === 0) return [];
    const doomed = await tx
      .select()
      .from(portForwards)
      .where(inArray(portForwards.targetAddressId, [...allocationIds]))
      .orderBy(asc(portForwards.hostId));
    for (const hostId of new Set(doomed.map((f) => f.hostId))) await this.bumpRevision(tx, hostId);
    for (const forward of doomed) {
      await tx.delete(portForwards).where(eq(portForwards.id, forward.id));
      await record({
        action: 'portForward.delete',
        objectType: 'PortForward',
        objectId: forward.id,
        ownerId: forward.ownerId,
        before: forward,
        after: { reason },
      });
    }
    return doomed;
  }

  /** Number of forwards targeting an address. */
  async countForTarget(tx: Executor, allocationId: string): Promise<number> {
    const [row] = await tx.select({ n: count() }).from(portForwards).where(eq(portForwards.targetAddressId, allocationId));
    return row?.n ?? 0;
  }

  /** A forward, if the actor may see it. */
  async get(actor: Actor, id: string): Promise<PortForward | undefined> {
    const [row] = await this.db.select().from(portForwards).where(eq(portForwards.id, id));
    return row && (isAdmin(actor) || row.ownerId === actor.userId) ? row : undefined;
  }

  /** Forwards the actor may see, in creation order, optionally of one instance or host. */
  async list(actor: Actor, filter: { instanceId?: string | null; hostId?: string | null }, page: { after?: string; limit: number }): Promise<PortForward[]> {
    return this.db
      .select()
      .from(portForwards)
      .where(
        and(
          isAdmin(actor) ? undefined : eq(portForwards.ownerId, actor.userId),
          filter.instanceId ? eq(portForwards.instanceId, filter.instanceId) : undefined,
          filter.hostId ? eq(portForwards.hostId, filter.hostId) : undefined,
          page.after ? gt(portForwards.id, page.after) : undefined,
        ),
      )
      .orderBy(asc(portForwards.id))
      .limit(page.limit);
  }

  /** Locks the host row and bumps its desired-state revision; returns the host as it is now. */
  async bumpRevision(tx: Executor, hostId: string): Promise<Host> {
    const [host] = await tx
      .update(hosts)
      .set({ desiredRevision: sql`${hosts.desiredRevision} + 1` })
      .where(eq(hosts.id, hostId))
      .returning();
    if (!host) throw new NotFoundError('hostId', hostId, 'host');
    return host;
  }

  private validSourceCidrs(values: readonly string[]): string[] {
    if (values.length > MAX_SOURCE_CIDRS)
      throw new ValidationError('input.sourceCidrs', `${values.length} entries`, `lists more than ${MAX_SOURCE_CIDRS} prefixes`);
    const out = values.map((v, i) => {
      const cidr = parseCidr(v.includes('/') ? v : `${v}/${v.includes(':') ? 128 : 32}`);
      if ('error' in cidr) throw new ValidationError(`input.sourceCidrs[${i}]`, v, cidr.error);
      return `${formatIp({ family: cidr.family, value: cidr.network })}/${cidr.prefixLength}`;
    });
    const dup = out.find((c, i) => out.indexOf(c) !== i);
    if (dup) throw new ValidationError('input.sourceCidrs', values, `lists ${dup} twice`);
    return out;
  }

  /** The instance address to forward to: one of its single addresses (not a delegated prefix). */
  private async targetOf(tx: Executor, instance: Instance, requested: string | null | undefined) {
    const held = await tx
      .select({ id: ipAllocations.id, address: ipAllocations.address, prefixLength: ipAllocations.prefixLength })
      .from(ipAllocations)
      .innerJoin(nics, eq(nics.id, ipAllocations.nicId))
      .where(and(eq(nics.instanceId, instance.id), inArray(ipAllocations.prefixLength, [32, 128])))
      .orderBy(asc(nics.id), asc(ipAllocations.id));
    const withFamily = held.map((a) => ({ ...a, family: (a.prefixLength === 32 ? 4 : 6) as IpFamily }));
    if (requested != null) {
      const canonical = formatIp(validIp('input.targetAddress', requested));
      const found = withFamily.find((a) => a.address === canonical);
      if (!found) throw new ValidationError('input.targetAddress', requested, `is not an address of instance "${instance.name}"`);
      return found;
    }
    const chosen = withFamily.find((a) => a.family === 4) ?? withFamily[0];
    if (!chosen) throw new ValidationError('input.instanceId', instance.id, `is instance "${instance.name}", which has no address to forward to`);
    return chosen;
  }

  private async checkExplicitPort(
    tx: Executor,
    actor: Actor,
    host: Host,
    ports: PortRange,
    protocol: ForwardProtocol,
    overlapping: SQL,
    text: string,
  ): Promise<PortRange> {
    if (ports.start < host.portRangeStart || ports.end > host.portRangeEnd) {
      throw new ValidationError('input.hostPort', text, `is outside host "${host.name}"'s allowed range ${host.portRangeStart}-${host.portRangeEnd}`);
    }
    const reserved = host.reservedPorts.find((r) => r.start <= ports.end && ports.start <= r.end);
    if (reserved) throw new ValidationError('input.hostPort', text, `is reserved on host "${host.name}" (${rangeText(reserved)})`);
    const [taken] = await tx
      .select({ forward: portForwards, instanceName: instances.name })
      .from(portForwards)
      .innerJoin(instances, eq(instances.id, portForwards.instanceId))
      .where(
        and(overlapping, sql`int4range(${portForwards.hostPortStart}, ${portForwards.hostPortEnd}, '[]') && int4range(${ports.start}, ${ports.end}, '[]')`),
      )
      .limit(1);
    if (taken) {
      const f = taken.forward;
      const to = isAdmin(actor) || f.ownerId === actor.userId ? `${taken.instanceName} (${f.targetAddress}:${f.targetPortStart})` : 'another tenant';
      throw new PortConflictError('input.hostPort', text, `/${protocol} on host "${host.name}" is already forwarded to ${to}`);
    }
    return ports;
  }

  /** Lowest free block of `length + 1` ports in the host's allowed range, skipping reserved and forwarded ports. */
  private async choosePort(tx: Executor, host: Host, length: number, overlapping: SQL): Promise<PortRange> {
    const used = await tx
      .select({ start: portForwards.hostPortStart, end: portForwards.hostPortEnd })
      .from(portForwards)
      .where(overlapping)
      .orderBy(asc(portForwards.hostPortStart));
    const blocked = [...used, ...host.reservedPorts].sort((a, b) => a.start - b.start);
    let start = host.portRangeStart;
    for (const b of blocked) {
      if (b.end < start) continue;
      if (start + length < b.start) break;
      start = b.end + 1;
    }
    if (start + length > host.portRangeEnd) {
      throw new ConflictError(
        'input.hostPort',
        null,
        `cannot be chosen: host "${host.name}" has no ${length + 1} free consecutive port(s) left in ${host.portRangeStart}-${host.portRangeEnd}`,
      );
    }
    return { start, end: start + length };
  }
}
