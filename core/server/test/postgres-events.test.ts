/** Events over PostgreSQL LISTEN/NOTIFY between two stores on one database, including entries past NOTIFY's 8000-byte limit. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStore, type Store } from '../src/db/database.js';
import { auditLog } from '../src/db/schema.js';
import { createEventBus } from '../src/events/event-bus.js';
import { newId } from '../src/support/ids.js';
import type { AuditEntry } from '../src/events/event-payloads.js';
import { REQUIRE_SYSTEM, createTestDatabase, postgresReachable, type TestDatabase } from '../src/testing/stores.js';

const available = (await postgresReachable()) || REQUIRE_SYSTEM;

describe.skipIf(!available)('PostgreSQL event target', () => {
  let database: TestDatabase;
  let one: Store;
  let two: Store;

  beforeAll(async () => {
    database = await createTestDatabase();
    one = await openStore({ kind: 'postgres', url: database.url });
    two = await openStore({ kind: 'postgres', url: database.url });
  });
  afterAll(async () => {
    await one?.close();
    await two?.close();
    await database?.drop();
  });

  it('delivers small events inline and large audit entries by reference, in order', async () => {
    const publisher = createEventBus(one.eventTarget);
    const receiver = createEventBus(two.eventTarget);
    const got: AuditEntry[] = [];
    const revisions: number[] = [];
    const audits = receiver.subscribe('audit')[Symbol.asyncIterator]();
    const hosts = receiver.subscribe('hostRevision')[Symbol.asyncIterator]();
    const nextAudit = async () => got.push((await audits.next()).value as AuditEntry);

    const big: AuditEntry = {
      id: newId(),
      at: new Date(),
      requestId: 'r',
      actorUserId: null,
      tokenId: null,
      action: 'test.big',
      objectType: 'Test',
      objectId: 'x',
      ownerId: null,
      before: null,
      after: { blob: 'x'.repeat(20_000) },
      importId: null,
    };
    await one.db.insert(auditLog).values(big);
    const small: AuditEntry = { ...big, id: newId(), action: 'test.small', after: { n: 1 } };

    const done = Promise.all([nextAudit(), nextAudit(), hosts.next().then((r) => revisions.push(r.value!.revision))]);
    publisher.publish('audit', big);
    publisher.publish('audit', small);
    publisher.publish('hostRevision', { hostId: 'h', revision: 42 });
    await done;
    expect(got.map((e) => e.action)).toEqual(['test.big', 'test.small']);
    expect((got[0]!.after as { blob: string }).blob).toHaveLength(20_000);
    expect(got[1]!.at).toBeInstanceOf(Date);
    expect(revisions).toEqual([42]);
    await audits.return?.();
    await hosts.return?.();
  });

  it('delivers a burst of events published in one turn (sent as one statement) complete and in order', async () => {
    const publisher = createEventBus(one.eventTarget);
    const receiver = createEventBus(two.eventTarget);
    const audits = receiver.subscribe('audit')[Symbol.asyncIterator]();
    const sent = Array.from({ length: 2_000 }, (_, i) => ({
      id: newId(),
      at: new Date(),
      requestId: 'burst',
      actorUserId: null,
      tokenId: null,
      action: 'test.burst',
      objectType: 'Test',
      objectId: `o${i}`,
      ownerId: null,
      before: null,
      after: { i },
      importId: null,
    }));
    const received = (async () => {
      const ids: string[] = [];
      while (ids.length < sent.length) ids.push(((await audits.next()).value as AuditEntry).objectId);
      return ids;
    })();
    for (const entry of sent) publisher.publish('audit', entry);
    expect(await received).toEqual(sent.map((e) => e.objectId));
    await audits.return?.();
  });
});
