/**
 * The delta engine: turns one object's raw cumulative counter reading into the traffic to add,
 * given the last reading the controller stored. This is where peers lose or invent traffic; here:
 *
 * - a reading with the same or an older sequence (a replay, a duplicate, a report overtaken by a
 *   newer one) adds 0 and changes nothing: the newer reading already contains its bytes;
 * - a new epoch, or any value smaller than the stored one, is a reset: the counter restarted from
 *   zero, so its whole new value is new traffic (never `2^64 - old + new`, never a wrap);
 * - a delta larger than the cap rate allows over the elapsed time is impossible: it is discarded
 *   (counted as 0) and the new value becomes the baseline, so it cannot come back later;
 * - the first reading of an object sets the baseline and adds 0 (its value may hold traffic from
 *   before Gatehouse counted it).
 */

/** Counter values in a fixed order: rx bytes, rx packets, tx bytes, tx packets. */
export type CounterValues = readonly [number, number, number, number];

/** A stored or incoming reading of one object's counters. */
export interface CounterReading {
  /** One life of the counter. */
  epoch: string;
  sequence: number;
  /** When it was read (ms since the epoch). */
  at: number;
  values: CounterValues;
}

/** What happened to a reading. */
export type DeltaOutcome = 'first' | 'counted' | 'replay' | 'reset' | 'discarded';

/** The result: the traffic to add and the reading to store (unchanged for a replay). */
export interface CounterDelta {
  outcome: DeltaOutcome;
  delta: CounterValues;
  /** The reading to store from now on. */
  next: CounterReading;
  /** Seconds the delta covers (for rates); 0 when nothing was counted. */
  seconds: number;
}

/** The default cap: 100 Gbit/s. */
export const DEFAULT_TRAFFIC_CAP_BPS = 100e9;

const ZERO: CounterValues = [0, 0, 0, 0];

/**
 * The delta of `reading` against `stored` (see the file comment). `capBps` bounds the bytes per
 * direction; `intervalMs` is the interval the agent reports for the reading, used when the stored
 * reading's time says less (a clock step on the agent).
 */
export function counterDelta(stored: CounterReading | undefined, reading: CounterReading, capBps: number, intervalMs: number): CounterDelta {
  if (!stored) return { outcome: 'first', delta: ZERO, next: reading, seconds: 0 };
  if (reading.sequence <= stored.sequence) return { outcome: 'replay', delta: ZERO, next: stored, seconds: 0 };
  const elapsedMs = Math.max(reading.at - stored.at, intervalMs, 1);
  const seconds = elapsedMs / 1000;
  const reset = reading.epoch !== stored.epoch || reading.values.some((v, i) => v < stored.values[i]!);
  const delta = (reset ? reading.values : reading.values.map((v, i) => v - stored.values[i]!)) as unknown as CounterValues;
  // bytes in either direction above what the link can carry in the elapsed time cannot be real
  const maxBytes = (capBps / 8) * seconds;
  if (delta[0] > maxBytes || delta[2] > maxBytes) return { outcome: 'discarded', delta: ZERO, next: reading, seconds: 0 };
  return { outcome: reset ? 'reset' : 'counted', delta, next: reading, seconds };
}
