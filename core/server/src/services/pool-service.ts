/**
 * IP pools and the addresses taken from them.
 *
 * Allocation is correct under concurrency and across replicas because the database decides: the
 * unique constraint on (pool_id, slot) makes a duplicate impossible, and the quota is a
 * conditional increment that cannot pass the limit. Concurrent allocations from one pool do not
 * wait for each other: each claims a different slot (see address-claim.ts). Lock order:
 * user, host, address usage, pool row. `allocate` requests of one controller are written in
 * batches (allocation-queue.ts, `allocateBatch`): a batch locks its hosts in id order, then its
 * owners' usage rows in owner order, so batches of two controllers cannot deadlock on them.
 */
import { and, asc, count, eq, getColumns, gt, inArray, isNull, or, sql } from 'drizzle-orm';
import { inject, injectable } from 'tsyringe';
import { isAdmin, type Actor } from '../auth/actor.js';
import { type Database, type Executor } from '../db/database.js';
import { hosts, instances, ipAllocations, ipPools, nics } from '../db/schema.js';
import {
  AddressInUseError,
  ConflictError,
  NotFoundError,
  PoolExhaustedError,
  QuotaExceededError,
  ValidationError,
  mapUniqueViolations,
} from '../support/errors.js';
import { newId } from '../support/ids.js';
import { controllerAddressesIn, isControllerAddress } from '../net/controller-addresses.js';
import { formatCidr, formatIp, type IpFamily } from '../net/ip.js';
import { DatabaseToken } from '../di/tokens.js';
import { validId, validIdempotencyKey, validIp, validName, validNetworkName, validNote } from '../support/validate.js';
import {
  CLAIM_WINDOW,
  claimSlot,
  claimSlots,
  countAddress,
  finishAllocation,
  finishBatch,
  quotaStanding,
  tryLockSlot,
  uncountAddresses,
  type BatchClaimRow,
  type ClaimTemplate,
} from './address-claim.js';
import { AllocationQueue, type AllocationRequest } from './allocation-queue.js';
import { AuditService, type BatchRecorder, type RecordChange, type Tx } from './audit-service.js';
import { lockOwner, loadOwnedNic, type Instance, type Nic } from './ownership.js';
import { PortForwardService } from './port-forward-service.js';
import { bumpHostRevision } from './revision.js';
import { WebProxyService } from './web-proxy-service.js';
import {
  geometriesOverlap,
  resolvePoolGeometry,
  slotAddress,
  slotOf,
  storedGeometry,
  systemReservations,
  type PoolGeometry,
  type PoolGeometryInput,
} from './pool-geometry.js';
import { requireAdmin } from './user-service.js';

/** A pool row. */
export type Pool = typeof ipPools.$inferSelect;
/** An allocation row (allocated, reserved or system). */
export type Allocation = typeof ipAllocations.$inferSelect;

/** Input of `createPool`. */
export interface CreatePoolInput extends PoolGeometryInput {
  name: string;
  kind: Pool['kind'];
  network: string;
  dns?: readonly string[] | null;
  hostId?: string | null;
}

/**
 * What a system reservation is ("gateway", "network address" …), from the pool's geometry: its
 * note may be an operator's (reserveAddress on the gateway keeps the operator's note).
 */
function systemLabel(g: PoolGeometry, slot: bigint): string {
  return systemReservations(g).find((r) => r.slot === slot)?.note ?? 'reserved address';
}

/** Input of `updatePool`: only fields that do not move addresses can change. */
export interface UpdatePoolInput {
  poolId: string;
  name?: string | null;
  kind?: Pool['kind'] | null;
  dns?: readonly string[] | null;
}

/** Input of `allocateAddress`. */
export interface AllocateInput {
  nicId: string;
  /** A specific pool; otherwise the pools bound to the NIC's network, host-scoped first. */
  poolId?: string | null;
  family?: IpFamily | null;
  idempotencyKey?: string | null;
}

/** Input of `assignAddress`. */
export interface AssignInput {
  nicId: string;
  address: string;
  poolId?: string | null;
}

/** Used, reserved and free slots of a pool (bigint: IPv6 pools are large). */
export interface PoolUtilisation {
  size: bigint;
  allocated: bigint;
  reserved: bigint;
  free: bigint;
}

// how often a search that found only slots other requests are claiming starts over (about 2 s in all)
const CLAIM_ROUNDS = 12;

const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

// transactions one batch may take: each one that finds an owner over its quota sets that owner's requests aside
const BATCH_ATTEMPTS = 3;
// claim statements per pool in one batch before the requests left go the one-request way
const BATCH_CLAIM_ROUNDS = 4;

/** A request of a batch, with what its claim inserts. */
interface BatchMember {
  request: AllocationRequest<Allocation>;
  instance: Instance;
  claim: BatchClaimRow;
}

/** Thrown inside a batch's transaction to roll it back: these requests are answered alone, the others batched again. */
class SetAside extends Error {
  constructor(readonly requests: AllocationRequest<Allocation>[]) {
    super(`${requests.length} allocation request(s) set aside from their batch`);
  }
}

const QUOTA_FIELD: Record<IpFamily, 'quotaIpv4Addresses' | 'quotaIpv6Prefixes'> = { 4: 'quotaIpv4Addresses', 6: 'quotaIpv6Prefixes' };

function poolNameTaken(name: unknown): ConflictError {
  return new ConflictError('input.name', name, 'is already the name of another pool');
}

/** A pool the NIC may take addresses from: same network, and global or scoped to the NIC's host. */
function checkVisible(field: string, poolId: string, pool: Pool | undefined, nic: Nic, instance: Instance): Pool {
  if (!pool) throw new NotFoundError(field, poolId, 'IP pool');
  if (pool.network !== nic.network)
    throw new ValidationError(field, poolId, `is pool "${pool.name}" on network "${pool.network}", but the NIC is on "${nic.network}"`);
  if (pool.hostId && pool.hostId !== instance.hostId) throw new ValidationError(field, poolId, `is pool "${pool.name}", scoped to another host`);
  return pool;
}

