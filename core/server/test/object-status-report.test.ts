/**
 * An agent's status report at scale, through the service: a report's changes are published many to
 * an event (each small enough for one NOTIFY), every owner's subscription still gets each of its
 * own objects' changes and no one else's, stale and foreign objects are left alone, the audit entry
 * lists what changed, and bad input is refused naming the field. On PGlite and PostgreSQL.
 */
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Actor } from '../src/auth/actor.js';
import { systemActor } from '../src/auth/actor.js';
import { rowsOf, type Store } from '../src/db/database.js';
import {
  STATUS_BATCH_BYTES,
  objectStatusChanges,
  statusBatchSize,
  statusBatches,
  type ObjectStatusBatch,
  type ObjectStatusChange,
} from '../src/events/event-payloads.js';
import { EventBusToken } from '../src/di/tokens.js';
import type { EventBus } from '../src/events/event-bus.js';
import { createContainer } from '../src/server.js';
import { HostService } from '../src/services/host-service.js';
import { InstanceService } from '../src/services/instance-service.js';
import { ObjectStatusService, type ObjectStatusReport } from '../src/services/object-status-service.js';
import { PoolService } from '../src/services/pool-service.js';
import { PortForwardService } from '../src/services/port-forward-service.js';
import { ValidationError } from '../src/support/errors.js';
import { newId } from '../src/support/ids.js';
import { storeBackends, type StoreBackend } from '../src/testing/stores.js';

const PER_OWNER = 1_500;

describe('statusBatches', () => {
  const change = (i: number, over: Partial<ObjectStatusChange> = {}): ObjectStatusChange => ({
    objectType: 'port_forward',
    objectId: newId(),
    hostId: i % 3 === 0 ? 'aaaaaaaa-0000-4000-8000-000000000001' : 'aaaaaaaa-0000-4000-8000-000000000002',
    ownerId: `bbbbbbbb-0000-4000-8000-${String(i % 7).padStart(12, '0')}`,
    status: i % 5 === 0 ? 'failed' : 'applied',
    error: i % 5 === 0 ? `nft: error ${i}` : null,
    revision: 7,
    ...over,
  });

  it('packs many changes to a batch within the NOTIFY budget, per host and revision, each change once and in order', () => {
    const changes = Array.from({ length: 10_000 }, (_, i) => change(i));
    const batches = statusBatches(changes);
    for (const b of batches) expect(Buffer.byteLength(JSON.stringify(b))).toBeLessThanOrEqual(STATUS_BATCH_BYTES);
    // ~75 bytes a change as tuples: 10,000 changes took ~110 batches (one each was 10,000 events);
    // these interleave hosts, owners and statuses, so their runs are short
    expect(batches.length).toBeLessThan(200);
    expect(batches.reduce((n, b) => n + statusBatchSize(b), 0)).toBe(changes.length);
    for (const host of new Set(changes.map((c) => c.hostId))) {
      const mine = batches.filter((b) => b.hostId === host).flatMap(objectStatusChanges);
      expect(mine).toEqual(changes.filter((c) => c.hostId === host));
    }
  });

  it("packs a report's changes of one owner and status as runs of ids, ~37 bytes a change", () => {
    const changes = Array.from({ length: 10_000 }, (_, i) =>
      change(i, { hostId: 'aaaaaaaa-0000-4000-8000-000000000001', ownerId: 'bbbbbbbb-0000-4000-8000-000000000001', status: 'applied', error: null }),
    );
    const batches = statusBatches(changes);
    for (const b of batches) expect(Buffer.byteLength(JSON.stringify(b))).toBeLessThanOrEqual(STATUS_BATCH_BYTES);
    expect(batches.length).toBeLessThanOrEqual(Math.ceil((10_000 * 37) / (STATUS_BATCH_BYTES - 200)));
    expect(batches.every((b) => b.runs.length === 1)).toBe(true);
    expect(batches.map(statusBatchSize).reduce((a, b) => a + b)).toBe(changes.length);
    expect(batches.flatMap(objectStatusChanges)).toEqual(changes);
  });

  it("reads a batch of the previous version's format (one tuple per change), as a replica not yet upgraded publishes it", () => {
    const owner = 'bbbbbbbb-0000-4000-8000-000000000001';
    const old = {
      hostId: 'aaaaaaaa-0000-4000-8000-000000000001',
      revision: 9,
      owners: [owner],
      changes: [
        ['port_forward', 'cccccccc-0000-4000-8000-000000000001', 0, 'applied', null],
        ['nic', 'cccccccc-0000-4000-8000-000000000002', 0, 'failed', 'no such device'],
      ],
    } as unknown as Parameters<typeof objectStatusChanges>[0];
    expect(statusBatchSize(old)).toBe(2);
    expect(objectStatusChanges(old)).toEqual([
      {
        objectType: 'port_forward',
        objectId: 'cccccccc-0000-4000-8000-000000000001',
        hostId: old.hostId,
        ownerId: owner,
        status: 'applied',
        error: null,
        revision: 9,
      },
      {
        objectType: 'nic',
        objectId: 'cccccccc-0000-4000-8000-000000000002',
        hostId: old.hostId,
        ownerId: owner,
        status: 'failed',
        error: 'no such device',
        revision: 9,
      },
    ]);
  });

  it('keeps a batch within the budget whatever an error holds, shortening only an error too long for it alone', () => {
    const one = (i: number, error: string) => change(i, { hostId: 'aaaaaaaa-0000-4000-8000-000000000001', status: 'failed', error });
    const nasty = [
      one(0, '\u0001'.repeat(2000)), // 6 bytes each in JSON
      one(1, '€"\\'.repeat(500)), // 7 bytes each in JSON, fits
      one(2, '€'.repeat(2000)),
      ...Array.from({ length: 200 }, (_, i) => one(i + 3, `ü${'\n'.repeat(i)}`)),
    ];
    const batches = statusBatches(nasty);
    for (const b of batches) expect(Buffer.byteLength(JSON.stringify(b))).toBeLessThanOrEqual(STATUS_BATCH_BYTES);
    const back = batches.flatMap(objectStatusChanges);
    expect(back.map((c) => c.objectId)).toEqual(nasty.map((c) => c.objectId));
    expect(back[0]!.error!.length).toBeLessThan(2000);
    expect(nasty[0]!.error!.startsWith(back[0]!.error!)).toBe(true);
    expect(back.slice(1)).toEqual(nasty.slice(1));
  });
});

