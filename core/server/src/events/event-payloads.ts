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
