/** Shaping arithmetic shared by the bandwidth service, the desired-state compiler and the schema. */

/**
 * The burst used when none is given: what the rate sends in 10 ms, and at least ten full-size
 * frames, so shaping neither starves TCP at low rates nor lets long bursts through at high ones.
 */
export function autoBurstBytes(bps: number): number {
  return Math.max(15_000, Math.ceil(bps / 8 / 100));
}