const backends = await storeBackends();

describe.each(backends)('status reports on $name', (backend: StoreBackend) => {
  let store: Store;
  let cleanup: () => Promise<void>;
  let container: ReturnType<typeof createContainer>;
  let service: ObjectStatusService;
  const admin = systemActor('test');
  let hostId: string;
  let otherHostId: string;
  let revision: number;
  const owners: { actor: Actor; forwards: string[] }[] = [];
  let foreign: string;

  beforeAll(async () => {
    ({ store, cleanup } = await backend.open());
    container = createContainer(store);
    service = container.resolve(ObjectStatusService);
    await store.db.execute(sql`insert into users (id, name, role) values (${admin.userId}, 'system', 'admin') on conflict do nothing`);
    const hosts = container.resolve(HostService);
    hostId = (await hosts.create(admin, { name: 'h-report', backend: 'linux', portRangeStart: 1024, portRangeEnd: 65535 })).id;
    otherHostId = (await hosts.create(admin, { name: 'h-other', backend: 'linux', portRangeStart: 1024, portRangeEnd: 65535 })).id;
    await container.resolve(PoolService).create(admin, { name: 'p-report', kind: 'private', network: 'br-report', cidr: '10.201.0.0/16' });
    for (const name of ['ana', 'ben']) {
      const userId = newId();
      await store.db.execute(sql`insert into users (id, name, role) values (${userId}::uuid, ${name}, 'user')`);
      const actor: Actor = { userId, userName: name, role: 'user', tokenId: newId(), scope: 'user', hostId: null, requestId: 'test' };
      const vm = await container.resolve(InstanceService).create(admin, { hostId, name: `${name}-vm`, ownerId: userId, nics: [{ network: 'br-report' }] });
      const first = await container
        .resolve(PortForwardService)
        .create(admin, { instanceId: vm.id, protocol: 'tcp', hostPort: String(name === 'ana' ? 10000 : 20000), targetPort: '22' });
      // the rest copied from the first, one host port each
      const cloned = await store.db.execute(sql`
        insert into port_forwards (id, host_id, instance_id, owner_id, protocol, host_address, host_port_start, host_port_end, target_address_id,
          target_address, target_port_start, source_cidrs, note, changed_revision, proto_lo, proto_hi, addr_lo, addr_hi)
        select gen_random_uuid(), host_id, instance_id, owner_id, protocol, host_address, host_port_start + g, host_port_start + g, target_address_id,
          target_address, target_port_start, source_cidrs, note, changed_revision, proto_lo, proto_hi, addr_lo, addr_hi
        from port_forwards, generate_series(1, ${PER_OWNER - 1}::int) as g where id = ${first.id}::uuid
        returning id`);
      owners.push({ actor, forwards: [first.id, ...rowsOf<{ id: string }>(cloned).map((r) => r.id)] });
    }
    const vm = await container.resolve(InstanceService).create(admin, { hostId: otherHostId, name: 'other-vm', nics: [{ network: 'br-report' }] });
    foreign = (await container.resolve(PortForwardService).create(admin, { instanceId: vm.id, protocol: 'tcp', hostPort: '30000', targetPort: '22' })).id;
    revision = Number(rowsOf<{ r: number }>(await store.db.execute(sql`select desired_revision as r from hosts where id = ${hostId}::uuid`))[0]!.r);
  });
  afterAll(async () => {
    await cleanup?.();
  });

  const statusOf = async (ids: string[]) =>
    rowsOf<{ status: string; n: number }>(
      await store.db.execute(
        sql`select status, count(*)::int as n from port_forwards where id = any(${`{${ids.join(',')}}`}::uuid[]) group by status order by status`,
      ),
    ).map((r) => [r.status, Number(r.n)]);

  /** The ids an audit entry lists as changed, by "type:status". */
  const listedObjects = async (auditId: string) => {
    const rows = rowsOf<{ objectType: string; status: string; ids: string }>(
      await store.db.execute(
        sql`select object_type as "objectType", status, object_ids::text as ids from audit_status_objects where audit_id = ${auditId}::uuid order by object_type, status`,
      ),
    );
    return Object.fromEntries(rows.map((r) => [`${r.objectType}:${r.status}`, r.ids.slice(1, -1).split(',')]));
  };

  /** Collects what a subscription delivers until `count` changes arrived. */
  const collect = (actor: Actor, count: number) => {
    const got: ObjectStatusChange[] = [];
    const it = service.watch(actor)[Symbol.asyncIterator]();
    const done = (async () => {
      while (got.length < count) got.push((await it.next()).value as ObjectStatusChange);
      await it.return?.();
    })();
    return { got, done };
  };

  it("publishes a report's changes many to an event, and each owner's subscription gets each of its own changes and no one else's", async () => {
    const [ana, ben] = owners as [(typeof owners)[0], (typeof owners)[0]];
    // interleaved, as an agent lists objects in its own order
    const objects: ObjectStatusReport[] = ana.forwards.flatMap((id, i) => [
      { objectType: 'port_forward', objectId: id, status: 'applied' },
      { objectType: 'port_forward', objectId: ben.forwards[i]!, status: i % 10 === 0 ? 'failed' : 'applied', ...(i % 10 === 0 ? { error: `e${i}` } : {}) },
    ]);
    const bus = container.resolve<EventBus>(EventBusToken);
    const batches: ObjectStatusBatch[] = [];
    const all = bus.subscribe('objectStatus')[Symbol.asyncIterator]();
    const allDone = (async () => {
      let n = 0;
      while (n < objects.length) {
        const b = (await all.next()).value as ObjectStatusBatch;
        batches.push(b);
        n += statusBatchSize(b);
      }
      await all.return?.();
    })();
    const anaSees = collect(ana.actor, PER_OWNER);
    const benSees = collect(ben.actor, PER_OWNER);
    const adminSees = collect(admin, 2 * PER_OWNER);

    const result = await service.report(admin, {
      hostId,
      revision,
      objects: [...objects, { objectType: 'port_forward', objectId: foreign, status: 'applied' }],
    });
    expect(result.changes).toHaveLength(2 * PER_OWNER);
    expect(result.stale).toEqual([]);
    await Promise.all([allDone, anaSees.done, benSees.done, adminSees.done]);

    expect(batches.length).toBeLessThan(objects.length / 40);
    expect(anaSees.got.map((c) => c.objectId)).toEqual(ana.forwards);
    expect(anaSees.got.every((c) => c.ownerId === ana.actor.userId && c.status === 'applied' && c.hostId === hostId && c.revision === revision)).toBe(true);
    expect(benSees.got.map((c) => c.objectId)).toEqual(ben.forwards);
    expect(benSees.got.filter((c) => c.status === 'failed').map((c) => c.error)).toEqual(
      ben.forwards.filter((_, i) => i % 10 === 0).map((_, k) => `e${k * 10}`),
    );
    expect(adminSees.got.map((c) => c.objectId)).toEqual(objects.map((o) => o.objectId));
    // the other host's forward is not this agent's to mark
    expect(await statusOf([foreign])).toEqual([['pending', 1]]);
    expect(await statusOf(ana.forwards)).toEqual([['applied', PER_OWNER]]);

    // one compact audit entry, with the changed objects' ids beside it by type and status
    const [entry] = rowsOf<{ id: string; after: any }>(
      await store.db.execute(sql`select id, after from audit_log where object_id = ${hostId} and action = 'host.statusReport' order by at desc limit 1`),
    );
    expect(entry!.after.changed).toEqual({ applied: 2 * PER_OWNER - PER_OWNER / 10, failed: PER_OWNER / 10 });
    expect(entry!.after.objects).toEqual({ port_forward: { applied: 2 * PER_OWNER - PER_OWNER / 10, failed: PER_OWNER / 10 } });
    expect(entry!.after.failed).toHaveLength(20);
    expect(entry!.after.failed[0]).toEqual({ objectType: 'port_forward', objectId: ben.forwards[0], error: 'e0' });
    expect(entry!.after.moreFailed).toBe(PER_OWNER / 10 - 20);
    const listed = await listedObjects(entry!.id);
    expect(Object.keys(listed)).toEqual(['port_forward:applied', 'port_forward:failed']);
    expect(listed['port_forward:applied']!.sort()).toEqual([...ana.forwards, ...ben.forwards.filter((_, i) => i % 10 !== 0)].sort());
    expect(listed['port_forward:failed']!.sort()).toEqual(ben.forwards.filter((_, i) => i % 10 === 0).sort());
    // small enough to travel in a NOTIFY itself, not by reference (postgres-events.ts)
    expect(Buffer.byteLength(JSON.stringify(entry!.after))).toBeLessThan(7000);

    // the same report again changes nothing, publishes nothing and writes no entry
    const entries = async () =>
      Number(rowsOf<{ n: number }>(await store.db.execute(sql`select count(*)::int as n from audit_log where action = 'host.statusReport'`))[0]!.n);
    const lists = async () => Number(rowsOf<{ n: number }>(await store.db.execute(sql`select count(*)::int as n from audit_status_objects`))[0]!.n);
    const [before, listsBefore] = [await entries(), await lists()];
    expect((await service.report(admin, { hostId, revision, objects })).changes).toEqual([]);
    expect(await entries()).toBe(before);
    expect(await lists()).toBe(listsBefore);
  });

  it('skips objects changed after the reported revision and lists them as stale', async () => {
    const [ana] = owners as [(typeof owners)[0]];
    const newer = ana.forwards.slice(0, 5);
    await store.db.execute(sql`update hosts set desired_revision = desired_revision + 1 where id = ${hostId}::uuid`);
    await store.db.execute(sql`update port_forwards set changed_revision = ${revision + 1}::bigint where id = any(${`{${newer.join(',')}}`}::uuid[])`);
    const objects: ObjectStatusReport[] = ana.forwards.slice(0, 20).map((objectId) => ({ objectType: 'port_forward', objectId, status: 'drifted' }));
    const result = await service.report(admin, { hostId, revision, objects });
    expect(result.stale.map((s) => s.objectId)).toEqual(newer);
    expect(result.changes.map((c) => c.objectId)).toEqual(ana.forwards.slice(5, 20));
    expect(await statusOf(newer)).toEqual([['applied', 5]]);
    // the entry lists only what changed
    const [entry] = rowsOf<{ id: string; after: any }>(
      await store.db.execute(sql`select id, after from audit_log where object_id = ${hostId} and action = 'host.statusReport' order by at desc limit 1`),
    );
    expect(entry!.after.changed).toEqual({ drifted: 15 });
    expect((await listedObjects(entry!.id))['port_forward:drifted']!.sort()).toEqual(ana.forwards.slice(5, 20).sort());
  });

  it("changes this host's NICs, with their instance's owner, and skips another host's", async () => {
    const [ana] = owners as [(typeof owners)[0]];
    const nicOf = async (host: string) =>
      rowsOf<{ id: string }>(
        await store.db.execute(sql`select n.id from nics n join instances i on i.id = n.instance_id where i.host_id = ${host}::uuid order by i.name limit 1`),
      )[0]!.id;
    const [mine, theirs] = [await nicOf(hostId), await nicOf(otherHostId)];
    const result = await service.report(admin, {
      hostId,
      revision,
      objects: [
        { objectType: 'nic', objectId: theirs, status: 'applied' },
        { objectType: 'nic', objectId: mine, status: 'applied' },
      ],
    });
    expect(result.changes).toEqual([{ objectType: 'nic', objectId: mine, hostId, ownerId: ana.actor.userId, status: 'applied', error: null, revision }]);
    const nicStatus = rowsOf<{ id: string; status: string }>(
      await store.db.execute(sql`select id, status from nics where id = any(${`{${mine},${theirs}}`}::uuid[])`),
    );
    expect(Object.fromEntries(nicStatus.map((n) => [n.id, n.status]))).toEqual({ [mine]: 'applied', [theirs]: 'pending' });
    const [entry] = rowsOf<{ id: string }>(
      await store.db.execute(sql`select id from audit_log where object_id = ${hostId} and action = 'host.statusReport' order by at desc limit 1`),
    );
    expect(await listedObjects(entry!.id)).toEqual({ 'nic:applied': [mine] });
  });

  it('counts an object listed twice once, as its last entry says, in the order of that entry', async () => {
    const [, ben] = owners as [(typeof owners)[0], (typeof owners)[0]];
    const [a, b, c] = ben.forwards.slice(200, 203) as [string, string, string];
    const result = await service.report(admin, {
      hostId,
      revision,
      objects: [
        { objectType: 'port_forward', objectId: a, status: 'drifted' },
        { objectType: 'port_forward', objectId: b, status: 'drifted' },
        { objectType: 'port_forward', objectId: a, status: 'failed', error: 'second' },
        { objectType: 'port_forward', objectId: c, status: 'drifted' },
        { objectType: 'port_forward', objectId: b, status: 'drifted' },
      ],
    });
    expect(result.changes.map((ch) => [ch.objectId, ch.status, ch.error])).toEqual([
      [a, 'failed', 'second'],
      [c, 'drifted', null],
      [b, 'drifted', null],
    ]);
  });

  it('skips objects that do not exist, of every type, also when it looks for stale ones', async () => {
    const [ana] = owners as [(typeof owners)[0]];
    const entries = async () =>
      Number(rowsOf<{ n: number }>(await store.db.execute(sql`select count(*)::int as n from audit_log where action = 'host.statusReport'`))[0]!.n);
    const before = await entries();
    const missing: ObjectStatusReport[] = (['port_forward', 'firewall_rule', 'bandwidth_limit', 'nic'] as const).map((objectType) => ({
      objectType,
      objectId: newId(),
      status: 'failed',
      error: 'gone',
    }));
    const host = Number(rowsOf<{ r: number }>(await store.db.execute(sql`select desired_revision as r from hosts where id = ${hostId}::uuid`))[0]!.r);
    // at the host's revision, and one behind it (where stale objects are looked for)
    for (const at of [host, host - 1]) expect(await service.report(admin, { hostId, revision: at, objects: missing })).toEqual({ changes: [], stale: [] });
    expect(await entries()).toBe(before);
    // beside an existing object, only that one changes
    const result = await service.report(admin, {
      hostId,
      revision: host,
      objects: [...missing, { objectType: 'port_forward', objectId: ana.forwards[300]!, status: 'drifted' }],
    });
    expect(result.changes.map((c) => c.objectId)).toEqual([ana.forwards[300]]);
    expect(result.stale).toEqual([]);
  });

  it('refuses bad input naming the field, and changes nothing', async () => {
    const [ana] = owners as [(typeof owners)[0]];
    const ok: ObjectStatusReport = { objectType: 'port_forward', objectId: ana.forwards[100]!, status: 'failed', error: 'x' };
    const bad: [Partial<ObjectStatusReport> & Record<string, unknown>, string][] = [
      [{ objectType: 'web_proxy' as never }, 'input.objects[1].objectType'],
      [{ status: 'gone' as never, error: null }, 'input.objects[1].status'],
      [{ error: 'a\u0000b' }, 'input.objects[1].error'],
      [{ objectId: 'not-a-uuid' }, 'input.objects[1].objectId'],
    ];
    for (const [over, field] of bad) {
      const attempt = service.report(admin, { hostId, revision, objects: [ok, { ...ok, objectId: ana.forwards[101]!, ...over } as ObjectStatusReport] });
      await expect(attempt).rejects.toBeInstanceOf(ValidationError);
      await expect(attempt).rejects.toMatchObject({ field });
    }
    expect(await statusOf([ana.forwards[100]!, ana.forwards[101]!])).toEqual([['applied', 2]]);
  });
});
