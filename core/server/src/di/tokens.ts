/**
 * Dependency-injection tokens. tsx/esbuild emit no decorator metadata, so every constructor
 * parameter names its token with `@inject(...)`.
 */
import type { InjectionToken } from 'tsyringe';
import type { Database } from '../db/database.js';
import type { EventBus } from '../events/event-bus.js';
import type { Logger } from '../support/logger.js';

/** How presence is kept: the refresh period of an open subscription, and the age after which it no longer counts. */
export interface AgentPresenceOptions {
  heartbeatMs: number;
  offlineAfterMs: number;
}

/** The open drizzle database. */
export const DatabaseToken: InjectionToken<Database> = Symbol('Database');
/** The in-process (or replicated) event bus behind subscriptions. */
export const EventBusToken: InjectionToken<EventBus> = Symbol('EventBus');
/** Where services log what no caller sees (background work, refused connections). */
export const LoggerToken: InjectionToken<Logger> = Symbol('Logger');
/** How often agent presence is refreshed and when an agent counts as offline. */
export const AgentPresenceToken: InjectionToken<AgentPresenceOptions> = Symbol('AgentPresence');

/** The controller's clock (tests move it to roll a billing period over without waiting). */
export interface Clock {
  now(): Date;
}

/** The clock traffic ingest, rollups and billing periods read. */
export const ClockToken: InjectionToken<Clock> = Symbol('Clock');
