/**
 * NAT port forwards: a host port or port range, on one or all public addresses of a host, to an
 * address and port (range) of an instance the user owns on that host.
 *
 * A port is forwarded once: the exclusion constraint `port_forwards_no_overlap` decides, so
 * concurrent claims and several controllers get exactly one winner. The host row is locked for
 * the rest of the transaction (the desired-state revision bump takes it), which also makes the
 * automatic choice of a free port race-free. Locks: owner (quota), then host.
 */
import { and, asc, count, eq, gt, inArray, isNotNull, ne, sql, type SQL } from 'drizzle-orm';
import { inject, injectable } from 'tsyringe';
import { isAdmin, type Actor } from '../auth/actor.js';
import type { Database, Executor } from '../db/database.js';
import { forwardIsVisible, instances, ipAllocations, portForwardImports, portForwards, type ListeningSocketJson } from '../db/schema.js';
import { ConflictError, NotFoundError, PortConflictError, QuotaExceededError, ValidationError, postgresErrorOf } from '../support/errors.js';
import { DatabaseToken } from '../di/tokens.js';
import { validId, type PortRange } from '../support/validate.js';
import { AuditService, type RecordChange, type Tx } from './audit-service.js';
import type { Host } from './host-service.js';
import { instanceTarget, loadOwnedInstance, lockOwner } from './ownership.js';
import { bumpHostRevision } from './revision.js';
import { hostListeningSockets, listeningClash, listeningRanges, listeningText, type ForwardClaim } from './port-audit.js';
import { resolveBalance, type TargetSpec } from './port-forward-balance.js';
import {
  forwardRow,
  heldPorts,
  placeForward,
  portRangeText,
  type FieldNamer,
  type ForwardProtocol,
  type ForwardSpec,
  type OverlapKeys,
  type PortForward,
  type RateLimitSpec,
} from './port-forward-spec.js';

export type { ForwardProtocol, PortForward } from './port-forward-spec.js';

/** The forward quotas of an owner (a users row). */
export type ForwardQuotas = { id: string; quotaPortForwards: number | null; quotaForwardedPorts: number | null };

/** Forwards and the host ports they hold (per protocol). */
export type ForwardUse = { forwards: number; ports: number };

/** What `list` and `count` narrow the visible forwards to. */
export type ForwardFilter = { instanceId?: string | null; hostId?: string | null };

/** The first forward quota that `adding` on top of `used` would exceed, with its limit; undefined when both allow it. */
export function forwardQuotaProblem(
  owner: ForwardQuotas,
  used: ForwardUse,
  adding: ForwardUse,
): { quota: 'quotaPortForwards' | 'quotaForwardedPorts'; limit: number; used: number } | undefined {
  if (owner.quotaPortForwards !== null && used.forwards + adding.forwards > owner.quotaPortForwards)
    return { quota: 'quotaPortForwards', limit: owner.quotaPortForwards, used: used.forwards };
  if (owner.quotaForwardedPorts !== null && used.ports + adding.ports > owner.quotaForwardedPorts)
    return { quota: 'quotaForwardedPorts', limit: owner.quotaForwardedPorts, used: used.ports };
  return undefined;
}

/** Input of `createPortForward`. */
export interface CreatePortForwardInput extends ForwardSpec {
  instanceId: string;
  /** An address of the instance; absent: its first IPv4 address (else its first address). */
  targetAddress?: string | null;
  /** Every target when several share the port (the own target, instanceId/targetAddress, among them); absent: the own target alone. */
  targets?: readonly TargetSpec[] | null;
  /** With targets: one client (source address) always reaches the same target. */
  sourceAffinity?: boolean | null;
}

/**
 * Input of `updatePortForward`: absent (undefined) fields keep their value. `hostAddress: null`
 * forwards on every public address again; `sourceCidrs: null` or `[]` lets any source in; `note:
 * null` clears the note. Protocol and the ports cannot be cleared (null keeps them).
 */
