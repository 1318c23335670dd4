/**
 * Events the controller publishes after a transaction commits; GraphQL subscriptions read them.
 */
import { createPubSub } from 'graphql-yoga';
import type { AuditEntry } from './services/audit-service.js';
import type { ObjectStatusChange } from './services/object-status-service.js';

/** Topics and their payloads. */
export interface EventTopics {
  /** An audit entry was written (the change it describes is committed). */
  audit: [AuditEntry];
  /** A host's desired state reached a new revision (committed). */
  hostRevision: [{ hostId: string; revision: number }];
  /** An agent reported a new apply status for an object (committed). */
  objectStatus: [ObjectStatusChange];
  /** A host's agent connected, disconnected or reported its status (committed); receivers read the status back. */
  hostAgentStatus: [{ hostId: string }];
  /** An API token was revoked (committed): every replica closes what was authenticated with it. */
  tokenRevoked: [{ tokenId: string }];
}

/** The pub/sub instance; its type comes from yoga's `createPubSub`. */
export type EventBus = ReturnType<typeof createEventBus>;

/**
 * Creates the bus: in-process by default (PGlite, one controller), or on an event target shared
 * by all replicas (PostgreSQL LISTEN/NOTIFY, see db/postgres-events.ts).
 */
export function createEventBus(eventTarget?: EventTarget) {
  return createPubSub<{ [K in keyof EventTopics]: EventTopics[K] }>(eventTarget ? { eventTarget: eventTarget as never } : undefined);
}