function validDns(values: readonly string[]): string[] {
  if (values.length > 8) throw new ValidationError('input.dns', values, 'lists more than 8 servers');
  return values.map((v, i) => formatIp(validIp(`input.dns[${i}]`, v)));
}

@injectable()
export class PoolService {
  constructor(
    @inject(DatabaseToken) private readonly db: Database,
    @inject(AuditService) private readonly audit: AuditService,
    @inject(PortForwardService) private readonly forwards: PortForwardService,
    @inject(WebProxyService) private readonly proxies: WebProxyService,
    @inject(AllocationQueue) private readonly queue: AllocationQueue,
  ) {}

  /** Creates a pool and its system reservations (admin only). Overlapping pools on one network are refused. */
  async create(actor: Actor, input: CreatePoolInput): Promise<Pool> {
    requireAdmin(actor, 'createIpPool');
    const name = validName('input.name', input.name);
    const network = validNetworkName('input.network', input.network);
    const g = resolvePoolGeometry(input);
    const dns = validDns(input.dns ?? []);
    const hostId = input.hostId != null ? validId('input.hostId', input.hostId) : null;
    const reservations = systemReservations(g);
    // the controller's own addresses may lie in the range only where the pool never hands them out
    // (a bridge gateway on the controller's machine): anywhere else a NIC could take one
    const reserved = new Set(reservations.map((r) => r.slot));
    const own = controllerAddressesIn(g.family, g.start, g.end).find((a) => !reserved.has((a.value - g.start) / g.step));
    if (own) {
      throw new ValidationError(
        input.cidr != null ? 'input.cidr' : 'input.start',
        input.cidr ?? input.start,
        `covers ${formatIp(own)}, an address of the controller itself; a pool may hand it out only as its reserved gateway`,
      );
    }
    if (BigInt(reservations.length) >= g.slotCount) {
      throw new ValidationError(
        input.cidr != null ? 'input.cidr' : 'input.start',
        input.cidr ?? input.start,
        'leaves no usable address once the network, broadcast and gateway addresses are reserved',
      );
    }
    const pool: Pool = {
      id: newId(),
      name,
      kind: input.kind,
      network,
      family: g.family,
      subnet: formatCidr(g.subnet),
      rangeStart: formatIp({ family: g.family, value: g.start }),
      rangeEnd: formatIp({ family: g.family, value: g.end }),
      gateway: g.gateway !== undefined ? formatIp({ family: g.family, value: g.gateway }) : null,
      dns,
      hostId,
      delegatedPrefixLength: g.slotPrefixLength < (g.family === 4 ? 32 : 128) ? g.slotPrefixLength : null,
      freeSlotHint: '0',
      createdAt: new Date(),
    };
    return mapUniqueViolations(
      () =>
        this.audit.transact(actor, async (tx, record) => {
          if (hostId) {
            const [host] = await tx.select({ id: hosts.id }).from(hosts).where(eq(hosts.id, hostId));
            if (!host) throw new NotFoundError('input.hostId', hostId, 'host');
          }
          // one pool creation per network at a time, so the overlap check below cannot race
          await tx.execute(sql`select pg_advisory_xact_lock(hashtext(${'gatehouse.pool-network:' + network}))`);
          const siblings = await tx
            .select()
            .from(ipPools)
            .where(and(eq(ipPools.network, network), eq(ipPools.family, g.family)));
          for (const other of siblings) {
            if (geometriesOverlap(g, storedGeometry(other))) {
              const field = input.cidr != null ? 'input.cidr' : 'input.start';
              throw new ConflictError(
                field,
                input.cidr ?? input.start,
                `overlaps pool "${other.name}" (${other.rangeStart}-${other.rangeEnd}) on network "${network}"`,
              );
            }
          }
          await tx.insert(ipPools).values(pool);
          if (reservations.length > 0) {
            await tx.insert(ipAllocations).values(
              reservations.map((r) => ({
                id: newId(),
                poolId: pool.id,
                slot: r.slot.toString(),
                address: slotAddress(g, r.slot),
                prefixLength: g.slotPrefixLength,
                kind: 'system' as const,
                note: r.note,
              })),
            );
          }
          await record({ action: 'pool.create', objectType: 'IpPool', objectId: pool.id, after: pool });
          return pool;
        }),
      { ip_pools_name_unique: () => poolNameTaken(input.name) },
    );
  }

  /** Renames a pool or changes its kind or DNS servers (admin only). */
  async update(actor: Actor, input: UpdatePoolInput): Promise<Pool> {
    requireAdmin(actor, 'updateIpPool');
    const id = validId('input.poolId', input.poolId);
    const patch: Partial<Pool> = {};
    if (input.name != null) patch.name = validName('input.name', input.name);
    if (input.kind != null) patch.kind = input.kind;
    if (input.dns != null) patch.dns = validDns(input.dns);
    return mapUniqueViolations(
      () =>
        this.audit.transact(actor, async (tx, record) => {
          const before = await this.lockPool(tx, 'input.poolId', id);
          if (Object.keys(patch).length === 0) return before;
          const [after] = await tx.update(ipPools).set(patch).where(eq(ipPools.id, id)).returning();
          await record({ action: 'pool.update', objectType: 'IpPool', objectId: id, before, after });
          return after!;
        }),
      { ip_pools_name_unique: () => poolNameTaken(input.name) },
    );
  }

