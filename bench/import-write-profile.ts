/**
 * Where a 50,000-row import's write goes on PGlite: the same rows inserted with the exclusion
 * constraint, foreign keys and indexes each removed in turn, by statement shape and batch size,
 * and the audit rows per forward against one summary entry. Prints ms per variant.
 *
 *   npx tsx bench/import-write-profile.ts      (PROFILE_ROWS=50000)
 */
import 'reflect-metadata';
import { sql } from 'drizzle-orm';
import { openStore, rowsOf, type Store } from '../core/server/src/db/database.js';
import { auditLog, portForwards } from '../core/server/src/db/schema.js';
import { newId } from '../core/server/src/support/ids.js';
import { createHost, createPool, createTestApi } from '../core/server/src/testing/index.js';

const ROWS = Number(process.env.PROFILE_ROWS ?? 50_000);
type ForwardRow = typeof portForwards.$inferInsert;

async function ms(work: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  await work();
  return performance.now() - start;
}

/** A store with one host and instance, and `ROWS` forward rows to insert (ports 1..ROWS). */
async function setup(): Promise<{ store: Store; rows: ForwardRow[]; adminId: string }> {
  const store = await openStore({ kind: 'pglite' });
  const api = await createTestApi(store);
  const hostId = await createHost(api.admin, 'p');
  await store.db.execute(sql`update hosts set port_range_start = 1, port_range_end = 65535, reserved_ports = '[]' where id = ${hostId}`);
  await createPool(api.admin, { name: 'p', kind: 'PRIVATE', network: 'br-p', cidr: '10.150.0.0/16' });
  const r = await api.admin(
    `mutation($h: ID!) { createInstance(input: { hostId: $h, name: "vm", nics: [{ network: "br-p" }] }) { ... on CreateInstancePayload { instance { id nics { addresses { address } } } } } }`,
    { h: hostId },
  );
  const instanceId = r.data.createInstance.instance.id as string;
  const address = r.data.createInstance.instance.nics[0].addresses[0].address as string;
  const f = await api.admin(
    `mutation($i: ID!) { createPortForward(input: { instanceId: $i, protocol: TCP, hostPort: "65535", targetPort: "80" }) { __typename ... on Error { message } } }`,
    { i: instanceId },
  );
  if (f.data.createPortForward.__typename === 'Error') throw new Error(JSON.stringify(f));
  const [template] = await store.db.select().from(portForwards);
  await store.db.execute(sql`delete from port_forwards`);
  const [admin] = rowsOf<{ id: string }>(await store.db.execute(sql`select id from users limit 1`));
  void address;
  const rows = Array.from({ length: ROWS }, (_, i) => ({ ...template!, id: newId(), hostPortStart: i + 1, hostPortEnd: i + 1, note: `row ${i}` }));
  return { store, rows, adminId: admin!.id };
}

async function insertBatches(store: Store, rows: ForwardRow[], batch: number, shape: 'values' | 'json'): Promise<number[]> {
  const perTx: number[] = [];
  for (let i = 0; i < rows.length; i += batch) {
    const slice = rows.slice(i, i + batch);
    perTx.push(
      await ms(() =>
        store.db.transaction(async (tx) => {
          if (shape === 'values') await tx.insert(portForwards).values(slice);
          else
            await tx.execute(sql`insert into port_forwards (id, host_id, instance_id, owner_id, protocol, host_address, host_port_start, host_port_end,
              target_address_id, target_address, target_port_start, source_cidrs, note, changed_revision, proto_lo, proto_hi, addr_lo, addr_hi)
              select id, host_id, instance_id, owner_id, protocol, host_address, host_port_start, host_port_end, target_address_id, target_address,
                target_port_start, source_cidrs, note, changed_revision, proto_lo, proto_hi, addr_lo, addr_hi
              from json_populate_recordset(null::port_forwards, ${JSON.stringify(slice.map(snake))}::json)`);
        }),
      ),
    );
  }
  return perTx;
}

function snake(f: ForwardRow): Record<string, unknown> {
  return {
    id: f.id,
    host_id: f.hostId,
    instance_id: f.instanceId,
    owner_id: f.ownerId,
    protocol: f.protocol,
    host_address: f.hostAddress,
    host_port_start: f.hostPortStart,
    host_port_end: f.hostPortEnd,
    target_address_id: f.targetAddressId,
    target_address: f.targetAddress,
    target_port_start: f.targetPortStart,
    source_cidrs: f.sourceCidrs,
    note: f.note,
    changed_revision: f.changedRevision,
    proto_lo: f.protoLo,
    proto_hi: f.protoHi,
    addr_lo: f.addrLo,
    addr_hi: f.addrHi,
  };
}

