/**
 * Long work on the request path (planning a 50,000-row import) must neither hold the event loop
 * nor run without end: `tick()` after each unit of work yields to other requests, timers and
 * signal handlers once a slice of `sliceMs` has passed, and refuses to go on past the budget.
 */
import { setImmediate as yieldTurn } from 'node:timers/promises';
import { ValidationError } from './errors.js';

/**
 * Default slice of uninterrupted work before yielding. A request that needs several database round
 * trips waits about one slice per round trip (10 ms slices kept `{ me }` at ~100 ms during a
 * 50,000-row plan on PostgreSQL); a yield itself costs microseconds.
 */
export const WORK_SLICE_MS = 2;

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
    await yieldTurn();
    this.sliceStart = performance.now();
  }
}