  /** Deletes a pool with no allocated addresses, and its reservations (admin only). */
  async delete(actor: Actor, poolId: string): Promise<Pool> {
    requireAdmin(actor, 'deleteIpPool');
    const id = validId('input.poolId', poolId);
    return this.audit.transact(actor, async (tx, record) => {
      // FOR UPDATE waits for allocations in flight (their inserts hold the pool's key) and keeps new ones out
      const before = await this.lockPool(tx, 'input.poolId', id, 'update');
      const [used] = await tx
        .select({ n: count() })
        .from(ipAllocations)
        .where(and(eq(ipAllocations.poolId, id), eq(ipAllocations.kind, 'allocated')));
      if (used && used.n > 0) throw new ConflictError('input.poolId', id, `still has ${used.n} allocated address(es); release them first`);
      await tx.delete(ipAllocations).where(eq(ipAllocations.poolId, id));
      await tx.delete(ipPools).where(eq(ipPools.id, id));
      await record({ action: 'pool.delete', objectType: 'IpPool', objectId: id, before });
      return before;
    });
  }

  /**
   * Reserves an address so it is never allocated (admin only), e.g. a switch or router. The pool's
   * gateway is reserved already: reserving it succeeds, returns its SYSTEM entry and keeps the note.
   */
  async reserve(actor: Actor, input: { poolId: string; address: string; note?: string | null }): Promise<Allocation> {
    requireAdmin(actor, 'reserveAddress');
    const id = validId('input.poolId', input.poolId);
    const note = validNote('input.note', input.note);
    return this.audit.transact(actor, async (tx, record) => {
      const pool = await this.lockPool(tx, 'input.poolId', id);
      const g = storedGeometry(pool);
      const slot = this.slotIn(g, 'input.address', input.address);
      const [held] = await tx
        .select()
        .from(ipAllocations)
        .where(and(eq(ipAllocations.poolId, id), eq(ipAllocations.slot, slot.toString())));
      if (held?.kind === 'system' && systemLabel(g, slot) === 'gateway') {
        // the gateway is reserved with the pool already: reserving it (as the reference guide does) keeps the operator's note on it
        const [after] = await tx
          .update(ipAllocations)
          .set({ note: note || held.note })
          .where(eq(ipAllocations.id, held.id))
          .returning();
        await record({ action: 'address.reserve', objectType: 'IpAddress', objectId: held.id, before: held, after });
        return after!;
      }
      await this.ensureSlotFree(tx, pool, slot, 'input.address', input.address);
      const row: Allocation = {
        id: newId(),
        poolId: id,
        slot: slot.toString(),
        address: slotAddress(g, slot),
        prefixLength: g.slotPrefixLength,
        kind: 'reserved',
        nicId: null,
        ownerId: null,
        note,
        idempotencyKey: null,
        createdAt: new Date(),
      };
      await tx.insert(ipAllocations).values(row);
      await this.moveHint(tx, id, slot, 'chosen');
      await record({ action: 'address.reserve', objectType: 'IpAddress', objectId: row.id, after: row });
      return row;
    });
  }

  /** Removes an operator reservation (admin only); system reservations stay. */
  async unreserve(actor: Actor, reservationId: string): Promise<Allocation> {
    requireAdmin(actor, 'unreserveAddress');
    const id = validId('input.reservationId', reservationId);
    return this.audit.transact(actor, async (tx, record) => {
      const [row] = await tx.select().from(ipAllocations).where(eq(ipAllocations.id, id));
      if (!row || row.kind === 'allocated') throw new NotFoundError('input.reservationId', id, 'reservation');
      if (row.kind === 'system') {
        const [pool] = await tx.select().from(ipPools).where(eq(ipPools.id, row.poolId));
        throw new ConflictError('input.reservationId', id, `is the pool's ${systemLabel(storedGeometry(pool!), BigInt(row.slot))} and cannot be unreserved`);
      }
      await tx.delete(ipAllocations).where(eq(ipAllocations.id, id));
      await this.freeSlots(tx, [row]);
      await record({ action: 'address.unreserve', objectType: 'IpAddress', objectId: id, before: row });
      return row;
    });
  }

  /**
   * Allocates the lowest free address (or prefix) for a NIC. Retrying with the same idempotency
   * key returns the first allocation instead of a second one.
   */
  async allocate(actor: Actor, input: AllocateInput): Promise<Allocation> {
    const key = validIdempotencyKey('input.idempotencyKey', input.idempotencyKey);
    const poolId = input.poolId != null ? validId('input.poolId', input.poolId) : null;
    const nicId = validId('input.nicId', input.nicId);
    const family = input.family ?? null;
    // group commit: requests arriving while a batch is written go into the next one (allocation-queue.ts)
    return new Promise<Allocation>((resolve, reject) =>
      this.queue.submit({ actor, nicId, poolId, family, key, resolve, reject }, (batch) => this.allocateBatch(batch)),
    );
  }

  /** Assigns a chosen address to a NIC, checked against the pool. Assigning what the NIC already holds returns it. */
  async assign(actor: Actor, input: AssignInput): Promise<Allocation> {
    const poolId = input.poolId != null ? validId('input.poolId', input.poolId) : null;
    return this.audit.transact(actor, async (tx, record) => {
      const { nic, instance } = await loadOwnedNic(tx, actor, 'input.nicId', input.nicId);
      return this.assignToNic(tx, record, { nic, instance, poolId, address: input.address, field: 'input.address' });
    });
  }

