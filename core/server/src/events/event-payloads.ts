/**
 * What the controller's events carry: the payload types services publish and subscribers read.
 * They sit below the services, so the event bus and every service import them without a circle.
 */
import type { StatusObjectType } from '@gatehouse/agent-protocol';
import type { auditLog } from '../db/schema.js';

/** One audit row, as the audit topic carries it. */
export type AuditEntry = typeof auditLog.$inferSelect;

/** Kinds of objects an agent reports on (the protocol's). */
export type { StatusObjectType } from '@gatehouse/agent-protocol';
/** Kinds of objects whose status changes are published: what agents report, and web proxies (Caddy, on the controller). */
export type ChangeObjectType = StatusObjectType | 'web_proxy';
/** Apply status values. */
export type ApplyStatus = 'pending' | 'applied' | 'failed' | 'drifted';

/** A status change as subscribers see it. */
export interface ObjectStatusChange {
  objectType: ChangeObjectType;
  objectId: string;
  hostId: string;
  ownerId: string;
  status: ApplyStatus;
  error: string | null;
  revision: number;
}

/**
 * Status changes of one host at one revision, published together: on PostgreSQL one NOTIFY (each
 * below 8000 bytes) carries many of them, where one each made a report of 10,000 changes as many
 * notifications, each parsed and dispatched by every replica. `changes` holds
 * `[objectType, objectId, owner (index into owners), status, error]`; `objectStatusChanges`
 * turns a batch back into changes. Built by `statusBatches`.
 */
export interface ObjectStatusBatch {
  hostId: string;
  revision: number;
  owners: string[];
  changes: [ChangeObjectType, string, number, ApplyStatus, string | null][];
}

/** Most bytes of one batch's JSON: with the event's envelope (`{"topic":"objectStatus","payload":…}`) it stays within what one NOTIFY carries inline (db/postgres-events.ts). */
export const STATUS_BATCH_BYTES = 6900;
/**
 * Most bytes of one error in a batch (as JSON): an error of 2,000 characters (the most a report
 * may give) fits, also of 3-byte characters; one escaped to more (control characters take 6 bytes
 * in JSON) is shortened in the event, not in the database.
 */
const STATUS_ERROR_BYTES = 6200;

/**
 * Packs changes into batches per host and revision, each at most STATUS_BATCH_BYTES as JSON, in
 * the order given (a host's changes keep their order). Linear in the changes.
 */
export function statusBatches(changes: Iterable<ObjectStatusChange>): ObjectStatusBatch[] {
  const batches: ObjectStatusBatch[] = [];
  const open = new Map<string, { batch: ObjectStatusBatch; bytes: number; owners: Map<string, number> }>();
  for (const c of changes) {
    const key = `${c.hostId}:${c.revision}`;
    const error = c.error === null ? null : fitError(c.error);
    // ids, types and statuses are ASCII: 4 quotes, 4 commas, brackets, the owner index (< 10^6) and the error
    const entryBytes = c.objectType.length + c.objectId.length + c.status.length + 16 + (error === null ? 4 : Buffer.byteLength(JSON.stringify(error)));
    let current = open.get(key);
    const ownerBytes = current?.owners.has(c.ownerId) ? 0 : c.ownerId.length + 3;
    if (current && current.batch.changes.length > 0 && current.bytes + entryBytes + ownerBytes > STATUS_BATCH_BYTES) current = undefined;
    if (!current) {
      const batch: ObjectStatusBatch = { hostId: c.hostId, revision: c.revision, owners: [], changes: [] };
      // {"hostId":"…","revision":…,"owners":[],"changes":[]}
      current = { batch, bytes: 70 + c.hostId.length, owners: new Map() };
      open.set(key, current);
      batches.push(batch);
    }
    let owner = current.owners.get(c.ownerId);
    if (owner === undefined) {
      owner = current.batch.owners.push(c.ownerId) - 1;
      current.owners.set(c.ownerId, owner);
      current.bytes += c.ownerId.length + 3;
    }
    current.batch.changes.push([c.objectType, c.objectId, owner, c.status, error]);
    current.bytes += entryBytes;
  }
  return batches;
}

/** The error, shortened until its JSON fits STATUS_ERROR_BYTES. */
function fitError(error: string): string {
  let fitted = error;
  while (Buffer.byteLength(JSON.stringify(fitted)) > STATUS_ERROR_BYTES) fitted = fitted.slice(0, Math.floor(fitted.length * 0.75));
  return fitted;
}

/** The changes a batch carries, in order. */
export function objectStatusChanges(batch: ObjectStatusBatch): ObjectStatusChange[] {
  return batch.changes.map(([objectType, objectId, owner, status, error]) => ({
    objectType,
    objectId,
    hostId: batch.hostId,
    ownerId: batch.owners[owner]!,
    status,
    error,
    revision: batch.revision,
  }));
}

/** Live rates of one instance in a traffic message, bits per second: `[id, rxBps, txBps]` per NIC and forward. */
export interface InstanceTrafficRates {
  instanceId: string;
  ownerId: string;
  rxBps: number;
  txBps: number;
  nics: [string, number, number][];
  forwards: [string, number, number][];
  /** More forwards of an instance already in this interval (its rates and NICs are in the first entry). */
  continued?: true;
}

/**
 * One host's live rates for one interval, as counted from one agent report. A host with many
 * instances sends its interval in several parts (each a NOTIFY below 8000 bytes), split by
 * instance; `host` (the sum of its NICs) is in every part.
 */
export interface TrafficRatesMessage {
  hostId: string;
  /** When the counters were read (ms since the epoch). */
  at: number;
  intervalMs: number;
  part: number;
  parts: number;
  host: { rxBps: number; txBps: number };
  instances: InstanceTrafficRates[];
}

/**
 * A bandwidth limit's monthly quota changed level in a billing period: 80 % reached (warning),
 * 100 % reached (exceeded; THROTTLE puts its throttle into the desired state), or a new period
 * (or a raised quota) brought it back to normal. Times are ms since the epoch.
 */
export interface TrafficQuotaChange {
  limitId: string;
  instanceId: string;
  /** The NIC of a per-NIC limit; null: the instance-wide limit. */
  nicId: string | null;
  ownerId: string;
  hostId: string;
  periodStart: number;
  periodEnd: number;
  level: 'normal' | 'warning' | 'exceeded';
  previousLevel: 'normal' | 'warning' | 'exceeded';
  action: 'throttle' | 'notify';
  /** The throttle is in the desired state now. */
  throttled: boolean;
  throttleBps: number | null;
  usedBytes: number;
  quotaBytes: number;
  at: number;
}
