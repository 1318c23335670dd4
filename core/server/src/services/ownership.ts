/**
 * Tenant isolation in one place: loading an instance or NIC on behalf of an actor. Another
 * tenant's object is reported exactly like a missing one (NOT_FOUND), so ids leak nothing.
 */
import { eq } from 'drizzle-orm';
import { isAdmin, type Actor } from '../auth/actor.js';
import type { Executor } from '../db/database.js';
import { instances, nics, users } from '../db/schema.js';
import { NotFoundError } from '../errors.js';
import { validId } from '../validate.js';

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
