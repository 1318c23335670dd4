/**
 * The statements of one ingest batch, set-based whatever the number of reports and objects in it:
 * one lookup of the hosts and objects, one read of the stored counters (locked), and one statement
 * that upserts the new readings, the minute buckets and the billing periods. Lists go in as array
 * literals unnested by the database (a fixed number of parameters, not one per value), so the
 * statement text is the same for every batch and its cost grows with the rows, not with
 * per-statement overhead (on PGlite every statement runs in the controller's own thread).
 */
import { sql, type SQL } from 'drizzle-orm';
import { rowsOf, type Executor } from '../db/database.js';
import type { CounterReading, CounterValues } from './counter-delta.js';

/**
 * A PostgreSQL array literal of these values (strings quoted, null as NULL), for
 * `unnest(<literal>::text::<type>[])`: unnested in FROM, the cast runs once. (In `x = any(...)` it
 * would not be folded into a constant and a sequential scan would cast the whole list again for
 * every row it reads.)
 */
export function arrayLiteral(values: readonly (string | number | null)[]): string {
  const item = (v: string | number | null) => (v === null ? 'NULL' : typeof v === 'number' ? String(v) : `"${v.replace(/[\\"]/g, '\\$&')}"`);
  return `{${values.map(item).join(',')}}`;
}

/** What the lookup found: hosts (with their cap) and counted objects (with what they belong to). */
export interface Found {
  hosts: Map<string, { capBps: number | null }>;
  objects: Map<
    string,
    {
      hostId: string;
      instanceId: string;
      ownerId: string;
      billingDay: number | null;
      /** Whether the instance has a bandwidth limit the quota check looks at (a quota, or a quota state left to clear). */
      quota: boolean;
    }
  >;
}

/** The object kinds a report counts. */
export type CountedType = 'nic' | 'port_forward';

/** Looks up hosts, NICs and forwards by id in one statement (keys of `objects`: `<type>:<id>`). */
export async function lookUp(tx: Executor, hostIds: readonly string[], nicIds: readonly string[], forwardIds: readonly string[]): Promise<Found> {
  // the limits TrafficQuota.check takes for an instance (so a batch without any skips the check)
  const quota = (instanceId: SQL) => sql`exists (select 1 from bandwidth_limits b left join traffic_quota_states s on s.limit_id = b.id
    where b.instance_id = ${instanceId} and (b.monthly_quota_bytes is not null or s.limit_id is not null))`;
  const rows = rowsOf<{
    kind: string;
    id: string;
    host_id: string;
    instance_id: string | null;
    owner_id: string | null;
    billing_day: number | null;
    cap_bps: number | null;
    quota: boolean;
  }>(
    await tx.execute(sql`
      select 'host' as kind, h.id, h.id as host_id, null::uuid as instance_id, null::uuid as owner_id, null::integer as billing_day,
             h.traffic_cap_bps::float8 as cap_bps, false as quota
        from unnest(${arrayLiteral(hostIds)}::text::uuid[]) as k(id) join hosts h on h.id = k.id
      union all
      select 'nic', n.id, i.host_id, i.id, i.owner_id, u.billing_day, null, ${quota(sql`i.id`)}
        from unnest(${arrayLiteral(nicIds)}::text::uuid[]) as k(id) join nics n on n.id = k.id
        join instances i on i.id = n.instance_id join users u on u.id = i.owner_id
      union all
      select 'port_forward', f.id, f.host_id, f.instance_id, f.owner_id, u.billing_day, null, ${quota(sql`f.instance_id`)}
        from unnest(${arrayLiteral(forwardIds)}::text::uuid[]) as k(id) join port_forwards f on f.id = k.id
        join users u on u.id = f.owner_id`),
  );
  const found: Found = { hosts: new Map(), objects: new Map() };
  for (const r of rows) {
    if (r.kind === 'host') found.hosts.set(r.id, { capBps: r.cap_bps === null ? null : Number(r.cap_bps) });
    else
      found.objects.set(`${r.kind}:${r.id}`, {
        hostId: r.host_id,
        instanceId: r.instance_id!,
        ownerId: r.owner_id!,
        billingDay: r.billing_day,
        quota: r.quota,
      });
  }
  return found;
}

/**
 * The stored readings of these objects (keys `<type>:<id>`), locked until the transaction ends:
 * two replicas taking reports of one host (a reconnecting agent) count each delta once. Rows are
 * locked in key order, so transactions locking overlapping sets wait for each other instead of
 * deadlocking.
 */
export async function lockCounters(tx: Executor, nicIds: readonly string[], forwardIds: readonly string[]): Promise<Map<string, CounterReading>> {
  const stored = new Map<string, CounterReading>();
  if (nicIds.length + forwardIds.length === 0) return stored;
  const types = [...nicIds.map(() => 'nic'), ...forwardIds.map(() => 'port_forward')];
  const rows = rowsOf<{
    object_type: string;
    object_id: string;
    epoch: string;
    sequence: number;
    at_ms: number;
    rx_bytes: number;
    rx_packets: number;
    tx_bytes: number;
    tx_packets: number;
  }>(
    await tx.execute(sql`
      select c.object_type, c.object_id, c.epoch, c.sequence::float8 as sequence, (extract(epoch from c.read_at) * 1000)::float8 as at_ms,
             c.rx_bytes::float8 as rx_bytes, c.rx_packets::float8 as rx_packets, c.tx_bytes::float8 as tx_bytes, c.tx_packets::float8 as tx_packets
      from unnest(${arrayLiteral(types)}::text::text[], ${arrayLiteral([...nicIds, ...forwardIds])}::text::uuid[]) as k(object_type, object_id)
      join traffic_counters c on c.object_type = k.object_type and c.object_id = k.object_id
      order by c.object_type, c.object_id
      for update of c`),
  );
  for (const r of rows)
    stored.set(`${r.object_type}:${r.object_id}`, {
      epoch: r.epoch,
      sequence: Number(r.sequence),
      at: Number(r.at_ms),
      values: [Number(r.rx_bytes), Number(r.rx_packets), Number(r.tx_bytes), Number(r.tx_packets)],
    });
  return stored;
}

