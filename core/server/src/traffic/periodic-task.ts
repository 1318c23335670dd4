/**
 * Background work on a timer (traffic rollups, quota checks): one run at a time (a tick while the
 * previous run goes on is skipped), failures logged, and `stop` waits for the run in progress.
 */
import type { Logger } from '../support/logger.js';

/** Runs `work` every `everyMs` between `start` and `stop`. */
export class PeriodicTask {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;

  /** `what` names the work in the log ("traffic rollup failed: …"). */
  constructor(
    private readonly what: string,
    private readonly work: () => Promise<unknown>,
    private readonly logger: Logger,
  ) {}

  /** Starts the timer (idempotent); it does not keep the process alive. */
  start(everyMs: number): void {
    this.timer ??= setInterval(() => {
      this.running ??= this.work()
        .catch((err: unknown) => this.logger.warn(`${this.what} failed: ${(err as Error).message}`))
        .finally(() => (this.running = undefined));
    }, everyMs);
    this.timer.unref();
  }

  /** Stops the timer and waits for a run in progress. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }
}
