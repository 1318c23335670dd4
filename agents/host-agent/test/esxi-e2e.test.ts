/**
 * End to end with the ESXi plugin, as root: a real controller process, a real agent process
 * (`gatehouse agent --plugin esxi --plugin-config …`) on the gateway, and the plugin's lab
 * (`@gatehouse/plugin-esxi/testing`): vcsim, VMware's vSphere API simulator (built once and cached),
 * pinned by its certificate's thumbprint, plays the ESXi host; a gateway namespace holds the
 * dataplane, the public address 198.51.100.1 (a client namespace at 198.51.100.2) and the bridge
 * of the VMs' port group "VM Network" (10.77.0.1/24); each VM NIC is paired by MAC with a
 * namespace whose veth carries traffic only while vcsim has a connected card with that MAC, and
 * sends at the rate of its port group's shaping policy. The test drives only the public GraphQL
 * API, and vSphere for what an admin does behind Gatehouse's back, and watches real traffic:
 *
 * - the VM vcsim runs shows up in GraphQL on its host with its NIC and an address from the host's
 *   default pool (VMware Tools report none), and the host shows the plugin's capabilities;
 * - a port forward carrying TCP from the client namespace; a firewall rule that blocks it, deleted
 *   again; an egress limit (the port group's shaping, the only direction a standard vSwitch
 *   shapes) measured with iperf3 within 5 % and removed again, and an ingress limit refused with
 *   CAPABILITY_NOT_SUPPORTED; a second NIC hot-added through ReconfigVM_Task, which then carries
 *   traffic from the gateway;
 * - the VM destroyed through vSphere: the instance, its forwards, proxy, rule and addresses are
 *   reclaimed by the controller on its own, with audit entries by the system actor.
 */
import { CAPABILITIES, PORT_GROUP_PREFIX, readVms, shapedPortGroup, type Vm } from '@gatehouse/plugin-esxi';
import { EsxiLab, LAB_NETWORK, LAB_PUBLIC_V4, vcsimBuildable } from '@gatehouse/plugin-esxi/testing';
import { eventually, labAvailable, tcpOutcome, tcpServer, type LabNamespace, type LabServer } from '@gatehouse/sdk/testkit';
import { spawn, type ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BackendRun,
  DRIVER_SELECTION,
  ERR,
  REQUIRE_SYSTEM,
  capabilitiesInGraphql,
  checkFirewallBlocks,
  checkReclaimed,
  cleanUpInOrder,
  createForward,
  describeRate,
  iperf3Rate,
  payload,
  v4,
  type BackendScenario,
  type InstanceView,
} from './backend-e2e.js';
import { until } from './support.js';

const available = (await labAvailable()) && vcsimBuildable();

const BODY = 'hello from a gatehouse esxi vm';
const DISCOVER_MS = 500;
const RATE = 20e6;
/** The second NIC: a MAC in the range ESXi accepts as manual, an address from the pool. */
const SECOND = { mac: '00:50:56:00:07:01', address: '10.77.0.160' };

