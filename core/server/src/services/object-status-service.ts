/**
 * Apply status of the objects a host applies (port forwards, firewall rules, bandwidth limits, NICs):
 * agents report it for their own host, owners watch it change. A report names the revision it
 * applied, which may not be ahead of the host's. Skipped, without an error: objects of other
 * hosts, objects deleted since, and objects changed after the reported revision (their
 * `changed_revision` is higher: the agent applied an older version of them, and its report of
 * the newer revision will follow). An object listed twice counts once, as its last entry says.
 * A report costs one statement per object type it lists, however many objects: one UPDATE that
 * finds each reported object by its primary key (never a scan of the host's objects, so its cost
 * does not grow with the host) and writes the rows that change, the changed ids listed under the
 * report's audit entry (`audit_status_objects`), and, only when the host's revision is ahead of
 * the reported one, a probe per object for the stale ones; plus one compact audit entry, and its
 * changes are published many to an event (`statusBatches`). The tables leave room in each page
 * (fillfactor, see the migration `status_fillfactor`) so that a status change is a HOT update: no
 * new index entries (status is in no index), no exclusion-constraint check, which were 9 of the
 * 10 s a report of 60,000 forwards took.
 */
import { eq, sql, type SQL } from 'drizzle-orm';
import { Repeater } from 'graphql-yoga';
import { inject, injectable } from 'tsyringe';
import { isAdmin, type Actor } from '../auth/actor.js';
import { rowsOf, type Executor } from '../db/database.js';
import { auditStatusObjects, bandwidthLimits, firewallRules, hosts, instances, nics, portForwards } from '../db/schema.js';
import { ForbiddenError, NotFoundError, ValidationError } from '../support/errors.js';
import type { EventBus } from '../events/event-bus.js';
import { objectStatusChanges, statusBatches, type ApplyStatus, type ObjectStatusChange, type StatusObjectType } from '../events/event-payloads.js';
import { EventBusToken } from '../di/tokens.js';
import { AuditService } from './audit-service.js';
import { validId } from '../support/validate.js';
import { isId, newId } from '../support/ids.js';

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
const STATUSES: ReadonlySet<string> = new Set<ApplyStatus>(['pending', 'applied', 'failed', 'drifted']);

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
    // a report lists up to 10,000 objects: field names are built for a refusal only
    const objects = input.objects;
    for (let i = 0; i < objects.length; i++) {
      const o = objects[i]!;
      const field = (name: string) => `input.objects[${i}].${name}`;
      if (!Object.hasOwn(TABLES, o.objectType)) throw new ValidationError(field('objectType'), String(o.objectType), 'is not an object type agents report');
      if (typeof o.objectId !== 'string' || !isId(o.objectId)) validId(field('objectId'), o.objectId);
      if (!STATUSES.has(o.status)) throw new ValidationError(field('status'), String(o.status), 'is not an apply status');
      if (o.error != null) {
        if (o.error.includes('\u0000')) throw new ValidationError(field('error'), o.error, 'contains a NUL character');
        if (o.error.length > 2000) throw new ValidationError(field('error'), `${o.error.length} characters`, 'is longer than 2000 characters');
        if (o.status !== 'failed') throw new ValidationError(field('error'), o.error, 'applies only to FAILED objects');
      }
    }
    // an object reported twice counts once, as its last report says: the index of its last entry, by type
    const last = new Map<StatusObjectType, Map<string, number>>();
    for (let i = 0; i < objects.length; i++) {
      const o = objects[i]!;
      let ofType = last.get(o.objectType);
      if (!ofType) last.set(o.objectType, (ofType = new Map()));
      ofType.set(o.objectId, i);
    }
    const stale: ObjectStatusReportResult['stale'] = [];
    // the report's audit entry, named by the rows listing its changed objects before it is written
    const auditId = newId();
    const changes = await this.audit.transact(actor, async (tx, record) => {
      stale.length = 0;
      const [host] = await tx.select({ revision: hosts.desiredRevision }).from(hosts).where(eq(hosts.id, hostId));
      if (!host) throw new NotFoundError('input.hostId', hostId, 'host');
      if (input.revision > host.revision)
        throw new ValidationError('input.revision', input.revision, `is ahead of the host's desired revision ${host.revision}`);
      // the UPDATEs below find their rows by primary key, one probe per reported object: with hash
      // and merge joins the planner prefers scanning every object of the table (its cost model
      // takes 10,000 probes of 60,000 rows for dearer than a scan; measured, they are several times
      // cheaper), and without statistics (PGlite) it takes the host's objects for a handful and
      // scans them once into memory to join every reported object against (10,000 x 60,000
      // comparisons): no sequential scans and no materialized inner sides either. Local to this
      // transaction, which runs nothing else.
      await tx.execute(REPORT_PLANNER_SETTINGS);
      const out: ObjectStatusChange[] = [];
      for (const type of Object.keys(TABLES) as StatusObjectType[]) {
        const ofType = last.get(type);
        if (!ofType) continue;
        // in the report's order, each object at its last entry
        const wanted: { id: string; status: ApplyStatus; error: string | null }[] = [];
        for (let i = 0; i < objects.length; i++) {
          const o = objects[i]!;
          if (o.objectType === type && ofType.get(o.objectId) === i) wanted.push({ id: o.objectId, status: o.status, error: o.error ?? null });
        }
        const { ownerOf, stale: staleAt } = await this.record(tx, type, hostId, input.revision, wanted, auditId);
        wanted.forEach((w, i) => {
          const ownerId = ownerOf[i];
          if (ownerId !== undefined)
            out.push({ objectType: type, objectId: w.id, hostId, ownerId, status: w.status, error: w.error, revision: input.revision });
          // otherwise: already so, deleted since the agent's revision, or another host's; nothing to mark
        });
        for (const i of staleAt) stale.push({ objectType: type, objectId: wanted[i]!.id });
      }
      // one compact entry per report that changed something, not one per object
      if (out.length > 0)
        await record({ id: auditId, action: 'host.statusReport', objectType: 'Host', objectId: hostId, after: reportSummary(input.revision, out) });
      return out;
    });
    for (const batch of statusBatches(changes)) this.events.publish('objectStatus', batch);
    return { changes, stale };
  }

  /** Status changes of the actor's objects (admins: all) as they commit. */
  watch(actor: Actor): Repeater<ObjectStatusChange> {
    return new Repeater<ObjectStatusChange>(async (push, stop) => {
      const batches = this.events.subscribe('objectStatus')[Symbol.asyncIterator]();
      void (async () => {
        for (;;) {
          const next = await batches.next();
          if (next.done) return;
          // a batch's owners are few: one the actor is not among is skipped whole
          if (!isAdmin(actor) && !next.value.owners.includes(actor.userId)) continue;
          for (const change of objectStatusChanges(next.value)) if (isAdmin(actor) || change.ownerId === actor.userId) await push(change);
        }
      })();
      await stop;
      await batches.return?.();
    });
  }

  /**
   * Sets the reported status of this host's objects of `type` that are not newer than `revision`
   * and not already so, finds those of the reported objects changed after `revision`, and lists the
   * changed ids under the report's audit entry `auditId`, in one statement. The reported values
   * travel as three array parameters (one text each, so a report of 10,000 objects with as many
   * different errors is still one round trip and one parameter parse).
   *
   * The UPDATE finds every reported object by its primary key, one index probe each (never a scan
   * of the host's objects, so its cost does not grow with the host: without statistics, as on
   * PGlite, which never runs ANALYZE, the planner took the host's 60,000 forwards for one and
   * hash-joined them all, or scanned them once to compare with every reported object; see the
   * transaction's planner settings in `report`. The host and revision conditions are written as a
   * condition of the joined pair (the CASE on `r.n`, which is always positive), not of the object
   * alone: as the latter they served the planner as a way to find a handful of rows by scan or by
   * the host's revision index), and its WHERE both
   * decides what needs writing and is evaluated against the row as the UPDATE finds it: a change
   * committing meanwhile wins over the report. Stale objects are looked for, one probe each, only
   * when the host's revision (as this statement sees it) is ahead of the reported one: no object
   * changed after the host's own revision, and an agent mostly reports that revision. (Probing
   * every object first and updating the rows the probe chose took two probes per change.)
   *
   * Returns the owner of each changed object by its index in `wanted`, and the indexes of the
   * stale ones. The changes come back as one row per owner listing indexes (a text array): 10,000
   * rows of uuids cost more to send and parse than the UPDATE.
   */
  private async record(
    tx: Executor,
    type: StatusObjectType,
    hostId: string,
    revision: number,
    wanted: { id: string; status: ApplyStatus; error: string | null }[],
    auditId: string,
  ): Promise<{ ownerOf: (string | undefined)[]; stale: number[] }> {
    const result = await tx.execute(reportStatement(type, hostId, revision, wanted, auditId));
    const ownerOf = new Array<string | undefined>(wanted.length);
    const stale: number[] = [];
    for (const row of rowsOf<{ ownerId: string | null; ns: string }>(result)) {
      // "{3,1,2}": ordinalities, from 1
      const ns = row.ns.slice(1, -1).split(',');
      if (row.ownerId === null) for (const n of ns) stale.push(Number(n) - 1);
      else for (const n of ns) ownerOf[Number(n) - 1] = row.ownerId;
    }
    stale.sort((a, b) => a - b);
    return { ownerOf, stale };
  }
}

