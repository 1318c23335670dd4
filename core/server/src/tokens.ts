/**
 * Dependency-injection tokens. tsx/esbuild emit no decorator metadata, so every constructor
 * parameter names its token with `@inject(...)`.
 */
import type { InjectionToken } from 'tsyringe';
import type { Database } from './db/database.js';
import type { EventBus } from './events.js';

/** The open drizzle database. */
export const DatabaseToken: InjectionToken<Database> = Symbol('Database');
/** The in-process (or replicated) event bus behind subscriptions. */
export const EventBusToken: InjectionToken<EventBus> = Symbol('EventBus');
