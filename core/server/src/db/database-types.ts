/** The database handle's types, below both the store (database.ts) and the event target it opens (postgres-events.ts). */
import type { PgAsyncDatabase, PgQueryResultHKT } from 'drizzle-orm/pg-core';

/** The drizzle handle every service uses; the same type for both stores. */
export type Database = PgAsyncDatabase<PgQueryResultHKT>;

/** A transaction or the database itself. */
export type Executor = Parameters<Parameters<Database['transaction']>[0]>[0] | Database;
