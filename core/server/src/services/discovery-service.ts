/**
 * What a host's agent discovered becomes Gatehouse's view of the host:
 *
 * - an instance the backend has and Gatehouse does not is registered (owner: the host's
 *   `discoveryOwnerId`, else the first admin), its NICs with the addresses they hold where those
 *   lie in a pool this host may use, else with one allocated from the host's `defaultPoolId`
 *   (the plugin then configures it, where it supports static addressing);
 * - an instance registered by hand under the same name without an externalId is bound to it;
 * - an instance seen in an earlier discovery and missing now was deleted on the backend: it is
 *   deleted here too, which reclaims its forwards, proxies, rules, limits and addresses, each with
 *   an audit entry. One never seen (created by hand for something discovery does not list) stays.
 *
 * Runs after an agent's report with a discovery is committed; changes are made as the system
 * actor, in the services' own transactions, so every one is audited like an admin's.
 */
import { and, asc, eq, inArray, isNotNull, isNull, or } from 'drizzle-orm';
import { inject, injectable } from 'tsyringe';
import { systemActor } from '../auth/actor.js';
import type { Database } from '../db/database.js';
import { hosts, instances, ipPools, portForwards, users, type DiscoveredInstanceJson } from '../db/schema.js';
import { AuditService } from './audit-service.js';
import { GatehouseError } from '../support/errors.js';
import { newId } from '../support/ids.js';
import type { Logger } from '../support/logger.js';
import { cidrContains, parseCidr, parseIp } from '../net/ip.js';
import { DatabaseToken, LoggerToken } from '../di/tokens.js';
import { bumpHostRevision } from './revision.js';
import { InstanceService, type NicSpec } from './instance-service.js';

/** What one reconciliation did. */
export interface DiscoveryOutcome {
  registered: { instanceId: string; externalId: string; name: string }[];
  bound: { instanceId: string; externalId: string }[];
  reclaimed: { instanceId: string; externalId: string }[];
  /** Discovered instances that could not be registered, with why. */
  skipped: { externalId: string; reason: string }[];
}

const NIC_NAME = /^[a-z][a-z0-9]{0,14}$/;

@injectable()
export class DiscoveryService {
  constructor(
    @inject(DatabaseToken) private readonly db: Database,
    @inject(InstanceService) private readonly instances: InstanceService,
    @inject(AuditService) private readonly audit: AuditService,
    @inject(LoggerToken) private readonly logger: Logger,
  ) {}

  /** Brings the host's instances in line with a discovery its agent just reported. */
  async reconcile(hostId: string, discovered: readonly DiscoveredInstanceJson[], previous: readonly DiscoveredInstanceJson[] = []): Promise<DiscoveryOutcome> {
    const outcome: DiscoveryOutcome = { registered: [], bound: [], reclaimed: [], skipped: [] };
    const [host] = await this.db.select().from(hosts).where(eq(hosts.id, hostId));
    if (!host) return outcome;
    const actor = systemActor(newId());
    await this.rebalance(actor, hostId, previous, discovered);
    const existing = await this.db.select().from(instances).where(eq(instances.hostId, hostId));
    const byExternal = new Map(existing.filter((i) => i.externalId !== null).map((i) => [i.externalId!, i]));
    const seen = new Set(discovered.map((d) => d.externalId));

    for (const d of discovered) {
      if (byExternal.has(d.externalId)) continue;
      const named = existing.find((i) => i.externalId === null && i.name === d.name);
      try {
        if (named) {
          await this.bind(actor, named.id, hostId, d.externalId);
          outcome.bound.push({ instanceId: named.id, externalId: d.externalId });
        } else {
          const created = await this.register(
            actor,
            host,
            d,
            existing.map((i) => i.name),
          );
          existing.push(created);
          outcome.registered.push({ instanceId: created.id, externalId: d.externalId, name: created.name });
        }
      } catch (error) {
        const reason = error instanceof GatehouseError ? error.message : String(error);
        outcome.skipped.push({ externalId: d.externalId, reason });
        this.logger.warn(`discovery on host ${host.name}: instance ${d.name} (${d.externalId}) not registered: ${reason}`);
      }
    }

    const gone = existing.filter((i) => i.externalId !== null && i.lastDiscoveredAt !== null && !seen.has(i.externalId));
    for (const instance of gone) {
      try {
        await this.instances.delete(actor, instance.id);
        outcome.reclaimed.push({ instanceId: instance.id, externalId: instance.externalId! });
        this.logger.info(`discovery on host ${host.name}: instance ${instance.name} (${instance.externalId}) is gone from the backend; reclaimed`);
      } catch (error) {
        this.logger.error(`discovery on host ${host.name}: reclaiming ${instance.name} failed`, error);
      }
    }

    // everything listed now counts as seen (what this run registered or bound included)
    const present = discovered.map((d) => d.externalId);
    for (let i = 0; i < present.length; i += 1000) {
      await this.db
        .update(instances)
        .set({ lastDiscoveredAt: new Date() })
        .where(and(eq(instances.hostId, hostId), inArray(instances.externalId, present.slice(i, i + 1000))));
    }
    return outcome;
  }

