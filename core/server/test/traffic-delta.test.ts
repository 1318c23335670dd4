/**
 * The delta engine and billing periods, without a database: replays, out-of-order reports,
 * resets by value and by epoch, impossible deltas, an agent restart, and the 95th percentile.
 */
import { describe, expect, it } from 'vitest';
import { billingPeriod, percentile95Bps } from '../src/traffic/billing-period.js';
import { DEFAULT_TRAFFIC_CAP_BPS, counterDelta, type CounterReading, type CounterValues } from '../src/traffic/counter-delta.js';

const T0 = Date.parse('2026-03-10T12:00:00Z');

function reading(sequence: number, values: CounterValues, epoch = 'boot1/if7', at = T0 + sequence * 1000): CounterReading {
  return { epoch, sequence, at, values };
}

/** Runs readings through the engine as the controller does, and returns the total counted. */
function total(readings: CounterReading[], capBps = DEFAULT_TRAFFIC_CAP_BPS): { sum: number[]; outcomes: string[] } {
  let stored: CounterReading | undefined;
  const sum = [0, 0, 0, 0];
  const outcomes: string[] = [];
  for (const r of readings) {
    const d = counterDelta(stored, r, capBps, 1000);
    d.delta.forEach((v, i) => (sum[i] = sum[i]! + v));
    outcomes.push(d.outcome);
    stored = d.next;
  }
  return { sum, outcomes };
}

describe('counterDelta', () => {
  it('counts the growth of a counter from its first reading (which is the baseline)', () => {
    const { sum, outcomes } = total([reading(1, [1000, 10, 500, 5]), reading(2, [1500, 14, 800, 8]), reading(3, [4000, 30, 900, 9])]);
    expect(sum).toEqual([3000, 20, 400, 4]);
    expect(outcomes).toEqual(['first', 'counted', 'counted']);
  });

  it('adds nothing for a replayed or duplicated report', () => {
    const r2 = reading(2, [1500, 14, 800, 8]);
    const { sum, outcomes } = total([reading(1, [1000, 10, 500, 5]), r2, r2, { ...r2 }, reading(3, [1600, 15, 800, 8])]);
    expect(sum).toEqual([600, 5, 300, 3]);
    expect(outcomes).toEqual(['first', 'counted', 'replay', 'replay', 'counted']);
  });

  it('adds nothing for a report overtaken by a newer one (out of order), and loses nothing', () => {
    const { sum, outcomes } = total([reading(1, [0, 0, 0, 0]), reading(3, [3000, 3, 0, 0]), reading(2, [2000, 2, 0, 0]), reading(4, [4000, 4, 0, 0])]);
    expect(sum[0]).toBe(4000);
    expect(outcomes).toEqual(['first', 'counted', 'replay', 'counted']);
  });

  it('treats a smaller value as a reset and counts the new value from zero, never as a wrap', () => {
    const { sum, outcomes } = total([reading(1, [10_000, 10, 10_000, 10]), reading(2, [12_000, 12, 11_000, 11]), reading(3, [300, 1, 11_500, 12])]);
    // 2000 + 300 into the instance; 1000 + 11,500 out (the whole counter restarted)
    expect(sum).toEqual([2300, 3, 12_500, 13]);
    expect(outcomes).toEqual(['first', 'counted', 'reset']);
  });

  it('treats a new epoch as a reset even when the new value is larger (a re-created interface)', () => {
    const { sum, outcomes } = total([reading(1, [1000, 1, 0, 0]), reading(2, [2000, 2, 0, 0]), reading(3, [5000, 5, 0, 0], 'boot1/if9')]);
    expect(sum[0]).toBe(1000 + 5000);
    expect(outcomes).toEqual(['first', 'counted', 'reset']);
  });

  it('discards a delta above the cap rate over the elapsed time, and keeps the new value as the baseline', () => {
    const capBps = 1e9; // 125 MB per second
    const { sum, outcomes } = total(
      [reading(1, [0, 0, 0, 0]), reading(2, [100e6, 1, 0, 0]), reading(3, [5e12, 2, 0, 0]), reading(4, [5e12 + 1000, 3, 0, 0])],
      capBps,
    );
    expect(sum[0]).toBe(100e6 + 1000);
    expect(outcomes).toEqual(['first', 'counted', 'discarded', 'counted']);
  });

  it('uses the longer of the elapsed time and the reported interval for the cap (a stretched forward read)', () => {
    const capBps = 8e3; // 1000 bytes per second
    const first = reading(1, [0, 0, 0, 0]);
    const late = { ...reading(2, [4500, 4, 0, 0]), at: first.at + 1000 };
    expect(counterDelta(first, late, capBps, 5000).outcome).toBe('counted');
    expect(counterDelta(first, late, capBps, 1000).outcome).toBe('discarded');
  });

  it('counts exactly across an agent restart: same boot and ifindex, a higher sequence from the new agent', () => {
    // the agent's sequence starts from its clock in ms: the restarted agent's is higher
    const before = [reading(1_000_001, [1000, 1, 100, 1]), reading(1_000_002, [2000, 2, 200, 2])];
    const after = [
      reading(2_000_001, [2500, 3, 250, 3], 'boot1/if7', T0 + 1_000_010_000),
      reading(2_000_002, [3000, 4, 300, 4], 'boot1/if7', T0 + 1_000_011_000),
    ];
    const { sum, outcomes } = total([...before, ...after]);
    expect(sum).toEqual([2000, 3, 200, 3]);
    expect(outcomes).toEqual(['first', 'counted', 'counted', 'counted']);
  });

  it('treats a host reboot (new boot id, same ifindex, smaller counters) as a reset', () => {
    const { sum } = total([reading(1, [9000, 9, 0, 0]), reading(2, [10_000, 10, 0, 0]), reading(3, [700, 1, 0, 0], 'boot2/if7')]);
    expect(sum[0]).toBe(1000 + 700);
  });
});

describe('billing periods', () => {
  it('uses calendar months in UTC by default', () => {
    const p = billingPeriod(new Date('2026-03-10T12:00:00Z'), null);
    expect([p.start.toISOString(), p.end.toISOString()]).toEqual(['2026-03-01T00:00:00.000Z', '2026-04-01T00:00:00.000Z']);
    const previous = billingPeriod(new Date('2026-01-31T23:59:59Z'), null, 1);
    expect([previous.start.toISOString(), previous.end.toISOString()]).toEqual(['2025-12-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z']);
  });

  it('starts on the anniversary day when the user has one', () => {
    const before = billingPeriod(new Date('2026-03-10T12:00:00Z'), 15);
    expect([before.start.toISOString(), before.end.toISOString()]).toEqual(['2026-02-15T00:00:00.000Z', '2026-03-15T00:00:00.000Z']);
    const on = billingPeriod(new Date('2026-03-15T00:00:00Z'), 15);
    expect(on.start.toISOString()).toBe('2026-03-15T00:00:00.000Z');
  });

  it('takes the 95th percentile of 5-minute rates with empty intervals as 0', () => {
    // 100 samples: 90 empty, ten with 1..10 MB → the top 5 (6-10 MB) are dropped, the 95th percentile is 5 MB
    const samples = Array.from({ length: 10 }, (_, i) => (i + 1) * 1e6);
    expect(percentile95Bps(samples, 100)).toBe(Math.round((5e6 * 8) / 300));
    // mostly idle: the percentile is 0
    expect(percentile95Bps([1e9, 1e9], 100)).toBe(0);
    expect(percentile95Bps([], 0)).toBe(0);
  });
});
