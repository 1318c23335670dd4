/**
 * Ingest of agents' traffic reports: checks a report at the boundary, computes each object's delta
 * from the last stored reading (see counter-delta.ts), and adds the deltas to the minute buckets and
 * billing periods in one transaction, with the readings they came from. Then it publishes the
 * host's live rates for the interval on the event bus.
 *
 * A report that is wrong as a whole (another host, a future time, too many counters) is refused
 * and nothing is stored; a counter that is wrong on its own (an unknown id, an object of another
 * host, a negative or fractional value) is left out and named in the answer, and the others count.
 */
import { and, eq, inArray, sql } from 'drizzle-orm';
import { inject, injectable } from 'tsyringe';
import {
  MAX_TRAFFIC_EPOCH,
  MAX_TRAFFIC_FORWARDS,
  MAX_TRAFFIC_NICS,
  type ReportTrafficInput,
  type TrafficReading,
  type TrafficRejection,
} from '@gatehouse/agent-protocol';
import type { Actor } from '../auth/actor.js';
import type { Database, Executor } from '../db/database.js';
import { hosts, instances, nics, portForwards, trafficBuckets, trafficCounters, trafficPeriods, users } from '../db/schema.js';
import { ClockToken, DatabaseToken, EventBusToken, LoggerToken, type Clock } from '../di/tokens.js';
import type { EventBus } from '../events/event-bus.js';
import type { InstanceTrafficRates, TrafficRatesMessage } from '../events/event-payloads.js';
import { mayActForHostAgent } from '../services/host-agent-service.js';
import { ForbiddenError, NotFoundError, ValidationError } from '../support/errors.js';
import { isId } from '../support/ids.js';
import type { Logger } from '../support/logger.js';
import { validId } from '../support/validate.js';
import { billingPeriod } from './billing-period.js';
import { TrafficQuota } from './traffic-quota.js';
import { DEFAULT_TRAFFIC_CAP_BPS, counterDelta, type CounterReading, type CounterValues, type DeltaOutcome } from './counter-delta.js';

/** How far ahead of the controller's clock a reading may be (clocks differ a little). */
export const MAX_CLOCK_AHEAD_MS = 60_000;
/** Longest interval a reading may claim. */
export const MAX_TRAFFIC_INTERVAL_MS = 3_600_000;
/** Room below PostgreSQL's 8000-byte NOTIFY limit for one part of a rates message. */
const MAX_MESSAGE_BYTES = 6500;

/** What `report` answers. */
export interface TrafficReportResult {
  /** Counters taken (including replays, which add nothing). */
  counted: number;
  rejected: TrafficRejection[];
  /** How many readings had each outcome. */
  outcomes: Record<DeltaOutcome, number>;
}

/** A counted object of the report, after its checks. */
interface Item {
  objectType: 'nic' | 'port_forward';
  objectId: string;
  instanceId: string;
  ownerId: string;
  billingDay: number | null;
  reading: CounterReading;
  intervalMs: number;
  /** A rate-limited forward's raw count of refused connections (same epoch as its counter). */
  rateLimited?: number;
}

const BOOT_ID = /^[A-Za-z0-9-]{1,64}$/;

function reject(rejected: TrafficRejection[], field: string, value: unknown, message: string): void {
  // a huge value (a 10 MB epoch) is not echoed back whole
  const shown = JSON.stringify(value) ?? String(value);
  rejected.push({ field, value: String(value).slice(0, 200), message: `${field} ${shown.length > 200 ? `${shown.slice(0, 200)}…` : shown} ${message}` });
}

/** Checks a reading's time and interval (the whole report is refused when they are wrong). */
function checkReading(field: string, reading: TrafficReading<unknown>, max: number, now: Date): { at: number; intervalMs: number } {
  if (typeof reading !== 'object' || reading === null || !Array.isArray(reading.counters))
    throw new ValidationError(field, reading, 'must be { at, intervalMs, counters }');
  if (reading.counters.length > max) throw new ValidationError(`${field}.counters`, `${reading.counters.length} counters`, `holds more than ${max} counters`);
  const at = typeof reading.at === 'string' ? Date.parse(reading.at) : NaN;
  if (Number.isNaN(at)) throw new ValidationError(`${field}.at`, reading.at, 'is not an ISO 8601 time');
  if (at > now.getTime() + MAX_CLOCK_AHEAD_MS)
    throw new ValidationError(`${field}.at`, reading.at, `is in the future (the controller's time is ${now.toISOString()})`);
  if (!Number.isInteger(reading.intervalMs) || reading.intervalMs < 1 || reading.intervalMs > MAX_TRAFFIC_INTERVAL_MS)
    throw new ValidationError(`${field}.intervalMs`, reading.intervalMs, `must be an integer from 1 to ${MAX_TRAFFIC_INTERVAL_MS} (ms)`);
  return { at, intervalMs: reading.intervalMs };
}

