/**
 * Ingest of agents' traffic reports: checks a report at the boundary, computes each object's delta
 * from the last stored reading (see counter-delta.ts), and adds the deltas to the minute buckets and
 * billing periods in one transaction, with the readings they came from. The host's live rates for
 * the interval go out on the event bus as soon as the deltas are known, before they are written.
 *
 * Reports are written in batches: those arriving while a batch is being written wait and go into
 * the next one, whatever their hosts, so a batch costs the same few set-based statements
 * (traffic-write.ts) for one report or ten. Within a batch the readings of each object are taken
 * in arrival order, each against the reading the one before it left (the stored one for the
 * first), exactly as if every report had its own transaction: a replay adds 0, a reset counts from
 * zero, the cap holds per reading; the deltas landing on one bucket or period are summed.
 *
 * A report that is wrong as a whole (another host, a future time, too many counters, an unknown
 * host) is refused and nothing of it is stored; a counter that is wrong on its own (an unknown id,
 * an object of another host, a negative or fractional value) is left out and named in the answer,
 * and the others count. A failure of the batch's transaction fails every report in it, and none
 * of them is counted.
 */
import { eq, inArray, sql } from 'drizzle-orm';
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
import { portForwards } from '../db/schema.js';
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
import { lockCounters, lookUp, writeTotals, type CountedType, type CounterRow, type TotalRow } from './traffic-write.js';

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

/** A counter of a report that passed its own checks (its id is looked up in the batch). */
interface Reading {
  objectType: CountedType;
  objectId: string;
  /** Where it is in the input, for a rejection. */
  field: string;
  reading: CounterReading;
  intervalMs: number;
  /** A rate-limited forward's raw count of refused connections (same epoch as its counter). */
  rateLimited?: number;
}

/** A counted object of the report, after its checks. */
interface Item {
  objectType: CountedType;
  objectId: string;
  instanceId: string;
  ownerId: string;
  billingDay: number | null;
  /** Its instance has a limit the quota check looks at. */
  quota: boolean;
  reading: CounterReading;
  intervalMs: number;
  /** A rate-limited forward's raw count of refused connections (same epoch as its counter). */
  rateLimited?: number;
}

/** A report that passed the checks of the whole, waiting for its batch. */
interface Pending {
  hostId: string;
  /** The controller's time when it arrived (its minute and billing period). */
  now: Date;
  /** The NIC reading's time and interval (what its rates message carries). */
  at: number;
  intervalMs: number;
  readings: Reading[];
  rejected: TrafficRejection[];
  /** Its rates went out (a batch retried after a deadlock does not send them twice). */
  published: boolean;
  resolve(result: TrafficReportResult): void;
  reject(error: unknown): void;
}

/** Readings a batch takes at most (more when one report alone has more). */
const MAX_BATCH_READINGS = 20_000;

const BOOT_ID = /^[A-Za-z0-9-]{1,64}$/;

/** Whether an error is PostgreSQL's deadlock (40P01), also wrapped by drizzle. */
function isDeadlock(err: unknown): boolean {
  for (let e = err as { code?: unknown; cause?: unknown } | undefined, depth = 0; e && depth < 5; e = e.cause as typeof e, depth++)
    if (e.code === '40P01') return true;
  return false;
}

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

/** Takes agents' traffic reports (one per controller: it batches them). */
@injectable()
export class TrafficIngest {
  private readonly queue: Pending[] = [];
  private draining: Promise<void> | undefined;

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

