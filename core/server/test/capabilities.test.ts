/**
 * Driver capabilities end to end through GraphQL: the agent reports its driver with its host
 * status, `Host.driver` shows it, and every object the driver cannot apply is refused with
 * CAPABILITY_NOT_SUPPORTED naming the field and the capability — one test per capability kind —
 * also in CSV import dry runs; objects accepted before the agent connected become FAILED when
 * its driver turns out narrower. A host whose agent never connected accepts everything (PENDING).
 */
import type { DriverCapabilities } from '@gatehouse/sdk';
import { sql } from 'drizzle-orm';
import { beforeAll, describe, expect, it } from 'vitest';
import { rowsOf } from '../src/db/database.js';
import { ERROR_FIELDS, type Client } from '../src/testing/api.js';
import { createPool } from '../src/testing/fixtures.js';
import { storeBackends } from '../src/testing/stores.js';
import { useStoreApi } from './support/suite.js';

const backends = await storeBackends();

/** Everything on; each test turns one thing off. */
const FULL: DriverCapabilities = {
  portForwards: { implementation: 'dataplane', protocols: ['tcp', 'udp'], portRanges: true, ipv6: true, sourceAllowLists: true },
  firewall: {
    implementation: 'dataplane',
    directions: ['inbound', 'outbound'],
    actions: ['allow', 'reject', 'drop'],
    priorities: true,
    ipv6: true,
    icmp: true,
  },
  shaping: { implementation: 'dataplane', ingress: true, egress: true, burst: true },
  nics: { max: 8, hotplug: true, staticAddressing: true },
};

const REPORT = `mutation($input: ReportHostStatusInput!) { reportHostStatus(input: $input) { __typename ${ERROR_FIELDS} } }`;
const CREATE_FORWARD = `mutation($input: CreatePortForwardInput!) { createPortForward(input: $input) { __typename ... on CreatePortForwardPayload { portForward { id status } } ... on CapabilityNotSupportedError { capability } ${ERROR_FIELDS} } }`;
const ADD_RULE = `mutation($input: AddFirewallRuleInput!) { addFirewallRule(input: $input) { __typename ... on AddFirewallRulePayload { rule { id } } ... on CapabilityNotSupportedError { capability } ${ERROR_FIELDS} } }`;
const SET_POLICY = `mutation($input: SetFirewallPolicyInput!) { setFirewallPolicy(input: $input) { __typename ... on CapabilityNotSupportedError { capability } ${ERROR_FIELDS} } }`;
const SET_LIMIT = `mutation($input: SetBandwidthLimitInput!) { setBandwidthLimit(input: $input) { __typename ... on SetBandwidthLimitPayload { limit { id } } ... on CapabilityNotSupportedError { capability } ${ERROR_FIELDS} } }`;
const CREATE_INSTANCE = `mutation($input: CreateInstanceInput!) { createInstance(input: $input) { __typename ... on CreateInstancePayload { instance { id nics { id status } } } ... on CapabilityNotSupportedError { capability } ${ERROR_FIELDS} } }`;
const ADD_NIC = `mutation($input: AddNicInput!) { addNic(input: $input) { __typename ... on CapabilityNotSupportedError { capability } ${ERROR_FIELDS} } }`;
const IMPORT = `mutation($input: ImportPortForwardsInput!) { importPortForwards(input: $input) { __typename ... on ImportPortForwardsPayload { result { invalid rows { row action reason column } } } ${ERROR_FIELDS} } }`;

