/**
 * What the jump server may reach for a user, and the record of each session. A destination names
 * an instance the user owns — by its name, `name.host`, or one of its addresses — resolved among
 * that user's instances only, so two tenants using the same private range on different hosts
 * never reach each other's instance.
 */
import { isIP } from 'node:net';
import { and, asc, desc, eq, isNull, or, sql, type SQL } from 'drizzle-orm';
import { inject, injectable } from 'tsyringe';
import { isAdmin, type Actor } from '../auth/actor.js';
import type { Database } from '../db/database.js';
import { hosts, instances, ipAllocations, ipPools, nics, sshSessions } from '../db/schema.js';
import { DatabaseToken } from '../di/tokens.js';
import { canonicalIp } from '../net/ip.js';
import { newId } from '../support/ids.js';

/** Where a jump goes: the instance, its host, and the address to connect to. */
export interface SshTarget {
  instanceId: string;
  instanceName: string;
  hostId: string;
  hostName: string;
  address: string;
}

/** Why a destination does not resolve; the message goes back to the SSH client. */
export class SshTargetError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SshTargetError';
  }
}

/** A session's start, as the jump server records it. */
export interface SshSessionStart {
  userId: string;
  keyFingerprint: string;
  instanceId: string;
  targetAddress: string;
  targetPort: number;
  sourceAddress: string;
}

/** A recorded session. */
export type SshSession = typeof sshSessions.$inferSelect;

/** Longest destination looked up (a DNS name is at most 253 characters). */
const MAX_DESTINATION = 253;

@injectable()
export class SshAccessService {
  constructor(@inject(DatabaseToken) private readonly db: Database) {}

  /** Resolves a `direct-tcpip` destination among the user's instances; throws `SshTargetError`. */
  async resolve(userId: string, destination: string): Promise<SshTarget> {
    if (destination.length === 0 || destination.length > MAX_DESTINATION || /[\u0000-\u0020\u007f]/.test(destination))
      throw new SshTargetError('the destination must be an instance name, name.host, or an address of one of your instances');
    const address = isIP(destination.replace(/^\[|\]$/g, '')) ? canonicalIp(destination.replace(/^\[|\]$/g, '')) : undefined;
    const rows = await this.candidates(
      and(
        eq(instances.ownerId, userId),
        address !== undefined
          ? eq(ipAllocations.address, address)
          : or(eq(instances.name, destination), eq(sql`${instances.name} || '.' || ${hosts.name}`, destination)),
      )!,
    );
    if (rows.length === 0) throw new SshTargetError(`${destination} is not one of your instances (by name, name.host or address)`);
    const instanceIds = new Set(rows.map((r) => r.instanceId));
    if (instanceIds.size > 1) {
      const names = [...new Map(rows.map((r) => [r.instanceId, `${r.instanceName}.${r.hostName}`])).values()];
      throw new SshTargetError(`${destination} names more than one of your instances (${names.join(', ')}): use name.host`);
    }
    // by name: the first IPv4 address of the first NIC, else the first IPv6 one
    const row = address !== undefined ? rows.find((r) => r.address === address)! : rows[0]!;
    return { instanceId: row.instanceId, instanceName: row.instanceName, hostId: row.hostId, hostName: row.hostName, address: row.address };
  }

  /** The address a web terminal of the instance goes to (as `resolve` picks one by name); throws `SshTargetError`. */
  async resolveInstance(instanceId: string): Promise<SshTarget> {
    const [row] = await this.candidates(eq(instances.id, instanceId));
    if (!row) throw new SshTargetError('the instance has no address to connect to');
    return { instanceId: row.instanceId, instanceName: row.instanceName, hostId: row.hostId, hostName: row.hostName, address: row.address };
  }

  /** Instances' single addresses matching `where`, IPv4 before IPv6, then by NIC and slot. */
  private candidates(where: SQL) {
    return this.db
      .select({
        instanceId: instances.id,
        instanceName: instances.name,
        hostId: hosts.id,
        hostName: hosts.name,
        address: ipAllocations.address,
        family: ipPools.family,
      })
      .from(instances)
      .innerJoin(hosts, eq(hosts.id, instances.hostId))
      .innerJoin(nics, eq(nics.instanceId, instances.id))
      .innerJoin(ipAllocations, eq(ipAllocations.nicId, nics.id))
      .innerJoin(ipPools, and(eq(ipPools.id, ipAllocations.poolId), isNull(ipPools.delegatedPrefixLength)))
      .where(where)
      .orderBy(asc(ipPools.family), asc(nics.createdAt), asc(nics.id), asc(ipAllocations.slot));
  }

  /** Records a session's start; returns its id. */
  async started(session: SshSessionStart): Promise<string> {
    const id = newId();
    await this.db.insert(sshSessions).values({ id, ...session });
    return id;
  }

  /** Records a session's end and its byte counts. */
  async ended(id: string, end: { bytesToInstance: number; bytesFromInstance: number; reason: string }): Promise<void> {
    await this.db
      .update(sshSessions)
      .set({ endedAt: new Date(), bytesToInstance: end.bytesToInstance, bytesFromInstance: end.bytesFromInstance, endReason: end.reason.slice(0, 500) })
      .where(eq(sshSessions.id, id));
  }

  /** A user's newest sessions (at most `limit`), for that user or an admin (others see none). */
  async sessionsOf(actor: Actor, userId: string, limit: number): Promise<SshSession[]> {
    if (!isAdmin(actor) && actor.userId !== userId) return [];
    return this.db
      .select()
      .from(sshSessions)
      .where(eq(sshSessions.userId, userId))
      .orderBy(desc(sshSessions.startedAt), desc(sshSessions.id))
      .limit(Math.max(1, Math.min(limit, 500)));
  }
}
