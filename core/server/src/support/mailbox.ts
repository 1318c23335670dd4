/**
 * A subscriber's queue: an async iterator the producer pushes into directly, without a listener
 * or a Repeater of its own per subscriber (one producer feeding 1,000 subscribers a second walks
 * a list of mailboxes instead of dispatching 1,000 events).
 */

/** An async iterator fed by `push`; `return()` (the consumer's end) runs `onEnd` once. */
export class Mailbox<T> implements AsyncIterableIterator<T> {
  private queue: T[] = [];
  private head = 0;
  private waiting: { resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void } | undefined;
  private ended = false;
  private failure: unknown;

  /**
   * @param limit values held for a consumer that does not read; one more ends the mailbox with `overflow()`
   * @param onEnd runs once when the mailbox ends (the consumer returned, or it overflowed or was closed)
   */
  constructor(
    private readonly limit: number,
    private readonly overflow: () => Error,
    private readonly onEnd: () => void,
  ) {}

  /** Hands `value` to the waiting consumer or queues it; nothing once ended. */
  push(value: T): void {
    if (this.ended) return;
    const waiting = this.waiting;
    if (waiting) {
      this.waiting = undefined;
      waiting.resolve({ value, done: false });
      return;
    }
    if (this.queue.length - this.head >= this.limit) {
      this.end(this.overflow());
      return;
    }
    this.queue.push(value);
  }

  /** Ends the mailbox: the consumer gets what is queued, then `error` (when given) or the end. */
  end(error?: unknown): void {
    if (this.ended) return;
    this.ended = true;
    this.failure = error;
    this.onEnd();
    const waiting = this.waiting;
    this.waiting = undefined;
    if (!waiting) return;
    if (error === undefined) waiting.resolve({ value: undefined, done: true });
    else {
      this.failure = undefined;
      waiting.reject(error);
    }
  }

  next(): Promise<IteratorResult<T>> {
    if (this.head < this.queue.length) {
      const value = this.queue[this.head]!;
      this.queue[this.head++] = undefined as T;
      // compact now and then rather than shift() per value
      if (this.head === this.queue.length) {
        this.queue = [];
        this.head = 0;
      } else if (this.head > 1024 && this.head * 2 > this.queue.length) {
        this.queue = this.queue.slice(this.head);
        this.head = 0;
      }
      return Promise.resolve({ value, done: false });
    }
    if (this.ended) {
      const failure = this.failure;
      this.failure = undefined;
      return failure === undefined ? Promise.resolve({ value: undefined, done: true }) : Promise.reject(failure);
    }
    return new Promise((resolve, reject) => (this.waiting = { resolve, reject }));
  }

  return(): Promise<IteratorResult<T>> {
    this.queue = [];
    this.head = 0;
    this.failure = undefined;
    this.end();
    return Promise.resolve({ value: undefined, done: true });
  }

  throw(error?: unknown): Promise<IteratorResult<T>> {
    this.queue = [];
    this.head = 0;
    this.end();
    return Promise.reject(error);
  }

  [Symbol.asyncIterator](): this {
    return this;
  }
}
