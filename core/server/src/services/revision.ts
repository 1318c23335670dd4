/**
 * The per-host desired-state revision. Every change to what a host must apply bumps it in the
 * same transaction, so an agent that has applied revision N has applied every change up to N.
 */
import { eq, sql } from 'drizzle-orm';
import type { Executor } from '../db/database.js';
import { hosts } from '../db/schema.js';
import { NotFoundError } from '../support/errors.js';
import type { RecordChange } from './audit-service.js';
import type { Host } from './host-service.js';

/**
 * Locks the host row for the rest of the transaction, bumps its revision and returns the host;
 * the new revision is announced once the transaction commits.
 */
export async function bumpHostRevision(tx: Executor, record: RecordChange, hostId: string): Promise<Host> {
  const [host] = await tx
    .update(hosts)
    .set({ desiredRevision: sql`${hosts.desiredRevision} + 1` })
    .where(eq(hosts.id, hostId))
    .returning();
  if (!host) throw new NotFoundError('hostId', hostId, 'host');
  record.hostChanged(host.id, host.desiredRevision);
  return host;
}
