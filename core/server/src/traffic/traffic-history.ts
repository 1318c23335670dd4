/**
 * Stored traffic: rollups of finished minutes into 5-minute, hourly and daily buckets, pruning by
 * age, and the reads behind GraphQL (history curves and billing-period totals with the 95th
 * percentile). Rollups are exact and run once per minute whatever the number of replicas: the
 * watermark row is locked while a replica rolls, and everything after it is read from the minute
 * buckets, so a query never misses the minutes not yet rolled up.
 */
import { and, eq, isNull, sql, type SQL } from 'drizzle-orm';
import { inject, injectable } from 'tsyringe';
import { rowsOf, type Database } from '../db/database.js';
import { bandwidthLimits, instances, nics, portForwards, trafficPeriods, trafficRollups, users } from '../db/schema.js';
import { ClockToken, DatabaseToken, LoggerToken, type Clock } from '../di/tokens.js';
import type { Logger } from '../support/logger.js';
import { P95_SAMPLE_MS, billingPeriod, percentile95Bps } from './billing-period.js';
import { PeriodicTask } from './periodic-task.js';

/** Whose traffic: an instance (the sum of its NICs), one NIC, one port forward, or a host (the sum of its NICs). */
export interface TrafficSubject {
  kind: 'instance' | 'nic' | 'port_forward' | 'host';
  id: string;
}

/** History ranges and their steps. */
export const TRAFFIC_RANGES = {
  LAST_HOUR: { points: 60, stepSeconds: 60, resolution: 'minute' },
  LAST_24H: { points: 288, stepSeconds: 300, resolution: 'minute' },
  LAST_7D: { points: 168, stepSeconds: 3600, resolution: 'hour' },
  LAST_30D: { points: 30, stepSeconds: 86_400, resolution: 'day' },
} as const;

/** A history range's name. */
export type TrafficRange = keyof typeof TRAFFIC_RANGES;

/** One point of a history curve: the bytes of the step starting at `at`. */
export interface TrafficPoint {
  at: Date;
  rxBytes: number;
  txBytes: number;
  stepSeconds: number;
}

/** Totals of one billing period. */
export interface TrafficPeriodTotals {
  start: Date;
  end: Date;
  rxBytes: number;
  txBytes: number;
  rxP95Bps: number;
  txP95Bps: number;
  quotaBytes: number | null;
  /** Now, or the period's end when it is over. */
  asOf: Date;
  /** The bandwidth limit whose quota applies, for the current period only (its standing is read from TrafficQuota). */
  quotaLimitId: string | null;
}

/** How long each resolution is kept. */
export const TRAFFIC_RETENTION_MS = {
  minute: 48 * 3_600_000,
  five_minute: 40 * 86_400_000,
  hour: 90 * 86_400_000,
  day: 731 * 86_400_000,
} as const;

/** How long after a minute ends it is rolled up (reports of that minute still committing). */
const ROLLUP_GRACE_MS = 10_000;
const ROLLUPS = [
  ['five_minute', 300],
  ['hour', 3600],
  ['day', 86_400],
] as const;

const iso = (d: Date) => d.toISOString();

/** The rows of `traffic_buckets` (one resolution) that belong to a subject. */
function subjectFilter(subject: TrafficSubject): SQL {
  switch (subject.kind) {
    case 'instance':
      return sql`object_type = 'nic' and instance_id = ${subject.id}`;
    case 'nic':
      return sql`object_type = 'nic' and object_id = ${subject.id}`;
    case 'port_forward':
      return sql`object_type = 'port_forward' and object_id = ${subject.id}`;
    case 'host':
      return sql`object_type = 'host' and object_id = ${subject.id}`;
  }
}

/** Rollups, pruning and reads of stored traffic. */
@injectable()
export class TrafficHistory {
  private readonly task: PeriodicTask;

  constructor(
    @inject(DatabaseToken) private readonly db: Database,
    @inject(LoggerToken) logger: Logger,
    @inject(ClockToken) private readonly clock: Clock,
  ) {
    this.task = new PeriodicTask('traffic rollup', () => this.maintain(), logger);
  }

  /** Rolls up and prunes every `everyMs` (default a minute) until `stop`. */
  start(everyMs = 60_000): void {
    this.task.start(everyMs);
  }

  /** Stops the timer and waits for a rollup in progress. */
  async stop(): Promise<void> {
    await this.task.stop();
  }

  /** One round: rolls up the finished minutes, then prunes what is past its retention. */
  async maintain(): Promise<void> {
    await this.rollUp();
    await this.prune();
  }

