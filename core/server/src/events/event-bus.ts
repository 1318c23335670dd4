/**
 * Events the controller publishes after a transaction commits; GraphQL subscriptions read them.
 */
import { setMaxListeners } from 'node:events';
import { FixedBuffer, Repeater, createPubSub } from 'graphql-yoga';
import type { AuditEntry, ObjectStatusBatch, TrafficQuotaChange, TrafficRatesMessage } from './event-payloads.js';

/** Topics and their payloads. */
export interface EventTopics {
  /** An audit entry was written (the change it describes is committed). */
  audit: [AuditEntry];
  /** A host's desired state reached a new revision (committed). */
  hostRevision: [{ hostId: string; revision: number }];
  /** Objects' apply status changed (committed): an agent's report, a failure found in a host report, Caddy's sync; many per event (`statusBatches`). */
  objectStatus: [ObjectStatusBatch];
  /** A host's agent connected, disconnected or reported its status (committed); receivers read the status back. */
  hostAgentStatus: [{ hostId: string }];
  /** An API token was revoked (committed): every replica closes what was authenticated with it. */
  tokenRevoked: [{ tokenId: string }];
  /** Something the reverse proxy serves changed (committed): each replica's proxy units sync Caddy. */
  webProxyChanged: [WebProxyChange];
  /** A host's live traffic rates for one interval (not stored: counted totals are in the database). */
  trafficRates: [TrafficRatesMessage];
  /** A monthly traffic quota changed level (committed, with its audit entry). */
  trafficQuotaChanged: [TrafficQuotaChange];
}

/**
 * A change that can change Caddy's config; small (it travels as one NOTIFY between replicas), the
 * receivers read the database: a proxy created, edited or deleted, a template created or deleted, an
 * address of an instance given or taken (the sub-domains its owner's templates give it), or
 * `resync`: changes may have been missed (a replica that could not hear NOTIFY), read everything.
 */
export type WebProxyChange =
  | { kind: 'proxy'; action: 'created' | 'updated' | 'deleted'; proxyId: string }
  | { kind: 'template'; action: 'created' | 'deleted'; templateId: string }
  | { kind: 'address'; action: 'added' | 'removed'; addressId: string }
  | { kind: 'resync' };

/** How many undelivered events one subscriber may have before it is cut off. */
export const SUBSCRIBER_BUFFER = 65_536;

/** A subscriber that fell SUBSCRIBER_BUFFER events behind; its subscription ends with this error. */
export class SubscriberOverflowError extends Error {
  constructor(topic: string) {
    super(`the subscription to ${topic} events fell more than ${SUBSCRIBER_BUFFER} events behind and was ended; subscribe again`);
    this.name = 'SubscriberOverflowError';
  }
}

/** The pub/sub instance. */
export type EventBus = ReturnType<typeof createEventBus>;

/**
 * Creates the bus: in-process by default (PGlite, one controller), or on an event target shared
 * by all replicas (PostgreSQL LISTEN/NOTIFY, see db/postgres-events.ts). Publishing goes through
 * yoga's pub/sub; each subscriber gets its own buffer of SUBSCRIBER_BUFFER events, and one that
 * falls further behind (a burst of 60,000 status changes to a stalled client) has its
 * subscription ended with SubscriberOverflowError instead of throwing into the publisher — a
 * Repeater's own limit of 1,024 pending pushes would throw there and crash the controller.
 */
export function createEventBus(eventTarget?: EventTarget) {
  const target = eventTarget ?? new EventTarget();
  // every subscription is one listener: 1,000 browsers watching traffic are not a leak (Node warns past 10)
  setMaxListeners(0, target);
  const pubsub = createPubSub<{ [K in keyof EventTopics]: EventTopics[K] }>({ eventTarget: target as never });
  return {
    publish: pubsub.publish,
    subscribe<K extends keyof EventTopics>(topic: K): Repeater<EventTopics[K][0]> {
      return new Repeater<EventTopics[K][0]>(async (push, stop) => {
        const listener = (event: Event) => {
          try {
            void push((event as CustomEvent<EventTopics[K][0]>).detail);
          } catch {
            stop(new SubscriberOverflowError(topic));
          }
        };
        target.addEventListener(topic, listener);
        await stop;
        target.removeEventListener(topic, listener);
      }, new FixedBuffer(SUBSCRIBER_BUFFER));
    },
  };
}