describe.each(backends)('driver capabilities on $name', (backend) => {
  const ctx = useStoreApi(backend, 'host-caps-unused');
  let hostId: string;
  let vm: { id: string; v4: string; v6: string };

  const gql = async (client: Client, query: string, input: Record<string, unknown>) => {
    const r = await client(query, { input });
    if (r.errors) throw new Error(JSON.stringify(r.errors));
    return Object.values(r.data as Record<string, any>)[0];
  };
  /** Reports the host's driver as its agent would (an admin may report for any host). */
  const report = async (capabilities: DriverCapabilities, extra: Record<string, unknown> = {}) => {
    const r = await gql(ctx.api.admin, REPORT, {
      hostId,
      agentVersion: '0.1.0',
      pluginId: 'lxd',
      driver: { id: 'lxd', version: '0.1.0', apiVersion: 1, capabilities },
      ...extra,
    });
    expect(r.__typename).toBe('ReportHostStatusPayload');
  };
  const narrowed = (change: (c: DriverCapabilities) => void): DriverCapabilities => {
    const c = structuredClone(FULL);
    change(c);
    return c;
  };
  const expectRefused = (r: any, capability: string, field: string) => {
    expect(r).toMatchObject({ __typename: 'CapabilityNotSupportedError', code: 'CAPABILITY_NOT_SUPPORTED', capability, field });
    expect(r.message).toContain(`on host h-caps: its driver lxd does not support`);
    expect(r.message).toContain(`(capabilities.${capability})`);
  };

  beforeAll(async () => {
    const host = await ctx.api.admin(
      `mutation { createHost(input: { name: "h-caps", backend: "lxd", publicAddresses: ["203.0.113.30", "2001:db8:30::1"] }) { ... on CreateHostPayload { host { id backend driver { id } } } } }`,
    );
    expect(host.data!.createHost.host).toMatchObject({ backend: 'lxd', driver: null });
    hostId = host.data!.createHost.host.id;
    await createPool(ctx.api.admin, { name: 'caps-v4', kind: 'PRIVATE', network: 'br-caps', cidr: '10.30.0.0/24' });
    await createPool(ctx.api.admin, { name: 'caps-v6', kind: 'PRIVATE', network: 'br-caps', cidr: 'fd00:30::/64' });
    const created = await gql(ctx.api.admin, CREATE_INSTANCE, {
      hostId,
      name: 'vm-caps',
      externalId: 'vm-caps',
      nics: [{ network: 'br-caps', allocate: ['IPV4', 'IPV6'] }],
    });
    const instance = created.instance;
    const addresses = (await ctx.api.admin(`query($id: ID!) { instance(id: $id) { nics { addresses { address } } } }`, { id: instance.id })).data!.instance
      .nics[0].addresses as { address: string }[];
    vm = { id: instance.id, v4: addresses.find((a) => !a.address.includes(':'))!.address, v6: addresses.find((a) => a.address.includes(':'))!.address };
  });

  it('accepts anything on a host whose agent never connected, as PENDING; then shows the reported driver in Host.driver', async () => {
    const r = await gql(ctx.api.admin, CREATE_FORWARD, {
      instanceId: vm.id,
      protocol: 'UDP',
      hostPort: '15000-15001',
      targetPort: '5000-5001',
      targetAddress: vm.v6,
    });
    expect(r).toMatchObject({ __typename: 'CreatePortForwardPayload', portForward: { status: 'PENDING' } });
    await report(FULL);
    const host = await ctx.api.admin(
      `query($id: ID!) { host(id: $id) { backend driver { id version apiVersion capabilities { portForwards { implementation protocols portRanges ipv6 sourceAllowLists } firewall { directions actions icmp ipv6 } shaping { ingress egress burst } nics { max hotplug staticAddressing } } } } }`,
      { id: hostId },
    );
    expect(host.data!.host).toEqual({
      backend: 'lxd',
      driver: {
        id: 'lxd',
        version: '0.1.0',
        apiVersion: 1,
        capabilities: {
          portForwards: { implementation: 'DATAPLANE', protocols: ['TCP', 'UDP'], portRanges: true, ipv6: true, sourceAllowLists: true },
          firewall: { directions: ['INBOUND', 'OUTBOUND'], actions: ['ALLOW', 'REJECT', 'DROP'], icmp: true, ipv6: true },
          shaping: { ingress: true, egress: true, burst: true },
          nics: { max: 8, hotplug: true, staticAddressing: true },
        },
      },
    });
  });

  it('refuses an IPv6 port forward (portForwards.ipv6)', async () => {
    await report(narrowed((c) => (c.portForwards!.ipv6 = false)));
    const r = await gql(ctx.api.admin, CREATE_FORWARD, { instanceId: vm.id, protocol: 'TCP', hostPort: '16001', targetPort: '80', targetAddress: vm.v6 });
    expectRefused(r, 'portForwards.ipv6', 'input.targetAddress');
    expect(r.message).toBe('Failed creating port forward on host h-caps: its driver lxd does not support IPv6 port forwards (capabilities.portForwards.ipv6)');
    expect(r.value).toBe(vm.v6);
  });

  it('refuses a UDP port forward (portForwards.protocols)', async () => {
    await report(narrowed((c) => (c.portForwards!.protocols = ['tcp'])));
    expectRefused(
      await gql(ctx.api.admin, CREATE_FORWARD, { instanceId: vm.id, protocol: 'BOTH', hostPort: '16002', targetPort: '53' }),
      'portForwards.protocols',
      'input.protocol',
    );
  });

  it('refuses a port range (portForwards.portRanges)', async () => {
    await report(narrowed((c) => (c.portForwards!.portRanges = false)));
    expectRefused(
      await gql(ctx.api.admin, CREATE_FORWARD, { instanceId: vm.id, protocol: 'TCP', hostPort: '16010-16011', targetPort: '80-81' }),
      'portForwards.portRanges',
      'input.targetPort',
    );
  });

  it('refuses a source allow-list (portForwards.sourceAllowLists)', async () => {
    await report(narrowed((c) => (c.portForwards!.sourceAllowLists = false)));
    expectRefused(
      await gql(ctx.api.admin, CREATE_FORWARD, { instanceId: vm.id, protocol: 'TCP', hostPort: '16020', targetPort: '80', sourceCidrs: ['198.51.100.0/24'] }),
      'portForwards.sourceAllowLists',
      'input.sourceCidrs',
    );
  });

  it('refuses port forwards on a driver without any (portForwards)', async () => {
    await report(narrowed((c) => (c.portForwards = null)));
    expectRefused(
      await gql(ctx.api.admin, CREATE_FORWARD, { instanceId: vm.id, protocol: 'TCP', hostPort: '16030', targetPort: '80' }),
      'portForwards',
      'input.protocol',
    );
  });

  it('refuses a firewall action (firewall.actions), also as a policy', async () => {
    await report(narrowed((c) => (c.firewall!.actions = ['allow', 'drop'])));
    expectRefused(
      await gql(ctx.api.admin, ADD_RULE, { instanceId: vm.id, direction: 'INBOUND', protocol: 'TCP', action: 'REJECT' }),
      'firewall.actions',
      'input.action',
    );
    expectRefused(await gql(ctx.api.admin, SET_POLICY, { instanceId: vm.id, inbound: 'REJECT' }), 'firewall.actions', 'input.inbound');
  });

  it('refuses a firewall direction (firewall.directions)', async () => {
    await report(narrowed((c) => (c.firewall!.directions = ['inbound'])));
    expectRefused(
      await gql(ctx.api.admin, ADD_RULE, { instanceId: vm.id, direction: 'OUTBOUND', protocol: 'TCP', action: 'DROP' }),
      'firewall.directions',
      'input.direction',
    );
  });

  it('refuses an ICMP rule (firewall.icmp)', async () => {
    await report(narrowed((c) => (c.firewall!.icmp = false)));
    expectRefused(
      await gql(ctx.api.admin, ADD_RULE, { instanceId: vm.id, direction: 'INBOUND', protocol: 'ICMP', action: 'DROP' }),
      'firewall.icmp',
      'input.protocol',
    );
  });

  it('refuses an IPv6 firewall rule (firewall.ipv6)', async () => {
    await report(narrowed((c) => (c.firewall!.ipv6 = false)));
    expectRefused(
      await gql(ctx.api.admin, ADD_RULE, { instanceId: vm.id, direction: 'INBOUND', protocol: 'TCP', sourceCidr: '2001:db8::/32', action: 'DROP' }),
      'firewall.ipv6',
      'input.sourceCidr',
    );
  });

  it('refuses ingress shaping (shaping.ingress)', async () => {
    await report(narrowed((c) => (c.shaping!.ingress = false)));
    expectRefused(await gql(ctx.api.admin, SET_LIMIT, { instanceId: vm.id, ingressMbps: 10 }), 'shaping.ingress', 'input.ingressMbps');
  });

  it('refuses egress shaping (shaping.egress)', async () => {
    await report(narrowed((c) => (c.shaping!.egress = false)));
    expectRefused(await gql(ctx.api.admin, SET_LIMIT, { instanceId: vm.id, egressMbps: 10 }), 'shaping.egress', 'input.egressMbps');
  });

  it('refuses an explicit burst (shaping.burst) but takes the automatic one', async () => {
    await report(narrowed((c) => (c.shaping!.burst = false)));
    expectRefused(await gql(ctx.api.admin, SET_LIMIT, { instanceId: vm.id, ingressMbps: 10, ingressBurstKb: 100 }), 'shaping.burst', 'input.ingressBurstKb');
    expect((await gql(ctx.api.admin, SET_LIMIT, { instanceId: vm.id, ingressMbps: 10 })).__typename).toBe('SetBandwidthLimitPayload');
  });

  it('refuses more NICs than nics.max', async () => {
    await report(narrowed((c) => (c.nics.max = 1)));
    const r = await gql(ctx.api.admin, CREATE_INSTANCE, { hostId, name: 'vm-two-nics', nics: [{ network: 'br-caps' }, { network: 'br-caps' }] });
    expectRefused(r, 'nics.max', 'input.nics');
    expect((await gql(ctx.api.admin, ADD_NIC, { instanceId: vm.id, network: 'br-caps' })).capability).toBe('nics.max');
  });

  it('refuses hot-plugging a NIC into a running instance (nics.hotplug)', async () => {
    await report(
      narrowed((c) => (c.nics.hotplug = false)),
      { discoveredInstances: [{ externalId: 'vm-caps', name: 'vm-caps', running: true, nics: [] }] },
    );
    expectRefused(await gql(ctx.api.admin, ADD_NIC, { instanceId: vm.id, network: 'br-caps' }), 'nics.hotplug', 'input.instanceId');
  });

  it('marks a CSV import dry-run row invalid, naming the capability', async () => {
    await report(narrowed((c) => (c.portForwards!.protocols = ['tcp'])));
    const r = await gql(ctx.api.admin, IMPORT, {
      hostId,
      dryRun: true,
      csv: `protocol,host_port,vm_ip,vm_port,note\ntcp,17000,${vm.v4},80,web\nudp,17001,${vm.v4},53,dns\n`,
    });
    expect(r.result.invalid).toBe(1);
    expect(r.result.rows[1]).toMatchObject({ row: 3, action: 'INVALID', column: 'protocol' });
    expect(r.result.rows[1].reason).toContain('(capabilities.portForwards.protocols)');
  });

  it('turns objects accepted before into FAILED with CAPABILITY_NOT_SUPPORTED when the driver is narrower', async () => {
    await report(FULL);
    const forward = await gql(ctx.api.admin, CREATE_FORWARD, { instanceId: vm.id, protocol: 'TCP', hostPort: '18000', targetPort: '80', targetAddress: vm.v6 });
    expect(forward.portForward.status).toBe('PENDING');
    await report(narrowed((c) => (c.portForwards!.ipv6 = false)));
    const after = await ctx.api.admin(`query($id: ID!) { portForward(id: $id) { status statusError } }`, { id: forward.portForward.id });
    expect(after.data!.portForward.status).toBe('FAILED');
    expect(after.data!.portForward.statusError).toMatch(/^CAPABILITY_NOT_SUPPORTED: .*\(capabilities\.portForwards\.ipv6\)$/);
  });

  it("leaves the host alone on a report repeating its driver (keys in the agent's order, not the store's), and checks its objects again on a changed one", async () => {
    const version = async () =>
      rowsOf<{ xmin: string }>(await ctx.api.store.db.execute(sql`select xmin::text as xmin from hosts where id = ${hostId}`))[0]!.xmin;
    await report(FULL);
    const forward = await gql(ctx.api.admin, CREATE_FORWARD, { instanceId: vm.id, protocol: 'TCP', hostPort: '18100', targetPort: '80', targetAddress: vm.v6 });
    expect(forward.portForward.status).toBe('PENDING');
    // the store gives the driver back with its keys in another order than reported
    const stored = rowsOf<{ driver: string }>(await ctx.api.store.db.execute(sql`select driver::text as driver from hosts where id = ${hostId}`))[0]!.driver;
    expect(Object.keys(JSON.parse(stored).capabilities.portForwards)[0]).not.toBe('implementation');
    const before = await version();
    // the same driver, its keys in yet another order: no write to the host row (no lock on it, no check of all its objects)
    const reversed = (v: unknown): unknown =>
      v !== null && typeof v === 'object' && !Array.isArray(v)
        ? Object.fromEntries(
            Object.entries(v)
              .reverse()
              .map(([k, x]) => [k, reversed(x)]),
          )
        : v;
    await report(FULL);
    await report(reversed(FULL) as DriverCapabilities);
    expect(await version()).toBe(before);
    const status = async () =>
      (await ctx.api.admin(`query($id: ID!) { portForward(id: $id) { status } }`, { id: forward.portForward.id })).data!.portForward.status;
    expect(await status()).toBe('PENDING');
    // a narrower one is stored and checked against
    await report(narrowed((c) => (c.portForwards!.ipv6 = false)));
    expect(await version()).not.toBe(before);
    expect(await status()).toBe('FAILED');
  });

  it('on a changed driver that takes every kind of forward, fails what it narrowed and leaves the forwards as they were', async () => {
    const everyForward = narrowed((c) => Object.assign(c.portForwards!, { rateLimits: true, multiTarget: true }));
    await report(everyForward);
    const forward = await gql(ctx.api.admin, CREATE_FORWARD, {
      instanceId: vm.id,
      protocol: 'UDP',
      hostPort: '18200-18201',
      targetPort: '80-81',
      targetAddress: vm.v6,
    });
    expect(forward).toMatchObject({ portForward: { status: 'PENDING' } });
    const limit = await gql(ctx.api.admin, SET_LIMIT, { instanceId: vm.id, egressMbps: 20 });
    expect(limit.__typename).toBe('SetBandwidthLimitPayload');
    // the driver changes (no egress shaping) but still takes every forward: the limit fails, the forward does not
    const noEgress = structuredClone(everyForward);
    noEgress.shaping!.egress = false;
    await report(noEgress);
    const after = await ctx.api.admin(`query($f: ID!, $i: ID!) { portForward(id: $f) { status } instance(id: $i) { bandwidth { status statusError } } }`, {
      f: forward.portForward.id,
      i: vm.id,
    });
    expect(after.data!.portForward.status).toBe('PENDING');
    expect(after.data!.instance.bandwidth).toEqual([
      { status: 'FAILED', statusError: expect.stringMatching(/^CAPABILITY_NOT_SUPPORTED: .*\(capabilities\.shaping\.egress\)$/) },
    ]);
    // the same forward is failed by a driver without UDP
    await report(narrowed((c) => (c.portForwards!.protocols = ['tcp'])));
    expect((await ctx.api.admin(`query($f: ID!) { portForward(id: $f) { status } }`, { f: forward.portForward.id })).data!.portForward.status).toBe('FAILED');
  });

  it('refuses a backend that is not a plugin id, and takes a third-party one', async () => {
    const bad = await ctx.api.admin(`mutation { createHost(input: { name: "h-bad", backend: "Not A Plugin" }) { __typename ${ERROR_FIELDS} } }`);
    expect(bad.data!.createHost).toMatchObject({ code: 'VALIDATION_FAILED', field: 'input.backend', value: 'Not A Plugin' });
    const good = await ctx.api.admin(
      `mutation { createHost(input: { name: "h-3p", backend: "json-file" }) { ... on CreateHostPayload { host { backend } } } }`,
    );
    expect(good.data!.createHost.host.backend).toBe('json-file');
  });
});
