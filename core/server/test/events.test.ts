/** The event bus: a subscriber that falls far behind is cut off with an error; the publisher and the other subscribers carry on. */
import { expect, it } from 'vitest';
import { SUBSCRIBER_BUFFER, SubscriberOverflowError, createEventBus } from '../src/events/event-bus.js';

it('ends a stalled subscription with SubscriberOverflowError instead of throwing into the publisher', async () => {
  const bus = createEventBus();
  const stalled = bus.subscribe('hostRevision')[Symbol.asyncIterator]();
  const reader = bus.subscribe('hostRevision')[Symbol.asyncIterator]();
  // both subscriptions are live once their first next() is pending
  const firstStalled = stalled.next();
  let read = 0;
  const total = SUBSCRIBER_BUFFER + 5_000;
  const reading = (async () => {
    for (let r = await reader.next(); !r.done; r = await reader.next()) if (++read === total) break;
  })();
  await new Promise((r) => setImmediate(r));
  for (let revision = 1; revision <= total; revision++) {
    expect(() => bus.publish('hostRevision', { hostId: 'h', revision })).not.toThrow();
    if (revision % 1000 === 0) await new Promise((r) => setImmediate(r)); // the reader keeps up
  }
  await reading;
  expect(read).toBe(total);
  // the stalled one got its first event, then its buffer filled, and it ended with the error
  expect((await firstStalled).value).toEqual({ hostId: 'h', revision: 1 });
  let error: unknown;
  try {
    for (let r = await stalled.next(); !r.done; r = await stalled.next());
  } catch (err) {
    error = err;
  }
  expect(error).toBeInstanceOf(SubscriberOverflowError);
  expect(String(error)).toMatch(/hostRevision events fell more than 65536 events behind/);
});

it('takes a thousand subscribers of one topic without a listener-leak warning, and each gets the event', async () => {
  const bus = createEventBus();
  const warnings: Error[] = [];
  const onWarning = (w: Error) => warnings.push(w);
  process.on('warning', onWarning);
  try {
    const subscribers = Array.from({ length: 1000 }, () => bus.subscribe('hostRevision')[Symbol.asyncIterator]());
    const firsts = subscribers.map((s) => s.next());
    await new Promise((r) => setImmediate(r));
    bus.publish('hostRevision', { hostId: 'h', revision: 7 });
    const got = await Promise.all(firsts);
    expect(got.every((r) => r.value?.revision === 7)).toBe(true);
    await Promise.all(subscribers.map((s) => s.return?.()));
    await new Promise((r) => setImmediate(r));
    expect(warnings.filter((w) => w.name === 'MaxListenersExceededWarning')).toEqual([]);
  } finally {
    process.off('warning', onWarning);
  }
});