    const rejected: TrafficRejection[] = [];
    const epochOf = (field: string, epoch: unknown): string | undefined => {
      // NUL is the one character PostgreSQL's text cannot hold: it would fail the whole batch
      if (typeof epoch === 'string' && epoch.length >= 1 && epoch.length <= MAX_TRAFFIC_EPOCH && !epoch.includes('\0')) return `${input.bootId}/${epoch}`;
      reject(rejected, field, epoch, `must be 1-${MAX_TRAFFIC_EPOCH} characters (no NUL)`);
      return undefined;
    };
    // per-counter checks; ids are looked up with the batch
    const readings: Reading[] = [];
    const nicIds = new Set<string>();
    input.nics.counters.forEach((c, n) => {
      const field = `input.nics.counters[${n}]`;
      if (typeof c?.nicId !== 'string' || !isId(c.nicId)) return reject(rejected, `${field}.nicId`, c?.nicId, 'is not a valid id');
      if (nicIds.has(c.nicId)) return reject(rejected, `${field}.nicId`, c.nicId, 'appears twice in the report');
      for (const key of ['rxBytes', 'rxPackets', 'txBytes', 'txPackets'] as const)
        if (!validCount(c[key])) return reject(rejected, `${field}.${key}`, c[key], 'must be a non-negative integer');
      const epoch = epochOf(`${field}.epoch`, c.epoch);
      if (epoch === undefined) return;
      nicIds.add(c.nicId);
      readings.push({
        objectType: 'nic',
        objectId: c.nicId,
        field,
        intervalMs: nicTime.intervalMs,
        reading: { epoch, sequence: input.sequence, at: nicTime.at, values: [c.rxBytes, c.rxPackets, c.txBytes, c.txPackets] },
      });
    });
    const forwardIds = new Set<string>();
    input.forwards?.counters.forEach((c, n) => {
      const field = `input.forwards.counters[${n}]`;
      if (typeof c?.forwardId !== 'string' || !isId(c.forwardId)) return reject(rejected, `${field}.forwardId`, c?.forwardId, 'is not a valid id');
      if (forwardIds.has(c.forwardId)) return reject(rejected, `${field}.forwardId`, c.forwardId, 'appears twice in the report');
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
      forwardIds.add(c.forwardId);
      // a forward's counter is traffic towards it: into the instance
      readings.push({
        objectType: 'port_forward',
        objectId: c.forwardId,
        field,
        intervalMs: forwardTime!.intervalMs,
        ...(rateLimited !== undefined ? { rateLimited } : {}),
        reading: { epoch, sequence: input.sequence, at: forwardTime!.at, values: [c.bytes, c.packets, 0, 0] },
      });
    });