  /** Adds the minutes finished since the last rollup to the 5-minute, hourly and daily buckets (exactly once). */
  async rollUp(): Promise<{ from: Date; until: Date } | undefined> {
    const now = this.clock.now().getTime();
    const until = new Date(Math.floor((now - ROLLUP_GRACE_MS) / 60_000) * 60_000);
    return this.db.transaction(async (tx) => {
      // the first rollup takes every minute there is
      await tx
        .insert(trafficRollups)
        .values({ id: 'minute', rolledUntil: new Date(0) })
        .onConflictDoNothing();
      const [mark] = await tx.select().from(trafficRollups).where(eq(trafficRollups.id, 'minute')).for('update');
      const from = mark!.rolledUntil;
      if (from >= until) return undefined;
      for (const [resolution, seconds] of ROLLUPS) {
        await tx.execute(sql`
          insert into traffic_buckets (resolution, object_type, object_id, start, host_id, instance_id, rx_bytes, tx_bytes, rx_packets, tx_packets)
          select ${resolution}, object_type, object_id, to_timestamp(floor(extract(epoch from start) / ${seconds}) * ${seconds}) as slot,
                 min(host_id::text)::uuid, min(instance_id::text)::uuid, sum(rx_bytes), sum(tx_bytes), sum(rx_packets), sum(tx_packets)
          from traffic_buckets
          where resolution = 'minute' and start >= ${iso(from)}::timestamptz and start < ${iso(until)}::timestamptz
          group by object_type, object_id, slot
          on conflict (resolution, object_type, object_id, start) do update set
            rx_bytes = traffic_buckets.rx_bytes + excluded.rx_bytes, tx_bytes = traffic_buckets.tx_bytes + excluded.tx_bytes,
            rx_packets = traffic_buckets.rx_packets + excluded.rx_packets, tx_packets = traffic_buckets.tx_packets + excluded.tx_packets`);
      }
      await tx.update(trafficRollups).set({ rolledUntil: until }).where(eq(trafficRollups.id, 'minute'));
      return { from, until };
    });
  }

  /** Deletes buckets older than their retention (minutes only once rolled up). */
  async prune(): Promise<void> {
    const now = this.clock.now().getTime();
    const [mark] = await this.db.select().from(trafficRollups).where(eq(trafficRollups.id, 'minute'));
    for (const [resolution, keepMs] of Object.entries(TRAFFIC_RETENTION_MS)) {
      let before = now - keepMs;
      if (resolution === 'minute') before = Math.min(before, mark?.rolledUntil.getTime() ?? 0);
      await this.db.execute(sql`delete from traffic_buckets where resolution = ${resolution} and start < ${iso(new Date(before))}::timestamptz`);
    }
  }

  /** Where rolled-up buckets end: later minutes are read from the minute buckets. */
  private async rolledUntil(): Promise<Date> {
    const [mark] = await this.db.select().from(trafficRollups).where(eq(trafficRollups.id, 'minute'));
    return mark?.rolledUntil ?? new Date(0);
  }

  /**
   * Byte sums per slot of `stepSeconds` in [from, to) from `resolution` buckets, completed with
   * the minutes not yet rolled up into them.
   */
  private async slots(subject: TrafficSubject, resolution: string, stepSeconds: number, from: Date, to: Date): Promise<Map<number, [number, number]>> {
    const filter = subjectFilter(subject);
    const source =
      resolution === 'minute'
        ? sql`select start, rx_bytes, tx_bytes from traffic_buckets where resolution = 'minute' and ${filter}
                and start >= ${iso(from)}::timestamptz and start < ${iso(to)}::timestamptz`
        : sql`select start, rx_bytes, tx_bytes from traffic_buckets where resolution = ${resolution} and ${filter}
                and start >= ${iso(from)}::timestamptz and start < ${iso(to)}::timestamptz
              union all
              select start, rx_bytes, tx_bytes from traffic_buckets where resolution = 'minute' and ${filter}
                and start >= ${iso(new Date(Math.max((await this.rolledUntil()).getTime(), from.getTime())))}::timestamptz and start < ${iso(to)}::timestamptz`;
    const rows = rowsOf<{ slot: string | number; rx: string | number; tx: string | number }>(
      await this.db.execute(sql`
        select floor(extract(epoch from start) / ${stepSeconds}) * ${stepSeconds} as slot, sum(rx_bytes) as rx, sum(tx_bytes) as tx
        from (${source}) as s group by slot`),
    );
    return new Map(rows.map((r) => [Number(r.slot) * 1000, [Number(r.rx), Number(r.tx)]]));
  }

