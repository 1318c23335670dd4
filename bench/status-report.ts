/**
 * Object status report benchmark (issue 20, row "status reports of 60,000 objects", target < 1 s):
 * an agent reports 60,000 port forwards PENDING → APPLIED in reports of 10,000 (the most one
 * report may list), on PGlite and PostgreSQL. The row's figure is the service's time for the six
 * reports of freshly created forwards until the last change's `objectStatus` event arrived (on
 * PostgreSQL events travel as NOTIFYs, many changes to one; counted until the last one comes
 * back). Measured in the same run on the same rows:
 *
 * - the old per-row path (the baseline): read the reported rows, then one UPDATE per object whose
 *   status changed, on the table as it was stored before (fillfactor 100, packed by VACUUM FULL);
 *   it publishes no events, which only flatters it;
 * - the service on that packed fillfactor-100 table: every update then needs new index entries
 *   and an exclusion-constraint check (what the schema's fillfactor 50 avoids);
 * - both paths re-reporting the same statuses (nothing changes: what an agent sends after every apply).
 *
 *   npx tsx bench/status-report.ts     (BENCH_OBJECTS=60000 BENCH_REPORT=10000)
 *
 * For a profile of the measured reports alone: `node --cpu-prof --cpu-prof-dir <dir> --import tsx
 * bench/status-report.ts` with BENCH_STATUS_WINDOWS=<dir>, which gets each store's window of the
 * six reports (`<store>-windows.json`, for `bench/cpuprofile-top.ts <profile> --windows <file>`).
 */
import 'reflect-metadata';
import { and, eq, inArray, lte, sql } from 'drizzle-orm';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import postgres from 'postgres';
import { openStore, rowsOf, type Database, type Store } from '../core/server/src/index.js';
import { seedForwards } from '../core/server/src/testing/seed.js';
import { portForwards } from '../core/server/src/db/schema.js';
import { ObjectStatusService } from '../core/server/src/services/object-status-service.js';
import { statusBatchSize, type ObjectStatusBatch } from '../core/server/src/events/event-payloads.js';

