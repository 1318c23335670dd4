/**
 * Ends what a revoked token had open. A graphql-ws connection (and an SSE subscription) is
 * authenticated once, when it starts, so revoking its token must reach it: every replica hears
 * `tokenRevoked` after the revocation commits and runs what was registered for that token (the
 * server closes the socket with 4403, the same code a bad token gets at connect). A token
 * revoked between a connection's authentication and its registration is caught as well:
 * revocations heard in the last minute are remembered.
 */
import { Repeater } from 'graphql-yoga';
import { inject, injectable } from 'tsyringe';
import type { EventBus } from '../events/event-bus.js';
import type { Logger } from '../support/logger.js';
import { relay } from '../support/streams.js';
import { EventBusToken, LoggerToken } from '../di/tokens.js';

// how long a heard revocation is remembered for registrations that raced it
const RECENT_MS = 60_000;

@injectable()
export class TokenRevocations {
  private readonly watchers = new Map<string, Set<() => void>>();
  private readonly recent = new Map<string, number>();
  private listening?: AsyncIterator<{ tokenId: string }>;

  constructor(
    @inject(EventBusToken) private readonly events: EventBus,
    @inject(LoggerToken) private readonly logger: Logger,
  ) {}

  /** Starts listening for revocations (idempotent); call it before the first connection is accepted. */
  start(): void {
    if (this.listening) return;
    const changes = this.events.subscribe('tokenRevoked')[Symbol.asyncIterator]();
    this.listening = changes;
    void (async () => {
      for (;;) {
        const next = await changes.next();
        if (next.done) return;
        this.revoked(next.value.tokenId);
      }
    })().catch((err: unknown) => this.logger.error('token revocation listener failed', err));
  }

  /** Stops listening. */
  stop(): void {
    const listening = this.listening;
    this.listening = undefined;
    void listening?.return?.();
  }

  /** Runs `onRevoked` once when the token is revoked (soon, if it just was); returns the function that unregisters it. */
  watch(tokenId: string, onRevoked: () => void): () => void {
    this.start();
    if (this.recentlyRevoked(tokenId)) {
      queueMicrotask(() => this.run(tokenId, onRevoked));
      return () => {};
    }
    let callbacks = this.watchers.get(tokenId);
    if (!callbacks) this.watchers.set(tokenId, (callbacks = new Set()));
    callbacks.add(onRevoked);
    return () => {
      callbacks.delete(onRevoked);
      if (callbacks.size === 0 && this.watchers.get(tokenId) === callbacks) this.watchers.delete(tokenId);
    };
  }

  /** `source`, ending when the token is revoked. */
  bound<T>(tokenId: string, source: AsyncIterable<T>): AsyncIterable<T> {
    return new Repeater<T>(async (push, stop) => {
      const unwatch = this.watch(tokenId, () => stop());
      const iterator = source[Symbol.asyncIterator]();
      relay(iterator, push, stop, (value: T) => value);
      await stop;
      unwatch();
      await iterator.return?.();
    });
  }

  private recentlyRevoked(tokenId: string): boolean {
    const at = this.recent.get(tokenId);
    return at !== undefined && Date.now() - at <= RECENT_MS;
  }

  private revoked(tokenId: string): void {
    const now = Date.now();
    for (const [id, at] of this.recent) if (now - at > RECENT_MS) this.recent.delete(id);
    this.recent.set(tokenId, now);
    const callbacks = this.watchers.get(tokenId);
    this.watchers.delete(tokenId);
    for (const callback of callbacks ?? []) this.run(tokenId, callback);
  }

  private run(tokenId: string, callback: () => void): void {
    try {
      callback();
    } catch (err) {
      this.logger.error(`closing what token ${tokenId} had open failed`, err);
    }
  }
}
