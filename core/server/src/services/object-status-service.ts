/**
 * Apply status of the objects a host applies (port forwards, firewall rules, bandwidth limits):
 * agents report it for their own host, owners watch it change. A report names the revision it
 * applied, which may not be ahead of the host's. Skipped, without an error: objects of other
 * hosts, objects deleted since, and objects changed after the reported revision (their
 * `changed_revision` is higher: the agent applied an older version of them, and its report of
 * the newer revision will follow).
 */
import { and, eq, inArray, lte } from 'drizzle-orm';
import { Repeater } from 'graphql-yoga';
import { inject, injectable } from 'tsyringe';
import { isAdmin, type Actor } from '../auth/actor.js';
import type { Database, Executor } from '../db/database.js';
import { bandwidthLimits, firewallRules, hosts, instances, portForwards } from '../db/schema.js';
import { ForbiddenError, NotFoundError, ValidationError } from '../errors.js';
import type { EventBus } from '../events.js';
import { DatabaseToken, EventBusToken } from '../tokens.js';
import { validId } from '../validate.js';

/** Kinds of objects an agent reports on. */
export type StatusObjectType = 'port_forward' | 'firewall_rule' | 'bandwidth_limit';
/** Apply status values. */
export type ApplyStatus = 'pending' | 'applied' | 'failed' | 'drifted';

/** One object's reported status. */
export interface ObjectStatusReport {
  objectType: StatusObjectType;
  objectId: string;
  status: ApplyStatus;
  error?: string | null;
}

/** What a report changed, and the objects it skipped because they changed after the reported revision. */
export interface ObjectStatusReportResult {
  changes: ObjectStatusChange[];
  stale: { objectType: StatusObjectType; objectId: string }[];
}

/** A status change as subscribers see it. */
export interface ObjectStatusChange {
  objectType: StatusObjectType;
  objectId: string;
  hostId: string;
  ownerId: string;
  status: ApplyStatus;
  error: string | null;
  revision: number;
}

const TABLES = { port_forward: portForwards, firewall_rule: firewallRules, bandwidth_limit: bandwidthLimits } as const;
const MAX_REPORT = 10_000;

@injectable()
export class ObjectStatusService {
  constructor(
    @inject(DatabaseToken) private readonly db: Database,
    @inject(EventBusToken) private readonly events: EventBus,
  ) {}

  /** Records an agent's report for its host at `revision`; returns the changes it made and the objects it skipped as changed since. */
  async report(actor: Actor, input: { hostId: string; revision: number; objects: readonly ObjectStatusReport[] }): Promise<ObjectStatusReportResult> {
    const hostId = validId('input.hostId', input.hostId);
    if (!isAdmin(actor) && !(actor.scope === 'agent' && actor.hostId === hostId)) {
      throw new ForbiddenError(`only host ${hostId}'s agent token may report its status`, 'input.hostId', hostId);
    }
    if (!Number.isInteger(input.revision) || input.revision < 0) throw new ValidationError('input.revision', input.revision, 'must be a non-negative integer');
    if (input.objects.length > MAX_REPORT)
      throw new ValidationError('input.objects', `${input.objects.length} objects`, `lists more than ${MAX_REPORT} objects; send several reports`);
    input.objects.forEach((o, i) => {
      validId(`input.objects[${i}].objectId`, o.objectId);
      if (o.error != null && o.error.length > 2000)
        throw new ValidationError(`input.objects[${i}].error`, `${o.error.length} characters`, 'is longer than 2000 characters');
      if (o.status !== 'failed' && o.error != null) throw new ValidationError(`input.objects[${i}].error`, o.error, 'applies only to FAILED objects');
    });
    const stale: ObjectStatusReportResult['stale'] = [];
    const changes = await this.db.transaction(async (tx) => {
      stale.length = 0;
      const [host] = await tx.select({ revision: hosts.desiredRevision }).from(hosts).where(eq(hosts.id, hostId));
      if (!host) throw new NotFoundError('input.hostId', hostId, 'host');
      if (input.revision > host.revision)
        throw new ValidationError('input.revision', input.revision, `is ahead of the host's desired revision ${host.revision}`);
      const out: ObjectStatusChange[] = [];
      for (const type of Object.keys(TABLES) as StatusObjectType[]) {
        const reports = input.objects.filter((o) => o.objectType === type);
        if (reports.length === 0) continue;
        const rows = await this.ownedBy(
          tx,
          type,
          hostId,
          reports.map((r) => r.objectId),
        );
        for (const report of reports) {
          const row = rows.get(report.objectId);
          if (!row) continue; // deleted since the agent's revision, or another host's: nothing to mark
          if (input.revision < row.changedRevision) {
            stale.push({ objectType: type, objectId: report.objectId });
            continue;
          }
          const error = report.error ?? null;
          if (row.status === report.status && row.statusError === error) continue;
          const table = TABLES[type];
          // re-checked by the update itself: a change committing meanwhile wins over this report
          const updated = await tx
            .update(table)
            .set({ status: report.status, statusError: error })
            .where(and(eq(table.id, report.objectId), lte(table.changedRevision, input.revision)))
            .returning({ id: table.id });
          if (updated.length === 0) {
            stale.push({ objectType: type, objectId: report.objectId });
            continue;
          }
          out.push({ objectType: type, objectId: report.objectId, hostId, ownerId: row.ownerId, status: report.status, error, revision: input.revision });
        }
      }
      return out;
    });
    for (const change of changes) this.events.publish('objectStatus', change);
    return { changes, stale };
  }

  /** Status changes of the actor's objects (admins: all) as they commit. */
  watch(actor: Actor): Repeater<ObjectStatusChange> {
    return new Repeater<ObjectStatusChange>(async (push, stop) => {
      const changes = this.events.subscribe('objectStatus')[Symbol.asyncIterator]();
      void (async () => {
        for (;;) {
          const next = await changes.next();
          if (next.done) return;
          if (isAdmin(actor) || next.value.ownerId === actor.userId) await push(next.value);
        }
      })();
      await stop;
      await changes.return?.();
    });
  }

  private async ownedBy(tx: Executor, type: StatusObjectType, hostId: string, ids: string[]) {
    const rows =
      type === 'port_forward'
        ? await tx
            .select({
              id: portForwards.id,
              ownerId: portForwards.ownerId,
              status: portForwards.status,
              statusError: portForwards.statusError,
              changedRevision: portForwards.changedRevision,
            })
            .from(portForwards)
            .where(and(eq(portForwards.hostId, hostId), inArray(portForwards.id, ids)))
        : type === 'firewall_rule'
          ? await tx
              .select({
                id: firewallRules.id,
                ownerId: firewallRules.ownerId,
                status: firewallRules.status,
                statusError: firewallRules.statusError,
                changedRevision: firewallRules.changedRevision,
              })
              .from(firewallRules)
              .innerJoin(instances, eq(instances.id, firewallRules.instanceId))
              .where(and(eq(instances.hostId, hostId), inArray(firewallRules.id, ids)))
          : await tx
              .select({
                id: bandwidthLimits.id,
                ownerId: bandwidthLimits.ownerId,
                status: bandwidthLimits.status,
                statusError: bandwidthLimits.statusError,
                changedRevision: bandwidthLimits.changedRevision,
              })
              .from(bandwidthLimits)
              .innerJoin(instances, eq(instances.id, bandwidthLimits.instanceId))
              .where(and(eq(instances.hostId, hostId), inArray(bandwidthLimits.id, ids)));
    return new Map(rows.map((r) => [r.id, r]));
  }
}
