/**
 * Instances (VMs and containers) and their NICs. Admins register and delete instances (later,
 * agents discover them); owners add and remove NICs. Adding a NIC without addresses allocates
 * one from each address family that has a pool on the NIC's network; removing a NIC or deleting
 * an instance reclaims its addresses in the same transaction.
 */
import { checkNics } from '@gatehouse/sdk';
import { and, asc, count, eq, gt, inArray, type SQL } from 'drizzle-orm';
import { inject, injectable } from 'tsyringe';
import { isAdmin, type Actor } from '../auth/actor.js';
import type { Database } from '../db/database.js';
import { hostAgents, hosts, instances, ipPools, nics, users } from '../db/schema.js';
import { ConflictError, NotFoundError, ValidationError, mapUniqueViolations } from '../support/errors.js';
import { newId } from '../support/ids.js';
import type { IpFamily } from '../net/ip.js';
import { DatabaseToken } from '../di/tokens.js';
import { generateMac, validId, validIdempotencyKey, validMac, validName, validNetworkName } from '../support/validate.js';
import { lockNicsForDeletion } from './address-claim.js';
import { AuditService, type RecordChange, type Tx } from './audit-service.js';
import { loadOwnedInstance, loadOwnedNic, lockOwner, type Instance, type Nic } from './ownership.js';
import { BandwidthService } from './bandwidth-service.js';
import { requireCapability } from './capability-check.js';
import { FirewallService } from './firewall-service.js';
import { PoolService, type Allocation } from './pool-service.js';
import { bumpHostRevision } from './revision.js';
import { requireAdmin } from './user-service.js';

export type { Instance, Nic } from './ownership.js';

/** Most NICs one instance may have until its driver reports its own limit. */
export const MAX_NICS_PER_INSTANCE = 32;

const NIC_NAME = /^[a-z][a-z0-9]{0,14}$/;

/** NIC fields shared by `addNic` and `createInstance`. */
export interface NicSpec {
  network: string;
  name?: string | null;
  mac?: string | null;
  /** Addresses to assign; each must lie in a pool of the network. */
  addresses?: readonly string[] | null;
  /** Families to allocate automatically; default: each family with a pool on the network, when no addresses are given. */
  allocate?: readonly IpFamily[] | null;
}

/** Input of `addNic`. */
export interface AddNicInput extends NicSpec {
  instanceId: string;
  idempotencyKey?: string | null;
}

/** Input of `createInstance`. */
export interface CreateInstanceInput {
  hostId: string;
  name: string;
  ownerId?: string | null;
  externalId?: string | null;
  nics?: readonly NicSpec[] | null;
}

/** A NIC with the addresses it was given. */
export interface NicWithAddresses {
  nic: Nic;
  addresses: Allocation[];
}

@injectable()
export class InstanceService {
  constructor(
    @inject(DatabaseToken) private readonly db: Database,
    @inject(AuditService) private readonly audit: AuditService,
    @inject(PoolService) private readonly pools: PoolService,
    @inject(FirewallService) private readonly firewall: FirewallService,
    @inject(BandwidthService) private readonly bandwidth: BandwidthService,
  ) {}

  /** Registers an instance on a host for an owner (admin only), with optional NICs. */
  async create(actor: Actor, input: CreateInstanceInput): Promise<Instance> {
    requireAdmin(actor, 'createInstance');
    const hostId = validId('input.hostId', input.hostId);
    const ownerId = input.ownerId != null ? validId('input.ownerId', input.ownerId) : actor.userId;
    const name = validName('input.name', input.name);
    const externalId = input.externalId != null ? validName('input.externalId', input.externalId) : null;
    const specs = input.nics ?? [];
    if (specs.length > MAX_NICS_PER_INSTANCE)
      throw new ValidationError('input.nics', `${specs.length} NICs`, `exceeds the limit of ${MAX_NICS_PER_INSTANCE} NICs per instance`);
    return mapUniqueViolations(
      () =>
        this.audit.transact(actor, async (tx, record) => {
          const [host] = await tx.select({ id: hosts.id }).from(hosts).where(eq(hosts.id, hostId));
          if (!host) throw new NotFoundError('input.hostId', hostId, 'host');
          const [owner] = await tx.select({ id: users.id }).from(users).where(eq(users.id, ownerId));
          if (!owner) throw new NotFoundError('input.ownerId', ownerId, 'user');
          // lock order everywhere: owner, then host (see PoolService)
          await lockOwner(tx, ownerId);
          const locked = await bumpHostRevision(tx, record, hostId);
          requireCapability(
            locked,
            'creating instance',
            (caps) => checkNics(caps, specs.length),
            () => 'input.nics',
          );
          const instance: Instance = {
            id: newId(),
            hostId,
            ownerId,
            name,
            externalId,
            lastDiscoveredAt: null,
            firewallInboundPolicy: 'allow',
            firewallOutboundPolicy: 'allow',
            createdAt: new Date(),
          };
          await tx.insert(instances).values(instance);
          await record({ action: 'instance.create', objectType: 'Instance', objectId: instance.id, ownerId, after: instance });
          for (const [i, spec] of specs.entries()) await this.addNicTx(tx, record, instance, spec, null, `input.nics[${i}]`);
          return instance;
        }),
      {
        instances_host_name_unique: () => new ConflictError('input.name', input.name, 'is already the name of an instance on this host'),
        ...nicConflicts('input.nics'),
      },
    );
  }

