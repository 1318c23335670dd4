/**
 * The per-host desired-state revision. Every change to what a host must apply bumps it in the
 * same transaction, so an agent that has applied revision N has applied every change up to N.
 */
import { eq, sql } from 'drizzle-orm';
import type { Executor } from '../db/database.js';
import { hosts } from '../db/schema.js';
import { NotFoundError } from '../errors.js';
import type { Host } from './host-service.js';

/** Locks the host row for the rest of the transaction, bumps its revision and returns the host. */
export async function bumpHostRevision(tx: Executor, hostId: string): Promise<Host> {
  const [host] = await tx
    .update(hosts)
    .set({ desiredRevision: sql`${hosts.desiredRevision} + 1` })
    .where(eq(hosts.id, hostId))
    .returning();
  if (!host) throw new NotFoundError('hostId', hostId, 'host');
  return host;
}