/** Whether a counter value is a non-negative integer within double precision. */
function validCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function rate(bytes: number, seconds: number): number {
  return seconds > 0 ? Math.round((bytes * 8) / seconds) : 0;
}

/** Takes agents' traffic reports. */
@injectable()
export class TrafficIngest {
  constructor(
    @inject(DatabaseToken) private readonly db: Database,
    @inject(EventBusToken) private readonly events: EventBus,
    @inject(LoggerToken) private readonly logger: Logger,
    @inject(ClockToken) private readonly clock: Clock,
    @inject(TrafficQuota) private readonly quota: TrafficQuota,
  ) {}

  /** Counts one report of a host's agent (its AGENT token or an admin). */
  async report(actor: Actor, input: ReportTrafficInput): Promise<TrafficReportResult> {
    const hostId = validId('input.hostId', input.hostId);
    if (!mayActForHostAgent(actor, hostId))
      throw new ForbiddenError(`input.hostId "${hostId}": only that host's agent token (or an admin) may report its traffic`, 'input.hostId', hostId);
    if (typeof input.bootId !== 'string' || !BOOT_ID.test(input.bootId))
      throw new ValidationError('input.bootId', input.bootId, 'must be 1-64 letters, digits or "-" (the host\'s boot id)');
    if (!Number.isSafeInteger(input.sequence) || input.sequence < 0)
      throw new ValidationError('input.sequence', input.sequence, 'must be a non-negative integer');
    const now = this.clock.now();
    const nicTime = checkReading('input.nics', input.nics, MAX_TRAFFIC_NICS, now);
    const forwardTime = input.forwards ? checkReading('input.forwards', input.forwards, MAX_TRAFFIC_FORWARDS, now) : undefined;
    const [host] = await this.db.select({ id: hosts.id, capBps: hosts.trafficCapBps }).from(hosts).where(eq(hosts.id, hostId));
    if (!host) throw new NotFoundError('input.hostId', hostId, 'host');
    const capBps = host.capBps ?? DEFAULT_TRAFFIC_CAP_BPS;

    const rejected: TrafficRejection[] = [];
    const epochOf = (field: string, epoch: unknown): string | undefined => {
      if (typeof epoch === 'string' && epoch.length >= 1 && epoch.length <= MAX_TRAFFIC_EPOCH) return `${input.bootId}/${epoch}`;
      reject(rejected, field, epoch, `must be 1-${MAX_TRAFFIC_EPOCH} characters`);
      return undefined;
    };
    // per-counter checks; ids looked up below
    const nicReadings = new Map<string, { reading: CounterReading; field: string }>();
    input.nics.counters.forEach((c, n) => {
      const field = `input.nics.counters[${n}]`;
      if (typeof c?.nicId !== 'string' || !isId(c.nicId)) return reject(rejected, `${field}.nicId`, c?.nicId, 'is not a valid id');
      if (nicReadings.has(c.nicId)) return reject(rejected, `${field}.nicId`, c.nicId, 'appears twice in the report');
      for (const key of ['rxBytes', 'rxPackets', 'txBytes', 'txPackets'] as const)
        if (!validCount(c[key])) return reject(rejected, `${field}.${key}`, c[key], 'must be a non-negative integer');
      const epoch = epochOf(`${field}.epoch`, c.epoch);
      if (epoch === undefined) return;
      nicReadings.set(c.nicId, {
        field,
        reading: { epoch, sequence: input.sequence, at: nicTime.at, values: [c.rxBytes, c.rxPackets, c.txBytes, c.txPackets] },
      });
    });
    const forwardReadings = new Map<string, { reading: CounterReading; field: string; rateLimited?: number }>();
    input.forwards?.counters.forEach((c, n) => {
      const field = `input.forwards.counters[${n}]`;
      if (typeof c?.forwardId !== 'string' || !isId(c.forwardId)) return reject(rejected, `${field}.forwardId`, c?.forwardId, 'is not a valid id');
      if (forwardReadings.has(c.forwardId)) return reject(rejected, `${field}.forwardId`, c.forwardId, 'appears twice in the report');
      for (const key of ['bytes', 'packets'] as const)
        if (!validCount(c[key])) return reject(rejected, `${field}.${key}`, c[key], 'must be a non-negative integer');
      const epoch = epochOf(`${field}.epoch`, c.epoch);
      if (epoch === undefined) return;
      // the counter still counts when only its rate-limit count is wrong
      let rateLimited: number | undefined;
      if (c.rateLimited != null) {
        if (validCount(c.rateLimited)) rateLimited = c.rateLimited;
        else reject(rejected, `${field}.rateLimited`, c.rateLimited, 'must be a non-negative integer');
      }
      // a forward's counter is traffic towards it: into the instance
      forwardReadings.set(c.forwardId, {
        field,
        rateLimited,
        reading: { epoch, sequence: input.sequence, at: forwardTime!.at, values: [c.bytes, c.packets, 0, 0] },
      });
    });

    const items: Item[] = [];
    const place = (
      kind: 'nic' | 'port_forward',
      readings: Map<string, { reading: CounterReading; field: string; rateLimited?: number }>,
      rows: { id: string; hostId: string; instanceId: string; ownerId: string; billingDay: number | null }[],
      intervalMs: number,
    ) => {
      const found = new Map(rows.map((r) => [r.id, r]));
      const idKey = kind === 'nic' ? 'nicId' : 'forwardId';
      for (const [id, { reading, field, rateLimited }] of readings) {
        const row = found.get(id);
        if (!row) reject(rejected, `${field}.${idKey}`, id, `is not a ${kind === 'nic' ? 'NIC' : 'port forward'} of any instance`);
        else if (row.hostId !== hostId) reject(rejected, `${field}.${idKey}`, id, `belongs to another host (${row.hostId}), not ${hostId}`);
        else
          items.push({
            objectType: kind,
            objectId: id,
            instanceId: row.instanceId,
            ownerId: row.ownerId,
            billingDay: row.billingDay,
            reading,
            intervalMs,
            ...(rateLimited !== undefined ? { rateLimited } : {}),
          });
      }
    };
    if (nicReadings.size > 0) {
      const rows = await this.db
        .select({ id: nics.id, hostId: instances.hostId, instanceId: instances.id, ownerId: instances.ownerId, billingDay: users.billingDay })
        .from(nics)
        .innerJoin(instances, eq(instances.id, nics.instanceId))
        .innerJoin(users, eq(users.id, instances.ownerId))
        .where(inArray(nics.id, [...nicReadings.keys()]));
      place('nic', nicReadings, rows, nicTime.intervalMs);
    }
    if (forwardReadings.size > 0) {
      const rows = await this.db
        .select({
          id: portForwards.id,
          hostId: portForwards.hostId,
          instanceId: portForwards.instanceId,
          ownerId: portForwards.ownerId,
          billingDay: users.billingDay,
        })
        .from(portForwards)
        .innerJoin(users, eq(users.id, portForwards.ownerId))
        .where(inArray(portForwards.id, [...forwardReadings.keys()]));
      place('port_forward', forwardReadings, rows, forwardTime!.intervalMs);
    }

    const outcomes: Record<DeltaOutcome, number> = { first: 0, counted: 0, replay: 0, reset: 0, discarded: 0 };
    const rates = new Map<string, { item: Item; rxBps: number; txBps: number }>();
    await this.db.transaction(async (tx) => {
      const stored = new Map<string, CounterReading>();
      for (const kind of ['nic', 'port_forward'] as const) {
        const ids = items.filter((i) => i.objectType === kind).map((i) => i.objectId);
        if (ids.length === 0) continue;
        // locked: two replicas taking reports of one host (a reconnecting agent) count each delta once
        const rows = await tx
          .select()
          .from(trafficCounters)
          .where(and(eq(trafficCounters.objectType, kind), inArray(trafficCounters.objectId, ids)))
          .for('update');
        for (const r of rows)
          stored.set(`${kind}:${r.objectId}`, {
            epoch: r.epoch,
            sequence: r.sequence,
            at: r.readAt.getTime(),
            values: [r.rxBytes, r.rxPackets, r.txBytes, r.txPackets],
          });
      }
      const minute = new Date(Math.floor(now.getTime() / 60_000) * 60_000);
      const counterRows: (typeof trafficCounters.$inferInsert)[] = [];
      const bucketRows: (typeof trafficBuckets.$inferInsert)[] = [];
      const periodRows: (typeof trafficPeriods.$inferInsert)[] = [];
      const hostSum: [number, number, number, number] = [0, 0, 0, 0];
      const add = (objectType: 'nic' | 'port_forward' | 'host', objectId: string, instanceId: string | null, billingDay: number | null, d: CounterValues) => {
        const totals = { rxBytes: d[0], rxPackets: d[1], txBytes: d[2], txPackets: d[3] };
        bucketRows.push({ resolution: 'minute', objectType, objectId, start: minute, hostId, instanceId, ...totals });
        const period = billingPeriod(now, billingDay);
        periodRows.push({ objectType, objectId, periodStart: period.start, periodEnd: period.end, hostId, instanceId, ...totals });
      };
      const limitReadings: { item: Item; epoch: string; value: number }[] = [];
      for (const item of items) {
        const result = counterDelta(stored.get(`${item.objectType}:${item.objectId}`), item.reading, capBps, item.intervalMs);
        outcomes[result.outcome]++;
        if (result.outcome === 'replay') continue;
        if (item.rateLimited !== undefined) limitReadings.push({ item, epoch: item.reading.epoch, value: item.rateLimited });
        if (result.outcome === 'discarded')
          this.logger.warn(`discarded an impossible traffic delta of ${item.objectType} ${item.objectId} on host ${hostId} (over ${capBps} bit/s)`, {
            values: item.reading.values,
            stored: stored.get(`${item.objectType}:${item.objectId}`)?.values,
          });
        const r = result.next;
        counterRows.push({
          objectType: item.objectType,
          objectId: item.objectId,
          hostId,
          epoch: r.epoch,
          sequence: r.sequence,
          readAt: new Date(r.at),
          rxBytes: r.values[0],
          rxPackets: r.values[1],
          txBytes: r.values[2],
          txPackets: r.values[3],
        });
        rates.set(item.objectId, { item, rxBps: rate(result.delta[0], result.seconds), txBps: rate(result.delta[2], result.seconds) });
        if (result.delta.every((v) => v === 0)) continue;
        add(item.objectType, item.objectId, item.instanceId, item.billingDay, result.delta);
        if (item.objectType === 'nic') result.delta.forEach((v, i) => (hostSum[i] = hostSum[i]! + v));
      }
      if (hostSum.some((v) => v > 0)) add('host', hostId, null, null, hostSum);
      await this.countRateLimited(tx, limitReadings, now);
      const addUp = <T extends typeof trafficBuckets | typeof trafficPeriods>(table: T) => ({
        rxBytes: sql`${table.rxBytes} + excluded.rx_bytes`,
        txBytes: sql`${table.txBytes} + excluded.tx_bytes`,
        rxPackets: sql`${table.rxPackets} + excluded.rx_packets`,
        txPackets: sql`${table.txPackets} + excluded.tx_packets`,
      });
      if (counterRows.length > 0)
        await tx
          .insert(trafficCounters)
          .values(counterRows)
          .onConflictDoUpdate({
            target: [trafficCounters.objectType, trafficCounters.objectId],
            set: {
              hostId: sql`excluded.host_id`,
              epoch: sql`excluded.epoch`,
              sequence: sql`excluded.sequence`,
              readAt: sql`excluded.read_at`,
              rxBytes: sql`excluded.rx_bytes`,
              rxPackets: sql`excluded.rx_packets`,
              txBytes: sql`excluded.tx_bytes`,
              txPackets: sql`excluded.tx_packets`,
            },
          });
      if (bucketRows.length > 0)
        await tx
          .insert(trafficBuckets)
          .values(bucketRows)
          .onConflictDoUpdate({
            target: [trafficBuckets.resolution, trafficBuckets.objectType, trafficBuckets.objectId, trafficBuckets.start],
            set: addUp(trafficBuckets),
          });
      if (periodRows.length > 0)
        await tx
          .insert(trafficPeriods)
          .values(periodRows)
          .onConflictDoUpdate({ target: [trafficPeriods.objectType, trafficPeriods.objectId, trafficPeriods.periodStart], set: addUp(trafficPeriods) });
    });
    if (rates.size > 0) this.publish(hostId, nicTime.at, nicTime.intervalMs, rates);
    // the report is counted whatever the quota check says; a failed check is retried by the next report or the timer
    const counted = [...new Set([...rates.values()].map((r) => r.item.instanceId))];
    await this.quota.check(counted).catch((err: unknown) => this.logger.warn(`traffic quota check of host ${hostId} failed: ${(err as Error).message}`));
    return { counted: items.length, rejected, outcomes };
  }

