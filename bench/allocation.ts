/**
 * Allocation benchmark: sequential and concurrent address allocations per second through
 * PoolService (locks, lowest-free search, audit entry, one transaction each) on PGlite and on
 * PostgreSQL. Baseline, measured in the same run on the same store: a bare insert of one row per
 * transaction into a table with the same unique constraint — the floor any allocator pays.
 *
 *   npm run bench            (BENCH_ALLOCATIONS=1000 BENCH_CONCURRENCY=16 by default)
 */
import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { sql } from 'drizzle-orm';
import postgres from 'postgres';
import { HostService, InstanceService, PoolService, createContainer, openStore, systemActor, type Store, type StoreConfig } from '../core/server/src/index.js';

const N = Number(process.env.BENCH_ALLOCATIONS ?? 1000);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 16);
const PG_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

async function timed(count: number, concurrency: number, op: (i: number) => Promise<unknown>): Promise<number> {
  let next = 0;
  const start = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < count) await op(next++);
    }),
  );
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  return count / seconds;
}

async function benchStore(name: string, config: StoreConfig, store: Store) {
  const container = createContainer(store);
  const actor = systemActor('bench');
  const hosts = container.resolve(HostService);
  const pools = container.resolve(PoolService);
  const instances = container.resolve(InstanceService);
  const host = await hosts.create(actor, { name: `bench-${name}`, backend: 'linux' });
  // the system actor owns the instance; create its user row so quota locks find it
  await store.db.execute(sql`insert into users (id, name, role) values (${actor.userId}, 'bench-system', 'admin') on conflict do nothing`);
  const rows: { mode: string; rate: number; baseline: number }[] = [];
  for (const [mode, concurrency] of [
    ['sequential', 1],
    [`concurrent x${CONCURRENCY}`, CONCURRENCY],
  ] as const) {
    const tag = randomUUID().slice(0, 8);
    await pools.create(actor, { name: `pool-${tag}`, kind: 'private', network: `br-${tag}`, cidr: '10.128.0.0/16' });
    const vm = await instances.create(actor, { hostId: host.id, name: `vm-${tag}`, nics: [{ network: `br-${tag}`, allocate: [] }] });
    const [nic] = await instances.nicsOf([vm.id]);
    await store.db.execute(sql.raw(`create table if not exists bench_baseline (pool_id uuid not null, slot numeric(40,0) not null, unique (pool_id, slot))`));
    const baselinePool = randomUUID();
    const baseline = await timed(N, concurrency, (i) =>
      store.db.transaction(async (tx) => tx.execute(sql`insert into bench_baseline values (${baselinePool}, ${i})`)),
    );
    const rate = await timed(N, concurrency, () => pools.allocate(actor, { nicId: nic!.id }));
    rows.push({ mode, rate, baseline });
  }
  return rows;
}

const results: { store: string; mode: string; rate: number; baseline: number }[] = [];

{
  const store = await openStore({ kind: 'pglite' });
  for (const r of await benchStore('pglite', { kind: 'pglite' }, store)) results.push({ store: 'PGlite', ...r });
  await store.close();
}

{
  const dbName = `gatehouse_bench_${process.pid}`;
  const admin = postgres(PG_URL, { max: 1, onnotice: () => {} });
  let url: string | undefined;
  try {
    await admin.unsafe(`create database "${dbName}"`);
    const u = new URL(PG_URL);
    u.pathname = `/${dbName}`;
    url = u.toString();
  } catch (err) {
    console.error(`PostgreSQL unavailable at ${PG_URL}: ${(err as Error).message}`);
  }
  if (url) {
    const config: StoreConfig = { kind: 'postgres', url, maxConnections: CONCURRENCY };
    const store = await openStore(config);
    try {
      for (const r of await benchStore('postgres', config, store)) results.push({ store: 'PostgreSQL', ...r });
    } finally {
      await store.close();
      await admin.unsafe(`drop database if exists "${dbName}" with (force)`);
    }
  }
  await admin.end();
}

console.log(`\nallocation benchmark: ${N} allocations per row, lowest-free from a /16 pool`);
console.log('store       mode            allocations/s   baseline inserts/s   ratio (alloc/baseline)');
for (const r of results) {
  console.log(
    `${r.store.padEnd(11)} ${r.mode.padEnd(15)} ${r.rate.toFixed(0).padStart(13)}   ${r.baseline.toFixed(0).padStart(18)}   ${(r.rate / r.baseline).toFixed(2).padStart(8)}`,
  );
}