    return new Promise<TrafficReportResult>((resolve, reject) => {
      this.queue.push({ hostId, now, at: nicTime.at, intervalMs: nicTime.intervalMs, readings, rejected, published: false, resolve, reject });
      this.draining ??= this.drain();
    });
  }

  /** Waits for the reports taken so far to be written (on shutdown, before the store closes). */
  async stop(): Promise<void> {
    await this.draining;
  }

  /** Writes batches until no report waits. */
  private async drain(): Promise<void> {
    while (this.queue.length > 0) {
      let size = 0;
      let n = 0;
      while (n < this.queue.length && (n === 0 || size + this.queue[n]!.readings.length <= MAX_BATCH_READINGS)) size += this.queue[n++]!.readings.length;
      const batch = this.queue.splice(0, n);
      try {
        const done = await this.db
          .transaction((tx) => this.count(tx, batch))
          .catch((err: unknown) => {
            // transactions lock counters in key order; a deadlock can still come from two replicas' host rows: once more
            if (!isDeadlock(err)) throw err;
            return this.db.transaction((tx) => this.count(tx, batch));
          });
        // the quotas of the instances counted, once per batch; the reports are counted whatever the check
        // says (a failed check is retried by the next report or the timer)
        const counted = [...new Set(done.flatMap((outcome) => (outcome instanceof Error ? [] : outcome.instanceIds)))];
        await this.quota.check(counted).catch((err: unknown) => this.logger.warn(`traffic quota check failed: ${(err as Error).message}`));
        batch.forEach((pending, i) => {
          const outcome = done[i]!;
          if (outcome instanceof Error) pending.reject(outcome);
          else pending.resolve(outcome.result);
        });
      } catch (err) {
        for (const pending of batch) pending.reject(err);
      }
    }
    // checked and cleared in the same turn as the last batch ended: a report queued after this starts a new drain
    this.draining = undefined;
  }

  /** Counts a batch of reports in one transaction; per report, what it did or why it was refused. */
  private async count(tx: Executor, batch: Pending[]): Promise<({ result: TrafficReportResult; instanceIds: string[] } | NotFoundError)[]> {
    // the commit need not wait for its WAL flush: a transaction lost in a crash takes its readings with
    // it, so the next report's delta, from the reading stored before, counts that traffic (cumulative
    // counters: nothing lost, nothing twice); the wait would hold every report behind it
    await tx.execute(sql`set local synchronous_commit = off`);
    const ids = (type: CountedType) => [...new Set(batch.flatMap((p) => p.readings.filter((r) => r.objectType === type).map((r) => r.objectId)))];
    const nicIds = ids('nic');
    const forwardIds = ids('port_forward');
    const found = await lookUp(tx, [...new Set(batch.map((p) => p.hostId))], nicIds, forwardIds);
    // only objects of their report's host are locked and counted
    const items = batch.map((pending) => {
      if (!found.hosts.has(pending.hostId)) return undefined;
      const rejected = [...pending.rejected];
      const counted: Item[] = [];
      for (const { objectType, objectId, field, reading, intervalMs, rateLimited } of pending.readings) {
        const object = found.objects.get(`${objectType}:${objectId}`);
        const idField = `${field}.${objectType === 'nic' ? 'nicId' : 'forwardId'}`;
        if (!object) reject(rejected, idField, objectId, `is not a ${objectType === 'nic' ? 'NIC' : 'port forward'} of any instance`);
        else if (object.hostId !== pending.hostId) reject(rejected, idField, objectId, `belongs to another host (${object.hostId}), not ${pending.hostId}`);
        else
          counted.push({
            objectType,
            objectId,
            instanceId: object.instanceId,
            ownerId: object.ownerId,
            billingDay: object.billingDay,
            quota: object.quota,
            reading,
            intervalMs,
            ...(rateLimited !== undefined ? { rateLimited } : {}),
          });
      }
      return { counted, rejected };
    });
    const locked = (type: CountedType) => [...new Set(items.flatMap((i) => i?.counted.filter((c) => c.objectType === type).map((c) => c.objectId) ?? []))];
    const last = await lockCounters(tx, locked('nic'), locked('port_forward'));

    const changed = new Map<string, CounterRow>();
    const buckets = new Map<string, TotalRow>();
    const periods = new Map<string, TotalRow>();
    const limitReadings: { item: Item; epoch: string; value: number; now: Date }[] = [];
    const add = (into: Map<string, TotalRow>, row: Omit<TotalRow, 'values'>, d: CounterValues) => {
      const key = `${row.objectType}:${row.objectId}:${row.start.getTime()}`;
      const was = into.get(key);
      into.set(key, { ...row, values: was ? (was.values.map((v, i) => v + d[i]!) as unknown as CounterValues) : d });
    };
    const results = batch.map((pending, p) => {
      const report = items[p];
      if (!report) return new NotFoundError('input.hostId', pending.hostId, 'host');
      const host = found.hosts.get(pending.hostId)!;
      const capBps = host.capBps ?? DEFAULT_TRAFFIC_CAP_BPS;
      const minute = new Date(Math.floor(pending.now.getTime() / 60_000) * 60_000);
      const count = (objectType: TotalRow['objectType'], objectId: string, instanceId: string | null, billingDay: number | null, d: CounterValues) => {
        const period = billingPeriod(pending.now, billingDay);
        add(buckets, { objectType, objectId, start: minute, hostId: pending.hostId, instanceId }, d);
        add(periods, { objectType, objectId, start: period.start, end: period.end, hostId: pending.hostId, instanceId }, d);
      };
      const outcomes: Record<DeltaOutcome, number> = { first: 0, counted: 0, replay: 0, reset: 0, discarded: 0 };
      const rates = new Map<string, { item: Item; rxBps: number; txBps: number }>();
      const hostSum: [number, number, number, number] = [0, 0, 0, 0];
      for (const item of report.counted) {
        const key = `${item.objectType}:${item.objectId}`;
        const stored = last.get(key);
        const result = counterDelta(stored, item.reading, capBps, item.intervalMs);
        outcomes[result.outcome]++;
        if (result.outcome === 'replay') continue;
        if (item.rateLimited !== undefined) limitReadings.push({ item, epoch: item.reading.epoch, value: item.rateLimited, now: pending.now });
        if (result.outcome === 'discarded')
          this.logger.warn(`discarded an impossible traffic delta of ${item.objectType} ${item.objectId} on host ${pending.hostId} (over ${capBps} bit/s)`, {
            values: item.reading.values,
            stored: stored?.values,
          });
        // the next report of this batch counts from here, as if this one had been committed
        last.set(key, result.next);
        changed.set(key, { objectType: item.objectType, objectId: item.objectId, hostId: pending.hostId, reading: result.next });
        rates.set(item.objectId, { item, rxBps: rate(result.delta[0], result.seconds), txBps: rate(result.delta[2], result.seconds) });
        if (result.delta.every((v) => v === 0)) continue;
        count(item.objectType, item.objectId, item.instanceId, item.billingDay, result.delta);
        if (item.objectType === 'nic') result.delta.forEach((v, i) => (hostSum[i] = hostSum[i]! + v));
      }
      if (hostSum.some((v) => v > 0)) count('host', pending.hostId, null, null, hostSum);
      // live rates are in memory: they go out now, not after the write (a failed write leaves the next
      // report's delta to cover this interval, so what was shown stays the traffic that passed)
      if (rates.size > 0 && !pending.published) this.publish(pending.hostId, pending.at, pending.intervalMs, rates);
      pending.published = true;
      // quotas are checked for the instances counted that have one (or a level to bring back)
      const instanceIds = [...new Set([...rates.values()].filter((r) => r.item.quota).map((r) => r.item.instanceId))];
      return { result: { counted: report.counted.length, rejected: report.rejected, outcomes }, instanceIds };
    });
    await writeTotals(tx, [...changed.values()], [...buckets.values()], [...periods.values()]);
    await this.countRateLimited(tx, limitReadings);
    return results;
  }

  /**
   * Adds what each rate-limited forward's limits refused since the last reading to its
   * `rateLimitedConnections`: the difference to the last raw value, or the whole value when the
   * counter restarted (a new epoch, a smaller value) or is read for the first time (it counts from
   * zero from when the limit came). Replays do not get here (their forward counter was a replay).
   */
  private async countRateLimited(tx: Executor, readings: { item: Item; epoch: string; value: number; now: Date }[]): Promise<void> {
    if (readings.length === 0) return;
    const rows = await tx
      .select({ id: portForwards.id, epoch: portForwards.rateLimitedEpoch, raw: portForwards.rateLimitedRaw, since: portForwards.rateLimitedSince })
      .from(portForwards)
      .where(inArray(portForwards.id, [...new Set(readings.map((r) => r.item.objectId))]));
    const stored = new Map(rows.map((r) => [r.id, { ...r, added: 0, changed: false }]));
    // a batch may hold several reports of one forward: each counts from the one before it, in order
    for (const { item, epoch, value, now } of readings) {
      const last = stored.get(item.objectId);
      if (!last) continue; // deleted meanwhile
      if (last.epoch === epoch && last.raw === value) continue;
      const restarted = last.raw === null || last.epoch !== epoch || value < last.raw;
      last.added += restarted ? value : value - last.raw!;
      last.since ??= now;
      last.epoch = epoch;
      last.raw = value;
      last.changed = true;
    }
    for (const [id, last] of stored) {
      if (!last.changed) continue;
      await tx
        .update(portForwards)
        .set({
          rateLimitedConnections: sql`${portForwards.rateLimitedConnections} + ${last.added}`,
          rateLimitedSince: last.since,
          rateLimitedEpoch: last.epoch,
          rateLimitedRaw: last.raw,
        })
        .where(eq(portForwards.id, id));
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
