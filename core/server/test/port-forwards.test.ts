/**
 * Port forwards through the GraphQL API on PGlite and PostgreSQL: validation, conflicts decided by
 * the database (also under concurrency), automatic host ports, quotas, tenants, revision bumps and
 * cleanup when the target goes away.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { ERROR_FIELDS, type Client } from '../src/testing/api.js';
import { createPool } from '../src/testing/fixtures.js';
import { storeBackends } from '../src/testing/stores.js';
import { useStoreApi } from './support/suite.js';

const backends = await storeBackends();

const FORWARD_FIELDS = 'id protocol hostAddress hostPorts { start end } targetAddress targetPorts { start end } sourceCidrs status note';
const CREATE = `mutation($input: CreatePortForwardInput!) { createPortForward(input: $input) { __typename ... on CreatePortForwardPayload { portForward { ${FORWARD_FIELDS} } } ${ERROR_FIELDS} } }`;

async function forward(client: Client, input: Record<string, unknown>) {
  const r = await client(CREATE, { input });
  if (r.errors) throw new Error(JSON.stringify(r.errors));
  return r.data!.createPortForward;
}

describe.each(backends)('port forwards on $name', (backend) => {
  const ctx = useStoreApi(backend, 'host-pf');
  let hostId: string;
  let vm: { id: string; name: string; nics: { id: string; addresses: { id: string; address: string }[] }[] };
  let alice: { client: Client; id: string };
  let aliceVmId: string;

  const revision = async () =>
    (await ctx.api.admin(`query($id: ID!) { host(id: $id) { desiredRevision } }`, { id: hostId })).data!.host.desiredRevision as number;

  beforeAll(async () => {
    const host = await ctx.api.admin(
      `mutation { createHost(input: { name: "gw-1", backend: LINUX, portRangeStart: 10000, portRangeEnd: 10100, reservedPorts: ["10005", "10050-10059"], publicAddresses: ["203.0.113.10", "203.0.113.11", "2001:db8:ffff::10"] }) { ... on CreateHostPayload { host { id } } } }`,
    );
    hostId = host.data!.createHost.host.id;
    await createPool(ctx.api.admin, { name: 'pf-v4', kind: 'PRIVATE', network: 'br-pf', cidr: '10.5.0.0/24' });
    await createPool(ctx.api.admin, { name: 'pf-v6', kind: 'PRIVATE', network: 'br-pf', cidr: 'fd00:5::/64' });
    const created = await ctx.api.admin(
      `mutation($h: ID!) { createInstance(input: { hostId: $h, name: "vm-7", nics: [{ network: "br-pf" }] }) { ... on CreateInstancePayload { instance { id name nics { id addresses { id address } } } } } }`,
      { h: hostId },
    );
    vm = created.data!.createInstance.instance;
    alice = await ctx.api.tenant('alice-pf', { quotaPortForwards: 2 });
    const aliceVm = await ctx.api.admin(
      `mutation($h: ID!, $o: ID!) { createInstance(input: { hostId: $h, ownerId: $o, name: "alice-vm", nics: [{ network: "br-pf", allocate: [IPV4] }] }) { ... on CreateInstancePayload { instance { id } } } }`,
      { h: hostId, o: alice.id },
    );
    aliceVmId = aliceVm.data!.createInstance.instance.id;
  });

  it("forwards a port to the instance's first IPv4 address and bumps the host revision", async () => {
    const before = await revision();
    const r = await forward(ctx.api.admin, { instanceId: vm.id, protocol: 'TCP', hostPort: '10022', targetPort: '22', note: 'SSH' });
    expect(r.portForward).toMatchObject({
      protocol: 'TCP',
      hostAddress: null,
      hostPorts: { start: 10022, end: 10022 },
      targetAddress: '10.5.0.1',
      targetPorts: { start: 22, end: 22 },
      status: 'PENDING',
      note: 'SSH',
    });
    expect(await revision()).toBe(before + 1);
  });

  it('answers PORT_CONFLICT for an overlapping protocol, address and port, and allows the rest', async () => {
    const snapshot = await ctx.api.snapshot();
    const tcpAgain = await forward(ctx.api.admin, { instanceId: vm.id, protocol: 'TCP', hostPort: '10022', targetPort: '2222' });
    expect(tcpAgain).toMatchObject({ __typename: 'PortConflictError', code: 'PORT_CONFLICT', field: 'input.hostPort', value: '10022' });
    expect(tcpAgain.message).toBe('input.hostPort "10022" /tcp on host "gw-1" is already forwarded to vm-7 (10.5.0.1:22)');
    expect(await forward(ctx.api.admin, { instanceId: vm.id, protocol: 'BOTH', hostPort: '10020-10030', targetPort: '20-30' })).toMatchObject({
      code: 'PORT_CONFLICT',
    });
    expect(
      await forward(ctx.api.admin, { instanceId: vm.id, protocol: 'TCP', hostPort: '10022', targetPort: '22', hostAddress: '203.0.113.11' }),
    ).toMatchObject({ code: 'PORT_CONFLICT' });
    expect(await ctx.api.snapshot()).toEqual(snapshot);
    // UDP on the same port, and the same port over IPv6, are different forwards
    expect((await forward(ctx.api.admin, { instanceId: vm.id, protocol: 'UDP', hostPort: '10022', targetPort: '22' })).__typename).toBe(
      'CreatePortForwardPayload',
    );
    const v6 = await forward(ctx.api.admin, {
      instanceId: vm.id,
      protocol: 'TCP',
      hostPort: '10022',
      targetPort: '22',
      targetAddress: vm.nics[0]!.addresses[1]!.address,
    });
    expect(v6.portForward.targetAddress).toBe('fd00:5::1');
    // two specific addresses do not overlap each other
    const a = await forward(ctx.api.admin, { instanceId: vm.id, protocol: 'TCP', hostPort: '10080', targetPort: '80', hostAddress: '203.0.113.10' });
    const b = await forward(ctx.api.admin, { instanceId: vm.id, protocol: 'TCP', hostPort: '10080', targetPort: '8080', hostAddress: '203.0.113.11' });
    expect([a.portForward.hostAddress, b.portForward.hostAddress]).toEqual(['203.0.113.10', '203.0.113.11']);
    expect(await forward(ctx.api.admin, { instanceId: vm.id, protocol: 'TCP', hostPort: '10080', targetPort: '80' })).toMatchObject({ code: 'PORT_CONFLICT' });
  });

  it('forwards port ranges of equal length', async () => {
    const r = await forward(ctx.api.admin, { instanceId: vm.id, protocol: 'UDP', hostPort: '10060-10069', targetPort: '5060-5069' });
    expect(r.portForward).toMatchObject({ hostPorts: { start: 10060, end: 10069 }, targetPorts: { start: 5060, end: 5069 } });
    expect(await forward(ctx.api.admin, { instanceId: vm.id, protocol: 'UDP', hostPort: '10069-10070', targetPort: '1-2' })).toMatchObject({
      code: 'PORT_CONFLICT',
    });
  });

  it('chooses the lowest free host port block when none is given, skipping reserved and forwarded ports', async () => {
    const one = await forward(ctx.api.admin, { instanceId: vm.id, protocol: 'TCP', targetPort: '443' });
    expect(one.portForward.hostPorts).toEqual({ start: 10000, end: 10000 });
    const block = await forward(ctx.api.admin, { instanceId: vm.id, protocol: 'TCP', targetPort: '3000-3004' });
    expect(block.portForward.hostPorts).toEqual({ start: 10006, end: 10010 }); // 10005 is reserved
    const next = await forward(ctx.api.admin, { instanceId: vm.id, protocol: 'TCP', targetPort: '3389' });
    expect(next.portForward.hostPorts).toEqual({ start: 10001, end: 10001 });
  });

  describe('bad input gets a typed error naming the field and changes nothing', () => {
    const cases: [string, Record<string, unknown>, string, string][] = [
      ['port 0', { hostPort: '0', targetPort: '22' }, 'VALIDATION_FAILED', 'input.hostPort'],
      ['port 65536', { hostPort: '10030', targetPort: '65536' }, 'VALIDATION_FAILED', 'input.targetPort'],
      ['ranges of different lengths', { hostPort: '10030-10031', targetPort: '80-82' }, 'VALIDATION_FAILED', 'input.hostPort'],
      ['a reversed range', { hostPort: '10031-10030', targetPort: '80-81' }, 'VALIDATION_FAILED', 'input.hostPort'],
      ['a reserved host port', { hostPort: '10055', targetPort: '22' }, 'VALIDATION_FAILED', 'input.hostPort'],
      ['a port outside the host range', { hostPort: '8080', targetPort: '80' }, 'VALIDATION_FAILED', 'input.hostPort'],
      ['a target the instance does not hold', { hostPort: '10030', targetPort: '80', targetAddress: '10.5.0.99' }, 'VALIDATION_FAILED', 'input.targetAddress'],
      ['the loopback address as target', { hostPort: '10030', targetPort: '80', targetAddress: '127.0.0.1' }, 'VALIDATION_FAILED', 'input.targetAddress'],
      ['a host address the host does not have', { hostPort: '10030', targetPort: '80', hostAddress: '198.51.100.1' }, 'VALIDATION_FAILED', 'input.hostAddress'],
      [
        'an IPv6 host address for an IPv4 target',
        { hostPort: '10030', targetPort: '80', hostAddress: '2001:db8:ffff::10' },
        'VALIDATION_FAILED',
        'input.hostAddress',
      ],
      [
        'a source CIDR with host bits set',
        { hostPort: '10030', targetPort: '80', sourceCidrs: ['198.51.100.7/24'] },
        'VALIDATION_FAILED',
        'input.sourceCidrs[0]',
      ],
      [
        'a source that is not an address',
        { hostPort: '10030', targetPort: '80', sourceCidrs: ['10.0.0.0/8', 'office'] },
        'VALIDATION_FAILED',
        'input.sourceCidrs[1]',
      ],
      ['a note with control characters', { hostPort: '10030', targetPort: '80', note: 'a\nb' }, 'VALIDATION_FAILED', 'input.note'],
      ['an unknown instance', { instanceId: '01a20169-0000-7000-8000-000000000000', hostPort: '10030', targetPort: '80' }, 'NOT_FOUND', 'input.instanceId'],
    ];
    it.each(cases)('%s', async (_label, overrides, code, field) => {
      const before = await ctx.api.snapshot();
      const r = await forward(ctx.api.admin, { instanceId: vm.id, protocol: 'TCP', ...overrides });
      expect(r).toMatchObject({ code, field });
      expect(await ctx.api.snapshot()).toEqual(before);
    });
  });

  it('keeps tenants apart and holds the forward quota', async () => {
    const before = await ctx.api.snapshot();
    expect(await forward(alice.client, { instanceId: vm.id, protocol: 'TCP', hostPort: '10040', targetPort: '22' })).toMatchObject({
      code: 'NOT_FOUND',
      field: 'input.instanceId',
    });
    const taken = await forward(alice.client, { instanceId: aliceVmId, protocol: 'TCP', hostPort: '10022', targetPort: '22' });
    expect(taken).toMatchObject({ code: 'PORT_CONFLICT' });
    expect(taken.message).toContain('another tenant');
    expect(taken.message).not.toContain('vm-7');
    expect(await ctx.api.snapshot()).toEqual(before);
    expect((await forward(alice.client, { instanceId: aliceVmId, protocol: 'TCP', targetPort: '22' })).__typename).toBe('CreatePortForwardPayload');
    expect((await forward(alice.client, { instanceId: aliceVmId, protocol: 'TCP', targetPort: '80' })).__typename).toBe('CreatePortForwardPayload');
    expect(await forward(alice.client, { instanceId: aliceVmId, protocol: 'TCP', targetPort: '443' })).toMatchObject({ code: 'QUOTA_EXCEEDED' });
    const mine = await alice.client(`{ portForwards { edges { node { instance { name } } } } }`);
    expect(mine.data!.portForwards.edges.map((e: { node: { instance: { name: string } } }) => e.node.instance.name)).toEqual(['alice-vm', 'alice-vm']);
    const all = await ctx.api.admin(`query($h: ID!) { portForwards(hostId: $h, first: 100) { edges { node { id } } } }`, { h: hostId });
    expect(all.data!.portForwards.edges.length).toBeGreaterThan(2);
  });

  it('gives exactly one of 30 concurrent claims of one port, and 30 distinct ports to 30 automatic claims', async () => {
    const claims = await Promise.all(
      Array.from({ length: 30 }, (_, i) => forward(ctx.api.admin, { instanceId: vm.id, protocol: 'TCP', hostPort: '10090', targetPort: String(1000 + i) })),
    );
    expect(claims.filter((c) => c.__typename === 'CreatePortForwardPayload')).toHaveLength(1);
    expect(claims.filter((c) => c.code === 'PORT_CONFLICT')).toHaveLength(29);
    const auto = await Promise.all(
      Array.from({ length: 30 }, (_, i) => forward(ctx.api.admin, { instanceId: vm.id, protocol: 'UDP', targetPort: String(2000 + i) })),
    );
    const ports = auto.map((c) => c.portForward?.hostPorts.start);
    expect(ports.every((p) => typeof p === 'number')).toBe(true);
    expect(new Set(ports).size).toBe(30);
  });

  it('refuses to release a forwarded address, and removes forwards with their NIC', async () => {
    const created = await ctx.api.admin(
      `mutation($h: ID!) { createInstance(input: { hostId: $h, name: "vm-gone", nics: [{ network: "br-pf", allocate: [IPV4] }] }) { ... on CreateInstancePayload { instance { id nics { id addresses { id } } } } } }`,
      { h: hostId },
    );
    const gone = created.data!.createInstance.instance;
    const f = await forward(ctx.api.admin, { instanceId: gone.id, protocol: 'TCP', hostPort: '10099', targetPort: '22' });
    const release = await ctx.api.admin(`mutation($id: ID!) { releaseAddress(input: { addressId: $id }) { __typename ${ERROR_FIELDS} } }`, {
      id: gone.nics[0].addresses[0].id,
    });
    expect(release.data!.releaseAddress).toMatchObject({ code: 'CONFLICT', field: 'input.addressId' });
    const before = await revision();
    const removed = await ctx.api.admin(`mutation($id: ID!) { removeNic(input: { nicId: $id }) { __typename ${ERROR_FIELDS} } }`, { id: gone.nics[0].id });
    expect(removed.data!.removeNic.__typename).toBe('RemoveNicPayload');
    expect((await ctx.api.admin(`query($id: ID!) { portForward(id: $id) { id } }`, { id: f.portForward.id })).data!.portForward).toBeNull();
    expect(await revision()).toBeGreaterThan(before);
    const audit = await ctx.api.admin(`query($id: String!) { auditLog(objectId: $id) { edges { node { action after } } } }`, { id: f.portForward.id });
    expect(audit.data!.auditLog.edges[0].node).toMatchObject({ action: 'portForward.delete', after: { reason: expect.stringContaining('removed') } });
    const deleted = await ctx.api.admin(`mutation($id: ID!) { deleteInstance(input: { instanceId: $id }) { __typename ${ERROR_FIELDS} } }`, { id: gone.id });
    expect(deleted.data!.deleteInstance.__typename).toBe('DeleteInstancePayload');
  });

  it('deletes a forward and frees its port', async () => {
    const f = await forward(ctx.api.admin, { instanceId: vm.id, protocol: 'TCP', hostPort: '10045', targetPort: '45' });
    const del = await ctx.api.admin(`mutation($id: ID!) { deletePortForward(input: { portForwardId: $id }) { __typename } }`, { id: f.portForward.id });
    expect(del.data!.deletePortForward.__typename).toBe('DeletePortForwardPayload');
    expect((await forward(ctx.api.admin, { instanceId: vm.id, protocol: 'TCP', hostPort: '10045', targetPort: '46' })).__typename).toBe(
      'CreatePortForwardPayload',
    );
  });

  it('counts every forward and instance a caller sees (totalCount), past one page, per tenant and filter', async () => {
    const count = async (client: Client, query: string, variables: Record<string, unknown> = {}) => (await client(query, variables)).data!;
    const all = await count(ctx.api.admin, `query($h: ID!) { portForwards(hostId: $h, first: 500) { totalCount edges { node { id } } pageInfo { hasNextPage } } }`, {
      h: hostId,
    });
    expect(all.portForwards.pageInfo.hasNextPage).toBe(false);
    expect(all.portForwards.totalCount).toBe(all.portForwards.edges.length);
    // a page of 1 still counts them all
    const first = await count(ctx.api.admin, `query($h: ID!) { portForwards(hostId: $h, first: 1) { totalCount edges { node { id } } } }`, { h: hostId });
    expect(first.portForwards.edges).toHaveLength(1);
    expect(first.portForwards.totalCount).toBe(all.portForwards.edges.length);
    expect(all.portForwards.totalCount).toBeGreaterThan(30);
    // a tenant counts only its own
    const mine = await count(alice.client, `{ portForwards(first: 1) { totalCount } instances(first: 1) { totalCount } webProxies { totalCount } }`);
    expect(mine).toEqual({ portForwards: { totalCount: 2 }, instances: { totalCount: 1 }, webProxies: { totalCount: 0 } });
    const ofVm = await count(ctx.api.admin, `query($i: ID!) { portForwards(instanceId: $i, first: 0) { totalCount edges { node { id } } } }`, { i: aliceVmId });
    expect(ofVm.portForwards).toEqual({ totalCount: 2, edges: [] });
    const instances = await count(ctx.api.admin, `query($h: ID!) { instances(hostId: $h, first: 500) { totalCount edges { node { id } } } }`, { h: hostId });
    expect(instances.instances.totalCount).toBe(instances.instances.edges.length);
  });

  it('lists the common ports for UIs', async () => {
    const r = await ctx.api.admin(`{ commonPorts { service port protocol } }`);
    expect(r.data!.commonPorts).toContainEqual({ service: 'RDP', port: 3389, protocol: 'TCP' });
    expect(r.data!.commonPorts).toHaveLength(8);
  });
});