/** A reading to store as an object's last one. */
export interface CounterRow {
  objectType: CountedType;
  objectId: string;
  hostId: string;
  reading: CounterReading;
}

/** Traffic to add to one object's bucket or period. */
export interface TotalRow {
  objectType: CountedType | 'host';
  objectId: string;
  /** The minute (buckets) or the period's start (periods). */
  start: Date;
  /** Periods only. */
  end?: Date;
  hostId: string;
  instanceId: string | null;
  values: CounterValues;
}

const byKey = <T extends { objectType: string; objectId: string; start?: Date }>(a: T, b: T) =>
  a.objectType < b.objectType
    ? -1
    : a.objectType > b.objectType
      ? 1
      : a.objectId < b.objectId
        ? -1
        : a.objectId > b.objectId
          ? 1
          : (a.start?.getTime() ?? 0) - (b.start?.getTime() ?? 0);

/**
 * Stores the new readings and adds the traffic to the minute buckets and billing periods, in one
 * statement. Each key appears once per list (the caller sums a batch's deltas per key): one
 * statement may not update a row twice. Rows go in key order, as the counters were locked.
 */
export async function writeTotals(tx: Executor, counters: CounterRow[], buckets: TotalRow[], periods: TotalRow[]): Promise<void> {
  if (counters.length + buckets.length + periods.length === 0) return;
  counters.sort((a, b) => byKey(a, b));
  buckets.sort(byKey);
  periods.sort(byKey);
  const column = <T>(rows: readonly T[], get: (row: T) => string | number | null) => arrayLiteral(rows.map(get));
  const value = (i: number) => (r: { values: CounterValues } | CounterRow) => ('reading' in r ? r.reading.values : r.values)[i]!;
  const totals = (rows: TotalRow[]) =>
    sql`${column(rows, value(0))}::text::int8[], ${column(rows, value(1))}::text::int8[], ${column(rows, value(2))}::text::int8[], ${column(rows, value(3))}::text::int8[]`;
  const addUp = (table: string) =>
    sql.raw(
      `rx_bytes = ${table}.rx_bytes + excluded.rx_bytes, rx_packets = ${table}.rx_packets + excluded.rx_packets, ` +
        `tx_bytes = ${table}.tx_bytes + excluded.tx_bytes, tx_packets = ${table}.tx_packets + excluded.tx_packets`,
    );
  await tx.execute(sql`
    with counters as (
      insert into traffic_counters (object_type, object_id, host_id, epoch, sequence, read_at, rx_bytes, rx_packets, tx_bytes, tx_packets)
      select * from unnest(
        ${column(counters, (r) => r.objectType)}::text::text[], ${column(counters, (r) => r.objectId)}::text::uuid[],
        ${column(counters, (r) => r.hostId)}::text::uuid[], ${column(counters, (r) => r.reading.epoch)}::text::text[],
        ${column(counters, (r) => r.reading.sequence)}::text::int8[], ${column(counters, (r) => new Date(r.reading.at).toISOString())}::text::timestamptz[],
        ${column(counters, value(0))}::text::int8[], ${column(counters, value(1))}::text::int8[], ${column(counters, value(2))}::text::int8[], ${column(counters, value(3))}::text::int8[])
      on conflict (object_type, object_id) do update set
        host_id = excluded.host_id, epoch = excluded.epoch, sequence = excluded.sequence, read_at = excluded.read_at,
        rx_bytes = excluded.rx_bytes, rx_packets = excluded.rx_packets, tx_bytes = excluded.tx_bytes, tx_packets = excluded.tx_packets
    ), buckets as (
      insert into traffic_buckets (resolution, object_type, object_id, start, host_id, instance_id, rx_bytes, rx_packets, tx_bytes, tx_packets)
      select 'minute', * from unnest(
        ${column(buckets, (r) => r.objectType)}::text::text[], ${column(buckets, (r) => r.objectId)}::text::uuid[],
        ${column(buckets, (r) => r.start.toISOString())}::text::timestamptz[], ${column(buckets, (r) => r.hostId)}::text::uuid[],
        ${column(buckets, (r) => r.instanceId)}::text::uuid[], ${totals(buckets)})
      on conflict (resolution, object_type, object_id, start) do update set ${addUp('traffic_buckets')}
    )
    insert into traffic_periods (object_type, object_id, period_start, period_end, host_id, instance_id, rx_bytes, rx_packets, tx_bytes, tx_packets)
    select * from unnest(
      ${column(periods, (r) => r.objectType)}::text::text[], ${column(periods, (r) => r.objectId)}::text::uuid[],
      ${column(periods, (r) => r.start.toISOString())}::text::timestamptz[], ${column(periods, (r) => r.end!.toISOString())}::text::timestamptz[],
      ${column(periods, (r) => r.hostId)}::text::uuid[], ${column(periods, (r) => r.instanceId)}::text::uuid[], ${totals(periods)})
    on conflict (object_type, object_id, period_start) do update set ${addUp('traffic_periods')}`);
}
