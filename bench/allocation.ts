/**
 * Allocation benchmark: address allocations per second from one pool through PoolService (slot
 * claim, quota, host revision, audit entry, one transaction each) on PGlite and on PostgreSQL.
 * Baseline, measured in the same run on the same store with the same concurrency: a bare insert of
 * one row per transaction into a table with the same unique constraint — the floor any allocator
 * pays (on PostgreSQL mostly the commit).
 *
 * Rows per store:
 * - sequential: one client;
 * - 16 clients, one instance: every allocation is for one NIC, so all of them bump the same
 *   host's desired revision and count against the same owner's quota: those two rows are written
 *   by every transaction and held until it commits;
 * - 16 clients, 16 instances: each client allocates for its own tenant's instance on its own host,
 *   all from the one pool (a burst across hosts): what the pool itself allows.
 *
 * The issue-20 row is the last one on PostgreSQL: target ≥ 1,000 allocations/s. The bench also
 * counts the statements (round trips, BEGIN and COMMIT included) of one allocation on PostgreSQL.
 *
 *   npm run bench            (BENCH_ALLOCATIONS=1000 BENCH_CONCURRENCY=16 by default)
 *
 * Profiling: BENCH_ALLOCATION_STORES=postgres (or pglite) runs one store only;
 * BENCH_ALLOCATION_WINDOWS=<file.json> writes the [start, end] (µs, monotonic clock) of every timed
 * allocation row, for `node --cpu-prof` and `npx tsx bench/cpuprofile-top.ts <profile> --windows <file>`.
 */
import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { sql } from 'drizzle-orm';
import { drizzle } from 'drizzle-orm/postgres-js';
import postgres from 'postgres';
import { HostService, InstanceService, PoolService, createContainer, openStore, rowsOf, systemActor, type Store } from '../core/server/src/index.js';

const N = Number(process.env.BENCH_ALLOCATIONS ?? 1000);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 16);
const PG_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const TARGET = 1000;
const STORES = (process.env.BENCH_ALLOCATION_STORES ?? 'pglite,postgres').split(',');
const WINDOWS_FILE = process.env.BENCH_ALLOCATION_WINDOWS;
const windows: [number, number][] = [];
const monotonicMicros = () => Number(process.hrtime.bigint() / 1000n);

async function timed(count: number, workers: readonly ((i: number) => Promise<unknown>)[]): Promise<number> {
  let next = 0;
  const start = process.hrtime.bigint();
  await Promise.all(
    workers.map(async (op) => {
      while (next < count) await op(next++);
    }),
  );
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  return count / seconds;
}

interface Row {
  store: string;
  mode: string;
  rate: number;
  baseline: number;
  /** CPU ms per allocation: this process (PGlite included), and PostgreSQL's backends of the bench database. */
  nodeCpuMs: number;
  pgCpuMs: number | null;
}

const TICKS_PER_S = 100; // USER_HZ on Linux