export interface UpdatePortForwardInput {
  portForwardId: string;
  protocol?: ForwardProtocol | null;
  hostPort?: string | null;
  targetPort?: string | null;
  /** An address of the forward's instance; absent or null: the current target address. */
  targetAddress?: string | null;
  hostAddress?: string | null;
  sourceCidrs?: readonly string[] | null;
  /** New limits; null removes them. */
  rateLimit?: RateLimitSpec | null;
  /** Every target (the own one among them), replacing the list; null: the own target alone. */
  targets?: readonly TargetSpec[] | null;
  /** Source affinity of the targets; null keeps it. */
  sourceAffinity?: boolean | null;
  note?: string | null;
}

/** No target list: no balance, and source affinity cannot be asked for. */
function noTargets(sourceAffinity: boolean | null | undefined): null {
  if (sourceAffinity) throw new ValidationError('input.sourceAffinity', true, 'needs targets: two or more');
  return null;
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

const inputField: FieldNamer = (field) => `input.${field}`;

/** PORT_CONFLICT naming the process when a service on the host listens on a port the forward would take (the port audit). */
function checkNotListening(listening: ListeningSocketJson[] | null, host: Host, claim: ForwardClaim): void {
  const clash = listeningClash(listening, host.publicAddresses, claim);
  if (clash)
    throw new PortConflictError(
      'input.hostPort',
      portRangeText(claim.ports),
      `/${claim.protocol} on host "${host.name}" is in use on the host: ${listeningText(clash)}`,
    );
}

/** The SQL condition "overlaps these keys" on port_forwards (the exclusion constraint's test, without ports). */
function overlapCondition(hostId: string, keys: OverlapKeys): SQL {
  return and(
    eq(portForwards.hostId, hostId),
    sql`int4range(${portForwards.protoLo}, ${portForwards.protoHi}, '[]') && int4range(${keys.protoLo}, ${keys.protoHi}, '[]')`,
    sql`numrange(${portForwards.addrLo}, ${portForwards.addrHi}, '[]') && numrange(${keys.addrLo}::numeric, ${keys.addrHi}::numeric, '[]')`,
  )!;
}

/** Lowest free block of `length + 1` ports in the host's allowed range, avoiding `blocked` (sorted by start). */
export function lowestFreeBlock(host: Host, length: number, blocked: readonly PortRange[]): PortRange | undefined {
  let start = host.portRangeStart;
  for (const b of [...blocked, ...host.reservedPorts].sort((x, y) => x.start - y.start)) {
    if (b.end < start) continue;
    if (start + length < b.start) break;
    start = b.end + 1;
  }
  return start + length > host.portRangeEnd ? undefined : { start, end: start + length };
}

@injectable()
export class PortForwardService {
  constructor(
    @inject(DatabaseToken) private readonly db: Database,
    @inject(AuditService) private readonly audit: AuditService,
  ) {}

  /** Creates a forward; answers PORT_CONFLICT when the host port is taken for that protocol and address. */
  async create(actor: Actor, input: CreatePortForwardInput): Promise<PortForward> {
    return this.audit.transact(actor, async (tx, record) => {
      const instance = await loadOwnedInstance(tx, actor, 'input.instanceId', input.instanceId);
      const owner = await lockOwner(tx, instance.ownerId);
      const host = await bumpHostRevision(tx, record, instance.hostId);
      const target = await instanceTarget(tx, instance, 'input', input.targetAddress);
      const balance =
        input.targets != null
          ? await resolveBalance(tx, actor, { instance, target }, input.targets, input.sourceAffinity ?? false, 'input.targets')
          : noTargets(input.sourceAffinity);
      const placed = placeForward({ ...input, balance }, host, target, inputField, !isAdmin(actor));
      await this.checkQuota(tx, owner, { forwards: 1, ports: heldPorts(placed.protocol, placed.targetPorts) }, 'input.instanceId', instance.id);
      const overlapping = overlapCondition(host.id, placed);
      const listening = await hostListeningSockets(tx, host.id);
      let hostPorts: PortRange;
      if (placed.hostPorts) {
        hostPorts = placed.hostPorts;
        await this.checkFree(tx, actor, host, hostPorts, placed.protocol, overlapping);
        checkNotListening(listening, host, { protocol: placed.protocol, hostAddress: placed.hostAddress, ports: hostPorts });
      } else {
        const length = placed.targetPorts.end - placed.targetPorts.start;
        const used = await tx.select({ start: portForwards.hostPortStart, end: portForwards.hostPortEnd }).from(portForwards).where(overlapping);
        // ports a host service listens on are not free either
        const free = lowestFreeBlock(host, length, [...used, ...listeningRanges(listening, host.publicAddresses, placed)]);
        if (!free) {
          throw new ConflictError(
            'input.hostPort',
            null,
            `cannot be chosen: host "${host.name}" has no ${length + 1} free consecutive port(s) left in ${host.portRangeStart}-${host.portRangeEnd}`,
          );
        }
        hostPorts = free;
      }
      const forward = forwardRow(placed, hostPorts, host.id, target, host.desiredRevision);
      try {
        await tx.insert(portForwards).values(forward);
      } catch (err) {
        // the constraint is the last word even if a check above were ever skipped
        if (postgresErrorOf(err)?.code === '23P01') {
          throw new PortConflictError(
            placed.hostPorts ? 'input.hostPort' : 'input.instanceId',
            portRangeText(hostPorts),
            `/${placed.protocol} on host "${host.name}" is already forwarded`,
          );
        }
        throw err;
      }
      await record({ action: 'portForward.create', objectType: 'PortForward', objectId: forward.id, ownerId: forward.ownerId, after: forward });
      return forward;
    });
  }

  /**
   * Edits a forward in place: the fields given are merged into the forward and the result goes
   * through exactly the checks of `create` (placement, capability, quota, PORT_CONFLICT, and the
   * exclusion constraint as the last word, so two edits or an edit and a create claiming one port
   * get one winner). The forward keeps its id and counters, is PENDING in the host's new revision,
   * and the agent replaces its map elements in one nft transaction (no instant without a rule).
   */
  async update(actor: Actor, input: UpdatePortForwardInput): Promise<PortForward> {
    const id = validId('input.portForwardId', input.portForwardId);
    return this.audit.transact(actor, async (tx, record) => {
      const seen = await this.loadVisible(tx, actor, id);
      const instance = await loadOwnedInstance(tx, actor, 'input.portForwardId', seen.instanceId);
      const owner = await lockOwner(tx, instance.ownerId);
      const host = await bumpHostRevision(tx, record, instance.hostId);
      // every change to a host's forwards holds its row: read again under that lock (same lock order as create)
      const before = await this.loadVisible(tx, actor, id);
      const target = await instanceTarget(tx, instance, 'input', input.targetAddress ?? before.targetAddress);
      const width = before.hostPortEnd - before.hostPortStart;
      const affinity = input.sourceAffinity ?? before.balance?.sourceAffinity ?? false;
      // the kept list is re-checked too (its own target may have changed with targetAddress), without
      // the targets whose address is gone (their NIC or instance was removed)
      const targets = input.targets !== undefined ? input.targets : await this.keptTargets(tx, before);
      const balance =
        targets != null ? await resolveBalance(tx, actor, { instance, target }, targets, affinity, 'input.targets') : noTargets(input.sourceAffinity);
      const spec: ForwardSpec = {
        protocol: input.protocol ?? before.protocol,
        hostPort: input.hostPort ?? portRangeText({ start: before.hostPortStart, end: before.hostPortEnd }),
        targetPort: input.targetPort ?? portRangeText({ start: before.targetPortStart, end: before.targetPortStart + width }),
        hostAddress: input.hostAddress !== undefined ? input.hostAddress : before.hostAddress,
        sourceCidrs: input.sourceCidrs !== undefined ? input.sourceCidrs : before.sourceCidrs,
        rateLimit: input.rateLimit !== undefined ? input.rateLimit : before.rateLimit,
        balance,
        note: input.note !== undefined ? input.note : before.note,
      };
      const placed = placeForward(spec, host, target, inputField, !isAdmin(actor), 'updating port forward');
      const hostPorts = placed.hostPorts!;
      const held = heldPorts(placed.protocol, placed.targetPorts);
      // holding no more ports than before needs no quota (an owner over a lowered quota may still edit the note)
      const heldBefore = heldPorts(before.protocol, { start: before.hostPortStart, end: before.hostPortEnd });
      if (held > heldBefore)
        await this.checkQuota(tx, owner, { forwards: 1, ports: held }, 'input.hostPort', portRangeText(hostPorts), { forwards: 1, ports: heldBefore });
      await this.checkFree(tx, actor, host, hostPorts, placed.protocol, and(overlapCondition(host.id, placed), ne(portForwards.id, id))!);
      checkNotListening(await hostListeningSockets(tx, host.id), host, { protocol: placed.protocol, hostAddress: placed.hostAddress, ports: hostPorts });
      // what the agent counted (the rate limits' refusals) is not the client's to change
      const {
        id: _id,
        createdAt: _createdAt,
        importId: _importId,
        rateLimitedConnections: _connections,
        rateLimitedSince: _since,
        rateLimitedEpoch: _epoch,
        rateLimitedRaw: _raw,
        ...changes
      } = forwardRow(placed, hostPorts, host.id, target, host.desiredRevision);
      let after: PortForward | undefined;
      try {
        [after] = await tx.update(portForwards).set(changes).where(eq(portForwards.id, id)).returning();
      } catch (err) {
        if (postgresErrorOf(err)?.code === '23P01') {
          throw new PortConflictError('input.hostPort', portRangeText(hostPorts), `/${placed.protocol} on host "${host.name}" is already forwarded`);
        }
        throw err;
      }
      await record({ action: 'portForward.update', objectType: 'PortForward', objectId: id, ownerId: before.ownerId, before, after });
      return after!;
    });
  }

  /** A forward's stored targets as a target list, those whose address no instance holds any more left out. */
  private async keptTargets(tx: Executor, forward: PortForward): Promise<TargetSpec[] | undefined> {
    if (!forward.balance) return undefined;
    const ids = forward.balance.targets.map((t) => t.addressId);
    const held = new Set(
      (
        await tx
          .select({ id: ipAllocations.id })
          .from(ipAllocations)
          .where(and(inArray(ipAllocations.id, ids), isNotNull(ipAllocations.nicId)))
      ).map((r) => r.id),
    );
    return forward.balance.targets.filter((t) => held.has(t.addressId)).map((t) => ({ instanceId: t.instanceId, targetAddress: t.address, weight: t.weight }));
  }

  /**
   * QUOTA_EXCEEDED unless the owner may have `adding.forwards` more forwards holding `adding.ports`
   * more host ports (per protocol), `replacing` what one of their forwards holds now (an edit).
   * Caller holds the owner lock.
   */
  async checkQuota(tx: Executor, owner: ForwardQuotas, adding: ForwardUse, field: string, value: string, replacing?: ForwardUse): Promise<void> {
    if ((owner.quotaPortForwards === null && owner.quotaForwardedPorts === null) || adding.forwards === 0) return;
    const used = await this.use(tx, owner.id);
    if (replacing) Object.assign(used, { forwards: used.forwards - replacing.forwards, ports: used.ports - replacing.ports });
    const problem = forwardQuotaProblem(owner, used, adding);
    if (problem) throw new QuotaExceededError(problem.quota, problem.limit, problem.used, field, value);
  }

  /**
   * How many forwards an owner has, and how many host ports (per protocol) they hold, counting
   * what imports being written have reserved (their rows are not visible yet).
   */
  async use(tx: Executor, ownerId: string): Promise<ForwardUse> {
    const [row] = await tx
      .select({
        n: count(),
        ports: sql<string>`coalesce(sum((${portForwards.hostPortEnd} - ${portForwards.hostPortStart} + 1) * (${portForwards.protoHi} - ${portForwards.protoLo} + 1)), 0)`,
      })
      .from(portForwards)
      .where(and(eq(portForwards.ownerId, ownerId), forwardIsVisible));
    const use = { forwards: row?.n ?? 0, ports: Number(row?.ports ?? 0) };
    for (const { reserved } of await tx
      .select({ reserved: portForwardImports.reserved })
      .from(portForwardImports)
      .where(eq(portForwardImports.state, 'staged'))) {
      use.forwards += reserved[ownerId]?.forwards ?? 0;
      use.ports += reserved[ownerId]?.ports ?? 0;
    }
    return use;
  }

  /** Deletes a forward the actor owns (admins: any). */
  async delete(actor: Actor, forwardId: string): Promise<PortForward> {
    const id = validId('input.portForwardId', forwardId);
    return this.audit.transact(actor, async (tx, record) => {
      const forward = await this.loadVisible(tx, actor, id);
      await bumpHostRevision(tx, record, forward.hostId);
      await tx.delete(portForwards).where(eq(portForwards.id, id));
      await record({ action: 'portForward.delete', objectType: 'PortForward', objectId: id, ownerId: forward.ownerId, before: forward });
      return forward;
    });
  }

  /**
   * Removes the forwards that target the given addresses (NIC removed, instance deleted), with audit
   * entries. Rows of an import still being written go too, unannounced; that import then fails.
   */
  async removeForTargets(tx: Tx, record: RecordChange, allocationIds: readonly string[], reason: string): Promise<PortForward[]> {
    if (allocationIds.length === 0) return [];
    const rows = await tx
      .select({ forward: portForwards, visible: forwardIsVisible })
      .from(portForwards)
      .where(inArray(portForwards.targetAddressId, [...allocationIds]))
      .orderBy(asc(portForwards.hostId));
    const staged = rows.filter((r) => !r.visible).map((r) => r.forward);
    if (staged.length > 0) {
      // their imports can no longer be all or nothing: they stop, and remove the rest of their rows
      const imports = [...new Set(staged.map((f) => f.importId!))];
      await tx.update(portForwardImports).set({ state: 'removing' }).where(inArray(portForwardImports.id, imports));
      await tx.delete(portForwards).where(
        inArray(
          portForwards.id,
          staged.map((f) => f.id),
        ),
      );
    }
    const doomed = rows.filter((r) => r.visible).map((r) => r.forward);
    for (const hostId of new Set(doomed.map((f) => f.hostId))) await bumpHostRevision(tx, record, hostId);
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
    await this.dropTargets(tx, record, allocationIds, reason);
    return doomed;
  }

  /**
   * Takes addresses that are going away out of the target lists of the balanced forwards that
   * keep their own target: the others stay balanced, and a forward left with one target is a plain
   * forward again (`balance` null). Audited as an update, with the reason.
   */
  private async dropTargets(tx: Tx, record: RecordChange, allocationIds: readonly string[], reason: string): Promise<void> {
    const gone = new Set(allocationIds);
    const rows = await tx
      .select({ forward: portForwards, visible: forwardIsVisible })
      .from(portForwards)
      .where(
        and(
          isNotNull(portForwards.balance),
          sql`exists (select 1 from jsonb_array_elements(${portForwards.balance}->'targets') t where t->>'addressId' in (${sql.join(
            [...gone].map((id) => sql`${id}`),
            sql`, `,
          )}))`,
        ),
      )
      .orderBy(asc(portForwards.hostId));
    const revisions = new Map<string, number>();
    for (const { forward, visible } of rows) {
      if (gone.has(forward.targetAddressId)) continue; // deleted with its own target
      const targets = forward.balance!.targets.filter((t) => !gone.has(t.addressId));
      const balance = targets.length > 1 ? { ...forward.balance!, targets } : null;
      if (!visible) {
        await tx.update(portForwards).set({ balance }).where(eq(portForwards.id, forward.id));
        continue;
      }
      let revision = revisions.get(forward.hostId);
      if (revision === undefined) revisions.set(forward.hostId, (revision = (await bumpHostRevision(tx, record, forward.hostId)).desiredRevision));
      const [after] = await tx
        .update(portForwards)
        .set({ balance, changedRevision: revision, status: 'pending', statusError: null })
        .where(eq(portForwards.id, forward.id))
        .returning();
      await record({
        action: 'portForward.update',
        objectType: 'PortForward',
        objectId: forward.id,
        ownerId: forward.ownerId,
        before: forward,
        after: { ...after, reason },
      });
    }
  }

  /** Number of forwards targeting an address, counting those of imports being written. */
  async countForTarget(tx: Executor, allocationId: string): Promise<number> {
    const [row] = await tx.select({ n: count() }).from(portForwards).where(eq(portForwards.targetAddressId, allocationId));
    return row?.n ?? 0;
  }

  /** A forward, if the actor may see it. */
  async get(actor: Actor, id: string): Promise<PortForward | undefined> {
    const [row] = await this.db
      .select()
      .from(portForwards)
      .where(and(eq(portForwards.id, id), forwardIsVisible));
    return row && (isAdmin(actor) || row.ownerId === actor.userId) ? row : undefined;
  }

  /** Forwards the actor may see, in creation order, optionally of one instance or host. */
  async list(actor: Actor, filter: ForwardFilter, page: { after?: string; limit: number }): Promise<PortForward[]> {
    return this.db
      .select()
      .from(portForwards)
      .where(and(this.listed(actor, filter), page.after ? gt(portForwards.id, page.after) : undefined))
      .orderBy(asc(portForwards.id))
      .limit(page.limit);
  }

  /** How many forwards `list` returns over all its pages (one count query). */
  async count(actor: Actor, filter: ForwardFilter): Promise<number> {
    const [row] = await this.db.select({ n: count() }).from(portForwards).where(this.listed(actor, filter));
    return row?.n ?? 0;
  }

  private listed(actor: Actor, filter: ForwardFilter): SQL | undefined {
    return and(
      forwardIsVisible,
      isAdmin(actor) ? undefined : eq(portForwards.ownerId, actor.userId),
      filter.instanceId ? eq(portForwards.instanceId, filter.instanceId) : undefined,
      filter.hostId ? eq(portForwards.hostId, filter.hostId) : undefined,
    );
  }

  /** A visible forward the actor owns (admins: any); NOT_FOUND otherwise. */
  private async loadVisible(tx: Executor, actor: Actor, id: string): Promise<PortForward> {
    const [forward] = await tx
      .select()
      .from(portForwards)
      .where(and(eq(portForwards.id, id), forwardIsVisible));
    if (!forward || (!isAdmin(actor) && forward.ownerId !== actor.userId)) throw new NotFoundError('input.portForwardId', id, 'port forward');
    return forward;
  }

  /** PORT_CONFLICT naming what holds the ports (another tenant's forward stays anonymous). */
  private async checkFree(tx: Executor, actor: Actor, host: Host, ports: PortRange, protocol: ForwardProtocol, overlapping: SQL): Promise<void> {
    const [taken] = await tx
      .select({ forward: portForwards, instanceName: instances.name })
      .from(portForwards)
      .innerJoin(instances, eq(instances.id, portForwards.instanceId))
      .where(
        and(overlapping, sql`int4range(${portForwards.hostPortStart}, ${portForwards.hostPortEnd}, '[]') && int4range(${ports.start}, ${ports.end}, '[]')`),
      )
      .limit(1);
    if (!taken) return;
    const f = taken.forward;
    const to = isAdmin(actor) || f.ownerId === actor.userId ? `${taken.instanceName} (${f.targetAddress}:${f.targetPortStart})` : 'another tenant';
    throw new PortConflictError('input.hostPort', portRangeText(ports), `/${protocol} on host "${host.name}" is already forwarded to ${to}`);
  }
}
