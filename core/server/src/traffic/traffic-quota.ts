/**
 * Monthly traffic quotas: after each traffic report (for the instances in it) and on a timer (for
 * every limit, which is what lifts a throttle when the billing period rolls over), each bandwidth
 * limit with a quota is compared with its billing-period total (rx + tx; an instance-wide limit
 * counts all NICs of the instance, a NIC's limit that NIC). Reaching 80 % is a warning, 100 %
 * exceeded: with THROTTLE the throttle rate goes into the host's desired state (both directions,
 * every NIC the limit covers; see desired-state/compile.ts) and the agent applies it like any limit;
 * NOTIFY only marks it. Every change of level writes an audit entry and a `trafficQuotaChanged`
 * event. The level is persisted per limit and period (traffic_quota_states), so a restarted
 * controller finds the throttle where it was, and a restarted agent gets it with the desired
 * state; a new period (or a raised quota) brings the limit back to normal and lifts the throttle.
 */
import { and, eq, inArray, isNotNull, or, sql } from 'drizzle-orm';
import { inject, injectable } from 'tsyringe';
import { isAdmin, systemActor, type Actor } from '../auth/actor.js';
import { rowsOf, type Database } from '../db/database.js';
import { bandwidthLimits, instances, trafficQuotaStates, users } from '../db/schema.js';
import { ClockToken, DatabaseToken, EventBusToken, LoggerToken, type Clock } from '../di/tokens.js';
import type { EventBus } from '../events/event-bus.js';
import type { TrafficQuotaChange } from '../events/event-payloads.js';
import { AuditService } from '../services/audit-service.js';
import { bumpHostRevision } from '../services/revision.js';
import { newId } from '../support/ids.js';
import type { Logger } from '../support/logger.js';
import { billingPeriod } from './billing-period.js';
import { PeriodicTask } from './periodic-task.js';

/** A quota's level in its period. */
export type QuotaLevel = TrafficQuotaChange['level'];

/** The share of the quota at which a warning is given. */
export const QUOTA_WARNING_SHARE = 0.8;

/** Where one limit's quota stands now (what `period` exposes). */
export interface QuotaStanding {
  level: QuotaLevel;
  throttled: boolean;
  /** When the level last changed in this period; null: normal all period. */
  since: Date | null;
}

/** The level a total reaches against a quota. */
export function quotaLevel(usedBytes: number, quotaBytes: number | null): QuotaLevel {
  if (quotaBytes === null || quotaBytes <= 0) return 'normal';
  if (usedBytes >= quotaBytes) return 'exceeded';
  return usedBytes >= quotaBytes * QUOTA_WARNING_SHARE ? 'warning' : 'normal';
}

/** A limit to check, with its stored state. */
interface Candidate {
  limit: typeof bandwidthLimits.$inferSelect;
  hostId: string;
  billingDay: number | null;
  state: typeof trafficQuotaStates.$inferSelect | null;
}

/** Checks quotas and keeps their state; see the file comment. */
@injectable()
export class TrafficQuota {
  private readonly task: PeriodicTask;

  constructor(
    @inject(DatabaseToken) private readonly db: Database,
    @inject(EventBusToken) private readonly events: EventBus,
    @inject(LoggerToken) private readonly logger: Logger,
    @inject(ClockToken) private readonly clock: Clock,
    @inject(AuditService) private readonly audit: AuditService,
  ) {
    this.task = new PeriodicTask('traffic quota check', () => this.check(), logger);
  }

  /** Checks every quota every `everyMs` (default 10 s) until `stop`: a period's end lifts throttles within that time. */
  start(everyMs = 10_000): void {
    this.task.start(everyMs);
  }

  /** Stops the timer and waits for a check in progress. */
  async stop(): Promise<void> {
    await this.task.stop();
  }

