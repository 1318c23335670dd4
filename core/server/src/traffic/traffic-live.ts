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
import { TrafficWatchers, type LiveRate, type TrafficUpdate } from './traffic-watchers.js';

export type { LiveRate, TrafficUpdate } from './traffic-watchers.js';

/** A rate older than this is no longer live (its agent stopped reporting). */
export const LIVE_RATE_MAX_AGE_MS = 10_000;

/** Keeps the newest rates; see the file comment. */
@injectable()
export class TrafficLive {
  private readonly rates = new Map<string, LiveRate>();
  private subscription: AsyncGenerator<TrafficRatesMessage> | undefined;
  private taken = 0;
  private readonly watchers = new TrafficWatchers();

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
    this.watchers.endAll();
  }

  /** Records one message's rates and hands it to the watchers. */
  take(message: TrafficRatesMessage): void {
    this.watchers.dispatch(message);
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

  /** How many `trafficUpdated` subscribers this replica feeds now. */
  get watching(): number {
    return this.watchers.size;
  }

  /**
   * Rates messages for `actor`: its own instances (all for admins), narrowed to `instanceIds` and
   * `hostId` when given; ids of instances it may not see give nothing. Messages left empty are
   * skipped (an admin watching a host gets its total still). Visibility is checked on every
   * message against the instance's owner in it, so an instance given to another user stops
   * showing at its next interval.
   *
   * Subscribers with the same view (admin or the same user, the same `instanceIds` and `hostId`)
   * form one group and get the same update object for a message: it is built once per group,
   * and the GraphQL layer executes and shares its result once per group and document
   * (graphql/shared-subscription-results.ts). Groups are found through an index by instance id,
   * so a message costs its instances plus the groups it reaches, not one filter per subscriber.
   */
  watch(actor: Actor, filter: { instanceIds: readonly string[] | null; hostId: string | null }): AsyncIterableIterator<TrafficUpdate> {
    this.start();
    return this.watchers.add(isAdmin(actor), actor.userId, filter.instanceIds, filter.hostId);
  }
}