  /**
   * Adds what each rate-limited forward's limits refused since the last reading to its
   * `rateLimitedConnections`: the difference to the last raw value, or the whole value when the
   * counter restarted (a new epoch, a smaller value) or is read for the first time (it counts from
   * zero from when the limit came). Replays do not get here (their forward counter was a replay).
   */
  private async countRateLimited(tx: Executor, readings: { item: Item; epoch: string; value: number }[], now: Date): Promise<void> {
    if (readings.length === 0) return;
    const rows = await tx
      .select({ id: portForwards.id, epoch: portForwards.rateLimitedEpoch, raw: portForwards.rateLimitedRaw, since: portForwards.rateLimitedSince })
      .from(portForwards)
      .where(
        inArray(
          portForwards.id,
          readings.map((r) => r.item.objectId),
        ),
      );
    const stored = new Map(rows.map((r) => [r.id, r]));
    for (const { item, epoch, value } of readings) {
      const before = stored.get(item.objectId);
      if (!before) continue; // deleted meanwhile
      if (before.epoch === epoch && before.raw === value) continue;
      const restarted = before.raw === null || before.epoch !== epoch || value < before.raw;
      const added = restarted ? value : value - before.raw!;
      await tx
        .update(portForwards)
        .set({
          rateLimitedConnections: sql`${portForwards.rateLimitedConnections} + ${added}`,
          rateLimitedSince: before.since ?? now,
          rateLimitedEpoch: epoch,
          rateLimitedRaw: value,
        })
        .where(eq(portForwards.id, item.objectId));
    }
  }

