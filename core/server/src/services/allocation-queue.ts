/**
 * Group commit for address allocations: the `allocateAddress` requests of one controller that
 * arrive while a batch is being written wait and go into the next one, whatever their pools, so
 * 16 concurrent requests cost one transaction of a few set-based statements instead of 16
 * transactions of seven (PoolService.allocateBatch). A lone request starts a batch at once and
 * waits for nothing. Each request still gets its own answer: its allocation or its own typed error;
 * one that cannot be decided inside the batch (a quota reached, a pool full, an idempotency key
 * used meanwhile, an unexpected error of the batch's transaction) is answered by the one-request
 * path after the batch, so it never fails the others.
 */
import { injectable } from 'tsyringe';
import type { Actor } from '../auth/actor.js';
import type { IpFamily } from '../net/ip.js';

/** One validated `allocateAddress` request, waiting for its batch. */
export interface AllocationRequest<T> {
  actor: Actor;
  nicId: string;
  poolId: string | null;
  family: IpFamily | null;
  key: string | null;
  resolve(value: T): void;
  reject(err: unknown): void;
}

/** Requests one batch takes at most. */
export const MAX_ALLOCATION_BATCH = 64;

/** The queue of one controller (registered as a singleton: every PoolService shares it). */
@injectable()
export class AllocationQueue {
  private readonly queue: AllocationRequest<never>[] = [];
  private draining: Promise<void> | undefined;
  /** Batches run so far, the requests they took, and how many of those were answered one at a time. */
  readonly stats = { batches: 0, requests: 0, alone: 0 };

  /**
   * Queues the request; `run` answers every request of a batch (resolve or reject each) and is
   * the one of whichever caller started the current drain (they are alike).
   */
  submit<T>(request: AllocationRequest<T>, run: (batch: AllocationRequest<T>[]) => Promise<void>): void {
    this.queue.push(request as AllocationRequest<never>);
    this.draining ??= this.drain(run as (batch: AllocationRequest<never>[]) => Promise<void>);
  }

  /** Runs batches until no request waits. */
  private async drain(run: (batch: AllocationRequest<never>[]) => Promise<void>): Promise<void> {
    // started in the caller's turn: let the requests of the same turn join the first batch
    await Promise.resolve();
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0, MAX_ALLOCATION_BATCH);
      this.stats.batches++;
      this.stats.requests += batch.length;
      try {
        await run(batch);
      } catch (err) {
        for (const request of batch) request.reject(err);
      }
    }
    // cleared in the same turn as the last batch ended: a request queued after this starts a new drain
    this.draining = undefined;
  }
}
