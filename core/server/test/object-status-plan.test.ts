/**
 * Plan guard for status reports: the statement a report runs per object type
 * (`reportStatement`, under REPORT_PLANNER_SETTINGS) must find each reported object by its
 * primary key, so that the rows it reads grow with the report, never with the host. A host with
 * OBJECTS forwards and as many instances with a NIC each is seeded in bulk; reports of a few to a
 * thousand objects, spread over the table, run under EXPLAIN (ANALYZE, FORMAT JSON) in a
 * transaction that is rolled back, and the rows the plan examined are counted from its own figures
 * (rows a scan returned or filtered out, rows a join compared and dropped, rows a Materialize
 * handed out again, each times its loops). No timing: the count is what it is on any machine.
 *
 * Before this guard a plan passed the 3,000-forward report test while it compared every reported
 * forward with all of the host's (statistics-less estimate of the host and revision condition, a
 * sequential scan materialized once and joined in a nested loop). The same happens on PostgreSQL
 * before its first ANALYZE, so each store is checked without statistics (autovacuum off for the
 * test database's tables) and after ANALYZE. The last case forces a scan and checks that the
 * guard's count sees it.
 */
import { sql, type SQL } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rowsOf, type Store } from '../src/db/database.js';
import type { StatusObjectType } from '../src/events/event-payloads.js';
import { REPORT_PLANNER_SETTINGS, reportStatement } from '../src/services/object-status-service.js';
import { newId } from '../src/support/ids.js';
import { seedForwards } from '../src/testing/seed.js';
import { storeBackends, type StoreBackend } from '../src/testing/stores.js';

/** Objects of each type on the host: well above what the largest report may read (REPORTS). */
const OBJECTS = 8_000;
/** Report sizes: a bad plan appeared from about 50 reported objects of 3,000, 100 of 6,000. */
const REPORTS = [10, 200, 1_000];
/** What a report of k objects may examine: per object a primary-key probe, another when the host is ahead of the report (stale ones), and per NIC up to three of its instance (host twice, owner). */
const allowed = (k: number) => 6 * k + 20;

interface PlanNode {
  'Node Type': string;
  'Relation Name'?: string;
  'Actual Rows'?: number;
  'Actual Loops'?: number;
  'Rows Removed by Filter'?: number;
  'Rows Removed by Index Recheck'?: number;
  'Rows Removed by Join Filter'?: number;
  Plans?: PlanNode[];
}

/** Rows a plan examined, from its actual figures; with the nodes that examined most, for a failure's message. */
function examined(plan: PlanNode): { rows: number; nodes: string[] } {
  let rows = 0;
  const nodes: [number, string][] = [];
  const visit = (n: PlanNode) => {
    const loops = n['Actual Loops'] ?? 1;
    let own = (n['Rows Removed by Join Filter'] ?? 0) * loops;
    // a table scan's rows (ModifyTable names its table too, but reads through its child)
    if (n['Relation Name'] !== undefined && n['Node Type'] !== 'ModifyTable')
      own += ((n['Actual Rows'] ?? 0) + (n['Rows Removed by Filter'] ?? 0) + (n['Rows Removed by Index Recheck'] ?? 0)) * loops;
    if (n['Node Type'] === 'Materialize') own += (n['Actual Rows'] ?? 0) * loops;
    rows += own;
    if (own > 0) nodes.push([own, `${n['Node Type']}${n['Relation Name'] ? ` on ${n['Relation Name']}` : ''}: ${own}`]);
    for (const child of n.Plans ?? []) visit(child);
  };
  visit(plan);
  return { rows, nodes: nodes.sort((a, b) => b[0] - a[0]).map(([, text]) => text) };
}

const backends = await storeBackends();

