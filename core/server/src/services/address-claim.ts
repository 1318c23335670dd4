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
