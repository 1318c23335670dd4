/**
 * Object status report benchmark: an agent reports 60,000 port forwards PENDING → APPLIED in
 * reports of 10,000 (the most one report may list), on PGlite and PostgreSQL, against the old
 * per-row path measured in the same run on the same rows: read the reported rows, then one UPDATE
 * per object whose status changed. Both paths are also timed re-reporting the same statuses
 * (nothing changes: what an agent sends after every apply). The service publishes one
 * `objectStatus` event per change; on PostgreSQL each is a NOTIFY, counted until the last one comes
 * back. The baseline publishes none, which only flatters it.
 *
 *   npx tsx bench/status-report.ts     (BENCH_OBJECTS=60000 BENCH_REPORT=10000)
 */
import 'reflect-metadata';
import { and, eq, inArray, lte, sql } from 'drizzle-orm';
import postgres from 'postgres';
import {
  HostService,
  InstanceService,
  PoolService,
  createContainer,
  openStore,
  rowsOf,
  systemActor,
  type Database,
  type Store,
} from '../core/server/src/index.js';
import { portForwards } from '../core/server/src/db/schema.js';
import { ObjectStatusService } from '../core/server/src/services/object-status-service.js';
import { PortForwardService } from '../core/server/src/services/port-forward-service.js';

const OBJECTS = Number(process.env.BENCH_OBJECTS ?? 60_000);
const REPORT = Number(process.env.BENCH_REPORT ?? 10_000);
const PG_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

async function seconds<T>(work: () => Promise<T>): Promise<[number, T]> {
  const start = process.hrtime.bigint();
  const result = await work();
  return [Number(process.hrtime.bigint() - start) / 1e9, result];
}

/** The report path before it was set-based (port forwards only): returns how many rows it changed. */
async function reportPerRow(db: Database, hostId: string, revision: number, ids: string[]): Promise<number> {
  return db.transaction(async (tx) => {
    const rows = await tx
      .select({
        id: portForwards.id,
        ownerId: portForwards.ownerId,
        status: portForwards.status,
        statusError: portForwards.statusError,
        changedRevision: portForwards.changedRevision,
      })
      .from(portForwards)
      .where(and(eq(portForwards.hostId, hostId), inArray(portForwards.id, ids)));
    const byId = new Map(rows.map((r) => [r.id, r]));
    let changed = 0;
    for (const id of ids) {
      const row = byId.get(id);
      if (!row || revision < row.changedRevision || (row.status === 'applied' && row.statusError === null)) continue;
      const updated = await tx
        .update(portForwards)
        .set({ status: 'applied', statusError: null })
        .where(and(eq(portForwards.id, id), lte(portForwards.changedRevision, revision)))
        .returning({ id: portForwards.id });
      changed += updated.length;
    }
    return changed;
  });
}