  /** Releases an address a NIC holds. */
  async release(actor: Actor, addressId: string): Promise<Allocation> {
    const id = validId('input.addressId', addressId);
    return this.audit.transact(actor, async (tx, record) => {
      const [row] = await tx
        .select()
        .from(ipAllocations)
        .where(and(eq(ipAllocations.id, id), eq(ipAllocations.kind, 'allocated')));
      if (!row || (!isAdmin(actor) && row.ownerId !== actor.userId)) throw new NotFoundError('input.addressId', id, 'allocated address');
      const forwarded = await this.forwards.countForTarget(tx, id);
      if (forwarded > 0) throw new ConflictError('input.addressId', id, `is the target of ${forwarded} port forward(s); delete them first`);
      const proxied = await this.proxies.countForTarget(tx, id);
      if (proxied > 0) throw new ConflictError('input.addressId', id, `is the target of ${proxied} web prox(ies); delete them first`);
      const [holder] = await tx
        .select({ hostId: instances.hostId })
        .from(nics)
        .innerJoin(instances, eq(instances.id, nics.instanceId))
        .where(eq(nics.id, row.nicId!));
      if (holder) await bumpHostRevision(tx, record, holder.hostId);
      await tx.delete(ipAllocations).where(eq(ipAllocations.id, id));
      await uncountAddresses(tx, [row]);
      await this.freeSlots(tx, [row]);
      await record({ action: 'address.release', objectType: 'IpAddress', objectId: id, ownerId: row.ownerId, before: row });
      record.proxyChanged({ kind: 'address', action: 'removed', addressId: id });
      return row;
    });
  }

  /**
   * Allocation inside a running transaction; also used when a NIC is added. Statements: the
   * candidate pools, one claim per window of slots (usually one), the audit entry, and one
   * statement for the host revision, the quota and the pool's hint.
   */
  async allocateForNic(
    tx: Tx,
    record: RecordChange,
    args: {
      nic: Nic;
      instance: Instance;
      poolId: string | null;
      family: IpFamily | null;
      key: string | null;
      fieldPrefix: string;
      /** `readCandidatePools` for this NIC, when the caller read it already. */
      pools?: Pool[];
    },
  ): Promise<Allocation> {
    const { nic, instance, key, fieldPrefix } = args;
    if (key) {
      const existing = await this.allocationForKey(tx, instance.ownerId, nic, key, fieldPrefix);
      if (existing) return existing;
    }
    const read = args.pools ?? (await this.readCandidatePools(tx, nic.id, args.poolId, args.family));
    const candidates = this.candidatePools(read, { nic, instance, poolId: args.poolId, family: args.family, fieldPrefix });
    const family = candidates[0]!.family as IpFamily;
    for (const pool of candidates) {
      const g = storedGeometry(pool);
      const template: ClaimTemplate = {
        id: newId(),
        poolId: pool.id,
        prefixLength: g.slotPrefixLength,
        nicId: nic.id,
        ownerId: instance.ownerId,
        idempotencyKey: key,
        createdAt: new Date(),
      };
      const claimed = await this.claimFirstFree(tx, pool, g, template);
      if (claimed === 'key-used') {
        // a concurrent request with the same key won: answer with its allocation
        const existing = await this.allocationForKey(tx, instance.ownerId, nic, key!, fieldPrefix);
        if (existing) return existing;
        continue;
      }
      if (claimed === undefined) continue;
      const row: Allocation = { ...template, slot: claimed.slot.toString(), address: claimed.address, kind: 'allocated', note: '' };
      // both in one round trip (the driver pipelines them); the audit entry is written first
      const [, done] = await Promise.all([
        record({ action: 'address.allocate', objectType: 'IpAddress', objectId: row.id, ownerId: row.ownerId, after: row }),
        finishAllocation(tx, { hostId: instance.hostId, ownerId: instance.ownerId, family, poolId: pool.id, slotCount: g.slotCount }),
      ]);
      if (done.revision === null) throw new NotFoundError('hostId', instance.hostId, 'host');
      if (done.used === null) await this.quotaExceeded(tx, instance.ownerId, family, `${fieldPrefix}.nicId`, nic.id);
      record.hostChanged(instance.hostId, done.revision);
      record.proxyChanged({ kind: 'address', action: 'added', addressId: row.id });
      return row;
    }
    // a request over its quota hears that first, as it would before any slot search
    const standing = await quotaStanding(tx, instance.ownerId, family);
    if (standing.limit !== null && standing.used >= standing.limit) await this.quotaExceeded(tx, instance.ownerId, family, `${fieldPrefix}.nicId`, nic.id);
    const last = candidates[candidates.length - 1]!;
    throw new PoolExhaustedError(args.poolId ? `${fieldPrefix}.poolId` : `${fieldPrefix}.nicId`, last.id, last.name);
  }

  /** One request in its own transaction: what every request took before batching, and what a batch sets aside. */
  private allocateAlone(r: AllocationRequest<Allocation>): Promise<Allocation> {
    return this.audit.transact(r.actor, async (tx, record) => {
      // one round trip: the pools are read by the NIC's id, and checked against it once both are in
      const [{ nic, instance }, pools] = await Promise.all([
        loadOwnedNic(tx, r.actor, 'input.nicId', r.nicId),
        this.readCandidatePools(tx, r.nicId, r.poolId, r.family),
      ]);
      return this.allocateForNic(tx, record, { nic, instance, poolId: r.poolId, family: r.family, key: r.key, fieldPrefix: 'input', pools });
    });
  }

  /**
   * Answers every request of a batch: those the batch's transaction decides (allocated, or a typed
   * error found before anything was written) once it commits; the rest one at a time afterwards.
   * An owner whose requests do not all fit its quota rolls the batch back, and it runs again
   * without them (at most BATCH_ATTEMPTS times); any other error of the batch's transaction sends
   * all its requests down the one-request path, where each meets only its own errors.
   */
  private async allocateBatch(batch: AllocationRequest<Allocation>[]): Promise<void> {
    const alone: AllocationRequest<Allocation>[] = [];
    let pending = batch;
    for (let attempt = 0; pending.length > 0 && attempt < BATCH_ATTEMPTS; attempt++) {
      const requests = pending;
      try {
        const { answers, aside } = await this.audit.transactBatch((tx, record) => this.writeBatch(tx, record, requests));
        for (const [request, answer] of answers) {
          if (answer instanceof Error) request.reject(answer);
          else request.resolve(answer);
        }
        alone.push(...aside);
        pending = [];
      } catch (err) {
        if (!(err instanceof SetAside)) break;
        alone.push(...err.requests);
        pending = requests.filter((r) => !err.requests.includes(r));
      }
    }
    alone.push(...pending);
    this.queue.stats.alone += alone.length;
    await Promise.all(alone.map((r) => this.allocateAlone(r).then(r.resolve, r.reject)));
  }

