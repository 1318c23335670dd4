/**
 * Failed sign-ins, counted per username and per source address over a sliding window: past the
 * limit, further attempts are refused without checking the password until the oldest failure
 * leaves the window. Kept in memory, per controller replica (a replica restart forgets it).
 */

/** Limits of failed sign-ins. */
export interface SignInLimits {
  /** Failures of one username (from any source) allowed per window. */
  perUsername: number;
  /** Failures from one source address (for any usernames) allowed per window. */
  perSource: number;
  windowMs: number;
}

/** Defaults: 5 failures per username and 20 per source address in 15 minutes. */
export const DEFAULT_SIGN_IN_LIMITS: SignInLimits = { perUsername: 5, perSource: 20, windowMs: 15 * 60_000 };

/** Keys tracked at most; beyond that the stalest are forgotten (bounds memory under a spray of names). */
const MAX_KEYS = 10_000;

/** The limiter of one controller. */
export class SignInLimiter {
  // key → failure times, oldest first; Map order is insertion order, so the first keys are the stalest
  private readonly failures = new Map<string, number[]>();

  constructor(
    private readonly limits: SignInLimits = DEFAULT_SIGN_IN_LIMITS,
    private readonly now: () => number = Date.now,
  ) {}

  /** Milliseconds until `username` from `source` may try again; 0 when it may now. */
  retryAfterMs(username: string, source: string): number {
    const t = this.now();
    return Math.max(this.wait(`u:${username.toLowerCase()}`, this.limits.perUsername, t), this.wait(`s:${source}`, this.limits.perSource, t));
  }

  /** Records a failed attempt. */
  fail(username: string, source: string): void {
    const t = this.now();
    for (const key of [`u:${username.toLowerCase()}`, `s:${source}`]) {
      const times = this.recent(key, t);
      times.push(t);
      this.failures.delete(key);
      this.failures.set(key, times);
    }
    while (this.failures.size > MAX_KEYS) this.failures.delete(this.failures.keys().next().value!);
  }

  /** A successful sign-in clears the username's failures (not the source's). */
  succeed(username: string): void {
    this.failures.delete(`u:${username.toLowerCase()}`);
  }

  private recent(key: string, t: number): number[] {
    const times = (this.failures.get(key) ?? []).filter((at) => t - at < this.limits.windowMs);
    if (times.length === 0) this.failures.delete(key);
    return times;
  }

  private wait(key: string, limit: number, t: number): number {
    const times = this.recent(key, t);
    if (times.length < limit) return 0;
    // the attempt is allowed again once enough failures have left the window
    return times[times.length - limit]! + this.limits.windowMs - t;
  }
}
