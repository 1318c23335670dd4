/**
 * Tenant isolation in one place: loading an instance or NIC on behalf of an actor. Another
 * tenant's object is reported exactly like a missing one (NOT_FOUND), so ids leak nothing.
 */
import { and, asc, eq, inArray } from 'drizzle-orm';
import { isAdmin, type Actor } from '../auth/actor.js';
import type { Executor } from '../db/database.js';
import { instances, ipAllocations, nics, users } from '../db/schema.js';
import { NotFoundError, ValidationError } from '../support/errors.js';
import { refuseControllerTarget } from '../net/controller-addresses.js';
import { formatIp, type IpFamily } from '../net/ip.js';
import { validId, validIp } from '../support/validate.js';

/** An instance row. */
export type Instance = typeof instances.$inferSelect;
/** A NIC row. */
export type Nic = typeof nics.$inferSelect;

/** Loads an instance the actor owns (or any, for admins); NOT_FOUND otherwise. */
export async function loadOwnedInstance(tx: Executor, actor: Actor, field: string, instanceId: string, forUpdate = false): Promise<Instance> {
  const id = validId(field, instanceId);
  const query = tx.select().from(instances).where(eq(instances.id, id));
  const [row] = forUpdate ? await query.for('update') : await query;
  if (!row || (!isAdmin(actor) && row.ownerId !== actor.userId)) throw new NotFoundError(field, instanceId, 'instance');
  return row;
}

/** Loads a NIC with its instance, if the actor owns the instance (or is an admin); NOT_FOUND otherwise. */
export async function loadOwnedNic(tx: Executor, actor: Actor, field: string, nicId: string): Promise<{ nic: Nic; instance: Instance }> {
  const id = validId(field, nicId);
  const [row] = await tx.select({ nic: nics, instance: instances }).from(nics).innerJoin(instances, eq(instances.id, nics.instanceId)).where(eq(nics.id, id));
  if (!row || (!isAdmin(actor) && row.instance.ownerId !== actor.userId)) throw new NotFoundError(field, nicId, 'NIC');
  return row;
}

/**
 * Locks the owner's user row for the rest of the transaction. Every change that counts against a
 * quota takes this lock first, so quota checks are exact under concurrency and across replicas.
 */
export async function lockOwner(tx: Executor, ownerId: string): Promise<typeof users.$inferSelect> {
  const [owner] = await tx.select().from(users).where(eq(users.id, ownerId)).for('update');
  if (!owner) throw new NotFoundError('ownerId', ownerId, 'user');
  return owner;
}

/** An instance address that forwards and proxies can point to. */
export interface InstanceTarget {
  id: string;
  address: string;
  family: IpFamily;
  instanceId: string;
  instanceName: string;
  ownerId: string;
}

/**
 * The address of an instance to send traffic to: the requested one, which must be a single
 * address (not a delegated prefix) held by one of its NICs, or by default its first IPv4 address
 * (else its first address). Anything else (another tenant's VM, the host, loopback) is refused
 * because it is not an address of this instance, and so is an address of the controller itself
 * (an instance NIC that holds one).
 */
export async function instanceTarget(tx: Executor, instance: Instance, fieldPrefix: string, requested: string | null | undefined): Promise<InstanceTarget> {
  const held = await tx
    .select({ id: ipAllocations.id, address: ipAllocations.address, prefixLength: ipAllocations.prefixLength })
    .from(ipAllocations)
    .innerJoin(nics, eq(nics.id, ipAllocations.nicId))
    .where(and(eq(nics.instanceId, instance.id), inArray(ipAllocations.prefixLength, [32, 128])))
    .orderBy(asc(nics.id), asc(ipAllocations.id));
  const targets: InstanceTarget[] = held.map((a) => ({
    id: a.id,
    address: a.address,
    family: a.prefixLength === 32 ? 4 : 6,
    instanceId: instance.id,
    instanceName: instance.name,
    ownerId: instance.ownerId,
  }));
  if (requested != null) {
    const canonical = formatIp(validIp(`${fieldPrefix}.targetAddress`, requested));
    const found = targets.find((t) => t.address === canonical);
    if (!found) throw new ValidationError(`${fieldPrefix}.targetAddress`, requested, `is not an address of instance "${instance.name}"`);
    refuseControllerTarget(`${fieldPrefix}.targetAddress`, found.address);
    return found;
  }
  const chosen = targets.find((t) => t.family === 4) ?? targets[0];
  if (!chosen) throw new ValidationError(`${fieldPrefix}.instanceId`, instance.id, `is instance "${instance.name}", which has no address to send traffic to`);
  refuseControllerTarget(`${fieldPrefix}.instanceId`, chosen.address);
  return chosen;
}
