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
 * notifications, each parsed and dispatched by every replica. `runs` holds consecutive changes
 * that share an object type, owner (index into `owners`), status and error as
 * `[objectType, owner, status, error, ids]`, `ids` their object ids joined by commas: a report's
 * changes are mostly one run, about 37 bytes a change where a tuple each took about 75 (twice the
 * NOTIFYs, each built, sent, parsed and dispatched). `objectStatusChanges` turns a batch back into
 * changes, `statusBatchSize` counts them. Built by `statusBatches`.
 */
export interface ObjectStatusBatch {
  hostId: string;
  revision: number;
  owners: string[];
  runs: [ChangeObjectType, number, ApplyStatus, string | null, string][];
  /**
   * A batch of a replica of the previous version (one tuple per change, no `runs`): read as well, so
   * that during a rolling upgrade the upgraded replicas still show what the others publish.
   */
  changes?: [ChangeObjectType, string, number, ApplyStatus, string | null][];
}

/** Most bytes of one batch's JSON: with the event's envelope (`{"topic":"objectStatus","payload":…}`) it stays within what one NOTIFY carries inline (db/postgres-events.ts). */
export const STATUS_BATCH_BYTES = 6900;
/**
 * Most bytes of one error in a batch (as JSON): an error of 2,000 characters (the most a report
 * may give) fits, also of 3-byte characters; one escaped to more (control characters take 6 bytes
 * in JSON) is shortened in the event, not in the database.
 */
const STATUS_ERROR_BYTES = 6200;

interface OpenBatch {
  batch: ObjectStatusBatch;
  bytes: number;
  owners: Map<string, number>;
  /** The last run and its ids so far (joined when the batch is done). */
  run: ObjectStatusBatch['runs'][number] | undefined;
  ids: string[];
}

/**
 * Packs changes into batches per host and revision, each at most STATUS_BATCH_BYTES as JSON, in
 * the order given (a host's changes keep their order). Object ids, types and statuses are ASCII
 * without commas or characters JSON escapes (validated ids). Linear in the changes.
 */
export function statusBatches(changes: Iterable<ObjectStatusChange>): ObjectStatusBatch[] {
  const batches: ObjectStatusBatch[] = [];
  const all: OpenBatch[] = [];
  const open = new Map<string, OpenBatch>();
  let last: { hostId: string; revision: number; key: string } | undefined;
  const close = (o: OpenBatch) => {
    if (o.run) o.run[4] = o.ids.join(',');
  };
  for (const c of changes) {
    // a report's changes share host and revision: one key string per run of them, not per change
    if (!last || last.hostId !== c.hostId || last.revision !== c.revision) last = { hostId: c.hostId, revision: c.revision, key: `${c.hostId}:${c.revision}` };
    const error = c.error === null ? null : fitError(c.error);
    let current = open.get(last.key);
    const extendsRun = (o: OpenBatch | undefined) =>
      o?.run !== undefined && o.run[0] === c.objectType && o.batch.owners[o.run[1]] === c.ownerId && o.run[2] === c.status && o.run[3] === error;
    // a new run: brackets, 6 quotes, 4 commas, the owner index (< 10^6), the error, and a comma before the next run
    const runBytes = () => c.objectType.length + c.status.length + 20 + (error === null ? 4 : Buffer.byteLength(JSON.stringify(error)));
    if (current) {
      const ownerBytes = current.owners.has(c.ownerId) ? 0 : c.ownerId.length + 3;
      const added = c.objectId.length + 1 + (extendsRun(current) ? 0 : runBytes()) + ownerBytes;
      if (current.bytes + added > STATUS_BATCH_BYTES) {
        close(current);
        current = undefined;
      }
    }
    if (!current) {
      const batch: ObjectStatusBatch = { hostId: c.hostId, revision: c.revision, owners: [], runs: [] };
      // {"hostId":"…","revision":…,"owners":[],"runs":[]}
      current = { batch, bytes: 70 + c.hostId.length, owners: new Map(), run: undefined, ids: [] };
      open.set(last.key, current);
      batches.push(batch);
      all.push(current);
    }
    let owner = current.owners.get(c.ownerId);
    if (owner === undefined) {
      owner = current.batch.owners.push(c.ownerId) - 1;
      current.owners.set(c.ownerId, owner);
      current.bytes += c.ownerId.length + 3;
    }
    if (!extendsRun(current)) {
      close(current);
      current.bytes += runBytes();
      current.run = [c.objectType, owner, c.status, error, ''];
      current.ids = [];
      current.batch.runs.push(current.run);
    }
    current.ids.push(c.objectId);
    current.bytes += c.objectId.length + 1;
  }
  for (const o of all) close(o);
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
  const changes: ObjectStatusChange[] = [];
  for (const [objectType, objectId, owner, status, error] of batch.changes ?? [])
    changes.push({ objectType, objectId, hostId: batch.hostId, ownerId: batch.owners[owner]!, status, error, revision: batch.revision });
  for (const [objectType, owner, status, error, ids] of batch.runs ?? []) {
    const ownerId = batch.owners[owner]!;
    for (const objectId of ids.split(',')) changes.push({ objectType, objectId, hostId: batch.hostId, ownerId, status, error, revision: batch.revision });
  }
  return changes;
}

/** How many changes a batch carries. */
export function statusBatchSize(batch: ObjectStatusBatch): number {
  let n = batch.changes?.length ?? 0;
  for (const run of batch.runs ?? []) {
    n++;
    for (let i = run[4].indexOf(','); i !== -1; i = run[4].indexOf(',', i + 1)) n++;
  }
  return n;
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
