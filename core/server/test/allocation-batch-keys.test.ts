/**
 * Two controllers' allocation batches holding the same idempotency keys in opposite orders (a
 * client that retried its requests against the other replica): each batch inserts its rows in key
 * order, so the second waits for the first instead of deadlocking with it, and each key still
 * gives one allocation, the same to both. PostgreSQL only (PGlite has one connection, no
 * concurrent transactions to deadlock).
 *
 * A test trigger pauses 300 ms before each keyed row is inserted, so the two statements overlap
 * row by row: inserted in request order, controller 1 would hold key A and wait for B while
 * controller 2 holds B and waits for A, and PostgreSQL would end one of them with a deadlock.
 */
import { sql } from 'drizzle-orm';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { systemActor } from '../src/auth/actor.js';
import { openStore, rowsOf, type Store } from '../src/db/database.js';
import { createContainer } from '../src/server.js';
import { PoolService, type Allocation } from '../src/services/pool-service.js';
import { createTestApi } from '../src/testing/api.js';
import { createHost, createNics, createPool } from '../src/testing/fixtures.js';
import { createTestDatabase, postgresReachable, REQUIRE_SYSTEM, type TestDatabase } from '../src/testing/stores.js';

const reachable = (await postgresReachable()) || REQUIRE_SYSTEM;

describe.skipIf(!reachable)('allocation batches of two controllers with the same keys on PostgreSQL', () => {
  let database: TestDatabase;
  const stores: Store[] = [];
  let nics: string[];

  beforeAll(async () => {
    database = await createTestDatabase();
    for (let i = 0; i < 2; i++) stores.push(await openStore({ kind: 'postgres', url: database.url, maxConnections: 4 }));
    const api = await createTestApi(stores[0]!);
    const hostId = await createHost(api.admin, 'keys-host');
    await createPool(api.admin, { name: 'keys', kind: 'PRIVATE', network: 'br-k', cidr: '10.61.0.0/24', gateway: '10.61.0.1' });
    nics = await createNics(api.admin, hostId, undefined, 'keys-vm', 'br-k', 2);
    await stores[0]!.db.execute(sql`
      create function gatehouse_test_pause() returns trigger language plpgsql as $$
      begin
        if new.idempotency_key like 'order-%' then perform pg_sleep(0.3); end if;
        return new;
      end $$`);
    await stores[0]!.db.execute(sql`create trigger gatehouse_test_pause before insert on ip_allocations for each row execute function gatehouse_test_pause()`);
  });

  afterAll(async () => {
    for (const store of stores) await store.close();
    await database?.drop();
  });

  it('gives each key one allocation, the same to both controllers, and neither batch fails', async () => {
    const deadlocks = async () =>
      Number(rowsOf<{ n: number }>(await stores[0]!.db.execute(sql`select deadlocks as n from pg_stat_database where datname = current_database()`))[0]!.n);
    const before = await deadlocks();
    const requests = [
      { key: 'order-a', nicId: nics[0]! },
      { key: 'order-b', nicId: nics[1]! },
    ];
    // each controller issues its two requests in one turn (one batch): controller 1 as A, B and controller 2 as B, A
    const burst = (store: Store, order: typeof requests) => {
      const pools = createContainer(store).resolve(PoolService);
      return Promise.allSettled(order.map((r) => pools.allocate(systemActor('keys'), { nicId: r.nicId, idempotencyKey: r.key })));
    };
    const [first, second] = await Promise.all([burst(stores[0]!, requests), burst(stores[1]!, [...requests].reverse())]);
    const answers = [...first, ...second];
    expect(answers.filter((a) => a.status === 'rejected').map((a) => String((a as PromiseRejectedResult).reason))).toEqual([]);
    const byKey = new Map<string, Set<string>>();
    for (const [i, a] of answers.entries()) {
      const key = (i < 2 ? requests[i] : [...requests].reverse()[i - 2])!.key;
      const row = (a as PromiseFulfilledResult<Allocation>).value;
      expect(row.nicId).toBe(requests.find((r) => r.key === key)!.nicId);
      byKey.set(key, (byKey.get(key) ?? new Set()).add(row.id));
    }
    expect([...byKey.values()].map((ids) => ids.size)).toEqual([1, 1]);
    const rows = rowsOf<{ n: number }>(
      await stores[0]!.db.execute(sql`select count(*)::int as n from ip_allocations where idempotency_key in ('order-a', 'order-b')`),
    );
    expect(Number(rows[0]!.n)).toBe(2);
    // the server's own count: no deadlock was detected. A backend's statistics reach the view at the
    // latest when it exits, so both controllers' connections are closed first and their exit awaited.
    for (const store of stores.splice(0)) await store.close();
    const admin = postgres(database.url, { max: 1, onnotice: () => {} });
    try {
      for (let i = 0; i < 100; i++) {
        const left = await admin<
          { n: number }[]
        >`select count(*)::int as n from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()`;
        if (left[0]!.n === 0) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      await admin`select pg_stat_clear_snapshot()`;
      const deadlocks = (await admin<{ deadlocks: number }[]>`select deadlocks::int from pg_stat_database where datname = current_database()`)[0]!.deadlocks;
      expect(deadlocks).toBe(before);
    } finally {
      await admin.end();
    }
  });
});
