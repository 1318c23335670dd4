/**
 * Group commit of allocations (allocation-queue.ts, PoolService.allocateBatch): requests issued
 * in one turn go into one batch, and each still gets its own answer — its address, or its own
 * typed error (QUOTA_EXCEEDED, POOL_EXHAUSTED, NOT_FOUND, VALIDATION_FAILED, CONFLICT) — without
 * failing the others. Concurrency across requests and processes: concurrency.test.ts and
 * allocation-replicas.test.ts.
 */
import { randomUUID } from 'node:crypto';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DependencyContainer } from 'tsyringe';
import type { Actor } from '../src/auth/actor.js';
import { systemActor } from '../src/auth/actor.js';
import { rowsOf, type Store } from '../src/db/database.js';
import { createContainer } from '../src/server.js';
import { AllocationQueue } from '../src/services/allocation-queue.js';
import { PoolService, type Allocation } from '../src/services/pool-service.js';
import { ConflictError, NotFoundError, PoolExhaustedError, QuotaExceededError, ValidationError } from '../src/support/errors.js';
import { createTestApi, type TestApi } from '../src/testing/api.js';
import { createHost, createNics, createPool } from '../src/testing/fixtures.js';
import { storeBackends } from '../src/testing/stores.js';

const backends = await storeBackends();

/** What one request of a burst came to: its allocation or its error. */
type Outcome = { ok: Allocation } | { error: unknown };

