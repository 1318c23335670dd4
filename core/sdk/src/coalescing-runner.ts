/**
 * "Run this; if asked again while it runs, run once more after; never concurrently": the loop
 * behind the controller's Caddy sync, its desired-state streams and the agent's applies. Requests
 * made during a run fold into one further run, so a burst of N changes costs at most two runs,
 * and a change made while a run reads its input is never missed.
 */

interface Deferred {
  promise: Promise<void>;
  resolve: () => void;
  reject: (error: unknown) => void;
}

function deferred(): Deferred {
  let resolve!: () => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Runs one task serially, coalescing the requests made while it runs into one more run. */
export class CoalescingRunner {
  /** The run that starts next, shared by every request made since the current run began. */
  private next: Deferred | undefined;
  private loop: Promise<void> | undefined;
  private stopped = false;

  /** `task` is never run twice at once; its error rejects the requests its run served, and later runs go on. */
  constructor(private readonly task: () => Promise<void>) {}

  /** Whether a run is under way (or about to start). */
  get running(): boolean {
    return this.loop !== undefined;
  }

  /**
   * Asks for a run; resolves when a run that started after this call has finished (rejects with
   * its error). After `stop`, resolves at once without running.
   */
  run(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    this.next ??= deferred();
    const promise = this.next.promise;
    this.loop ??= this.drain();
    return promise;
  }

  /** Starts no further run; resolves when the one under way has ended. Pending requests resolve without a run. */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.loop;
  }

  private async drain(): Promise<void> {
    // the first run starts on the next microtask, so requests made in the same tick share it
    await Promise.resolve();
    try {
      while (this.next && !this.stopped) {
        const current = this.next;
        this.next = undefined;
        try {
          await this.task();
          current.resolve();
        } catch (error) {
          current.reject(error);
        }
      }
    } finally {
      this.loop = undefined;
      this.next?.resolve();
      this.next = undefined;
    }
  }
}