  /**
   * A batch's transaction: reads the NICs, their pools and the idempotency keys (three statements
   * in one round trip), claims the slots of each pool's requests (one statement per pool, usually),
   * then writes the audit entries and, in one statement, the host revisions, the quotas and the
   * pools' hints. Statements per batch do not grow with its size.
   */
  private async writeBatch(
    tx: Tx,
    record: BatchRecorder,
    requests: AllocationRequest<Allocation>[],
  ): Promise<{ answers: Map<AllocationRequest<Allocation>, Allocation | Error>; aside: AllocationRequest<Allocation>[] }> {
    const answers = new Map<AllocationRequest<Allocation>, Allocation | Error>();
    const aside: AllocationRequest<Allocation>[] = [];
    const nicIds = [...new Set(requests.map((r) => r.nicId))];
    const keys = [...new Set(requests.flatMap((r) => (r.key !== null ? [r.key] : [])))];
    const [held, pools, keyed] = await Promise.all([
      tx.select({ nic: nics, instance: instances }).from(nics).innerJoin(instances, eq(instances.id, nics.instanceId)).where(inArray(nics.id, nicIds)),
      tx
        .select()
        .from(ipPools)
        .where(inArray(ipPools.network, tx.select({ network: nics.network }).from(nics).where(inArray(nics.id, nicIds))))
        .orderBy(sql`${ipPools.hostId} is null`, asc(ipPools.id)),
      keys.length > 0 ? tx.select().from(ipAllocations).where(inArray(ipAllocations.idempotencyKey, keys)) : Promise.resolve([] as Allocation[]),
    ]);
    const byNic = new Map(held.map((h) => [h.nic.id, h]));
    const keysInBatch = new Set<string>();
    const groups = new Map<string, { pool: Pool; g: PoolGeometry; members: BatchMember[] }>();
    for (const request of requests) {
      const found = byNic.get(request.nicId);
      if (!found || (!isAdmin(request.actor) && found.instance.ownerId !== request.actor.userId)) {
        answers.set(request, new NotFoundError('input.nicId', request.nicId, 'NIC'));
        continue;
      }
      const { nic, instance } = found;
      if (request.key !== null) {
        // a second request with the same key waits for the first's commit and finds its allocation
        const ownerKey = `${instance.ownerId}/${request.key}`;
        if (keysInBatch.has(ownerKey)) {
          aside.push(request);
          continue;
        }
        keysInBatch.add(ownerKey);
        const existing = keyed.find((a) => a.ownerId === instance.ownerId && a.idempotencyKey === request.key);
        if (existing) {
          answers.set(
            request,
            existing.nicId === nic.id ? existing : new ConflictError('input.idempotencyKey', request.key, 'was already used for an allocation to another NIC'),
          );
          continue;
        }
      }
      let pool: Pool;
      try {
        let read: Pool[];
        if (request.poolId !== null) {
          const requested = pools.find((p) => p.id === request.poolId);
          if (!requested) {
            // no such pool on these NICs' networks: the one-request path says which error
            aside.push(request);
            continue;
          }
          read = [requested];
        } else {
          const family = request.family ?? 4;
          read = pools.filter((p) => p.network === nic.network && p.family === family && (p.hostId === null || p.hostId === instance.hostId));
        }
        pool = this.candidatePools(read, { nic, instance, poolId: request.poolId, family: request.family, fieldPrefix: 'input' })[0]!;
      } catch (err) {
        answers.set(request, err as Error);
        continue;
      }
      let group = groups.get(pool.id);
      if (!group) groups.set(pool.id, (group = { pool, g: storedGeometry(pool), members: [] }));
      group.members.push({ request, instance, claim: { id: newId(), nicId: nic.id, ownerId: instance.ownerId, idempotencyKey: request.key } });
    }

    const claimed: { member: BatchMember; row: Allocation; family: IpFamily }[] = [];
    const hinted: { poolId: string; slotCount: bigint; window: bigint }[] = [];
    for (const { pool, g, members } of [...groups.values()].sort((a, b) => (a.pool.id < b.pool.id ? -1 : 1))) {
      const createdAt = new Date();
      let remaining = members;
      let from = BigInt(pool.freeSlotHint);
      let claimedHere = 0;
      for (let round = 0; remaining.length > 0 && from < g.slotCount && round < BATCH_CLAIM_ROUNDS; round++) {
        const window = CLAIM_WINDOW + BigInt(remaining.length);
        const r = await claimSlots(
          tx,
          g,
          pool.id,
          from,
          window,
          remaining.map((m) => m.claim),
          createdAt,
        );
        const left: BatchMember[] = [];
        for (const member of remaining) {
          const slot = r.claimed.get(member.claim.id);
          if (!slot) {
            left.push(member);
            continue;
          }
          const { id, nicId, ownerId, idempotencyKey } = member.claim;
          claimed.push({
            member,
            family: g.family,
            row: {
              id,
              poolId: pool.id,
              slot: slot.slot.toString(),
              address: slot.address,
              prefixLength: g.slotPrefixLength,
              kind: 'allocated',
              nicId,
              ownerId,
              note: '',
              idempotencyKey,
              createdAt,
            },
          });
          claimedHere++;
        }
        if (r.picked > r.claimed.size) {
          // an insert conflicted: a slot inserted since the statement's snapshot (look again), or an
          // idempotency key used meanwhile (answered alone, with the allocation that used it)
          remaining = left.filter((m) => m.claim.idempotencyKey === null || (aside.push(m.request), false));
          continue;
        }
        remaining = left;
        from += window;
      }
      // a full pool, another candidate pool, slots other requests hold: the one-request path decides
      aside.push(...remaining.map((m) => m.request));
      if (claimedHere > 0) hinted.push({ poolId: pool.id, slotCount: g.slotCount, window: CLAIM_WINDOW + BigInt(members.length) });
    }
    if (claimed.length === 0) return { answers, aside };

    const usage = new Map<string, { ownerId: string; family: IpFamily; count: number }>();
    for (const { row, family } of claimed) {
      const k = `${row.ownerId}/${family}`;
      const u = usage.get(k);
      if (u) u.count++;
      else usage.set(k, { ownerId: row.ownerId!, family, count: 1 });
    }
    // both in one round trip; should the batch roll back, so does its audit entries' insert
    const [, done] = await Promise.all([
      record.write(
        claimed.map(({ member, row }) => ({
          actor: member.request.actor,
          change: { action: 'address.allocate', objectType: 'IpAddress', objectId: row.id, ownerId: row.ownerId, after: row },
        })),
      ),
      finishBatch(tx, { hostIds: [...new Set(claimed.map((c) => c.member.instance.hostId))], usage: [...usage.values()], pools: hinted }),
    ]);
    const failed = claimed.filter((c) => !done.revisions.has(c.member.instance.hostId) || !done.counted.has(`${c.row.ownerId}/${c.family}`));
    if (failed.length > 0) throw new SetAside(failed.map((c) => c.member.request));
    for (const [hostId, revision] of done.revisions) record.hostChanged(hostId, revision);
    for (const { member, row } of claimed) {
      record.proxyChanged({ kind: 'address', action: 'added', addressId: row.id });
      answers.set(member.request, row);
    }
    return { answers, aside };
  }