  /** Publishes the host's rates of this report, in parts small enough for one NOTIFY each. */
  private publish(hostId: string, at: number, intervalMs: number, rates: Map<string, { item: Item; rxBps: number; txBps: number }>): void {
    const byInstance = new Map<string, InstanceTrafficRates>();
    const host = { rxBps: 0, txBps: 0 };
    for (const { item, rxBps, txBps } of rates.values()) {
      let entry = byInstance.get(item.instanceId);
      if (!entry) {
        entry = { instanceId: item.instanceId, ownerId: item.ownerId, rxBps: 0, txBps: 0, nics: [], forwards: [] };
        byInstance.set(item.instanceId, entry);
      }
      if (item.objectType === 'nic') {
        entry.nics.push([item.objectId, rxBps, txBps]);
        entry.rxBps += rxBps;
        entry.txBps += txBps;
        host.rxBps += rxBps;
        host.txBps += txBps;
      } else {
        entry.forwards.push([item.objectId, rxBps, txBps]);
      }
    }
    // an instance with thousands of forwards goes out in pieces: its forwards in `continued` entries
    const entries: InstanceTrafficRates[] = [];
    for (const entry of byInstance.values()) {
      const perPart = 100;
      if (entry.forwards.length <= perPart) {
        entries.push(entry);
        continue;
      }
      entries.push({ ...entry, forwards: entry.forwards.slice(0, perPart) });
      for (let i = perPart; i < entry.forwards.length; i += perPart)
        entries.push({ ...entry, rxBps: 0, txBps: 0, nics: [], forwards: entry.forwards.slice(i, i + perPart), continued: true });
    }
    const parts: InstanceTrafficRates[][] = [[]];
    let size = 0;
    for (const entry of entries) {
      const bytes = JSON.stringify(entry).length;
      if (size + bytes > MAX_MESSAGE_BYTES && parts.at(-1)!.length > 0) {
        parts.push([]);
        size = 0;
      }
      parts.at(-1)!.push(entry);
      size += bytes;
    }
    parts.forEach((instances, part) => {
      const message: TrafficRatesMessage = { hostId, at, intervalMs, part, parts: parts.length, host, instances };
      this.events.publish('trafficRates', message);
    });
  }
}