  /**
   * An instance that stopped or runs again changes the balanced forwards it is a target of (the
   * desired state leaves a stopped instance's targets out): they get the host's next revision and
   * are PENDING until the agent applies it.
   */
  private async rebalance(
    actor: ReturnType<typeof systemActor>,
    hostId: string,
    previous: readonly DiscoveredInstanceJson[],
    discovered: readonly DiscoveredInstanceJson[],
  ): Promise<void> {
    const wasStopped = new Set(previous.filter((d) => d.running === false).map((d) => d.externalId));
    const changed = discovered.filter((d) => (d.running === false) !== wasStopped.has(d.externalId)).map((d) => d.externalId);
    if (changed.length === 0) return;
    await this.audit.transact(actor, async (tx, record) => {
      const ids = new Set(
        (
          await tx
            .select({ id: instances.id })
            .from(instances)
            .where(and(eq(instances.hostId, hostId), inArray(instances.externalId, changed)))
        ).map((r) => r.id),
      );
      if (ids.size === 0) return;
      const balanced = await tx
        .select({ id: portForwards.id, balance: portForwards.balance })
        .from(portForwards)
        .where(and(eq(portForwards.hostId, hostId), isNotNull(portForwards.balance)));
      const affected = balanced.filter((f) => f.balance!.targets.some((t) => ids.has(t.instanceId))).map((f) => f.id);
      if (affected.length === 0) return;
      const host = await bumpHostRevision(tx, record, hostId);
      await tx
        .update(portForwards)
        .set({ changedRevision: host.desiredRevision, status: 'pending', statusError: null })
        .where(inArray(portForwards.id, affected));
    });
  }

  /** Gives a hand-registered instance the backend id discovery found for its name. */
  private async bind(actor: ReturnType<typeof systemActor>, instanceId: string, hostId: string, externalId: string): Promise<void> {
    await this.audit.transact(actor, async (tx, record) => {
      const [before] = await tx.select().from(instances).where(eq(instances.id, instanceId)).for('update');
      if (!before || before.externalId !== null) return;
      await bumpHostRevision(tx, record, hostId);
      const [after] = await tx.update(instances).set({ externalId }).where(eq(instances.id, instanceId)).returning();
      await record({
        action: 'instance.update',
        objectType: 'Instance',
        objectId: instanceId,
        ownerId: before.ownerId,
        before,
        after: { ...after, reason: 'bound by discovery' },
      });
    });
  }

  /** Registers a discovered instance with its NICs (see the file comment for addresses). */
  private async register(actor: ReturnType<typeof systemActor>, host: typeof hosts.$inferSelect, d: DiscoveredInstanceJson, taken: string[]) {
    const ownerId = host.discoveryOwnerId ?? (await this.firstAdmin());
    if (!ownerId) throw new Error('there is no admin user to own it');
    const pools = await this.db
      .select()
      .from(ipPools)
      .where(or(isNull(ipPools.hostId), eq(ipPools.hostId, host.id)))
      .orderBy(asc(ipPools.createdAt));
    const nics: NicSpec[] = [];
    for (const nic of d.nics.slice(0, 32)) {
      const name = NIC_NAME.test(nic.name) ? nic.name : null;
      const held = nic.addresses
        .map((a) => a.split('/')[0]!)
        .flatMap((address) => {
          const ip = parseIp(address);
          if ('error' in ip) return [];
          const pool = pools.find((p) => {
            const subnet = parseCidr(p.subnet);
            return !('error' in subnet) && cidrContains(subnet, ip);
          });
          return pool ? [{ address, network: pool.network }] : [];
        });
      const network = held[0]?.network;
      if (network) {
        nics.push({ network, name, mac: nic.mac, addresses: held.filter((h) => h.network === network).map((h) => h.address) });
        continue;
      }
      const fallback = pools.find((p) => p.id === host.defaultPoolId);
      if (fallback) nics.push({ network: fallback.network, name, mac: nic.mac, allocate: [fallback.family as 4 | 6] });
    }
    // the backend's name, made unique on the host if a hand-registered instance already has it
    let name = d.name;
    for (let n = 2; taken.includes(name); n++) name = `${d.name}-${n}`;
    return this.instances.create(actor, { hostId: host.id, name, ownerId, externalId: d.externalId, nics });
  }

  private async firstAdmin(): Promise<string | undefined> {
    const [admin] = await this.db.select({ id: users.id }).from(users).where(eq(users.role, 'admin')).orderBy(asc(users.createdAt)).limit(1);
    return admin?.id;
  }
}
