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
