/**
 * The `trafficUpdated` subscribers of one replica, indexed so that a host's rates message reaches
 * the subscribers that may see some of its instances without a filter run per subscriber:
 * subscribers with the same view — admin or the same user, the same instance ids and host — are
 * one group, found through the instance ids it asks for (or, without ids, through the owner the
 * message names, or as an admin). A group gets one update object per message, shared by its
 * members; visibility is decided per message from the owner the message carries.
 */
import { SUBSCRIBER_BUFFER, SubscriberOverflowError } from '../events/event-bus.js';
import type { TrafficRatesMessage } from '../events/event-payloads.js';
import { Mailbox } from '../support/mailbox.js';

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

/** Subscribers that see exactly the same thing. */
interface WatchGroup {
  key: string;
  admin: boolean;
  userId: string;
  hostId: string | null;
  wanted: ReadonlySet<string> | null;
  members: Set<Mailbox<TrafficUpdate>>;
  /** The instances of the message being dispatched (undefined: the group has none yet). */
  pending: TrafficUpdate['instances'] | undefined;
}

/** See the file comment. */
export class TrafficWatchers {
  private readonly groups = new Map<string, WatchGroup>();
  /** Groups with instance ids, by each id. */
  private readonly byInstance = new Map<string, Set<WatchGroup>>();
  /** Users' groups without instance ids, by user. */
  private readonly allOfOwner = new Map<string, Set<WatchGroup>>();
  /** Admins' groups without instance ids. */
  private readonly allForAdmin = new Set<WatchGroup>();

  /** How many subscribers are fed now. */
  get size(): number {
    let n = 0;
    for (const group of this.groups.values()) n += group.members.size;
    return n;
  }

  /** A new subscriber's feed; it leaves the index when the consumer returns (or falls SUBSCRIBER_BUFFER messages behind). */
  add(admin: boolean, userId: string, instanceIds: readonly string[] | null, hostId: string | null): Mailbox<TrafficUpdate> {
    const wanted = instanceIds ? new Set(instanceIds) : null;
    const key = `${admin ? '*' : `u:${userId}`}\n${hostId ?? '*'}\n${wanted ? [...wanted].sort().join(',') : '*'}`;
    let group = this.groups.get(key);
    if (!group) {
      group = { key, admin, userId, hostId, wanted, members: new Set(), pending: undefined };
      this.groups.set(key, group);
      for (const set of this.indexesOf(group)) set.add(group);
    }
    const joined = group;
    const mailbox: Mailbox<TrafficUpdate> = new Mailbox<TrafficUpdate>(
      SUBSCRIBER_BUFFER,
      () => new SubscriberOverflowError('trafficRates'),
      () => this.leave(joined, mailbox),
    );
    joined.members.add(mailbox);
    return mailbox;
  }

  /** Hands one host's rates message to the groups it concerns. */
  dispatch(message: TrafficRatesMessage): void {
    if (this.groups.size === 0) return;
    const touched: WatchGroup[] = [];
    const collect = (group: WatchGroup, item: TrafficUpdate['instances'][number]) => {
      if (group.hostId !== null && group.hostId !== message.hostId) return;
      if (group.pending === undefined) {
        group.pending = [];
        touched.push(group);
      }
      group.pending.push(item);
    };
    for (const i of message.instances) {
      if (i.continued) continue;
      const item = { instanceId: i.instanceId, rxBps: i.rxBps, txBps: i.txBps };
      const asking = this.byInstance.get(i.instanceId);
      if (asking) for (const group of asking) if (group.admin || group.userId === i.ownerId) collect(group, item);
      const owners = this.allOfOwner.get(i.ownerId);
      if (owners) for (const group of owners) collect(group, item);
      for (const group of this.allForAdmin) collect(group, item);
    }
    // an admin watching every instance gets the host's total in the first part, also without instances
    const host = message.part === 0 ? { rxBps: message.host.rxBps, txBps: message.host.txBps, at: new Date(message.at) } : null;
    if (host)
      for (const group of this.allForAdmin)
        if (group.pending === undefined && (group.hostId === null || group.hostId === message.hostId)) {
          group.pending = [];
          touched.push(group);
        }
    const at = new Date(message.at);
    for (const group of touched) {
      const update: TrafficUpdate = {
        hostId: message.hostId,
        at,
        intervalMs: message.intervalMs,
        instances: group.pending!,
        host: group.admin && !group.wanted ? host : null,
      };
      group.pending = undefined;
      for (const member of group.members) member.push(update);
    }
  }

  /** Ends every feed (the replica stops). */
  endAll(): void {
    for (const group of [...this.groups.values()]) for (const member of [...group.members]) member.end();
  }

  private leave(group: WatchGroup, mailbox: Mailbox<TrafficUpdate>): void {
    group.members.delete(mailbox);
    if (group.members.size > 0 || this.groups.get(group.key) !== group) return;
    this.groups.delete(group.key);
    for (const set of this.indexesOf(group)) set.delete(group);
    if (group.wanted) for (const id of group.wanted) if (this.byInstance.get(id)?.size === 0) this.byInstance.delete(id);
    if (!group.admin && !group.wanted && this.allOfOwner.get(group.userId)?.size === 0) this.allOfOwner.delete(group.userId);
  }

  /** The index sets a group belongs in (created when missing). */
  private indexesOf(group: WatchGroup): Set<WatchGroup>[] {
    const setIn = (index: Map<string, Set<WatchGroup>>, id: string) => {
      let set = index.get(id);
      if (!set) index.set(id, (set = new Set()));
      return set;
    };
    if (group.wanted) return [...group.wanted].map((id) => setIn(this.byInstance, id));
    return group.admin ? [this.allForAdmin] : [setIn(this.allOfOwner, group.userId)];
  }
}
