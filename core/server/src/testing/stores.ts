/**
 * The stores every service test runs against: PGlite in memory, and a fresh database on the real
 * PostgreSQL server (DATABASE_URL, default the local server). When PostgreSQL is unreachable the
 * PostgreSQL variant is skipped, except under GATEHOUSE_REQUIRE_SYSTEM=1 (CI), where it fails.
 */
import postgres from 'postgres';
import { openStore, type Store, type StoreConfig } from '../db/database.js';

/** Server URL the test databases are created on. */
export const POSTGRES_ADMIN_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
/** Whether missing system services must fail instead of skip. */
export const REQUIRE_SYSTEM = process.env.GATEHOUSE_REQUIRE_SYSTEM === '1';

let reachable: Promise<boolean> | undefined;

/** Whether the PostgreSQL server answers (checked once per test file). */
export function postgresReachable(): Promise<boolean> {
  reachable ??= (async () => {
    const sql = postgres(POSTGRES_ADMIN_URL, { max: 1, connect_timeout: 3, onnotice: () => {} });
    try {
      await sql`select 1`;
      return true;
    } catch {
      return false;
    } finally {
      await sql.end({ timeout: 1 });
    }
  })();
  return reachable;
}

/** A database created for one test file, dropped by `drop`. */
export interface TestDatabase {
  url: string;
  drop(): Promise<void>;
}

/** Creates an empty database on the PostgreSQL server. */
export async function createTestDatabase(): Promise<TestDatabase> {
  const name = `gatehouse_test_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
  const admin = postgres(POSTGRES_ADMIN_URL, { max: 1, onnotice: () => {} });
  await admin.unsafe(`create database "${name}"`);
  await admin.end();
  const url = new URL(POSTGRES_ADMIN_URL);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async drop() {
      const sql = postgres(POSTGRES_ADMIN_URL, { max: 1, onnotice: () => {} });
      await sql.unsafe(`drop database if exists "${name}" with (force)`);
      await sql.end();
    },
  };
}

/** One store backend under test. */
export interface StoreBackend {
  name: 'pglite' | 'postgres';
  /** Opens a fresh, migrated, empty store; `cleanup` closes it and drops what it created. */
  open(): Promise<{ store: Store; config: StoreConfig; cleanup(): Promise<void> }>;
}

/** PGlite and PostgreSQL; PostgreSQL is absent when unreachable and not required. */
export async function storeBackends(): Promise<StoreBackend[]> {
  const backends: StoreBackend[] = [
    {
      name: 'pglite',
      async open() {
        const config: StoreConfig = { kind: 'pglite' };
        const store = await openStore(config);
        return { store, config, cleanup: () => store.close() };
      },
    },
  ];
  if ((await postgresReachable()) || REQUIRE_SYSTEM) {
    backends.push({
      name: 'postgres',
      async open() {
        const database = await createTestDatabase();
        const config: StoreConfig = { kind: 'postgres', url: database.url, maxConnections: 20 };
        const store = await openStore(config);
        return {
          store,
          config,
          async cleanup() {
            await store.close();
            await database.drop();
          },
        };
      },
    });
  }
  return backends;
}