/**
 * The planner settings a report's transaction runs under (transaction-local; see `report`): no hash
 * or merge joins, no sequential scans, no materialized inner sides; and no JIT compilation, which
 * PostgreSQL starts for a report of 10,000 objects (its estimate passes jit_above_cost) and which
 * took about a quarter of the statement's time (bench/status-report-phases.ts: 137 -> 104 ms).
 */
export const REPORT_PLANNER_SETTINGS = sql`select set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true), set_config('enable_seqscan', 'off', true), set_config('enable_material', 'off', true), set_config('jit', 'off', true)`;

/**
 * The one statement of a report per object type (`ObjectStatusService.record` says what it does),
 * to run after REPORT_PLANNER_SETTINGS in the same transaction. Exported for the plan guard
 * (test/object-status-plan.test.ts) and bench/status-report-phases.ts.
 */
export function reportStatement(
  type: StatusObjectType,
  hostId: string,
  revision: number,
  wanted: readonly { id: string; status: ApplyStatus; error: string | null }[],
  auditId: string,
): SQL {
  const owner = type === 'nic' ? sql`(select i.owner_id from ${instances} as i where i.id = o.instance_id)` : sql`o.owner_id`;
  return sql`
    with r as (
      select * from unnest(${arrayLiteral(wanted.map((w) => w.id))}::text::uuid[], ${arrayLiteral(wanted.map((w) => w.status))}::text::text[],
        ${arrayLiteral(wanted.map((w) => w.error))}::text::text[]) with ordinality as r(id, status, error, n)
    ), changed as (
      update ${TABLES[type]} as o set status = r.status, status_error = r.error
      from r
      where o.id = r.id and (o.status is distinct from r.status or o.status_error is distinct from r.error)
        and case when r.n > 0 then ${onHost(type, hostId)} and o.changed_revision <= ${revision}::bigint end
      returning r.n, o.id, o.status, ${owner} as owner_id
    ), listed as (
      insert into ${auditStatusObjects} (audit_id, object_type, status, object_ids)
      select ${auditId}::uuid, ${type}::text, status, array_agg(id) from changed group by status
    ), stale as (
      select r.n from r cross join lateral (
        select from ${TABLES[type]} as o where o.id = r.id and case when r.n > 0 then ${onHost(type, hostId)} and o.changed_revision > ${revision}::bigint end offset 0
      ) as o
      where (select h.desired_revision from ${hosts} as h where h.id = ${hostId}::uuid) > ${revision}::bigint
    )
    select owner_id::text as "ownerId", array_agg(n)::text as ns from changed group by owner_id
    union all
    select null, array_agg(n)::text from stale having count(*) > 0`;
}

