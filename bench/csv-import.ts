/**
 * CSV import benchmark: 10,000 port forwards imported in one transaction on PostgreSQL (and
 * PGlite), against two baselines measured in the same run on the same store:
 *   - createPortForward one call at a time (the path a script without the import would take),
 *     timed over BENCH_API_SAMPLE calls and expressed per row;
 *   - a bare bulk INSERT of the same rows (the floor: what writing them costs at all).
 *
 *   npx tsx bench/csv-import.ts     (BENCH_ROWS=10000 BENCH_API_SAMPLE=300)
 */
import 'reflect-metadata';
import { sql } from 'drizzle-orm';
import postgres from 'postgres';
import { HostService, InstanceService, PoolService, createContainer, openStore, systemActor, type Store } from '../core/server/src/index.js';
import { PortForwardImportService } from '../core/server/src/services/port-forward-import-service.js';
import { PortForwardService } from '../core/server/src/services/port-forward-service.js';
import { portForwards } from '../core/server/src/db/schema.js';
import { newId } from '../core/server/src/support/ids.js';

const ROWS = Number(process.env.BENCH_ROWS ?? 10_000);
const API_SAMPLE = Number(process.env.BENCH_API_SAMPLE ?? 300);
const PG_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

async function seconds<T>(work: () => Promise<T>): Promise<[number, T]> {
  const start = process.hrtime.bigint();
  const result = await work();
  return [Number(process.hrtime.bigint() - start) / 1e9, result];
}

async function benchStore(label: string, store: Store) {
  const container = createContainer(store);
  const actor = systemActor('bench');
  await store.db.execute(sql`insert into users (id, name, role) values (${actor.userId}, 'bench-system', 'admin') on conflict do nothing`);
  const host = await container.resolve(HostService).create(actor, { name: `bench-${label}`, backend: 'linux', portRangeStart: 1024, portRangeEnd: 65535 });
  await container.resolve(PoolService).create(actor, { name: `bench-${label}`, kind: 'private', network: 'br-bench', cidr: '10.200.0.0/16' });
  // 100 instances, 100 rows each
  const addresses: string[] = [];
  const instances = container.resolve(InstanceService);
  for (let i = 0; i < 100; i++) {
    const vm = await instances.create(actor, { hostId: host.id, name: `vm-${i}`, nics: [{ network: 'br-bench' }] });
    const [nic] = await instances.nicsOf([vm.id]);
    const [addr] = await container.resolve(PoolService).addressesOfNics([nic!.id]);
    addresses.push(addr!.address);
  }
  const csvRows = Array.from({ length: ROWS }, (_, i) => `tcp,${20000 + i},${addresses[i % 100]},${1 + (i % 60000)},row ${i}`);
  const csv = `protocol,host_port,vm_ip,vm_port,note\n${csvRows.join('\n')}\n`;

  const importer = container.resolve(PortForwardImportService);
  const [dry] = await seconds(() => importer.import(actor, { hostId: host.id, csv, dryRun: true }));
  const [real, result] = await seconds(() => importer.import(actor, { hostId: host.id, csv }));
  const created = result.rows.filter((r) => r.action === 'create').length;

  // baseline 1: one API call per forward, on ports the import did not use
  const forwards = container.resolve(PortForwardService);
  const vmIds = (await instances.list(actor, {}, { limit: 1 }))[0]!.id;
  const [api] = await seconds(async () => {
    for (let i = 0; i < API_SAMPLE; i++) await forwards.create(actor, { instanceId: vmIds, protocol: 'udp', hostPort: String(40000 + i), targetPort: '53' });
  });
  const apiPerRow = api / API_SAMPLE;

  // baseline 2: the same rows bulk-inserted by hand on a second host (same table, constraint and batch size)
  const host2 = await container.resolve(HostService).create(actor, { name: `bench-${label}-floor`, backend: 'linux' });
  const planned = result.rows.map((r) => ({ ...r.forward!, id: newId(), hostId: host2.id }));
  const [floor] = await seconds(() =>
    store.db.transaction(async (tx) => {
      for (let i = 0; i < planned.length; i += 500) await tx.insert(portForwards).values(planned.slice(i, i + 500));
    }),
  );
  return { label, created, dry, real, apiPerRow, floor };
}

const results = [];
{
  const store = await openStore({ kind: 'pglite' });
  results.push(await benchStore('PGlite', store));
  await store.close();
}
{
  const dbName = `gatehouse_bench_csv_${process.pid}`;
  const admin = postgres(PG_URL, { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`create database "${dbName}"`);
    const u = new URL(PG_URL);
    u.pathname = `/${dbName}`;
    const store = await openStore({ kind: 'postgres', url: u.toString() });
    try {
      results.push(await benchStore('PostgreSQL', store));
    } finally {
      await store.close();
      await admin.unsafe(`drop database if exists "${dbName}" with (force)`);
    }
  } catch (err) {
    console.error(`PostgreSQL unavailable at ${PG_URL}: ${(err as Error).message}`);
  } finally {
    await admin.end();
  }
}

console.log(`\nCSV import benchmark: ${ROWS} rows, one transaction`);
console.log('store       created  dry-run s  import s  rows/s   API one-by-one s (extrapolated)  speed-up vs API  bulk-insert floor s  import/floor');
for (const r of results) {
  const apiTotal = r.apiPerRow * ROWS;
  console.log(
    `${r.label.padEnd(11)} ${String(r.created).padStart(7)}  ${r.dry.toFixed(2).padStart(9)}  ${r.real.toFixed(2).padStart(8)}  ${(ROWS / r.real).toFixed(0).padStart(6)}   ${apiTotal.toFixed(1).padStart(31)}  ${(apiTotal / r.real).toFixed(1).padStart(15)}  ${r.floor.toFixed(2).padStart(19)}  ${(r.real / r.floor).toFixed(1).padStart(12)}`,
  );
}