  /** The curve of a range: one point per step up to now (steps without traffic are 0). */
  async history(subject: TrafficSubject, range: TrafficRange): Promise<TrafficPoint[]> {
    const { points, stepSeconds, resolution } = TRAFFIC_RANGES[range];
    const stepMs = stepSeconds * 1000;
    const end = Math.floor(this.clock.now().getTime() / stepMs) * stepMs + stepMs;
    const start = end - points * stepMs;
    const slots = await this.slots(subject, resolution, stepSeconds, new Date(start), new Date(end));
    const curve: TrafficPoint[] = [];
    for (let at = start; at < end; at += stepMs) {
      const [rxBytes, txBytes] = slots.get(at) ?? [0, 0];
      curve.push({ at: new Date(at), rxBytes, txBytes, stepSeconds });
    }
    return curve;
  }

  /** The billing day of the user a subject's traffic is billed to (null: calendar months; hosts always). */
  private async billingDay(subject: TrafficSubject): Promise<number | null> {
    const day = { day: users.billingDay };
    let rows: { day: number | null }[] = [];
    if (subject.kind === 'port_forward')
      rows = await this.db.select(day).from(portForwards).innerJoin(users, eq(users.id, portForwards.ownerId)).where(eq(portForwards.id, subject.id));
    else if (subject.kind === 'instance')
      rows = await this.db.select(day).from(instances).innerJoin(users, eq(users.id, instances.ownerId)).where(eq(instances.id, subject.id));
    else if (subject.kind === 'nic')
      rows = await this.db
        .select(day)
        .from(nics)
        .innerJoin(instances, eq(instances.id, nics.instanceId))
        .innerJoin(users, eq(users.id, instances.ownerId))
        .where(eq(nics.id, subject.id));
    return rows[0]?.day ?? null;
  }

  /** The monthly quota that applies: an instance's instance-wide limit, a NIC's own limit; none for forwards and hosts. */
  private async quota(subject: TrafficSubject): Promise<{ id: string; quota: number | null } | null> {
    if (subject.kind !== 'instance' && subject.kind !== 'nic') return null;
    const where =
      subject.kind === 'instance' ? and(eq(bandwidthLimits.instanceId, subject.id), isNull(bandwidthLimits.nicId)) : eq(bandwidthLimits.nicId, subject.id);
    const [limit] = await this.db.select({ id: bandwidthLimits.id, quota: bandwidthLimits.monthlyQuotaBytes }).from(bandwidthLimits).where(where);
    return limit ?? null;
  }

  /** Totals, 95th percentiles and quota of the billing period `offset` periods before the current one. */
  async period(subject: TrafficSubject, offset = 0): Promise<TrafficPeriodTotals> {
    const now = this.clock.now();
    const { start, end } = billingPeriod(now, await this.billingDay(subject), offset);
    const objectFilter =
      subject.kind === 'instance'
        ? and(eq(trafficPeriods.objectType, 'nic'), eq(trafficPeriods.instanceId, subject.id))
        : and(eq(trafficPeriods.objectType, subject.kind), eq(trafficPeriods.objectId, subject.id));
    const [totals] = await this.db
      .select({ rx: sql<string>`coalesce(sum(${trafficPeriods.rxBytes}), 0)`, tx: sql<string>`coalesce(sum(${trafficPeriods.txBytes}), 0)` })
      .from(trafficPeriods)
      .where(and(objectFilter, eq(trafficPeriods.periodStart, start)));
    const asOf = new Date(Math.min(now.getTime(), end.getTime()));
    const samples = Math.max(0, Math.ceil((asOf.getTime() - start.getTime()) / P95_SAMPLE_MS));
    const slots = await this.slots(subject, 'five_minute', P95_SAMPLE_MS / 1000, start, end);
    const values = [...slots.values()];
    const limit = await this.quota(subject);
    return {
      start,
      end,
      rxBytes: Number(totals?.rx ?? 0),
      txBytes: Number(totals?.tx ?? 0),
      rxP95Bps: percentile95Bps(
        values.map((v) => v[0]),
        samples,
      ),
      txP95Bps: percentile95Bps(
        values.map((v) => v[1]),
        samples,
      ),
      quotaBytes: limit?.quota ?? null,
      quotaLimitId: offset === 0 && limit?.quota != null ? limit.id : null,
      asOf,
    };
  }
}
