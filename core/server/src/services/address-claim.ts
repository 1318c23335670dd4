/**
 * The statements of an address allocation that must not serialise concurrent requests on one row.
 *
 * - A slot is claimed by one statement: the free slots among a window of candidates (in address
 *   order), the first of them whose transaction-scoped advisory lock is free, inserted. A slot
 *   another request is claiming is skipped instead of waited for, so 16 requests on one pool take
 *   16 different slots at once. The unique constraint on (pool_id, slot) still makes a duplicate
 *   impossible: the lock only keeps requests from queueing behind each other's inserts.
 * - The quota is one conditional increment of the owner's `address_usage` row
 *   (`used < quota`), not a count under a lock on the user, and it runs at the end of the
 *   transaction together with the host's revision bump and the pool's hint, so the rows every
 *   allocation of one host and owner must write are held for one statement and the commit.
 *
 * Lock order (with the rest of the controller): user (lockOwner), host, address_usage, pool row.
 * An allocation waits only for the host and usage rows, in that order; it takes the pool row with
 * SKIP LOCKED and never waits for it. Its insert holds the key of its NIC, user and pool rows
 * until it commits, so whatever deletes a NIC locks it before the host (`lockNicsForDeletion`).
 */
import { eq, sql, type SQL } from 'drizzle-orm';
import { rowsOf, type Executor } from '../db/database.js';
import { nics, users } from '../db/schema.js';
import type { IpFamily } from '../net/ip.js';
import { slotAddress, type PoolGeometry } from './pool-geometry.js';

/*
 * The two statements every allocation sends carry their values inline (drizzle quotes them):
 * postgres.js sends a raw statement with parameters unprepared, and so first asks the server for
 * the parameters' types, a round trip of its own.
 */

/** Candidate slots per claim statement: more than the requests that usually claim one pool at once. */
export const CLAIM_WINDOW = 64n;

const QUOTA_COLUMN = { 4: users.quotaIpv4Addresses, 6: users.quotaIpv6Prefixes } as const;

/**
 * `pg_try_advisory_xact_lock` on a pool's slot: every path that inserts a slot (allocation,
 * assignment, reservation) takes it first, so none of them waits on another's uncommitted insert.
 * Two distinct slots may share a key (pools hashed, slots modulo 2^32); that only skips a slot.
 */
export function slotLock(poolId: string, slot: SQL): SQL {
  return sql`pg_try_advisory_xact_lock(hashtext(${poolId}::text), ((${slot} % 4294967296) - 2147483648)::int)`;
}

/** Takes the slot's advisory lock; false when a concurrent request holds it. */
export async function tryLockSlot(tx: Executor, poolId: string, slot: bigint): Promise<boolean> {
  const result = await tx.execute(sql`select ${slotLock(poolId, sql`${slot.toString()}::numeric`)} as locked`);
  return rowsOf<{ locked: boolean }>(result)[0]!.locked === true;
}

/**
 * Locks NICs about to be deleted, before their host's row: an allocation in flight holds its NIC's
 * key (its insert) and waits for the host row at its end, so a deletion that took the host first
 * and then waited for the NIC would deadlock with it.
 */
export async function lockNicsForDeletion(tx: Executor, which: { nicId: string } | { instanceId: string }): Promise<void> {
  await tx
    .select({ id: nics.id })
    .from(nics)
    .where('nicId' in which ? eq(nics.id, which.nicId) : eq(nics.instanceId, which.instanceId))
    .for('update');
}

/** The allocation row to insert, without its slot and address. */
export interface ClaimTemplate {
  id: string;
  poolId: string;
  prefixLength: number;
  nicId: string;
  ownerId: string;
  idempotencyKey: string | null;
  createdAt: Date;
}

/** What one claim statement found in its window. */
export type ClaimResult =
  | { claimed: true; slot: bigint; address: string }
  /** `free`: slots of the window free in the statement's snapshot; `picked`: one was locked but its insert conflicted. */
  | { claimed: false; free: number; picked: boolean };

/**
 * Claims the first free slot of [from, from + CLAIM_WINDOW) whose advisory lock is free and inserts
 * the allocation row for it, in one statement.
 */
