/**
 * The `trafficUpdated` fan-out (traffic/traffic-watchers.ts) against the plain per-subscriber
 * filter it replaces: for random subscribers (admins and users, with and without instance ids and
 * a host) and random rates messages (instances changing owner between messages), every subscriber
 * gets exactly the updates the filter gives, in order; subscribers with the same view share one
 * update object; one that leaves or falls behind gets nothing more while the others carry on.
 */
import { expect, it } from 'vitest';
import { SUBSCRIBER_BUFFER, SubscriberOverflowError } from '../src/events/event-bus.js';
import type { InstanceTrafficRates, TrafficRatesMessage } from '../src/events/event-payloads.js';
import { TrafficWatchers, type TrafficUpdate } from '../src/traffic/traffic-watchers.js';

interface View {
  admin: boolean;
  userId: string;
  instanceIds: string[] | null;
  hostId: string | null;
}

/** The filter each subscriber ran on every message before the fan-out (TrafficLive.watch until December 2026). */
function reference(view: View, message: TrafficRatesMessage): TrafficUpdate | undefined {
  if (view.hostId !== null && message.hostId !== view.hostId) return undefined;
  const wanted = view.instanceIds ? new Set(view.instanceIds) : null;
  const instances = message.instances
    .filter((i) => !i.continued && (view.admin || i.ownerId === view.userId) && (!wanted || wanted.has(i.instanceId)))
    .map((i) => ({ instanceId: i.instanceId, rxBps: i.rxBps, txBps: i.txBps }));
  const host = view.admin && !wanted && message.part === 0 ? { rxBps: message.host.rxBps, txBps: message.host.txBps, at: new Date(message.at) } : null;
  if (instances.length === 0 && !host) return undefined;
  return { hostId: message.hostId, at: new Date(message.at), intervalMs: message.intervalMs, instances, host };
}

/** A small deterministic generator (the test's runs are repeatable). */
function random(seed: number): (n: number) => number {
  // mulberry32
  let state = seed >>> 0;
  return (n) => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = Math.imul(state ^ (state >>> 15), state | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) % n;
  };
}

/** Values already queued in a mailbox (each next() of a non-empty mailbox settles at once). */
async function drain<T>(feed: AsyncIterator<T>, count: number): Promise<T[]> {
  const out: T[] = [];
  for (let i = 0; i < count; i++) out.push((await feed.next()).value as T);
  return out;
}