  /** Manual assignment inside a running transaction; also used when a NIC is added with addresses. */
  async assignToNic(
    tx: Tx,
    record: RecordChange,
    args: { nic: Nic; instance: Instance; poolId: string | null; address: string; field: string },
  ): Promise<Allocation> {
    const { nic, instance, field } = args;
    const addr = validIp(field, args.address);
    if (isControllerAddress(addr)) throw new ValidationError(field, args.address, 'is an address of the controller itself and cannot be given to a NIC');
    const owner = await lockOwner(tx, instance.ownerId);
    await bumpHostRevision(tx, record, instance.hostId);
    let pool: Pool;
    if (args.poolId) {
      pool = await this.visiblePool(tx, field.replace(/address$/, 'poolId'), args.poolId, nic, instance);
    } else {
      const pools = await this.poolsForNic(tx, nic, instance, addr.family);
      const containing = pools.find((p) => {
        const g = storedGeometry(p);
        return addr.value >= g.start && addr.value <= g.end;
      });
      if (!containing)
        throw new ValidationError(field, args.address, `is not in any IPv${addr.family} pool of network "${nic.network}" available to this instance's host`);
      pool = containing;
    }
    const g = storedGeometry(pool);
    const slot = this.slotIn(g, field, args.address, pool);
    const [existing] = await tx
      .select()
      .from(ipAllocations)
      .where(and(eq(ipAllocations.poolId, pool.id), eq(ipAllocations.slot, slot.toString())));
    if (existing?.nicId === nic.id) return existing;
    if (!(await countAddress(tx, owner.id, g.family))) await this.quotaExceeded(tx, owner.id, g.family, field, args.address);
    await this.lockPool(tx, field, pool.id);
    await this.ensureSlotFree(tx, pool, slot, field, args.address);
    const row = this.allocationRow(pool, g, slot, nic, instance, null);
    await tx.insert(ipAllocations).values(row);
    await this.moveHint(tx, pool.id, slot, 'chosen');
    await record({ action: 'address.assign', objectType: 'IpAddress', objectId: row.id, ownerId: row.ownerId, after: row });
    record.proxyChanged({ kind: 'address', action: 'added', addressId: row.id });
    return row;
  }

  /** Releases every address of the NICs (reclaim on NIC or instance deletion), with audit entries. */
  async reclaimNics(tx: Tx, record: RecordChange, nicIds: readonly string[], reason: string): Promise<Allocation[]> {
    if (nicIds.length === 0) return [];
    const held = await tx
      .select({ id: ipAllocations.id })
      .from(ipAllocations)
      .where(inArray(ipAllocations.nicId, [...nicIds]));
    const targets = held.map((a) => a.id);
    await this.forwards.removeForTargets(tx, record, targets, reason);
    await this.proxies.removeForTargets(tx, record, targets, reason);
    const rows = await tx
      .delete(ipAllocations)
      .where(inArray(ipAllocations.nicId, [...nicIds]))
      .returning();
    await uncountAddresses(tx, rows);
    await this.freeSlots(tx, rows);
    for (const row of rows) {
      await record({ action: 'address.reclaim', objectType: 'IpAddress', objectId: row.id, ownerId: row.ownerId, before: row, after: { reason } });
      record.proxyChanged({ kind: 'address', action: 'removed', addressId: row.id });
    }
    return rows;
  }

  /** A pool by id (pools are visible to every authenticated user, so they can choose one). */
  async get(_actor: Actor, id: string): Promise<Pool | undefined> {
    const [row] = await this.db.select().from(ipPools).where(eq(ipPools.id, id));
    return row;
  }

  /** Pools by ids (for batching). */
  async getMany(ids: readonly string[]): Promise<Pool[]> {
    return ids.length === 0
      ? []
      : this.db
          .select()
          .from(ipPools)
          .where(inArray(ipPools.id, [...ids]));
  }