export async function claimSlot(tx: Executor, g: PoolGeometry, from: bigint, row: ClaimTemplate): Promise<ClaimResult> {
  const to = from + CLAIM_WINDOW < g.slotCount ? from + CLAIM_WINDOW : g.slotCount;
  const slots: string[] = [];
  const addresses: string[] = [];
  for (let s = from; s < to; s++) {
    slots.push(s.toString());
    // canonical text of an address: digits, a-f, '.', ':' — nothing an array literal must quote
    addresses.push(slotAddress(g, s));
  }
  // `free` is materialised in address order and `pick` reads it without ORDER BY: a sort above the
  // filter would evaluate the lock function on every free slot and lock them all
  const result = await tx.execute(
    sql`
    with free as materialized (
      select c.slot, c.address
      from unnest(${`{${slots.join(',')}}`}::numeric[], ${`{${addresses.join(',')}}`}::text[]) with ordinality as c(slot, address, n)
      where not exists (select 1 from ip_allocations a where a.pool_id = ${row.poolId}::uuid and a.slot = c.slot)
      order by c.n
    ), pick as materialized (
      select slot, address from free where ${slotLock(row.poolId, sql`slot`)} limit 1
    ), ins as (
      insert into ip_allocations (id, pool_id, slot, address, prefix_length, kind, nic_id, owner_id, note, idempotency_key, created_at)
      select ${row.id}::uuid, ${row.poolId}::uuid, slot, address, ${row.prefixLength}::int, 'allocated', ${row.nicId}::uuid, ${row.ownerId}::uuid, '',
        ${row.idempotencyKey}::text, ${row.createdAt.toISOString()}::timestamptz
      from pick
      on conflict do nothing
      returning slot, address
    )
    select (select slot::text from ins) as slot, (select address from ins) as address,
      (select count(*)::int from free) as free, (select count(*)::int from pick) as picked`.inlineParams(),
  );
  const r = rowsOf<{ slot: string | null; address: string | null; free: number; picked: number }>(result)[0]!;
  if (r.slot !== null) return { claimed: true, slot: BigInt(r.slot), address: r.address! };
  return { claimed: false, free: Number(r.free), picked: Number(r.picked) > 0 };
}

/** What `finishAllocation` wrote: the host's new revision, and the owner's usage (null: quota reached, nothing counted). */
export interface FinishResult {
  revision: number | null;
  used: number | null;
}

/**
 * The end of an allocation, in one statement and in lock order: bumps the host's revision, counts
 * the address against the owner's quota if it is below it, and moves the pool's hint up to the
 * lowest free slot this transaction sees, if no one else holds the pool row (the hint is only a
 * starting point; it never passes a free slot, see `PoolService.freeSlots`).
 */
export async function finishAllocation(
  tx: Executor,
  args: { hostId: string; ownerId: string; family: IpFamily; poolId: string; slotCount: bigint },
): Promise<FinishResult> {
  const quota = QUOTA_COLUMN[args.family];
  const last = (args.slotCount - 1n).toString();
  const result = await tx.execute(
    sql`
    with host as (
      update hosts set desired_revision = desired_revision + 1 where id = ${args.hostId}::uuid returning desired_revision
    ), usage as (
      ${countUsage(args.ownerId, args.family, quota, sql`exists (select 1 from host)`)}
    ), hint as (
      update ip_pools p set free_slot_hint = coalesce(
        (select s from generate_series(p.free_slot_hint, least(p.free_slot_hint + ${CLAIM_WINDOW.toString()}::numeric, ${last}::numeric)) as s
          where not exists (select 1 from ip_allocations a where a.pool_id = p.id and a.slot = s) order by s limit 1),
        least(p.free_slot_hint + ${CLAIM_WINDOW.toString()}::numeric + 1, ${args.slotCount.toString()}::numeric))
      where p.id = (select id from ip_pools where id = ${args.poolId}::uuid and exists (select 1 from usage) for no key update skip locked)
      returning 1
    )
    select (select desired_revision from host) as revision, (select used from usage) as used, (select count(*) from hint) as hinted`.inlineParams(),
  );
  const r = rowsOf<{ revision: number | string | null; used: number | null }>(result)[0]!;
  return { revision: r.revision === null ? null : Number(r.revision), used: r.used === null ? null : Number(r.used) };
}

/** Counts one address against the owner's quota if it is below it (assignment); false when the quota is reached. */
export async function countAddress(tx: Executor, ownerId: string, family: IpFamily): Promise<boolean> {
  const result = await tx.execute(sql`${countUsage(ownerId, family, QUOTA_COLUMN[family], sql`true`)}`);
  return rowsOf(result).length > 0;
}