  /**
   * Checks the quotas of these instances (all when absent) against their current period and
   * applies the changes of level; returns them (also published on `trafficQuotaChanged`).
   */
  async check(instanceIds?: readonly string[]): Promise<TrafficQuotaChange[]> {
    if (instanceIds && instanceIds.length === 0) return [];
    // limits with a quota, and limits whose quota was removed while it was marked
    const rows = await this.db
      .select({ limit: bandwidthLimits, hostId: instances.hostId, billingDay: users.billingDay, state: trafficQuotaStates })
      .from(bandwidthLimits)
      .innerJoin(instances, eq(instances.id, bandwidthLimits.instanceId))
      .innerJoin(users, eq(users.id, instances.ownerId))
      .leftJoin(trafficQuotaStates, eq(trafficQuotaStates.limitId, bandwidthLimits.id))
      .where(
        and(
          or(isNotNull(bandwidthLimits.monthlyQuotaBytes), isNotNull(trafficQuotaStates.limitId)),
          instanceIds ? inArray(bandwidthLimits.instanceId, [...instanceIds]) : undefined,
        ),
      );
    if (rows.length === 0) return [];
    const now = this.clock.now();
    const used = await this.periodTotals(rows, now);
    const changes: TrafficQuotaChange[] = [];
    for (const candidate of rows) {
      const change = await this.settle(candidate, used(candidate), now);
      if (change) changes.push(change);
    }
    return changes;
  }

  /** Totals (rx + tx) of each candidate's current period, read in one query. */
  private async periodTotals(candidates: readonly Candidate[], now: Date): Promise<(c: Candidate) => number> {
    const ids = [...new Set(candidates.map((c) => c.limit.instanceId))];
    const starts = [...new Set(candidates.map((c) => billingPeriod(now, c.billingDay).start.toISOString()))];
    const rows = rowsOf<{ instance_id: string; object_id: string; period_start: string | Date; total: string | number }>(
      await this.db.execute(sql`
        select instance_id, object_id, period_start, sum(rx_bytes + tx_bytes) as total from traffic_periods
        where object_type = 'nic' and instance_id in (${sql.join(
          ids.map((id) => sql`${id}::uuid`),
          sql`, `,
        )})
          and period_start in (${sql.join(
            starts.map((s) => sql`${s}::timestamptz`),
            sql`, `,
          )})
        group by instance_id, object_id, period_start`),
    );
    const totals = new Map<string, number>();
    const add = (key: string, n: number) => totals.set(key, (totals.get(key) ?? 0) + n);
    for (const r of rows) {
      const start = new Date(r.period_start).getTime();
      add(`${r.instance_id}/${start}`, Number(r.total));
      add(`${r.instance_id}/${r.object_id}/${start}`, Number(r.total));
    }
    return (c) => {
      const start = billingPeriod(now, c.billingDay).start.getTime();
      return totals.get(c.limit.nicId === null ? `${c.limit.instanceId}/${start}` : `${c.limit.instanceId}/${c.limit.nicId}/${start}`) ?? 0;
    };
  }

