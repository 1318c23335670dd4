/**
 * IP pools, hosts, instances, NICs, quotas, tenant isolation and audit through the GraphQL API,
 * on PGlite and on the real PostgreSQL server.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { ERROR_FIELDS, type Client } from '../src/testing/api.js';
import { REQUIRE_SYSTEM, storeBackends } from '../src/testing/stores.js';
import { useStoreApi } from './support/suite.js';

const backends = await storeBackends();

it('runs the service suite on PostgreSQL as well as PGlite', () => {
  // without a server this is a skip locally and a failure in CI
  if (!REQUIRE_SYSTEM && backends.length === 1) return;
  expect(backends.map((b) => b.name)).toEqual(['pglite', 'postgres']);
});

const POOL_FIELDS = 'id name subnet rangeStart rangeEnd gateway dns family delegatedPrefixLength utilisation { size allocated reserved free }';

async function createPool(client: Client, input: Record<string, unknown>) {
  const r = await client(
    `mutation($input: CreateIpPoolInput!) { createIpPool(input: $input) { __typename ... on CreateIpPoolPayload { pool { ${POOL_FIELDS} } } ${ERROR_FIELDS} } }`,
    { input },
  );
  return r.data!.createIpPool;
}

async function createInstance(client: Client, input: Record<string, unknown>) {
  const r = await client(
    `mutation($input: CreateInstanceInput!) { createInstance(input: $input) { __typename ... on CreateInstancePayload { instance { id nics { id name mac network addresses { id address cidr kind } } } } ${ERROR_FIELDS} } }`,
    { input },
  );
  return r.data!.createInstance;
}

async function addNic(client: Client, input: Record<string, unknown>) {
  const r = await client(
    `mutation($input: AddNicInput!) { addNic(input: $input) { __typename ... on AddNicPayload { added { nic { id name mac network } addresses { id address cidr prefixLength gateway } } } ${ERROR_FIELDS} } }`,
    { input },
  );
  return r.data!.addNic;
}

async function allocate(client: Client, input: Record<string, unknown>) {
  const r = await client(
    `mutation($input: AllocateAddressInput!) { allocateAddress(input: $input) { __typename ... on AllocateAddressPayload { address { id address cidr } } ${ERROR_FIELDS} ... on QuotaExceededError { quota limit used } } }`,
    { input },
  );
  return r.data!.allocateAddress;
}

async function assign(client: Client, input: Record<string, unknown>) {
  const r = await client(
    `mutation($input: AssignAddressInput!) { assignAddress(input: $input) { __typename ... on AssignAddressPayload { address { id address } } ${ERROR_FIELDS} } }`,
    { input },
  );
  return r.data!.assignAddress;
}

describe.each(backends)('IP pools on $name', (backend) => {
  const ctx = useStoreApi(backend, 'host-1');

  it('creates the reference pool with its gateway reserved, and honours operator reservations', async () => {
    const pool = await createPool(ctx.api.admin, {
      name: 'public-pool-1',
      kind: 'PUBLIC',
      network: 'br-pub',
      start: '198.51.100.1',
      end: '198.51.100.254',
      netmask: '255.255.255.0',
      gateway: '198.51.100.254',
      dns: ['223.5.5.5', '8.8.8.8'],
    });
    expect(pool.__typename).toBe('CreateIpPoolPayload');
    expect(pool.pool).toMatchObject({
      subnet: '198.51.100.0/24',
      rangeStart: '198.51.100.1',
      rangeEnd: '198.51.100.254',
      gateway: '198.51.100.254',
      family: 'IPV4',
    });
    expect(pool.pool.utilisation).toEqual({ size: '254', allocated: '0', reserved: '1', free: '253' });

    for (const [address, note] of [
      ['198.51.100.1', 'Switch'],
      ['198.51.100.2', 'Router'],
    ]) {
      const r = await ctx.api.admin(
        `mutation($input: ReserveAddressInput!) { reserveAddress(input: $input) { __typename ... on ReserveAddressPayload { address { address kind note } } ${ERROR_FIELDS} } }`,
        {
          input: { poolId: pool.pool.id, address, note },
        },
      );
      expect(r.data!.reserveAddress.address).toEqual({ address, kind: 'RESERVED', note });
    }
    // the guide reserves its gateway too: that succeeds, keeps the entry SYSTEM and takes the note
    const reserve = (address: string, note: string) =>
      ctx.api.admin(
        `mutation($input: ReserveAddressInput!) { reserveAddress(input: $input) { __typename ... on ReserveAddressPayload { address { id address kind note } } ${ERROR_FIELDS} } }`,
        { input: { poolId: pool.pool.id, address, note } },
      );
    const gateway = await reserve('198.51.100.254', '198.51.100.254 - Gateway');
    expect(gateway.data!.reserveAddress.address).toMatchObject({ address: '198.51.100.254', kind: 'SYSTEM', note: '198.51.100.254 - Gateway' });
    const unreserved = await ctx.api.admin(`mutation($id: ID!) { unreserveAddress(input: { reservationId: $id }) { __typename ${ERROR_FIELDS} } }`, {
      id: gateway.data!.reserveAddress.address.id,
    });
    expect(unreserved.data!.unreserveAddress).toMatchObject({ code: 'CONFLICT', message: expect.stringContaining("is the pool's gateway and cannot be unreserved") });
    const switchAgain = await reserve('198.51.100.1', 'x');
    expect(switchAgain.data!.reserveAddress).toMatchObject({ code: 'ADDRESS_IN_USE', field: 'input.address', value: '198.51.100.1' });

    const instance = await createInstance(ctx.api.admin, { hostId: ctx.hostId, name: 'vm-ref', nics: [{ network: 'br-pub' }] });
    expect(instance.instance.nics[0].addresses.map((a: { cidr: string }) => a.cidr)).toEqual(['198.51.100.3/24']);
    const entries = await ctx.api.admin(
      `query($id: ID!) { ipPool(id: $id) { utilisation { allocated reserved free } entries(first: 10) { edges { node { address kind note } } } } }`,
      { id: pool.pool.id },
    );
    expect(entries.data!.ipPool.utilisation).toEqual({ allocated: '1', reserved: '3', free: '250' });
    expect(entries.data!.ipPool.entries.edges.map((e: { node: { address: string; kind: string } }) => `${e.node.address}:${e.node.kind}`)).toEqual([
      '198.51.100.1:RESERVED',
      '198.51.100.2:RESERVED',
      '198.51.100.3:ALLOCATED',
      '198.51.100.254:SYSTEM',
    ]);
  });

  it('reserves network and broadcast of a CIDR pool and allocates lowest-free, refilling gaps', async () => {
    const pool = await createPool(ctx.api.admin, { name: 'nat-a', kind: 'PRIVATE', network: 'br-a', cidr: '10.10.0.0/29', gateway: '10.10.0.1' });
    expect(pool.pool.utilisation).toEqual({ size: '8', allocated: '0', reserved: '3', free: '5' });
    const vm = await createInstance(ctx.api.admin, { hostId: ctx.hostId, name: 'vm-a', nics: [{ network: 'br-a', allocate: [] }] });
    const nicId = vm.instance.nics[0].id;
    const got: string[] = [];
    for (let i = 0; i < 5; i++) got.push((await allocate(ctx.api.admin, { nicId })).address.address);
    expect(got).toEqual(['10.10.0.2', '10.10.0.3', '10.10.0.4', '10.10.0.5', '10.10.0.6']);
    const full = await allocate(ctx.api.admin, { nicId });
    expect(full).toMatchObject({ __typename: 'PoolExhaustedError', code: 'POOL_EXHAUSTED', field: 'input.nicId' });

    const addresses = await ctx.api.admin(`query($id: ID!) { instance(id: $id) { nics { addresses { id address } } } }`, { id: vm.instance.id });
    const third = addresses.data!.instance.nics[0].addresses.find((a: { address: string }) => a.address === '10.10.0.4');
    const released = await ctx.api.admin(
      `mutation($id: ID!) { releaseAddress(input: { addressId: $id }) { __typename ... on ReleaseAddressPayload { address { address } } } }`,
      { id: third.id },
    );
    expect(released.data!.releaseAddress.address.address).toBe('10.10.0.4');
    expect((await allocate(ctx.api.admin, { nicId })).address.address).toBe('10.10.0.4');
  });

  it('hands out IPv6 addresses and delegated prefixes', async () => {
    const single = await createPool(ctx.api.admin, { name: 'v6-single', kind: 'PUBLIC', network: 'br-v6', cidr: '2001:db8:1::/64', gateway: '2001:db8:1::1' });
    expect(single.pool.utilisation).toMatchObject({ size: '18446744073709551616', reserved: '2' });
    const prefixes = await createPool(ctx.api.admin, {
      name: 'v6-prefixes',
      kind: 'PUBLIC',
      network: 'br-v6',
      cidr: '2001:db8:100::/48',
      delegatedPrefixLength: 64,
    });
    expect(prefixes.pool).toMatchObject({ delegatedPrefixLength: 64, utilisation: { size: '65536', reserved: '0' } });

    const vm = await createInstance(ctx.api.admin, { hostId: ctx.hostId, name: 'vm-v6', nics: [{ network: 'br-v6', allocate: ['IPV6'] }] });
    expect(vm.instance.nics[0].addresses.map((a: { cidr: string }) => a.cidr)).toEqual(['2001:db8:1::2/64']);
    const p1 = await allocate(ctx.api.admin, { nicId: vm.instance.nics[0].id, poolId: prefixes.pool.id });
    const p2 = await allocate(ctx.api.admin, { nicId: vm.instance.nics[0].id, poolId: prefixes.pool.id });
    expect([p1.address.cidr, p2.address.cidr]).toEqual(['2001:db8:100::/64', '2001:db8:100:1::/64']);
    const misaligned = await assign(ctx.api.admin, { nicId: vm.instance.nics[0].id, poolId: prefixes.pool.id, address: '2001:db8:100:5::1' });
    expect(misaligned).toMatchObject({ code: 'VALIDATION_FAILED', field: 'input.address' });
    expect(misaligned.message).toContain('/64');
    const manual = await assign(ctx.api.admin, { nicId: vm.instance.nics[0].id, address: '2001:DB8:1:0:0:0:0:ABCD' });
    expect(manual.address.address).toBe('2001:db8:1::abcd');
  });

  it('assigns chosen addresses only inside the pool and only once', async () => {
    const pool = await createPool(ctx.api.admin, { name: 'assign-pool', kind: 'PRIVATE', network: 'br-assign', cidr: '10.20.0.0/24', gateway: '10.20.0.1' });
    const v6 = await createPool(ctx.api.admin, { name: 'assign-pool-v6', kind: 'PRIVATE', network: 'br-assign', cidr: 'fd00:20::/64' });
    const vm = await createInstance(ctx.api.admin, { hostId: ctx.hostId, name: 'vm-assign', nics: [{ network: 'br-assign', addresses: ['10.20.0.50'] }] });
    expect(vm.instance.nics[0].addresses.map((a: { address: string }) => a.address)).toEqual(['10.20.0.50']);
    const nicId = vm.instance.nics[0].id;
    const other = await createInstance(ctx.api.admin, { hostId: ctx.hostId, name: 'vm-assign-2', nics: [{ network: 'br-assign', allocate: [] }] });
    const otherNic = other.instance.nics[0].id;

    expect(await assign(ctx.api.admin, { nicId: otherNic, address: '10.20.0.50' })).toMatchObject({
      code: 'ADDRESS_IN_USE',
      field: 'input.address',
      value: '10.20.0.50',
    });
    expect(await assign(ctx.api.admin, { nicId: otherNic, address: '10.20.0.1' })).toMatchObject({
      code: 'ADDRESS_IN_USE',
      message: expect.stringContaining('gateway'),
    });
    expect(await assign(ctx.api.admin, { nicId: otherNic, address: '10.20.0.255' })).toMatchObject({
      code: 'ADDRESS_IN_USE',
      message: expect.stringContaining('broadcast'),
    });
    expect(await assign(ctx.api.admin, { nicId: otherNic, address: '10.21.0.5' })).toMatchObject({
      code: 'VALIDATION_FAILED',
      field: 'input.address',
      value: '10.21.0.5',
    });
    expect(await assign(ctx.api.admin, { nicId: otherNic, address: '10.20.0.5', poolId: v6.pool.id })).toMatchObject({
      code: 'VALIDATION_FAILED',
      field: 'input.address',
      message: expect.stringContaining('IPv4 address but the pool is IPv6'),
    });
    expect(await assign(ctx.api.admin, { nicId: otherNic, address: 'not-an-ip' })).toMatchObject({ code: 'VALIDATION_FAILED', field: 'input.address' });
    // assigning what the NIC already holds is idempotent
    expect((await assign(ctx.api.admin, { nicId, address: '10.20.0.50' })).address.address).toBe('10.20.0.50');
    expect(pool.pool.utilisation.size).toBe('256');
  });

  it('returns the same allocation for a retried idempotency key, and refuses the key for another NIC', async () => {
    await createPool(ctx.api.admin, { name: 'idem', kind: 'PRIVATE', network: 'br-idem', cidr: '10.30.0.0/24' });
    const vm = await createInstance(ctx.api.admin, {
      hostId: ctx.hostId,
      name: 'vm-idem',
      nics: [
        { network: 'br-idem', allocate: [] },
        { network: 'br-idem', allocate: [] },
      ],
    });
    const [nicA, nicB] = vm.instance.nics.map((n: { id: string }) => n.id);
    const first = await allocate(ctx.api.admin, { nicId: nicA, idempotencyKey: 'order-42' });
    const retry = await allocate(ctx.api.admin, { nicId: nicA, idempotencyKey: 'order-42' });
    expect(retry.address).toEqual(first.address);
    expect(await allocate(ctx.api.admin, { nicId: nicB, idempotencyKey: 'order-42' })).toMatchObject({ code: 'CONFLICT', field: 'input.idempotencyKey' });

    const nic1 = await addNic(ctx.api.admin, { instanceId: vm.instance.id, network: 'br-idem', idempotencyKey: 'nic-7' });
    const nic2 = await addNic(ctx.api.admin, { instanceId: vm.instance.id, network: 'br-idem', idempotencyKey: 'nic-7' });
    expect(nic2.added).toEqual(nic1.added);
    expect(nic1.added.nic.name).toBe('eth2');
    expect(nic1.added.addresses).toHaveLength(1);
  });

  it('reclaims addresses when a NIC is removed or an instance deleted, with audit entries', async () => {
    const pool = await createPool(ctx.api.admin, { name: 'reclaim', kind: 'PRIVATE', network: 'br-reclaim', cidr: '10.40.0.0/24' });
    const vm = await createInstance(ctx.api.admin, { hostId: ctx.hostId, name: 'vm-reclaim', nics: [{ network: 'br-reclaim' }, { network: 'br-reclaim' }] });
    const usage = async () =>
      (await ctx.api.admin(`query($id: ID!) { ipPool(id: $id) { utilisation { allocated } } }`, { id: pool.pool.id })).data!.ipPool.utilisation.allocated;
    expect(await usage()).toBe('2');
    const removed = await ctx.api.admin(`mutation($id: ID!) { removeNic(input: { nicId: $id }) { __typename } }`, { id: vm.instance.nics[0].id });
    expect(removed.data!.removeNic.__typename).toBe('RemoveNicPayload');
    expect(await usage()).toBe('1');
    const deleted = await ctx.api.admin(`mutation($id: ID!) { deleteInstance(input: { instanceId: $id }) { __typename } }`, { id: vm.instance.id });
    expect(deleted.data!.deleteInstance.__typename).toBe('DeleteInstancePayload');
    expect(await usage()).toBe('0');
    const audit = await ctx.api.admin(`{ auditLog(first: 10, objectType: "IpAddress") { edges { node { action before after } } } }`);
    const reclaims = audit.data!.auditLog.edges.filter((e: { node: { action: string } }) => e.node.action === 'address.reclaim');
    expect(reclaims).toHaveLength(2);
    expect(reclaims[0].node.after.reason).toContain(`instance ${vm.instance.id} deleted`);
  });

  it('generates unique locally administered MACs and refuses a duplicate MAC', async () => {
    const vm = await createInstance(ctx.api.admin, {
      hostId: ctx.hostId,
      name: 'vm-mac',
      nics: [{ network: 'br-mac' }, { network: 'br-mac', mac: '52:54:00:AA:BB:CC' }],
    });
    const [auto, manual] = vm.instance.nics;
    expect(auto.mac).toMatch(/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
    expect(parseInt(auto.mac.slice(0, 2), 16) & 0b11).toBe(0b10);
    expect(manual.mac).toBe('52:54:00:aa:bb:cc');
    const before = await ctx.api.snapshot();
    const dup = await addNic(ctx.api.admin, { instanceId: vm.instance.id, network: 'br-mac', mac: '52-54-00-aa-bb-cc' });
    expect(dup).toMatchObject({ code: 'CONFLICT', field: 'input.mac', value: '52-54-00-aa-bb-cc' });
    expect(await ctx.api.snapshot()).toEqual(before);
  });

  it('accepts a vSphere port group name with spaces inside ("VM Network", ESXi\'s default) as a network', async () => {
    const result = await createPool(ctx.api.admin, { name: 'esxi-vm-network', kind: 'PRIVATE', network: 'VM Network', cidr: '10.51.0.0/24' });
    expect(result).toMatchObject({ pool: { name: 'esxi-vm-network', subnet: '10.51.0.0/24' } });
    const listed = await ctx.api.admin(`{ ipPools(network: "VM Network") { edges { node { id network } } } }`);
    expect(listed.data!.ipPools.edges).toEqual([{ node: { id: result.pool.id, network: 'VM Network' } }]);
  });

  describe('bad input gets a typed error naming the field and changes nothing', () => {
    const cases: [string, Record<string, unknown>, string, string][] = [
      ['an invalid CIDR', { cidr: '10.0.0.0/33' }, 'VALIDATION_FAILED', 'input.cidr'],
      ['a CIDR with host bits set', { cidr: '10.0.0.1/24' }, 'VALIDATION_FAILED', 'input.cidr'],
      ['garbage instead of a CIDR', { cidr: 'ten.0.0.0/8' }, 'VALIDATION_FAILED', 'input.cidr'],
      ['a reversed range', { start: '10.50.0.20', end: '10.50.0.10', netmask: '255.255.255.0' }, 'VALIDATION_FAILED', 'input.end'],
      ['an end outside the subnet', { start: '10.50.0.20', end: '10.50.1.10', netmask: '255.255.255.0' }, 'VALIDATION_FAILED', 'input.end'],
      ['a non-contiguous netmask', { start: '10.50.0.1', end: '10.50.0.9', netmask: '255.0.255.0' }, 'VALIDATION_FAILED', 'input.netmask'],
      ['a gateway outside the subnet', { cidr: '10.50.0.0/24', gateway: '10.51.0.1' }, 'VALIDATION_FAILED', 'input.gateway'],
      ['a gateway on the broadcast address', { cidr: '10.50.0.0/24', gateway: '10.50.0.255' }, 'VALIDATION_FAILED', 'input.gateway'],
      ['an IPv4 gateway in an IPv6 pool', { cidr: 'fd00:50::/64', gateway: '10.50.0.1' }, 'VALIDATION_FAILED', 'input.gateway'],
      ['an IPv6 start with a netmask', { start: 'fd00::1', end: 'fd00::9', netmask: '255.255.255.0' }, 'VALIDATION_FAILED', 'input.netmask'],
      ['a delegated prefix on IPv4', { cidr: '10.50.0.0/24', delegatedPrefixLength: 28 }, 'VALIDATION_FAILED', 'input.delegatedPrefixLength'],
      ['a delegated prefix shorter than the subnet', { cidr: 'fd00:50::/64', delegatedPrefixLength: 48 }, 'VALIDATION_FAILED', 'input.delegatedPrefixLength'],
      ['a bad DNS server', { cidr: '10.50.0.0/24', dns: ['8.8.8.8', 'dns.example'] }, 'VALIDATION_FAILED', 'input.dns[1]'],
      ['a /32 with nothing usable', { cidr: '10.50.0.7/32', gateway: '10.50.0.7' }, 'VALIDATION_FAILED', 'input.cidr'],
      ['an unknown host', { cidr: '10.50.0.0/24', hostId: '01a20169-0000-7000-8000-000000000000' }, 'NOT_FOUND', 'input.hostId'],
      ['a malformed host id', { cidr: '10.50.0.0/24', hostId: 'host-1' }, 'VALIDATION_FAILED', 'input.hostId'],
      ['an overlapping pool on the same network', { cidr: '10.20.0.128/25', network: 'br-assign' }, 'CONFLICT', 'input.cidr'],
      ['a duplicate name', { cidr: '10.50.0.0/24', name: 'nat-a' }, 'CONFLICT', 'input.name'],
      ['a name with control characters', { cidr: '10.50.0.0/24', name: 'bad\u0000name' }, 'VALIDATION_FAILED', 'input.name'],
      ['a bad network name', { cidr: '10.50.0.0/24', network: 'br/pub' }, 'VALIDATION_FAILED', 'input.network'],
      ['a network name ending in a space', { cidr: '10.50.0.0/24', network: 'VM Network ' }, 'VALIDATION_FAILED', 'input.network'],
      ['a loopback pool', { cidr: '127.0.0.0/24' }, 'VALIDATION_FAILED', 'input.cidr'],
      ['a link-local pool', { start: '169.254.0.10', end: '169.254.0.20', prefixLength: 16 }, 'VALIDATION_FAILED', 'input.start'],
      ['a multicast IPv6 pool', { cidr: 'ff02::/64' }, 'VALIDATION_FAILED', 'input.cidr'],
      ['a pool spanning everything', { cidr: '0.0.0.0/0' }, 'VALIDATION_FAILED', 'input.cidr'],
    ];
    it.each(cases)('%s', async (_label, overrides, code, field) => {
      const before = await ctx.api.snapshot();
      const result = await createPool(ctx.api.admin, { name: 'bad-pool', kind: 'PRIVATE', network: 'br-bad', ...overrides });
      expect(result).toMatchObject({ code, field });
      expect(result.message).toContain(field);
      expect(await ctx.api.snapshot()).toEqual(before);
    });

    it('refuses bad host input', async () => {
      const before = await ctx.api.snapshot();
      const bad = async (input: Record<string, unknown>) =>
        (
          await ctx.api.admin(`mutation($input: CreateHostInput!) { createHost(input: $input) { __typename ${ERROR_FIELDS} } }`, {
            input: { name: 'h-bad', backend: 'LXD', ...input },
          })
        ).data!.createHost;
      expect(await bad({ portRangeStart: 70000 })).toMatchObject({ code: 'VALIDATION_FAILED', field: 'input.portRangeStart', value: '70000' });
      expect(await bad({ portRangeStart: 5000, portRangeEnd: 4000 })).toMatchObject({ code: 'VALIDATION_FAILED', field: 'input.portRangeEnd' });
      expect(await bad({ reservedPorts: ['80-70'] })).toMatchObject({ code: 'VALIDATION_FAILED', field: 'input.reservedPorts[0]' });
      expect(await bad({ reservedPorts: ['80-90', '85'] })).toMatchObject({ code: 'VALIDATION_FAILED', field: 'input.reservedPorts' });
      expect(await bad({ publicAddresses: ['127.0.0.1'] })).toMatchObject({ code: 'VALIDATION_FAILED', field: 'input.publicAddresses[0]' });
      expect(await bad({ name: 'host-1' })).toMatchObject({ code: 'CONFLICT', field: 'input.name' });
      expect(await ctx.api.snapshot()).toEqual(before);
    });
  });

  describe('quotas and tenants', () => {
    let alice: { client: Client; id: string };
    let bob: { client: Client; id: string };
    let aliceVm: { id: string; nics: { id: string; addresses: { id: string }[] }[] };

    beforeAll(async () => {
      alice = await ctx.api.tenant('alice', { quotaIpv4Addresses: 2, quotaIpv6Prefixes: 0 });
      bob = await ctx.api.tenant('bob');
      await createPool(ctx.api.admin, { name: 'tenants', kind: 'PRIVATE', network: 'br-t', cidr: '10.60.0.0/24' });
      await createPool(ctx.api.admin, { name: 'tenants-v6', kind: 'PRIVATE', network: 'br-t', cidr: 'fd00:60::/64' });
      aliceVm = (
        await createInstance(ctx.api.admin, { hostId: ctx.hostId, name: 'alice-vm', ownerId: alice.id, nics: [{ network: 'br-t', allocate: ['IPV4'] }] })
      ).instance;
    });

    it('enforces the IPv4 and IPv6 quotas with QUOTA_EXCEEDED and changes nothing', async () => {
      const nicId = aliceVm.nics[0]!.id;
      expect((await allocate(alice.client, { nicId })).__typename).toBe('AllocateAddressPayload');
      const before = await ctx.api.snapshot();
      expect(await allocate(alice.client, { nicId })).toMatchObject({
        __typename: 'QuotaExceededError',
        code: 'QUOTA_EXCEEDED',
        field: 'input.nicId',
        quota: 'quotaIpv4Addresses',
        limit: 2,
        used: 2,
      } as never);
      expect(await allocate(alice.client, { nicId, family: 'IPV6' })).toMatchObject({ code: 'QUOTA_EXCEEDED', quota: 'quotaIpv6Prefixes' } as never);
      expect(await ctx.api.snapshot()).toEqual(before);
      const raised = await ctx.api.admin(
        `mutation($input: UpdateUserQuotasInput!) { updateUserQuotas(input: $input) { ... on UpdateUserQuotasPayload { user { quotaIpv4Addresses quotaIpv6Prefixes } } } }`,
        {
          input: { userId: alice.id, quotaIpv4Addresses: 3 },
        },
      );
      expect(raised.data!.updateUserQuotas.user).toEqual({ quotaIpv4Addresses: 3, quotaIpv6Prefixes: 0 });
      expect((await allocate(alice.client, { nicId })).address.address).toBe('10.60.0.3');
    });

    it("keeps tenants apart: bob cannot see, change or target alice's objects", async () => {
      const nicId = aliceVm.nics[0]!.id;
      const before = await ctx.api.snapshot();
      expect((await bob.client(`query($id: ID!) { instance(id: $id) { id } }`, { id: aliceVm.id })).data!.instance).toBeNull();
      expect((await bob.client(`{ instances { edges { node { id } } } }`)).data!.instances.edges).toEqual([]);
      expect(await allocate(bob.client, { nicId })).toMatchObject({ code: 'NOT_FOUND', field: 'input.nicId', value: nicId });
      expect(await assign(bob.client, { nicId, address: '10.60.0.99' })).toMatchObject({ code: 'NOT_FOUND', field: 'input.nicId' });
      expect(await addNic(bob.client, { instanceId: aliceVm.id, network: 'br-t' })).toMatchObject({ code: 'NOT_FOUND', field: 'input.instanceId' });
      const addrId = aliceVm.nics[0]!.addresses[0]!.id;
      const release = await bob.client(`mutation($id: ID!) { releaseAddress(input: { addressId: $id }) { __typename ${ERROR_FIELDS} } }`, { id: addrId });
      expect(release.data!.releaseAddress).toMatchObject({ code: 'NOT_FOUND', field: 'input.addressId' });
      const removeNic = await bob.client(`mutation($id: ID!) { removeNic(input: { nicId: $id }) { __typename ${ERROR_FIELDS} } }`, { id: nicId });
      expect(removeNic.data!.removeNic).toMatchObject({ code: 'NOT_FOUND', field: 'input.nicId' });
      expect((await bob.client(`query($id: ID!) { user(id: $id) { id } }`, { id: alice.id })).data!.user).toBeNull();
      const users = await bob.client(`{ users { edges { node { id } } } }`);
      expect(users.errors?.[0]).toMatchObject({ message: expect.stringContaining('admin'), extensions: { code: 'FORBIDDEN' } });
      expect(await createPool(bob.client, { name: 'bob-pool', kind: 'PRIVATE', network: 'br-bob', cidr: '10.70.0.0/24' })).toMatchObject({ code: 'FORBIDDEN' });
      const token = await bob.client(`mutation { createApiToken(input: { name: "x", scope: ADMIN }) { __typename ${ERROR_FIELDS} } }`);
      expect(token.data!.createApiToken).toMatchObject({ code: 'FORBIDDEN', field: 'input.scope' });
      expect(await ctx.api.snapshot()).toEqual(before);
      const bobAudit = await bob.client(`{ auditLog { edges { node { ownerId } } } }`);
      expect(bobAudit.data!.auditLog.edges.every((e: { node: { ownerId: string } }) => e.node.ownerId === bob.id)).toBe(true);
      const aliceAudit = await alice.client(`{ auditLog { edges { node { action ownerId actorUserId actor { name } } } } }`);
      // alice's objects were changed by the admin: she sees that a user did it, not who (users are the admin's to see)
      for (const e of aliceAudit.data!.auditLog.edges) expect(e.node.actor).toEqual(e.node.actorUserId === alice.id ? { name: 'alice' } : null);
      expect(aliceAudit.data!.auditLog.edges.length).toBeGreaterThan(0);
      expect(aliceAudit.data!.auditLog.edges.every((e: { node: { ownerId: string } }) => e.node.ownerId === alice.id)).toBe(true);
    });

    it("names each allocated address's instance and, for admins, its owner; a tenant sees only its own", async () => {
      const pools = await ctx.api.admin(`{ ipPools(first: 100) { edges { node { id name } } } }`);
      const poolId = pools.data!.ipPools.edges.find((e: { node: { name: string } }) => e.node.name === 'tenants').node.id;
      const entries = await ctx.api.admin(
        `query($id: ID!) { ipPool(id: $id) { entries(first: 50, kinds: [ALLOCATED]) { edges { node { address nicId instance { name owner { name } } } } } } }`,
        { id: poolId },
      );
      const held = entries.data!.ipPool.entries.edges.map((e: { node: unknown }) => e.node);
      expect(held.length).toBeGreaterThan(0);
      for (const entry of held) expect(entry).toMatchObject({ nicId: aliceVm.nics[0]!.id, instance: { name: 'alice-vm', owner: { name: 'alice' } } });
      const mine = await alice.client(`query($id: ID!) { instance(id: $id) { nics { addresses { instance { name } } } } }`, { id: aliceVm.id });
      expect(mine.data!.instance.nics[0].addresses[0].instance).toEqual({ name: 'alice-vm' });
    });

    it('lets an owner manage NICs of their own instance', async () => {
      const added = await addNic(alice.client, { instanceId: aliceVm.id, network: 'br-t', allocate: [] });
      expect(added.added.nic.name).toBe('eth1');
      const removed = await alice.client(`mutation($id: ID!) { removeNic(input: { nicId: $id }) { __typename } }`, { id: added.added.nic.id });
      expect(removed.data!.removeNic.__typename).toBe('RemoveNicPayload');
    });
  });

  it('writes an audit entry with actor, token, request id, before and after for every change', async () => {
    const me = await ctx.api.admin(`{ me { id tokens { id } } }`);
    const r = await ctx.api.admin(`mutation { updateHost(input: { hostId: "${ctx.hostId}", portRangeStart: 2000 }) { __typename } }`);
    expect(r.data!.updateHost.__typename).toBe('UpdateHostPayload');
    const audit = await ctx.api.admin(
      `query($id: String!) { auditLog(first: 1, objectId: $id) { edges { node { action actorUserId actor { id name } tokenId requestId objectType before after } } } }`,
      { id: ctx.hostId },
    );
    const entry = audit.data!.auditLog.edges[0].node;
    expect(entry.actor).toEqual({ id: me.data!.me.id, name: 'admin' });
    expect(entry).toMatchObject({ action: 'host.update', actorUserId: me.data!.me.id, tokenId: me.data!.me.tokens[0].id, objectType: 'Host' });
    expect(entry.requestId).toMatch(/^[0-9a-f-]{36}$/);
    expect(entry.before.portRangeStart).toBe(1024);
    expect(entry.after.portRangeStart).toBe(2000);
  });

  it('paginates lists as Relay connections', async () => {
    const page1 = await ctx.api.admin(`{ ipPools(first: 2) { edges { cursor node { name } } pageInfo { hasNextPage endCursor } } }`);
    expect(page1.data!.ipPools.edges).toHaveLength(2);
    expect(page1.data!.ipPools.pageInfo.hasNextPage).toBe(true);
    const page2 = await ctx.api.admin(`query($after: String) { ipPools(first: 100, after: $after) { edges { node { name } } pageInfo { hasNextPage } } }`, {
      after: page1.data!.ipPools.pageInfo.endCursor,
    });
    const names = [...page1.data!.ipPools.edges, ...page2.data!.ipPools.edges].map((e: { node: { name: string } }) => e.node.name);
    expect(new Set(names).size).toBe(names.length);
    expect(names.slice(0, 2)).toEqual(['public-pool-1', 'nat-a']);
    expect(page2.data!.ipPools.pageInfo.hasNextPage).toBe(false);
  });
});
