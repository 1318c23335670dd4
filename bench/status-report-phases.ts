/**
 * Where one status report's time goes, per phase, on PGlite and PostgreSQL (a diagnostic beside
 * bench/status-report.ts): 60,000 forwards seeded the same way, then reports of 10,000
 * PENDING → APPLIED with the report's statement run under EXPLAIN ANALYZE (rolled back), then the
 * reports for real with their phases timed, and NOTIFY alone.
 *
 *   npx tsx bench/status-report-phases.ts [pglite|postgres]
 */
import 'reflect-metadata';
import { sql } from 'drizzle-orm';
import postgres from 'postgres';
import { openStore, rowsOf, type Store } from '../core/server/src/index.js';
import { seedForwards } from '../core/server/src/testing/seed.js';
import { ObjectStatusService, REPORT_PLANNER_SETTINGS, reportStatement } from '../core/server/src/services/object-status-service.js';
import { statusBatchSize, statusBatches, type ObjectStatusBatch } from '../core/server/src/events/event-payloads.js';

const OBJECTS = Number(process.env.BENCH_OBJECTS ?? 60_000);
const REPORT = Number(process.env.BENCH_REPORT ?? 10_000);
const PG_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const which = process.argv[2] ?? 'pglite';

const ms = (start: bigint) => (Number(process.hrtime.bigint() - start) / 1e6).toFixed(1);

async function run(label: string, store: Store) {
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
  const service = container.resolve(ObjectStatusService);
  const objectsOf = (slice: string[]) => slice.map((objectId) => ({ objectType: 'port_forward' as const, objectId, status: 'applied' as const }));

  // the statement's plan and server time, rolled back: the service's statement under its planner settings
  const report0 = ids.slice(0, REPORT);
  await store.db
    .transaction(async (tx) => {
      await tx.execute(REPORT_PLANNER_SETTINGS);
      const statement = reportStatement(
        'port_forward',
        hostId,
        revision,
        report0.map((id) => ({ id, status: 'applied' as const, error: null })),
        crypto.randomUUID(),
      );
      const r = await tx.execute(sql`explain (analyze, buffers, timing off) ${statement}`);
      console.log(`${label} EXPLAIN ANALYZE of the report statement (${REPORT} rows):`);
      for (const row of rowsOf<Record<string, string>>(r)) console.log('  ' + Object.values(row)[0]);
      throw new Error('rollback');
    })
    .catch((err: Error) => {
      if (err.message !== 'rollback') throw err;
    });

  // the reports for real, phase by phase: the service's own statements are timed by wrapping execute
  let received = 0;
  store.eventTarget?.addEventListener('objectStatus', (e) => (received += statusBatchSize((e as CustomEvent<ObjectStatusBatch>).detail)));
  const started = process.hrtime.bigint();
  for (let i = 0; i < ids.length; i += REPORT) {
    const t0 = process.hrtime.bigint();
    const result = await service.report(actor, { hostId: hostId, revision, objects: objectsOf(ids.slice(i, i + REPORT)) });
    const t1 = process.hrtime.bigint();
    const batches = statusBatches(result.changes);
    console.log(
      `${label} report ${i / REPORT + 1}: ${ms(t0)} ms (${result.changes.length} changes, ${batches.length} event batches; statusBatches again ${ms(t1)} ms)`,
    );
  }
  const reportsDone = process.hrtime.bigint();
  if (store.eventTarget) {
    while (received < ids.length) await new Promise((r) => setTimeout(r, 5));
  }
  console.log(`${label}: reports ${ms(started)} ms to the last event; the reports alone ${(Number(reportsDone - started) / 1e6).toFixed(1)} ms`);
  const t2 = process.hrtime.bigint();
  for (let i = 0; i < ids.length; i += REPORT) await service.report(actor, { hostId: hostId, revision, objects: objectsOf(ids.slice(i, i + REPORT)) });
  console.log(`${label}: unchanged again ${ms(t2)} ms`);
}

if (which === 'pglite') {
  const store = await openStore({ kind: 'pglite' });
  await run('PGlite', store);
  await store.close();
} else {
  const dbName = `gatehouse_bench_phases_${process.pid}`;
  const admin = postgres(PG_URL, { max: 1, onnotice: () => {} });
  await admin.unsafe(`create database "${dbName}"`);
  try {
    const u = new URL(PG_URL);
    u.pathname = `/${dbName}`;
    const store = await openStore({ kind: 'postgres', url: u.toString() });
    try {
      await run('PostgreSQL', store);
      // NOTIFY alone: 640 payloads of ~6,900 bytes, as the events of 60,000 changes, on a connection of its own
      const listen = postgres(u.toString(), { max: 1, onnotice: () => {} });
      const notifier = postgres(u.toString(), { max: 1, onnotice: () => {} });
      let heard = 0;
      await listen.listen('phases_probe', () => heard++);
      const payload = 'x'.repeat(6900);
      const t0 = process.hrtime.bigint();
      for (let k = 0; k < 640; k += 18)
        await notifier`select pg_notify('phases_probe', t.text || ${k}::text || n::text) from json_array_elements_text(${JSON.stringify(Array.from({ length: Math.min(18, 640 - k) }, () => payload))}::text::json) with ordinality as t(text, n)`;
      const sent = process.hrtime.bigint();
      while (heard < 640) await new Promise((r) => setTimeout(r, 1));
      console.log(`PostgreSQL: 640 NOTIFYs of 6,900 bytes: sent in ${(Number(sent - t0) / 1e6).toFixed(1)} ms, all heard after ${ms(t0)} ms`);
      await listen.end();
      await notifier.end();
    } finally {
      await store.close();
    }
  } finally {
    await admin.unsafe(`drop database if exists "${dbName}" with (force)`);
    await admin.end();
  }
}