describe.each(backends)('status report plans on $name', (backend: StoreBackend) => {
  let store: Store;
  let cleanup: () => Promise<void>;
  let hostId: string;
  let revision: number;
  const ids: Record<'port_forward' | 'nic', string[]> = { port_forward: [], nic: [] };

  beforeAll(async () => {
    ({ store, cleanup } = await backend.open());
    // no statistics until the test runs ANALYZE, on PostgreSQL as on PGlite; the rest in bulk:
    // forwards copied from the first, one host port each; instances with one NIC each
    const seeded = await seedForwards(store, {
      label: 'plan',
      network: 'br-plan',
      cidr: '10.202.0.0/16',
      count: OBJECTS,
      beforeCopies: async () => {
        if (backend.name === 'postgres')
          for (const table of ['port_forwards', 'instances', 'nics', 'hosts'])
            await store.db.execute(sql`alter table ${sql.identifier(table)} set (autovacuum_enabled = false)`);
      },
    });
    hostId = seeded.hostId;
    ids.port_forward = seeded.forwardIds;
    const nics = await store.db.execute(sql`
      with vms as (
        insert into instances (id, host_id, owner_id, name)
        select gen_random_uuid(), ${hostId}::uuid, ${seeded.actor.userId}::uuid, 'vm-' || g from generate_series(1, ${OBJECTS}::int) as g
        returning id, name
      )
      insert into nics (id, instance_id, name, mac, network)
      select gen_random_uuid(), id, 'eth0', '02:' || substr(md5(name), 1, 10), 'br-plan' from vms
      returning id`);
    ids.nic = rowsOf<{ id: string }>(nics).map((r) => r.id);
    // a report one revision behind the host's looks for stale objects too
    await store.db.execute(sql`update hosts set desired_revision = desired_revision + 1 where id = ${hostId}::uuid`);
    revision = Number(rowsOf<{ r: number }>(await store.db.execute(sql`select desired_revision as r from hosts where id = ${hostId}::uuid`))[0]!.r);
  });
  afterAll(async () => {
    await cleanup?.();
  });

  /** The rows the report statement examines for `k` objects of `type` spread over the table, at `revision`, rolled back. */
  const examinedBy = async (type: 'port_forward' | 'nic', k: number, at: number, extra?: SQL) => {
    const all = ids[type];
    const step = Math.floor(all.length / k);
    const wanted = all
      .filter((_, i) => i % step === step - 1)
      .slice(0, k)
      .map((id) => ({ id, status: 'applied' as const, error: null }));
    // and one object that does not exist
    wanted.push({ id: newId(), status: 'applied', error: null });
    let plan: PlanNode | undefined;
    await store.db
      .transaction(async (tx) => {
        await tx.execute(REPORT_PLANNER_SETTINGS);
        if (extra) await tx.execute(extra);
        const [row] = rowsOf<Record<string, unknown>>(
          await tx.execute(sql`explain (analyze, format json) ${reportStatement(type as StatusObjectType, hostId, at, wanted, newId())}`),
        );
        const value = Object.values(row!)[0];
        plan = (JSON.parse(typeof value === 'string' ? value : JSON.stringify(value)) as [{ Plan: PlanNode }])[0].Plan;
        throw new Rollback();
      })
      .catch((err: unknown) => {
        if (!(err instanceof Rollback)) throw err;
      });
    return examined(plan!);
  };

  const checkAll = async () => {
    for (const type of ['port_forward', 'nic'] as const)
      for (const k of REPORTS)
        for (const at of [revision, revision - 1]) {
          const { rows, nodes } = await examinedBy(type, k, at);
          expect(rows, `${type}, ${k} objects at revision ${at}: ${nodes.join('; ')}`).toBeLessThanOrEqual(allowed(k + 1));
        }
  };

  it("examines rows in proportion to the report, not the host's objects, without statistics", async () => {
    await checkAll();
  });

  it('examines rows in proportion to the report after ANALYZE', async () => {
    await store.db.execute(sql`analyze`);
    await checkAll();
  });

  it('the count sees a scan of the table when one is forced', async () => {
    const forced = sql`select set_config('enable_indexscan', 'off', true), set_config('enable_bitmapscan', 'off', true), set_config('enable_seqscan', 'on', true)`;
    const { rows } = await examinedBy('port_forward', 10, revision, forced);
    expect(rows).toBeGreaterThanOrEqual(OBJECTS);
  });
});

class Rollback extends Error {}
