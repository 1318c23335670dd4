/**
 * The controller of bench/traffic.ts, in its own process so its CPU and RSS are its own: starts
 * on the store named by BENCH_TRAFFIC_STORE (pglite in BENCH_TRAFFIC_DATA_DIR, or postgres at
 * BENCH_TRAFFIC_DB_URL), sends `{ url, secret }` to the parent over IPC, and answers `rows` with
 * the rows inserted, updated and deleted so far (pg_stat_user_tables), and `memory` with
 * `process.memoryUsage()` (what an RSS change is made of: the JS heap, or memory outside it), and
 * `gcs` with the memory right after each full collection (the live heap).
 */
import { PerformanceObserver, constants } from 'node:perf_hooks';
import { sql } from 'drizzle-orm';
import { startController } from '../core/server/src/index.js';

const kind = process.env.BENCH_TRAFFIC_STORE === 'postgres' ? 'postgres' : 'pglite';
const controller = await startController({
  store: kind === 'postgres' ? { kind, url: process.env.BENCH_TRAFFIC_DB_URL! } : { kind, dataDir: process.env.BENCH_TRAFFIC_DATA_DIR },
  port: 0,
  host: '127.0.0.1',
});

async function rowsWritten(): Promise<number> {
  const db = controller.store.db as unknown as { execute(q: unknown): Promise<unknown> };
  // this backend's pending counts first (PGlite has no other backend to flush them)
  if (kind === 'pglite') await db.execute(sql`select pg_stat_force_next_flush()`);
  const result = await db.execute(sql`select coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)::float8 as n from pg_stat_user_tables`);
  const rows = (Array.isArray(result) ? result : (result as { rows: unknown[] }).rows) as { n: number | string }[];
  return Number(rows[0]!.n);
}

// what is left after each full (mark-compact) collection: the live heap, which a leak grows and the collector's saw-tooth does not
const afterMajorGc: { at: number; heapUsed: number; rss: number; external: number }[] = [];
new PerformanceObserver((list) => {
  for (const entry of list.getEntries())
    if ((entry as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) {
      const m = process.memoryUsage();
      afterMajorGc.push({ at: Date.now(), heapUsed: m.heapUsed, rss: m.rss, external: m.external });
    }
}).observe({ entryTypes: ['gc'] });

process.on('message', (m: { type: string }) => {
  if (m.type === 'gcs') process.send!({ type: 'gcs', list: afterMajorGc });
  if (m.type === 'rows')
    void rowsWritten().then(
      (n) => process.send!({ type: 'rows', n }),
      (e: Error) => process.send!({ type: 'rows', n: -1, error: e.message }),
    );
  if (m.type === 'memory') process.send!({ type: 'memory', ...process.memoryUsage() });
  if (m.type === 'stop') void controller.close().then(() => process.exit(0));
});
process.send!({ type: 'ready', url: controller.url, secret: controller.bootstrapSecret });
