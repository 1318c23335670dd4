/**
 * Allocation under concurrency, in one controller: 200 concurrent requests from a 254-address
 * pool give 200 distinct addresses; requests beyond capacity get POOL_EXHAUSTED; quotas hold
 * exactly. (Two controller processes on one PostgreSQL: allocation-replicas.test.ts.)
 */
import { sql } from 'drizzle-orm';
import { describe, expect, it } from 'vitest';
import { rowsOf } from '../src/db/database.js';
import { ERROR_FIELDS } from '../src/testing/api.js';
import { ALLOCATE, createNics, createPool } from '../src/testing/fixtures.js';
import { storeBackends } from '../src/testing/stores.js';
import { useStoreApi } from './support/suite.js';

const backends = await storeBackends();

describe.each(backends)('concurrent allocation on $name', (backend) => {
  const ctx = useStoreApi(backend, 'host-c');

  it('gives 200 concurrent requests 200 distinct addresses from a 254-address pool', async () => {
    const poolId = await createPool(ctx.api.admin, { name: 'c200', kind: 'PRIVATE', network: 'br-c200', cidr: '10.1.0.0/24' });
    const nics = await createNics(ctx.api.admin, ctx.hostId, undefined, 'vm-c200', 'br-c200', 1);
    const results = await Promise.all(Array.from({ length: 200 }, () => ctx.api.admin(ALLOCATE, { input: { nicId: nics[0] } })));
    const addresses = results.map((r) => r.data?.allocateAddress?.address?.address);
    expect(addresses.every((a) => typeof a === 'string')).toBe(true);
    expect(new Set(addresses).size).toBe(200);
    const pool = await ctx.api.admin(`query($id: ID!) { ipPool(id: $id) { utilisation { allocated free } } }`, { id: poolId });
    expect(pool.data!.ipPool.utilisation).toEqual({ allocated: '200', free: '54' });
  });

  it('answers POOL_EXHAUSTED beyond capacity, never a duplicate', async () => {
    await createPool(ctx.api.admin, { name: 'c300', kind: 'PRIVATE', network: 'br-c300', cidr: '10.2.0.0/24', gateway: '10.2.0.1' });
    const nics = await createNics(ctx.api.admin, ctx.hostId, undefined, 'vm-c300', 'br-c300', 4);
    const results = await Promise.all(Array.from({ length: 300 }, (_, i) => ctx.api.admin(ALLOCATE, { input: { nicId: nics[i % 4] } })));
    const ok = results.filter((r) => r.data?.allocateAddress?.__typename === 'AllocateAddressPayload').map((r) => r.data!.allocateAddress.address.address);
    const exhausted = results.filter((r) => r.data?.allocateAddress?.code === 'POOL_EXHAUSTED');
    expect(ok.length).toBe(253); // 256 minus network, broadcast and gateway
    expect(new Set(ok).size).toBe(253);
    expect(exhausted.length).toBe(47);
    expect(ok).not.toContain('10.2.0.1');
  });

  it('holds a quota exactly under 40 concurrent requests', async () => {
    const created = await ctx.api.admin(
      `mutation { createUser(input: { name: "carol", quotaIpv4Addresses: 7 }) { ... on CreateUserPayload { user { id } } } }`,
    );
    const carolId = created.data!.createUser.user.id;
    await createPool(ctx.api.admin, { name: 'cq', kind: 'PRIVATE', network: 'br-cq', cidr: '10.3.0.0/24' });
    const nics = await createNics(ctx.api.admin, ctx.hostId, carolId, 'vm-cq', 'br-cq', 2);
    const results = await Promise.all(Array.from({ length: 40 }, (_, i) => ctx.api.admin(ALLOCATE, { input: { nicId: nics[i % 2] } })));
    const codes = results.map((r) => r.data?.allocateAddress?.code ?? 'OK');
    expect(codes.filter((c) => c === 'OK')).toHaveLength(7);
    expect(codes.filter((c) => c === 'QUOTA_EXCEEDED')).toHaveLength(33);
  });

  it('returns one allocation for 20 concurrent retries with the same idempotency key', async () => {
    await createPool(ctx.api.admin, { name: 'ck', kind: 'PRIVATE', network: 'br-ck', cidr: '10.4.0.0/24' });
    const nics = await createNics(ctx.api.admin, ctx.hostId, undefined, 'vm-ck', 'br-ck', 1);
    const results = await Promise.all(Array.from({ length: 20 }, () => ctx.api.admin(ALLOCATE, { input: { nicId: nics[0], idempotencyKey: 'same-key' } })));
    const ids = new Set(results.map((r) => r.data?.allocateAddress?.address?.id));
    expect(ids.size).toBe(1);
    expect([...ids][0]).toEqual(expect.any(String));
  });

  it("removes a NIC while 20 allocations to it are in flight, and the owner's usage still equals what they hold", async () => {
    const poolId = await createPool(ctx.api.admin, { name: 'crm', kind: 'PRIVATE', network: 'br-crm', cidr: '10.5.0.0/24' });
    const [nicId] = await createNics(ctx.api.admin, ctx.hostId, undefined, 'vm-crm', 'br-crm', 1);
    const allocations = Array.from({ length: 20 }, () => ctx.api.admin(ALLOCATE, { input: { nicId } }));
    const removed = await ctx.api.admin(`mutation($id: ID!) { removeNic(input: { nicId: $id }) { __typename } }`, { id: nicId });
    await Promise.all(allocations);
    expect(removed.data?.removeNic?.__typename).toBe('RemoveNicPayload');
    const pool = await ctx.api.admin(`query($id: ID!) { ipPool(id: $id) { utilisation { allocated } } }`, { id: poolId });
    expect(pool.data!.ipPool.utilisation.allocated).toBe('0');
    const me = (await ctx.api.admin(`{ me { id } }`)).data!.me.id;
    const [row] = rowsOf<{ used: number; held: number }>(
      await ctx.api.store.db.execute(sql`
        select (select coalesce(sum(used), 0)::int from address_usage where owner_id = ${me}::uuid) as used,
          (select count(*)::int from ip_allocations where owner_id = ${me}::uuid and kind = 'allocated') as held`),
    );
    expect(Number(row!.used)).toBe(Number(row!.held));
  });

  // imports lock the owners before the host, as createPortForward does: in the other order an
  // import and a forward of the same owner on the same host could each hold what the other waits for
  it("answers CSV imports and forward creations of one owner on one host running side by side, none deadlocked", async () => {
    const dave = await ctx.api.tenant('dave-imports');
    await createPool(ctx.api.admin, { name: 'ci', kind: 'PRIVATE', network: 'br-ci', cidr: '10.6.0.0/24' });
    const made = await ctx.api.admin(
      `mutation($h: ID!, $o: ID) { createInstance(input: { hostId: $h, name: "vm-ci", ownerId: $o, nics: [{ network: "br-ci", addresses: ["10.6.0.5"] }] }) { ... on CreateInstancePayload { instance { id } } ${ERROR_FIELDS} } }`,
      { h: ctx.hostId, o: dave.id },
    );
    const instanceId = made.data!.createInstance.instance.id as string;
    const imports = Array.from({ length: 4 }, (_, k) => {
      const rows = Array.from({ length: 25 }, (_, j) => `tcp,${30_000 + k * 100 + j},10.6.0.5,${1000 + j},import ${k}`);
      return dave.client(
        `mutation($input: ImportPortForwardsInput!) { importPortForwards(input: $input) { __typename ... on ImportPortForwardsPayload { result { created } } ${ERROR_FIELDS} } }`,
        { input: { hostId: ctx.hostId, csv: ['protocol,host_port,vm_ip,vm_port,note', ...rows].join('\n') } },
      );
    });
    const creates = Array.from({ length: 20 }, (_, j) =>
      dave.client(
        `mutation($i: ID!, $p: String!) { createPortForward(input: { instanceId: $i, protocol: TCP, hostPort: $p, targetPort: "22" }) { __typename ${ERROR_FIELDS} } }`,
        { i: instanceId, p: String(31_000 + j) },
      ),
    );
    const results = await Promise.all([...imports, ...creates]);
    // a deadlock would surface as a GraphQL error (INTERNAL_SERVER_ERROR), not as a payload
    expect(results.filter((r) => r.errors).map((r) => JSON.stringify(r.errors).slice(0, 300))).toEqual([]);
    expect(results.slice(0, 4).map((r) => r.data!.importPortForwards.result?.created)).toEqual([25, 25, 25, 25]);
    expect(results.slice(4).map((r) => r.data!.createPortForward.__typename)).toEqual(Array(20).fill('CreatePortForwardPayload'));
  });
});