  /** Deletes an instance with its NICs and reclaims their addresses (admin only). */
  async delete(actor: Actor, instanceId: string): Promise<Instance> {
    requireAdmin(actor, 'deleteInstance');
    return this.audit.transact(actor, async (tx, record) => {
      const instance = await loadOwnedInstance(tx, actor, 'input.instanceId', instanceId, true);
      await lockNicsForDeletion(tx, { instanceId: instance.id });
      await bumpHostRevision(tx, record, instance.hostId);
      await this.firewall.removeForInstance(tx, record, instance.id, `instance ${instance.id} deleted`);
      await this.bandwidth.removeFor(tx, record, instance.id, null, `instance ${instance.id} deleted`);
      const nicRows = await tx.select().from(nics).where(eq(nics.instanceId, instance.id));
      await this.pools.reclaimNics(
        tx,
        record,
        nicRows.map((n) => n.id),
        `instance ${instance.id} deleted`,
      );
      for (const nic of nicRows) {
        await tx.delete(nics).where(eq(nics.id, nic.id));
        await record({ action: 'nic.delete', objectType: 'Nic', objectId: nic.id, ownerId: instance.ownerId, before: nic });
      }
      await tx.delete(instances).where(eq(instances.id, instance.id));
      await record({ action: 'instance.delete', objectType: 'Instance', objectId: instance.id, ownerId: instance.ownerId, before: instance });
      return instance;
    });
  }

  /** Adds a NIC to an instance the actor owns; retrying with the same idempotency key returns the first NIC. */
  async addNic(actor: Actor, input: AddNicInput): Promise<NicWithAddresses> {
    const key = validIdempotencyKey('input.idempotencyKey', input.idempotencyKey);
    return mapUniqueViolations(
      () =>
        this.audit.transact(actor, async (tx, record) => {
          const instance = await loadOwnedInstance(tx, actor, 'input.instanceId', input.instanceId, true);
          if (key) {
            const [existing] = await tx
              .select()
              .from(nics)
              .where(and(eq(nics.instanceId, instance.id), eq(nics.idempotencyKey, key)));
            if (existing) return { nic: existing, addresses: await this.pools.addressesOfNics([existing.id], tx) };
          }
          return this.addNicTx(tx, record, instance, input, key, 'input', true);
        }),
      nicConflicts('input'),
    );
  }

  /** Removes a NIC and reclaims its addresses. */
  async removeNic(actor: Actor, nicId: string): Promise<Nic> {
    return this.audit.transact(actor, async (tx, record) => {
      const { nic, instance } = await loadOwnedNic(tx, actor, 'input.nicId', nicId);
      await lockNicsForDeletion(tx, { nicId: nic.id });
      await bumpHostRevision(tx, record, instance.hostId);
      await this.bandwidth.removeFor(tx, record, instance.id, [nic.id], `NIC ${nic.id} removed`);
      await this.pools.reclaimNics(tx, record, [nic.id], `NIC ${nic.id} removed`);
      await tx.delete(nics).where(eq(nics.id, nic.id));
      await record({ action: 'nic.delete', objectType: 'Nic', objectId: nic.id, ownerId: instance.ownerId, before: nic });
      return nic;
    });
  }

  /** An instance, if the actor may see it. */
  async get(actor: Actor, id: string): Promise<Instance | undefined> {
    const [row] = await this.db.select().from(instances).where(eq(instances.id, id));
    return row && (isAdmin(actor) || row.ownerId === actor.userId) ? row : undefined;
  }

  /** Instances the actor may see, in creation order, optionally on one host. */
  async list(actor: Actor, filter: { hostId?: string | null }, page: { after?: string; limit: number }): Promise<Instance[]> {
    return this.db
      .select()
      .from(instances)
      .where(and(this.listed(actor, filter), page.after ? gt(instances.id, page.after) : undefined))
      .orderBy(asc(instances.id))
      .limit(page.limit);
  }

  /** How many instances `list` returns over all its pages (one count query). */
  async count(actor: Actor, filter: { hostId?: string | null }): Promise<number> {
    const [row] = await this.db.select({ n: count() }).from(instances).where(this.listed(actor, filter));
    return row?.n ?? 0;
  }

  private listed(actor: Actor, filter: { hostId?: string | null }): SQL | undefined {
    return and(isAdmin(actor) ? undefined : eq(instances.ownerId, actor.userId), filter.hostId ? eq(instances.hostId, filter.hostId) : undefined);
  }