  /** Pools in creation order, optionally of one network. */
  async list(_actor: Actor, filter: { network?: string | null }, page: { after?: string; limit: number }): Promise<Pool[]> {
    return this.db
      .select()
      .from(ipPools)
      .where(and(filter.network ? eq(ipPools.network, filter.network) : undefined, page.after ? gt(ipPools.id, page.after) : undefined))
      .orderBy(asc(ipPools.id))
      .limit(page.limit);
  }

  /** Slots of a pool in address order (admin only: it shows every tenant's addresses). */
  async entries(actor: Actor, poolId: string, kinds: readonly Allocation['kind'][] | null, page: { after?: string; limit: number }): Promise<Allocation[]> {
    requireAdmin(actor, 'IpPool.entries');
    const after = page.after ? await this.db.select({ slot: ipAllocations.slot }).from(ipAllocations).where(eq(ipAllocations.id, page.after)) : [];
    return this.db
      .select()
      .from(ipAllocations)
      .where(
        and(
          eq(ipAllocations.poolId, poolId),
          kinds && kinds.length > 0 ? inArray(ipAllocations.kind, [...kinds]) : undefined,
          after[0] ? gt(ipAllocations.slot, after[0].slot) : undefined,
        ),
      )
      .orderBy(asc(ipAllocations.slot))
      .limit(page.limit);
  }

  /** Addresses held by NICs, in allocation order. */
  async addressesOfNics(nicIds: readonly string[], executor: Executor = this.db): Promise<Allocation[]> {
    if (nicIds.length === 0) return [];
    return executor
      .select()
      .from(ipAllocations)
      .where(inArray(ipAllocations.nicId, [...nicIds]))
      .orderBy(asc(ipAllocations.id));
  }

  /** Size, allocated, reserved and free slots. */
  async utilisation(pool: Pool): Promise<PoolUtilisation> {
    const rows = await this.db
      .select({ kind: ipAllocations.kind, n: count() })
      .from(ipAllocations)
      .where(eq(ipAllocations.poolId, pool.id))
      .groupBy(ipAllocations.kind);
    const size = storedGeometry(pool).slotCount;
    const allocated = BigInt(rows.find((r) => r.kind === 'allocated')?.n ?? 0);
    const reserved = BigInt(rows.filter((r) => r.kind !== 'allocated').reduce((s, r) => s + r.n, 0));
    return { size, allocated, reserved, free: size - allocated - reserved };
  }

  private allocationRow(pool: Pool, g: PoolGeometry, slot: bigint, nic: Nic, instance: Instance, key: string | null): Allocation {
    return {
      id: newId(),
      poolId: pool.id,
      slot: slot.toString(),
      address: slotAddress(g, slot),
      prefixLength: g.slotPrefixLength,
      kind: 'allocated',
      nicId: nic.id,
      ownerId: instance.ownerId,
      note: '',
      idempotencyKey: key,
      createdAt: new Date(),
    };
  }

  /** Pools bound to the NIC's network that its host may use: host-scoped first, then global. */
  private async poolsForNic(tx: Executor, nic: Nic, instance: Instance, family: IpFamily | null): Promise<Pool[]> {
    return tx
      .select()
      .from(ipPools)
      .where(
        and(eq(ipPools.network, nic.network), family ? eq(ipPools.family, family) : undefined, or(isNull(ipPools.hostId), eq(ipPools.hostId, instance.hostId))),
      )
      .orderBy(sql`${ipPools.hostId} is null`, asc(ipPools.id));
  }

  /**
   * What an allocation for the NIC may take from, read by the NIC's id alone: the requested pool, or
   * the pools of the requested family (IPv4 by default) bound to the NIC's network that its host may
   * use, host-scoped first. `candidatePools` checks the rows against the NIC.
   */
  private async readCandidatePools(tx: Executor, nicId: string, poolId: string | null, family: IpFamily | null): Promise<Pool[]> {
    if (poolId) return tx.select().from(ipPools).where(eq(ipPools.id, poolId));
    return tx
      .select(getColumns(ipPools))
      .from(ipPools)
      .innerJoin(nics, eq(nics.network, ipPools.network))
      .innerJoin(instances, eq(instances.id, nics.instanceId))
      .where(and(eq(nics.id, nicId), eq(ipPools.family, family ?? 4), or(isNull(ipPools.hostId), eq(ipPools.hostId, instances.hostId))))
      .orderBy(sql`${ipPools.hostId} is null`, asc(ipPools.id));
  }

  /** The pools `readCandidatePools` found, or why the NIC cannot take an address from them. */
  private candidatePools(read: Pool[], args: { nic: Nic; instance: Instance; poolId: string | null; family: IpFamily | null; fieldPrefix: string }): Pool[] {
    const { nic, instance, fieldPrefix } = args;
    if (args.poolId) {
      const pool = checkVisible(`${fieldPrefix}.poolId`, args.poolId, read[0], nic, instance);
      if (args.family && pool.family !== args.family) {
        throw new ValidationError(`${fieldPrefix}.family`, `IPV${args.family}`, `does not match pool "${pool.name}", which is IPv${pool.family}`);
      }
      return [pool];
    }
    if (read.length === 0) {
      throw new ValidationError(
        `${fieldPrefix}.nicId`,
        nic.id,
        `is on network "${nic.network}", which has no IPv${args.family ?? 4} pool available to this instance's host`,
      );
    }
    return read;
  }

  /** A pool the NIC may take addresses from: same network, and global or scoped to the NIC's host. */
  private async visiblePool(tx: Executor, field: string, poolId: string, nic: Nic, instance: Instance): Promise<Pool> {
    const [pool] = await tx.select().from(ipPools).where(eq(ipPools.id, poolId));
    return checkVisible(field, poolId, pool, nic, instance);
  }