const OBJECTS = Number(process.env.BENCH_OBJECTS ?? 60_000);
const REPORT = Number(process.env.BENCH_REPORT ?? 10_000);
const PG_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const WINDOWS = process.env.BENCH_STATUS_WINDOWS;

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
  const {
    container,
    actor,
    hostId,
    forwardIds: ids,
    revision,
  } = await seedForwards(store, {
    label: `bench-${label}`,
    network: 'br-bench',
    cidr: '10.200.0.0/16',
    count: OBJECTS,
  });
  const reports: string[][] = [];
  for (let i = 0; i < ids.length; i += REPORT) reports.push(ids.slice(i, i + REPORT));
  const applied = async () =>
    Number(
      rowsOf<{ n: number }>(
        await store.db.execute(sql`select count(*)::int as n from port_forwards where host_id = ${hostId}::uuid and status = 'applied'`),
      )[0]!.n,
    );
  const check = async (what: string, changed: number) => {
    const n = await applied();
    if (changed !== ids.length || n !== ids.length) throw new Error(`${label} ${what}: changed ${changed}, applied ${n}, expected ${ids.length}`);
  };

  const service = container.resolve(ObjectStatusService);
  const reportAll = async (expectChanges: boolean) => {
    let n = 0;
    for (const report of reports) {
      const result = await service.report(actor, {
        hostId: hostId,
        revision,
        objects: report.map((objectId) => ({ objectType: 'port_forward' as const, objectId, status: 'applied' as const })),
      });
      if (!expectChanges && result.changes.length > 0) throw new Error(`${label}: an unchanged report changed ${result.changes.length} objects`);
      n += result.changes.length;
    }
    return n;
  };
  const resetPending = async () => {
    await store.db.execute(sql`update port_forwards set status = 'pending', status_error = null where host_id = ${hostId}::uuid`);
    await store.db.execute(sql`vacuum full port_forwards`);
  };

  // the service on the forwards as created; on PostgreSQL its events go out as NOTIFYs after the
  // commit: count the changes they carry back (on PGlite they are dispatched in process before
  // `report` returns)
  let received = 0;
  let lastEvent = process.hrtime.bigint();
  const onEvent = (event: Event) => {
    received += statusBatchSize((event as CustomEvent<ObjectStatusBatch>).detail);
    lastEvent = process.hrtime.bigint();
  };
  store.eventTarget?.addEventListener('objectStatus', onEvent);
  const eventsArrived = async (expected: number) => {
    if (!store.eventTarget) return;
    const deadline = Date.now() + 600_000;
    while (received < expected && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    if (received < expected) throw new Error(`${label}: ${received} of ${expected} changes arrived as events`);
  };
  const started = process.hrtime.bigint();
  const [newApply, newChanged] = await seconds(() => reportAll(true));
  await check('set-based', newChanged);
  await eventsArrived(ids.length);
  const total = store.eventTarget ? Number(lastEvent - started) / 1e9 : newApply;
  // the monotonic clock in µs, as CPU profiles' timestamps
  if (WINDOWS)
    await writeFile(
      join(WINDOWS, `${label}-windows.json`),
      JSON.stringify([[Number(started / 1000n), Number((started + BigInt(Math.round(total * 1e9))) / 1000n)]]),
    );
  store.eventTarget?.removeEventListener('objectStatus', onEvent);
  const [newAgain] = await seconds(() => reportAll(false));

  // the table as it was stored before: fillfactor 100, pages packed
  await store.db.execute(sql`alter table port_forwards set (fillfactor = 100)`);
  await resetPending();
  const [oldApply, oldChanged] = await seconds(async () => {
    let n = 0;
    for (const report of reports) n += await reportPerRow(store.db, hostId, revision, report);
    return n;
  });
  await check('per-row', oldChanged);
  const [oldAgain] = await seconds(async () => {
    for (const report of reports) await reportPerRow(store.db, hostId, revision, report);
  });
  await resetPending();
  const [packedApply, packedChanged] = await seconds(() => reportAll(true));
  await check('set-based, fillfactor 100', packedChanged);
  return { label, oldApply, newApply, total, oldAgain, newAgain, packedApply };
}

const loadBefore = (await readFile('/proc/loadavg', 'utf8').catch(() => '? ? ?')).split(' ').slice(0, 3).join(' ');
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

const load = (await readFile('/proc/loadavg', 'utf8').catch(() => '? ? ?')).split(' ').slice(0, 3).join(' ');
console.log(
  `\nObject status report benchmark: ${OBJECTS} port forwards PENDING → APPLIED in reports of ${REPORT} (load average ${loadBefore} before, ${load} after)`,
);
console.log('store       per-row s  set-based s  speed-up  objects/s  total s | unchanged again: per-row s  set-based s | set-based, fillfactor 100 s');
for (const r of results) {
  console.log(
    `${r.label.padEnd(11)} ${r.oldApply.toFixed(2).padStart(9)}  ${r.newApply.toFixed(2).padStart(11)}  ${(r.oldApply / r.newApply).toFixed(1).padStart(7)}x  ${(OBJECTS / r.newApply).toFixed(0).padStart(9)}  ${r.total.toFixed(2).padStart(7)} | ${r.oldAgain.toFixed(2).padStart(25)}  ${r.newAgain.toFixed(2).padStart(11)} | ${r.packedApply.toFixed(2).padStart(27)}`,
  );
}
const busy = Number(load.split(' ')[0]) > 2 || Number(loadBefore.split(' ')[0]) > 2;
for (const r of results) {
  console.log(
    `row (issue 20) status reports of ${OBJECTS.toLocaleString('en')} objects, ${r.label}: ${r.total.toFixed(2)} s until the last change's event (reports ${r.newApply.toFixed(2)} s), target < 1 s: ${r.total < 1 ? 'MET' : 'NOT MET'}; per-row baseline in the same run ${r.oldApply.toFixed(2)} s (${(r.oldApply / r.total).toFixed(1)}x); load average ${loadBefore.split(' ')[0]} → ${load.split(' ')[0]}${busy ? ' (UNRELIABLE: load average above the 2 cores)' : ''}`,
  );
}
