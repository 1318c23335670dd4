/**
 * Apply status of the objects a host applies (port forwards, firewall rules, bandwidth limits, NICs):
 * agents report it for their own host, owners watch it change. A report names the revision it
 * applied, which may not be ahead of the host's. Skipped, without an error: objects of other
 * hosts, objects deleted since, and objects changed after the reported revision (their
 * `changed_revision` is higher: the agent applied an older version of them, and its report of
 * the newer revision will follow). An object listed twice counts once, as its last entry says.
 * A report costs a few statements per object type, however many objects it lists.
 */
import { eq, sql, type SQL } from 'drizzle-orm';
import { Repeater } from 'graphql-yoga';
import { inject, injectable } from 'tsyringe';
import { isAdmin, type Actor } from '../auth/actor.js';
import { rowsOf, type Executor } from '../db/database.js';
import { bandwidthLimits, firewallRules, hosts, instances, nics, portForwards } from '../db/schema.js';
import { ForbiddenError, NotFoundError, ValidationError } from '../support/errors.js';
import type { EventBus } from '../events/event-bus.js';
import type { ApplyStatus, ObjectStatusChange, StatusObjectType } from '../events/event-payloads.js';
import { EventBusToken } from '../di/tokens.js';
import { AuditService } from './audit-service.js';
import { validId } from '../support/validate.js';

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

const TABLES = { port_forward: portForwards, firewall_rule: firewallRules, bandwidth_limit: bandwidthLimits, nic: nics } as const satisfies Record<
  StatusObjectType,
  unknown
>;
const MAX_REPORT = 10_000;

@injectable()
export class ObjectStatusService {
  constructor(
    @inject(EventBusToken) private readonly events: EventBus,
    @inject(AuditService) private readonly audit: AuditService,
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
    // an object reported twice counts once, as its last report says
    const latest = new Map<string, { index: number; report: ObjectStatusReport }>();
    input.objects.forEach((report, index) => latest.set(`${report.objectType}:${report.objectId}`, { index, report }));
    const stale: ObjectStatusReportResult['stale'] = [];
    const changes = await this.audit.transact(actor, async (tx, record) => {
      stale.length = 0;
      const [host] = await tx.select({ revision: hosts.desiredRevision }).from(hosts).where(eq(hosts.id, hostId));
      if (!host) throw new NotFoundError('input.hostId', hostId, 'host');
      if (input.revision > host.revision)
        throw new ValidationError('input.revision', input.revision, `is ahead of the host's desired revision ${host.revision}`);
      const out: ObjectStatusChange[] = [];
      for (const type of Object.keys(TABLES) as StatusObjectType[]) {
        const reports = [...latest.values()].filter((r) => r.report.objectType === type).sort((a, b) => a.index - b.index);
        if (reports.length === 0) continue;
        const wanted = reports.map(({ report }) => ({ id: report.objectId, status: report.status, error: report.error ?? null }));
        const changed = await this.record(tx, type, hostId, input.revision, wanted);
        const unchanged = wanted.filter((w) => !changed.has(w.id)).map((w) => w.id);
        const changedSince = unchanged.length > 0 ? await this.changedAfter(tx, type, hostId, input.revision, unchanged) : new Set<string>();
        for (const w of wanted) {
          const ownerId = changed.get(w.id);
          if (ownerId !== undefined)
            out.push({ objectType: type, objectId: w.id, hostId, ownerId, status: w.status, error: w.error, revision: input.revision });
          else if (changedSince.has(w.id)) stale.push({ objectType: type, objectId: w.id });
          // otherwise: already so, deleted since the agent's revision, or another host's; nothing to mark
        }
      }
      // one compact entry per report that changed something, not one per object
      if (out.length > 0) await record({ action: 'host.statusReport', objectType: 'Host', objectId: hostId, after: reportSummary(input.revision, out) });
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

  /**
   * Sets the reported status of this host's objects of `type` that are not newer than `revision`
   * and not already so, in one statement (the per-row values travel as one JSON parameter, so a
   * report of 10,000 objects with as many different errors is still one round trip). The WHERE is
   * evaluated against the row as the UPDATE finds it: a change committing meanwhile wins over the
   * report. Returns the owners of the objects it changed, by id. (Parameters are cast from text:
   * postgres-js would encode a string bound to a jsonb parameter as a JSON string.)
   */
  private async record(
    tx: Executor,
    type: StatusObjectType,
    hostId: string,
    revision: number,
    wanted: { id: string; status: ApplyStatus; error: string | null }[],
  ): Promise<Map<string, string>> {
    const result = await tx.execute(sql`
      update ${TABLES[type]} as o set status = r.status, status_error = r.error
      from jsonb_to_recordset(${JSON.stringify(wanted)}::text::jsonb) as r(id uuid, status text, error text)
      where o.id = r.id and ${onHost(type, hostId)} and o.changed_revision <= ${revision}::bigint
        and (o.status is distinct from r.status or o.status_error is distinct from r.error)
      returning o.id, ${type === 'nic' ? sql`(select i.owner_id from ${instances} as i where i.id = o.instance_id)` : sql`o.owner_id`} as "ownerId"`);
    return new Map(rowsOf<{ id: string; ownerId: string }>(result).map((r) => [r.id, r.ownerId]));
  }

  /** Which of `ids` are this host's objects of `type` changed after `revision`. */
  private async changedAfter(tx: Executor, type: StatusObjectType, hostId: string, revision: number, ids: string[]): Promise<Set<string>> {
    const result = await tx.execute(sql`
      select o.id from ${TABLES[type]} as o
      where o.id = any(${`{${ids.join(',')}}`}::text::uuid[]) and ${onHost(type, hostId)} and o.changed_revision > ${revision}::bigint`);
    return new Set(rowsOf<{ id: string }>(result).map((r) => r.id));
  }
}

const SUMMARY_FAILURES = 20;

/** What a report changed, for its audit entry: counts per status and the first failures with their errors. */
function reportSummary(revision: number, changes: readonly ObjectStatusChange[]) {
  const counts: Partial<Record<ApplyStatus, number>> = {};
  for (const c of changes) counts[c.status] = (counts[c.status] ?? 0) + 1;
  const failed = changes.filter((c) => c.status === 'failed');
  return {
    revision,
    changed: counts,
    failed: failed.slice(0, SUMMARY_FAILURES).map((c) => ({ objectType: c.objectType, objectId: c.objectId, error: c.error?.slice(0, 200) ?? null })),
    ...(failed.length > SUMMARY_FAILURES ? { moreFailed: failed.length - SUMMARY_FAILURES } : {}),
  };
}

/** Whether the object `o` of `type` is on the host: forwards name it, firewall rules and bandwidth limits through their instance. */
function onHost(type: StatusObjectType, hostId: string): SQL {
  return type === 'port_forward'
    ? sql`o.host_id = ${hostId}::uuid`
    : sql`o.instance_id in (select i.id from ${instances} as i where i.host_id = ${hostId}::uuid)`;
}