/**
 * A PostgreSQL array literal of `values` (null: NULL), every element quoted: built with two
 * replacements rather than bound as an array parameter, which postgres.js escapes character by
 * character in JavaScript. The values are validated text without NUL.
 */
function arrayLiteral(values: readonly (string | null)[]): string {
  return `{${values.map((v) => (v === null ? 'NULL' : `"${v.replace(/[\\"]/g, '\\$&')}"`)).join(',')}}`;
}

const SUMMARY_FAILURES = 20;

/**
 * What a report changed, for its audit entry: counts per status and per object type and status,
 * and the first failures with their errors (the database keeps them all). The ids of the changed
 * objects are in `audit_status_objects` under the entry's id, by object type and status.
 */
function reportSummary(revision: number, changes: readonly ObjectStatusChange[]) {
  const counts: Partial<Record<ApplyStatus, number>> = {};
  const objects: Partial<Record<StatusObjectType, Partial<Record<ApplyStatus, number>>>> = {};
  const failed: ObjectStatusChange[] = [];
  for (const c of changes) {
    counts[c.status] = (counts[c.status] ?? 0) + 1;
    const byStatus = (objects[c.objectType as StatusObjectType] ??= {});
    byStatus[c.status] = (byStatus[c.status] ?? 0) + 1;
    if (c.status === 'failed') failed.push(c);
  }
  return {
    revision,
    changed: counts,
    objects,
    failed: failed.slice(0, SUMMARY_FAILURES).map((c) => ({ objectType: c.objectType, objectId: c.objectId, error: c.error?.slice(0, 200) ?? null })),
    ...(failed.length > SUMMARY_FAILURES ? { moreFailed: failed.length - SUMMARY_FAILURES } : {}),
  };
}

/**
 * Whether the object `o` of `type` is on the host: forwards name it, the others through their
 * instance (a host never changes for an object). Checked for a row found by its id (`record`
 * wraps it so that no index serves it).
 */
function onHost(type: StatusObjectType, hostId: string): SQL {
  return type === 'port_forward'
    ? sql`o.host_id = ${hostId}::uuid`
    : sql`exists (select from ${instances} as i where i.id = o.instance_id and i.host_id = ${hostId}::uuid)`;
}