async function benchStore(label: string, store: Store) {
  const container = createContainer(store);
  const actor = systemActor('bench');
  await store.db.execute(sql`insert into users (id, name, role) values (${actor.userId}, 'bench-system', 'admin') on conflict do nothing`);
  const host = await container.resolve(HostService).create(actor, { name: `bench-${label}`, backend: 'linux', portRangeStart: 1024, portRangeEnd: 65535 });
  await container.resolve(PoolService).create(actor, { name: `bench-${label}`, kind: 'private', network: 'br-bench', cidr: '10.200.0.0/16' });
  const vm = await container.resolve(InstanceService).create(actor, { hostId: host.id, name: 'vm-0', nics: [{ network: 'br-bench' }] });
  const first = await container.resolve(PortForwardService).create(actor, { instanceId: vm.id, protocol: 'tcp', hostPort: '2000', targetPort: '22' });
  // the rest copied from the first in one statement, one host port each
  const cloned = await store.db.execute(sql`
    insert into port_forwards (id, host_id, instance_id, owner_id, protocol, host_address, host_port_start, host_port_end, target_address_id,
      target_address, target_port_start, source_cidrs, note, changed_revision, proto_lo, proto_hi, addr_lo, addr_hi)
    select gen_random_uuid(), host_id, instance_id, owner_id, protocol, host_address, 2000 + g, 2000 + g, target_address_id,
      target_address, target_port_start, source_cidrs, note, changed_revision, proto_lo, proto_hi, addr_lo, addr_hi
    from port_forwards, generate_series(1, ${OBJECTS - 1}::int) as g where id = ${first.id}::uuid
    returning id`);
  const ids = [first.id, ...rowsOf<{ id: string }>(cloned).map((r) => r.id)];
  const reports: string[][] = [];
  for (let i = 0; i < ids.length; i += REPORT) reports.push(ids.slice(i, i + REPORT));
  const [{ revision }] = rowsOf<{ revision: number }>(
    await store.db.execute(sql`select desired_revision::int as revision from hosts where id = ${host.id}::uuid`),
  ) as [{ revision: number }];
  const applied = async () =>
    Number(
      rowsOf<{ n: number }>(
        await store.db.execute(sql`select count(*)::int as n from port_forwards where host_id = ${host.id}::uuid and status = 'applied'`),
      )[0]!.n,
    );
  const check = async (what: string, changed: number) => {
    const n = await applied();
    if (changed !== ids.length || n !== ids.length) throw new Error(`${label} ${what}: changed ${changed}, applied ${n}, expected ${ids.length}`);
  };

  // baseline: the per-row path
  const [oldApply, oldChanged] = await seconds(async () => {
    let n = 0;
    for (const report of reports) n += await reportPerRow(store.db, host.id, revision, report);
    return n;
  });
  await check('per-row', oldChanged);
  const [oldAgain] = await seconds(async () => {
    for (const report of reports) await reportPerRow(store.db, host.id, revision, report);
  });
  await store.db.execute(sql`update port_forwards set status = 'pending', status_error = null where host_id = ${host.id}::uuid`);

  // the service; on PostgreSQL its events go out as NOTIFYs after the commit: count them back
  // (on PGlite they are dispatched in process before `report` returns)
  const service = container.resolve(ObjectStatusService);
  let received = 0;
  let lastEvent = process.hrtime.bigint();
  const onEvent = () => {
    received++;
    lastEvent = process.hrtime.bigint();
  };
  store.eventTarget?.addEventListener('objectStatus', onEvent);
  const started = process.hrtime.bigint();
  const [newApply, newChanged] = await seconds(async () => {
    let n = 0;
    for (const report of reports) {
      const result = await service.report(actor, {
        hostId: host.id,
        revision,
        objects: report.map((objectId) => ({ objectType: 'port_forward' as const, objectId, status: 'applied' as const })),
      });
      n += result.changes.length;
    }
    return n;
  });
  await check('set-based', newChanged);
  const eventsArrived = async (expected: number) => {
    if (!store.eventTarget) return;
    const deadline = Date.now() + 600_000;
    while (received < expected && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    if (received < expected) throw new Error(`${label}: ${received} of ${expected} events arrived`);
  };
  await eventsArrived(ids.length);
  const eventsDone = store.eventTarget ? Number(lastEvent - started) / 1e9 : newApply;
  const [newAgain] = await seconds(async () => {
    for (const report of reports) {
      const result = await service.report(actor, {
        hostId: host.id,
        revision,
        objects: report.map((objectId) => ({ objectType: 'port_forward' as const, objectId, status: 'applied' as const })),
      });
      if (result.changes.length > 0) throw new Error(`${label}: an unchanged report changed ${result.changes.length} objects`);
    }
  });

  // what is left is row versions: each updated row gets new index entries (and an exclusion
  // check) unless its page has room for a HOT update; measured once with room left on each page
  // (fillfactor 50, a storage parameter the schema does not set)
  await store.db.execute(sql`alter table port_forwards set (fillfactor = 50)`);
  await store.db.execute(sql`vacuum full port_forwards`);
  await store.db.execute(sql`update port_forwards set status = 'pending', status_error = null where host_id = ${host.id}::uuid`);
  await store.db.execute(sql`vacuum port_forwards`);
  const [hotApply, hotChanged] = await seconds(async () => {
    let n = 0;
    for (const report of reports) {
      const result = await service.report(actor, {
        hostId: host.id,
        revision,
        objects: report.map((objectId) => ({ objectType: 'port_forward' as const, objectId, status: 'applied' as const })),
      });
      n += result.changes.length;
    }
    return n;
  });
  await check('set-based, fillfactor 50', hotChanged);
  await eventsArrived(2 * ids.length);
  store.eventTarget?.removeEventListener('objectStatus', onEvent);
  return { label, oldApply, newApply, eventsDone, oldAgain, newAgain, hotApply };
}

const results = [];
{
  const store = await openStore({ kind: 'pglite' });
  results.push(await benchStore('PGlite', store));
  await store.close();
}
{
  const dbName = `gatehouse_bench_status_${process.pid}`;
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

console.log(`\nObject status report benchmark: ${OBJECTS} port forwards PENDING → APPLIED in reports of ${REPORT}`);
console.log('store       per-row s  set-based s  speed-up  objects/s  last event s  | unchanged again: per-row s  set-based s  | set-based, fillfactor 50 s');
for (const r of results) {
  console.log(
    `${r.label.padEnd(11)} ${r.oldApply.toFixed(2).padStart(9)}  ${r.newApply.toFixed(2).padStart(11)}  ${(r.oldApply / r.newApply).toFixed(1).padStart(7)}x  ${(OBJECTS / r.newApply).toFixed(0).padStart(9)}  ${r.eventsDone.toFixed(2).padStart(12)}  | ${r.oldAgain.toFixed(2).padStart(25)}  ${r.newAgain.toFixed(2).padStart(11)}  | ${r.hotApply.toFixed(2).padStart(26)}`,
  );
}
