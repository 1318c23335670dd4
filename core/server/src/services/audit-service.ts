/**
 * Every mutation runs through `AuditService.transact`: one database transaction in which the
 * change and its audit entries are written together, and after whose commit the entries are
 * published. A change is never visible without its audit entry, nor announced before it commits.
 */
import { and, desc, eq, lt, type SQL } from 'drizzle-orm';
import { inject, injectable } from 'tsyringe';
import { isAdmin, type Actor } from '../auth/actor.js';
import type { Database, Executor } from '../db/database.js';
import { auditEntryIsVisible, auditLog } from '../db/schema.js';
import type { EventBus, WebProxyChange } from '../events/event-bus.js';
import type { AuditEntry } from '../events/event-payloads.js';
import { newId } from '../support/ids.js';
import { DatabaseToken, EventBusToken } from '../di/tokens.js';

/** What a service says about one change. */
export interface AuditChange {
  /** The entry's id, when rows written beside it name it before it is recorded; new otherwise. */
  id?: string;
  action: string;
  objectType: string;
  objectId: string;
  ownerId?: string | null;
  before?: unknown;
  after?: unknown;
}

/** Writes a change's audit entry inside the running transaction; `many` writes a batch in bulk. */
export type RecordChange = ((change: AuditChange) => Promise<void>) & {
  many(changes: readonly AuditChange[]): Promise<void>;
  /** Notes that a host's desired state moved to `revision`; announced after commit. */
  hostChanged(hostId: string, revision: number): void;
  /** Notes a change the reverse proxy serves; published on `webProxyChanged` after commit. */
  proxyChanged(change: WebProxyChange): void;
};

/**
 * What a transaction that carries the changes of several requests records (`transactBatch`): each
 * entry names its own actor; entries, host revisions and proxy changes are published after commit.
 */
export interface BatchRecorder {
  /** Writes the entries in bulk (one statement per AUDIT_BATCH rows). */
  write(changes: readonly { actor: Actor; change: AuditChange }[]): Promise<void>;
  hostChanged(hostId: string, revision: number): void;
  proxyChanged(change: WebProxyChange): void;
}

/** The transaction handle passed to a change. */
export type Tx = Executor;

/** Filters of the audit log query. */
export interface AuditFilter {
  objectType?: string;
  objectId?: string;
}

// rows per INSERT statement in bulk writes (11 parameters each, well under PostgreSQL's 65535)
const AUDIT_BATCH = 1000;

@injectable()
export class AuditService {
  constructor(
    @inject(DatabaseToken) private readonly db: Database,
    @inject(EventBusToken) private readonly events: EventBus,
  ) {}

  /** Runs `change` in one transaction with audit recording; publishes the entries after commit. */
  async transact<T>(actor: Actor, change: (tx: Tx, record: RecordChange) => Promise<T>): Promise<T> {
    const entries: AuditEntry[] = [];
    const revisions = new Map<string, number>();
    const proxyChanges: WebProxyChange[] = [];
    const result = await this.db.transaction(async (tx) => {
      entries.length = 0; // a retried transaction starts over
      revisions.clear();
      proxyChanges.length = 0;
      const entryOf = (c: AuditChange) => auditEntry(actor, c, null);
      const record: RecordChange = Object.assign(
        async (c: AuditChange) => {
          const entry = entryOf(c);
          await tx.insert(auditLog).values(entry);
          entries.push(entry);
        },
        {
          hostChanged(hostId: string, revision: number) {
            revisions.set(hostId, revision);
          },
          proxyChanged(change: WebProxyChange) {
            proxyChanges.push(change);
          },
          async many(changes: readonly AuditChange[]) {
            const batch = changes.map(entryOf);
            for (let i = 0; i < batch.length; i += AUDIT_BATCH) await tx.insert(auditLog).values(batch.slice(i, i + AUDIT_BATCH));
            entries.push(...batch);
          },
        },
      );
      return change(tx, record);
    });
    this.announce(entries, revisions, proxyChanges);
    return result;
  }