const summary = (xs: number[]) => {
  const total = xs.reduce((a, b) => a + b, 0);
  const sorted = [...xs].sort((a, b) => a - b);
  return `total ${total.toFixed(0)} ms, per transaction median ${sorted[Math.floor(sorted.length / 2)]!.toFixed(1)} max ${sorted.at(-1)!.toFixed(1)} ms (${xs.length} tx)`;
};

const variants: { name: string; prepare?: string[]; batch: number; shape: 'values' | 'json' }[] = [
  { name: 'as now: drizzle values(), 500 rows/statement', batch: 500, shape: 'values' },
  { name: 'json_populate_recordset, 500 rows/statement', batch: 500, shape: 'json' },
  { name: 'json_populate_recordset, 100 rows/statement', batch: 100, shape: 'json' },
  { name: 'drizzle values(), 100 rows/statement', batch: 100, shape: 'values' },
  { name: 'without the exclusion constraint', prepare: ['alter table port_forwards drop constraint port_forwards_no_overlap'], batch: 500, shape: 'values' },
  {
    name: 'without foreign keys',
    prepare: [
      'alter table port_forwards drop constraint if exists port_forwards_host_id_hosts_id_fkey',
      'alter table port_forwards drop constraint if exists port_forwards_instance_id_instances_id_fkey',
      'alter table port_forwards drop constraint if exists port_forwards_owner_id_users_id_fkey',
      'alter table port_forwards drop constraint if exists port_forwards_target_address_id_ip_allocations_id_fkey',
    ],
    batch: 500,
    shape: 'values',
  },
  { name: 'a bare copy of the table (no index, key or constraint)', prepare: ['alter table port_forwards rename to port_forwards_full', 'create table port_forwards (like port_forwards_full including defaults)'], batch: 500, shape: 'values' },
  {
    name: 'everything but the primary key removed',
    prepare: [
      'alter table port_forwards drop constraint port_forwards_no_overlap',
      'alter table port_forwards drop constraint port_forwards_host_id_hosts_id_fkey',
      'alter table port_forwards drop constraint port_forwards_instance_id_instances_id_fkey',
      'alter table port_forwards drop constraint port_forwards_owner_id_users_id_fkey',
      'alter table port_forwards drop constraint port_forwards_target_address_id_ip_allocations_id_fkey',
      'drop index port_forwards_instance_idx',
      'drop index port_forwards_owner_idx',
      'drop index port_forwards_target_idx',
    ],
    batch: 500,
    shape: 'values',
  },
  {
    name: 'without the three btree indexes',
    prepare: ['drop index port_forwards_instance_idx', 'drop index port_forwards_owner_idx', 'drop index port_forwards_target_idx'],
    batch: 500,
    shape: 'values',
  },
];

const only = process.env.PROFILE_ONLY;
for (const v of variants) {
  if (only && !v.name.includes(only)) continue;
  const { store, rows } = await setup();
  for (const s of v.prepare ?? []) await store.db.execute(sql.raw(s));
  const times = await insertBatches(store, rows, v.batch, v.shape);
  console.log(`${v.name.padEnd(48)} ${summary(times)}`);
  if (v === variants[0]) {
    // audit: one row per forward (as now, 1,000 per statement) against one summary entry listing the ids
    const entries = rows.map((f) => ({
      id: newId(),
      at: new Date(),
      requestId: 'profile',
      actorUserId: null,
      tokenId: null,
      action: 'portForward.create',
      objectType: 'PortForward',
      objectId: f.id!,
      ownerId: f.ownerId,
      before: null,
      after: JSON.parse(JSON.stringify(f)),
    }));
    const perForward: number[] = [];
    for (let i = 0; i < entries.length; i += 1000) {
      const slice = entries.slice(i, i + 1000);
      perForward.push(await ms(() => store.db.insert(auditLog).values(slice)));
    }
    console.log(`${'audit: one entry per forward, 1,000/statement'.padEnd(48)} ${summary(perForward)}`);
    const one = await ms(() =>
      store.db.insert(auditLog).values({ ...entries[0]!, id: newId(), action: 'portForward.import', after: { forwardIds: rows.map((f) => f.id) } }),
    );
    console.log(`${'audit: one summary entry with 50,000 ids'.padEnd(48)} total ${one.toFixed(0)} ms`);
    const flip = await ms(() => store.db.execute(sql`update port_forwards set changed_revision = changed_revision + 1`));
    console.log(`${'update of every staged row (a flip by UPDATE)'.padEnd(48)} total ${flip.toFixed(0)} ms`);
    const del = await ms(() => store.db.execute(sql`delete from port_forwards`));
    console.log(`${'delete of every row (removal of a failed import)'.padEnd(48)} total ${del.toFixed(0)} ms`);
  }
  await store.close();
}