describe.skipIf(!available && !REQUIRE_SYSTEM)('host agent end to end with the ESXi plugin', () => {
  let esxi: EsxiLab | undefined;
  const run = new BackendRun('esxi');
  let poolId: string;
  let vm: Vm;
  let vmNs: LabNamespace;
  let instance: InstanceView | undefined;
  const forwards: string[] = [];
  let ruleId: string;
  const servers: LabServer[] = [];
  const children: ChildProcess[] = [];
  const queries = run.queries;
  const { api, instances, hostAgent, converged, forwardStatus, bandwidthStatus } = queries;
  const throughForward = (port = 18080) => tcpOutcome(esxi!.client, LAB_PUBLIC_V4, port);
  const vmNow = async () => (await readVms(esxi!.admin)).find((v) => v.ref.value === vm.ref.value);
  const registered = async () => (await instances()).find((i) => i.externalId === vm.ref.value);
  const scenario: BackendScenario = {
    queries,
    instanceId: () => instance!.id,
    throughForward: () => throughForward(),
    body: BODY,
    table: () => esxi!.gateway.exec('nft', ['list', 'table', 'inet', 'gatehouse']),
  };

  beforeAll(async () => {
    esxi = await EsxiLab.start({ vms: 1 });
    console.log(`[esxi-e2e] vcsim ${esxi.buildMs ? `built in ${esxi.buildMs} ms` : 'cached'}`);
    vm = (await readVms(esxi.admin))[0]!;
    await run.start(
      LAB_PUBLIC_V4,
      [{ name: 'esxi-vm-network', network: LAB_NETWORK, cidr: '10.77.0.0/24', start: '10.77.0.100', end: '10.77.0.199', gateway: '10.77.0.1' }],
      esxi.config(),
      DISCOVER_MS,
    );
    poolId = run.poolIds[0]!;
  }, 600_000);

  afterAll(async () => {
    run.printLogs();
    await cleanUpInOrder([
      () => servers.forEach((server) => server.stop()),
      () => children.forEach((child) => child.exitCode === null && child.signalCode === null && child.kill('SIGTERM')),
      ...run.stopSteps(),
      () => esxi?.cleanup(),
      ...run.removeSteps(),
    ]);
  }, 120_000);

  it('the host runs the esxi plugin and shows its capabilities: shaping native, egress only', async () => {
    const host = (await api(`query ($id: ID!) { host(id: $id) { backend ${DRIVER_SELECTION} } }`, { id: run.hostId })).host;
    expect(host).toEqual({ backend: 'esxi', driver: { id: 'esxi', apiVersion: 1, capabilities: capabilitiesInGraphql(CAPABILITIES) } });
    expect(host.driver.capabilities.shaping).toEqual({ implementation: 'NATIVE', ingress: false, egress: true, burst: true });
  });

  it("vcsim's VM appears in GraphQL on its host with its NIC on the port group and an address from the default pool", async () => {
    const started = Date.now();
    instance = await until(registered, 20 * DISCOVER_MS);
    if (!instance) throw new Error(`VM ${vm.ref.value} was not registered within ${20 * DISCOVER_MS} ms; agent output:\n${run.agent!.output().slice(-3000)}`);
    console.log(`[esxi-e2e] VM ${vm.ref.value} (${vm.name}) registered ${Date.now() - started} ms after the agent converged`);
    expect(vm.nics).toHaveLength(1);
    expect(instance).toMatchObject({
      name: vm.name,
      externalId: vm.ref.value,
      owner: { name: 'admin' },
      nics: [{ mac: vm.nics[0]!.mac, network: LAB_NETWORK, addresses: [{ pool: { id: poolId } }] }],
    });
    const address = instance.nics[0]!.addresses[0]!.address;
    expect(v4(address)).toBeGreaterThanOrEqual(v4('10.77.0.100'));
    expect(v4(address)).toBeLessThanOrEqual(v4('10.77.0.199'));
    expect((await converged())?.agent.lastError).toBeNull();
    // the plugin marks the VM as Gatehouse's in its extraConfig
    expect(await until(async () => (await vmNow())?.owner === instance!.id)).toBe(true);
    // the guest configures that address on the NIC (VMware Tools report none): its namespace is paired by MAC
    const paired = await esxi!.createInstance('web', { mac: vm.nics[0]!.mac, address, prefixLength: 24, gateway: '10.77.0.1' }, { vm: vm.ref.value });
    vmNs = paired.ns;
    servers.push(tcpServer(vmNs, 8080, BODY));
    expect(await eventually(() => tcpOutcome(esxi!.gateway, address, 8080), 10_000)).toBe(`got:${BODY}`);
    // discovery reports the desired address as the NIC's
    expect(
      await until(async () =>
        (await hostAgent()).agent.discoveredInstances.find((i) => i.externalId === vm.ref.value)?.nics.some((n) => n.addresses.includes(`${address}/24`)),
      ),
    ).toBe(true);
  });

  it('forwards a public port to the VM through the gateway: TCP from the client namespace gets its answer', async () => {
    if (!instance) throw new Error('no registered instance (see the test before)');
    forwards.push(await createForward(scenario, 18080, 8080));
    expect(await eventually(() => throughForward(), 15_000)).toBe(`got:${BODY}`);
    expect(await until(async () => (await forwardStatus(forwards[0]!))?.status === 'APPLIED')).toBe(true);
  });

  it('blocks it with an inbound DROP rule, and lets it through again when the rule is deleted', async () => {
    ruleId = await checkFirewallBlocks(scenario);
  });

  it('refuses an ingress limit (CAPABILITY_NOT_SUPPORTED), and shapes egress through a port group of its own (iperf3 within 5 %) until the limit is removed', async () => {
    const ingress = await api(
      `mutation ($id: ID!) { setBandwidthLimit(input: { instanceId: $id, ingressMbps: 20 }) { __typename ... on CapabilityNotSupportedError { capability } ${ERR} } }`,
      { id: instance!.id },
    );
    expect(ingress.setBandwidthLimit).toMatchObject({
      __typename: 'CapabilityNotSupportedError',
      code: 'CAPABILITY_NOT_SUPPORTED',
      capability: 'shaping.ingress',
    });
    expect(await bandwidthStatus(instance!.id)).toEqual([]);

    const iperf = spawn('ip', ['netns', 'exec', vmNs.name, 'iperf3', '-s', '-p', '5201'], { stdio: 'ignore' });
    children.push(iperf);
    forwards.push(await createForward(scenario, 15201, 5201));
    const limit = await api(
      `mutation ($id: ID!) { setBandwidthLimit(input: { instanceId: $id, egressMbps: 20 }) { ... on SetBandwidthLimitPayload { limit { ingressBps egressBps } } ${ERR} } }`,
      { id: instance!.id },
    );
    expect(payload(limit.setBandwidthLimit, 'limit')).toEqual({ ingressBps: null, egressBps: RATE });
    expect(await until(async () => (await bandwidthStatus(instance!.id))[0] === 'APPLIED')).toBe(true);
    expect(await until(async () => (await forwardStatus(forwards[1]!))?.status === 'APPLIED')).toBe(true);
    await converged();
    // vSphere: the NIC is on a port group of its own whose shaping policy is the limit
    const group = shapedPortGroup(instance!.id, instance!.nics[0]!.id);
    expect((await vmNow())!.nics[0]).toMatchObject({ portGroup: group, connected: true });
    expect((await esxi!.admin.portGroups()).find((g) => g.name === group)?.shaping).toMatchObject({
      enabled: true,
      averageBandwidth: RATE,
      peakBandwidth: RATE,
    });
    const out = await iperf3Rate(esxi!.client, LAB_PUBLIC_V4, 15201, 4, true);
    console.log(`[esxi-e2e] 20 Mbit/s egress limit: out of the VM ${describeRate(out, RATE)}`);
    expect(Math.abs(out.wire / RATE - 1)).toBeLessThanOrEqual(0.05);

    const removed = await api(`mutation ($id: ID!) { removeBandwidthLimit(input: { instanceId: $id }) { __typename } }`, { id: instance!.id });
    expect(removed.removeBandwidthLimit.__typename).toBe('RemoveBandwidthLimitPayload');
    await converged();
    expect(await until(async () => (await vmNow())!.nics[0]!.portGroup === LAB_NETWORK)).toBe(true);
    expect(await until(async () => !(await esxi!.admin.portGroups()).some((g) => g.name.startsWith(PORT_GROUP_PREFIX)))).toBe(true);
    const free = await iperf3Rate(esxi!.client, LAB_PUBLIC_V4, 15201, 2, true);
    console.log(`[esxi-e2e] limit removed: out of the VM ${describeRate(free, RATE)}`);
    expect(free.goodput).toBeGreaterThan(2 * RATE);
  });

  it('adds a second NIC: the plugin hot-adds the card on the port group, and the gateway reaches the VM on it', async () => {
    // the guest side of the second card exists already; the vSwitch carries nothing until vSphere has the card
    const second = await esxi!.createInstance('web-nic2', { ...SECOND, prefixLength: 24, gateway: '10.77.0.1' }, { vm: vm.ref.value });
    servers.push(tcpServer(second.ns, 8080, BODY));
    expect(await tcpOutcome(esxi!.gateway, SECOND.address, 8080)).not.toMatch(/^got:/);
    const added = await api(
      `mutation ($id: ID!, $n: String!, $mac: String!, $a: String!) { addNic(input: { instanceId: $id, network: $n, mac: $mac, addresses: [$a] }) { ... on AddNicPayload { added { nic { id mac network } addresses { address pool { id } } } } ${ERR} } }`,
      { id: instance!.id, n: LAB_NETWORK, mac: SECOND.mac, a: SECOND.address },
    );
    const nic = payload(added.addNic, 'added');
    expect(nic).toMatchObject({ nic: { mac: SECOND.mac, network: LAB_NETWORK }, addresses: [{ address: SECOND.address, pool: { id: poolId } }] });
    const started = Date.now();
    expect(await eventually(() => tcpOutcome(esxi!.gateway, SECOND.address, 8080), 20_000)).toBe(`got:${BODY}`);
    console.log(`[esxi-e2e] second NIC answering ${Date.now() - started} ms after addNic`);
    expect((await converged())?.agent.lastError).toBeNull();
    expect((await vmNow())!.nics.find((n) => n.mac === SECOND.mac)).toMatchObject({ portGroup: LAB_NETWORK, connected: true, model: 'VirtualVmxnet3' });
    expect((await vmNow())!.ownedMacs).toEqual([SECOND.mac]);
    // the first NIC still answers through the forward, and discovery reports both NICs
    expect(await throughForward()).toBe(`got:${BODY}`);
    expect(
      await until(async () =>
        (await hostAgent()).agent.discoveredInstances
          .find((i) => i.externalId === vm.ref.value)
          ?.nics.some((n) => n.mac === SECOND.mac && n.addresses.includes(`${SECOND.address}/24`)),
      ),
    ).toBe(true);
  });

  it("a VM destroyed behind Gatehouse's back is reclaimed: instance, forwards, proxy, rule and addresses, with audit entries", async () => {
    await checkReclaimed(scenario, { forwards, ruleId, destroy: () => esxi!.destroyInstance(vm.ref.value), label: 'esxi-e2e', withinMs: 30 * DISCOVER_MS });
  });
});
