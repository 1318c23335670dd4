/**
 * Long work on the request path (planning a 50,000-row import) must neither hold the event loop
 * nor run without end: `tick()` after each unit of work yields to other requests, timers and
 * signal handlers once a slice of `sliceMs` has passed, and refuses to go on past the budget.
 *
 * A yield waits for a timer, not for `setImmediate`: the event loop then polls for I/O until the
 * timer is due (~1 ms) instead of looking once and going on, so another request's database round
 * trips complete during one yield, several in a row. A `{ me }` takes about 8 turns of the event
 * loop (its token, its user, yoga's body and response); yielding by `setImmediate`, it waited for
 * 8 slices of the import (2 ms slices: median 18.8 ms on PostgreSQL on an idle machine), yielding
 * by a timer for 2 (2 ms slices: median 6.7 ms, the work getting 64% of the time; 4 ms slices:
 * 10.9 ms and 77%).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { ValidationError } from './errors.js';

/**
 * Default slice of uninterrupted work before yielding. A request waits about one slice for each
 * yield it needs to complete its database round trips (about two for a small query, see above).
 */
export const WORK_SLICE_MS = 2;
/** How long a yield lets the event loop poll for I/O (the shortest timer). */
const YIELD_MS = 1;

/** Lets other requests run: their timers, the replies to their queries, and what those replies start. */
export const yieldToOthers = (): Promise<void> => sleep(YIELD_MS);

/** A time budget for one piece of work, yielding every slice. */
export class WorkBudget {
  private readonly started = performance.now();
  private sliceStart = this.started;

  constructor(
    /** The input that caused the work, named in the refusal. */
    private readonly field: string,
    private readonly budgetMs: number,
    private readonly sliceMs = WORK_SLICE_MS,
  ) {}

  /** Yields when the slice is used up; throws VALIDATION_FAILED naming the field past the budget. */
  async tick(): Promise<void> {
    const now = performance.now();
    if (now - this.sliceStart < this.sliceMs) return;
    if (now - this.started > this.budgetMs) {
      throw new ValidationError(
        this.field,
        `${Math.round(now - this.started)} ms`,
        `took longer than the ${this.budgetMs / 1000} s allowed to process; split it`,
      );
    }
    await yieldToOthers();
    this.sliceStart = performance.now();
  }
}