/** Takes released addresses off their owners' usage, one owner and family at a time in a fixed order. */
export async function uncountAddresses(tx: Executor, rows: readonly { ownerId: string | null; address: string }[]): Promise<void> {
  const counts = new Map<string, number>();
  for (const row of rows) {
    if (row.ownerId === null) continue;
    const key = `${row.ownerId}/${familyOfAddress(row.address)}`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  for (const key of [...counts.keys()].sort()) {
    const [ownerId, family] = key.split('/');
    await tx.execute(
      sql`update address_usage set used = used - ${counts.get(key)!}::int where owner_id = ${ownerId}::uuid and family = ${Number(family)}::int`,
    );
  }
}

/** The owner's quota and usage for a family, for the QUOTA_EXCEEDED answer. */
export async function quotaStanding(tx: Executor, ownerId: string, family: IpFamily): Promise<{ limit: number | null; used: number }> {
  const result = await tx.execute(sql`
    select ${QUOTA_COLUMN[family]} as "limit",
      coalesce((select used from address_usage where owner_id = ${ownerId}::uuid and family = ${family}::int), 0) as used
    from users where id = ${ownerId}::uuid`);
  const r = rowsOf<{ limit: number | null; used: number }>(result)[0];
  return { limit: r?.limit ?? null, used: Number(r?.used ?? 0) };
}

/**
 * `insert … on conflict do update … where used < quota`: the increment happens only below the
 * quota, and concurrent increments of one row queue on it and re-check, so the quota holds exactly.
 * A null quota is unlimited.
 */
function countUsage(ownerId: string, family: IpFamily, quota: typeof users.quotaIpv4Addresses, when: SQL): SQL {
  return sql`
    insert into address_usage as u (owner_id, family, used)
    select ${ownerId}::uuid, ${family}::int, 1 from users
      where users.id = ${ownerId}::uuid and (${quota} is null or ${quota} >= 1) and ${when}
    on conflict (owner_id, family) do update set used = u.used + 1
      where u.used < coalesce((select ${quota} from users where users.id = ${ownerId}::uuid), 2147483647)
    returning u.used`;
}

function familyOfAddress(address: string): IpFamily {
  return address.includes(':') ? 6 : 4;
}

/** One request of a batch claim: the row to insert, less its slot and address (one pool, one createdAt per claim). */
export interface BatchClaimRow {
  id: string;
  nicId: string;
  ownerId: string;
  idempotencyKey: string | null;
}

/** What one batch claim statement did: the rows inserted (by id), and what it saw in its window. */
export interface BatchClaimResult {
  claimed: Map<string, { slot: bigint; address: string }>;
  /** Slots of the window free in the statement's snapshot. */
  free: number;
  /** Free slots it locked (at most one per row); more than it inserted when inserts conflicted. */
  picked: number;
}

/**
 * Claims slots for several rows of one pool in one statement: the free slots of
 * [from, from + window) in address order, the first `rows.length` of them whose advisory lock is
 * free, paired with the rows in order and inserted (on conflict do nothing: a slot inserted since
 * the snapshot, or an idempotency key used meanwhile, leaves its row out).
 */
export async function claimSlots(
  tx: Executor,
  g: PoolGeometry,
  poolId: string,
  from: bigint,
  window: bigint,
  rows: readonly BatchClaimRow[],
  createdAt: Date,
): Promise<BatchClaimResult> {
  const to = from + window < g.slotCount ? from + window : g.slotCount;
  const slots: string[] = [];
  const addresses: string[] = [];
  for (let s = from; s < to; s++) {
    slots.push(s.toString());
    addresses.push(slotAddress(g, s));
  }
  const requests = JSON.stringify(rows.map((r, i) => ({ id: r.id, nic_id: r.nicId, owner_id: r.ownerId, idempotency_key: r.idempotencyKey, n: i + 1 })));
  // as in claimSlot: `free` and `pick` are materialised so that only the slots picked are locked
  const result = await tx.execute(
    sql`
    with free as materialized (
      select c.slot, c.address
      from unnest(${`{${slots.join(',')}}`}::numeric[], ${`{${addresses.join(',')}}`}::text[]) with ordinality as c(slot, address, n)
      where not exists (select 1 from ip_allocations a where a.pool_id = ${poolId}::uuid and a.slot = c.slot)
      order by c.n
    ), pick as materialized (
      select slot, address from free where ${slotLock(poolId, sql`slot`)} limit ${rows.length}::int
    ), paired as (
      select r.id, r.nic_id, r.owner_id, r.idempotency_key, p.slot, p.address
      from (select slot, address, row_number() over () as n from pick) p
      join jsonb_to_recordset(${requests}::jsonb) as r(id uuid, nic_id uuid, owner_id uuid, idempotency_key text, n int) on r.n = p.n
    ), ins as (
      insert into ip_allocations (id, pool_id, slot, address, prefix_length, kind, nic_id, owner_id, note, idempotency_key, created_at)
      select id, ${poolId}::uuid, slot, address, ${g.slotPrefixLength}::int, 'allocated', nic_id, owner_id, '', idempotency_key, ${createdAt.toISOString()}::timestamptz
      from paired
      -- in key order: two batches holding the same keys (a retry sent to another replica) then meet
      -- at their first common key and the second waits, instead of each holding a key the other wants
      order by idempotency_key
      on conflict do nothing
      returning id, slot, address
    )
    select (select coalesce(json_agg(json_build_object('id', id, 'slot', slot::text, 'address', address)), '[]'::json) from ins) as claimed,
      (select count(*)::int from free) as free, (select count(*)::int from pick) as picked`.inlineParams(),
  );
  const r = rowsOf<{ claimed: unknown; free: number; picked: number }>(result)[0]!;
  const list = (typeof r.claimed === 'string' ? JSON.parse(r.claimed) : r.claimed) as { id: string; slot: string; address: string }[];
  return {
    claimed: new Map(list.map((c) => [c.id, { slot: BigInt(c.slot), address: c.address }])),
    free: Number(r.free),
    picked: Number(r.picked),
  };
}

/** What `finishBatch` wrote: each host's new revision, each (owner, family) usage that was counted. */
export interface BatchFinishResult {
  revisions: Map<string, number>;
  /** Keys `${ownerId}/${family}` whose whole count fitted below the quota (and was counted). */
  counted: Set<string>;
}

/**
 * The end of a batch of allocations, in one statement and in lock order: bumps the revision of
 * each host (rows locked in id order, so two batches cannot deadlock on them), counts each owner's
 * addresses of a family against its quota only if all of them fit (`used + k <= quota`, rows
 * written in owner order), and moves each pool's hint as `finishAllocation` does. An owner whose
 * count did not fit is missing from `counted`: the caller rolls the batch back and answers that
 * owner's requests one at a time.
 */
export async function finishBatch(
  tx: Executor,
  args: {
    hostIds: readonly string[];
    usage: readonly { ownerId: string; family: IpFamily; count: number }[];
    pools: readonly { poolId: string; slotCount: bigint; window: bigint }[];
  },
): Promise<BatchFinishResult> {
  const hostIds = [...args.hostIds].sort();
  const usage = JSON.stringify(args.usage.map((u) => ({ owner_id: u.ownerId, family: u.family, k: u.count })));
  const quota = (alias: string, family: string) => sql.raw(`(case ${family} when 4 then ${alias}.quota_ipv4_addresses else ${alias}.quota_ipv6_prefixes end)`);
  const hints = args.pools.map(
    (p, i) => sql`, ${sql.raw(`hint${i}`)} as (
      update ip_pools p set free_slot_hint = coalesce(
        (select s from generate_series(p.free_slot_hint, least(p.free_slot_hint + ${p.window.toString()}::numeric, ${(p.slotCount - 1n).toString()}::numeric)) as s
          where not exists (select 1 from ip_allocations a where a.pool_id = p.id and a.slot = s) order by s limit 1),
        least(p.free_slot_hint + ${p.window.toString()}::numeric + 1, ${p.slotCount.toString()}::numeric))
      where p.id = (select id from ip_pools where id = ${p.poolId}::uuid and exists (select 1 from usage) for no key update skip locked)
      returning 1
    )`,
  );
  const result = await tx.execute(
    sql`
    with locked as materialized (
      select id from hosts where id in (select unnest(${`{${hostIds.join(',')}}`}::uuid[])) order by id for no key update
    ), host as (
      update hosts h set desired_revision = h.desired_revision + 1 from locked where h.id = locked.id returning h.id, h.desired_revision
    ), usage as (
      insert into address_usage as u (owner_id, family, used)
      select r.owner_id, r.family, r.k
      from jsonb_to_recordset(${usage}::jsonb) as r(owner_id uuid, family int, k int)
        join users on users.id = r.owner_id
      where exists (select 1 from host) and (${quota('users', 'r.family')} is null or ${quota('users', 'r.family')} >= r.k)
      order by r.owner_id, r.family
      on conflict (owner_id, family) do update set used = u.used + excluded.used
        where u.used + excluded.used <= coalesce((select ${quota('q', 'excluded.family')} from users q where q.id = excluded.owner_id), 2147483647)
      returning u.owner_id, u.family
    )${sql.join(hints, sql``)}
    select (select coalesce(json_agg(json_build_object('id', id, 'revision', desired_revision)), '[]'::json) from host) as hosts,
      (select coalesce(json_agg(json_build_object('owner', owner_id, 'family', family)), '[]'::json) from usage) as usage
      ${sql.join(
        args.pools.map((_, i) => sql.raw(`, (select count(*) from hint${i}) as hinted${i}`)),
        sql``,
      )}`.inlineParams(),
  );
  const r = rowsOf<{ hosts: unknown; usage: unknown }>(result)[0]!;
  const parse = <T>(v: unknown) => (typeof v === 'string' ? JSON.parse(v) : v) as T;
  return {
    revisions: new Map(parse<{ id: string; revision: number | string }[]>(r.hosts).map((h) => [h.id, Number(h.revision)])),
    counted: new Set(parse<{ owner: string; family: number }[]>(r.usage).map((u) => `${u.owner}/${u.family}`)),
  };
}