describe.each(backends)('allocations batched on $name', (backend) => {
  let store: Store;
  let container: DependencyContainer;
  let api: TestApi;
  let hostId: string;
  let pools: PoolService;
  let queue: AllocationQueue;
  let cleanup: (() => Promise<void>) | undefined;

  beforeAll(async () => {
    const opened = await backend.open();
    cleanup = opened.cleanup;
    store = opened.store;
    container = createContainer(store);
    api = await createTestApi(store, container);
    hostId = await createHost(api.admin, 'host-batch');
    pools = container.resolve(PoolService);
    queue = container.resolve(AllocationQueue);
  });
  afterAll(async () => cleanup?.());

  const userActor = (id: string, requestId: string): Actor => ({
    userId: id,
    userName: 'tenant',
    role: 'user',
    tokenId: randomUUID(),
    scope: 'user',
    hostId: null,
    requestId,
  });

  /** Issues every request in one turn (so they share a batch) and returns each one's outcome, in order. */
  async function burst(requests: { actor: Actor; input: Parameters<PoolService['allocate']>[1] }[]): Promise<{ outcomes: Outcome[]; batches: number }> {
    const before = queue.stats.batches;
    const outcomes = await Promise.all(
      requests.map(({ actor, input }) =>
        pools.allocate(actor, input).then(
          (ok): Outcome => ({ ok }),
          (error: unknown): Outcome => ({ error }),
        ),
      ),
    );
    return { outcomes, batches: queue.stats.batches - before };
  }

  const okOf = (outcomes: Outcome[]) => outcomes.flatMap((o) => ('ok' in o ? [o.ok] : []));
  const count = async (query: ReturnType<typeof sql>) => Number(rowsOf<{ n: number }>(await store.db.execute(query))[0]!.n);

  it('allocates a burst in one batch, each audit entry naming its own request and actor', async () => {
    await createPool(api.admin, { name: 'b-actors', kind: 'PRIVATE', network: 'br-ba', cidr: '10.20.0.0/24' });
    const bob = await api.tenant('bob-batch');
    const adminNics = await createNics(api.admin, hostId, undefined, 'vm-ba-admin', 'br-ba', 4);
    const bobNics = await createNics(api.admin, hostId, bob.id, 'vm-ba-bob', 'br-ba', 4);
    const tag = randomUUID().slice(0, 8);
    const requests = [
      ...adminNics.map((nicId, i) => ({ actor: systemActor(`${tag}-admin-${i}`), input: { nicId } })),
      ...bobNics.map((nicId, i) => ({ actor: userActor(bob.id, `${tag}-bob-${i}`), input: { nicId } })),
    ];
    const { outcomes, batches } = await burst(requests);
    expect(batches).toBe(1);
    const rows = okOf(outcomes);
    expect(rows).toHaveLength(8);
    expect(new Set(rows.map((r) => r.address)).size).toBe(8);
    // lowest-free: .0 is the network address
    expect(rows.map((r) => r.address).sort()).toEqual(['10.20.0.1', '10.20.0.2', '10.20.0.3', '10.20.0.4', '10.20.0.5', '10.20.0.6', '10.20.0.7', '10.20.0.8']);
    rows.forEach((row, i) => expect(row.nicId).toBe(requests[i]!.input.nicId));
    const entries = rowsOf<{ request_id: string; actor_user_id: string; object_id: string; owner_id: string }>(
      await store.db.execute(
        sql`select request_id, actor_user_id, object_id, owner_id from audit_log where action = 'address.allocate' and request_id like ${`${tag}-%`} order by request_id`,
      ),
    );
    expect(entries).toHaveLength(8);
    for (const [i, request] of requests.entries()) {
      const entry = entries.find((e) => e.request_id === request.actor.requestId)!;
      expect(entry.actor_user_id).toBe(request.actor.userId);
      expect(entry.object_id).toBe(rows[i]!.id);
      expect(entry.owner_id).toBe(rows[i]!.ownerId);
    }
    expect(await count(sql`select used as n from address_usage where owner_id = ${bob.id}::uuid and family = 4`)).toBe(4);
  });

  it("answers QUOTA_EXCEEDED to the one owner over its quota in a batch and allocates everyone else's requests", async () => {
    await createPool(api.admin, { name: 'b-quota', kind: 'PRIVATE', network: 'br-bq', cidr: '10.21.0.0/24' });
    const carol = await api.tenant('carol-batch', { quotaIpv4Addresses: 2 });
    const carolNics = await createNics(api.admin, hostId, carol.id, 'vm-bq-carol', 'br-bq', 3);
    const adminNics = await createNics(api.admin, hostId, undefined, 'vm-bq-admin', 'br-bq', 5);
    const revisionBefore = await count(sql`select desired_revision as n from hosts where id = ${hostId}::uuid`);
    const aloneBefore = queue.stats.alone;
    const { outcomes, batches } = await burst([
      ...adminNics.slice(0, 2).map((nicId) => ({ actor: systemActor('bq-admin'), input: { nicId } })),
      ...carolNics.map((nicId) => ({ actor: userActor(carol.id, 'bq-carol'), input: { nicId } })),
      ...adminNics.slice(2).map((nicId) => ({ actor: systemActor('bq-admin'), input: { nicId } })),
    ]);
    expect(batches).toBe(1);
    // carol's three did not fit her quota of two: the batch rolled back and went on without them,
    // and they were answered one at a time
    expect(queue.stats.alone - aloneBefore).toBe(3);
    const adminOutcomes = [...outcomes.slice(0, 2), ...outcomes.slice(5)];
    expect(adminOutcomes.every((o) => 'ok' in o)).toBe(true);
    const carolOutcomes = outcomes.slice(2, 5);
    expect(okOf(carolOutcomes)).toHaveLength(2);
    const refused = carolOutcomes.flatMap((o) => ('error' in o ? [o.error] : []));
    expect(refused).toHaveLength(1);
    expect(refused[0]).toBeInstanceOf(QuotaExceededError);
    expect(refused[0]).toMatchObject({ code: 'QUOTA_EXCEEDED', quota: 'quotaIpv4Addresses', limit: 2, used: 2, field: 'input.nicId' });
    const addresses = okOf(outcomes).map((r) => r.address);
    expect(addresses).toHaveLength(7);
    expect(new Set(addresses).size).toBe(7);
    expect(await count(sql`select used as n from address_usage where owner_id = ${carol.id}::uuid and family = 4`)).toBe(2);
    expect(await count(sql`select count(*)::int as n from ip_allocations where owner_id = ${carol.id}::uuid`)).toBe(2);
    expect(await count(sql`select count(*)::int as n from audit_log where action = 'address.allocate' and request_id = 'bq-carol'`)).toBe(2);
    expect(await count(sql`select count(*)::int as n from audit_log where action = 'address.allocate' and request_id = 'bq-admin'`)).toBe(5);
    // the rolled-back attempt left nothing: the batch and carol's two allocations moved the revision, once each
    expect(await count(sql`select desired_revision as n from hosts where id = ${hostId}::uuid`)).toBe(revisionBefore + 3);
  });

  it('answers each request its own error (unknown NIC, another tenant’s NIC, wrong pool, no IPv6 pool, key of another NIC) and allocates the rest', async () => {
    await createPool(api.admin, { name: 'b-errors', kind: 'PRIVATE', network: 'br-be', cidr: '10.22.0.0/24' });
    const elsewhere = await createPool(api.admin, { name: 'b-elsewhere', kind: 'PRIVATE', network: 'br-be-other', cidr: '10.23.0.0/24' });
    const dave = await api.tenant('dave-batch');
    const adminNics = await createNics(api.admin, hostId, undefined, 'vm-be-admin', 'br-be', 4);
    const [daveNic] = await createNics(api.admin, hostId, dave.id, 'vm-be-dave', 'br-be', 1);
    const admin = systemActor('be-admin');
    const keyed = await pools.allocate(admin, { nicId: adminNics[3]!, idempotencyKey: 'be-used' });
    const missing = randomUUID();
    const { outcomes, batches } = await burst([
      { actor: admin, input: { nicId: adminNics[0]! } },
      { actor: admin, input: { nicId: missing } },
      { actor: userActor(dave.id, 'be-dave'), input: { nicId: adminNics[1]! } },
      { actor: admin, input: { nicId: adminNics[1]!, poolId: elsewhere } },
      { actor: admin, input: { nicId: adminNics[1]!, family: 6 } },
      { actor: admin, input: { nicId: adminNics[2]!, idempotencyKey: 'be-same' } },
      { actor: admin, input: { nicId: adminNics[2]!, idempotencyKey: 'be-same' } },
      { actor: admin, input: { nicId: adminNics[0]!, idempotencyKey: 'be-used' } },
      { actor: admin, input: { nicId: adminNics[3]!, idempotencyKey: 'be-used' } },
      { actor: userActor(dave.id, 'be-dave'), input: { nicId: daveNic! } },
    ]);
    expect(batches).toBe(1);
    const error = (i: number) => ('error' in outcomes[i]! ? outcomes[i].error : outcomes[i]);
    const ok = (i: number) => ('ok' in outcomes[i]! ? outcomes[i].ok : outcomes[i]);
    expect(ok(0)).toMatchObject({ nicId: adminNics[0], kind: 'allocated' });
    expect(error(1)).toBeInstanceOf(NotFoundError);
    expect(error(1)).toMatchObject({ field: 'input.nicId', value: missing });
    expect(error(2)).toBeInstanceOf(NotFoundError);
    expect(error(2)).toMatchObject({ field: 'input.nicId', value: adminNics[1] });
    expect(error(3)).toBeInstanceOf(ValidationError);
    expect(error(3)).toMatchObject({ field: 'input.poolId', value: elsewhere });
    expect(error(4)).toBeInstanceOf(ValidationError);
    expect(error(4)).toMatchObject({ field: 'input.nicId' });
    // two requests with one key: one allocation, both answered with it
    expect((ok(5) as Allocation).id).toEqual(expect.any(String));
    expect((ok(6) as Allocation).id).toBe((ok(5) as Allocation).id);
    expect(error(7)).toBeInstanceOf(ConflictError);
    expect(error(7)).toMatchObject({ field: 'input.idempotencyKey', value: 'be-used' });
    expect((ok(8) as Allocation).id).toBe(keyed.id);
    expect(ok(9)).toMatchObject({ nicId: daveNic, ownerId: dave.id });
    expect(await count(sql`select count(*)::int as n from ip_allocations where nic_id = ${adminNics[2]!}::uuid`)).toBe(1);
    expect(await count(sql`select count(*)::int as n from ip_allocations where nic_id = ${adminNics[1]!}::uuid`)).toBe(0);
  });

  it('gives the requests that fit what the pool has left and POOL_EXHAUSTED to the rest', async () => {
    // a /29: eight addresses less network and broadcast
    const poolId = await createPool(api.admin, { name: 'b-small', kind: 'PRIVATE', network: 'br-bs', cidr: '10.24.0.0/29' });
    const nics = await createNics(api.admin, hostId, undefined, 'vm-bs', 'br-bs', 3);
    const { outcomes, batches } = await burst(Array.from({ length: 9 }, (_, i) => ({ actor: systemActor('bs'), input: { nicId: nics[i % 3]! } })));
    expect(batches).toBe(1);
    const addresses = okOf(outcomes).map((r) => r.address);
    expect(addresses.sort()).toEqual(['10.24.0.1', '10.24.0.2', '10.24.0.3', '10.24.0.4', '10.24.0.5', '10.24.0.6']);
    const refused = outcomes.flatMap((o) => ('error' in o ? [o.error] : []));
    expect(refused).toHaveLength(3);
    for (const err of refused) expect(err).toMatchObject({ code: 'POOL_EXHAUSTED', value: poolId });
    expect(refused[0]).toBeInstanceOf(PoolExhaustedError);
  });
});
