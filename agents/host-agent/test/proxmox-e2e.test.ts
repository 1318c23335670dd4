/**
 * End to end with the Proxmox VE plugin, as root: a real controller process, a real agent process
 * (`gatehouse agent --plugin proxmox --plugin-config …`), and the plugin's own PVE
 * (`@gatehouse/plugin-proxmox/testing`: an HTTPS API enforcing PVE 9.1's schema, pinned by its
 * certificate's fingerprint, in front of a node made of network namespaces — `vmbr0` at
 * 10.77.0.1/24 with each guest NIC's `tap<vmid>i<n>` on it, the public address 198.51.100.1, a
 * client namespace at 198.51.100.2). The test drives only the public GraphQL API, and the PVE API
 * for what an admin does behind Gatehouse's back, and watches real traffic:
 *
 * - a QEMU VM created on PVE (its guest agent reporting the address it configured) shows up in
 *   GraphQL on its host with its NIC and that address claimed from the bridge's pool, and the host
 *   shows the plugin's capabilities;
 * - a port forward carrying TCP from the client namespace; a firewall rule that blocks it, deleted
 *   again; ingress and egress limits measured with iperf3 within 5 %, removed again; a second NIC
 *   on `vmbr1`, hot-plugged through PVE's asynchronous config call, reached from the node;
 * - the VM deleted through the PVE API: the instance, its forwards, proxy, rule and addresses are
 *   reclaimed by the controller on its own, with audit entries by the system actor.
 */
import { CAPABILITIES, NIC_TAG, OWNER_TAG, guestNics } from '@gatehouse/plugin-proxmox';
import { LAB_PUBLIC_V4, PveLab, pveLabAvailable } from '@gatehouse/plugin-proxmox/testing';
import { eventually, tcpOutcome, type LabNamespace, type LabServer } from '@gatehouse/sdk/testkit';
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

const available = await pveLabAvailable();

const BODY = 'hello from a gatehouse proxmox vm';
const DISCOVER_MS = 500;
const MAC = '02:47:48:00:05:01';
/** The address the VM's guest configured itself (inside the pool's range). */
const GUEST_ADDRESS = '10.77.0.150';
const RATE = 20e6;