  /**
   * Runs the changes of several requests (each with its own actor) in one transaction; publishes
   * their entries, host revisions and proxy changes after commit. A retried transaction starts over.
   */
  async transactBatch<T>(change: (tx: Tx, record: BatchRecorder) => Promise<T>): Promise<T> {
    const entries: AuditEntry[] = [];
    const revisions = new Map<string, number>();
    const proxyChanges: WebProxyChange[] = [];
    const result = await this.db.transaction(async (tx) => {
      entries.length = 0;
      revisions.clear();
      proxyChanges.length = 0;
      return change(tx, {
        async write(changes) {
          const batch = changes.map(({ actor, change: c }) => auditEntry(actor, c, null));
          for (let i = 0; i < batch.length; i += AUDIT_BATCH) await tx.insert(auditLog).values(batch.slice(i, i + AUDIT_BATCH));
          entries.push(...batch);
        },
        hostChanged(hostId, revision) {
          revisions.set(hostId, revision);
        },
        proxyChanged(c) {
          proxyChanges.push(c);
        },
      });
    });
    this.announce(entries, revisions, proxyChanges);
    return result;
  }

  private announce(entries: readonly AuditEntry[], revisions: ReadonlyMap<string, number>, proxyChanges: readonly WebProxyChange[]): void {
    for (const entry of entries) this.events.publish('audit', entry);
    for (const [hostId, revision] of revisions) this.events.publish('hostRevision', { hostId, revision });
    for (const change of proxyChanges) this.events.publish('webProxyChanged', change);
  }

  /**
   * Writes the entries of a staged import's forwards inside `tx`: hidden from the log until the
   * import commits (removed with it otherwise). Returns them for `publish` after that commit.
   * `before` and `after` are taken as they are, not copied through JSON as `transact` copies them:
   * they must be snapshots the caller no longer changes, of JSON values (Dates allowed: stored and
   * announced as their ISO text). Copying the 50,000 forwards of an import cost ~350 ms of CPU and
   * kept a second copy of each alive until the import was announced. One `at` for the batch.
   */
  async stage(tx: Tx, actor: Actor, importId: string, changes: readonly AuditChange[]): Promise<AuditEntry[]> {
    const at = new Date();
    const batch = changes.map((c) => auditEntry(actor, c, importId, at, false));
    for (let i = 0; i < batch.length; i += AUDIT_BATCH) await tx.insert(auditLog).values(batch.slice(i, i + AUDIT_BATCH));
    return batch;
  }

  /** Announces entries written by `stage` once their import has committed. */
  publish(entries: readonly AuditEntry[]): void {
    for (const entry of entries) this.events.publish('audit', entry);
  }

  /** Entries as they are published (after commit). */
  subscribe(): AsyncIterable<AuditEntry> {
    return this.events.subscribe('audit');
  }

  /** Whether the actor may see the entry: admins all, users those about their own objects. */
  canSee(actor: Actor, entry: AuditEntry): boolean {
    return isAdmin(actor) || (entry.ownerId !== null && entry.ownerId === actor.userId);
  }

  /** Newest first, keyset-paginated on id. */
  async list(actor: Actor, filter: AuditFilter, page: { before?: string; limit: number }): Promise<AuditEntry[]> {
    const conditions: SQL[] = [auditEntryIsVisible];
    if (!isAdmin(actor)) conditions.push(eq(auditLog.ownerId, actor.userId));
    if (filter.objectType) conditions.push(eq(auditLog.objectType, filter.objectType));
    if (filter.objectId) conditions.push(eq(auditLog.objectId, filter.objectId));
    if (page.before) conditions.push(lt(auditLog.id, page.before));
    return this.db
      .select()
      .from(auditLog)
      .where(and(...conditions))
      .orderBy(desc(auditLog.id))
      .limit(page.limit);
  }
}

function auditEntry(actor: Actor, c: AuditChange, importId: string | null, at = new Date(), copy = true): AuditEntry {
  return {
    id: c.id ?? newId(),
    at,
    requestId: actor.requestId,
    actorUserId: actor.userId,
    tokenId: actor.tokenId,
    action: c.action,
    objectType: c.objectType,
    objectId: c.objectId,
    ownerId: c.ownerId ?? null,
    before: copy ? toJson(c.before) : (c.before ?? null),
    after: copy ? toJson(c.after) : (c.after ?? null),
    importId,
  };
}

function toJson(value: unknown): unknown {
  if (value === undefined) return null;
  return JSON.parse(JSON.stringify(value, (key, v: unknown) => (typeof v === 'bigint' ? v.toString() : key === 'secretHash' ? undefined : v)));
}