  /**
   * Locks the pool row. NO KEY UPDATE (the default) does not wait for allocations in flight, whose
   * inserts hold the row's key share; deleting the pool needs UPDATE.
   */
  private async lockPool(tx: Executor, field: string, id: string, strength: 'update' | 'no key update' = 'no key update'): Promise<Pool> {
    const [pool] = await tx.select().from(ipPools).where(eq(ipPools.id, id)).for(strength);
    if (!pool) throw new NotFoundError(field, id, 'IP pool');
    return pool;
  }

  /** Throws QUOTA_EXCEEDED with the owner's limit and usage. */
  private async quotaExceeded(tx: Executor, ownerId: string, family: IpFamily, field: string, value: string): Promise<never> {
    const standing = await quotaStanding(tx, ownerId, family);
    throw new QuotaExceededError(QUOTA_FIELD[family], standing.limit ?? 0, standing.used, field, value);
  }

  /** The owner's allocation made with this idempotency key, if any; CONFLICT when it went to another NIC. */
  private async allocationForKey(tx: Executor, ownerId: string, nic: Nic, key: string, fieldPrefix: string): Promise<Allocation | undefined> {
    const [existing] = await tx
      .select()
      .from(ipAllocations)
      .where(and(eq(ipAllocations.ownerId, ownerId), eq(ipAllocations.idempotencyKey, key)));
    if (existing && existing.nicId !== nic.id)
      throw new ConflictError(`${fieldPrefix}.idempotencyKey`, key, 'was already used for an allocation to another NIC');
    return existing;
  }

  /**
   * Claims the lowest free slot no concurrent request is claiming, from the pool's hint (every
   * slot below it is taken) window by window, so the cost does not grow with the addresses already
   * allocated. Undefined when the pool is full; 'key-used' when a concurrent request inserted an
   * allocation with the same idempotency key. Free slots that other requests hold are skipped;
   * when they were the only ones, the search starts over after a short wait, since such a
   * request may still roll back.
   */
  private async claimFirstFree(
    tx: Executor,
    pool: Pool,
    g: PoolGeometry,
    template: ClaimTemplate,
  ): Promise<{ slot: bigint; address: string } | 'key-used' | undefined> {
    for (let round = 0; ; round++) {
      let held = false;
      for (let from = BigInt(pool.freeSlotHint); from < g.slotCount;) {
        const r = await claimSlot(tx, g, from, template);
        if (r.claimed) return r;
        if (r.picked) {
          // the locked slot was inserted since this statement's snapshot, or the key was: look again
          if (template.idempotencyKey !== null && (await this.keyUsed(tx, template))) return 'key-used';
          continue;
        }
        if (r.free > 0) held = true;
        from += CLAIM_WINDOW;
      }
      if (!held || round >= CLAIM_ROUNDS) return undefined;
      await delay(2 ** Math.min(round, 8));
    }
  }

  private async keyUsed(tx: Executor, template: ClaimTemplate): Promise<boolean> {
    const [row] = await tx
      .select({ id: ipAllocations.id })
      .from(ipAllocations)
      .where(and(eq(ipAllocations.ownerId, template.ownerId), eq(ipAllocations.idempotencyKey, template.idempotencyKey!)));
    return row !== undefined;
  }

  /**
   * Keeps "every slot below the hint is taken" true: a chosen slot moves the hint only when it was
   * the hint itself; a freed slot below the hint pulls it down. (Allocations move it up in
   * `finishAllocation`.) A freed slot always locks the row, even when the hint stays: an
   * allocation that is moving the hint past the slot (it saw the slot still taken) holds the row
   * until it commits, and the least() then applies to the hint it left.
   */
  private async moveHint(tx: Executor, poolId: string, slot: bigint, event: 'chosen' | 'freed'): Promise<void> {
    const s = slot.toString();
    if (event === 'freed') {
      await tx
        .update(ipPools)
        .set({ freeSlotHint: sql`least(${ipPools.freeSlotHint}, ${s}::numeric)` })
        .where(eq(ipPools.id, poolId));
      return;
    }
    await tx
      .update(ipPools)
      .set({ freeSlotHint: (slot + 1n).toString() })
      .where(and(eq(ipPools.id, poolId), sql`${ipPools.freeSlotHint} = ${s}::numeric`));
  }

  /** Pulls the hints down for freed rows, one pool at a time in id order (a fixed lock order). */
  private async freeSlots(tx: Executor, rows: readonly Allocation[]): Promise<void> {
    const lowest = new Map<string, bigint>();
    for (const row of rows) {
      const slot = BigInt(row.slot);
      const current = lowest.get(row.poolId);
      if (current === undefined || slot < current) lowest.set(row.poolId, slot);
    }
    for (const poolId of [...lowest.keys()].sort()) await this.moveHint(tx, poolId, lowest.get(poolId)!, 'freed');
  }

  private slotIn(g: PoolGeometry, field: string, address: string, pool?: Pool): bigint {
    const addr = validIp(field, address);
    const slot = slotOf(g, addr);
    if (typeof slot !== 'bigint') throw new ValidationError(field, address, pool ? `${slot.problem} (pool "${pool.name}")` : slot.problem);
    return slot;
  }

  private async ensureSlotFree(tx: Executor, pool: Pool, slot: bigint, field: string, address: string): Promise<void> {
    // an allocation claiming this slot right now holds its lock: waiting for its insert could deadlock
    if (!(await tryLockSlot(tx, pool.id, slot))) throw new AddressInUseError(field, address, 'being allocated to a NIC by a concurrent request');
    const [taken] = await tx
      .select()
      .from(ipAllocations)
      .where(and(eq(ipAllocations.poolId, pool.id), eq(ipAllocations.slot, slot.toString())));
    if (!taken) return;
    const by =
      taken.kind === 'allocated'
        ? 'allocated to a NIC'
        : taken.kind === 'system'
          ? `the pool's ${systemLabel(storedGeometry(pool), slot)}`
          : `reserved${taken.note ? `: ${taken.note}` : ''}`;
    throw new AddressInUseError(field, address, by);
  }
}