it('gives every subscriber exactly what the per-subscriber filter gives, one shared object per view', async () => {
  const pick = random(42);
  const users = ['u1', 'u2', 'u3', 'u4'];
  const hosts = ['h1', 'h2', 'h3'];
  const instanceIds = Array.from({ length: 60 }, (_, i) => `i${i}`);
  const owner = new Map(instanceIds.map((id) => [id, users[pick(users.length)]!]));
  const hostOf = new Map(instanceIds.map((id, i) => [id, hosts[i % hosts.length]!]));
  const watchers = new TrafficWatchers();

  // 300 subscribers over a few dozen views: many share one
  const views: View[] = [];
  for (let v = 0; v < 40; v++) {
    const admin = pick(5) === 0;
    const ids = pick(3) === 0 ? null : Array.from({ length: 1 + pick(12) }, () => instanceIds[pick(instanceIds.length)]!);
    views.push({ admin, userId: users[pick(users.length)]!, instanceIds: ids, hostId: pick(4) === 0 ? hosts[pick(hosts.length)]! : null });
  }
  views.push({ admin: false, userId: 'u1', instanceIds: [], hostId: null }); // asks for nothing
  const subscribers = Array.from({ length: 300 }, (_, s) => {
    const view = views[s % views.length]!;
    // the same ids in another order and repeated are the same view
    const ids = view.instanceIds && s % 2 === 1 ? [...view.instanceIds].reverse().concat(view.instanceIds.slice(0, 1)) : view.instanceIds;
    return { view, feed: watchers.add(view.admin, view.userId, ids, view.hostId), expected: [] as TrafficUpdate[] };
  });

  for (let m = 0; m < 200; m++) {
    // now and then an instance changes owner: visibility follows the owner in each message
    if (pick(10) === 0) owner.set(instanceIds[pick(instanceIds.length)]!, users[pick(users.length)]!);
    const hostId = hosts[pick(hosts.length)]!;
    const onHost = instanceIds.filter((id) => hostOf.get(id) === hostId && pick(4) !== 0);
    const entries: InstanceTrafficRates[] = onHost.map((id) => ({
      instanceId: id,
      ownerId: owner.get(id)!,
      rxBps: pick(1_000_000),
      txBps: pick(100_000),
      nics: [],
      forwards: [],
    }));
    // a continued entry (more forwards of an instance) carries no rates of its own
    if (entries.length > 0 && pick(3) === 0) entries.push({ ...entries[0]!, rxBps: 0, txBps: 0, continued: true });
    const message: TrafficRatesMessage = {
      hostId,
      at: 1_700_000_000_000 + m * 1000,
      intervalMs: 1000,
      part: pick(3) === 0 ? 1 : 0,
      parts: 2,
      host: { rxBps: 7, txBps: 3 },
      instances: entries,
    };
    watchers.dispatch(message);
    for (const s of subscribers) {
      const update = reference(s.view, message);
      if (update) s.expected.push(update);
    }
  }

  let delivered = 0;
  const objects = new Map<string, Set<TrafficUpdate>>();
  for (const s of subscribers) {
    const got = await drain(s.feed, s.expected.length);
    expect(got).toEqual(s.expected);
    delivered += got.length;
    const key = JSON.stringify(s.view);
    const seen = objects.get(key) ?? new Set();
    got.forEach((u) => seen.add(u));
    objects.set(key, seen);
  }
  expect(delivered).toBeGreaterThan(1000);
  // the views reached something each (admins, owners, ids of other users' instances left out)
  expect(subscribers.filter((s) => s.expected.length > 0).length).toBeGreaterThan(200);
  expect(subscribers.some((s) => s.expected.some((u) => u.host !== null))).toBe(true);
  // subscribers of one view got the same objects (one per message), not a copy each
  for (const s of subscribers) expect(objects.get(JSON.stringify(s.view))!.size).toBe(s.expected.length);
  // and nothing more than expected is waiting
  for (const s of subscribers) {
    s.feed.end();
    expect(await s.feed.next()).toEqual({ value: undefined, done: true });
  }
});

it('stops feeding a subscriber that left or fell behind, and keeps feeding the others of its view', async () => {
  const watchers = new TrafficWatchers();
  const message = (n: number): TrafficRatesMessage => ({
    hostId: 'h1',
    at: n,
    intervalMs: 1000,
    part: 0,
    parts: 1,
    host: { rxBps: 0, txBps: 0 },
    instances: [{ instanceId: 'i1', ownerId: 'u1', rxBps: n, txBps: 0, nics: [], forwards: [] }],
  });
  const leaving = watchers.add(false, 'u1', ['i1'], null);
  const stalled = watchers.add(false, 'u1', ['i1'], null);
  const reading = watchers.add(false, 'u1', ['i1'], null);

  const first = reading.next();
  watchers.dispatch(message(1));
  expect((await first).value.instances).toEqual([{ instanceId: 'i1', rxBps: 1, txBps: 0 }]);
  await leaving.return();
  expect(await leaving.next()).toEqual({ value: undefined, done: true });

  // the stalled one never reads: one message past its buffer ends it with SubscriberOverflowError
  for (let n = 2; n <= SUBSCRIBER_BUFFER + 1; n++) {
    watchers.dispatch(message(n));
    await reading.next();
  }
  for (let i = 0; i < SUBSCRIBER_BUFFER; i++) expect((await stalled.next()).done).toBe(false);
  await expect(stalled.next()).rejects.toBeInstanceOf(SubscriberOverflowError);
  expect(await stalled.next()).toEqual({ value: undefined, done: true });

  watchers.dispatch(message(SUBSCRIBER_BUFFER + 2));
  expect((await reading.next()).value.instances[0].rxBps).toBe(SUBSCRIBER_BUFFER + 2);
  expect(await leaving.next()).toEqual({ value: undefined, done: true });
  expect(await stalled.next()).toEqual({ value: undefined, done: true });
});
