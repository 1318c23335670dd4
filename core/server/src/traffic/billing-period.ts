/**
 * Billing periods (UTC): calendar months by default, or months starting on a user's anniversary
 * day (1-28, so every month has it), and the 95th percentile of 5-minute rates over a period.
 */

/** A half-open period [start, end). */
export interface BillingPeriod {
  start: Date;
  end: Date;
}

/** The period containing `at` (offset 0), or the one `offset` periods before it. `billingDay` null: calendar months. */
export function billingPeriod(at: Date, billingDay: number | null, offset = 0): BillingPeriod {
  const day = billingDay ?? 1;
  const year = at.getUTCFullYear();
  let month = at.getUTCMonth();
  if (at.getUTCDate() < day) month -= 1;
  month -= offset;
  const start = new Date(Date.UTC(year, month, day));
  const end = new Date(Date.UTC(year, month + 1, day));
  return { start, end };
}

/** Length of the 5-minute samples of the 95th percentile. */
export const P95_SAMPLE_MS = 5 * 60_000;

/**
 * The 95th percentile of 5-minute rates (bits per second) in the usual transit way: the period so
 * far is cut into `samples` 5-minute intervals (those without traffic count as 0), sorted, and the
 * top 5 % discarded. `bytesPerSample` holds the non-empty samples' bytes.
 */
export function percentile95Bps(bytesPerSample: readonly number[], samples: number): number {
  if (samples <= 0) return 0;
  const sorted = [...bytesPerSample].sort((a, b) => a - b);
  // index (0-based, ascending) of the 95th percentile among all samples, zeros first
  const rank = Math.ceil(samples * 0.95) - 1;
  const zeros = samples - sorted.length;
  const bytes = rank < zeros ? 0 : (sorted[rank - zeros] ?? 0);
  return Math.round((bytes * 8) / (P95_SAMPLE_MS / 1000));
}