  /** Brings one limit's state to what its total says; a change of level or throttle is audited, announced and (throttle) put into the desired state. */
  private async settle(c: Candidate, usedBytes: number, now: Date): Promise<TrafficQuotaChange | undefined> {
    const period = billingPeriod(now, c.billingDay);
    const quotaBytes = c.limit.monthlyQuotaBytes;
    const level = quotaLevel(usedBytes, quotaBytes);
    const throttled = level === 'exceeded' && c.limit.quotaAction === 'throttle' && c.limit.throttleBps !== null;
    if (!c.state) {
      if (level === 'normal') return undefined;
    } else if (c.state.periodStart.getTime() === period.start.getTime()) {
      if (level === c.state.level && throttled === c.state.throttled) return undefined;
    } else if (level === 'normal' && c.state.level === 'normal' && !c.state.throttled) {
      // a new period, normal before and after: only the period moves, nothing to announce
      await this.db.update(trafficQuotaStates).set({ periodStart: period.start }).where(eq(trafficQuotaStates.limitId, c.limit.id));
      return undefined;
    }
    const change: TrafficQuotaChange = {
      limitId: c.limit.id,
      instanceId: c.limit.instanceId,
      nicId: c.limit.nicId,
      ownerId: c.limit.ownerId,
      hostId: c.hostId,
      periodStart: period.start.getTime(),
      periodEnd: period.end.getTime(),
      level,
      previousLevel: c.state?.level ?? 'normal',
      action: c.limit.quotaAction ?? 'notify',
      throttled,
      throttleBps: throttled ? c.limit.throttleBps : null,
      usedBytes,
      quotaBytes: quotaBytes ?? 0,
      at: now.getTime(),
    };
    const applied = await this.audit.transact(systemActor(newId()), async (tx, record) => {
      // another replica may have settled it meanwhile: the row is locked and compared again
      await tx
        .insert(trafficQuotaStates)
        .values({
          limitId: c.limit.id,
          instanceId: c.limit.instanceId,
          periodStart: period.start,
          level: 'normal',
          throttled: false,
          usedBytes: 0,
          quotaBytes: quotaBytes ?? 0,
          changedAt: now,
        })
        .onConflictDoNothing();
      const [stored] = await tx.select().from(trafficQuotaStates).where(eq(trafficQuotaStates.limitId, c.limit.id)).for('update');
      if (!stored || (stored.periodStart.getTime() === period.start.getTime() && stored.level === level && stored.throttled === throttled)) return false;
      change.previousLevel = stored.level;
      await tx
        .update(trafficQuotaStates)
        .set({ periodStart: period.start, level, throttled, usedBytes, quotaBytes: quotaBytes ?? 0, changedAt: now })
        .where(eq(trafficQuotaStates.limitId, c.limit.id));
      if (throttled !== stored.throttled) {
        const host = await bumpHostRevision(tx, record, c.hostId);
        await tx
          .update(bandwidthLimits)
          .set({ status: 'pending', statusError: null, changedRevision: host.desiredRevision })
          .where(eq(bandwidthLimits.id, c.limit.id));
      }
      await record({
        action: `traffic.quota.${level}`,
        objectType: 'BandwidthLimit',
        objectId: c.limit.id,
        ownerId: c.limit.ownerId,
        before: { level: stored.level, throttled: stored.throttled, periodStart: stored.periodStart },
        after: { level, throttled, periodStart: period.start, usedBytes, quotaBytes, throttleBps: change.throttleBps },
      });
      return true;
    });
    if (!applied) return undefined;
    if (level !== 'normal')
      this.logger.warn(
        `traffic quota of limit ${c.limit.id} (instance ${c.limit.instanceId}) ${level}: ${usedBytes} of ${quotaBytes} bytes${throttled ? ', throttled' : ''}`,
      );
    this.events.publish('trafficQuotaChanged', change);
    return change;
  }

  /**
   * Where a limit's quota stands in the current period (normal when nothing was recorded for it).
   * `throttled` is what is in force: a throttle of an earlier period stays true until the check
   * lifts it (the next report or the timer, seconds after the period starts), in the same
   * transaction that puts the lift into the host's desired state.
   */
  async standing(limitId: string): Promise<QuotaStanding> {
    const [state] = await this.db.select().from(trafficQuotaStates).where(eq(trafficQuotaStates.limitId, limitId));
    const [row] = await this.db
      .select({ billingDay: users.billingDay })
      .from(bandwidthLimits)
      .innerJoin(users, eq(users.id, bandwidthLimits.ownerId))
      .where(eq(bandwidthLimits.id, limitId));
    const current = billingPeriod(this.clock.now(), row?.billingDay ?? null).start.getTime();
    if (!state) return { level: 'normal', throttled: false, since: null };
    if (state.periodStart.getTime() !== current) return { level: 'normal', throttled: state.throttled, since: null };
    return { level: state.level, throttled: state.throttled, since: state.level === 'normal' ? null : state.changedAt };
  }

  /** Changes of level the actor may see (owners their own, admins all), narrowed to `instanceIds` when given. */
  async *watch(actor: Actor, instanceIds: readonly string[] | null): AsyncGenerator<TrafficQuotaChange> {
    const admin = isAdmin(actor);
    const wanted = instanceIds ? new Set(instanceIds) : null;
    for await (const change of this.events.subscribe('trafficQuotaChanged')) {
      if (!admin && change.ownerId !== actor.userId) continue;
      if (wanted && !wanted.has(change.instanceId)) continue;
      yield change;
    }
  }
}