/** CPU seconds (user + system) the server processes of `database` used so far; null where /proc cannot be read. */
async function backendCpuSeconds(store: Store, database: string | null): Promise<number | null> {
  if (database === null) return null;
  const pids = rowsOf<{ pid: number }>(await store.db.execute(sql`select pid from pg_stat_activity where datname = ${database}`)).map((r) => r.pid);
  let ticks = 0;
  for (const pid of pids) {
    try {
      // fields after the command's closing parenthesis: state is the 3rd field, utime the 14th, stime the 15th
      const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch {
      return null;
    }
  }
  return ticks / TICKS_PER_S;
}

/** NICs on `network`, one per instance; `spread`: each instance has its own owner and host. */
async function nicsFor(store: Store, network: string, count: number, spread: boolean): Promise<string[]> {
  const container = createContainer(store);
  const actor = systemActor('bench');
  const hosts = container.resolve(HostService);
  const instances = container.resolve(InstanceService);
  const nics: string[] = [];
  let host: string | undefined;
  for (let i = 0; i < count; i++) {
    let ownerId: string | undefined;
    if (spread) {
      ownerId = randomUUID();
      await store.db.execute(sql`insert into users (id, name, role) values (${ownerId}, ${`tenant-${ownerId}`}, 'user')`);
    }
    if (spread || host === undefined) host = (await hosts.create(actor, { name: `bench-${randomUUID().slice(0, 8)}`, backend: 'linux' })).id;
    const vm = await instances.create(actor, { hostId: host, ownerId, name: `vm-${randomUUID().slice(0, 8)}`, nics: [{ network, allocate: [] }] });
    nics.push((await instances.nicsOf([vm.id]))[0]!.id);
  }
  return nics;
}

async function benchStore(name: string, store: Store, database: string | null): Promise<Row[]> {
  const container = createContainer(store);
  const actor = systemActor('bench');
  const pools = container.resolve(PoolService);
  // the system actor creates the objects; its user row must exist for the foreign keys
  await store.db.execute(sql`insert into users (id, name, role) values (${actor.userId}, 'bench-system', 'admin') on conflict do nothing`);
  await store.db.execute(sql.raw(`create table if not exists bench_baseline (pool_id uuid not null, slot numeric(40,0) not null, unique (pool_id, slot))`));
  const rows: Row[] = [];
  for (const [mode, clients, instances] of [
    ['sequential', 1, 1],
    [`${CONCURRENCY} clients, one instance`, CONCURRENCY, 1],
    [`${CONCURRENCY} clients, ${CONCURRENCY} instances`, CONCURRENCY, CONCURRENCY],
  ] as const) {
    const tag = randomUUID().slice(0, 8);
    await pools.create(actor, { name: `pool-${tag}`, kind: 'private', network: `br-${tag}`, cidr: '10.128.0.0/16' });
    const nics = await nicsFor(store, `br-${tag}`, instances, instances > 1);
    const baselinePool = randomUUID();
    const insert = (i: number) => store.db.transaction(async (tx) => tx.execute(sql`insert into bench_baseline values (${baselinePool}, ${i})`));
    const baseline = await timed(
      N,
      Array.from({ length: clients }, () => insert),
    );
    const from = monotonicMicros();
    const cpuBefore = process.cpuUsage();
    const pgBefore = await backendCpuSeconds(store, database);
    const rate = await timed(
      N,
      Array.from({ length: clients }, (_, w) => () => pools.allocate(actor, { nicId: nics[w % nics.length]! })),
    );
    const cpu = process.cpuUsage(cpuBefore);
    const pgAfter = await backendCpuSeconds(store, database);
    windows.push([from, monotonicMicros()]);
    rows.push({
      store: name,
      mode,
      rate,
      baseline,
      nodeCpuMs: (cpu.user + cpu.system) / 1000 / N,
      pgCpuMs: pgBefore === null || pgAfter === null ? null : ((pgAfter - pgBefore) * 1000) / N,
    });
  }
  console.error(`${name}: done`);
  return rows;
}

/**
 * Statements one allocation sends to PostgreSQL, counted with the driver's debug hook: one
 * allocation alone, and the average over a burst of CONCURRENCY clients on as many instances.
 */
async function statementsPerAllocation(url: string): Promise<{ count: number; statements: string[]; concurrent: number }> {
  const seen: string[] = [];
  const client = postgres(url, { max: CONCURRENCY, onnotice: () => {}, debug: (_connection: number, query: string) => void seen.push(query) });
  const store: Store = { db: drizzle({ client }) as unknown as Store['db'], kind: 'postgres', close: () => client.end() };
  try {
    const container = createContainer(store);
    const actor = systemActor('bench-count');
    const tag = randomUUID().slice(0, 8);
    await container.resolve(PoolService).create(actor, { name: `pool-${tag}`, kind: 'private', network: `br-${tag}`, cidr: '10.129.0.0/16' });
    const nics = await nicsFor(store, `br-${tag}`, CONCURRENCY, true);
    const pools = container.resolve(PoolService);
    await pools.allocate(actor, { nicId: nics[0]! });
    seen.length = 0;
    await pools.allocate(actor, { nicId: nics[0]! });
    const single = seen.map((q) => q.replace(/\s+/g, ' ').trim().slice(0, 60));
    const burst = CONCURRENCY * 20;
    seen.length = 0;
    await timed(
      burst,
      nics.map((nicId) => () => pools.allocate(actor, { nicId })),
    );
    return { count: single.length, statements: single, concurrent: seen.length / burst };
  } finally {
    await store.close();
  }
}

const results: Row[] = [];
const loadBefore = loadavg();
let counted: Awaited<ReturnType<typeof statementsPerAllocation>> | undefined;

if (STORES.includes('pglite')) {
  const store = await openStore({ kind: 'pglite' });
  results.push(...(await benchStore('PGlite', store, null)));
  await store.close();
}

if (STORES.includes('postgres')) {
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
    const store = await openStore({ kind: 'postgres', url, maxConnections: CONCURRENCY });
    try {
      results.push(...(await benchStore('PostgreSQL', store, dbName)));
      counted = await statementsPerAllocation(url);
    } finally {
      await store.close();
      await admin.unsafe(`drop database if exists "${dbName}" with (force)`);
    }
  }
  await admin.end();
}

const loadAfter = loadavg();
if (WINDOWS_FILE) writeFileSync(WINDOWS_FILE, JSON.stringify(windows));
console.log(`\nallocation benchmark: ${N} allocations per row, lowest-free from one /16 pool`);
console.log(`load average ${loadBefore.map((l) => l.toFixed(2)).join(' ')} before, ${loadAfter.map((l) => l.toFixed(2)).join(' ')} after`);
console.log('store       mode                        allocations/s   baseline inserts/s   ratio (alloc/baseline)   CPU ms/allocation: node  PostgreSQL');
for (const r of results) {
  console.log(
    `${r.store.padEnd(11)} ${r.mode.padEnd(27)} ${r.rate.toFixed(0).padStart(13)}   ${r.baseline.toFixed(0).padStart(18)}   ${(r.rate / r.baseline).toFixed(2).padStart(8)}` +
      `   ${r.nodeCpuMs.toFixed(2).padStart(28)}  ${r.pgCpuMs === null ? '-' : r.pgCpuMs.toFixed(2).padStart(10)}`,
  );
}
if (counted) {
  console.log(`one allocation on PostgreSQL: ${counted.count} statements (BEGIN and COMMIT included)\n  ${counted.statements.join('\n  ')}`);
  console.log(`${CONCURRENCY} clients on ${CONCURRENCY} instances, PostgreSQL: ${counted.concurrent.toFixed(2)} statements per allocation`);
}
const row = results.find((r) => r.store === 'PostgreSQL' && r.mode === `${CONCURRENCY} clients, ${CONCURRENCY} instances`);
if (row) {
  console.log(
    `issue 20 — address allocations/s, one pool, PostgreSQL, ${CONCURRENCY} clients: ${row.rate.toFixed(0)}/s (target ≥ ${TARGET}: ${row.rate >= TARGET ? 'MET' : 'NOT MET'}), ` +
      `${(row.rate / row.baseline).toFixed(2)} × the bare-insert baseline of the same run`,
  );
}
