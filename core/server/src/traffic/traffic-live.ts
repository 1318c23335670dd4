/**
 * Live traffic rates, in memory on every replica: each replica hears every host's rates messages
 * on the event bus (whichever replica took the agent's report) and keeps the newest rate per
 * instance, NIC, forward and host. The `trafficUpdated` subscription is the same messages,
 * filtered to what the caller may see.
 */
import { inject, injectable } from 'tsyringe';
import { isAdmin, type Actor } from '../auth/actor.js';
import { ClockToken, EventBusToken, type Clock } from '../di/tokens.js';
import type { EventBus } from '../events/event-bus.js';
import type { TrafficRatesMessage } from '../events/event-payloads.js';

/** A live rate, bits per second, as of `at`. */
export interface LiveRate {
  rxBps: number;
  txBps: number;
  at: Date;
}

/** One subscriber's message: the rates of the instances it may see on one host, for one interval. */
export interface TrafficUpdate {
  hostId: string;
  at: Date;
  intervalMs: number;
  instances: { instanceId: string; rxBps: number; txBps: number }[];
  /** The host's total (admins only). */
  host: LiveRate | null;
}

/** A rate older than this is no longer live (its agent stopped reporting). */
export const LIVE_RATE_MAX_AGE_MS = 10_000;

/** Keeps the newest rates; see the file comment. */
@injectable()
export class TrafficLive {
  private readonly rates = new Map<string, LiveRate>();
  private subscription: AsyncGenerator<TrafficRatesMessage> | undefined;
  private taken = 0;

  constructor(
    @inject(EventBusToken) private readonly events: EventBus,
    @inject(ClockToken) private readonly clock: Clock,
  ) {}

  /** Starts listening to the bus (idempotent). */
  start(): void {
    if (this.subscription) return;
    const subscription = this.events.subscribe('trafficRates') as unknown as AsyncGenerator<TrafficRatesMessage>;
    this.subscription = subscription;
    void (async () => {
      for await (const message of subscription) this.take(message);
    })().catch(() => undefined);
  }

  /** Stops listening. */
  async stop(): Promise<void> {
    await this.subscription?.return(undefined);
    this.subscription = undefined;
  }

  /** Records one message's rates. */
  take(message: TrafficRatesMessage): void {
    const at = new Date(message.at);
    const keep = (id: string, rxBps: number, txBps: number) => {
      const was = this.rates.get(id);
      if (!was || was.at.getTime() <= at.getTime()) this.rates.set(id, { rxBps, txBps, at });
    };
    keep(message.hostId, message.host.rxBps, message.host.txBps);
    for (const i of message.instances) {
      if (!i.continued) keep(i.instanceId, i.rxBps, i.txBps);
      for (const [id, rx, tx] of [...i.nics, ...i.forwards]) keep(id, rx, tx);
    }
    // objects that are gone leave their last rate behind: swept now and then
    if (++this.taken % 1000 === 0) {
      const oldest = this.clock.now().getTime() - 6 * LIVE_RATE_MAX_AGE_MS;
      for (const [id, rate] of this.rates) if (rate.at.getTime() < oldest) this.rates.delete(id);
    }
  }

  /** The live rate of an instance, NIC, forward or host; null when none was reported in the last 10 seconds. */
  rate(id: string): LiveRate | null {
    const rate = this.rates.get(id);
    if (!rate || rate.at.getTime() < this.clock.now().getTime() - LIVE_RATE_MAX_AGE_MS) return null;
    return rate;
  }

  /**
   * Rates messages for `actor`: its own instances (all for admins), narrowed to `instanceIds` and
   * `hostId` when given; ids of instances it may not see give nothing. Messages left empty are
   * skipped (an admin watching a host gets its total still).
   */
  async *watch(actor: Actor, filter: { instanceIds: readonly string[] | null; hostId: string | null }): AsyncGenerator<TrafficUpdate> {
    const admin = isAdmin(actor);
    const wanted = filter.instanceIds ? new Set(filter.instanceIds) : null;
    for await (const message of this.events.subscribe('trafficRates')) {
      if (filter.hostId !== null && message.hostId !== filter.hostId) continue;
      const instances = message.instances
        .filter((i) => !i.continued && (admin || i.ownerId === actor.userId) && (!wanted || wanted.has(i.instanceId)))
        .map((i) => ({ instanceId: i.instanceId, rxBps: i.rxBps, txBps: i.txBps }));
      const host = admin && !wanted && message.part === 0 ? { rxBps: message.host.rxBps, txBps: message.host.txBps, at: new Date(message.at) } : null;
      if (instances.length === 0 && !host) continue;
      yield { hostId: message.hostId, at: new Date(message.at), intervalMs: message.intervalMs, instances, host };
    }
  }
}