describe.skipIf(!available && !REQUIRE_SYSTEM)('host agent end to end with the Proxmox VE plugin', () => {
  let pve: PveLab | undefined;
  const run = new BackendRun('proxmox');
  let poolId: string;
  let pool2Id: string;
  let vmid: number;
  let guestNs: LabNamespace;
  let iperf3Server: (port: number) => Promise<LabServer>;
  let instance: InstanceView | undefined;
  const forwards: string[] = [];
  let ruleId: string;
  const servers: LabServer[] = [];
  const queries = run.queries;
  const { api, instances, hostAgent, converged, forwardStatus, bandwidthStatus } = queries;
  const throughForward = (port = 18080) => tcpOutcome(pve!.client, LAB_PUBLIC_V4, port);
  const guest = () => pve!.server.guests.get(vmid);
  const registered = async () => (await instances()).find((i) => i.externalId === String(vmid));
  const scenario: BackendScenario = {
    queries,
    instanceId: () => instance!.id,
    throughForward: () => throughForward(),
    body: BODY,
    table: () => pve!.node.exec('nft', ['list', 'table', 'inet', 'gatehouse']),
  };

  beforeAll(async () => {
    pve = await PveLab.start();
    // a second bridge on the node, for the second NIC
    await pve.node.exec('ip', ['link', 'add', 'vmbr1', 'type', 'bridge']);
    await pve.node.exec('ip', ['addr', 'add', '10.78.0.1/24', 'dev', 'vmbr1']);
    await pve.node.exec('ip', ['link', 'set', 'vmbr1', 'up']);
    await run.start(
      LAB_PUBLIC_V4,
      [
        { name: 'pve-vmbr0', network: 'vmbr0', cidr: '10.77.0.0/24', start: '10.77.0.100', end: '10.77.0.199', gateway: '10.77.0.1' },
        { name: 'pve-vmbr1', network: 'vmbr1', cidr: '10.78.0.0/24', start: '10.78.0.100', end: '10.78.0.199', gateway: '10.78.0.1' },
      ],
      pve.pluginConfig(),
      DISCOVER_MS,
    );
    [poolId, pool2Id] = run.poolIds as [string, string];
  }, 180_000);

  afterAll(async () => {
    run.printLogs();
    await cleanUpInOrder([() => servers.forEach((server) => server.stop()), ...run.stopSteps(), () => pve?.cleanup(), ...run.removeSteps()]);
  }, 120_000);

  it('the host runs the proxmox plugin and shows its capabilities', async () => {
    const host = (await api(`query ($id: ID!) { host(id: $id) { backend ${DRIVER_SELECTION} } }`, { id: run.hostId })).host;
    expect(host).toEqual({ backend: 'proxmox', driver: { id: 'proxmox', apiVersion: 1, capabilities: capabilitiesInGraphql(CAPABILITIES) } });
    expect(host.driver.capabilities.shaping).toEqual({ implementation: 'DATAPLANE', ingress: true, egress: true, burst: true });
  });

  it('a QEMU VM created on PVE appears in GraphQL on its host, with its NIC and its address claimed from the pool', async () => {
    const vm = await pve!.createGuest('qemu', 'web', [
      { name: 'eth0', mac: MAC, network: 'vmbr0', address: GUEST_ADDRESS, prefixLength: 24, gateway: '10.77.0.1' },
    ]);
    vmid = vm.vmid;
    guestNs = vm.namespace;
    iperf3Server = vm.iperf3Server;
    servers.push(await vm.tcpServer(8080, BODY));
    const started = Date.now();
    instance = await until(registered, 20 * DISCOVER_MS);
    if (!instance) throw new Error(`VM ${vmid} was not registered within ${20 * DISCOVER_MS} ms; agent output:\n${run.agent!.output().slice(-3000)}`);
    console.log(`[pve-e2e] VM ${vmid} registered ${Date.now() - started} ms after it was created`);
    expect(instance).toMatchObject({
      name: 'web',
      externalId: String(vmid),
      owner: { name: 'admin' },
      nics: [{ name: 'eth0', mac: MAC, network: 'vmbr0', addresses: [{ address: GUEST_ADDRESS, cidr: `${GUEST_ADDRESS}/24`, pool: { id: poolId } }] }],
    });
    expect((await converged())?.agent.lastError).toBeNull();
    // the plugin marks the guest as Gatehouse's in PVE (a tag the PVE UI shows)
    expect(await until(async () => (guest()?.config.tags ?? '').split(';').includes(`${OWNER_TAG}${instance!.id}`))).toBe(true);
  });

  it('forwards a public port to the VM: TCP from the client namespace gets its answer', async () => {
    if (!instance) throw new Error('no registered instance (see the test before)');
    forwards.push(await createForward(scenario, 18080, 8080));
    expect(await eventually(() => throughForward(), 15_000)).toBe(`got:${BODY}`);
    expect(await until(async () => (await forwardStatus(forwards[0]!))?.status === 'APPLIED')).toBe(true);
  });

  it('blocks it with an inbound DROP rule, and lets it through again when the rule is deleted', async () => {
    ruleId = await checkFirewallBlocks(scenario);
  });

  it('caps the rates into and out of the VM (iperf3 within 5 % through the forward), and lifts them', async () => {
    servers.push(await iperf3Server(5201));
    forwards.push(await createForward(scenario, 15201, 5201));
    const limit = await api(
      `mutation ($id: ID!) { setBandwidthLimit(input: { instanceId: $id, ingressMbps: 20, egressMbps: 20 }) { ... on SetBandwidthLimitPayload { limit { ingressBps egressBps } } ${ERR} } }`,
      { id: instance!.id },
    );
    expect(payload(limit.setBandwidthLimit, 'limit')).toEqual({ ingressBps: RATE, egressBps: RATE });
    expect(await until(async () => (await bandwidthStatus(instance!.id))[0] === 'APPLIED')).toBe(true);
    expect(await until(async () => (await forwardStatus(forwards[1]!))?.status === 'APPLIED')).toBe(true);
    await converged();
    // tc on the VM's tap on the node, as the plugin's capabilities say (the dataplane's)
    const qdiscs = await pve!.node.exec('tc', ['qdisc', 'show', 'dev', `tap${vmid}i0`]);
    expect(qdiscs).toMatch(/htb/);
    const into = await iperf3Rate(pve!.client, LAB_PUBLIC_V4, 15201, 4);
    const out = await iperf3Rate(pve!.client, LAB_PUBLIC_V4, 15201, 4, true);
    console.log(`[pve-e2e] 20 Mbit/s limits: into the VM ${describeRate(into, RATE)}; out of it ${describeRate(out, RATE)}`);
    expect(Math.abs(into.wire / RATE - 1)).toBeLessThanOrEqual(0.05);
    expect(Math.abs(out.wire / RATE - 1)).toBeLessThanOrEqual(0.05);

    const removed = await api(`mutation ($id: ID!) { removeBandwidthLimit(input: { instanceId: $id }) { __typename } }`, { id: instance!.id });
    expect(removed.removeBandwidthLimit.__typename).toBe('RemoveBandwidthLimitPayload');
    expect(await bandwidthStatus(instance!.id)).toEqual([]);
    await converged();
    const free = await iperf3Rate(pve!.client, LAB_PUBLIC_V4, 15201, 2);
    console.log(`[pve-e2e] limits removed: into the VM ${describeRate(free, RATE)}`);
    expect(free.goodput).toBeGreaterThan(2 * RATE);
  });

  it('adds a second NIC on vmbr1: PVE hot-plugs it through its task, and once the guest configures its address the VM answers on it', async () => {
    const added = await api(
      `mutation ($id: ID!) { addNic(input: { instanceId: $id, network: "vmbr1", allocate: [IPV4] }) { ... on AddNicPayload { added { nic { id name mac network } addresses { address pool { id } } } } ${ERR} } }`,
      { id: instance!.id },
    );
    const nic = payload(added.addNic, 'added');
    expect(nic.nic.network).toBe('vmbr1');
    expect(nic.addresses[0]).toMatchObject({ pool: { id: pool2Id } });
    const address = nic.addresses[0].address as string;
    expect(v4(address)).toBeGreaterThanOrEqual(v4('10.78.0.100'));
    expect(v4(address)).toBeLessThanOrEqual(v4('10.78.0.199'));
    const started = Date.now();
    // PVE's config has it as net1 on vmbr1 with Gatehouse's MAC, tagged as Gatehouse's
    // PVE applies one edit key by key (net1 is hot-plugged, then the tags are written): wait for both
    const plugged = await until(async () => {
      const g = guest();
      const found = g ? guestNics('qemu', g.config).find((n) => n.mac.toLowerCase() === nic.nic.mac.toLowerCase()) : undefined;
      return found && g!.config.tags?.split(';').includes(`${NIC_TAG}${found.index}`) ? found : undefined;
    }, 20_000);
    expect(plugged).toMatchObject({ bridge: 'vmbr1', index: 1 });
    expect(guest()!.config.tags!.split(';')).toContain(`${NIC_TAG}1`);
    expect(guest()!.pending).toEqual({});
    console.log(`[pve-e2e] second NIC hot-plugged as net1 ${Date.now() - started} ms after addNic`);
    expect((await converged())?.agent.lastError).toBeNull();
    // the guest configures its address (a QEMU guest does its own: staticAddressing is false)
    const link = await until(async () => (await guestNs.exec('ip', ['-j', 'link', 'show'])).includes(nic.nic.mac.toLowerCase()));
    expect(link).toBe(true);
    await guestNs.exec('ip', ['addr', 'add', `${address}/24`, 'dev', 'eth1']);
    expect(await eventually(() => tcpOutcome(pve!.node, address, 8080), 10_000)).toBe(`got:${BODY}`);
    // the first NIC still answers through the forward, and discovery reports both NICs
    expect(await throughForward()).toBe(`got:${BODY}`);
    expect(
      await until(async () =>
        (await hostAgent()).agent.discoveredInstances.find((i) => i.externalId === String(vmid))?.nics.some((n) => n.addresses.includes(`${address}/24`)),
      ),
    ).toBe(true);
  });

  it("a VM deleted behind Gatehouse's back is reclaimed: instance, forwards, proxy, rule and addresses, with audit entries", async () => {
    await checkReclaimed(scenario, { forwards, ruleId, destroy: () => pve!.destroyGuest(String(vmid)), label: 'pve-e2e', withinMs: 30 * DISCOVER_MS });
  });
});
