/**
 * Opens the store: PGlite in a data directory (the embedded default) or PostgreSQL through the
 * `postgres` driver, and applies the migrations in `drizzle/` before anything else runs.
 */
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PGlite } from '@electric-sql/pglite';
import { btree_gist } from '@electric-sql/pglite/contrib/btree_gist';
import { drizzle as drizzlePglite } from 'drizzle-orm/pglite';
import { migrate as migratePglite } from 'drizzle-orm/pglite/migrator';
import { drizzle as drizzlePostgres } from 'drizzle-orm/postgres-js';
import { migrate as migratePostgres } from 'drizzle-orm/postgres-js/migrator';
import postgres from 'postgres';
import type { Database } from './database-types.js';
import { PostgresEventTarget, reconnectDelayS } from './postgres-events.js';

export type { Database, Executor } from './database-types.js';

/** The rows of a raw `db.execute` result: postgres-js returns an array, PGlite an object with `rows`. */
export function rowsOf<T>(result: unknown): T[] {
  return (Array.isArray(result) ? result : (result as { rows: T[] }).rows) as T[];
}

/** Whether every request shares the store's one connection (PGlite): there a long transaction makes every other request wait. */
export function sharesOneConnection(db: Database): boolean {
  return (db as { $client?: unknown }).$client instanceof PGlite;
}

/** Where the state lives. */
export type StoreConfig =
  | { kind: 'pglite'; dataDir?: string }
  /** `connectTimeoutS`: how long a request waits for a connection to an unreachable server before it fails UNAVAILABLE (default 5). */
  | { kind: 'postgres'; url: string; maxConnections?: number; connectTimeoutS?: number };

/** An open store. */
export interface Store {
  readonly db: Database;
  readonly kind: StoreConfig['kind'];
  /** PostgreSQL only: events shared by every controller on the database (LISTEN/NOTIFY). */
  readonly eventTarget?: EventTarget;
  close(): Promise<void>;
}

/** The folder holding drizzle-kit's migrations (repo root `drizzle/`). */
export function migrationsFolder(): string {
  if (process.env.GATEHOUSE_MIGRATIONS_DIR) return resolve(process.env.GATEHOUSE_MIGRATIONS_DIR);
  // src/db or dist/db → ../../../../drizzle
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const candidate = join(dir, 'drizzle');
    if (existsSync(join(candidate, 'README.md'))) return candidate;
    dir = dirname(dir);
  }
  throw new Error('drizzle/ migrations folder not found; set GATEHOUSE_MIGRATIONS_DIR');
}

// Serialises migrations between controller replicas starting at the same time.
const MIGRATION_LOCK_KEY = 7_201_845_113;

/** Opens the store and migrates it to the latest schema. */
export async function openStore(config: StoreConfig): Promise<Store> {
  const folder = migrationsFolder();
  if (config.kind === 'pglite') {
    // btree_gist backs the exclusion constraint on port forwards
    const client = new PGlite({ dataDir: config.dataDir, extensions: { btree_gist } });
    await client.waitReady;
    // PGlite runs PostgreSQL on the event loop: zero-filling each new 16 MB WAL segment held it for
    // 100–400 ms (a large import starts one every few thousand rows). PostgreSQL's option for
    // copy-on-write filesystems; the trade-off is that a full disk shows when WAL is written into
    // the segment rather than when it is created, which stops the store either way
    await client.exec('set wal_init_zero = off');
    const db = drizzlePglite({ client });
    await migratePglite(db, { migrationsFolder: folder });
    return {
      db: db as unknown as Database,
      kind: 'pglite',
      close: () => client.close(),
    };
  }
  const migrationClient = postgres(config.url, { max: 1, onnotice: () => {} });
  try {
    await migrationClient`select pg_advisory_lock(${MIGRATION_LOCK_KEY})`;
    await migratePostgres(drizzlePostgres({ client: migrationClient }), { migrationsFolder: folder });
    await migrationClient`select pg_advisory_unlock(${MIGRATION_LOCK_KEY})`;
  } finally {
    await migrationClient.end();
  }
  // a request while PostgreSQL is unreachable fails within connect_timeout (UNAVAILABLE), never hangs;
  // connections are opened again on the next query once it is back
  const client = postgres(config.url, {
    max: config.maxConnections ?? 10,
    connect_timeout: config.connectTimeoutS ?? 5,
    backoff: reconnectDelayS,
    onnotice: () => {},
  });
  const db = drizzlePostgres({ client }) as unknown as Database;
  // LISTEN holds a connection of its own, listened on again after a restart; NOTIFY goes through it too
  const eventTarget = new PostgresEventTarget(
    config.url,
    db,
    (err) => console.error('gatehouse events:', err),
    (ms) => console.info(`gatehouse events: listening again after ${ms} ms without the database; replayed host revisions`),
  );
  await eventTarget.start();
  return {
    db,
    kind: 'postgres',
    eventTarget,
    async close() {
      await eventTarget.stop();
      await client.end({ timeout: 5 });
    },
  };
}