  /** Whether the host's agent last discovered the instance running. */
  private async runs(tx: Tx, instance: Instance): Promise<boolean> {
    if (instance.externalId === null) return false;
    const [agent] = await tx.select({ discovered: hostAgents.discoveredInstances }).from(hostAgents).where(eq(hostAgents.hostId, instance.hostId));
    return agent?.discovered.some((d) => d.externalId === instance.externalId && d.running === true) ?? false;
  }

  /** The instances holding these NICs, each with the NIC's id (a NIC of no instance is absent). */
  async ofNics(nicIds: readonly string[]): Promise<{ nicId: string; instance: Instance }[]> {
    if (nicIds.length === 0) return [];
    return this.db
      .select({ nicId: nics.id, instance: instances })
      .from(nics)
      .innerJoin(instances, eq(instances.id, nics.instanceId))
      .where(inArray(nics.id, [...nicIds]));
  }

  /** NICs of instances, in creation order. */
  async nicsOf(instanceIds: readonly string[]): Promise<Nic[]> {
    if (instanceIds.length === 0) return [];
    return this.db
      .select()
      .from(nics)
      .where(inArray(nics.instanceId, [...instanceIds]))
      .orderBy(asc(nics.id));
  }

  private async addNicTx(
    tx: Tx,
    record: RecordChange,
    instance: Instance,
    spec: NicSpec,
    key: string | null,
    field: string,
    toExisting = false,
  ): Promise<NicWithAddresses> {
    const network = validNetworkName(`${field}.network`, spec.network);
    await lockOwner(tx, instance.ownerId);
    const host = await bumpHostRevision(tx, record, instance.hostId);
    const existing = await tx.select({ name: nics.name }).from(nics).where(eq(nics.instanceId, instance.id));
    if (toExisting && host.driver) {
      const running = host.driver.capabilities.nics.hotplug ? false : await this.runs(tx, instance);
      requireCapability(
        host,
        'adding NIC',
        (caps) => checkNics(caps, existing.length + 1, { adding: true, running }),
        () => `${field}.instanceId`,
      );
    }
    if (existing.length >= MAX_NICS_PER_INSTANCE)
      throw new ValidationError(`${field}.instanceId`, instance.id, `already has the maximum of ${MAX_NICS_PER_INSTANCE} NICs`);
    let name: string;
    if (spec.name != null) {
      if (!NIC_NAME.test(spec.name))
        throw new ValidationError(`${field}.name`, spec.name, 'must be 1-15 lower-case letters and digits, starting with a letter');
      if (existing.some((n) => n.name === spec.name)) throw new ConflictError(`${field}.name`, spec.name, 'is already the name of a NIC of this instance');
      name = spec.name;
    } else {
      let i = 0;
      while (existing.some((n) => n.name === `eth${i}`)) i++;
      name = `eth${i}`;
    }
    let mac: string;
    if (spec.mac != null) {
      mac = validMac(`${field}.mac`, spec.mac);
      const [taken] = await tx.select({ id: nics.id }).from(nics).where(eq(nics.mac, mac));
      if (taken) throw new ConflictError(`${field}.mac`, spec.mac, 'is already the MAC address of another NIC');
    } else {
      mac = generateMac();
    }
    const nic: Nic = {
      id: newId(),
      instanceId: instance.id,
      name,
      mac,
      network,
      idempotencyKey: key,
      status: 'pending',
      statusError: null,
      changedRevision: host.desiredRevision,
      createdAt: new Date(),
    };
    await tx.insert(nics).values(nic);
    await record({ action: 'nic.create', objectType: 'Nic', objectId: nic.id, ownerId: instance.ownerId, after: nic });

    const addresses: Allocation[] = [];
    const explicit = spec.addresses ?? [];
    for (const [i, address] of explicit.entries()) {
      addresses.push(await this.pools.assignToNic(tx, record, { nic, instance, poolId: null, address, field: `${field}.addresses[${i}]` }));
    }
    let families: readonly IpFamily[];
    if (spec.allocate != null) {
      families = spec.allocate;
      if (new Set(families).size !== families.length)
        throw new ValidationError(`${field}.allocate`, families.map((f) => `IPV${f}`).join(','), 'lists a family twice');
    } else if (explicit.length === 0) {
      const pools = await tx.select({ family: ipPools.family, hostId: ipPools.hostId }).from(ipPools).where(eq(ipPools.network, network));
      const usable = pools.filter((p) => p.hostId === null || p.hostId === instance.hostId).map((p) => p.family as IpFamily);
      families = ([4, 6] as const).filter((f) => usable.includes(f));
    } else {
      families = [];
    }
    for (const family of families) {
      addresses.push(
        await this.pools.allocateForNic(tx, record, { nic, instance, poolId: null, family, key: key ? `${key}#nic-ipv${family}` : null, fieldPrefix: field }),
      );
    }
    return { nic, addresses };
  }
}

// a concurrent request took the MAC or name between the check in addNicTx and the insert
function nicConflicts(field: string) {
  return {
    nics_mac_unique: () => new ConflictError(`${field}.mac`, '', 'is already the MAC address of another NIC'),
    nics_instance_name_unique: () => new ConflictError(`${field}.name`, '', 'is already the name of a NIC of this instance'),
  };
}
